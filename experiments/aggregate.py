"""Aggregate a reward-design benchmark: IQM, stratified bootstrap CIs, results.md, plots.

Statistics follow rliable (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice"), reimplemented with numpy/scipy because rliable does not
import here:

* **IQM** (:func:`iqm`): the interquartile mean, ``scipy.stats.trim_mean(x, 0.25)``
  over all scores pooled (runs x tasks), as ``rliable.metrics.aggregate_iqm``. With
  fewer than 4 scores nothing is trimmed (it is the plain mean).
* **95 % stratified bootstrap CI** (:func:`stratified_bootstrap_ci`): each resample
  draws, *within every task (stratum) separately*, as many runs as that task has,
  with replacement; the statistic (IQM) is computed on the pooled resample; the
  interval is the 2.5th and 97.5th percentile of ``reps`` resamples (rliable's
  ``StratifiedBootstrap`` with the percentile method). ``reps`` defaults to
  :data:`BOOTSTRAP_REPS`; the generator is ``numpy.random.default_rng(seed)``, created
  afresh for every (cell, metric), so every number is deterministic and does not
  depend on the order cells are aggregated in.

What is bootstrapped here: for a *cell* (env id, reward design, algorithm, budget),
the runs are its seeds and there is one task, so the strata are that one task and
the resampled units are seeds (each seed contributes one score per metric: the mean
over its held-out evaluation pieces). When a grid has several env ids, the
*across-env* table pools the cells of a (reward, algorithm, budget) over the env ids,
which are then the strata, exactly as rliable stratifies over games.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["BOOTSTRAP_REPS", "CONFIDENCE", "Interval", "iqm", "stratified_bootstrap_ci", "interval_estimate",
           "load_runs", "aggregate_runs", "write_results_md", "plot_all", "farming_flags", "random_style_distance",
           "BASELINE_DESIGN"]

#: Bootstrap resamples per (cell, metric). rliable uses 50,000 in its examples; with
#: 3-5 seeds per cell 10,000 already pins the percentiles to about the third digit.
BOOTSTRAP_REPS = 10_000
#: Two-sided confidence level of the intervals.
CONFIDENCE = 0.95


def iqm(scores: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean of the middle 50 % of ``scores`` (trimming
    ``floor(0.25 n)`` values from each end; ``axis=None`` pools all values)."""
    return stats.trim_mean(np.asarray(scores, dtype=np.float64), proportiontocut=0.25, axis=axis)


def stratified_bootstrap_ci(strata: Sequence[Sequence[float]], statistic: Callable[..., Any] = iqm, *,
                            reps: int = BOOTSTRAP_REPS, confidence: float = CONFIDENCE,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over pooled scores, resampling
    runs with replacement within each stratum (task) separately.

    ``strata``: one sequence of run scores per task (lengths may differ).
    ``statistic(x, axis=1)`` must reduce each row of a ``(reps, n)`` array.
    Returns ``(low, high)``; NaN scores are dropped first, and a stratum left empty
    is ignored (``(nan, nan)`` if all are).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    rng = np.random.default_rng(seed)
    parts = []
    for stratum in strata:
        x = np.asarray(stratum, dtype=np.float64)
        x = x[~np.isnan(x)]
        if x.size:
            parts.append(x[rng.integers(0, x.size, size=(reps, x.size))])
    if not parts:
        return math.nan, math.nan
    boot = statistic(np.concatenate(parts, axis=1), axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


class Interval(dict):
    """``{"iqm", "low", "high", "n"}`` of one (cell, metric)."""


def interval_estimate(strata: Sequence[Sequence[float]], *, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> Interval:
    """IQM of the pooled non-NaN scores with its stratified bootstrap CI."""
    pooled = np.concatenate([np.asarray(s, dtype=np.float64) for s in strata]) if strata else np.zeros(0)
    pooled = pooled[~np.isnan(pooled)]
    if not pooled.size:
        return Interval(iqm=math.nan, low=math.nan, high=math.nan, n=0)
    low, high = stratified_bootstrap_ci(strata, reps=reps, seed=seed)
    return Interval(iqm=float(iqm(pooled)), low=low, high=high, n=int(pooled.size))


# --------------------------------------------------------------------------- run files
#: The per-run files the benchmark writes (see experiments.benchmark).
RUN_INFO_FILE, EVAL_FILE, SAMPLE_PNG = "benchmark_run.json", "benchmark_eval.json", "sample.png"
CURVE_FILE = "learning_curve.csv"


def load_runs(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run under ``OUT/runs``: ``{"dir", "info", "scores"}`` (temporaries
    and unfinished directories are skipped), in a stable order."""
    runs = []
    for info_path in sorted(Path(out_dir).glob(f"runs/*/seed*/{RUN_INFO_FILE}")):
        run_dir = info_path.parent
        if not (run_dir / EVAL_FILE).exists():
            continue
        info = json.loads(info_path.read_text(encoding="utf-8"))
        ev = json.loads((run_dir / EVAL_FILE).read_text(encoding="utf-8"))
        runs.append({"dir": run_dir, "info": info, "scores": ev["scores"]})
    return runs


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def aggregate_runs(runs: Sequence[Mapping[str, Any]], *, reps: int = BOOTSTRAP_REPS,
                   seed: int = 0) -> dict[str, Any]:
    """``{"cells": {cell: {"info", "seeds", "metrics": {metric: Interval}}},
    "across_envs": {...} (only with several env ids)}``."""
    cells: dict[str, dict[str, Any]] = {}
    for run in runs:
        info = run["info"]
        cell = cells.setdefault(info["cell"], {"info": {k: info[k] for k in ("env_id", "reward", "algo", "budget")},
                                               "seeds": [], "values": {}})
        cell["seeds"].append(info["seed"])
        for metric, v in run["scores"].items():
            cell["values"].setdefault(metric, []).append(_float(v))
    out: dict[str, Any] = {"reps": reps, "confidence": CONFIDENCE, "seed": seed, "cells": {}}
    for name in sorted(cells):
        c = cells[name]
        out["cells"][name] = {"info": c["info"], "seeds": sorted(c["seeds"]),
                              "metrics": {m: interval_estimate([v], reps=reps, seed=seed)
                                          for m, v in sorted(c["values"].items())}}
    env_ids = {c["info"]["env_id"] for c in cells.values()}
    if len(env_ids) > 1:
        groups: dict[str, dict[str, dict[str, list[float]]]] = {}
        for c in cells.values():
            i = c["info"]
            key = f"{i['reward']} / {i['algo']} / {i['budget']}"
            for m, v in c["values"].items():
                groups.setdefault(key, {}).setdefault(m, {})[i["env_id"]] = v
        out["across_envs"] = {key: {"metrics": {m: interval_estimate(list(by_env.values()), reps=reps, seed=seed)
                                                for m, by_env in sorted(ms.items())}}
                              for key, ms in sorted(groups.items())}
    return out


# ---------------------------------------------------------------------------- results.md
def metric_group(metric: str) -> str:
    """``rl_tuner/notes_not_in_key`` -> ``rl_tuner``; ``reward/theory/in_key`` -> ``reward/theory``."""
    parts = metric.split("/")
    return "/".join(parts[:2]) if parts[0] == "reward" and len(parts) > 2 else parts[0]


def _fmt(x: float) -> str:
    if x is None or math.isnan(x):
        return "nan"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _cell_text(iv: Mapping[str, float]) -> str:
    return f"{_fmt(iv['iqm'])} [{_fmt(iv['low'])}, {_fmt(iv['high'])}]"


#: The reward design others are compared with when flagging farming.
BASELINE_DESIGN = "theory"
#: The compact style table: (metric, column title, scale).
STYLE_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("objective", "own objective", 1.0),
    ("style/distance", "style distance", 1.0),
    ("style/c2st_accuracy", "C2ST acc.", 1.0),
    ("style/notes_per_bar", "notes/bar", 1.0),
    ("style/sixteenth_share", "16ths %", 100.0),
    ("style/leap_share", "leaps >= 5th %", 100.0),
    ("style/final_long", "final >= quarter %", 100.0),
    ("style/final_tonic", "final on tonic %", 100.0),
    ("style/in_key_share", "in key %", 100.0),
)


def random_style_distance(env_id: str = "MusicComposition-v0", episodes: int = 64, seed: int = 3_000_000) -> float:
    """Style distance (:func:`musicenv.style.style_distance`, to the shipped real melodies
    of the same length and meter) of the uniformly random policy's pieces in ``env_id``
    with its default settings; NaN when there is no reference for them."""
    import gymnasium as gym

    import musicenv  # noqa: F401  (registers the environments)
    from musicenv.baselines import RandomPolicy, run_episode
    from musicenv.style import default_reference, style_distance

    env = gym.make(env_id)
    try:
        pieces = [run_episode(env, RandomPolicy(env, seed=seed + k, masked=True), seed=seed + k)[0]
                  for k in range(episodes)]
    finally:
        env.close()
    real = default_reference(pieces)
    return math.nan if real is None else style_distance(pieces, real)["distance"]


def farming_flags(cells: Mapping[str, Mapping[str, Any]], random_distance: float,
                  baseline: str = BASELINE_DESIGN) -> dict[str, bool | None]:
    """Which cells farm their reward design.

    A cell (design d, algorithm a, budget) **farms** when both hold:

    * its own objective beats the baseline design's: the IQM of ``objective`` (its pieces
      scored under d) exceeds the IQM of ``reward/d/total`` of the baseline design's cell
      with the same env, algorithm and budget (the baseline agent's pieces scored under
      d) — it learned what d pays for better than the baseline agent did;
    * its style distance to real melodies (``style/distance``) is past the random
      policy's halfway mark: more than half the random policy's distance — its pieces
      are nearer to noise than to real melodies.

    The mark is absolute (real melodies sit at 0, noise at ``random_distance``) rather
    than halfway between the baseline agent's distance and random's: at a small budget
    the baseline agent is itself far from real melodies (PPO from scratch on ``theory``
    at 40k steps: 0.54 of random's 0.71), and a mark that moved with it would excuse
    every design short of noise.

    The baseline cell itself, and cells without a baseline cell, get None.
    """
    out: dict[str, bool | None] = {}
    index = {(c["info"]["env_id"], c["info"]["algo"], c["info"]["budget"], c["info"]["reward"]): name
             for name, c in cells.items()}
    for name, c in cells.items():
        i = c["info"]
        base_name = index.get((i["env_id"], i["algo"], i["budget"], baseline))
        if base_name is None or base_name == name or math.isnan(random_distance):
            out[name] = None
            continue
        m, b = c["metrics"], cells[base_name]["metrics"]
        own_key, dist_key = f"reward/{i['reward']}/total", "style/distance"
        if "objective" not in m or own_key not in b or dist_key not in m or dist_key not in b:
            out[name] = None
            continue
        beats = m["objective"]["iqm"] > b[own_key]["iqm"]
        out[name] = bool(beats and m[dist_key]["iqm"] > random_distance / 2)
    return out


GROUP_TITLES = {
    "objective": "Objective: the run's own reward (episode total, mean over held-out pieces)",
    "style": "Style yardstick (musicenv.style): distance to real melodies, classifier two-sample test, profile",
    "rl_tuner": "RL Tuner statistics",
    "muspy": "MusPy-style statistics",
    "harmony": "Harmony statistics",
    "diversity": "Diversity of the sample set",
    "jam": "Jam: ReaLchords' metrics (musicenv.jam; onset EMD in beats, chord-length entropy in nats)",
}


def write_results_md(agg: Mapping[str, Any], path: str | Path, *, title: str = "Reward-design benchmark",
                     plots: Sequence[str] = (), random_distance: float | None = None,
                     baseline: str = BASELINE_DESIGN) -> Path:
    """One Markdown table per metric group: rows are cells, columns metrics, entries
    ``IQM [low, high]``; first a compact style table with the farming flag of every
    cell (:func:`farming_flags`; ``random_distance`` defaults to
    :func:`random_style_distance` of the first cell's env)."""
    cells = agg["cells"]
    lines = [f"# {title}", "",
             f"Each entry is the interquartile mean over seeds with its {int(agg['confidence'] * 100)} % "
             f"stratified bootstrap CI ({agg['reps']} resamples of seeds within each cell, percentile "
             f"method, seed {agg['seed']}). Every run's final policy plays the same held-out pieces; "
             "`reward/<design>/<term>` scores those pieces under *every* design of the grid, so terms a "
             "run did not optimise show next to those it did.", ""]
    lines += ["| cell | env | reward | algorithm | budget | seeds |", "|---|---|---|---|---:|---|"]
    for name, c in cells.items():
        i = c["info"]
        lines.append(f"| {name} | {i['env_id']} | {i['reward']} | {i['algo']} | {i['budget']} | "
                     f"{', '.join(map(str, c['seeds']))} |")
    if any("style/distance" in c["metrics"] for c in cells.values()):
        if random_distance is None:
            random_distance = random_style_distance(next(iter(cells.values()))["info"]["env_id"])
        flags = farming_flags(cells, random_distance, baseline)
        lines += ["", "## What each design's pieces sound like: style and farming", "",
                  f"Style distance to real melodies (0 = same profile; the random policy: {_fmt(random_distance)}), "
                  "classifier two-sample test accuracy (0.5 = indistinguishable from real melodies) and the "
                  "profile, IQM over seeds. **Farming**: the design's own objective beats the baseline design "
                  f"`{baseline}`'s agent on that objective, while its style distance is past the random "
                  f"policy's halfway mark ({_fmt(random_distance / 2)}): its pieces are nearer to noise than to "
                  "real melodies.", "",
                  "| cell | " + " | ".join(t for _, t, _ in STYLE_COLUMNS) + " | farming |",
                  "|---|" + "---:|" * len(STYLE_COLUMNS) + "---|"]
        for name, c in cells.items():
            vals = [_fmt(c["metrics"][k]["iqm"] * scale) if k in c["metrics"] else "" for k, _, scale in STYLE_COLUMNS]
            flag = {True: "**yes**", False: "no", None: "(baseline)" if c["info"]["reward"] == baseline else "–"}
            lines.append(f"| {name} | " + " | ".join(vals) + f" | {flag[flags[name]]} |")
    metrics = sorted({m for c in cells.values() for m in c["metrics"]})
    groups: dict[str, list[str]] = {}
    for m in metrics:
        groups.setdefault(metric_group(m), []).append(m)
    order = sorted(groups, key=lambda g: (list(GROUP_TITLES).index(g) if g in GROUP_TITLES else len(GROUP_TITLES), g))

    def table(rows: Mapping[str, Mapping[str, Any]], group: str) -> list[str]:
        ms = groups[group]
        short = [m[len(group) + 1:] or m for m in ms]
        out = ["| cell | " + " | ".join(short) + " |", "|---|" + "---:|" * len(ms)]
        for name, c in rows.items():
            vals = [_cell_text(c["metrics"][m]) if m in c["metrics"] else "" for m in ms]
            out.append(f"| {name} | " + " | ".join(vals) + " |")
        return out

    for group in order:
        heading = GROUP_TITLES.get(group) or (f"Reward design `{group.split('/', 1)[1]}`: episode totals per term"
                                              if group.startswith("reward/") else group)
        lines += ["", f"## {heading}", ""] + table(cells, group)
    if "across_envs" in agg:
        lines += ["", "## Across env ids (strata: env ids)", ""]
        for group in order:
            lines += ["", f"### {group}", ""] + table(agg["across_envs"], group)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    path = Path(path)
    from musicenv.render import write_atomically

    text = "\n".join(lines) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="results table")


# ---------------------------------------------------------------------------------- plots
def _read_curve(path: Path, mode: str = "sampled") -> dict[int, float]:
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {int(float(r["timesteps"])): float(r["reward_mean"]) for r in csv.DictReader(f) if r["mode"] == mode}


def _save(fig: Any, path: Path) -> Path:
    from musicenv.render import write_atomically

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")

    write_atomically(path, write, what="plot")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_all(out_dir: str | Path, runs: Sequence[Mapping[str, Any]], agg: Mapping[str, Any]) -> list[Path]:
    """Write ``learning_curves.png``, ``bars_<group>.png`` and ``piano_rolls.png`` into
    ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written: list[Path] = []
    cells = agg["cells"]
    # learning curves: one panel per reward design (reward scales differ), IQM over seeds
    by_cell: dict[str, list[dict[int, float]]] = {}
    for run in runs:
        curve = _read_curve(Path(run["dir"]) / CURVE_FILE)
        if curve:
            by_cell.setdefault(run["info"]["cell"], []).append(curve)
    if by_cell:
        designs = sorted({cells[c]["info"]["reward"] for c in by_cell})
        fig, axes = plt.subplots(1, len(designs), figsize=(5 * len(designs), 3.6), squeeze=False)
        axes[0, 0].set_ylabel("episode reward (sampled)")
        for ax, design in zip(axes[0], designs):
            for cell, curves in sorted(by_cell.items()):
                if cells[cell]["info"]["reward"] != design:
                    continue
                steps = sorted(set.intersection(*(set(c) for c in curves)))
                vals = np.array([[c[s] for s in steps] for c in curves])
                ax.plot(steps, iqm(vals, axis=0), label=cell)
                ax.fill_between(steps, vals.min(axis=0), vals.max(axis=0), alpha=0.2)
            ax.set_title(f"reward {design}: IQM over seeds, band min-max", fontsize=9)
            ax.set_xlabel("env steps")
            ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / "learning_curves.png"))
    # per-metric bars with intervals, one figure per group
    metrics = sorted({m for c in cells.values() for m in c["metrics"]})
    groups: dict[str, list[str]] = {}
    for m in metrics:
        groups.setdefault(metric_group(m), []).append(m)
    names = list(cells)
    colours = plt.cm.tab10(np.arange(len(names)) % 10)
    for group, ms in groups.items():
        ncol = min(4, len(ms))
        nrow = math.ceil(len(ms) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        for ax in axes.flat[len(ms):]:
            ax.axis("off")
        for ax, m in zip(axes.flat, ms):
            ivs = [cells[n]["metrics"].get(m, {"iqm": math.nan, "low": math.nan, "high": math.nan}) for n in names]
            y = np.array([iv["iqm"] for iv in ivs])
            err = np.array([[iv["iqm"] - iv["low"] for iv in ivs], [iv["high"] - iv["iqm"] for iv in ivs]])
            ax.bar(range(len(names)), y, yerr=np.nan_to_num(err), color=colours, capsize=3)
            ax.set_title(m[len(group) + 1:] or m, fontsize=8)
            ax.set_xticks([])
            ax.tick_params(labelsize=7)
        handles = [matplotlib.patches.Patch(color=colours[i], label=n) for i, n in enumerate(names)]
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(names)), fontsize=7,
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(names) / 4)))
        fig.suptitle(f"{group}: IQM over seeds, {int(agg['confidence'] * 100)} % stratified bootstrap CI")
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"bars_{group.replace('/', '_')}.png"))
    # piano roll of one sample per cell (its first seed's sample piece)
    samples = {}
    for run in runs:
        png = Path(run["dir"]) / SAMPLE_PNG
        cell = run["info"]["cell"]
        if png.exists() and (cell not in samples or run["info"]["seed"] < samples[cell][0]):
            samples[cell] = (run["info"]["seed"], png)
    if samples:
        from PIL import Image

        fig, axes = plt.subplots(len(samples), 1, figsize=(10, 2.6 * len(samples)), squeeze=False)
        for ax, (cell, (seed, png)) in zip(axes[:, 0], sorted(samples.items())):
            with Image.open(png) as im:
                ax.imshow(np.asarray(im.convert("RGB")))
            ax.set_title(f"{cell} (seed {seed})", fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "piano_rolls.png"))
    return written
