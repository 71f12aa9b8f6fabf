"""Playing a trained SB3 model: :class:`ModelPolicy`, the ``policy(obs) -> action``
callable that evaluations, baselines and ``musicenv compose run:RUN_DIR`` play."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["ModelPolicy"]


class ModelPolicy:
    """A trained SB3 model as the ``policy(obs) -> action`` callable of
    :func:`musicenv.baselines.run_episode`.

    ``deterministic=True`` plays the greedy action; False samples from the policy's
    distribution (for DQN: epsilon-greedy at the model's current exploration rate).
    With a ``seed``, sampling draws from random streams of its own (torch's CPU
    generator and numpy's global one are swapped in around each ``predict`` and
    restored after), so the pieces are reproducible and playing them changes no one
    else's random state. MaskablePPO models get the env's ``action_masks()`` at every
    step; RecurrentPPO models carry their LSTM state through an episode. A new episode
    is recognised by the observation's ``progress`` being 0 (every musicenv env has
    it); for other observations call :meth:`reset` between episodes.
    """

    def __init__(self, model: BaseAlgorithm, env: gym.Env, deterministic: bool = False,
                 seed: int | None = None) -> None:
        self.model, self.env, self.deterministic = model, env, deterministic
        params = inspect.signature(model.predict).parameters
        self.masked = "action_masks" in params
        self.recurrent = hasattr(model.policy, "lstm_actor")
        self._streams: list[Any] | None = None
        if seed is not None and not deterministic:
            import torch

            self._streams = [torch.Generator().manual_seed(int(seed)).get_state(),
                             np.random.RandomState(int(seed) % 2**32).get_state(),
                             np.random.default_rng(int(seed)).bit_generator.state]
        self.reset()

    def reset(self) -> None:
        """Forget the hidden state (call between episodes of envs without ``progress``)."""
        self._state: Any = None
        self._episode_start = np.ones((1,), dtype=bool)

    def __call__(self, obs: Any) -> int:
        if isinstance(obs, Mapping) and "progress" in obs and float(np.asarray(obs["progress"]).flat[0]) == 0.0:
            self.reset()
        kwargs: dict[str, Any] = {"deterministic": self.deterministic}
        if self.masked:
            kwargs["action_masks"] = self.env.get_wrapper_attr("action_masks")()
        if self.recurrent:
            kwargs.update(state=self._state, episode_start=self._episode_start)
        action, state = self._predict(obs, kwargs)
        if self.recurrent:
            self._state = state
            self._episode_start = np.zeros((1,), dtype=bool)
        return int(np.asarray(action).reshape(-1)[0])

    def _predict(self, obs: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        if self._streams is None:
            return self.model.predict(obs, **kwargs)
        import torch

        # Sampling draws from torch's CPU generator (policy distributions), numpy's
        # global one and the model's action space (DQN's epsilon-greedy): swap in ours.
        space_rng = self.model.action_space.np_random.bit_generator
        saved = torch.get_rng_state(), np.random.get_state(), space_rng.state
        torch.set_rng_state(self._streams[0])
        np.random.set_state(self._streams[1])
        space_rng.state = self._streams[2]
        try:
            return self.model.predict(obs, **kwargs)
        finally:
            self._streams = [torch.get_rng_state(), np.random.get_state(), space_rng.state]
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            space_rng.state = saved[2]

