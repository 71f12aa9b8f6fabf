"""Reward-design benchmark: a grid of env ids x reward specs x algorithms x seeds x budgets.

::

    musicenv benchmark experiments/configs/smoke.yaml --jobs 2 --out runs/smoke
    musicenv benchmark experiments/configs/reward_designs.yaml --backend ray --address auto

Grid file (YAML, read with ``yaml.safe_load``)::

    name: smoke                        # optional; default: the file's stem
    envs: [MusicComposition-v0]        # env ids (default: [MusicComposition-v0])
    rewards:                           # named reward specs (any rewards.make spec)
      theory: theory
      chords: {chord_tone_on_strong_beat: 1, consonance: 1}
    algorithms: [ppo, dqn]             # agents.train algorithm names
    seeds: [0, 1]                      # training seeds (or a count: 2 -> [0, 1])
    budgets: [2048]                    # env steps per run (n_timesteps)
    hyperparams: {ppo: {n_steps: 64}}  # optional, per algorithm: overrides of agents/hyperparams
    env_kwargs: {n_bars: 4}            # optional, for every env
    train: {eval_freq: 1024}           # optional: other agents.train.TrainConfig fields
    eval: {episodes: 32, seed: 3000000}  # optional: the benchmark's held-out evaluation

A *cell* is one (env id, reward, algorithm, budget); a *run* is a cell and a seed.
Everything (keys, reward specs, algorithm names, each cell's resolved training
config) is validated before any run starts; a bad grid raises
:class:`BenchmarkConfigError` naming the offending key and what is accepted.

Output directory
----------------
::

    OUT/
      benchmark.yaml                 the grid as loaded (with defaults filled in)
      runs/<cell>/seed<k>/           one finished run: agents.train's run directory plus
          benchmark_run.json         cell, seed, wall time, threads, backend
          benchmark_eval.json        the held-out evaluation (below)
          sample.json, sample.mid, sample.png   one sample piece (tokens, key, chords)
      runs/<cell>/.tmp-seed<k>-<id>/ a run in progress (never read)
      results.md, aggregate.json, learning_curves.png, bars_<group>.png, piano_rolls.png

A run trains into a temporary directory and is renamed to ``seed<k>`` only when it
is complete (``os.rename`` within one directory is atomic), so a directory named
``seed<k>`` is always a finished run and a killed benchmark leaves only
temporaries, which the next invocation deletes before starting. Rerunning skips
finished runs, but only those made with the same resolved config (training config
identity, :func:`agents.train.config_identity`: env kwargs, reward spec,
algorithm, hyperparameters, seed, budget, package version; plus the grid's reward
designs and ``eval`` settings, which the held-out scores depend on). A finished run
made otherwise, or one no longer in the grid, stops the benchmark before anything
runs, with the differing keys named; ``--force`` deletes such runs and trains them
again. A lock file (``OUT/.lock``) stops two benchmarks sharing ``OUT``. Grid,
design and cell names are plain names, so nothing is written outside ``OUT``.

Held-out evaluation
-------------------
After training, the final policy plays ``eval.episodes`` pieces (default 32), sampled
with its own seeded random stream, on env seeds ``eval.seed + k`` (default
3,000,000 + k: disjoint from agents.train's training, periodic-evaluation and test
ranges). ``benchmark_eval.json`` holds, as flat ``scores``, the mean over pieces of
``objective`` (the run's own reward), of ``reward/<design>/<term>`` and
``reward/<design>/total`` for *every* reward design of the grid (by replaying the
pieces with :func:`rewards.scoring.score`), and every statistic of
:func:`musicenv.metrics.evaluate_set`, so what a reward did not optimise is
recorded next to what it did (reward hacking shows). The pieces are played in the
run's own env (its reward does not change what the policy sees).

Backends
--------
``local`` (default) runs ``--jobs`` worker processes (spawned); each trains with
``torch.set_num_threads(max(1, cores // jobs))``. ``ray`` submits the same run
function to Ray (``ray.init(address=ADDR)``, default a local instance with
``num_cpus=jobs``); install the extra with ``pip install 'musicenv[ray]'``. On a
multi-machine cluster, ``OUT`` must be on a file system all nodes share.
Aggregation (:mod:`experiments.aggregate`) runs at the end and on
``aggregate(out_dir)``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from musicenv.files import staged_folder

__all__ = ["BenchmarkConfigError", "Grid", "RunSpec", "load_grid", "parse_grid", "plan_runs", "run_one",
           "run_benchmark", "aggregate", "add_commands", "DEFAULT_ENV", "FAIL_AFTER_ENV"]

DEFAULT_ENV = "MusicComposition-v0"
#: Test hook: the main process raises after this many runs finished in this invocation
#: (simulates a benchmark killed between runs; the kill test also SIGKILLs mid-run).
FAIL_AFTER_ENV = "MUSICENV_BENCHMARK_FAIL_AFTER"

GRID_KEYS = {
    "name": "a label for results.md (default: the file's stem)",
    "envs": "list of env ids",
    "rewards": "mapping of design name -> rewards.make spec",
    "algorithms": "list of algorithm names (agents.train)",
    "seeds": "list of ints, or a count n meaning 0..n-1",
    "budgets": "list of env-step budgets (n_timesteps)",
    "hyperparams": "mapping algorithm -> {hyperparameter: value}",
    "env_kwargs": "mapping of gym.make keywords for every env",
    "train": "mapping of other agents.train.TrainConfig fields",
    "eval": "mapping with keys episodes, seed",
}
REQUIRED_KEYS = ("rewards", "algorithms", "seeds", "budgets")
EVAL_KEYS = {"episodes": 32, "seed": 3_000_000}
#: TrainConfig fields the grid sets itself (not allowed under ``train``).
GRID_OWNED = ("algo", "env_id", "reward", "env_kwargs", "seed", "n_timesteps", "hyperparams", "out", "progress",
              "n_threads")

#: Statistics of ``evaluate_set`` that count the sample set rather than describe its music.
COUNT_KEYS = ("rl_tuner/n_compositions", "rl_tuner/n_steps", "rl_tuner/n_leaps_resolved", "rl_tuner/n_leaps_doubled")
RUN_INFO_FILE, EVAL_FILE = "benchmark_run.json", "benchmark_eval.json"
GRID_FILE, LOCK_FILE = "benchmark.yaml", ".lock"
TMP_PREFIX = ".tmp-"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


class BenchmarkConfigError(ValueError):
    """A benchmark grid that cannot be run; the message names the key and the accepted values."""


class BenchmarkStateError(BenchmarkConfigError):
    """The output folder cannot be used as asked (another benchmark holds it, stale runs)."""


@dataclass
class Grid:
    """A validated benchmark grid (see module doc)."""

    name: str
    rewards: dict[str, Any]
    algorithms: list[str]
    seeds: list[int]
    budgets: list[int]
    envs: list[str] = field(default_factory=lambda: [DEFAULT_ENV])
    hyperparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, int] = field(default_factory=lambda: dict(EVAL_KEYS))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunSpec:
    """One run: a cell and a seed, with everything a worker needs (plain data, picklable)."""

    cell: str
    env_id: str
    reward_name: str
    algo: str
    budget: int
    seed: int
    config: dict[str, Any]  # agents.train.TrainConfig fields, without out
    designs: dict[str, Any]  # every reward design of the grid, for scoring
    eval_episodes: int
    eval_seed: int

    @property
    def rel_dir(self) -> str:
        return f"runs/{self.cell}/seed{self.seed}"


# ------------------------------------------------------------------------------ the grid
def _err(source: str, key: str, msg: str) -> BenchmarkConfigError:
    return BenchmarkConfigError(f"{source}: key {key!r}: {msg}")


def _int_list(value: Any, key: str, source: str, minimum: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and key == "seeds":
        if value < 1:
            raise _err(source, key, f"a seed count must be >= 1, got {value}")
        return list(range(value))
    if not isinstance(value, list) or not value:
        raise _err(source, key, f"expected a non-empty list of integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise _err(source, key, f"expected integers >= {minimum}, got {v!r}")
        out.append(v)
    if len(set(out)) != len(out):
        raise _err(source, key, f"contains duplicates: {value!r}")
    return out


def _name_list(value: Any, key: str, source: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _err(source, key, f"expected a non-empty list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise _err(source, key, f"contains duplicates: {value!r}")
    return list(value)


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _err(source, key, f"expected a mapping, got {type(value).__name__} {value!r}")
    return copy.deepcopy(dict(value))


def parse_grid(data: Any, source: str = "benchmark config", *, validate: bool = True) -> Grid:
    """Build a :class:`Grid` from a parsed YAML mapping; with ``validate``, also check
    every reward spec, algorithm and each cell's resolved training config."""
    if not isinstance(data, Mapping):
        raise BenchmarkConfigError(f"{source}: expected a mapping with keys {', '.join(GRID_KEYS)}, "
                                   f"got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in GRID_KEYS)
    if unknown:
        accepted = "; ".join(f"{k} ({d})" for k, d in GRID_KEYS.items())
        raise BenchmarkConfigError(f"{source}: unknown key(s) {unknown}; accepted keys: {accepted}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise BenchmarkConfigError(f"{source}: missing required key(s) {missing} "
                                   f"({'; '.join(f'{k}: {GRID_KEYS[k]}' for k in missing)})")
    rewards = data["rewards"]
    if not isinstance(rewards, Mapping) or not rewards:
        raise _err(source, "rewards", f"expected a non-empty mapping of design name -> reward spec, got {rewards!r}")
    for name in rewards:
        if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith((".", "-")):
            raise _err(source, "rewards", f"design name {name!r} must be letters, digits, '_', '.', '+' or '-', "
                                          "not starting with '.' or '-'")
    env_ids = _name_list(data.get("envs", [DEFAULT_ENV]), "envs", source)
    algos = _name_list(data["algorithms"], "algorithms", source)
    hyper = _mapping(data.get("hyperparams"), "hyperparams", source)
    for algo, hp in hyper.items():
        if algo not in algos:
            raise _err(source, f"hyperparams.{algo}", f"not one of the grid's algorithms {algos}")
        if not isinstance(hp, Mapping):
            raise _err(source, f"hyperparams.{algo}", f"expected a mapping of hyperparameters, got {hp!r}")
    train = _mapping(data.get("train"), "train", source)
    ev = _mapping(data.get("eval"), "eval", source)
    bad = sorted(set(ev) - set(EVAL_KEYS))
    if bad:
        raise _err(source, f"eval.{bad[0]}", f"unknown; accepted keys: {', '.join(EVAL_KEYS)}")
    for k, v in ev.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k == "episodes" else 0):
            raise _err(source, f"eval.{k}", f"expected an integer >= {1 if k == 'episodes' else 0}, got {v!r}")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith((".", "-")):
        raise _err(source, "name", f"{name!r} is not a plain name (it names the output folder "
                                   "runs/benchmark/<name>); use letters, digits, '_', '.', '+' or '-', not starting "
                                   "with '.' or '-'")
    grid = Grid(name=name, rewards=copy.deepcopy(dict(rewards)), algorithms=algos,
                seeds=_int_list(data["seeds"], "seeds", source, 0),
                budgets=_int_list(data["budgets"], "budgets", source, 1), envs=env_ids,
                hyperparams={a: dict(h) for a, h in hyper.items()},
                env_kwargs=_mapping(data.get("env_kwargs"), "env_kwargs", source), train=train,
                eval={**EVAL_KEYS, **ev})
    if validate:
        validate_grid(grid, source)
    return grid


def validate_grid(grid: Grid, source: str = "benchmark config") -> None:
    """Check the reward specs (``rewards.make``), algorithm names, ``train`` keys and
    every cell's training config (``agents.train.resolve_config``) without training."""
    from agents.train import TrainConfig, TrainConfigError, get_algorithm, resolve_config
    from rewards import RewardSpecError, make

    for name, spec in grid.rewards.items():
        try:
            make(spec)
        except (RewardSpecError, ValueError, TypeError) as e:
            raise _err(source, f"rewards.{name}", f"invalid reward spec: {e}") from e
    for algo in grid.algorithms:
        try:
            get_algorithm(algo)
        except TrainConfigError as e:
            raise _err(source, "algorithms", str(e)) from e
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    for k in grid.train:
        if k in GRID_OWNED:
            raise _err(source, f"train.{k}", "is set by the grid itself; use the grid's own keys "
                                             "(envs, rewards, algorithms, seeds, budgets, hyperparams, env_kwargs)")
        if k not in fields:
            raise _err(source, f"train.{k}", f"unknown; accepted: "
                                             f"{', '.join(f for f in fields if f not in GRID_OWNED)}")
    seen: set[tuple[str, str, str]] = set()
    for spec in plan_runs(grid):
        key = (spec.env_id, spec.reward_name, spec.algo)
        if key in seen:
            continue
        seen.add(key)
        try:
            resolve_config(TrainConfig(**spec.config))
        except (TrainConfigError, ValueError) as e:
            raise _err(source, f"hyperparams.{spec.algo}" if spec.algo in grid.hyperparams else "train",
                       f"cell {spec.cell}: {e}") from e


def load_grid(path: str | os.PathLike, *, validate: bool = True) -> Grid:
    """Read and validate a benchmark grid file (``yaml.safe_load``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BenchmarkConfigError(f"cannot read benchmark config {str(path)!r}: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BenchmarkConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_grid(data, str(path), validate=validate)


def cell_name(env_id: str, reward: str, algo: str, budget: int, grid: Grid) -> str:
    """Directory name of a cell; the env id is left out when the grid has only one."""
    parts = ([env_id.replace("/", "_")] if len(grid.envs) > 1 else []) + [reward, algo, str(budget)]
    return "-".join(parts)


def plan_runs(grid: Grid) -> list[RunSpec]:
    """Every run of the grid, cells in grid order, seeds innermost."""
    runs = []
    for env_id in grid.envs:
        for reward_name, spec in grid.rewards.items():
            for algo in grid.algorithms:
                for budget in grid.budgets:
                    for seed in grid.seeds:
                        config = dict(copy.deepcopy(grid.train), algo=algo, env_id=env_id,
                                      reward=copy.deepcopy(spec), env_kwargs=copy.deepcopy(grid.env_kwargs),
                                      seed=seed, n_timesteps=budget,
                                      hyperparams=copy.deepcopy(grid.hyperparams.get(algo, {})), progress=False)
                        runs.append(RunSpec(cell_name(env_id, reward_name, algo, budget, grid), env_id, reward_name,
                                            algo, budget, seed, config, copy.deepcopy(grid.rewards),
                                            grid.eval["episodes"], grid.eval["seed"]))
    return runs


# ---------------------------------------------------------------------------------- runs
def _write_json(path: Path, data: Any) -> None:
    from agents.train import write_json  # one JSON writer for run directories

    write_json(path, data)


def held_out_evaluation(model: Any, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Play ``spec.eval_episodes`` sampled pieces, score them under every design and
    :func:`musicenv.metrics.evaluate_set`; write the sample piece. Returns the eval dict.
    In the Jam envs ReaLchords' metrics (``jam/*``) are added; in ``JamChords-v0``, whose
    agent plays only the chords, they replace the melody statistics (style, RL Tuner,
    MusPy, harmony, diversity), which would describe the partner's corpus melody."""
    import numpy as np

    from agents.train import ModelPolicy, TrainConfig, make_env
    from musicenv.baselines import run_episode
    from musicenv.metrics import evaluate_set
    from musicenv.render import save_png
    from rewards.scoring import score

    cfg = TrainConfig(**{**spec.config, "out": str(run_dir)})
    jam = cfg.env_id.startswith("Jam")
    if cfg.env_id == "JamChords-v0":  # trained on a corpus's train split, judged on its test melodies
        cfg.env_kwargs = {**cfg.env_kwargs, "split": "test"}
    env = make_env(cfg)
    seeds = [spec.eval_seed + k for k in range(spec.eval_episodes)]
    try:
        policy = ModelPolicy(model, env, deterministic=False, seed=spec.eval_seed)
        pieces, own = [], []
        for s in seeds:
            policy.reset()
            comp, totals = run_episode(env, policy, seed=s)
            pieces.append(copy.deepcopy(comp))
            own.append(totals["total"])
    finally:
        env.close()
    scores: dict[str, float] = {"objective": float(np.mean(own))}
    for design, dspec in spec.designs.items():
        if jam:  # the Jam terms score two parts played together: a melody alone cannot be replayed
            continue
        per_piece = [score(dspec, c) for c in pieces]
        for term in per_piece[0]:
            scores[f"reward/{design}/{term}"] = float(np.mean([p[term] for p in per_piece]))
    if cfg.env_id != "JamChords-v0":  # there the melody is the partner's: its statistics say nothing of the agent
        scores.update({k: float(v) for k, v in evaluate_set(pieces).items() if k not in COUNT_KEYS})
    if jam:  # ReaLchords' metrics: note-in-chord, onset EMD, chord-length entropy, diversity
        from musicenv.jam import composition_statistics

        scores.update(composition_statistics(pieces))
    sample = pieces[0]
    sample.title = f"{spec.cell} seed {spec.seed}"
    _write_json(run_dir / "sample.json", {"tokens": sample.tokens.tolist(), "key": str(sample.key),
                                          "meter": str(sample.meter), "chords": sample.chords.tolist(),
                                          "env_seed": seeds[0]})
    sample.to_midi(run_dir / "sample.mid")
    save_png(sample, run_dir / "sample.png")
    return {"episodes": len(seeds), "seeds": [seeds[0], seeds[-1]], "mode": "sampled", "scores": scores}


def run_one(spec: RunSpec, out_dir: str, n_threads: int = 1, backend: str = "local") -> dict[str, Any]:
    """Train and evaluate one run into a temporary directory, then rename it to
    ``OUT/runs/<cell>/seed<k>``. Returns the run's ``benchmark_run.json`` content.
    The same function runs in local worker processes and as a Ray task."""
    from agents.train import TrainConfig, train

    t0 = time.perf_counter()
    final = Path(out_dir) / spec.rel_dir
    if (final / EVAL_FILE).exists():
        return json.loads((final / RUN_INFO_FILE).read_text(encoding="utf-8"))
    # trained aside, renamed into place when evaluated; a finished run already there makes
    # the rename fail (OSError), and an interrupted one leaves only a TMP_PREFIX folder
    with staged_folder(final, tmp_name=f"{TMP_PREFIX}seed{spec.seed}-{secrets.token_hex(4)}") as tmp:
        result = train(TrainConfig(**{**spec.config, "out": str(tmp), "n_threads": n_threads}))
        ev = held_out_evaluation(result.model, spec, tmp)
        _write_json(tmp / EVAL_FILE, ev)
        info = {"cell": spec.cell, "env_id": spec.env_id, "reward": spec.reward_name, "algo": spec.algo,
                "budget": spec.budget, "seed": spec.seed, "reward_spec": spec.config["reward"],
                "eval_identity": _eval_identity(spec),
                "wall_time_s": round(time.perf_counter() - t0, 3), "n_threads": n_threads, "backend": backend,
                "timesteps": result.timesteps}
        _write_json(tmp / RUN_INFO_FILE, info)
    return info


def _finished(out_dir: Path, spec: RunSpec) -> bool:
    d = out_dir / spec.rel_dir
    return (d / EVAL_FILE).is_file() and (d / RUN_INFO_FILE).is_file()


def _eval_identity(spec: RunSpec) -> dict[str, Any]:
    """What a run's held-out scores depend on besides its training config."""
    return {"designs": copy.deepcopy(spec.designs), "episodes": spec.eval_episodes, "seed": spec.eval_seed}


def stale_runs(out_dir: Path, runs: Sequence[RunSpec]) -> dict[Path, str]:
    """Finished runs under ``out_dir`` that cannot be reused for ``runs``: made with
    another config (-> the differing keys) or not part of the grid."""
    from agents.train import (
        RunStateError,
        TrainConfig,
        TrainConfigError,
        config_identity,
        identity_difference,
        resolve_config,
        run_identity,
    )

    planned = {out_dir / s.rel_dir: s for s in runs}
    stale: dict[Path, str] = {}
    for d in sorted(out_dir.glob("runs/*/seed*")):
        if not (d.is_dir() and (d / EVAL_FILE).is_file()):
            continue
        spec = planned.get(d)
        if spec is None:
            stale[d] = "not in this grid"
            continue
        try:
            wanted = config_identity(resolve_config(TrainConfig(**spec.config)))
            stored = run_identity(d)
            info = json.loads((d / RUN_INFO_FILE).read_text(encoding="utf-8"))
        except (RunStateError, TrainConfigError, OSError, ValueError) as e:
            stale[d] = f"unreadable ({e})"
            continue
        diff = identity_difference({**stored, "eval": info.get("eval_identity") if isinstance(info, dict) else None},
                                   {**wanted, "eval": json.loads(json.dumps(_eval_identity(spec)))})
        if diff:
            stale[d] = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    return stale


def clear_temporaries(out_dir: Path) -> list[Path]:
    """Delete what killed runs left: ``runs/*/.tmp-*`` directories and unfinished
    ``seed<k>`` directories (which only a hand-made copy could create)."""
    removed = []
    for d in sorted(out_dir.glob("runs/*/*")):
        if d.is_dir() and (d.name.startswith(TMP_PREFIX) or not (d / EVAL_FILE).is_file()):
            shutil.rmtree(d)
            removed.append(d)
    return removed


@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[None]:
    import fcntl

    with open(out_dir / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchmarkStateError(f"another benchmark is running in {str(out_dir)!r} (it holds "
                                      f"{LOCK_FILE}); wait for it to finish or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _run_local(todo: Sequence[RunSpec], out: Path, jobs: int, on_done: Callable[[dict[str, Any]], None]) -> None:
    if jobs == 1:
        for spec in todo:
            on_done(run_one(spec, str(out), _threads(1), "local"))
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        pending = {pool.submit(run_one, spec, str(out), _threads(jobs), "local") for spec in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _run_ray(todo: Sequence[RunSpec], out: Path, jobs: int, address: str | None,
             on_done: Callable[[dict[str, Any]], None]) -> None:
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("--backend ray needs Ray: pip install 'musicenv[ray]'") from e
    started = not ray.is_initialized()
    if started:
        repo = str(Path(__file__).resolve().parent.parent)
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}}
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=jobs, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_one)
        pending = [remote.remote(spec, str(out.resolve()), _threads(jobs), "ray") for spec in todo]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    on_done(ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


class _Heartbeat:
    """A progress line every ``every_s`` seconds from a background thread (for logs and
    pipes: a benchmark's runs can each take minutes)."""

    def __init__(self, describe: Callable[[], str], every_s: float = 10.0) -> None:
        import threading

        self.describe, self.every_s = describe, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            print(self.describe(), file=sys.stderr, flush=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def _check_init_from(grid: Grid) -> None:
    """Refuse, before anything is written, a grid whose ``train.init_from`` is no run
    directory (every run would fail on it)."""
    from agents.train import RunStateError, TrainConfigError
    from agents.train.identity import load_run_config

    source = grid.train.get("init_from")
    if source is None:
        return
    try:
        load_run_config(Path(source).expanduser())
    except (RunStateError, TrainConfigError) as e:
        raise BenchmarkStateError(f"train.init_from: {e}; make that run first (the grid's comments say how), "
                                  "or run the benchmark from the folder it is relative to") from e


def run_benchmark(grid: Grid | str | os.PathLike, out_dir: str | os.PathLike, *, jobs: int = 1,
                  backend: str = "local", address: str | None = None, aggregate_results: bool = True,
                  progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Run every unfinished run of ``grid`` into ``out_dir``, then aggregate.

    Finished runs made with another config, or not in the grid, stop the benchmark
    (:class:`BenchmarkStateError`, naming the differing keys) before anything runs;
    ``force`` deletes them and trains them again. With ``progress`` and stdout not a
    terminal, a progress line is printed at least every 10 s.

    Returns ``{"total", "skipped", "ran", "wall_time_s", "results"}`` (``results``: the
    path of results.md, or None without aggregation)."""
    from musicenv.files import check_out_dir
    from musicenv.progress import is_terminal

    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    if backend not in ("local", "ray"):
        raise BenchmarkConfigError(f"unknown backend {backend!r}; accepted: local, ray")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise BenchmarkConfigError(f"--jobs must be an integer >= 1, got {jobs!r}")
    _check_init_from(grid)
    try:
        out = check_out_dir(out_dir, what="benchmark output folder")
    except OSError as e:
        raise BenchmarkStateError(str(e)) from e
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _lock(out):
        clear_temporaries(out)
        runs = plan_runs(grid)
        stale = stale_runs(out, runs)
        if stale and not force:
            first, why = next(iter(stale.items()))
            raise BenchmarkStateError(
                f"{len(stale)} finished run(s) in {str(out)!r} do not match this grid, e.g. "
                f"{first.relative_to(out)}: {why}. Pass --force to delete them and train again, or choose another "
                "--out")
        for d in stale:
            shutil.rmtree(d)
        _write_yaml(out / GRID_FILE, grid.to_dict())
        todo = [s for s in runs if not _finished(out, s)]
        skipped = len(runs) - len(todo)
        fail_after = int(os.environ.get(FAIL_AFTER_ENV, "0") or 0)
        count = 0

        def on_done(info: dict[str, Any]) -> None:
            nonlocal count
            count += 1
            if progress:
                print(f"[{skipped + count}/{len(runs)}] {info['cell']} seed {info['seed']}: "
                      f"{info['wall_time_s']:.1f} s", file=sys.stderr, flush=True)
            if fail_after and count >= fail_after:
                raise RuntimeError(f"{FAIL_AFTER_ENV}={fail_after}: stopping after {count} finished run(s)")

        if progress:
            print(f"benchmark {grid.name!r}: {len(runs)} runs, {skipped} already finished, {len(todo)} to run "
                  f"({backend}, {jobs} job(s), {_threads(jobs)} torch thread(s) each)"
                  + (f"; {len(stale)} stale run(s) deleted (--force)" if stale else ""), file=sys.stderr, flush=True)
        stage = ["training"]

        def describe() -> str:
            return (f"benchmark {grid.name!r}: {stage[0]}, {skipped + count}/{len(runs)} runs finished, "
                    f"{time.perf_counter() - t0:.0f} s")

        beat = _Heartbeat(describe) if progress and not is_terminal() else contextlib.nullcontext()
        with beat:
            if todo:
                if backend == "local":
                    _run_local(todo, out, jobs, on_done)
                else:
                    _run_ray(todo, out, jobs, address, on_done)
            stage[0] = "aggregating"
            results = aggregate(out) if aggregate_results else None
    return {"total": len(runs), "skipped": skipped, "ran": count, "wall_time_s": time.perf_counter() - t0,
            "results": results}


def _write_yaml(path: Path, data: Any) -> None:
    from musicenv.render import write_atomically

    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="grid file")


def aggregate(out_dir: str | os.PathLike, *, reps: int | None = None, seed: int = 0,
              plots: bool = True) -> Path:
    """Aggregate the finished runs of ``out_dir``: write ``aggregate.json``,
    ``results.md`` and the PNG plots (see :mod:`experiments.aggregate`); return the
    path of results.md."""
    from experiments import aggregate as agg_mod

    out = Path(out_dir)
    runs = agg_mod.load_runs(out)
    if not runs:
        raise BenchmarkConfigError(f"no finished runs under {str(out / 'runs')!r}")
    agg = agg_mod.aggregate_runs(runs, reps=reps or agg_mod.BOOTSTRAP_REPS, seed=seed)
    _write_json(out / "aggregate.json", agg)
    pngs = agg_mod.plot_all(out, runs, agg) if plots else []
    title = "Reward-design benchmark"
    if (out / GRID_FILE).exists():
        title += f" `{yaml.safe_load((out / GRID_FILE).read_text(encoding='utf-8')).get('name', '')}`"
    return agg_mod.write_results_md(agg, out / "results.md", title=title, plots=[p.name for p in pngs])


# ----------------------------------------------------------------------------------- CLI
def _cmd_benchmark(args: argparse.Namespace) -> int:
    try:
        grid = load_grid(args.config)
    except BenchmarkConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from agents.train import RunStateError, TrainConfigError

    out = Path(args.out) if args.out else Path("runs") / "benchmark" / grid.name
    if args.dry_run:
        runs = plan_runs(grid)
        done = sum(_finished(out, s) for s in runs)
        print(f"{grid.name}: {len(runs)} runs ({done} finished in {out}); cells:")
        for cell in dict.fromkeys(s.cell for s in runs):
            print(f"  {cell}  seeds {grid.seeds}")
        return 0
    try:
        res = run_benchmark(grid, out, jobs=args.jobs, backend=args.backend, address=args.address, force=args.force)
    except (BenchmarkConfigError, TrainConfigError, RunStateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{res['ran']} run(s) trained, {res['skipped']} skipped, {res['wall_time_s']:.1f} s; "
          f"results: {res['results']}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``musicenv benchmark`` (see :mod:`musicenv.cli`)."""
    p = subparsers.add_parser("benchmark", help="reward-design benchmark: a YAML grid of envs x rewards x "
                                                 "algorithms x seeds x budgets; IQM + bootstrap CIs, plots")
    p.add_argument("config", help="benchmark grid YAML (e.g. experiments/configs/smoke.yaml)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default: 1)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="local processes or Ray")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--out", default=None, help="output directory (default: runs/benchmark/<name>)")
    p.add_argument("--dry-run", action="store_true", help="validate the grid and list its cells; train nothing")
    p.add_argument("--force", action="store_true", help="delete finished runs made with another config (or no "
                                                        "longer in the grid) and train them again (default: refuse)")
    p.set_defaults(func=_cmd_benchmark)


if __name__ == "__main__":
    from musicenv.cli import main

    sys.exit(main(["benchmark", *sys.argv[1:]]))
