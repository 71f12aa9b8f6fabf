"""Reading a study: export of the answers (CSV, JSONL) and the report (Markdown and a plot).

:func:`win_rates` gives each source's share of the comparisons it took part in that it
won ("no preference" counts half), with a percentile bootstrap interval over answers.
:func:`bradley_terry_sources` fits one Bradley–Terry strength per source (log-odds of
being preferred, centred on 0; the same model as :mod:`musicenv.study.fit` with a source
indicator as the only feature) with bootstrap intervals, which ranks sources even when
they did not all meet equally often. :func:`write_report` writes both, the head-to-head
table, mean ratings and how each source's pieces compare in style with the study's real
melodies (a ``corpus:`` source) when there is one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicenv.study.db import StudyDB

__all__ = ["export_answers", "win_rates", "bradley_terry_sources", "write_report", "EXPORT_FORMATS",
           "answer_outcomes"]

EXPORT_FORMATS = ("csv", "jsonl")


def export_answers(study_dir: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write every answer (joined with its pieces' sources and context) to ``out`` as CSV
    or JSONL (``fmt``, default from the suffix). Written atomically."""
    from musicenv.render import write_atomically

    out = Path(out)
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)} (or a .csv/.jsonl file name); "
                         f"got {fmt!r}")
    with StudyDB(study_dir) as db:
        rows = db.answers()
    if fmt == "jsonl":
        text = "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        columns = list(rows[0]) if rows else ["answer_id"]
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    return write_atomically(out, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="export")


def answer_outcomes(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(piece_a, piece_b, y) of export rows: y = 1 if piece_a won, 0 if piece_b, 0.5 no preference."""
    a = np.array([r["piece_a"] for r in rows], dtype=np.int64)
    b = np.array([r["piece_b"] for r in rows], dtype=np.int64)
    y = np.array([0.5 if r["winner"] is None else float(r["winner"] == r["piece_a"]) for r in rows])
    return a, b, y


def win_rates(rows: Sequence[dict[str, Any]], *, resamples: int = 10_000, seed: int = 0,
              level: float = 0.95) -> dict[str, dict[str, float]]:
    """Per source: ``comparisons``, ``wins`` (ties count half), ``win_rate`` and its
    ``low``/``high`` percentile-bootstrap interval (resampling answers, ``resamples`` times)."""
    sources = sorted({r["source_a"] for r in rows} | {r["source_b"] for r in rows})
    if not rows:
        return {}
    sa = np.array([sources.index(r["source_a"]) for r in rows])
    sb = np.array([sources.index(r["source_b"]) for r in rows])
    _, _, y = answer_outcomes(rows)
    S, N = len(sources), len(rows)
    # per answer: credit to each source and whether it took part (same-source pairs count for both sides)
    credit = np.zeros((N, S))
    part = np.zeros((N, S))
    credit[np.arange(N), sa] += y
    credit[np.arange(N), sb] += 1.0 - y
    part[np.arange(N), sa] += 1.0
    part[np.arange(N), sb] += 1.0
    rng = np.random.default_rng(seed)
    boot = np.empty((resamples, S))
    chunk = max(1, 2_000_000 // max(N, 1))
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        counts = np.stack([np.bincount(rng.integers(N, size=N), minlength=N) for _ in range(n)]).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot[start:start + n] = (counts @ credit) / (counts @ part)
    alpha = (1.0 - level) / 2.0
    out = {}
    for j, s in enumerate(sources):
        n = float(part[:, j].sum())
        wins = float(credit[:, j].sum())
        finite = boot[:, j][np.isfinite(boot[:, j])]
        out[s] = {"comparisons": int(n), "wins": wins, "win_rate": wins / n if n else math.nan,
                  "low": float(np.quantile(finite, alpha)) if finite.size else math.nan,
                  "high": float(np.quantile(finite, 1.0 - alpha)) if finite.size else math.nan}
    return out


def _bt_fit(sa: np.ndarray, sb: np.ndarray, y: np.ndarray, S: int, weights: np.ndarray | None = None) -> np.ndarray:
    from musicenv.study.fit import fit_bradley_terry

    # Source indicators as features. A weak ridge (lambda = 0.1, a prior of about one tie
    # against an average source) keeps a source that never won finite and pins the free constant.
    F = np.eye(S)
    w = fit_bradley_terry(F, sa, sb, y, lam=0.1, weights=weights)
    return w - w.mean()


def bradley_terry_sources(rows: Sequence[dict[str, Any]], *, resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict[str, dict[str, float]]:
    """Per source: Bradley–Terry ``strength`` (log-odds, mean 0), its bootstrap ``low``/``high``
    and ``rank`` (1 = most preferred)."""
    if not rows:
        return {}
    sources = sorted({r["source_a"] for r in rows} | {r["source_b"] for r in rows})
    sa = np.array([sources.index(r["source_a"]) for r in rows])
    sb = np.array([sources.index(r["source_b"]) for r in rows])
    _, _, y = answer_outcomes(rows)
    S, N = len(sources), len(rows)
    w = _bt_fit(sa, sb, y, S)
    rng = np.random.default_rng(seed)
    boot = np.array([_bt_fit(sa, sb, y, S, np.bincount(rng.integers(N, size=N), minlength=N).astype(float))
                     for _ in range(resamples)])
    alpha = (1.0 - level) / 2.0
    order = np.argsort(-w)
    ranks = np.empty(S, dtype=int)
    ranks[order] = np.arange(1, S + 1)
    return {s: {"strength": float(w[j]), "low": float(np.quantile(boot[:, j], alpha)),
                "high": float(np.quantile(boot[:, j], 1.0 - alpha)), "rank": int(ranks[j])}
            for j, s in enumerate(sources)}


def _style_table(db: StudyDB) -> tuple[list[str], dict[str, dict[str, float]]]:
    from musicenv.study.features import STYLE_NAMES, style_features
    from musicenv.study.simulate import pieces_as_compositions

    shown = ("notes_per_bar", "in_key_share", "chord_tone_share", "step_share", "leap_share", "pitch_range",
             "distinct_4gram_share")
    pieces = db.pieces()
    comps = pieces_as_compositions(pieces)
    try:
        from rewards import score_steps_batch

        totals = np.zeros(len(comps))
        for idx, _, values in score_steps_batch("theory", comps):
            totals[idx] = values.sum(axis=(1, 2))
    except Exception:  # noqa: BLE001 - the report still has the style columns
        totals = np.full(len(comps), np.nan)
    by: dict[str, list[np.ndarray]] = {}
    theory: dict[str, list[float]] = {}
    for p, c, tot in zip(pieces, comps, totals):
        by.setdefault(p.source, []).append(style_features(c))
        theory.setdefault(p.source, []).append(float(tot))
    out = {}
    for s, feats in by.items():
        m = np.mean(feats, axis=0)
        out[s] = {k: float(m[STYLE_NAMES.index(k)]) for k in shown}
        out[s]["theory_total"] = float(np.mean(theory[s]))
    return [*shown, "theory_total"], out


def _fmt(v: float, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f} %" if pct else f"{v:.2f}"


def write_report(study_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 resamples: int = 10_000, seed: int = 0) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.png`` into ``out_dir`` (default: the study folder);
    returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from musicenv.render import write_atomically

    study_dir = Path(study_dir)
    out = Path(out_dir) if out_dir is not None else study_dir
    out.mkdir(parents=True, exist_ok=True)
    with StudyDB(study_dir) as db:
        rows = db.answers()
        study = db.study()
        settings = db.settings
        n_pairs = len(db.pairs())
        raters = db.conn.execute("SELECT count(DISTINCT rater_id) FROM answers").fetchone()[0]
        style_cols, style = _style_table(db)
    wr = win_rates(rows, resamples=resamples, seed=seed)
    bt = bradley_terry_sources(rows, resamples=min(resamples, 1000), seed=seed)
    lines = [f"# Listening study: {study['name']}", "",
             f"{len(rows)} answers from {raters} rater(s) on {n_pairs} pairs; sources "
             + ", ".join(f"`{s}`" for s in settings["sources"])
             + f"; {len(settings['contexts'])} contexts of {settings['n_bars']} bars in {settings['meter']}; "
             f"audio by {settings['audio']}.", ""]
    if not rows:
        lines += ["No answers yet.", ""]
    else:
        ties = sum(r["winner"] is None for r in rows)
        lines += [f"No preference in {ties} answers ({100 * ties / len(rows):.1f} %), counted as half a win each.", "",
                  "## Ranking (Bradley–Terry)", "",
                  "| rank | source | strength (log-odds) [95 % CI] | win rate [95 % CI] | comparisons |",
                  "|---:|---|---|---|---:|"]
        for s in sorted(bt, key=lambda s: bt[s]["rank"]):
            b, w = bt[s], wr[s]
            lines.append(f"| {b['rank']} | `{s}` | {b['strength']:+.2f} [{b['low']:+.2f}, {b['high']:+.2f}] | "
                         f"{_fmt(w['win_rate'], True)} [{_fmt(w['low'], True)}, {_fmt(w['high'], True)}] | "
                         f"{w['comparisons']} |")
        lines += ["", f"Intervals: percentile bootstrap over answers ({resamples} resamples for win rates, "
                  f"{min(resamples, 1000)} for strengths). A strength of +1 over another source means its pieces "
                  "are preferred with probability 0.73.", ""]
        sources = sorted(wr)
        lines += ["## Head to head", "", "Share of answers in which the row's source was preferred to the "
                  "column's (ties half; answers in brackets).", "",
                  "| | " + " | ".join(f"`{s}`" for s in sources) + " |", "|---|" + "---|" * len(sources)]
        for s in sources:
            cells = []
            for t in sources:
                num = den = 0.0
                for r in rows:
                    y = 0.5 if r["winner"] is None else float(r["winner"] == r["piece_a"])
                    if (r["source_a"], r["source_b"]) == (s, t):
                        num, den = num + y, den + 1
                    elif (r["source_a"], r["source_b"]) == (t, s):
                        num, den = num + 1 - y, den + 1
                cells.append("" if s == t or not den else f"{100 * num / den:.0f} % ({int(den)})")
            lines.append(f"| `{s}` | " + " | ".join(cells) + " |")
        lines.append("")
        rated = [r for r in rows if any(r[k] is not None for k in ("musicality_a", "musicality_b",
                                                                    "interest_a", "interest_b"))]
        if rated:
            lines += ["## Ratings (1-5, optional)", "", "| source | musicality | interest | rated |", "|---|---:|---:|---:|"]
            for s in sources:
                mus = [r[f"musicality_{x}"] for r in rows for x in "ab" if r[f"source_{x}"] == s
                       and r[f"musicality_{x}"] is not None]
                itr = [r[f"interest_{x}"] for r in rows for x in "ab" if r[f"source_{x}"] == s
                       and r[f"interest_{x}"] is not None]
                lines.append(f"| `{s}` | {_fmt(float(np.mean(mus))) if mus else 'n/a'} | "
                             f"{_fmt(float(np.mean(itr))) if itr else 'n/a'} | {max(len(mus), len(itr))} |")
            lines.append("")
    lines += ["## The pieces as music", "", "Mean per piece, by source"
              + (" (the `corpus:` row is real melodies on the same contexts)" if any(
                  s.startswith("corpus:") for s in style) else "") + ":", "",
              "| source | " + " | ".join(c.replace("_", " ") for c in style_cols) + " |",
              "|---|" + "---:|" * len(style_cols)]
    for s in settings["sources"]:
        if s in style:
            lines.append(f"| `{s}` | " + " | ".join(
                _fmt(style[s][c], c.endswith("share")) for c in style_cols) + " |")
    lines += ["", "![report](report.png)", ""]
    md = write_atomically(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines), encoding="utf-8"),
                          what="report")

    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * max(len(wr), 2) + 1.6))
    if wr:
        order = sorted(bt, key=lambda s: -bt[s]["strength"])[::-1]
        ypos = np.arange(len(order))
        rate = np.array([wr[s]["win_rate"] for s in order])
        axes[0].barh(ypos, rate, xerr=[rate - [wr[s]["low"] for s in order], [wr[s]["high"] for s in order] - rate],
                     color="#6a8fc8", capsize=3)
        axes[0].axvline(0.5, color="#888", lw=1, ls="--")
        axes[0].set_xlim(0, 1)
        axes[0].set_yticks(ypos, order)
        axes[0].set_xlabel("win rate (ties half), 95 % CI")
        st = np.array([bt[s]["strength"] for s in order])
        axes[1].errorbar(st, ypos, xerr=[st - [bt[s]["low"] for s in order], [bt[s]["high"] for s in order] - st],
                         fmt="o", color="#c86a6a", capsize=3)
        axes[1].axvline(0.0, color="#888", lw=1, ls="--")
        axes[1].set_yticks(ypos, [""] * len(order))
        axes[1].set_xlabel("Bradley–Terry strength (log-odds), 95 % CI")
    fig.suptitle(f"{study['name']}: {len(rows)} answers")
    fig.tight_layout()
    png = write_atomically(out / "report.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"), what="plot")
    plt.close(fig)
    return md, png
