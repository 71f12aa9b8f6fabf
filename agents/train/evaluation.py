"""The final evaluation of a run and the baselines played on the same held-out pieces."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agents.sampling import ModelPolicy
from agents.train.envs import make_env
from agents.train.errors import TrainConfigError

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm

    from agents.train.config import TrainConfig

__all__ = ["baseline_source", "final_evaluation", "progress_lines"]


def baseline_source(name: str, env: gym.Env) -> Callable[[int], Callable[[Any], int]]:
    """``make_policy(seed)`` of a baseline: a ``musicenv.compose`` source by name
    (``random``: uniformly random legal tokens, ``rule``, and ``prior`` once the note-RNN
    registers it). Without ``musicenv.compose``, only ``random`` exists."""
    try:
        from musicenv.compose import get_source
    except ImportError:
        if name != "random":
            raise TrainConfigError(f"unknown baseline {name!r}; valid choices: random") from None
        from musicenv.baselines import RandomPolicy

        return lambda seed: RandomPolicy(env, seed=seed, masked=True)
    try:
        info, argument = get_source(name)
    except ValueError as e:
        raise TrainConfigError(f"baseline {name!r}: {e}") from e
    return info.factory(env, argument=argument, temperature=1.0)


def progress_lines(cfg: TrainConfig) -> bool:
    """Progress as plain lines: asked for, and stdout is not a terminal (a pipe, a log)."""
    return bool(cfg.progress) and not sys.stdout.isatty()


def final_evaluation(model: BaseAlgorithm, cfg: TrainConfig, *, progress: bool = False) -> dict[str, Any]:
    """Greedy and sampled episodes on the held-out test seeds, and each of
    ``cfg.baselines`` (by default the random policy, the floor every reward design is
    compared against) on the same pieces. ``progress`` prints a line at least every
    10 s or 5 % of the pieces."""
    from agents.callbacks import ProgressPrinter, evaluate, evaluate_per_piece

    seeds = list(range(cfg.test_seed, cfg.test_seed + cfg.final_episodes))
    printer = (ProgressPrinter("final evaluation", len(seeds) * (2 + len(cfg.baselines)), unit="pieces")
               if progress else None)
    env = make_env(cfg)
    try:
        out: dict[str, Any] = {"timesteps": int(model.num_timesteps), "episodes": cfg.final_episodes,
                               "seeds": [seeds[0], seeds[-1]], "reward": cfg.reward}
        for mode, deterministic in (("greedy", True), ("sampled", False)):
            out[mode] = evaluate(env, ModelPolicy(model, env, deterministic=deterministic, seed=cfg.test_seed),
                                 seeds, progress=printer)
        out["baselines"] = {name: evaluate_per_piece(env, baseline_source(name, env), seeds, progress=printer)
                            for name in cfg.baselines}
    finally:
        env.close()
    return out


