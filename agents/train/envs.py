"""The envs of a run: one env for evaluations (:func:`make_env`) and the vectorised
training envs (:func:`make_vec_env`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agents.train.errors import TrainConfigError

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.vec_env import VecEnv

    from agents.train.config import TrainConfig

__all__ = ["VEC_ENVS", "make_env", "make_vec_env"]


def make_env(cfg: TrainConfig, render_mode: str | None = None) -> gym.Env:
    """One env of the run (what the evaluations play)."""
    import gymnasium as gym

    import musicenv  # noqa: F401  (registers the envs)

    kwargs = dict(cfg.env_kwargs)
    if cfg.reward is not None:
        kwargs["reward"] = cfg.reward
    try:
        return gym.make(cfg.env_id, render_mode=render_mode, **kwargs)
    except TypeError as e:
        raise TrainConfigError(f"env_kwargs {sorted(cfg.env_kwargs)} rejected by {cfg.env_id}: {e}; "
                               f"see help(gymnasium.spec({cfg.env_id!r}).entry_point) for its arguments") from e
    except ValueError as e:
        if type(e).__name__ == "RewardSpecError":
            raise
        raise TrainConfigError(f"env_kwargs rejected by {cfg.env_id}: {e}") from e


#: Accepted ``TrainConfig.vec_env`` values (see :func:`make_vec_env`).
VEC_ENVS = ("batched", "dummy", "subproc")


class _EnvFactory:
    """Picklable env constructor for SubprocVecEnv."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def __call__(self) -> gym.Env:
        return make_env(self.cfg)


def make_vec_env(cfg: TrainConfig, monitor_file: Path | None = None) -> VecEnv:
    """``n_envs`` training envs under SB3's VecMonitor, as ``cfg.vec_env`` says.

    ``"batched"`` (the default): :class:`agents.vec_env.BatchedVecEnv`, all envs stepped
    by one call of the env's batched core, with the same transitions as ``"dummy"`` (SB3's
    DummyVecEnv over ``n_envs`` single envs) for the same seeds, at a fraction of its
    cost. ``"subproc"``: SubprocVecEnv, one process per env. MaskablePPO reaches the
    envs' ``action_masks()`` through ``env_method`` (SB3 looks it up through the
    gymnasium wrappers), so no ActionMasker wrapper is needed.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    if cfg.vec_env == "batched":
        from agents.vec_env import BatchedVecEnv

        kwargs = dict(cfg.env_kwargs)
        if cfg.reward is not None:
            kwargs["reward"] = cfg.reward
        venv = BatchedVecEnv(cfg.env_id, cfg.n_envs, kwargs)
    else:
        fns = [_EnvFactory(cfg) for _ in range(cfg.n_envs)]
        venv = SubprocVecEnv(fns) if cfg.vec_env == "subproc" else DummyVecEnv(fns)
    return VecMonitor(venv, filename=str(monitor_file) if monitor_file else None)


