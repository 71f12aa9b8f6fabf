"""``musicenv compose`` sources that play a run directory's agent: ``run:RUN_DIR``
(sampled), ``run-greedy:RUN_DIR`` and ``run-unsafe-sb3-zip:RUN_DIR``, registered in
:mod:`musicenv.compose` by their entry points here and imported on first use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.sampling import ModelPolicy
from agents.train.errors import RunStateError
from agents.train.identity import load_run_config
from agents.train.restore import load_run

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["OBSERVATION_KWARGS", "run_source", "run_greedy_source", "run_unsafe_source", "observation_kwargs",
           "space_difference"]


def _run_source(deterministic: bool, unsafe: bool = False) -> Callable[..., Callable[[int], ModelPolicy]]:
    """A ``musicenv.compose`` source factory playing a run directory's model."""

    def factory(env: gym.Env, *, argument: str | None, temperature: float) -> Callable[[int], ModelPolicy]:
        if not argument:
            raise RunStateError("the run source needs a run directory: run:RUN_DIR")
        model, cfg = load_run(argument, unsafe_load_sb3_zip=unsafe)
        env_id = env.spec.id if env.spec is not None else None
        if env_id != cfg.env_id:
            raise RunStateError(f"run {argument!r} was trained on {cfg.env_id}, not {env_id}; pass --env {cfg.env_id}")
        if env.observation_space != model.observation_space or env.action_space != model.action_space:
            raise RunStateError(f"run {argument!r} was trained with env_kwargs {cfg.env_kwargs}, whose observation or "
                                f"action space differs from this env's ({space_difference(model, env)}); compose "
                                "with the same settings")
        return lambda seed: ModelPolicy(model, env, deterministic=deterministic, seed=seed)

    return factory


def space_difference(model: BaseAlgorithm, env: gym.Env) -> str:
    """What differs between a model's spaces and an env's, with the env keyword that
    sets it where one does (a run trained before a default changed records no value)."""
    from gymnasium import spaces

    if env.action_space != model.action_space:
        return f"actions: the run's {model.action_space}, this env's {env.action_space}"
    ours, theirs = model.observation_space, env.observation_space
    if not (isinstance(ours, spaces.Dict) and isinstance(theirs, spaces.Dict)):
        return f"observations: the run's {ours}, this env's {theirs}"
    parts = []
    for key in sorted(set(ours.spaces) | set(theirs.spaces)):
        a, b = ours.spaces.get(key), theirs.spaces.get(key)
        if a == b:
            continue
        if a is None or b is None:
            parts.append(f"block {key!r} only in {'this env' if a is None else 'the run'}"
                         + (" (observe_prior)" if key == "prior" else ""))
            continue
        hint = f"; history_length={a.shape[0]}" if key == "history" and a.shape[1:] == b.shape[1:] else ""
        parts.append(f"block {key!r}: the run's shape {a.shape}, this env's {b.shape}{hint}")
    return ", ".join(parts)


#: Env settings that shape the observation: a run is composed with the values it was trained with.
OBSERVATION_KWARGS = ("observe_prior", "history_length")


def observation_kwargs(argument: str | None) -> dict[str, Any]:
    """The observation-shaping env settings of run ``argument`` (for ``musicenv compose``)."""
    if not argument:
        return {}
    cfg = load_run_config(Path(argument).expanduser())
    return {k: v for k, v in cfg.env_kwargs.items() if k in OBSERVATION_KWARGS}



#: ``run:RUN_DIR``: a trained agent, sampling its policy.
run_source = _run_source(False)
#: ``run-greedy:RUN_DIR``: a trained agent, always its most likely token.
run_greedy_source = _run_source(True)
#: ``run-unsafe-sb3-zip:RUN_DIR``: UNSAFE, a run of an older musicenv that has only SB3's pickles.
run_unsafe_source = _run_source(False, unsafe=True)
