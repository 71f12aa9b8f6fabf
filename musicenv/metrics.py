"""Evaluation statistics of generated melodies (numpy only; no torch).

Five families, each function's docstring states its definition and units:

* **RL Tuner statistics** (Jaques et al. 2017, Table 1) over a set of compositions:
  :func:`rl_tuner_statistics`, and :func:`rl_tuner_table` to print them beside the
  paper's numbers. Every statistic that counts where a musical rule fires is computed
  by running our own reward terms (:mod:`rewards.rl_tuner`) over the compositions, so
  a statistic and the reward it reports on can never disagree.
* **MusPy-style statistics** of one piece (Dong et al. 2020, ``muspy.metrics``) on a
  generic note list ``(pitch, onset tick, duration ticks)`` plus a resolution:
  :func:`pitch_range`, :func:`n_pitches_used`, :func:`n_pitch_classes_used`,
  :func:`pitch_entropy`, :func:`pitch_class_entropy`, :func:`pitch_in_scale_rate`,
  :func:`scale_consistency`, :func:`empty_beat_rate`, :func:`groove_consistency`;
  :func:`muspy_statistics` applies them to a :class:`~musicenv.composition.Composition`.
* **Harmony statistics** of a melody against its chord track and key:
  :func:`harmony_statistics`.
* **Distances to a reference set** per feature histogram (pitch class, interval, note
  length, pitch): :func:`feature_histogram`, :func:`overlap_area`,
  :func:`kl_divergence`, :func:`intra_set_distances`, :func:`inter_set_distances`,
  :func:`compare_sets`; likelihood under a prior model: :func:`mean_nll`.
* **Diversity** of a sample set: :func:`distinct_n`, :func:`edit_distance`,
  :func:`mean_pairwise_edit_distance`.

:func:`evaluate_set` gathers everything for a sample set into one flat dict.

Wherever a *set of compositions* is expected, each item may be a
:class:`~musicenv.composition.Composition` or a bare 1-D token sequence; bare tokens
are read on the default grid (MIDI 48..83, 16th notes) in C major, 4/4, without
chords: the RL Tuner's setting. Importing this module is cheap; the functions that
run reward terms import :mod:`rewards` (and so numba) when first called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from musicenv.composition import Composition, as_composition
from musicenv.encoding import REST, Note
from musicenv.theory import CHORD_PC_MASK, CHORD_ROOT, KEY_SCALE_MASK, KEY_TONIC, NO_CHORD

__all__ = [
    "MetricsError",
    "CompositionLike",
    "as_composition",
    # RL Tuner
    "RL_TUNER_STATISTICS",
    "PAPER_MODELS",
    "PAPER_TABLE1",
    "rl_tuner_statistics",
    "token_autocorrelation",
    "rl_tuner_table",
    "format_table",
    # MusPy
    "MUSPY_MODES",
    "n_pitches_used",
    "n_pitch_classes_used",
    "pitch_range",
    "pitch_entropy",
    "pitch_class_entropy",
    "pitch_in_scale_rate",
    "scale_consistency",
    "empty_beat_rate",
    "groove_consistency",
    "muspy_statistics",
    # harmony
    "harmony_statistics",
    # distances
    "FEATURES",
    "feature_bins",
    "feature_histogram",
    "set_histogram",
    "overlap_area",
    "kl_divergence",
    "intra_set_distances",
    "inter_set_distances",
    "compare_sets",
    "mean_nll",
    # diversity
    "distinct_n",
    "distinct_ngrams",
    "note_sequence",
    "edit_distance",
    "mean_pairwise_edit_distance",
    # style yardstick (musicenv.style)
    "style_profile",
    "style_distance",
    "classifier_two_sample_test",
    # all together
    "mean_statistics",
    "evaluate_set",
]


class MetricsError(ValueError):
    """Input a metric cannot be computed on: an empty set, mismatched grids or
    histograms, a malformed note list or an unknown feature name."""


#: A composition, or a bare 1-D token sequence (read as C major, 4/4, default grid).
CompositionLike = Composition | Sequence[int] | np.ndarray


def _as_set(items: Iterable[CompositionLike], what: str = "compositions") -> list[Composition]:
    if isinstance(items, Composition) or (isinstance(items, np.ndarray) and items.ndim != 2):
        raise MetricsError(
            f"expected a set (sequence) of {what}, got a single {type(items).__name__}; wrap it in a list"
        )
    items = list(items)
    if items and isinstance(items[0], (int, np.integer)):
        raise MetricsError(f"expected a set of {what}, got one token sequence; wrap it in a list")
    if not items:
        raise MetricsError(f"empty set of {what}; give at least one")
    return [as_composition(c) for c in items]


def _nan_if_zero(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


# =========================================================================== reward replay
def _iter_scored(spec: Mapping[str, Any], comps: Sequence[Composition],
                 chunk: int = 4096) -> Iterator[tuple[list[int], tuple[str, ...], np.ndarray]]:
    """Replay ``comps`` through the reward ``spec`` in batches (see
    :func:`rewards.scoring.score_steps_batch`, the one implementation)."""
    from rewards.scoring import score_steps_batch

    return score_steps_batch(dict(spec), comps, chunk)


# =========================================================================== RL Tuner
#: Reward terms whose firing the RL Tuner statistics count (run at weight 1).
_RL_TUNER_TERMS = ("in_key", "tonic", "no_repetition", "motif", "repeated_motif", "resolve_leaps")

#: Keys of :func:`rl_tuner_statistics` that the paper's Table 1 reports, in its order,
#: with a label and the unit the table prints them in ("%" = fraction x 100).
RL_TUNER_STATISTICS: dict[str, tuple[str, str]] = {
    "excessively_repeated": ("Notes excessively repeated", "%"),
    "autocorrelation_lag1": ("Mean autocorrelation, lag 1", ""),
    "autocorrelation_lag2": ("Mean autocorrelation, lag 2", ""),
    "autocorrelation_lag3": ("Mean autocorrelation, lag 3", ""),
    "notes_not_in_key": ("Notes not in key", "%"),
    "starts_with_tonic": ("Melodies starting with tonic", "%"),
    "leaps_resolved": ("Leaps resolved", "%"),
    "unique_max": ("Melodies with unique max note", "%"),
    "unique_min": ("Melodies with unique min note", "%"),
    "notes_in_motif": ("Notes in motif", "%"),
    "notes_in_repeated_motif": ("Notes in repeated motif", "%"),
}

#: The models of the paper's Table 1, in its column order.
PAPER_MODELS: tuple[str, ...] = ("Note RNN", "Q", "Psi", "G")

#: Jaques et al. 2017 (arXiv:1611.02796, ICLR-2017 text), Table 1, as printed: percent
#: for "%" rows, coefficients for the autocorrelation rows (lag 3 of G is printed "17"
#: in the text we read; .17 is meant). 100,000 sampled compositions per model.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "excessively_repeated": {"Note RNN": 63.3, "Q": 0.0, "Psi": 0.02, "G": 0.03},
    "autocorrelation_lag1": {"Note RNN": -0.16, "Q": -0.11, "Psi": -0.10, "G": 0.55},
    "autocorrelation_lag2": {"Note RNN": 0.14, "Q": 0.03, "Psi": -0.01, "G": 0.31},
    "autocorrelation_lag3": {"Note RNN": -0.13, "Q": 0.03, "Psi": 0.01, "G": 0.17},
    "notes_not_in_key": {"Note RNN": 0.1, "Q": 1.00, "Psi": 0.60, "G": 28.7},
    "starts_with_tonic": {"Note RNN": 0.9, "Q": 28.8, "Psi": 28.7, "G": 0.0},
    "leaps_resolved": {"Note RNN": 77.2, "Q": 91.1, "Psi": 90.0, "G": 52.2},
    "unique_max": {"Note RNN": 64.7, "Q": 56.4, "Psi": 59.4, "G": 37.1},
    "unique_min": {"Note RNN": 49.4, "Q": 51.9, "Psi": 58.3, "G": 56.5},
    "notes_in_motif": {"Note RNN": 5.9, "Q": 75.7, "Psi": 73.8, "G": 69.3},
    "notes_in_repeated_motif": {"Note RNN": 0.007, "Q": 0.11, "Psi": 0.09, "G": 0.01},
}


def token_autocorrelation(tokens: Sequence[int] | np.ndarray, lag: int) -> float:
    """Autocorrelation coefficient of a token sequence at ``lag``, as the RL Tuner's
    statistic computes it.

    Over the raw token values v_0..v_{n-1} (REST = 0 and HOLD = 1 included, NOTE_ON
    tokens by value), with x_i = v_i - mean(v):
    ``rho_k = sum_{i < n-k} x_i x_{i+k} / sum_i x_i^2`` (the paper's
    ``sum x_i x_{i+k} / n / var`` with the population variance), in [-1, 1]. Computed in
    exact integers (``y_i = n v_i - sum v``) with one final division. NaN when it is
    undefined: a constant sequence (variance 0, the paper's 0/0) or ``lag >= n``.
    """
    if lag < 1:
        raise MetricsError(f"lag must be >= 1, got {lag}")
    v = np.asarray(tokens, dtype=np.int64)
    n = v.size
    if n <= lag:
        return math.nan
    y = n * v - int(v.sum())
    den = int(y @ y)
    if den == 0:
        return math.nan
    return int(y[:-lag] @ y[lag:]) / den


def _onset_pitch_autocorrelation(c: Composition, lag: int) -> float:
    pitches = c.grid.pitch_table()[c.tokens]
    return token_autocorrelation(pitches[pitches >= 0], lag)


def _unique_extrema(c: Composition) -> tuple[bool, bool]:
    pitches = c.grid.pitch_table()[c.tokens]
    pitches = pitches[pitches >= 0]
    if not pitches.size:
        return False, False
    return (int((pitches == pitches.max()).sum()) == 1, int((pitches == pitches.min()).sum()) == 1)


def _rl_spec(term_kwargs: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    term_kwargs = dict(term_kwargs or {})
    unknown = sorted(set(term_kwargs) - set(_RL_TUNER_TERMS))
    if unknown:
        raise MetricsError(f"term_kwargs names unknown term(s) {unknown}; accepted: {list(_RL_TUNER_TERMS)}")
    for name, kw in term_kwargs.items():
        if "weight" in kw:
            raise MetricsError(
                f"term_kwargs[{name!r}] must not set a weight: statistics count where a term fires"
            )
    return {name: {"weight": 1.0, **term_kwargs.get(name, {})} for name in _RL_TUNER_TERMS}


def rl_tuner_statistics(compositions: Iterable[CompositionLike], *,
                        term_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                        autocorrelation_signal: str = "tokens") -> dict[str, float]:
    """The RL Tuner's evaluation statistics (Jaques et al. 2017, Table 1) over a set.

    Returns fractions in [0, 1] (the paper prints percent; see :func:`rl_tuner_table`)
    and coefficients in [-1, 1]; NaN where a denominator is 0. "Steps" are grid steps;
    the step-count statistics divide by the total number of steps of all compositions,
    REST and HOLD steps included (the paper's compositions x 32).

    Statistics that count where a rule fires replay the compositions through our reward
    terms at weight 1 (``term_kwargs`` passes parameters to them, e.g.
    ``{"resolve_leaps": {"leap": 5}}`` to match an environment's reward), so each equals
    what the reward reported, step for step. Our terms fix defects of the paper's code
    (RL_TUNER.md §6; each term's docstring says how), so on the same melodies they can
    differ from the paper's counts where noted:

    - ``notes_not_in_key``: steps where ``in_key`` is negative (a NOTE_ON outside the
      key) / steps. Any of the 24 keys; minor keys accept the raised 6th and 7th.
    - ``excessively_repeated``: steps where ``no_repetition`` is negative / steps. Only
      the steps that trigger the penalty count (as in the paper's code, not the paper's
      prose "notes belonging to" a repeated run). Differs from the code: a HOLD is never
      counted (the code counted the 6th HOLD of a long note and every one after, D7),
      and rests before a run do not separate its repeats. With the code's REST/HOLD
      labels swapped against its training data (D5), the paper's 63.3 % for the Note RNN
      mostly counts long notes; ours does not.
    - ``autocorrelation_lag1..3``: mean over compositions of the signed coefficient
      (:func:`token_autocorrelation`) of each whole composition, computed as the paper
      does on raw token values (REST = 0, HOLD = 1 included); compositions where it is
      undefined (constant, or too short) are skipped as numpy's ``nanmean`` does; NaN if
      all are. Not a rule count: the ``low_autocorrelation`` reward term now correlates
      the pitches of onsets instead (D9); ``autocorrelation_signal="pitches"`` computes
      the statistic on that signal (onset pitches only) for comparison.
    - ``starts_with_tonic``: compositions whose first step is a NOTE_ON of the key's
      tonic in any octave (where ``tonic`` pays its start bonus) / compositions. The
      paper's code counted only middle C (token 14).
    - ``leaps_resolved``: resolved / (resolved + doubled) over all compositions, where
      ``resolve_leaps`` pays +bonus (resolved: a motion back by less than a leap after
      a leap of >= 7 semitones) or -bonus (doubled: a further leap onward in the same
      direction). Leaps never closed, or closed by leaping straight back, are in neither
      count (as in the paper). Differs from the code: any step back resolves (the code
      required a return to or past the note the leap left from, and paid a leap back
      only after 7 steps). ``n_leaps_resolved`` and ``n_leaps_doubled`` give the counts.
    - ``unique_max`` / ``unique_min``: compositions whose highest / lowest pitch is
      played (as an onset) exactly once / compositions; over pitches only (the code's
      maximum included REST/HOLD tokens, D4). A composition without a pitch has neither.
      (``unique_extrema`` pays its bonus for exactly these.)
    - ``notes_in_motif``: steps where ``motif`` pays (the last 8 tokens hold >= 3
      distinct pitches) / steps.
    - ``notes_in_repeated_motif``: steps where ``repeated_motif`` pays (that motif's 8
      tokens also occur wholly earlier) / steps.

    Also returned: ``n_compositions``, ``n_steps`` (total), ``n_leaps_resolved``,
    ``n_leaps_doubled``. Raises :class:`MetricsError` for an empty set.
    """
    if autocorrelation_signal not in ("tokens", "pitches"):
        raise MetricsError(
            f"autocorrelation_signal must be 'tokens' or 'pitches', got {autocorrelation_signal!r}"
        )
    comps = _as_set(compositions)
    spec = _rl_spec(term_kwargs)
    fired = {"not_in_key": 0, "repeated": 0, "motif": 0, "repeated_motif": 0, "resolved": 0, "doubled": 0}
    tonic_start = 0
    for _, names, values in _iter_scored(spec, comps):
        col = {name: values[:, :, j] for j, name in enumerate(names)}
        fired["not_in_key"] += int((col["in_key"] < 0).sum())
        fired["repeated"] += int((col["no_repetition"] < 0).sum())
        fired["motif"] += int((col["motif"] > 0).sum())
        fired["repeated_motif"] += int((col["repeated_motif"] > 0).sum())
        fired["resolved"] += int((col["resolve_leaps"] > 0).sum())
        fired["doubled"] += int((col["resolve_leaps"] < 0).sum())
        tonic_start += int((col["tonic"][:, 0] > 0).sum())
    n_comps = len(comps)
    n_steps = sum(c.n_steps for c in comps)
    out: dict[str, float] = {
        "n_compositions": float(n_comps),
        "n_steps": float(n_steps),
        "notes_not_in_key": _nan_if_zero(fired["not_in_key"], n_steps),
        "excessively_repeated": _nan_if_zero(fired["repeated"], n_steps),
    }
    for lag in (1, 2, 3):
        if autocorrelation_signal == "tokens":
            rhos = [token_autocorrelation(c.tokens, lag) for c in comps]
        else:
            rhos = [_onset_pitch_autocorrelation(c, lag) for c in comps]
        defined = [r for r in rhos if not math.isnan(r)]
        out[f"autocorrelation_lag{lag}"] = float(np.mean(defined)) if defined else math.nan
    extrema = [_unique_extrema(c) for c in comps]
    out.update({
        "starts_with_tonic": tonic_start / n_comps,
        "leaps_resolved": _nan_if_zero(fired["resolved"], fired["resolved"] + fired["doubled"]),
        "n_leaps_resolved": float(fired["resolved"]),
        "n_leaps_doubled": float(fired["doubled"]),
        "unique_max": sum(m for m, _ in extrema) / n_comps,
        "unique_min": sum(m for _, m in extrema) / n_comps,
        "notes_in_motif": _nan_if_zero(fired["motif"], n_steps),
        "notes_in_repeated_motif": _nan_if_zero(fired["repeated_motif"], n_steps),
    })
    return out


def rl_tuner_table(measured: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """Rows of the RL Tuner's Table 1 with the paper's numbers beside ours.

    ``measured`` maps a model name to the dict :func:`rl_tuner_statistics` returned for
    its samples. One row per statistic of :data:`RL_TUNER_STATISTICS`, in the paper's
    order: ``{"statistic": label, "key": key, "unit": "%" or "", then for each model of
    PAPER_MODELS and then each other measured model: "<model> (paper)": value (paper
    models only), "<model>": our value (measured models only)}``. Percent rows hold
    fraction x 100; missing statistics are NaN. Feed the rows to :func:`format_table`.
    """
    models = list(PAPER_MODELS) + [m for m in measured if m not in PAPER_MODELS]
    rows = []
    for key, (label, unit) in RL_TUNER_STATISTICS.items():
        row: dict[str, Any] = {"statistic": label, "key": key, "unit": unit}
        scale = 100.0 if unit == "%" else 1.0
        for m in models:
            if m in PAPER_MODELS:
                row[f"{m} (paper)"] = PAPER_TABLE1[key][m]
            if m in measured:
                row[m] = float(measured[m].get(key, math.nan)) * scale
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], *, digits: int = 3,
                 skip: Sequence[str] = ("key",)) -> str:
    """A Markdown table of ``rows`` (dicts sharing their keys, e.g. from
    :func:`rl_tuner_table`): one column per key except ``skip``; floats printed with
    ``digits`` significant digits, NaN as an em dash."""
    if not rows:
        raise MetricsError("no rows to format")
    cols = [k for k in rows[0] if k not in skip]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "—" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r.get(k, math.nan)) for k in cols) + " |" for r in rows]
    return "\n".join(lines)


# =========================================================================== MusPy
#: Scales of :func:`pitch_in_scale_rate`, as in MusPy: semitones above the root.
MUSPY_MODES: dict[str, tuple[int, ...]] = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}

NoteLike = Note | tuple[int, int, int]


def _check_notes(notes: Iterable[NoteLike] | np.ndarray) -> np.ndarray:
    """``(n, 3)`` int64 array of (pitch, onset, duration); rests (pitch None) dropped."""
    if (isinstance(notes, np.ndarray) and notes.ndim == 2 and notes.shape[1] == 3
            and np.issubdtype(notes.dtype, np.integer)):
        arr = notes.astype(np.int64)
    else:
        rows = []
        for note in notes:
            try:
                pitch, onset, duration = note
            except (TypeError, ValueError):
                raise MetricsError(f"a note must be (pitch, onset, duration), got {note!r}") from None
            if pitch is not None:
                rows.append((int(pitch), int(onset), int(duration)))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    bad = np.flatnonzero((arr[:, 0] < 0) | (arr[:, 0] > 127) | (arr[:, 1] < 0) | (arr[:, 2] < 1))
    if bad.size:
        raise MetricsError(
            f"note {tuple(arr[bad[0]].tolist())} is invalid; need MIDI pitch 0..127, onset >= 0 and "
            "duration >= 1 tick"
        )
    return arr


def n_pitches_used(notes: Iterable[NoteLike]) -> int:
    """Number of distinct MIDI pitches among ``notes`` (MusPy's ``n_pitches_used``);
    0 without notes. Notes are ``(pitch, onset, duration)``; rests (pitch None) ignored."""
    return int(np.unique(_check_notes(notes)[:, 0]).size)


def n_pitch_classes_used(notes: Iterable[NoteLike]) -> int:
    """Number of distinct pitch classes (pitch mod 12) among ``notes``, 0..12
    (MusPy's ``n_pitch_classes_used``); 0 without notes."""
    return int(np.unique(_check_notes(notes)[:, 0] % 12).size)


def pitch_range(notes: Iterable[NoteLike]) -> int:
    """Highest minus lowest pitch of ``notes``, in semitones (MusPy's ``pitch_range``);
    0 without notes, as in MusPy."""
    p = _check_notes(notes)[:, 0]
    return int(p.max() - p.min()) if p.size else 0


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total < 1:
        return math.nan
    prob = counts[counts > 0] / total
    return float(-(prob * np.log2(prob)).sum())


def pitch_entropy(notes: Iterable[NoteLike]) -> float:
    """Shannon entropy in bits of the histogram of note pitches (one count per note, 128
    bins): ``-sum_i P(pitch=i) log2 P(pitch=i)`` (MusPy's ``pitch_entropy``); NaN
    without notes."""
    return _entropy_bits(np.bincount(_check_notes(notes)[:, 0], minlength=128))


def pitch_class_entropy(notes: Iterable[NoteLike]) -> float:
    """Shannon entropy in bits of the histogram of note pitch classes (12 bins), in
    [0, log2 12] (MusPy's ``pitch_class_entropy``); NaN without notes."""
    return _entropy_bits(np.bincount(_check_notes(notes)[:, 0] % 12, minlength=12))


def pitch_in_scale_rate(notes: Iterable[NoteLike], root: int, mode: str) -> float:
    """Share of notes whose pitch class is in the ``mode`` scale on ``root`` (pitch class
    0..11), in [0, 1] (MusPy's ``pitch_in_scale_rate``). ``mode`` is ``"major"`` or
    ``"minor"`` (the natural minor scale, as in MusPy; note that our ``in_key`` rule and
    ``key_consistency`` also accept the raised 6th and 7th in minor). NaN without notes."""
    if mode not in MUSPY_MODES:
        raise MetricsError(f"mode must be one of {list(MUSPY_MODES)}, got {mode!r}")
    if not 0 <= int(root) < 12:
        raise MetricsError(f"root must be a pitch class 0..11, got {root}")
    pcs = _check_notes(notes)[:, 0] % 12
    if not pcs.size:
        return math.nan
    scale = np.zeros(12, dtype=bool)
    scale[[(int(root) + s) % 12 for s in MUSPY_MODES[mode]]] = True
    return float(scale[pcs].mean())


def scale_consistency(notes: Iterable[NoteLike]) -> float:
    """Largest :func:`pitch_in_scale_rate` over the 24 major and natural-minor scales,
    in [0, 1] (MusPy's ``scale_consistency``); NaN without notes."""
    arr = _check_notes(notes)
    if not arr.size:
        return math.nan
    return max(pitch_in_scale_rate(arr, root, mode) for mode in MUSPY_MODES for root in range(12))


def _length(arr: np.ndarray, length: int | None) -> int:
    end = int((arr[:, 1] + arr[:, 2]).max()) if arr.size else 0
    if length is None:
        return end
    if length < end:
        raise MetricsError(f"length {length} ticks is shorter than the notes, which end at tick {end}")
    return int(length)


def empty_beat_rate(notes: Iterable[NoteLike], resolution: int, *, length: int | None = None,
                    muspy_compat: bool = False) -> float:
    """Share of beats in which no note sounds, in [0, 1] (MusPy's ``empty_beat_rate``).

    A beat is ``resolution`` ticks (MusPy: ticks per quarter note). The piece spans
    ``length`` ticks (default: the end of its last note, as in MusPy; give the full
    length to count trailing silence) and ``ceil(length / resolution)`` beats; beat b is
    empty if no note sounds during any tick of ``[b*resolution, (b+1)*resolution)``.
    NaN when ``length`` is 0.

    ``muspy_compat=True`` reproduces MusPy 0.5's counting exactly: ``length //
    resolution + 1`` beats, and a note marks every beat from ``onset // resolution`` to
    ``end // resolution`` inclusive, so a note ending on a beat boundary fills the next
    beat too (a quarter note, a quarter rest and a quarter note score 0, not 1/3).
    """
    if resolution < 1:
        raise MetricsError(f"resolution must be >= 1 tick per beat, got {resolution}")
    arr = _check_notes(notes)
    total = _length(arr, length)
    if total < 1:
        return math.nan
    if muspy_compat:
        n_beats = total // resolution + 1
        filled = np.zeros(n_beats, dtype=bool)
        for _, onset, dur in arr.tolist():
            filled[onset // resolution:(onset + dur) // resolution + 1] = True
    else:
        n_beats = -(-total // resolution)
        filled = np.zeros(n_beats, dtype=bool)
        for _, onset, dur in arr.tolist():
            filled[onset // resolution:(onset + dur - 1) // resolution + 1] = True
    return float(1.0 - filled.mean())


def groove_consistency(notes: Iterable[NoteLike], measure_resolution: int, *, length: int | None = None,
                       muspy_compat: bool = False) -> float:
    """One minus the mean Hamming distance between the onset patterns of neighbouring
    measures, per tick, in [0, 1] (MusPy's ``groove_consistency``, Wu & Yang 2020):
    ``1 - sum_{i=1}^{T-1} d(G_i, G_{i+1}) / (measure_resolution * (T - 1))`` where G_i is
    the binary vector (one entry per tick of the measure) of onset positions in measure
    i and T the number of measures. The piece spans ``length`` ticks (default: the end of
    its last note) and ``T = ceil(length / measure_resolution)`` measures. NaN if T < 2.
    Assumes a constant meter.

    ``muspy_compat=True`` counts ``T = length // measure_resolution + 1`` as MusPy 0.5
    does, which appends an empty measure to a piece that fills whole measures (two equal
    measures then score below 1; MusPy issue #73).
    """
    if measure_resolution < 1:
        raise MetricsError(f"measure_resolution must be >= 1 tick, got {measure_resolution}")
    arr = _check_notes(notes)
    total = _length(arr, length)
    n_measures = total // measure_resolution + 1 if muspy_compat else -(-total // measure_resolution)
    if n_measures < 2:
        return math.nan
    grooves = np.zeros((n_measures, measure_resolution), dtype=bool)
    measure, position = np.divmod(arr[:, 1], measure_resolution)
    grooves[measure, position] = True
    hamming = int(np.count_nonzero(grooves[:-1] != grooves[1:]))
    return 1.0 - hamming / (measure_resolution * (n_measures - 1))


def muspy_statistics(composition: CompositionLike) -> dict[str, float]:
    """The MusPy-style statistics of one composition's melody.

    Ticks are grid steps: ``resolution = grid.steps_per_quarter`` (a beat is a quarter
    note, as in MusPy, also in 6/8), a measure is ``composition.steps_per_bar`` steps and
    the piece spans all ``n_steps`` steps, trailing rests included (so an all-rest melody
    has ``empty_beat_rate`` 1). ``pitch_in_scale_rate`` uses the composition's key (root =
    tonic, MusPy's major or natural-minor scale). Keys: ``pitch_range``,
    ``n_pitches_used``, ``n_pitch_classes_used``, ``pitch_entropy``,
    ``pitch_class_entropy``, ``scale_consistency``, ``pitch_in_scale_rate``,
    ``empty_beat_rate``, ``groove_consistency`` (see each function).
    """
    c = as_composition(composition)
    notes = _check_notes(c.notes())
    return {
        "pitch_range": float(pitch_range(notes)),
        "n_pitches_used": float(n_pitches_used(notes)),
        "n_pitch_classes_used": float(n_pitch_classes_used(notes)),
        "pitch_entropy": pitch_entropy(notes),
        "pitch_class_entropy": pitch_class_entropy(notes),
        "scale_consistency": scale_consistency(notes),
        "pitch_in_scale_rate": pitch_in_scale_rate(notes, c.key.tonic, "minor" if c.key.minor else "major"),
        "empty_beat_rate": empty_beat_rate(notes, c.grid.steps_per_quarter, length=c.n_steps),
        "groove_consistency": groove_consistency(notes, c.steps_per_bar, length=c.n_steps),
    }


# =========================================================================== harmony
def _harmony_from_strong_beats(c: Composition, strong: np.ndarray) -> dict[str, float]:
    """Harmony statistics of ``c`` given the per-step values of
    ``chord_tone_on_strong_beat`` (weight 1)."""
    notes = c.notes()
    chords, tokens, n = c.chords, c.tokens, c.n_steps
    key = c.key.index
    tonic = int(KEY_TONIC[key])
    half_note = 2 * c.grid.steps_per_quarter

    def chord_tone(code: int, pitch: int) -> bool:
        return bool(CHORD_PC_MASK[code, pitch % 12])  # the N.C. row holds no tone

    over_chord = chord_tones = nct = nct_resolved = ends = cadential = 0
    for i, (pitch, onset, dur) in enumerate(notes):
        code = int(chords[onset])
        if code != NO_CHORD:
            over_chord += 1
            if chord_tone(code, pitch):
                chord_tones += 1
            else:
                nct += 1
                if i + 1 < len(notes):
                    nxt = notes[i + 1]
                    if 1 <= abs(nxt.pitch - pitch) <= 2 and chord_tone(int(chords[nxt.onset]), nxt.pitch):
                        nct_resolved += 1
        end = onset + dur
        is_end = i == len(notes) - 1 or dur >= half_note or (end < n and tokens[end] == REST)
        if is_end and code != NO_CHORD:
            ends += 1
            if int(CHORD_ROOT[code]) in (tonic, (tonic + 7) % 12) and chord_tone(code, pitch):
                cadential += 1
    in_key = sum(bool(KEY_SCALE_MASK[key, p % 12]) for p, _, _ in notes)
    return {
        "chord_tone_rate": _nan_if_zero(chord_tones, over_chord),
        "strong_beat_chord_tone_rate": _nan_if_zero(int((strong > 0).sum()), int((strong != 0).sum())),
        "nonchord_tone_resolution_rate": _nan_if_zero(nct_resolved, nct),
        "cadence_rate": _nan_if_zero(cadential, ends),
        "key_consistency": _nan_if_zero(in_key, len(notes)),
    }


_HARMONY_SPEC = {"chord_tone_on_strong_beat": {"weight": 1.0}}


def harmony_statistics(composition: CompositionLike) -> dict[str, float]:
    """Statistics of a melody against its chord track and key, each a rate in [0, 1],
    NaN when its denominator is 0. "Notes" are onsets (NOTE_ON tokens) with their
    durations; rests are skipped when looking for the next note.

    - ``chord_tone_rate``: notes whose pitch class belongs to the chord sounding at their
      onset / notes whose onset has a chord (notes over "N.C." are left out).
    - ``strong_beat_chord_tone_rate``: on strong beats (downbeats and beat 3 in 4/4:
      ``musicenv.core.beat_levels`` >= 2) with a chord, the share of steps whose sounding
      pitch (a new note or one held into the beat) is a chord tone; exactly the steps
      where the ``chord_tone_on_strong_beat`` reward term scores, positive / nonzero.
    - ``nonchord_tone_resolution_rate``: non-chord tones (notes over a chord, not in it)
      whose next note moves by step (1 or 2 semitones) to a chord tone of the chord at
      that next note's onset / non-chord tones. A non-chord tone without a next note, or
      whose next note falls on "N.C.", is unresolved.
    - ``cadence_rate``: phrase ends that are cadential / phrase ends over a chord.
      Phrase-end rule: a note ends a phrase if it is the last note of the composition, or
      a rest follows it directly, or it lasts at least a half note (2 quarters). It is
      cadential if the chord at its onset has the key's tonic or dominant (a fifth above)
      as its root (any quality: I, i, V, V7, v) and the note is one of its chord tones
      (an authentic or half close). Phrase ends over "N.C." are left out.
    - ``key_consistency``: notes whose pitch class is in the composition's key
      (``theory.KEY_SCALE_MASK``, as the ``in_key`` rule; minor keys include the raised
      6th and 7th) / notes.
    """
    c = as_composition(composition)
    strong = np.zeros(c.n_steps)
    for _, _, values in _iter_scored(_HARMONY_SPEC, [c]):
        strong = values[0, :, 0]
    return _harmony_from_strong_beats(c, strong)


# =========================================================================== distances
_MAX_INTERVAL = 13  # |interval| > 12 semitones shares the outer bins
_MAX_LENGTH = 16  # note lengths of 16 steps or more share the last bin

#: Feature histograms of :func:`feature_histogram`: name -> number of bins.
FEATURES: dict[str, int] = {
    "pitch_class": 12,
    "interval": 2 * _MAX_INTERVAL + 1,
    "note_length": _MAX_LENGTH,
    "pitch": 128,
}


def feature_bins(feature: str) -> np.ndarray:
    """Bin values of a feature's histogram: pitch classes 0..11; signed intervals
    -13..13 semitones (the outer bins hold every interval beyond an octave); note
    lengths 1..16 steps (16 = 16 or more); MIDI pitches 0..127."""
    if feature not in FEATURES:
        raise MetricsError(f"unknown feature {feature!r}; accepted: {list(FEATURES)}")
    return {
        "pitch_class": np.arange(12),
        "interval": np.arange(-_MAX_INTERVAL, _MAX_INTERVAL + 1),
        "note_length": np.arange(1, _MAX_LENGTH + 1),
        "pitch": np.arange(128),
    }[feature]


def feature_histogram(composition: CompositionLike, feature: str) -> np.ndarray:
    """Counts (float array, one entry per bin of :func:`feature_bins`) of one feature
    over a composition's notes: ``pitch_class`` and ``pitch`` one count per note;
    ``interval`` one per pair of consecutive notes (rests skipped), the signed interval
    in semitones clipped to -13..13; ``note_length`` one per note, its duration in grid
    steps clipped to 1..16."""
    if feature not in FEATURES:
        raise MetricsError(f"unknown feature {feature!r}; accepted: {list(FEATURES)}")
    c = as_composition(composition)
    notes = c.notes()
    pitches = np.array([n.pitch for n in notes], dtype=np.int64)
    if feature == "pitch_class":
        values = pitches % 12
    elif feature == "pitch":
        values = pitches
    elif feature == "interval":
        values = np.clip(np.diff(pitches), -_MAX_INTERVAL, _MAX_INTERVAL) + _MAX_INTERVAL
    else:
        values = np.clip(np.array([n.duration for n in notes], dtype=np.int64), 1, _MAX_LENGTH) - 1
    return np.bincount(values, minlength=FEATURES[feature]).astype(np.float64)


def _shared_resolution(*sets: Sequence[Composition]) -> None:
    res = {c.grid.steps_per_quarter for s in sets for c in s}
    if len(res) > 1:
        raise MetricsError(
            f"compositions on different grids ({sorted(res)} steps per quarter) cannot share a "
            "note-length histogram; re-encode them on one grid"
        )


def _normalised(h: np.ndarray, what: str) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 1 or (h < 0).any() or not np.isfinite(h).all():
        raise MetricsError(f"{what} must be a 1-D histogram of finite non-negative counts")
    total = h.sum()
    if total <= 0:
        raise MetricsError(f"{what} is empty (all bins 0); no distribution to compare")
    return h / total


def _pair(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise MetricsError(f"histograms on different grids: shapes {p.shape} and {q.shape}")
    return _normalised(p, "first histogram"), _normalised(q, "second histogram")


def set_histogram(compositions: Iterable[CompositionLike], feature: str) -> np.ndarray:
    """Pooled counts of ``feature`` over every composition of the set (the sum of
    :func:`feature_histogram`); normalise with ``h / h.sum()``."""
    comps = _as_set(compositions)
    if feature == "note_length":
        _shared_resolution(comps)
    return np.sum([feature_histogram(c, feature) for c in comps], axis=0)


def overlap_area(p: np.ndarray, q: np.ndarray) -> float:
    """Overlapped area of two histograms on the same bins: ``sum_i min(p_i, q_i)`` after
    normalising each to sum 1; 1 for equal distributions, 0 for disjoint supports.
    Raises :class:`MetricsError` for different shapes or an all-zero histogram."""
    p, q = _pair(p, q)
    return float(np.minimum(p, q).sum())


#: Default additive smoothing of :func:`kl_divergence` (probability added per bin).
KL_EPSILON = 1e-6


def kl_divergence(p: np.ndarray, q: np.ndarray, *, epsilon: float = KL_EPSILON) -> float:
    """Kullback-Leibler divergence KL(P || Q) in nats between two histograms on the same
    bins: ``sum_i p_i log(p_i / q_i)``. Each histogram is normalised to sum 1 and then
    smoothed, ``p_i <- (p_i + epsilon) / (1 + K epsilon)`` over its K bins, so a bin empty
    in Q costs a large but finite amount instead of infinity (``epsilon = 1e-6`` by
    default; 0 disables smoothing and may return inf). 0 for equal histograms."""
    if not epsilon >= 0:
        raise MetricsError(f"epsilon must be >= 0, got {epsilon}")
    p, q = _pair(p, q)
    k = p.size
    p = (p + epsilon) / (1 + k * epsilon)
    q = (q + epsilon) / (1 + k * epsilon)
    nz = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def _piece_counts(comps: Sequence[Composition], feature: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-piece histograms normalised to sum 1 (all zeros for a piece without any
    count), shape (n_pieces, n_bins), and the pooled counts of the set, shape (n_bins,)."""
    h = np.stack([feature_histogram(c, feature) for c in comps])
    totals = h.sum(axis=1, keepdims=True)
    return np.divide(h, totals, out=np.zeros_like(h), where=totals > 0), h.sum(axis=0)


def intra_set_distances(features: np.ndarray) -> np.ndarray:
    """Euclidean distances between every pair (i < j) of the rows of ``features``
    (n_pieces, n_dims), e.g. per-piece normalised histograms: Yang & Lerch's (2020)
    intra-set distances. Shape (n (n - 1) / 2,); empty for fewer than two pieces."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise MetricsError(f"features must be 2-D (pieces x dimensions), got shape {f.shape}")
    i, j = np.triu_indices(len(f), k=1)
    return np.linalg.norm(f[i] - f[j], axis=1)


def inter_set_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of ``a`` and every row of ``b`` (same
    number of columns): Yang & Lerch's (2020) inter-set distances. Shape
    (len(a) * len(b),)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise MetricsError(f"feature matrices on different grids: shapes {a.shape} and {b.shape}")
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2).ravel()


def compare_sets(generated: Iterable[CompositionLike], reference: Iterable[CompositionLike], *,
                 features: Sequence[str] = tuple(FEATURES),
                 epsilon: float = KL_EPSILON) -> dict[str, dict[str, float]]:
    """Distance of a generated set to a reference set, per feature histogram.

    For each feature of :data:`FEATURES`:

    - ``overlap``: :func:`overlap_area` of the pooled set histograms (1 = same
      distribution);
    - ``kl``: :func:`kl_divergence` KL(reference || generated) of the pooled histograms,
      in nats (large when the generated set misses what the reference does);
    - ``intra_generated``, ``intra_reference``: mean :func:`intra_set_distances` of the
      per-piece normalised histograms in each set (spread; NaN for a single piece);
    - ``inter``: mean :func:`inter_set_distances` between the two sets (Yang & Lerch
      2020 compare it with ``intra_reference``).

    A set whose pooled histogram is empty (e.g. no two consecutive notes for
    ``interval``) gets NaN for ``overlap`` and ``kl``. Raises :class:`MetricsError` for an
    empty set or compositions on grids of different resolution.
    """
    gen, ref = _as_set(generated, "generated compositions"), _as_set(reference, "reference compositions")
    _shared_resolution(gen, ref)
    out: dict[str, dict[str, float]] = {}
    for feature in features:
        if feature not in FEATURES:
            raise MetricsError(f"unknown feature {feature!r}; accepted: {list(FEATURES)}")
        fg, hg = _piece_counts(gen, feature)
        fr, hr = _piece_counts(ref, feature)
        both = hg.sum() > 0 and hr.sum() > 0
        intra_g, intra_r = intra_set_distances(fg), intra_set_distances(fr)
        out[feature] = {
            "overlap": overlap_area(hg, hr) if both else math.nan,
            "kl": kl_divergence(hr, hg, epsilon=epsilon) if both else math.nan,
            "intra_generated": float(intra_g.mean()) if intra_g.size else math.nan,
            "intra_reference": float(intra_r.mean()) if intra_r.size else math.nan,
            "inter": float(inter_set_distances(fg, fr).mean()),
        }
    return out


def mean_nll(compositions: Iterable[CompositionLike], nll_fn: Callable[[np.ndarray], float]) -> float:
    """Mean negative log-likelihood in nats per token of a set under a prior model.

    ``nll_fn(tokens)`` gets one composition's 1-D int64 token array and returns its mean
    NLL in nats per token (e.g. a note-RNN's; this module never imports torch). The set's
    value is token-weighted: ``sum_i nll_i n_i / sum_i n_i`` over compositions of n_i
    tokens (empty ones skipped), i.e. the NLL per token of all tokens together.
    Raises :class:`MetricsError` if ``nll_fn`` returns a non-number or NaN.
    """
    comps = _as_set(compositions)
    total = count = 0.0
    for c in comps:
        if not c.n_steps:
            continue
        value = nll_fn(c.tokens.copy())
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise MetricsError(f"nll_fn must return a number (nats per token), got {value!r}") from None
        if math.isnan(value):
            raise MetricsError("nll_fn returned NaN")
        total += value * c.n_steps
        count += c.n_steps
    return _nan_if_zero(total, count)


# =========================================================================== diversity
def _sequences(items: Iterable[Any]) -> list[list[Hashable]]:
    seqs = []
    for item in items:
        if isinstance(item, Composition):
            seqs.append(item.tokens.tolist())
        else:
            arr = np.asarray(item)
            seqs.append(arr.tolist() if arr.ndim == 1 else list(item))
    if not seqs:
        raise MetricsError("empty set of sequences; give at least one")
    return seqs


def distinct_n(sequences: Iterable[CompositionLike | Sequence[Hashable]], n: int) -> float:
    """Distinct-n (Li et al. 2016) of a set: the number of distinct token n-grams divided
    by the number of all n-grams, pooled over the set, in (0, 1]. Compositions count by
    their tokens; other items are sequences of hashable symbols. 1 when no n-gram
    repeats; 1 / (L - n + 1) for one constant line of length L. NaN when no sequence has
    n items."""
    if n < 1:
        raise MetricsError(f"n must be >= 1, got {n}")
    grams: list[tuple] = []
    for s in _sequences(sequences):
        grams.extend(tuple(s[i:i + n]) for i in range(len(s) - n + 1))
    return _nan_if_zero(len(set(grams)), len(grams))


def distinct_ngrams(sequences: Iterable[CompositionLike | Sequence[Hashable]],
                    ns: Sequence[int] = (1, 2, 3, 4)) -> dict[str, float]:
    """:func:`distinct_n` for each n in ``ns``, keyed ``"distinct_<n>"``."""
    seqs = _sequences(sequences)
    return {f"distinct_{n}": distinct_n(seqs, n) for n in ns}


def note_sequence(composition: CompositionLike) -> list[tuple[int | None, int]]:
    """The melody as symbols ``(pitch, duration in steps)``, rests included with pitch
    None: the alphabet of :func:`mean_pairwise_edit_distance` for compositions."""
    c = as_composition(composition)
    return [(n.pitch, n.duration) for n in c.notes(include_rests=True)]


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance between two sequences of hashable symbols: the least number
    of insertions, deletions and substitutions turning ``a`` into ``b``. O(len(a) *
    len(b)) time, one numpy row per symbol of the longer sequence."""
    a, b = list(a), list(b)
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    codes: dict[Hashable, int] = {}
    ai = [codes.setdefault(x, len(codes)) for x in a]
    bi = np.array([codes.setdefault(x, len(codes)) for x in b], dtype=np.int64)
    idx = np.arange(len(bi) + 1, dtype=np.int64)
    prev = idx.copy()
    best = np.empty_like(idx)
    for i, x in enumerate(ai, 1):
        best[0] = i
        np.minimum(prev[1:] + 1, prev[:-1] + (bi != x), out=best[1:])
        # insertions along the row: cur[j] = min_k<=j best[k] + (j - k)
        prev = np.minimum.accumulate(best - idx) + idx
    return int(prev[-1])


def mean_pairwise_edit_distance(items: Iterable[CompositionLike | Sequence[Hashable]], *,
                                normalize: bool = False) -> float:
    """Mean :func:`edit_distance` over all pairs of the set (a diversity measure; 0 when
    every item is the same). Compositions are compared as :func:`note_sequence` (notes
    and rests as (pitch, duration) symbols), other items as given. With ``normalize``
    each distance is divided by the longer sequence's length (in [0, 1]). NaN for fewer
    than two items. O(pairs x length^2): fine for ~100 pieces of a few dozen notes."""
    seqs = [note_sequence(x) if isinstance(x, Composition) else list(x) for x in items]
    if not seqs:
        raise MetricsError("empty set; give at least one sequence")
    dists = []
    for i in range(len(seqs)):
        for j in range(i + 1, len(seqs)):
            d = edit_distance(seqs[i], seqs[j])
            longest = max(len(seqs[i]), len(seqs[j]))
            dists.append(d / longest if normalize and longest else float(d))
    return float(np.mean(dists)) if dists else math.nan


# =========================================================================== all together
def mean_statistics(per_piece: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each key over a list of per-piece statistic dicts, skipping NaN (NaN if a
    key is NaN for every piece)."""
    rows = list(per_piece)
    if not rows:
        raise MetricsError("no per-piece statistics to average")
    out = {}
    for key in rows[0]:
        vals = [float(r[key]) for r in rows if not math.isnan(float(r[key]))]
        out[key] = float(np.mean(vals)) if vals else math.nan
    return out


def evaluate_set(compositions: Iterable[CompositionLike], *,
                 reference: Iterable[CompositionLike] | None = None,
                 nll_fn: Callable[[np.ndarray], float] | None = None,
                 term_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                 style: bool = True) -> dict[str, float]:
    """Every statistic of a sample set in one flat dict of floats.

    Keys: ``rl_tuner/<key>`` (:func:`rl_tuner_statistics`), ``muspy/<key>`` and
    ``harmony/<key>`` (per-piece :func:`muspy_statistics` and
    :func:`harmony_statistics`, averaged over pieces with :func:`mean_statistics`),
    ``diversity/distinct_1..4`` (tokens) and ``diversity/edit_distance`` (mean pairwise,
    normalised by length, of note sequences); with ``nll_fn`` also ``nll`` (nats per
    token, :func:`mean_nll`); with a ``reference`` set also
    ``reference/<feature>/<overlap|kl|intra_generated|intra_reference|inter>``
    (:func:`compare_sets`). With ``style`` (default) also the style yardstick
    ``style/<key>`` (:func:`musicenv.style.style_block`: profile scalars, ``style/distance``
    and ``style/c2st_accuracy``) against real melodies of the same length and meter
    (:func:`musicenv.style.default_reference`), when the pieces are whole bars of one
    meter and at most 8 bars long (the shipped reference); never the NLL (no torch here).
    """
    comps = _as_set(compositions)
    out = {f"rl_tuner/{k}": v for k, v in rl_tuner_statistics(comps, term_kwargs=term_kwargs).items()}
    out.update({f"muspy/{k}": v for k, v in mean_statistics(muspy_statistics(c) for c in comps).items()})
    strong = [np.zeros(c.n_steps) for c in comps]
    for idx, _, values in _iter_scored(_HARMONY_SPEC, comps):
        for b, i in enumerate(idx):
            strong[i] = values[b, :, 0]
    harmony = mean_statistics(_harmony_from_strong_beats(c, s) for c, s in zip(comps, strong))
    out.update({f"harmony/{k}": v for k, v in harmony.items()})
    out.update({f"diversity/{k}": v for k, v in distinct_ngrams(comps).items()})
    out["diversity/edit_distance"] = mean_pairwise_edit_distance(comps, normalize=True)
    if nll_fn is not None:
        out["nll"] = mean_nll(comps, nll_fn)
    if reference is not None:
        for feature, values in compare_sets(comps, reference).items():
            out.update({f"reference/{feature}/{k}": v for k, v in values.items()})
    if style:
        from musicenv.style import default_reference, style_block

        real = default_reference(comps)
        if real is not None:
            out.update(style_block(comps, real))
    return out


from musicenv.style import classifier_two_sample_test, style_distance, style_profile  # noqa: E402  (re-exported)
