"""The style yardstick: how far a set of melodies is from real melodies.

A reward says what a design optimises; this module says what its pieces sound like
next to the melodies the prior learned from, so that a farmed reward shows.

* :func:`piece_style` — the features of one piece: notes per bar, note-length
  histogram (16th share), interval histogram (leap and repeated-note shares), final
  note length and degree, range, notes in key, chord tones on strong beats.
* :func:`style_profile` — a set's means and pooled histograms (plus the NLL under a
  prior when an ``nll_fn`` is given; torch is never imported here).
* :func:`style_distance` — one number in [0, 1] (and its parts) between a set and a
  reference set.
* :func:`classifier_two_sample_test` — the cross-validated accuracy of a fresh
  logistic-regression classifier telling the set from the reference by these
  features: 0.5 means indistinguishable, 1.0 fully separable.
* :func:`reference_melodies` — real melodies of a given length and meter from the
  corpora (default: the prior's training collections, Bach chorale sopranos, Essen and
  O'Neill's via :mod:`musicenv.corpus`); the one place to swap in another reference.

Counting conventions: a note is a NOTE_ON and its HOLDs (it ends at the next event,
a rest or the end); intervals are between consecutive notes with rests skipped
(repeated notes are intervals of 0); a leap is 7 semitones (a fifth) or more.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicenv.composition import Composition, as_composition
from musicenv.theory import CHORD_PC_MASK, KEY_SCALE_MASK, KEY_TONIC, NO_CHORD

__all__ = ["LENGTH_BIN_NAMES", "INTERVAL_BIN_NAMES", "LEAP", "REFERENCE_COLLECTIONS", "StyleError",
           "piece_style", "style_profile", "style_distance", "classifier_two_sample_test", "reference_melodies",
           "style_block", "piece_features", "default_reference", "write_reference_set", "SHIPPED_REFERENCE"]

#: Note-length bins (lower edges in quarters: 0, 1/2, 3/4, 1, 3/2, 2, 3, 4), as rewards.melody.
LENGTH_BIN_NAMES: tuple[str, ...] = ("16th", "8th", "dotted 8th", "quarter", "dotted quarter", "half",
                                     "dotted half", "whole+")
_LENGTH_EDGES = np.array([0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0])
#: Interval bins (absolute semitones): 0, 1-2, 3-4, 5, 6, 7, 8-9, 10-11, 12, >12.
INTERVAL_BIN_NAMES: tuple[str, ...] = ("unison", "step", "third", "fourth", "tritone", "fifth", "sixth",
                                       "seventh", "octave", "over an octave")
_INTERVAL_BIN = np.array([0, 1, 1, 2, 2, 3, 4, 5, 6, 6, 7, 7, 8])
#: A leap: this many semitones or more.
LEAP = 7
#: The prior's training collections (musicenv.corpus names).
REFERENCE_COLLECTIONS: tuple[str, ...] = ("bach", "essen", "oneills")
#: Melodies per collection read by :func:`reference_melodies` by default.
REFERENCE_LIMIT = 400


class StyleError(ValueError):
    """Bad input to the style yardstick (empty set, mismatched meter, unknown collection)."""


# ------------------------------------------------------------------------------ one piece
def _length_bin(quarters: float) -> int:
    return int(np.searchsorted(_LENGTH_EDGES, quarters + 1e-9, side="right") - 1)


def _interval_bin(semitones: int) -> int:
    return 9 if semitones > 12 else int(_INTERVAL_BIN[semitones])


def piece_style(c: Composition) -> dict[str, Any]:
    """Style features of one composition.

    Returns a dict: ``notes``, ``bars``, ``notes_per_bar``, ``length_counts`` (8 bins,
    :data:`LENGTH_BIN_NAMES`), ``interval_counts`` (10 bins, :data:`INTERVAL_BIN_NAMES`),
    ``sixteenth_share``, ``leap_share`` (intervals of a fifth or more / intervals),
    ``repeated_share`` (unisons / intervals), ``final_quarters`` (length of the last
    note), ``final_long`` (1.0 if >= a quarter), ``final_tonic`` (1.0 if on the key's
    tonic), ``range`` (semitones), ``in_key_share`` (notes in the key's scale, minor
    with raised 6th/7th), ``strong_chord_tone_share`` (strong beats where a pitch sounds
    over a chord: share on a chord tone; NaN without chords). Shares are NaN when
    undefined (no notes, no intervals).
    """
    notes = c.notes()
    spq = c.grid.steps_per_quarter
    bars = c.n_steps / c.steps_per_bar
    lengths = np.zeros(len(LENGTH_BIN_NAMES))
    intervals = np.zeros(len(INTERVAL_BIN_NAMES))
    for n in notes:
        lengths[_length_bin(n.duration / spq)] += 1
    pitches = [n.pitch for n in notes]
    for a, b in zip(pitches, pitches[1:]):
        intervals[_interval_bin(abs(b - a))] += 1
    n_int = intervals.sum()
    nan = math.nan
    tonic = int(KEY_TONIC[c.key.index])
    in_key = [bool(KEY_SCALE_MASK[c.key.index, p % 12]) for p in pitches]
    # strong beats: the meter's strong beats, the sounding pitch there
    sounding = np.full(c.n_steps, -1, dtype=np.int64)
    for n in notes:
        sounding[n.onset: n.onset + n.duration] = n.pitch
    spb = c.meter.steps_per_beat(spq)
    strong_steps = [bar * c.steps_per_bar + beat * spb for bar in range(int(math.ceil(bars)))
                    for beat in c.meter.strong_beats]
    hits = [bool(CHORD_PC_MASK[c.chords[s], sounding[s] % 12]) for s in strong_steps
            if s < c.n_steps and sounding[s] >= 0 and c.chords[s] != NO_CHORD]
    final = notes[-1] if notes else None
    return {
        "notes": len(notes), "bars": bars, "notes_per_bar": len(notes) / bars,
        "length_counts": lengths, "interval_counts": intervals,
        "sixteenth_share": lengths[0] / len(notes) if notes else nan,
        "leap_share": intervals[5:].sum() / n_int if n_int else nan,
        "repeated_share": intervals[0] / n_int if n_int else nan,
        "final_quarters": final.duration / spq if final else nan,
        "final_long": float(final.duration >= spq) if final else nan,
        "final_tonic": float(final.pitch % 12 == tonic) if final else nan,
        "range": float(max(pitches) - min(pitches)) if pitches else nan,
        "in_key_share": float(np.mean(in_key)) if in_key else nan,
        "strong_chord_tone_share": float(np.mean(hits)) if hits else nan,
    }


#: Scalar features averaged per set (and used, with the histograms, by the classifier).
SCALARS: tuple[str, ...] = ("notes_per_bar", "sixteenth_share", "leap_share", "repeated_share", "final_quarters",
                            "final_long", "final_tonic", "range", "in_key_share", "strong_chord_tone_share")


def _as_compositions(items: Iterable[Any], what: str) -> list[Composition]:
    comps = [as_composition(x) for x in items]
    if not comps:
        raise StyleError(f"the {what} set is empty; give at least one composition")
    return comps


def _nanmean(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def style_profile(compositions: Iterable[Any], *, nll_fn: Callable[[np.ndarray], float] | None = None
                  ) -> dict[str, Any]:
    """The style of a set: mean of each scalar of :func:`piece_style` over the pieces
    (NaN skipped), pooled ``length_hist`` and ``interval_hist`` (shares over all notes /
    intervals of the set), ``pieces``, and with ``nll_fn`` (tokens -> mean nats per
    token under a prior) ``nll``."""
    comps = _as_compositions(compositions, "style")
    per = [piece_style(c) for c in comps]
    out: dict[str, Any] = {"pieces": len(comps)}
    for k in SCALARS:
        out[k] = _nanmean([p[k] for p in per])
    lengths = np.sum([p["length_counts"] for p in per], axis=0)
    intervals = np.sum([p["interval_counts"] for p in per], axis=0)
    out["length_hist"] = (lengths / lengths.sum()).tolist() if lengths.sum() else [math.nan] * len(lengths)
    out["interval_hist"] = (intervals / intervals.sum()).tolist() if intervals.sum() else [math.nan] * len(intervals)
    if nll_fn is not None:
        out["nll"] = float(np.mean([nll_fn(np.asarray(c.tokens)) for c in comps]))
    return out


def _tv(p: Sequence[float], q: Sequence[float]) -> float:
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if np.isnan(p).any() or np.isnan(q).any():
        return 1.0  # a set without notes/intervals is as far as it gets
    return float(0.5 * np.abs(p - q).sum())


def _rel(a: float, b: float) -> float:
    """|a - b| relative to the larger, in [0, 1] (1 if one is NaN)."""
    if math.isnan(a) or math.isnan(b):
        return 1.0
    m = max(abs(a), abs(b))
    return 0.0 if m == 0 else min(1.0, abs(a - b) / m)


def _abs(a: float, b: float) -> float:
    return 1.0 if math.isnan(a) or math.isnan(b) else min(1.0, abs(a - b))


#: Parts of :func:`style_distance`: (name, how it is measured).
DISTANCE_PARTS: tuple[tuple[str, str], ...] = (
    ("note_lengths", "total-variation distance of the pooled note-length histograms"),
    ("intervals", "total-variation distance of the pooled interval histograms"),
    ("notes_per_bar", "|a - b| / max(a, b) of the mean notes per bar"),
    ("leap_share", "|a - b| of the leap shares"),
    ("repeated_share", "|a - b| of the repeated-note shares"),
    ("final_long", "|a - b| of the shares of pieces ending on a note >= a quarter"),
    ("final_tonic", "|a - b| of the shares of pieces ending on the tonic"),
    ("range", "|a - b| / max(a, b) of the mean ranges"),
)


def style_distance(compositions: Iterable[Any] | Mapping[str, Any], reference: Iterable[Any] | Mapping[str, Any],
                   *, nll_fn: Callable[[np.ndarray], float] | None = None) -> dict[str, float]:
    """Distance between the style of a set and a reference set, in [0, 1].

    Either argument may be a set of compositions or a :func:`style_profile` already
    computed. Returns ``{"distance": mean of the parts, <part>: value}`` with the parts of
    :data:`DISTANCE_PARTS`, each in [0, 1] (0 = same); with ``nll`` in both profiles
    (give ``nll_fn``, or profiles that hold it) also the part ``nll``: |a - b| / max(a, b)
    of the mean NLL. Real melodies of one collection against another score about
    0.1-0.2; a stream of random 16ths about 0.6.
    """
    a = compositions if isinstance(compositions, Mapping) else style_profile(compositions, nll_fn=nll_fn)
    b = reference if isinstance(reference, Mapping) else style_profile(reference, nll_fn=nll_fn)
    parts = {
        "note_lengths": _tv(a["length_hist"], b["length_hist"]),
        "intervals": _tv(a["interval_hist"], b["interval_hist"]),
        "notes_per_bar": _rel(a["notes_per_bar"], b["notes_per_bar"]),
        "leap_share": _abs(a["leap_share"], b["leap_share"]),
        "repeated_share": _abs(a["repeated_share"], b["repeated_share"]),
        "final_long": _abs(a["final_long"], b["final_long"]),
        "final_tonic": _abs(a["final_tonic"], b["final_tonic"]),
        "range": _rel(a["range"], b["range"]),
    }
    if "nll" in a and "nll" in b:
        parts["nll"] = _rel(a["nll"], b["nll"])
    return {"distance": float(np.mean(list(parts.values()))), **parts}


# ------------------------------------------------------------------------------ two-sample test
def piece_features(c: Composition, nll: float | None = None) -> np.ndarray:
    """The classifier's feature vector of one piece: notes per bar, the 8 note-length
    shares, the 10 interval shares, final note length (quarters, capped at 4), final on
    the tonic, range, share of notes in key, and the NLL if given. Undefined shares are 0."""
    s = piece_style(c)
    n = max(s["notes"], 1)
    ni = max(s["interval_counts"].sum(), 1)
    fq = s["final_quarters"]
    vec = [s["notes_per_bar"], *(s["length_counts"] / n), *(s["interval_counts"] / ni),
           0.0 if math.isnan(fq) else min(fq, 4.0), np.nan_to_num(s["final_tonic"]),
           np.nan_to_num(s["range"]), np.nan_to_num(s["in_key_share"])]
    if nll is not None:
        vec.append(nll)
    return np.asarray(vec, dtype=np.float64)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method; returns weights (bias last)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg * w
        h = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def classifier_two_sample_test(compositions: Iterable[Any], reference: Iterable[Any], *, folds: int = 5,
                               l2: float = 1.0, seed: int = 0,
                               nll_fn: Callable[[np.ndarray], float] | None = None) -> dict[str, float]:
    """Classifier two-sample test: can a fresh classifier tell the set from the reference?

    Each piece becomes :func:`piece_features` (with its NLL under ``nll_fn`` if given);
    the larger set is subsampled (seeded) to the size of the smaller, the features are
    standardised on each training fold, and an L2-regularised logistic regression
    (``l2``, Newton's method, numpy) is trained on ``folds - 1`` folds and tested on the
    held-out one (stratified folds). Returns ``accuracy`` (mean held-out accuracy: 0.5 =
    indistinguishable, 1.0 = fully separable), ``accuracy_std`` over folds and ``n`` (pieces
    per side). Needs at least ``folds`` pieces on each side.
    (Lopez-Paz & Oquab 2017, "Revisiting classifier two-sample tests".)
    """
    a = _as_compositions(compositions, "compared")
    b = _as_compositions(reference, "reference")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise StyleError(f"folds must be an integer >= 2, got {folds!r}")
    n = min(len(a), len(b))
    if n < folds:
        raise StyleError(f"the two-sample test needs at least folds={folds} pieces per side, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    a = [a[i] for i in sorted(rng.choice(len(a), n, replace=False))]
    b = [b[i] for i in sorted(rng.choice(len(b), n, replace=False))]
    feats = [piece_features(c, None if nll_fn is None else nll_fn(np.asarray(c.tokens))) for c in a + b]
    x = np.stack(feats)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    fold_of = np.concatenate([rng.permutation(n) % folds, rng.permutation(n) % folds])
    accs = []
    for f in range(folds):
        tr, te = fold_of != f, fold_of == f
        mu, sd = x[tr].mean(0), x[tr].std(0)
        sd[sd == 0] = 1.0
        w = _fit_logistic((x[tr] - mu) / sd, y[tr], l2)
        z = np.hstack([(x[te] - mu) / sd, np.ones((te.sum(), 1))]) @ w
        accs.append(float(np.mean((z > 0) == (y[te] == 1))))
    return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "n": float(n)}


# ------------------------------------------------------------------------------ the reference
#: The shipped reference set: the last :data:`SHIPPED_BARS` bars of the first
#: :data:`REFERENCE_LIMIT` melodies of each of :data:`REFERENCE_COLLECTIONS`, written by
#: :func:`write_reference_set` (parsing Essen and O'Neill's takes minutes; reading this
#: file takes milliseconds).
SHIPPED_REFERENCE = Path(__file__).with_name("data") / "reference_melodies.npz"
SHIPPED_BARS = 8


def _windows_from_corpus(collections: Sequence[str], limit: int | None, n_bars: int, progress: bool
                         ) -> list[tuple[str, Composition]]:
    from musicenv import corpus

    out = []
    for name in collections:
        try:
            melodies = corpus.load(name, limit=limit, progress=progress)
        except corpus.CorpusError as e:
            raise StyleError(f"cannot load the reference collection {name!r}: {e}") from e
        for m in melodies:
            c = m.to_composition()
            length = n_bars * c.steps_per_bar
            if c.n_steps - m.pickup_steps < length or not any(t >= 2 for t in c.tokens[-length:]):
                continue
            out.append((name, Composition(np.array(c.tokens[-length:]), c.key, c.meter, np.array(c.chords[-length:]),
                                          c.grid, title=f"{m.id} (last {n_bars} bars)")))
    return out


def write_reference_set(path: str | os.PathLike = SHIPPED_REFERENCE, collections: Sequence[str] = REFERENCE_COLLECTIONS,
                        limit: int | None = REFERENCE_LIMIT, n_bars: int = SHIPPED_BARS) -> Path:
    """Parse the collections and write their last ``n_bars`` bars to ``path`` (npz of
    plain arrays, read with ``allow_pickle=False``)."""
    windows = _windows_from_corpus(collections, limit, n_bars, progress=True)
    width = max(c.n_steps for _, c in windows)
    tokens = np.full((len(windows), width), -1, dtype=np.int16)
    chords = np.full((len(windows), width), -1, dtype=np.int16)
    for i, (_, c) in enumerate(windows):
        tokens[i, : c.n_steps] = c.tokens
        chords[i, : c.n_steps] = c.chords
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, tokens=tokens, chords=chords,
                        key=np.array([c.key.index for _, c in windows], dtype=np.int16),
                        meter=np.array([str(c.meter) for _, c in windows]),
                        collection=np.array([n for n, _ in windows]),
                        title=np.array([c.title for _, c in windows]),
                        n_bars=np.array(n_bars), limit=np.array(-1 if limit is None else limit))
    return path


def _shipped_windows(collections: Sequence[str], n_bars: int, meter: str) -> list[Composition] | None:
    if n_bars > SHIPPED_BARS or not SHIPPED_REFERENCE.is_file():
        return None
    from musicenv.theory import Key

    with np.load(SHIPPED_REFERENCE, allow_pickle=False) as data:
        if int(data["n_bars"]) != SHIPPED_BARS or not set(collections) <= set(data["collection"].tolist()):
            return None
        out = []
        for i in range(len(data["key"])):
            if str(data["collection"][i]) not in collections or str(data["meter"][i]) != meter:
                continue
            valid = data["tokens"][i] >= 0
            c = Composition(data["tokens"][i][valid].astype(np.int64), Key.from_index(int(data["key"][i])), meter,
                            data["chords"][i][valid].astype(np.int64), title=str(data["title"][i]))
            length = n_bars * c.steps_per_bar
            out.append(Composition(np.array(c.tokens[-length:]), c.key, c.meter, np.array(c.chords[-length:]),
                                   title=c.title.replace(f"last {SHIPPED_BARS} bars", f"last {n_bars} bars")))
        return out


def reference_melodies(n_bars: int = 4, meter: str = "4/4", collections: Sequence[str] = REFERENCE_COLLECTIONS, *,
                       limit: int | None = REFERENCE_LIMIT, progress: bool = False) -> list[Composition]:
    """Real melodies to compare with: the last ``n_bars`` bars of every melody in
    ``meter`` among the first ``limit`` melodies of each corpus collection, each in its
    own key and (for Bach) its own chords.

    The last bars are taken because they end as a piece ends (a generated piece is a
    whole piece). This is the one place that says what "real melodies" are; pass other
    collections (any name :func:`musicenv.corpus.load` accepts) to steer the yardstick
    to a style. With the default ``limit`` and up to 8 bars, the shipped
    :data:`SHIPPED_REFERENCE` is read instead of parsing the corpora.
    """
    if isinstance(collections, str):
        collections = (collections,)
    if isinstance(n_bars, bool) or not isinstance(n_bars, int) or n_bars < 1:
        raise StyleError(f"n_bars must be an integer >= 1, got {n_bars!r}")
    out = _shipped_windows(collections, n_bars, meter) if limit == REFERENCE_LIMIT else None
    if out is None:
        out = [c for _, c in _windows_from_corpus(collections, limit, n_bars, progress) if str(c.meter) == meter]
    if not out:
        raise StyleError(f"no melody of at least {n_bars} bars in {meter} in {list(collections)}")
    return out


@functools.lru_cache(maxsize=8)
def _cached_reference(n_bars: int, meter: str) -> tuple[Composition, ...]:
    try:
        return tuple(_shipped_windows(REFERENCE_COLLECTIONS, n_bars, meter) or ())
    except (OSError, ValueError):
        return ()


def default_reference(compositions: Sequence[Composition]) -> list[Composition] | None:
    """The shipped real melodies matching a set's length and meter (all pieces whole
    bars of one meter, 1-8 bars, one grid), or None when there are none or the set is
    mixed. Cached per (bars, meter)."""
    meters = {str(c.meter) for c in compositions}
    lengths = {c.n_steps for c in compositions}
    if len(meters) != 1 or len(lengths) != 1 or any(c.grid != compositions[0].grid for c in compositions):
        return None
    c = compositions[0]
    if c.n_steps % c.steps_per_bar or not 1 <= c.n_steps // c.steps_per_bar <= SHIPPED_BARS:
        return None
    from musicenv.encoding import DEFAULT_GRID

    if c.grid != DEFAULT_GRID:
        return None
    ref = _cached_reference(c.n_steps // c.steps_per_bar, str(c.meter))
    return list(ref) if len(ref) >= 5 else None


def style_block(compositions: Iterable[Any], reference: Iterable[Any], *,
                nll_fn: Callable[[np.ndarray], float] | None = None, seed: int = 0) -> dict[str, float]:
    """The flat ``style/...`` statistics that tables and ``final_metrics.json`` report:
    the set's profile scalars, ``style/distance`` (and its parts) to the reference, and
    ``style/c2st_accuracy`` (:func:`classifier_two_sample_test`, when both sets have at
    least 5 pieces)."""
    comps = _as_compositions(compositions, "compared")
    ref = _as_compositions(reference, "reference")
    prof = style_profile(comps, nll_fn=nll_fn)
    out = {f"style/{k}": float(prof[k]) for k in SCALARS}
    if "nll" in prof:
        out["style/nll"] = prof["nll"]
    dist = style_distance(prof, style_profile(ref, nll_fn=nll_fn))
    out.update({f"style/distance/{k}" if k != "distance" else "style/distance": v for k, v in dist.items()})
    if min(len(comps), len(ref)) >= 5:
        out["style/c2st_accuracy"] = classifier_two_sample_test(comps, ref, seed=seed, nll_fn=nll_fn)["accuracy"]
    return out
