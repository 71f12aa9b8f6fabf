"""Features of a piece for the preference model: style statistics, reward-term totals and more.

:func:`piece_features` maps compositions to a fixed-length float vector per piece, in
named groups:

``style``
    What a listener hears at once, measured on the melody (numpy only):
    ``notes_per_bar``; ``mean_note_quarters`` (mean note length in quarter notes);
    ``rest_share`` (share of steps that are silent); ``step_share``, ``leap_share``,
    ``repeat_share`` (share of intervals between consecutive notes of 1-2 semitones,
    5 or more, 0); ``mean_abs_interval`` (semitones); ``pitch_range`` (semitones);
    ``pitch_class_entropy`` (bits); ``in_key_share`` (notes in the key, minor with its
    raised 6th and 7th, as the ``in_key`` rule); ``chord_tone_share`` (notes whose pitch
    class is in the chord at their onset, among notes over a chord); ``ends_on_tonic``
    (1 if the last note is the tonic); ``distinct_4gram_share`` (distinct 4-grams of
    onset pitches / 4-grams: 1 = nothing repeats). A piece without notes gets 0 for
    the rates it has no denominator for.
``reward_terms``
    The episode totals of every term of the ``theory`` preset (weighted, as in
    ``info["reward_terms"]``), via :func:`rewards.score_steps_batch`.
``style_profile``
    The scalars of the style yardstick for each piece: ``musicenv.style.style_profile``
    of the one-piece set (notes per bar, 16th, leap and repeated shares, final note
    length and degree, range, in-key and strong-beat chord-tone shares).
``prior``
    The pretrained note-RNN's mean log-likelihood per token and its final hidden state
    (needs torch; only when asked for).

A fitted model records the names of its features, and scoring checks they are all
still produced, so a model never silently reads a different feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["piece_features", "FEATURE_GROUPS", "DEFAULT_GROUPS", "style_features", "STYLE_NAMES",
           "FeatureError", "available_groups"]

FEATURE_GROUPS = ("style", "reward_terms", "style_profile", "prior")
DEFAULT_GROUPS = ("style", "reward_terms", "style_profile")
STYLE_NAMES = ("notes_per_bar", "mean_note_quarters", "rest_share", "step_share", "leap_share", "repeat_share",
               "mean_abs_interval", "pitch_range", "pitch_class_entropy", "in_key_share", "chord_tone_share",
               "ends_on_tonic", "distinct_4gram_share")
REWARD_SPEC = "theory"


class FeatureError(ValueError):
    """Unknown feature group, or features a model needs that cannot be computed here."""


def available_groups() -> tuple[str, ...]:
    """The groups that can be computed in this installation (``prior`` only with torch)."""
    import importlib.util

    out = ["style", "reward_terms", "style_profile"]
    if importlib.util.find_spec("torch") is not None:
        out.append("prior")
    return tuple(out)


def _rate(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def style_features(comp: Any) -> np.ndarray:
    """The ``style`` group of one composition, in :data:`STYLE_NAMES` order."""
    from musicenv.theory import CHORD_PC_MASK, KEY_SCALE_MASK, KEY_TONIC, NO_CHORD

    notes = comp.notes()
    n = comp.n_steps
    bars = max(n / comp.steps_per_bar, 1e-9)
    pitches = np.array([p for p, _, _ in notes], dtype=np.int64)
    durs = np.array([d for _, _, d in notes], dtype=np.float64)
    sounding = float(durs.sum())
    intervals = np.abs(np.diff(pitches)) if len(pitches) > 1 else np.zeros(0, dtype=np.int64)
    key = comp.key.index
    if len(pitches):
        counts = np.bincount(pitches % 12, minlength=12).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * np.log2(p)).sum())
        in_key = _rate(sum(bool(KEY_SCALE_MASK[key, q % 12]) for q in pitches), len(pitches))
        over = [(int(comp.chords[o]), pch) for pch, o, _ in notes if int(comp.chords[o]) != NO_CHORD]
        chord_tone = _rate(sum(bool(CHORD_PC_MASK[c, pch % 12]) for c, pch in over), len(over))
        ends_tonic = float(pitches[-1] % 12 == int(KEY_TONIC[key]))
        grams = [tuple(pitches[i:i + 4]) for i in range(len(pitches) - 3)]
        distinct = _rate(len(set(grams)), len(grams))
        prange = float(pitches.max() - pitches.min())
    else:
        entropy = in_key = chord_tone = ends_tonic = distinct = prange = 0.0
    return np.array([
        len(notes) / bars,
        _rate(sounding, len(notes)) / comp.grid.steps_per_quarter,
        1.0 - _rate(sounding, n),
        _rate(((intervals >= 1) & (intervals <= 2)).sum(), len(intervals)),
        _rate((intervals >= 5).sum(), len(intervals)),
        _rate((intervals == 0).sum(), len(intervals)),
        float(intervals.mean()) if len(intervals) else 0.0,
        prange, entropy, in_key, chord_tone, ends_tonic, distinct,
    ], dtype=np.float64)


def _reward_totals(comps: Sequence[Any]) -> tuple[list[str], np.ndarray]:
    from rewards import score_steps_batch

    out: np.ndarray | None = None
    names: list[str] = []
    for idx, term_names, values in score_steps_batch(REWARD_SPEC, comps):
        if out is None:
            names = [f"reward.{t}" for t in term_names]
            out = np.zeros((len(comps), len(names)))
        out[idx] = values.sum(axis=1)
    if out is None:
        from rewards import make

        names = [f"reward.{t}" for t in make(REWARD_SPEC).names]
        out = np.zeros((len(comps), len(names)))
    return names, out


def _style_profile(comps: Sequence[Any]) -> tuple[list[str], np.ndarray]:
    from musicenv.style import style_profile

    rows: list[dict[str, float]] = []
    for c in comps:
        values = style_profile([c])  # the profile of a one-piece set: that piece's scalars (histograms skipped)
        row = {}
        for k, v in values.items():
            if k != "pieces" and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                row[f"style_profile.{k}"] = float(v)
        rows.append(row)
    names = sorted(set().union(*rows)) if rows else []
    X = np.array([[r.get(k, np.nan) for k in names] for r in rows], dtype=np.float64).reshape(len(rows), len(names))
    return names, np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)


def _prior(comps: Sequence[Any]) -> tuple[list[str], np.ndarray]:
    import torch

    from agents.models.note_rnn import load_prior

    model = load_prior()
    model.eval()
    recurrent = model.config.arch != "transformer"
    width = 1 + (model.config.hidden_size if recurrent else 0)
    X = np.zeros((len(comps), width))
    with torch.inference_mode():
        for i, c in enumerate(comps):
            tokens = np.asarray(c.tokens, dtype=np.int64)
            X[i, 0] = float(np.mean(model.sequence_log_probs(tokens))) if len(tokens) else 0.0
            if recurrent and len(tokens):
                inputs = torch.as_tensor(np.concatenate([[model.begin], tokens]))[None]
                _, state = model.forward(inputs, None, model.initial_state(1))
                X[i, 1:] = state[0][-1, 0].float().numpy()
    names = ["prior.mean_log_prob"] + [f"prior.h{j}" for j in range(width - 1)]
    return names, X


def piece_features(comps: Sequence[Any], groups: Sequence[str] = ("style", "reward_terms"),
                   ) -> tuple[list[str], np.ndarray]:
    """``(names, X)``: feature names and an array of shape (n_pieces, n_features) for the
    given groups (see the module doc). Unknown or unavailable groups raise :class:`FeatureError`."""
    unknown = sorted(set(groups) - set(FEATURE_GROUPS))
    if unknown:
        raise FeatureError(f"unknown feature group(s) {unknown}; accepted: {', '.join(FEATURE_GROUPS)}")
    comps = list(comps)
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for group in groups:
        if group == "style":
            names += [f"style.{k}" for k in STYLE_NAMES]
            blocks.append(np.array([style_features(c) for c in comps]).reshape(len(comps), len(STYLE_NAMES)))
        elif group == "reward_terms":
            n, X = _reward_totals(comps)
            names += n
            blocks.append(X)
        elif group == "style_profile":
            n, X = _style_profile(comps)
            names += n
            blocks.append(X)
        elif group == "prior":
            n, X = _prior(comps)
            names += n
            blocks.append(X)
    X = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(comps), 0))
    return names, X
