"""Simulated raters with a known hidden utility: to test the study end to end.

:class:`HiddenUtility` is a weighted mix of style statistics of
:func:`musicenv.study.features.style_features`; the default,

    u(x) = 3 · in_key_share + 2 · step_share − |notes_per_bar − 4| / 2,

likes melodies in the key, moving by step, at about a note per beat (the pace of a
chorale soprano), and dislikes random and hectic ones. A :class:`SimulatedRater`
prefers a over b with probability σ((u(a) − u(b)) / temperature) and answers "no
preference" when |u(a) − u(b)| < ``tie_margin``: a noisy but consistent listener.

:func:`simulate_study` lets ``n_raters`` such raters answer pairs of a real study
through the same database calls the web app makes, so the report, the export and the fit
can be run on it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musicenv.study.features import STYLE_NAMES, style_features

__all__ = ["HiddenUtility", "SimulatedRater", "simulate_study", "DEFAULT_UTILITY", "pieces_as_compositions"]

DEFAULT_UTILITY: dict[str, float] = {"in_key_share": 3.0, "step_share": 2.0}
#: |notes_per_bar - target| / 2 is subtracted: a note per beat in 4/4.
DEFAULT_PACE = 4.0


@dataclass
class HiddenUtility:
    """u(x) = Σ weights[s] · style[s] − pace_weight · |notes_per_bar − pace| (see the module doc)."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_UTILITY))
    pace: float = DEFAULT_PACE
    pace_weight: float = 0.5

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(STYLE_NAMES))
        if unknown:
            raise ValueError(f"unknown style statistic(s) {unknown}; accepted: {', '.join(STYLE_NAMES)}")

    def __call__(self, comps: Sequence[Any]) -> np.ndarray:
        S = np.array([style_features(c) for c in comps]).reshape(len(comps), len(STYLE_NAMES))
        u = np.zeros(len(comps))
        for name, w in self.weights.items():
            u += w * S[:, STYLE_NAMES.index(name)]
        return u - self.pace_weight * np.abs(S[:, STYLE_NAMES.index("notes_per_bar")] - self.pace)


@dataclass
class SimulatedRater:
    """A noisy rater of a hidden utility (see the module doc)."""

    temperature: float = 0.5
    tie_margin: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)) or self.tie_margin < 0:
            raise ValueError("temperature must be > 0 and tie_margin >= 0")
        self.rng = np.random.default_rng(self.seed)

    def choose(self, u_a: float, u_b: float) -> float:
        """1.0 (a preferred), 0.0 (b preferred) or 0.5 (no preference)."""
        d = u_a - u_b
        if abs(d) < self.tie_margin:
            return 0.5
        return float(self.rng.random() < 1.0 / (1.0 + math.exp(-d / self.temperature)))


def pieces_as_compositions(rows: Sequence[Any]) -> list[Any]:
    """The database's piece rows as :class:`~musicenv.composition.Composition` objects."""
    from musicenv.composition import Composition

    return [Composition(np.array(r.tokens, dtype=np.int64), r.key, r.meter, np.array(r.chords, dtype=np.int64))
            for r in rows]


def simulate_study(study_dir: str | os.PathLike, *, n_raters: int = 10, pairs_per_rater: int | None = None,
                   utility: HiddenUtility | None = None, temperature: float = 0.5, tie_margin: float = 0.05,
                   seed: int = 0) -> dict[str, Any]:
    """Let ``n_raters`` simulated raters answer ``pairs_per_rater`` pairs each (default: all)
    of the study in ``study_dir``, in their own random order and sides, as through the page.
    Returns a summary: answers added, and the hidden utility's mean per source."""
    from musicenv.study.db import StudyDB

    utility = utility or HiddenUtility()
    with StudyDB(study_dir) as db:
        pieces = db.pieces()
        u = dict(zip((p.id for p in pieces), utility(pieces_as_compositions(pieces))))
        added = 0
        for r in range(n_raters):
            cookie = f"simulated-rater-{seed}-{r:04d}"
            rater = db.rater(cookie, name=f"simulated {r}")
            rng = SimulatedRater(temperature, tie_margin, seed=seed * 100_003 + r)
            todo = [p for p in db.pair_order(cookie) if p.id not in db.answered_pairs(rater["id"])]
            for pair in todo[:pairs_per_rater]:
                left = db.left_piece_for(cookie, pair)
                right = pair.piece_b if left == pair.piece_a else pair.piece_a
                y = rng.choose(u[left], u[right])
                choice = "left" if y == 1.0 else "right" if y == 0.0 else "none"
                db.add_answer(rater["id"], pair.id, left, choice)
                added += 1
        by_source: dict[str, list[float]] = {}
        for p in pieces:
            by_source.setdefault(p.source, []).append(u[p.id])
    return {"answers_added": added, "utility_by_source": {s: float(np.mean(v)) for s, v in by_source.items()}}


def varied_pieces(n: int, *, n_bars: int = 4, seed: int = 0) -> list[Any]:
    """``n`` melodies of ``n_bars`` bars of 4/4 over a common progression, each drawn with its
    own style: note density (1 to 16 onsets per bar), chance of a note outside the key
    (0 to 0.6) and chance of moving by step (0 to 1), in a random key. For simulated studies
    that need pieces spanning a wide range of the hidden utility cheaply (no env, no model)."""
    from musicenv.composition import Composition
    from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, HOLD
    from musicenv.theory import COMMON_PROGRESSIONS, KEY_NAMES, Key

    rng = np.random.default_rng(seed)
    grid = DEFAULT_GRID
    steps = n_bars * 16
    out = []
    for _ in range(n):
        key = Key.parse(KEY_NAMES[int(rng.integers(24))])
        bank = COMMON_PROGRESSIONS["minor" if key.minor else "major"]
        progression = list(bank[int(rng.integers(len(bank)))])
        density = int(rng.choice([1, 2, 4, 8, 16]))
        p_out, p_step = float(rng.uniform(0, 0.6)), float(rng.uniform(0, 1))
        scale = [p for p in range(60, 80) if key.contains(p)]
        chromatic = [p for p in range(60, 80) if not key.contains(p)]
        tokens = np.full(steps, HOLD, dtype=np.int64)
        onsets = sorted(set(rng.choice(steps, size=min(steps, density * n_bars), replace=False).tolist()) | {0})
        pitch = int(rng.choice(scale))
        for t in onsets:
            if rng.random() < p_out:
                pitch = int(rng.choice(chromatic))
            elif rng.random() < p_step:
                i = int(np.argmin([abs(p - pitch) for p in scale]))
                pitch = scale[int(np.clip(i + rng.choice([-1, 1]), 0, len(scale) - 1))]
            else:
                pitch = int(rng.choice(scale))
            tokens[t] = pitch - grid.min_pitch + FIRST_PITCH_TOKEN
        out.append(Composition.from_progression(tokens, progression, key, "4/4"))
    return out
