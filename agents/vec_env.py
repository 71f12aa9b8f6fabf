"""An SB3 ``VecEnv`` that steps all training envs in one batched call.

SB3's ``DummyVecEnv`` steps ``n_envs`` single envs one after another and deep-copies
every step's ``infos`` (here: a dict of 17 reward terms per env), which costs more
than the steps themselves. :class:`BatchedVecEnv` drives the batched core of a
musicenv environment (the one behind ``gym.make_vec(...,
vectorization_mode="vector_entry_point")``) directly: one compiled call scores,
commits and observes all ``n_envs`` compositions, with SB3's semantics:

- **immediate autoreset**: when an episode ends, the returned observation is the
  next episode's first one and ``infos[i]["terminal_observation"]`` holds the last
  (SB3's convention; the gymnasium vector env itself resets on the *next* step);
- ``infos[i]`` holds ``"reward_terms"`` (as the single env's ``info``) and
  ``"TimeLimit.truncated"``; episode statistics (``"episode"``) come from
  ``VecMonitor`` as with any VecEnv; rewards are float32, as ``DummyVecEnv``'s;
- **seeding as DummyVecEnv's**: ``seed(s)`` gives sub-env ``i`` the seed ``s + i``
  for the next ``reset()``, and every sub-env draws its episodes' contexts from its
  own generator, seeded exactly as a single env's ``np_random``. The transitions
  are therefore the same as ``DummyVecEnv([gym.make(env_id, **kwargs)] * n)``'s for
  the same seeds and actions, bit for bit (tests/test_vec_env.py checks it step for
  step). One exception: with the torch note-RNN prior (``observe_prior``,
  ``prior_log_likelihood``) one recurrent step over the batch rounds differently
  from n steps over one piece each (observations and rewards differ by ~1e-6);
- ``env_method("action_masks")`` (MaskablePPO), ``get_attr``, ``env_method`` reach
  per-sub-env views (:class:`SubEnv`) offering ``action_masks()``, ``composition``,
  ``render()`` and the single env's spaces, ``render_mode`` and ``term_names``.

``agents.train.make_vec_env`` uses it for ``vec_env: batched`` (the default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

__all__ = ["BatchedVecEnv", "SubEnv"]


class SubEnv:
    """Sub-env ``index`` of a :class:`BatchedVecEnv`, as ``get_attr``/``env_method`` see it:
    the single env's ``action_masks()``, ``composition``, ``render()``, spaces,
    ``render_mode`` and ``term_names``."""

    def __init__(self, parent: BatchedVecEnv, index: int) -> None:
        self._parent, self.index = parent, index

    @property
    def observation_space(self) -> gym.Space:
        return self._parent.observation_space

    @property
    def action_space(self) -> gym.Space:
        return self._parent.action_space

    @property
    def render_mode(self) -> str | None:
        return self._parent._render_mode

    @property
    def term_names(self) -> list[str]:
        return list(self._parent.core.reward.names)

    def action_masks(self) -> np.ndarray:
        """(n_actions,) bool: the actions allowed at this sub-env's current step."""
        return self._parent.core.action_masks()[self.index]

    @property
    def composition(self) -> Any:
        """The composition this sub-env has written so far."""
        return self._parent.core.composition(self.index)

    def render(self) -> Any:
        mode = self._parent._render_mode
        return None if mode is None else self._parent.core.render(self.index, mode)


class BatchedVecEnv(VecEnv):
    """``n_envs`` episodes of a musicenv environment behind SB3's ``VecEnv`` API, stepped
    by one batched call (see the module docstring for the semantics).

    Args:
        env_id: a musicenv id (``"MusicComposition-v0"``, ...) whose registration has a
            ``vector_entry_point`` built on ``musicenv.envs.batched.VectorComposerEnv``.
        n_envs: number of parallel episodes.
        env_kwargs: the env's constructor keywords (as for ``gym.make``), e.g. ``reward``.
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    def __init__(self, env_id: str, n_envs: int, env_kwargs: dict[str, Any] | None = None,
                 render_mode: str | None = None) -> None:
        from musicenv.envs.batched import VectorComposerEnv

        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
        spec = gym.spec(env_id)
        if spec.vector_entry_point is None:
            raise ValueError(f"{env_id!r} has no vector entry point; BatchedVecEnv runs musicenv's batched envs only "
                             "(use DummyVecEnv for other environments)")
        vec = gym.make_vec(env_id, num_envs=int(n_envs), vectorization_mode="vector_entry_point",
                           render_mode=render_mode, **(env_kwargs or {}))
        vec = getattr(vec, "unwrapped", vec)
        if not isinstance(vec, VectorComposerEnv):
            raise ValueError(f"{env_id!r}'s vector env is a {type(vec).__name__}, not a musicenv VectorComposerEnv; "
                             "use DummyVecEnv for other environments")
        self.env_id = env_id
        self.vector_env = vec
        self.core = vec.core
        self._render_mode = render_mode
        self._subenvs = [SubEnv(self, i) for i in range(int(n_envs))]
        super().__init__(int(n_envs), vec.single_observation_space, vec.single_action_space)
        self._term_names = tuple(self.core.reward.names)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._one = np.zeros(self.num_envs, dtype=bool)  # mask of one sub-env, for its reset
        self._actions: np.ndarray | None = None
        self._started = False

    # -- episode life cycle -------------------------------------------------------------
    def _reset_one(self, i: int, seed: int | None, options: dict | None) -> None:
        """Reset sub-env ``i`` as ``SingleComposerEnv.reset(seed=seed, options=options)`` does."""
        if seed is not None or self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random(seed)
        self._one[:] = False
        self._one[i] = True
        self.core.reset(self._one, self._rngs[i], options or None)
        self.reset_infos[i] = self.core.reset_info(i)

    def reset(self) -> VecEnvObs:
        """Reset every sub-env (with the seeds and options set since the last reset)."""
        for i in range(self.num_envs):
            self._reset_one(i, self._seeds[i], self._options[i])
        self._reset_seeds()
        self._reset_options()
        self._started = True
        return self.core.split_obs(self.core.observe_flat(), None)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if not self._started:
            raise RuntimeError("BatchedVecEnv.step() before reset(); call reset() first")
        if self._actions is None:
            raise RuntimeError("BatchedVecEnv.step_wait() without step_async(actions)")
        core = self.core
        actions = core.check_actions(np.asarray(self._actions).reshape(-1), self.num_envs)
        self._actions = None
        values, total, flat = core.step_observe(actions)
        dones = core.finished()
        rows = values.tolist()
        names = self._term_names
        infos: list[dict[str, Any]] = [{"reward_terms": dict(zip(names, row)), "TimeLimit.truncated": False}
                                       for row in rows]
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                # ``flat`` is fresh and never written again, so its rows can be handed out
                infos[i]["terminal_observation"] = core.split_obs(flat, i)
                self._reset_one(i, None, None)
            flat = core.observe_flat()
        return core.split_obs(flat, None), total.astype(np.float32), dones, infos

    def close(self) -> None:
        self.vector_env.close()

    # -- per-sub-env access ------------------------------------------------------------
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``attr_name`` of each sub-env's :class:`SubEnv` view (AttributeError if it has none)."""
        return [getattr(self._subenvs[i], attr_name) for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"cannot set {attr_name!r}: the sub-envs of a BatchedVecEnv share one batched core; "
                             "change the env's constructor keywords instead")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` on each sub-env's :class:`SubEnv` view."""
        idx = self._indices(indices)
        if method_name == "action_masks" and not method_args and not method_kwargs:
            masks = self.core.action_masks()  # one batched call instead of one per sub-env
            return [masks[i] for i in idx]
        return [getattr(self._subenvs[i], method_name)(*method_args, **method_kwargs) for i in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self._render_mode != "rgb_array":
            return [None for _ in range(self.num_envs)]
        return [self.core.render(i, "rgb_array") for i in range(self.num_envs)]
