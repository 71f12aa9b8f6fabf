"""Throughput benchmark: the environment must never be the bottleneck (issue 8).

Every figure is a ratio against a reference measured in the same run (best of
``--repeats`` interleaved repeats each), so machine speed and load cancel out as
far as they can on a shared machine:

``single_vs_cartpole``
    MusicComposition-v0 (``theory`` reward), one env made with ``gym.make`` and its
    default wrappers, random actions drawn up front: steps/s divided by CartPole-v1's
    steps/s measured the same way. Resets at episode ends are part of the loop.
``vector1024_vs_cartpole_vector``
    ``gym.make_vec("MusicComposition-v0", num_envs=1024, vectorization_mode=
    "vector_entry_point")`` (``theory`` reward, the default one-hot Dict observation)
    env-steps/s divided by gymnasium's own CartPole vector env at the same ``num_envs``.
``vector1024_tokens_vs_cartpole_vector``
    The same with ``observation="tokens"`` (token indices and context codes), measured
    in the same rounds.
``length_scaling``
    Per-step cost at ``n_bars=64`` divided by per-step cost at ``n_bars=4`` (single
    env): every reward term and the observation are incremental, so about 1.
``prior_reward_steps_per_s_256``
    The vector env with reward ``{"theory": 1, "prior_log_likelihood": 1}`` at 256 envs,
    torch on 1 or 2 threads, whichever is faster: env-steps/s, and ``prior_reward_ratio_256``, its ratio to the
    same env without the prior term. ``null`` with a reason when the prior (torch,
    ``agents.note_rnn`` or its shipped checkpoint) is not available.
``ppo_train_vs_cartpole``
    Stable-Baselines3 PPO's training speed (env steps/s of ``model.learn``, rollouts and
    updates together) on MusicComposition-v0 (``theory`` reward, ``MultiInputPolicy``)
    divided by its speed on CartPole-v1 (``MlpPolicy``), both with SB3's own PPO
    defaults -- ``PPO("MultiInputPolicy", env)``: 1 env, n_steps 2048, batch 64, 10
    epochs, the default 64x64 pi and vf nets -- torch on 1 thread (``musicenv train``'s
    default), under VecMonitor. MusicComposition-v0 runs in ``agents.train.make_vec_env``'s
    default vec env (``BatchedVecEnv``), CartPole-v1 in SB3's DummyVecEnv.
    The raw figures add the same ratio with the shipped settings of
    ``agents/hyperparams/ppo.yml`` (``ppo_shipped_vs_cartpole``: n_envs 8, n_steps 256,
    batch 256, 10 epochs, the same nets; its 4x larger minibatches make the
    observation's width weigh more), that ratio with MusicComposition-v0 in DummyVecEnv
    (``ppo_dummy_vs_cartpole``) and, for each run, how its time splits into policy
    updates, rollouts and env steps.
``import_s_ratio``
    Wall time of ``python -c "import musicenv"`` divided by ``python -c "import gymnasium"``.
``corpus_cached_load_s``
    ``musicenv.corpus.load("bach")`` from its cache, in a fresh process, seconds (the
    corpus is parsed once first if the cache is cold).
``numba_compile_s``
    numba's one-time compile cost: time to the first single and vector step with an
    empty numba cache minus the same with a warm one (not part of any figure above,
    and never part of ``import musicenv``).

Run ``python -m experiments.throughput [--json PATH]`` or ``musicenv bench`` on an
otherwise idle machine; ``--quick`` runs everything at a tiny size (a smoke test,
not a measurement).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Settings", "run", "format_table", "main", "add_commands", "GOALS"]

ENV_ID = "MusicComposition-v0"
PRIOR_SPEC = {"theory": 1.0, "prior_log_likelihood": 1.0}
PRIOR_SPEC_BY_PATH = {"theory": 1.0, "agents.note_rnn:PriorLogLikelihood": 1.0}

#: figure -> (goal as text, test on the value).
GOALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "single_vs_cartpole": (">= 0.7", lambda v: v >= 0.7),
    "vector1024_vs_cartpole_vector": (">= 0.4", lambda v: v >= 0.4),
    "vector1024_tokens_vs_cartpole_vector": (">= 0.5", lambda v: v >= 0.5),
    "length_scaling": ("<= 1.1", lambda v: v <= 1.1),
    "prior_reward_steps_per_s_256": ("(absolute)", lambda v: True),
    "prior_reward_ratio_256": (">= 0.2", lambda v: v >= 0.2),
    "ppo_train_vs_cartpole": (">= 0.8", lambda v: v >= 0.8),
    "import_s_ratio": ("<= 1.5", lambda v: v <= 1.5),
    "corpus_cached_load_s": ("< 1 s", lambda v: v < 1.0),
    "numba_compile_s": ("(one-time)", lambda v: True),
}


@dataclass
class Settings:
    """Sizes of one benchmark run; :meth:`quick` is a smoke-test size."""

    repeats: int = 3
    steps: int = 20_000  # single-env steps per repeat (length_scaling too)
    vector_envs: int = 1024
    vector_steps: int = 650  # ten 64-step episodes plus their autoreset steps
    prior_envs: int = 256
    prior_steps: int = 130
    ppo_steps: int = 16_384  # PPO env steps per repeat (8 updates at the shipped settings)
    ppo_overrides: dict[str, Any] = field(default_factory=dict)  # over ppo.yml's MusicComposition-v0 section
    ppo_default_steps: int = 8_192  # PPO with SB3's own defaults: 1 env, 4 rollouts of 2048
    ppo_default_kwargs: dict[str, Any] = field(default_factory=dict)  # over SB3's PPO defaults
    subprocess_repeats: int = 5
    corpus: str = "bach"
    compile: bool = True
    quick: bool = False

    @classmethod
    def quick_size(cls, repeats: int | None = None, steps: int | None = None) -> Settings:
        return cls(repeats=repeats or 1, steps=steps or 600, vector_envs=16, vector_steps=70, prior_envs=8,
                   prior_steps=20, ppo_steps=128, ppo_overrides={"n_envs": 2, "n_steps": 32, "batch_size": 32,
                                                                 "n_epochs": 1},
                   ppo_default_steps=64, ppo_default_kwargs={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
                   subprocess_repeats=1, corpus="bach/bwv66.6", compile=False, quick=True)


@dataclass
class Result:
    """All figures of one run (``None`` where a part is unavailable, with a reason)."""

    figures: dict[str, float | None] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_json(self, settings: Settings, load_before: Sequence[float], load_after: Sequence[float]) -> dict:
        goals = {k: {"goal": GOALS[k][0], "met": _met(k, v)} for k, v in self.figures.items()}
        return {**self.figures, "goals": goals, "reasons": self.reasons, "raw": self.raw,
                "load_avg": {"before": list(load_before), "after": list(load_after)},
                "settings": settings.__dict__.copy(), "versions": _versions(),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "processor": platform.processor() or platform.machine()}}


def _met(name: str, value: float | None) -> bool | None:
    return None if value is None else bool(GOALS[name][1](value))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("musicenv", "numpy", "numba", "gymnasium", "torch", "music21"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


class _NoGC:
    """Timed loops run without the cyclic garbage collector, as ``timeit`` does."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


# ---------------------------------------------------------------------------- timed loops
def single_steps_per_s(env: Any, actions: np.ndarray) -> float:
    """Steps/s of ``env.step`` over ``actions`` (resetting at episode ends, as a rollout does)."""
    step, reset = env.step, env.reset
    reset(seed=0)
    with _NoGC():
        t0 = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = step(a)
            if terminated or truncated:
                reset()
        dt = time.perf_counter() - t0
    return len(actions) / dt


def vector_steps_per_s(env: Any, actions: Sequence[np.ndarray], steps: int) -> float:
    """Env-steps/s (``num_envs`` x steps/s) of a vector env with next-step autoreset."""
    step = env.step
    env.reset(seed=0)
    n = len(actions)
    with _NoGC():
        t0 = time.perf_counter()
        for i in range(steps):
            step(actions[i % n])
        dt = time.perf_counter() - t0
    return steps * env.num_envs / dt


def _best_of(repeats: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Best (highest) rate of each measure over ``repeats`` interleaved rounds."""
    best = dict.fromkeys(measures, 0.0)
    for _ in range(repeats):
        for name, measure in measures.items():
            best[name] = max(best[name], measure())
    return best


# ---------------------------------------------------------------------------- figures
def measure_single(s: Settings, res: Result) -> None:
    import gymnasium as gym

    import musicenv  # noqa: F401

    rng = np.random.default_rng(0)
    cart = gym.make("CartPole-v1")
    music = gym.make(ENV_ID, reward="theory")
    cart_actions = rng.integers(0, cart.action_space.n, size=s.steps)
    music_actions = rng.integers(0, music.action_space.n, size=s.steps)
    single_steps_per_s(cart, cart_actions[:200])  # warm-up (numba cache load, first-call paths)
    single_steps_per_s(music, music_actions[:200])
    best = _best_of(s.repeats, {
        "cartpole": lambda: single_steps_per_s(cart, cart_actions),
        "music": lambda: single_steps_per_s(music, music_actions),
    })
    res.figures["single_vs_cartpole"] = best["music"] / best["cartpole"]
    res.raw["single_steps_per_s"] = best["music"]
    res.raw["cartpole_steps_per_s"] = best["cartpole"]
    res.raw["single_us_per_step"] = 1e6 / best["music"]
    res.raw["cartpole_us_per_step"] = 1e6 / best["cartpole"]


def measure_vector(s: Settings, res: Result) -> None:
    import gymnasium as gym

    import musicenv  # noqa: F401

    n = s.vector_envs
    rng = np.random.default_rng(0)
    cart = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
    music = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", reward="theory")
    tokens = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", reward="theory",
                          observation="tokens")
    cart_actions = [rng.integers(0, 2, size=n) for _ in range(16)]
    music_actions = [rng.integers(0, music.single_action_space.n, size=n) for _ in range(16)]
    vector_steps_per_s(cart, cart_actions, 10)
    vector_steps_per_s(music, music_actions, 10)
    vector_steps_per_s(tokens, music_actions, 10)
    cart_steps = 10 * s.vector_steps  # CartPole's step is far cheaper; time it over a similar span
    best = _best_of(s.repeats, {
        "cartpole": lambda: vector_steps_per_s(cart, cart_actions, cart_steps),
        "music": lambda: vector_steps_per_s(music, music_actions, s.vector_steps),
        "tokens": lambda: vector_steps_per_s(tokens, music_actions, s.vector_steps),
    })
    res.figures["vector1024_vs_cartpole_vector"] = best["music"] / best["cartpole"]
    res.figures["vector1024_tokens_vs_cartpole_vector"] = best["tokens"] / best["cartpole"]
    res.raw["vector_num_envs"] = n
    res.raw["vector_steps_per_s"] = best["music"]
    res.raw["vector_tokens_steps_per_s"] = best["tokens"]
    res.raw["cartpole_vector_steps_per_s"] = best["cartpole"]
    res.raw["vector_ns_per_env_step"] = 1e9 / best["music"]
    res.raw["vector_tokens_ns_per_env_step"] = 1e9 / best["tokens"]
    res.raw["cartpole_vector_ns_per_env_step"] = 1e9 / best["cartpole"]


def measure_length_scaling(s: Settings, res: Result) -> None:
    import gymnasium as gym

    import musicenv  # noqa: F401

    short = gym.make(ENV_ID, reward="theory", n_bars=4)
    long = gym.make(ENV_ID, reward="theory", n_bars=64)
    actions = np.random.default_rng(1).integers(0, short.action_space.n, size=s.steps)
    single_steps_per_s(short, actions[:200])
    single_steps_per_s(long, actions[:200])
    best = _best_of(s.repeats, {
        "n_bars_4": lambda: single_steps_per_s(short, actions),
        "n_bars_64": lambda: single_steps_per_s(long, actions),
    })
    res.figures["length_scaling"] = best["n_bars_4"] / best["n_bars_64"]  # cost ratio = inverse rate ratio
    res.raw["n_bars_4_us_per_step"] = 1e6 / best["n_bars_4"]
    res.raw["n_bars_64_us_per_step"] = 1e6 / best["n_bars_64"]


def _make_prior_env(gym: Any, n: int) -> Any:
    """The vector env with the prior term, by its registered name or else its import path."""
    import rewards

    try:
        spec = rewards.make(PRIOR_SPEC)
    except rewards.RewardSpecError as first:
        try:
            spec = rewards.make(PRIOR_SPEC_BY_PATH)
        except rewards.RewardSpecError:
            raise first from None
    return gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", reward=spec)


def measure_prior(s: Settings, res: Result) -> None:
    import gymnasium as gym

    import musicenv  # noqa: F401

    key, ratio_key = "prior_reward_steps_per_s_256", "prior_reward_ratio_256"
    n = s.prior_envs
    try:
        import torch
    except ImportError as e:
        res.figures[key] = res.figures[ratio_key] = None
        res.reasons[key] = res.reasons[ratio_key] = f"torch is not importable: {e}"
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        try:
            with_prior = _make_prior_env(gym, n)
            with_prior.reset(seed=0)
        except Exception as e:  # noqa: BLE001 - any failure to build the prior means "unavailable"
            reason = f"the prior_log_likelihood term is not available: {type(e).__name__}: {e}"
            res.figures[key] = res.figures[ratio_key] = None
            res.reasons[key] = res.reasons[ratio_key] = reason
            return
        without = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", reward="theory")
        # the shipped 1 x 64 prior (same test NLL), for comparison
        small = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point",
                             reward={"theory": 1.0, "prior_log_likelihood": {"weight": 1.0, "checkpoint": "small"}})
        rng = np.random.default_rng(2)
        actions = [rng.integers(0, without.single_action_space.n, size=n) for _ in range(16)]
        for env in (with_prior, small, without):
            env.reset(seed=0)
            vector_steps_per_s(env, actions, 5)
        by_threads: dict[int, dict[str, float]] = {}
        for n_threads in (1, 2):  # torch's 2 threads stall when the cores are shared; 1 thread does not
            torch.set_num_threads(n_threads)
            by_threads[n_threads] = _best_of(s.repeats, {
                "prior": lambda: vector_steps_per_s(with_prior, actions, s.prior_steps),
                "small": lambda: vector_steps_per_s(small, actions, s.prior_steps),
                "theory": lambda: vector_steps_per_s(without, actions, 10 * s.prior_steps),
            })
        chosen = max(by_threads, key=lambda k: by_threads[k]["prior"])
        best = {"prior": by_threads[chosen]["prior"], "small": max(b["small"] for b in by_threads.values()),
                "theory": max(b["theory"] for b in by_threads.values())}
    finally:
        torch.set_num_threads(threads)
    res.figures[key] = best["prior"]
    res.figures[ratio_key] = best["prior"] / best["theory"]
    res.raw["prior_num_envs"] = n
    res.raw["prior_torch_threads"] = chosen
    res.raw["prior_env_steps_per_s_by_threads"] = {str(k): v["prior"] for k, v in by_threads.items()}
    res.raw["prior_env_steps_per_s"] = best["prior"]
    res.raw["prior_baseline_env_steps_per_s"] = best["theory"]
    res.raw["prior_small_env_steps_per_s"] = best["small"]
    res.raw["prior_small_ratio_256"] = best["small"] / best["theory"]


class _Stopwatch:
    """Wraps a bound method so that the seconds spent in it add up in ``seconds``."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method, self.seconds = method, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.method(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def ppo_training_rate(make_venv: Callable[[], Any], policy: str, kwargs: dict[str, Any], steps: int
                      ) -> dict[str, float]:
    """Train a fresh SB3 PPO (seed 0) for ``steps`` env steps on ``make_venv()``: env
    steps/s of ``learn`` and its seconds in policy updates (``train``), rollouts
    (``collect_rollouts``, which includes the env steps) and env steps (``venv.step``)."""
    from stable_baselines3 import PPO

    venv = make_venv()
    try:
        model = PPO(policy, venv, seed=0, device="cpu", verbose=0, **kwargs)
        update, rollout, env_step = (_Stopwatch(model.train), _Stopwatch(model.collect_rollouts),
                                     _Stopwatch(venv.step))
        model.train, model.collect_rollouts, venv.step = update, rollout, env_step
        with _NoGC():
            t0 = time.perf_counter()
            model.learn(total_timesteps=steps)
            total = time.perf_counter() - t0
    finally:
        venv.close()
    return {"steps_per_s": steps / total, "total_s": total, "update_s": update.seconds,
            "rollout_s": rollout.seconds, "env_step_s": env_step.seconds}


def measure_ppo(s: Settings, res: Result) -> None:
    key = "ppo_train_vs_cartpole"
    try:
        import gymnasium as gym
        import torch
        from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

        from agents.train import TrainConfig, algorithm_kwargs, make_vec_env, resolve_config
    except ImportError as e:
        res.figures[key] = None
        res.reasons[key] = f"PPO needs torch, stable-baselines3 and agents.train: {e}"
        return
    overrides = dict(s.ppo_overrides)
    n_envs = overrides.pop("n_envs", None)
    cfg = resolve_config(TrainConfig(algo="ppo", env_id=ENV_ID, reward="theory", n_envs=n_envs, hyperparams=overrides,
                                     baselines=[], progress=False))
    kwargs = algorithm_kwargs(cfg)
    per_update = cfg.n_envs * kwargs["n_steps"]
    steps = max(per_update, s.ppo_steps // per_update * per_update)  # whole rollouts only

    def music() -> Any:
        return make_vec_env(cfg)  # as musicenv train makes it (vec_env "batched")

    def music_dummy() -> Any:
        return make_vec_env(TrainConfig.from_dict({**cfg.to_dict(), "vec_env": "dummy"}))

    def cartpole() -> Any:
        return VecMonitor(DummyVecEnv([lambda: gym.make("CartPole-v1") for _ in range(cfg.n_envs)]))

    runs = {"cartpole": (cartpole, "MlpPolicy"), "music": (music, cfg.policy), "music_dummy": (music_dummy, cfg.policy)}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.n_threads)
    try:
        for make, policy in runs.values():  # warm-up: torch's first calls, the numba cache
            ppo_training_rate(make, policy, kwargs, per_update)
        best: dict[str, dict[str, float]] = {}
        for _ in range(s.repeats):
            for name, (make, policy) in runs.items():
                out = ppo_training_rate(make, policy, kwargs, steps)
                if name not in best or out["steps_per_s"] > best[name]["steps_per_s"]:
                    best[name] = out
        # the figure: SB3's own PPO defaults (1 env, n_steps 2048, batch 64, 10 epochs,
        # 64x64 nets), i.e. PPO("MultiInputPolicy", env) as the issue states it
        default_runs = {"cartpole": (lambda: VecMonitor(DummyVecEnv([lambda: gym.make("CartPole-v1")])), "MlpPolicy"),
                        "music": (lambda: make_vec_env(TrainConfig.from_dict({**cfg.to_dict(), "n_envs": 1})),
                                  "MultiInputPolicy")}
        dkw = dict(s.ppo_default_kwargs)
        best_default: dict[str, dict[str, float]] = {}
        for _ in range(s.repeats):
            for name, (make, policy) in default_runs.items():
                out = ppo_training_rate(make, policy, dkw, s.ppo_default_steps)
                if name not in best_default or out["steps_per_s"] > best_default[name]["steps_per_s"]:
                    best_default[name] = out
    finally:
        torch.set_num_threads(threads)
    res.figures[key] = best_default["music"]["steps_per_s"] / best_default["cartpole"]["steps_per_s"]
    res.raw["ppo_sb3_defaults_runs"] = best_default
    res.raw["ppo_shipped_vs_cartpole"] = best["music"]["steps_per_s"] / best["cartpole"]["steps_per_s"]
    res.raw["ppo_dummy_vs_cartpole"] = best["music_dummy"]["steps_per_s"] / best["cartpole"]["steps_per_s"]
    res.raw["ppo_runs"] = best
    res.raw["ppo_settings"] = {"timesteps": steps, "n_envs": cfg.n_envs, "torch_threads": cfg.n_threads,
                               "policy": cfg.policy, "vec_env": cfg.vec_env,
                               **{k: kwargs[k] for k in ("n_steps", "batch_size", "n_epochs") if k in kwargs},
                               "net_arch": cfg.hyperparams.get("policy_kwargs", {}).get("net_arch")}


# ---------------------------------------------------------------------------- profile
#: The parts of a vector step :func:`profile_vector_step` times, in its table's order.
PROFILE_PARTS = ("reward", "observation", "autoreset", "driver")


class _Laps:
    """Wraps a bound method and records the seconds of each call in ``laps``."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method, self.laps = method, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.method(*args, **kwargs)
        finally:
            self.laps.append(time.perf_counter() - t0)


def _lap_run(env: Any, actions: Sequence[np.ndarray], steps: int, watches: dict[str, _Laps]) -> dict[str, list]:
    """Per-step seconds of ``steps`` vector steps (autoreset included): the whole step
    (``"step"``) and each stopwatch's calls, summed per step."""
    env.reset(seed=0)
    for w in watches.values():
        w.laps = []
    n = len(actions)
    step = env.step
    laps: dict[str, list] = {"step": [], **{k: [0.0] * steps for k in watches}}
    with _NoGC():
        for i in range(steps):
            marks = {k: len(w.laps) for k, w in watches.items()}
            t0 = time.perf_counter()
            step(actions[i % n])
            laps["step"].append(time.perf_counter() - t0)
            for k, w in watches.items():
                laps[k][i] = sum(w.laps[marks[k]:])
    return laps


def _watch(core: Any) -> dict[str, _Laps]:
    """Stopwatches on the core's reward, observation (commit and write) and reset calls."""
    obs = "commit_observe_tokens" if core.observation == "tokens" else "commit_observe"
    watches = {"reward": _Laps(core.score), "observation": _Laps(getattr(core, obs)), "autoreset": _Laps(core.reset)}
    core.score, core.reset = watches["reward"], watches["autoreset"]
    setattr(core, obs, watches["observation"])
    return watches


def _best_laps(runs: list[dict[str, list]]) -> dict[str, float]:
    """Seconds per part: the sum over steps of each step's fastest repeat (a preempted
    step on a shared machine then costs what it costs when it is not preempted)."""
    return {k: float(np.min(np.array([r[k] for r in runs]), axis=0).sum()) for k in runs[0]}


def profile_vector_step(num_envs: int = 1024, steps: int = 650, reward: Any = "theory", observation: str = "dict",
                        repeats: int = 5, env_id: str = ENV_ID) -> dict[str, Any]:
    """Where the time of one vector step goes, in ns per env-step.

    The env runs ``steps`` steps of random actions (autoresets included), ``repeats``
    times, with stopwatches on its reward call (every term; one fused compiled call for
    the built-in ones), its commit-and-observe call and its resets; ``driver`` is the
    rest of the step (action checks, Dict views, flags, info). Each step counts with
    its fastest repeat. Each term is then run alone, in an env of its own over the same
    actions, and its cost is its reward call minus the fixed part of a call (the
    composite's Python side, the compiled call and the row sums, timed with no term in
    the kernel), so the terms' costs add up to about the reward's less that fixed part.
    Shares are of the whole step.
    """
    import copy

    import gymnasium as gym

    import musicenv  # noqa: F401
    import rewards
    from rewards.kernels import KernelBatch

    def make(spec: Any) -> Any:
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", reward=spec,
                            observation=observation).unwrapped

    env = make(reward)
    core = env.core
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, env.single_action_space.n, size=num_envs) for _ in range(16)]
    watches = _watch(core)
    _lap_run(env, actions, 10, watches)  # warm-up
    best = _best_laps([_lap_run(env, actions, steps, watches) for _ in range(repeats)])
    best["driver"] = best["step"] - best["reward"] - best["observation"] - best["autoreset"]
    per = 1e9 / (steps * num_envs)
    out: dict[str, Any] = {"num_envs": num_envs, "steps": steps, "repeats": repeats, "observation": observation,
                           "reward": repr(core.reward), "obs_bytes_per_env": int(core.obs_size * core.obs_dtype.itemsize),
                           "ns_per_env_step": {k: v * per for k, v in best.items()}}
    # the fixed part of a reward call: the composite's Python side, the compiled call and
    # the row sums, timed with a one-term composite whose kernel table is empty
    from musicenv.core import CompositionBatch

    name0, term0, w0 = core.reward.terms[0]
    bare = rewards.CompositeReward([(name0, copy.deepcopy(term0), w0)])
    bare_batch = CompositionBatch(num_envs, core.batch.n_steps, core.grid, core.meter)
    bare.bind(bare_batch)
    bare._kernel = KernelBatch([], bare_batch, np.zeros(0))
    bare._python_cols = []
    act = actions[0]
    laps = []
    for _ in range(steps):
        t0 = time.perf_counter()
        bare.step(bare_batch, act)
        laps.append(time.perf_counter() - t0)
    empty_s = float(np.sort(laps)[: max(1, steps // 2)].mean())  # per call, preemptions left out
    out["ns_per_env_step"]["reward_fixed"] = empty_s * steps * per
    terms: dict[str, float] = {}
    for name, term, weight in core.reward.terms:
        solo = make(rewards.CompositeReward([(name, copy.deepcopy(term), weight)]))
        w = _watch(solo.core)
        _lap_run(solo, actions, 10, w)
        t = _best_laps([_lap_run(solo, actions, steps, w) for _ in range(repeats)])["reward"]
        terms[name] = max(0.0, t - empty_s * steps) * per
        solo.close()
    out["terms_ns_per_env_step"] = terms
    env.close()
    return out


def format_profile(prof: dict[str, Any]) -> str:
    """Markdown table of :func:`profile_vector_step`'s result."""
    ns = prof["ns_per_env_step"]
    step = ns["step"]
    rows = [f"vector step at {prof['num_envs']} envs, observation={prof['observation']!r} "
            f"({prof['obs_bytes_per_env']} bytes per env), reward {prof['reward']}:",
            "", "| part | ns/env-step | share of the step |", "|---|---:|---:|"]
    labels = {"reward": f"reward ({len(prof['terms_ns_per_env_step'])} terms, one fused call)",
              "observation": "observation (commit the token, write the observation)",
              "autoreset": "autoreset (new contexts, cleared term state)",
              "driver": "driver (action checks, Dict views, flags, info)"}
    for part in PROFILE_PARTS:
        rows.append(f"| {labels[part]} | {ns[part]:.1f} | {ns[part] / step:.0%} |")
        if part == "reward":
            rows.append(f"| &nbsp;&nbsp;fixed part of a reward call (Python side, call, row sums) | {ns['reward_fixed']:.1f} | "
                        f"{ns['reward_fixed'] / step:.0%} |")
            for name, v in sorted(prof["terms_ns_per_env_step"].items(), key=lambda kv: -kv[1]):
                rows.append(f"| &nbsp;&nbsp;`{name}` (alone) | {v:.1f} | {v / step:.0%} |")
    rows.append(f"| step | {step:.1f} | 100% |")
    return "\n".join(rows)


def _wall_time(code: str, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure_import(s: Settings, res: Result) -> None:
    best = {"musicenv": math.inf, "gymnasium": math.inf}
    for _ in range(s.subprocess_repeats):
        best["gymnasium"] = min(best["gymnasium"], _wall_time("import gymnasium"))
        best["musicenv"] = min(best["musicenv"], _wall_time("import musicenv"))
    res.figures["import_s_ratio"] = best["musicenv"] / best["gymnasium"]
    res.raw["import_musicenv_s"] = best["musicenv"]
    res.raw["import_gymnasium_s"] = best["gymnasium"]
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, musicenv; "
         "print(','.join(m for m in ('numba', 'torch', 'music21', 'rewards') if m in sys.modules))"],
        check=True, capture_output=True, text=True).stdout.strip()
    res.raw["import_musicenv_loads"] = heavy.split(",") if heavy else []


_CORPUS_TIMED = """
import time
t_start = time.perf_counter()
import json
from musicenv import corpus
t0 = time.perf_counter()
c = corpus.load({name!r}, progress=False)
t1 = time.perf_counter()
print(json.dumps({{"seconds": t1 - t0, "with_import": t1 - t_start, "melodies": len(c),
                  "from_cache": bool(c.report.from_cache)}}))
"""


def measure_corpus(s: Settings, res: Result) -> None:
    key = "corpus_cached_load_s"
    code = _CORPUS_TIMED.format(name=s.corpus)
    try:
        first = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                          text=True).stdout.strip().splitlines()[-1])
        best: dict[str, Any] | None = None
        for _ in range(s.subprocess_repeats):
            out = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
            if best is None or out["seconds"] < best["seconds"]:
                best = out
    except (subprocess.CalledProcessError, ValueError, IndexError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        res.figures[key] = None
        res.reasons[key] = f"could not load corpus {s.corpus!r}: {detail.strip().splitlines()[-1] if detail else e}"
        return
    assert best is not None
    if not best["from_cache"]:
        res.figures[key] = None
        res.reasons[key] = f"corpus {s.corpus!r} was not read from its cache (is the cache writable?)"
        return
    res.figures[key] = best["seconds"]
    res.raw["corpus"] = s.corpus
    res.raw["corpus_melodies"] = best["melodies"]
    res.raw["corpus_import_and_load_s"] = best["with_import"]  # import musicenv.corpus + load
    res.raw["corpus_first_load_s"] = first["seconds"]
    res.raw["corpus_first_load_parsed"] = not first["from_cache"]


_FIRST_STEPS = f"""
import time
t0 = time.perf_counter()
import gymnasium as gym, numpy as np, musicenv
env = gym.make({ENV_ID!r})
env.reset(seed=0)
env.step(14)
vec = gym.make_vec({ENV_ID!r}, num_envs=2, vectorization_mode="vector_entry_point")
vec.reset(seed=0)
vec.step(np.array([14, 15]))
print(time.perf_counter() - t0)
"""


def measure_compile(s: Settings, res: Result) -> None:
    key = "numba_compile_s"
    if not s.compile:
        res.figures[key] = None
        res.reasons[key] = "skipped (--quick): compiling every kernel from scratch takes several seconds"
        return
    with tempfile.TemporaryDirectory(prefix="musicenv-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}

        def first_steps() -> float:
            out = subprocess.run([sys.executable, "-c", _FIRST_STEPS], check=True, env=env, capture_output=True,
                                 text=True)
            return float(out.stdout.strip().splitlines()[-1])

        cold = first_steps()  # compiles and fills the empty cache
        warm = min(first_steps() for _ in range(max(1, s.subprocess_repeats // 2)))
    res.figures[key] = cold - warm
    res.raw["first_step_cold_cache_s"] = cold
    res.raw["first_step_warm_cache_s"] = warm


FIGURES: tuple[tuple[str, Callable[[Settings, Result], None]], ...] = (
    ("single env vs CartPole", measure_single),
    ("vector env vs CartPole vector env", measure_vector),
    ("episode length scaling", measure_length_scaling),
    ("prior reward at 256 envs", measure_prior),
    ("PPO training vs CartPole", measure_ppo),
    ("import time", measure_import),
    ("cached corpus load", measure_corpus),
    ("numba compile cost", measure_compile),
)


def figure_names() -> list[str]:
    """The names ``--only`` accepts (each selects the measures whose name ends with it)."""
    return [measure.__name__.removeprefix("measure_") for _, measure in FIGURES]


def run(settings: Settings, only: Sequence[str] | None = None) -> tuple[Result, list[float], list[float]]:
    """Measure every figure (or those whose measure function name ends with one of ``only``;
    ``ValueError`` if one of ``only`` selects nothing)."""
    names = [measure.__name__ for _, measure in FIGURES]
    unknown = [o for o in (only or ()) if not any(n.endswith(o) for n in names)]
    if unknown:
        raise ValueError(f"--only: unknown figure(s) {unknown}; accepted: {' '.join(figure_names())}")
    res = Result()
    load_before = list(os.getloadavg())
    for label, measure in FIGURES:
        if only and not any(measure.__name__.endswith(o) for o in only):
            continue
        _log(f"measuring {label} ...")
        measure(settings, res)
    return res, load_before, list(os.getloadavg())


# ---------------------------------------------------------------------------- report
def _fmt(name: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if name == "prior_reward_steps_per_s_256":
        return f"{v:,.0f} /s"
    if name.endswith("_s"):
        return f"{v:.3f} s"
    return f"{v:.2f}"


def format_table(res: Result) -> str:
    """Markdown table: figure, value, goal, met?"""
    rows = ["| figure | value | goal | met? |", "|---|---:|---|---|"]
    for name, value in res.figures.items():
        met = _met(name, value)
        mark = "-" if met is None or GOALS[name][0].startswith("(") else ("yes" if met else "**no**")
        rows.append(f"| `{name}` | {_fmt(name, value)} | {GOALS[name][0]} | {mark} |")
    return "\n".join(rows)


def _raw_lines(res: Result) -> list[str]:
    r = res.raw
    lines = []
    if "single_us_per_step" in r:
        lines.append(f"single env {r['single_us_per_step']:.2f} us/step vs CartPole {r['cartpole_us_per_step']:.2f}")
    if "vector_ns_per_env_step" in r:
        lines.append(f"vector env ({r['vector_num_envs']} envs) {r['vector_ns_per_env_step']:.1f} ns/env-step "
                     f"(observation='tokens': {r['vector_tokens_ns_per_env_step']:.1f}) vs "
                     f"CartPole {r['cartpole_vector_ns_per_env_step']:.1f} ({r['cartpole_vector_steps_per_s'] / 1e6:.1f}M/s)")
    if "n_bars_4_us_per_step" in r:
        lines.append(f"n_bars=4 {r['n_bars_4_us_per_step']:.2f} us/step, n_bars=64 {r['n_bars_64_us_per_step']:.2f}")
    if "ppo_runs" in r:
        ps, runs = r["ppo_settings"], r["ppo_runs"]
        d = r["ppo_sb3_defaults_runs"]
        lines.append(f"PPO with SB3's defaults (1 env, n_steps 2048, batch 64, 10 epochs, 64x64 nets; the figure): "
                     f"{d['music']['steps_per_s']:,.0f} vs CartPole {d['cartpole']['steps_per_s']:,.0f} steps/s")
        lines.append(f"PPO with ppo.yml's settings ({ps['n_envs']} envs, n_steps {ps.get('n_steps')}, batch "
                     f"{ps.get('batch_size')}, {ps.get('n_epochs')} epochs, net {ps['net_arch']}, {ps['torch_threads']} "
                     f"torch thread(s), {ps['timesteps']} steps): {r['ppo_shipped_vs_cartpole']:.2f}x CartPole "
                     f"({r['ppo_dummy_vs_cartpole']:.2f}x with MusicComposition-v0 in DummyVecEnv)")
        for name, label in (("cartpole", "CartPole-v1, DummyVecEnv"), ("music", f"MusicComposition-v0, {ps['vec_env']}"),
                            ("music_dummy", "MusicComposition-v0, DummyVecEnv")):
            x = runs[name]
            lines.append(f"  {label}: {x['steps_per_s']:,.0f} steps/s; of {x['total_s']:.2f} s, updates "
                         f"{x['update_s']:.2f} s, rollouts {x['rollout_s']:.2f} s (env steps {x['env_step_s']:.2f} s)")
    if "import_musicenv_s" in r:
        lines.append(f"import musicenv {r['import_musicenv_s']:.3f} s, gymnasium {r['import_gymnasium_s']:.3f} s; "
                     f"heavy modules loaded by import musicenv: {r['import_musicenv_loads'] or 'none'}")
    if "corpus_melodies" in r:
        lines.append(f"corpus {r['corpus']!r}: {r['corpus_melodies']} melodies; a fresh process imports "
                     f"musicenv.corpus and loads them in {r['corpus_import_and_load_s']:.3f} s")
    if "first_step_cold_cache_s" in r:
        lines.append(f"first steps {r['first_step_cold_cache_s']:.2f} s with an empty numba cache, "
                     f"{r['first_step_warm_cache_s']:.2f} s with a warm one")
    for name, why in res.reasons.items():
        lines.append(f"{name}: {why}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.throughput", description=__doc__.split("\n\n")[0])
    _add_options(parser)
    return _run_cli(parser.parse_args(argv))


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", help="write every figure, raw rate, load average and version here")
    p.add_argument("--repeats", type=int, help="interleaved repeats per figure, best kept (default 3; 1 with --quick)")
    p.add_argument("--steps", type=int, help="single-env steps per repeat (default 20000; 600 with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script, not a measurement")
    p.add_argument("--only", nargs="+", metavar="FIGURE",
                   help="measure only these (single vector length_scaling prior ppo import corpus compile)")
    p.add_argument("--profile", action="store_true",
                   help="where a vector step's time goes: each reward term's, the observation's and the driver's "
                        "share, in both observation modes (alone, or after the figures named by --only)")
    p.add_argument("--profile-reward", default="theory", metavar="SPEC",
                   help="reward spec profiled by --profile (default: theory)")


def _run_cli(args: argparse.Namespace) -> int:
    for opt in ("repeats", "steps"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            print(f"error: --{opt} must be >= 1, got {v}", file=sys.stderr)
            return 2
    if args.json:
        from musicenv.files import check_file_target

        try:  # before measuring for minutes
            check_file_target(args.json, what="--json file")
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    unknown = [o for o in (args.only or ()) if not any(n.endswith(o) for n in
                                                       (measure.__name__ for _, measure in FIGURES))]
    if unknown:
        print(f"error: --only: unknown figure(s) {unknown}; accepted: {' '.join(figure_names())}", file=sys.stderr)
        return 2
    if args.quick:
        settings = Settings.quick_size(args.repeats, args.steps)
    else:
        settings = Settings()
        settings.repeats = args.repeats or settings.repeats
        settings.steps = args.steps or settings.steps
    if args.profile and not args.only:
        res, before = Result(), list(os.getloadavg())
    else:
        res, before, _ = run(settings, args.only)
        print(format_table(res))
        print()
        for line in _raw_lines(res):
            print(line)
    if args.profile:
        import rewards

        try:
            rewards.make(args.profile_reward)
        except (rewards.RewardSpecError, OSError) as e:
            print(f"error: --profile-reward: {e}", file=sys.stderr)
            return 2
        profiles = []
        for mode in ("dict", "tokens"):
            _log(f"profiling a vector step (observation={mode!r}) ...")
            prof = profile_vector_step(settings.vector_envs, settings.vector_steps // 2 if not settings.quick else 20,
                                       args.profile_reward, mode, repeats=max(settings.repeats, 3))
            profiles.append(prof)
            print()
            print(format_profile(prof))
        res.raw["profile"] = profiles
    after = list(os.getloadavg())
    print(f"load average (1, 5, 15 min): before {_fmt_load(before)}, after {_fmt_load(after)}; "
          f"{os.cpu_count()} CPUs")
    if args.json:
        from musicenv.files import write_atomically

        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(res.to_json(settings, before, after), indent=1, allow_nan=False) + "\n"
        write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="--json file")
        print(f"wrote {path}")
    return 0


def _fmt_load(load: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def add_commands(subparsers: Any) -> None:
    """Add ``musicenv bench`` (see :mod:`musicenv.cli`)."""
    p = subparsers.add_parser("bench", help="throughput benchmark: env steps/s as ratios to CartPole, import "
                                             "and corpus load times (issue 8)")
    _add_options(p)
    p.set_defaults(func=_run_cli)


if __name__ == "__main__":
    sys.exit(main())
