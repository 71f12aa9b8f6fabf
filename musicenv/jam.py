"""Jam: a melody and a chord accompaniment played together, online.

The torch-free, numba-free pieces of the Jam environments (:mod:`musicenv.jam_v0`,
``JamChords-v0``, ``JamMelody-v0``): the chord agent's action vocabulary, the tracks
both parts sound, ReaLchords' evaluation metrics (Wu et al. 2024, "Adaptive
Accompaniment with ReaLchords", sec. 5) and the accompanists every agent is compared
with (random, a rule-based online accompanist, the offline oracle).

Chord tokens
------------
The chords agent writes one token per grid step, with the melody's token semantics:

=========  ================================================================
Token      Meaning
=========  ================================================================
0          N.C.: no chord from this step on (like the melody's ``REST``)
1          HOLD: the sounding chord (or silence) continues
2 + code   strike chord ``code`` (``root * N_QUALITIES + quality``, see
           :mod:`musicenv.theory`): 12 roots x 11 qualities = 132 chords
=========  ================================================================

so ``N_CHORD_TOKENS = 134``. At most one change (a token other than HOLD) per beat:
once the chord changed in a beat, only HOLD is allowed until the next beat
(:func:`chord_action_mask`); HOLD is not allowed at the first step.

Metrics
-------
All take token arrays (melody tokens on a :class:`~musicenv.encoding.TokenGrid`,
chord tokens as above) of equal length:

* :func:`note_in_chord`: share of melody-sounding steps whose pitch class belongs to
  the sounding chord (N.C. under a note counts as not in the chord).
* :func:`onset_interval_emd`: earth mover's distance, in beats, between the histogram
  of intervals between successive chord onsets and that of successive note onsets.
* :func:`chord_length_entropy`: entropy (nats) of the distribution of chord lengths.
* :func:`progression_diversity`: distinct chord bigrams / all chord bigrams.
* ``onsets_on_beat`` (in :func:`jam_statistics`): share of chord onsets on a beat.
* :func:`recovery_beats`: beats after a push (tritone shift, cold start) until the
  note-in-chord rate of a beat is back to half its level before the push.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from musicenv.encoding import FIRST_PITCH_TOKEN, HOLD, REST, TokenGrid, transpose_tokens
from musicenv.theory import (
    CHORD_PC_MASK,
    KEY_SCALE_MASK,
    KEY_TONIC,
    N_CHORDS,
    NO_CHORD,
    QUALITIES,
    chord_name,
)

__all__ = [
    "N_CHORD_TOKENS", "NO_CHORD_TOKEN", "CHORD_HOLD", "chord_token", "chord_token_name", "chord_action_mask",
    "sounding_chords", "sounding_pitches", "chord_tokens_from_track", "teacher_chord_tokens", "chord_onsets",
    "note_onsets",
    "note_in_chord", "note_in_chord_per_beat", "onset_interval_emd", "chord_lengths", "chord_length_entropy",
    "progression_diversity", "recovery_beats", "jam_statistics", "composition_statistics", "ACCOMPANIMENT_CHORDS", "chord_fit",
    "RuleAccompanist", "RandomAccompanist", "oracle_chords", "transpose_melody", "JamError",
]


class JamError(ValueError):
    """Bad input to a Jam environment, metric or accompanist."""


NO_CHORD_TOKEN = REST  # 0
CHORD_HOLD = HOLD  # 1
#: Tokens of the chords agent: N.C., HOLD and the 132 chords of musicenv.theory.
N_CHORD_TOKENS = FIRST_PITCH_TOKEN + N_CHORDS

_MAJ, _MIN, _DOM7 = QUALITIES.index("maj"), QUALITIES.index("min"), QUALITIES.index("dom7")
#: Chords the rule-based accompanist and the oracle choose from: the major and minor
#: triads and dominant sevenths on all 12 roots (36 chords; any key can be followed).
ACCOMPANIMENT_CHORDS = np.array(sorted(r * len(QUALITIES) + q for r in range(12) for q in (_MAJ, _MIN, _DOM7)),
                                dtype=np.int64)


def chord_token(code: int) -> int:
    """The token striking chord ``code`` (``NO_CHORD`` gives the N.C. token)."""
    code = int(code)
    if code == NO_CHORD:
        return NO_CHORD_TOKEN
    if not 0 <= code < N_CHORDS:
        raise JamError(f"chord code {code} out of range; accepted: 0..{N_CHORDS - 1} or NO_CHORD ({NO_CHORD})")
    return FIRST_PITCH_TOKEN + code


def chord_token_name(token: int) -> str:
    """``'N.C.'``, ``'-'`` (HOLD) or the chord symbol of a chord token."""
    token = int(token)
    if token == NO_CHORD_TOKEN:
        return "N.C."
    if token == CHORD_HOLD:
        return "-"
    if not FIRST_PITCH_TOKEN <= token < N_CHORD_TOKENS:
        raise JamError(f"chord token {token} out of range; accepted: 0..{N_CHORD_TOKENS - 1}")
    return chord_name(token - FIRST_PITCH_TOKEN)


def _check_tokens(tokens: Any, vocab: int, what: str) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise JamError(f"{what} must be a 1-D integer token array, got shape {arr.shape} and dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab):
        raise JamError(f"{what} hold token(s) outside 0..{vocab - 1}: {sorted(set(arr[(arr < 0) | (arr >= vocab)].tolist()))[:5]}")
    return arr.astype(np.int64, copy=False)


def chord_action_mask(chord_tokens: np.ndarray, t: int, steps_per_beat: int) -> np.ndarray:
    """(N_CHORD_TOKENS,) bool: chord tokens allowed at step ``t`` after ``chord_tokens[:t]``.

    Everything while the harmony has not changed yet in ``t``'s beat (striking the
    sounding chord again is no change), else only HOLD; never HOLD at step 0."""
    mask = np.ones(N_CHORD_TOKENS, dtype=bool)
    if t == 0:
        mask[CHORD_HOLD] = False
        return mask
    beat_start = t - t % steps_per_beat
    codes = sounding_chords(np.asarray(chord_tokens[:t]))
    before = np.concatenate([[NO_CHORD], codes[:-1]])
    changed = (codes != before) | (np.arange(t) == 0)
    if changed[beat_start:t].any():
        mask[:] = False
        mask[CHORD_HOLD] = True
    return mask


# ------------------------------------------------------------------------------ tracks
def sounding_chords(chord_tokens: Any) -> np.ndarray:
    """Chord code sounding at each step (``NO_CHORD`` under N.C. and before the first chord)."""
    toks = _check_tokens(chord_tokens, N_CHORD_TOKENS, "chord tokens")
    out = np.full(len(toks), NO_CHORD, dtype=np.int64)
    cur = NO_CHORD
    for s, tok in enumerate(toks.tolist()):
        if tok != CHORD_HOLD:
            cur = NO_CHORD if tok == NO_CHORD_TOKEN else tok - FIRST_PITCH_TOKEN
        out[s] = cur
    return out


def sounding_pitches(melody_tokens: Any, grid: TokenGrid) -> np.ndarray:
    """MIDI pitch sounding at each step of a melody, -2 where it rests."""
    toks = _check_tokens(melody_tokens, grid.vocab_size, "melody tokens")
    out = np.full(len(toks), -2, dtype=np.int64)
    cur = -2
    for s, tok in enumerate(toks.tolist()):
        if tok == REST:
            cur = -2
        elif tok != HOLD:
            cur = grid.pitch(tok)
        out[s] = cur
    return out


def chord_tokens_from_track(codes: Any) -> np.ndarray:
    """Chord tokens of a per-step chord track (a corpus's ``chords``): a token where the
    chord changes, HOLD elsewhere."""
    codes = np.asarray(codes, dtype=np.int64)
    out = np.full(len(codes), CHORD_HOLD, dtype=np.int64)
    prev = None
    for s, c in enumerate(codes.tolist()):
        if c != prev:
            out[s] = chord_token(c)
            prev = c
    return out


def teacher_chord_tokens(codes: Any, steps_per_beat: int, delay: int = 0) -> np.ndarray:
    """The legal chord tokens that follow a per-step chord track (a corpus's ``chords``,
    ``NO_CHORD`` for none) as closely as :func:`chord_action_mask` allows: the teacher
    of behaviour cloning (:mod:`agents.jam_bc`).

    At each step the token striking the track's chord when it differs from the chord
    sounding (N.C. when the track has none), HOLD when they agree; a change the mask
    forbids (a second change in one beat) becomes HOLD, and the chord is struck at the
    next step that allows it (the next beat), if the track still differs. So on a track
    with at most one change per beat this equals :func:`chord_tokens_from_track`.

    ``delay`` (0 <= delay < steps_per_beat) strikes every change of the track that many
    steps later (the opening chord stays at step 0): the online teacher, who hears the
    note struck on the beat before answering it, as an accompanist who does not know
    the tune does. Bach's chords one 16th late keep 84 % of their note-in-chord on the
    test chorales (0.796 against 0.943) where an online model guessing on the beat
    reaches about 0.69."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 1:
        raise JamError(f"chord track must be 1-D, got shape {codes.shape}")
    if not isinstance(steps_per_beat, (int, np.integer)) or steps_per_beat < 1:
        raise JamError(f"steps_per_beat must be a positive integer, got {steps_per_beat!r}")
    if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or not 0 <= delay < steps_per_beat:
        raise JamError(f"delay must be an integer in 0..{steps_per_beat - 1} (steps within a beat), got {delay!r}")
    bad = (codes < 0) | (codes > NO_CHORD)
    if bad.any():
        raise JamError(f"chord track holds code(s) outside 0..{N_CHORDS - 1} and NO_CHORD ({NO_CHORD}): "
                       f"{sorted(set(codes[bad].tolist()))[:5]}")
    if delay and len(codes):
        codes = np.concatenate([np.full(delay, codes[0]), codes[:-delay]])[:len(codes)]
    out = np.full(len(codes), CHORD_HOLD, dtype=np.int64)
    sounding, last_change = None, -1  # None: before the first step (anything struck there is a change)
    for t, code in enumerate(codes.tolist()):
        if code != sounding and last_change < t - t % steps_per_beat:
            out[t] = chord_token(code)
            sounding, last_change = code, t
    return out


def chord_onsets(chord_tokens: Any) -> np.ndarray:
    """Steps at which the harmony changes to a chord: a chord struck that differs from
    the one sounding before (striking the sounding chord again is no change; N.C. is
    no chord onset)."""
    codes = sounding_chords(chord_tokens)
    before = np.concatenate([[NO_CHORD], codes[:-1]])
    return np.flatnonzero((codes != NO_CHORD) & (codes != before))


def note_onsets(melody_tokens: Any) -> np.ndarray:
    """Steps at which a melody note starts."""
    return np.flatnonzero(np.asarray(melody_tokens) >= FIRST_PITCH_TOKEN)


def _pair(melody_tokens: Any, chord_tokens: Any, grid: TokenGrid) -> tuple[np.ndarray, np.ndarray]:
    pitch, chords = sounding_pitches(melody_tokens, grid), sounding_chords(chord_tokens)
    if len(pitch) != len(chords):
        raise JamError(f"melody ({len(pitch)} steps) and chords ({len(chords)} steps) differ in length")
    return pitch, chords


# ------------------------------------------------------------------------------ metrics
def note_in_chord(melody_tokens: Any, chord_tokens: Any, grid: TokenGrid) -> float:
    """Share of the steps on which the melody sounds a note whose pitch class belongs to
    the sounding chord (ReaLchords' "note-in-chord ratio", counted per grid step, so a
    long note weighs more). N.C. under a note counts as not in the chord. NaN when the
    melody only rests."""
    pitch, chords = _pair(melody_tokens, chord_tokens, grid)
    sounding = pitch >= 0
    if not sounding.any():
        return float("nan")
    inside = CHORD_PC_MASK[chords[sounding], pitch[sounding] % 12]
    return float(inside.mean())


def note_in_chord_per_beat(melody_tokens: Any, chord_tokens: Any, grid: TokenGrid, steps_per_beat: int) -> np.ndarray:
    """:func:`note_in_chord` of each beat (NaN for a beat in which the melody rests)."""
    pitch, chords = _pair(melody_tokens, chord_tokens, grid)
    n = len(pitch) // steps_per_beat
    out = np.full(n, np.nan)
    for b in range(n):
        p, c = pitch[b * steps_per_beat:(b + 1) * steps_per_beat], chords[b * steps_per_beat:(b + 1) * steps_per_beat]
        if (p >= 0).any():
            out[b] = CHORD_PC_MASK[c[p >= 0], p[p >= 0] % 12].mean()
    return out


def _intervals(onsets: np.ndarray) -> np.ndarray:
    return np.diff(onsets)


def onset_interval_emd(pairs: Iterable[tuple[Any, Any]], steps_per_beat: int, *, max_beats: int = 16) -> float:
    """Earth mover's distance (1-D Wasserstein, in beats) between the histogram of the
    intervals between successive chord onsets and the histogram of the intervals
    between successive melody note onsets, pooled over ``pairs`` of (melody tokens,
    chord tokens). Intervals are counted in grid steps and clipped at ``max_beats``.
    0 when the chords change exactly as often, in the same rhythm, as the notes;
    large for frozen or frantic harmony. NaN when either part has fewer than two
    onsets in every pair. ReaLchords compares the two parts' onset rhythms this way."""
    chord_iv, note_iv = [], []
    for mel, ch in pairs:
        chord_iv.append(_intervals(chord_onsets(ch)))
        note_iv.append(_intervals(note_onsets(mel)))
    a, b = np.concatenate(chord_iv) if chord_iv else np.zeros(0), np.concatenate(note_iv) if note_iv else np.zeros(0)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    top = max_beats * steps_per_beat
    ha = np.bincount(np.minimum(a, top).astype(np.int64), minlength=top + 1) / len(a)
    hb = np.bincount(np.minimum(b, top).astype(np.int64), minlength=top + 1) / len(b)
    return float(np.abs(np.cumsum(ha - hb)).sum() / steps_per_beat)


def chord_lengths(chord_tokens: Any, *, complete: bool = False) -> np.ndarray:
    """Length in steps of every chord: each run of one sounding chord (a chord struck
    again on itself continues it), N.C. excluded. With ``complete``, the chord still
    sounding at the last step is left out: the end of an excerpt cuts it, so its
    length says where the excerpt stops, not how long the accompanist held it."""
    codes = sounding_chords(chord_tokens)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
    ends = np.concatenate([starts[1:], [len(codes)]])
    keep = codes[starts] != NO_CHORD
    if complete:
        keep[-1] = False
    return (ends - starts)[keep].astype(np.int64)


def chord_length_entropy(chord_token_arrays: Iterable[Any], *, complete: bool = False) -> float:
    """Entropy (nats) of the distribution of chord lengths in steps, pooled over a set of
    chord token arrays. ReaLchords reports it as the signal of reward hacking: under RL
    it collapsed from 2.21 to 1.35 (data: 2.19) as the model settled on one length.
    0 when every chord lasts the same; NaN without chords. ``complete`` leaves out
    each array's last chord when the end cuts it (:func:`chord_lengths`): an
    accompanist who strikes a 16th after each beat ends every excerpt on a chord a
    16th short of whole beats, a length no chord of the piece has."""
    lengths = np.concatenate([chord_lengths(c, complete=complete) for c in chord_token_arrays]
                             or [np.zeros(0, dtype=np.int64)])
    if len(lengths) == 0:
        return float("nan")
    p = np.bincount(lengths) / len(lengths)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def progression_diversity(chord_token_arrays: Iterable[Any]) -> float:
    """Distinct chord bigrams (successive chords struck, repeats of one chord merged)
    divided by all bigrams, pooled over the set (:func:`musicenv.metrics.distinct_n` with
    n = 2 over chord symbols). 1 when no two-chord progression repeats; NaN when no
    piece has two different chords."""
    from musicenv.metrics import distinct_n

    seqs = []
    for toks in chord_token_arrays:
        codes = [int(t) for t in _check_tokens(toks, N_CHORD_TOKENS, "chord tokens") if t >= FIRST_PITCH_TOKEN]
        merged = [c for i, c in enumerate(codes) if i == 0 or c != codes[i - 1]]
        seqs.append(merged)
    if not any(len(s) >= 2 for s in seqs):
        return float("nan")
    return float(distinct_n([s for s in seqs if len(s) >= 2], 2))


def recovery_beats(per_beat: np.ndarray, push_beat: int, *, level: float | None = None) -> float:
    """Beats after a push until the note-in-chord rate recovers.

    ``per_beat`` is :func:`note_in_chord_per_beat` of one piece and ``push_beat`` the
    first beat after the push (the tritone shift; 0 for a cold start). The level
    before the push is the mean rate of the beats before it (``level`` overrides it; a
    cold start has no "before", so pass the rate the accompanist reaches on the
    warm-started piece). Returns the number of beats from ``push_beat`` to the first
    beat whose rate is at least half that level (0: no dip at all), skipping beats in
    which the melody rests. When the rate never recovers, the number of beats left
    (a censored value). NaN when the level is NaN or 0."""
    per_beat = np.asarray(per_beat, dtype=np.float64)
    if level is None:
        before = per_beat[:push_beat]
        level = float(np.nanmean(before)) if np.isfinite(before).any() else float("nan")
    if not np.isfinite(level) or level <= 0:
        return float("nan")
    for k, v in enumerate(per_beat[push_beat:]):
        if np.isfinite(v) and v >= level / 2:
            return float(k)
    return float(len(per_beat) - push_beat)


def jam_statistics(pairs: Sequence[tuple[Any, Any]], grid: TokenGrid, steps_per_beat: int) -> dict[str, float]:
    """The pooled metrics of a set of (melody tokens, chord tokens) pairs: note-in-chord
    (mean over pieces), onset-interval EMD, chord-length entropy (of all chords, and of
    the complete ones: ``chord_length_entropy_complete``), progression diversity,
    chord onsets per 4 beats (``changes_per_4_beats``) and the share of chord onsets
    that fall on a beat (``onsets_on_beat``: 1 for Bach's chords; an accompanist who
    waits to hear the note on the beat strikes after it)."""
    if not pairs:
        raise JamError("no (melody, chords) pairs to measure")
    nic = [note_in_chord(m, c, grid) for m, c in pairs]
    chords = [c for _, c in pairs]
    n_beats = sum(len(c) for c in chords) / steps_per_beat
    onsets = np.concatenate([chord_onsets(c) for c in chords])
    return {
        "note_in_chord": float(np.nanmean(nic)) if np.isfinite(nic).any() else float("nan"),
        "onset_interval_emd": onset_interval_emd(pairs, steps_per_beat),
        "chord_length_entropy": chord_length_entropy(chords),
        "chord_length_entropy_complete": chord_length_entropy(chords, complete=True),
        "progression_diversity": progression_diversity(chords),
        "changes_per_4_beats": float(len(onsets) / n_beats * 4),
        "onsets_on_beat": float(np.mean(onsets % steps_per_beat == 0)) if len(onsets) else float("nan"),
    }


def composition_statistics(compositions: Iterable[Any]) -> dict[str, float]:
    """:func:`jam_statistics` of Jam compositions (``env.unwrapped.composition``: the
    melody with the chords played as its chord track), keys prefixed ``jam/``. A chord
    struck again on itself is not seen in a chord track, so it counts as held."""
    comps = list(compositions)
    if not comps:
        raise JamError("no compositions to measure")
    c0 = comps[0]
    spb = c0.meter.steps_per_beat(c0.grid.steps_per_quarter)
    pairs = [(c.tokens, chord_tokens_from_track(c.chords[:len(c.tokens)])) for c in comps]
    return {f"jam/{k}": v for k, v in jam_statistics(pairs, c0.grid, spb).items()}


# ------------------------------------------------------------------------------ accompanists
def chord_fit(weights: np.ndarray, key: int, candidates: np.ndarray = ACCOMPANIMENT_CHORDS) -> np.ndarray:
    """Fit of each candidate chord to a pitch-class profile ``weights`` (12 entries,
    e.g. how long each pitch class sounded): 2 x the share of the weight on chord tones
    - 1, minus 0.1 per chord tone that does not sound, minus 0.15 for a seventh chord
    (:func:`musicenv.corpus.match_chord`'s score), plus 0.1 when every chord tone is in
    ``key`` (a mild preference for the key's own chords). Shape (len(candidates),)."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    masks = CHORD_PC_MASK[candidates].astype(np.float64)
    if total <= 0:
        share = np.zeros(len(candidates))
        missing = np.zeros(len(candidates))
    else:
        w = w / total
        share = masks @ w
        missing = masks @ (w <= 1e-12)
    size = masks.sum(axis=1)
    diatonic = np.all(~CHORD_PC_MASK[candidates] | KEY_SCALE_MASK[key][None, :], axis=1)
    return 2 * share - 1 - 0.1 * missing - 0.15 * (size > 3) + 0.1 * diatonic


def _tonic_chord(key: int) -> int:
    return int(KEY_TONIC[key]) * len(QUALITIES) + (_MIN if key >= 12 else _MAJ)


def _profile(pitch: np.ndarray) -> np.ndarray:
    p = pitch[pitch >= 0]
    return np.bincount(p % 12, minlength=12).astype(np.float64)


class RuleAccompanist:
    """A rule-based online accompanist: on each beat, the chord that best fits the melody
    heard so far in the bar.

    At the first step of a beat it scores :data:`ACCOMPANIMENT_CHORDS` with
    :func:`chord_fit` on the melody's steps heard so far in this bar (on a downbeat,
    the previous beat's) and strikes the best one when it fits better than the chord
    sounding now; otherwise, and between beats, HOLD. It starts on the tonic triad of
    the key. It sees only the past, as the chords agent does.
    """

    def __init__(self, grid: TokenGrid, steps_per_beat: int, steps_per_bar: int) -> None:
        self.grid, self.spb, self.bar = grid, int(steps_per_beat), int(steps_per_bar)

    def act(self, melody_past: np.ndarray, chords_past: np.ndarray, key: int) -> int:
        """Chord token for step ``t = len(melody_past)`` given both parts' tokens so far."""
        t = len(melody_past)
        if t == 0:
            return chord_token(_tonic_chord(key))
        if t % self.spb:
            return CHORD_HOLD
        pitch = sounding_pitches(melody_past, self.grid)
        start = t - t % self.bar
        heard = pitch[start:t] if t > start else pitch[max(0, t - self.spb):t]
        w = _profile(heard)
        if w.sum() == 0:
            return CHORD_HOLD
        scores = chord_fit(w, key)
        best = int(ACCOMPANIMENT_CHORDS[int(np.argmax(scores))])
        current = sounding_chords(chords_past)[-1]
        if current == best:
            return CHORD_HOLD
        if current != NO_CHORD and current in ACCOMPANIMENT_CHORDS:
            cur_score = scores[int(np.flatnonzero(ACCOMPANIMENT_CHORDS == current)[0])]
            if cur_score >= scores.max() - 1e-9:
                return CHORD_HOLD
        return chord_token(best)

    def accompany(self, melody_tokens: np.ndarray, key: int) -> np.ndarray:
        """The accompanist's chord tokens for a whole melody, played step by step."""
        mel = np.asarray(melody_tokens, dtype=np.int64)
        out = np.zeros(len(mel), dtype=np.int64)
        for t in range(len(mel)):
            out[t] = self.act(mel[:t], out[:t], key)
        return out


class RandomAccompanist:
    """Uniformly random chord tokens among those :func:`chord_action_mask` allows."""

    def __init__(self, steps_per_beat: int, seed: int | None = None) -> None:
        self.spb = int(steps_per_beat)
        self.rng = np.random.default_rng(seed)

    def act(self, melody_past: np.ndarray, chords_past: np.ndarray, key: int) -> int:
        return int(self.rng.choice(np.flatnonzero(chord_action_mask(chords_past, len(chords_past), self.spb))))

    def accompany(self, melody_tokens: np.ndarray, key: int) -> np.ndarray:
        out = np.zeros(len(melody_tokens), dtype=np.int64)
        for t in range(len(out)):
            out[t] = self.act(melody_tokens[:t], out[:t], key)
        return out


def oracle_chords(melody_tokens: Any, key: int, grid: TokenGrid, steps_per_beat: int, steps_per_bar: int) -> np.ndarray:
    """The offline oracle: chord tokens derived from the whole melody, future included.

    For every beat, the chord of :data:`ACCOMPANIMENT_CHORDS` that best fits (by
    :func:`chord_fit`) the melody sounding in that beat plus half the weight of the rest
    of its bar; struck on the beat when it differs from the chord sounding, held
    otherwise (and through beats where the melody rests). Starts on the tonic triad
    when the first beat is silent."""
    pitch = sounding_pitches(melody_tokens, grid)
    n = len(pitch)
    out = np.full(n, CHORD_HOLD, dtype=np.int64)
    current = NO_CHORD
    for start in range(0, n, steps_per_beat):
        beat = pitch[start:start + steps_per_beat]
        bar0 = start - start % steps_per_bar
        w = _profile(beat) + 0.5 * _profile(pitch[bar0:bar0 + steps_per_bar])
        if _profile(beat).sum() == 0:
            best = current if current != NO_CHORD else _tonic_chord(key)
        else:
            best = int(ACCOMPANIMENT_CHORDS[int(np.argmax(chord_fit(w, key)))])
        if best != current:
            out[start] = chord_token(best)
            current = best
    if n and out[0] == CHORD_HOLD:
        out[0] = chord_token(_tonic_chord(key))
    return out


def transpose_melody(melody_tokens: Any, grid: TokenGrid, semitones: int, from_step: int = 0) -> np.ndarray:
    """The melody with its notes from ``from_step`` on moved by ``semitones`` (folded by
    octaves into the grid's range): the push test's tritone shift."""
    toks = _check_tokens(melody_tokens, grid.vocab_size, "melody tokens")
    return transpose_tokens(toks, semitones, grid, from_step=from_step)[0]

