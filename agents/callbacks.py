"""SB3 callbacks of ``agents.train``: music evaluation, learning curve, atomic checkpoints.

* :class:`MusicEvalCallback` plays greedy and sampled episodes on a separate env with
  held-out seeds every ``eval_freq`` env steps and logs the mean reward, each reward
  term's mean (episode totals of ``info["reward_terms"]``) and the music statistics of
  :func:`musicenv.metrics.evaluate_set` (notes not in key, pitch-class entropy, chord
  tones, diversity, ...) to TensorBoard (``eval/<mode>/...``) and to the run's
  learning curve (:class:`LearningCurve`).
* :class:`PeriodicCheckpoint` saves the agent as tensors (and an off-policy replay
  buffer as arrays; never a pickle) every ``save_freq`` env steps, atomically, at
  multiples of ``save_freq`` counted on the model's own timestep counter, so the
  schedule survives a resume.
* :class:`ProgressLines` prints training progress as plain lines (for logs and pipes).
* :func:`evaluate` is the episode loop both the callback and the final evaluation use;
  it takes any ``policy(obs) -> action`` (a trained model through
  :class:`agents.sampling.ModelPolicy`, or a baseline).
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.sampling import ModelPolicy
from musicenv.baselines import run_episode
from musicenv.files import write_atomically
from musicenv.progress import ProgressPrinter

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["evaluate", "evaluate_per_piece", "music_statistics", "LearningCurve", "MusicEvalCallback", "PeriodicCheckpoint",
           "ProgressLines", "save_checkpoint"]

#: Statistics of ``evaluate_set`` that are counts, not per-piece qualities (not logged).
_COUNT_KEYS = ("rl_tuner/n_compositions", "rl_tuner/n_steps", "rl_tuner/n_leaps_resolved",
               "rl_tuner/n_leaps_doubled")


def music_statistics(compositions: Sequence[Any]) -> dict[str, float]:
    """:func:`musicenv.metrics.evaluate_set` of the pieces (without counts); empty if that
    module is not available or cannot read this env's compositions (with a warning:
    an evaluation must not stop training)."""
    try:
        from musicenv.metrics import evaluate_set
    except ImportError:
        return {}
    try:
        stats = evaluate_set(compositions)
    except (ValueError, TypeError) as e:
        warnings.warn(f"no music statistics for {type(compositions[0]).__name__} pieces: "
                      f"musicenv.metrics.evaluate_set failed ({type(e).__name__}: {e})", RuntimeWarning, stacklevel=2)
        return {}
    return {k: float(v) for k, v in stats.items() if k not in _COUNT_KEYS}


def evaluate(env: gym.Env, policy: Callable[[Any], int], seeds: Sequence[int], *,
             statistics: bool = True, progress: ProgressPrinter | None = None) -> dict[str, Any]:
    """Play one episode per seed with ``policy``; summarise rewards and music.

    Returns ``{"episodes": n, "reward_mean", "reward_std", "terms": {term: mean episode
    total}, "metrics": {statistic: value}}`` (metrics from :func:`music_statistics`, NaN
    where undefined). ``policy.reset()`` is called before each episode if it exists.
    """

    def same_policy(seed: int) -> Callable[[Any], int]:
        if hasattr(policy, "reset"):
            policy.reset()
        return policy

    return evaluate_per_piece(env, same_policy, seeds, statistics=statistics, progress=progress)


def evaluate_per_piece(env: gym.Env, make_policy: Callable[[int], Callable[[Any], int]], seeds: Sequence[int], *,
                       statistics: bool = True, progress: ProgressPrinter | None = None) -> dict[str, Any]:
    """As :func:`evaluate`, with a fresh policy per piece: ``make_policy(seed)`` (the
    form of ``musicenv.compose`` sources). ``progress`` is advanced by one per piece."""
    totals: list[dict[str, float]] = []
    comps = []
    for seed in seeds:
        comp, tot = run_episode(env, make_policy(int(seed)), seed=int(seed))
        totals.append(tot)
        comps.append(comp)
        if progress is not None:
            progress.advance()
    rewards = np.array([t["total"] for t in totals], dtype=np.float64)
    terms = {name: float(np.mean([t.get(name, 0.0) for t in totals])) for name in totals[0] if name != "total"}
    return {
        "episodes": len(totals),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "terms": terms,
        "metrics": music_statistics(comps) if statistics else {},
    }


class ProgressLines(BaseCallback):
    """Training progress as :class:`ProgressPrinter` lines (timesteps out of ``total``;
    a line at least every 10 s or 5 %), for runs whose output is not a terminal."""

    def __init__(self, total: int, label: str = "training", stream: Any = None) -> None:
        super().__init__(0)
        self.total, self.label, self.stream = int(total), label, stream
        self.printer: ProgressPrinter | None = None

    def _on_training_start(self) -> None:
        self.printer = ProgressPrinter(self.label, self.total, unit="steps", stream=self.stream)
        self.printer.update(self.num_timesteps)

    def _on_step(self) -> bool:
        if self.printer is not None:
            if self.printer.due(self.num_timesteps):  # cheap test first: this runs every env step
                self.printer.update(self.num_timesteps)
        return True

    def _on_training_end(self) -> None:
        if self.printer is not None and self.printer.done != self.num_timesteps:
            self.printer.update(self.num_timesteps)


class LearningCurve:
    """The run's ``learning_curve.csv``: one row per evaluation and mode.

    Columns: ``timesteps, time, mode, episodes, reward_mean, reward_std``, then
    ``term/<name>`` (mean episode total of each reward term) and ``metric/<name>``
    (music statistics). The whole file is rewritten atomically after each evaluation
    (it is small), so it is never half-written. ``keep_until`` drops rows newer than a
    resumed checkpoint when an existing curve is continued.
    """

    FIXED = ("timesteps", "time", "mode", "episodes", "reward_mean", "reward_std")

    def __init__(self, path: str | Path, keep_until: int | None = None) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            try:
                with open(self.path, newline="", encoding="utf-8") as f:
                    self.rows = [row for row in csv.DictReader(f)
                                 if keep_until is None or int(float(row["timesteps"])) <= keep_until]
            except (ValueError, KeyError, TypeError, csv.Error) as e:  # incl. UnicodeDecodeError
                raise ValueError(f"cannot continue the learning curve {str(self.path)!r}: it is not a "
                                 f"learning_curve.csv written by musicenv ({type(e).__name__}: {e}); move it away "
                                 "to start a new one") from e

    def append(self, timesteps: int, mode: str, result: Mapping[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"timesteps": int(timesteps), "time": round(time.time(), 3), "mode": mode,
                               "episodes": result["episodes"], "reward_mean": result["reward_mean"],
                               "reward_std": result["reward_std"]}
        row.update({f"term/{k}": v for k, v in result["terms"].items()})
        row.update({f"metric/{k}": v for k, v in result["metrics"].items()})
        self.rows.append(row)
        self.write()
        return row

    def write(self) -> None:
        columns = list(self.FIXED)
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        text = buf.getvalue()
        write_atomically(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="learning curve")


class MusicEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps (and once before training), play ``n_episodes``
    pieces greedily and ``n_episodes`` sampled, on an env of its own built by
    ``env_factory``, with seeds ``seed .. seed + n_episodes - 1`` (the same pieces each
    time; keep them apart from the training seeds). Logs ``eval/<mode>/reward_mean``,
    ``eval/<mode>/term/<name>`` and ``eval/<mode>/metric/<name>`` to SB3's logger
    (TensorBoard) and appends rows to ``curve``.

    The sampled episodes draw from a random stream of their own (seeded with ``seed``),
    so evaluating changes neither the training's random state nor its results.
    """

    def __init__(self, env_factory: Callable[[], gym.Env], *, eval_freq: int, n_episodes: int, seed: int,
                 curve: LearningCurve | None = None, modes: Sequence[str] = ("greedy", "sampled"),
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        if eval_freq < 1 or n_episodes < 1:
            raise ValueError(f"eval_freq and n_episodes must be >= 1, got {eval_freq} and {n_episodes}")
        unknown = set(modes) - {"greedy", "sampled"}
        if unknown:
            raise ValueError(f"unknown evaluation modes {sorted(unknown)}; valid: greedy, sampled")
        self.env_factory, self.eval_freq, self.n_episodes, self.seed = env_factory, eval_freq, n_episodes, seed
        self.curve, self.modes = curve, tuple(modes)
        self.env: gym.Env | None = None
        self._next = 0
        self.results: list[tuple[int, str, dict[str, Any]]] = []

    def _on_training_start(self) -> None:
        self.env = self.env_factory()
        if self.num_timesteps == 0:  # the untrained policy: where the curve starts
            self.evaluate()
        self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.evaluate()
            self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        return True

    def _on_training_end(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def evaluate(self) -> None:
        if self.env is None:
            raise RuntimeError("MusicEvalCallback.evaluate() runs only during training (no eval env yet)")
        seeds = range(self.seed, self.seed + self.n_episodes)
        for mode in self.modes:
            policy = ModelPolicy(self.model, self.env, deterministic=mode == "greedy", seed=self.seed)
            result = evaluate(self.env, policy, seeds)
            self.results.append((self.num_timesteps, mode, result))
            self.logger.record(f"eval/{mode}/reward_mean", result["reward_mean"])
            self.logger.record(f"eval/{mode}/reward_std", result["reward_std"])
            for name, value in result["terms"].items():
                self.logger.record(f"eval/{mode}/term/{name}", value)
            for name, value in result["metrics"].items():
                if not math.isnan(value):
                    self.logger.record(f"eval/{mode}/metric/{name}", value)
            if self.curve is not None:
                self.curve.append(self.num_timesteps, mode, result)
            if self.verbose:
                print(f"eval @ {self.num_timesteps}: {mode} reward {result['reward_mean']:.2f}")
        self.logger.dump(self.num_timesteps)


#: Replay buffers kept (those of the newest checkpoints): the latest and one to fall back on.
KEEP_BUFFERS = 2


def save_checkpoint(model: BaseAlgorithm, directory: str | Path, *, save_replay_buffer: bool = False,
                    algo: str | None = None, config_hash: str | None = None) -> Path:
    """Save ``model`` as ``directory/agent_<timesteps>_steps.pt``, atomically.

    The file holds tensors and JSON only (:func:`agents.agent_io.save_agent`), never a
    pickle. With ``save_replay_buffer`` (off-policy models), first save the replay
    buffer as ``replay_buffer_<timesteps>_steps.npz`` (plain arrays) and delete all
    but the newest :data:`KEEP_BUFFERS` (buffers are large; the previous one is kept
    so that a damaged latest checkpoint can fall back to the one before). The agent
    file is written last, so a checkpoint whose agent file exists is complete.
    """
    from agents.agent_io import save_agent
    from agents.agent_io import save_replay_buffer as save_buffer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    steps = int(model.num_timesteps)
    if save_replay_buffer and getattr(model, "replay_buffer", None) is not None:
        buffer = directory / f"replay_buffer_{steps}_steps.npz"
        save_buffer(model.replay_buffer, buffer)
        older = sorted((p for p in directory.glob("replay_buffer_*_steps.npz") if p != buffer),
                       key=lambda p: _steps_of(p.name), reverse=True)
        for old in older[KEEP_BUFFERS - 1:]:
            old.unlink(missing_ok=True)
    return save_agent(model, directory / f"agent_{steps}_steps.pt", algo=algo or type(model).__name__,
                      config_hash=config_hash)


def _steps_of(name: str) -> int:
    digits = "".join(ch for ch in name.split("_steps")[0].rsplit("_", 1)[-1] if ch.isdigit())
    return int(digits) if digits else -1


class PeriodicCheckpoint(BaseCallback):
    """Save a checkpoint (:func:`save_checkpoint`) each time the model's timestep
    counter passes a multiple of ``save_freq`` env steps.

    On-policy algorithms (PPO and its kin) are saved at the start of the next rollout,
    after the update that used the finished one: a checkpoint then holds the weights of
    every rollout it counts, and a run resumed from it collects the same rollouts as an
    uninterrupted one and ends at the same timestep count. Off-policy algorithms train
    during the steps and are saved on the step that passes the multiple."""

    def __init__(self, directory: str | Path, save_freq: int, *, save_replay_buffer: bool = False,
                 algo: str | None = None, config_hash: str | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        if save_freq < 1:
            raise ValueError(f"save_freq must be >= 1, got {save_freq}")
        self.directory, self.save_freq, self.save_replay_buffer = Path(directory), save_freq, save_replay_buffer
        self.algo, self.config_hash = algo, config_hash
        self._next = save_freq
        self._on_policy = False

    def _on_training_start(self) -> None:
        from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

        self._on_policy = isinstance(self.model, OnPolicyAlgorithm)
        self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _save_if_due(self) -> None:
        if self.num_timesteps >= self._next:
            path = save_checkpoint(self.model, self.directory, save_replay_buffer=self.save_replay_buffer,
                                   algo=self.algo, config_hash=self.config_hash)
            if self.verbose:
                print(f"checkpoint: {path}")
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_rollout_start(self) -> None:
        if self._on_policy:
            self._save_if_due()

    def _on_step(self) -> bool:
        if not self._on_policy:
            self._save_if_due()
        return True
