"""Helpers for the reward tests: building compositions, naive reference oracles, a
plain-Python user term and hypothesis strategies.

The oracles transcribe each term's docstring directly and non-incrementally (walk
back through the history, recompute statistics from scratch for every prefix, scan
every earlier window), so they share no code with the numba kernels they check.
They return the *raw* (unweighted) per-step values with default parameters.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
from hypothesis import strategies as st

import rewards
from musicenv.composition import Composition
from musicenv.encoding import DEFAULT_GRID, HOLD, REST, tokens_to_notes
from musicenv.theory import N_CHORDS, NO_CHORD, QUALITIES, QUALITY_INTERVALS, Key, Meter
from rewards.base import RewardTerm
from rewards.counterpoint import COUNTERPOINT_TERMS
from rewards.harmonization import HARMONIZATION_TERMS

#: Terms that judge a line against a given voice (Counterpoint-v0's cantus, Harmonization-v0's
#: melody); a plain melody has none, so they must score exactly 0 on it (their rules are
#: tested in test_counterpoint.py and test_harmonization.py).
GIVEN_VOICE_TERMS: tuple[str, ...] = COUNTERPOINT_TERMS + HARMONIZATION_TERMS
ALL_TERMS: tuple[str, ...] = rewards.RL_TUNER_RULES + rewards.CHORD_TERMS + rewards.MELODY_TERMS
#: Every term at weight 1, so ``score_steps`` returns raw values.
RAW_SPEC = {name: 1.0 for name in ALL_TERMS}

MIN_PITCH = DEFAULT_GRID.min_pitch
SPQ = DEFAULT_GRID.steps_per_quarter


def tok(midi: int) -> int:
    """NOTE_ON token of a MIDI pitch on the default grid (60 -> 14)."""
    return midi - MIN_PITCH + 2


def pitch_of(token: int) -> int | None:
    return None if token in (REST, HOLD) else token - 2 + MIN_PITCH


def comp(tokens, key="C major", meter="4/4", chords=None, progression=None) -> Composition:
    """A composition from raw tokens, with a per-step chord track or a progression."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if progression is not None:
        return Composition.from_progression(tokens, progression, key=key, meter=meter)
    return Composition(tokens, key=key, meter=meter, chords=chords)


def steps(spec, composition, name: str | None = None) -> np.ndarray:
    """Per-step values of one term (the only term if ``name`` is None)."""
    names, values = rewards.score_steps(spec, composition)
    return values[:, 0] if name is None else values[:, names.index(name)]


def raw(name: str, composition, **kwargs) -> np.ndarray:
    """Per-step raw values of term ``name`` (weight 1, optional kwargs)."""
    spec = {name: {"weight": 1.0, **kwargs}} if kwargs else name
    return steps(spec, composition)


def nonzero(values) -> dict[int, float]:
    """{step: value} of the steps with a nonzero value (readable exact assertions)."""
    return {int(t): float(values[t]) for t in np.flatnonzero(values)}


# ---------------------------------------------------------------------------- key facts
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR_WITH_RAISED = (0, 2, 3, 5, 7, 8, 9, 10, 11)  # natural minor + raised 6th and 7th


def key_pcs(key: Key) -> set[int]:
    return {(key.tonic + i) % 12 for i in (_MINOR_WITH_RAISED if key.minor else _MAJOR)}


def tonic_triad(key: Key) -> set[int]:
    return {key.tonic, (key.tonic + (3 if key.minor else 4)) % 12, (key.tonic + 7) % 12}


def chord_pcs(code: int) -> set[int]:
    if code == NO_CHORD:
        return set()
    root, q = divmod(int(code), len(QUALITIES))
    return {(root + i) % 12 for i in QUALITY_INTERVALS[QUALITIES[q]]}


def last_pitch_before(tokens, t: int) -> int | None:
    for i in range(t - 1, -1, -1):
        p = pitch_of(tokens[i])
        if p is not None:
            return p
    return None


def sounding_pitch(tokens, t: int) -> int | None:
    """Pitch sounding at step t: the last non-HOLD token at or before t, if a NOTE_ON."""
    for i in range(t, -1, -1):
        if tokens[i] != HOLD:
            return pitch_of(tokens[i])
    return None


# ---------------------------------------------------------------------------- RL Tuner oracles
def oracle_in_key(c: Composition) -> list[float]:
    pcs = key_pcs(c.key)
    return [-1.0 if (p := pitch_of(a)) is not None and p % 12 not in pcs else 0.0 for a in c.tokens.tolist()]


def oracle_tonic(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    n = len(tokens)
    final_beat = n - c.meter.steps_per_beat(SPQ)
    out = []
    closing = pitch_of(tokens[final_beat]) if 0 <= final_beat < n else None
    ends_on_tonic = closing is not None and closing % 12 == c.key.tonic
    for t, a in enumerate(tokens):
        p = pitch_of(a)
        if t == 0 or t == final_beat:
            ok = p is not None and p % 12 == c.key.tonic
        elif t > final_beat and not ends_on_tonic:
            ok = False
        elif t == final_beat + 1:
            ok = a == HOLD
        elif t > final_beat + 1:
            ok = a in (HOLD, REST)
        else:
            ok = False
        out.append(3.0 if ok else 0.0)
    return out


def oracle_no_repetition(c: Composition) -> list[float]:
    """Walk back over the run. A pitch's run is the pitch's onsets with only RESTs or
    HOLDs between them; RESTs/HOLDs *between* two onsets separate the repeats."""
    tokens = c.tokens.tolist()
    out = []
    for t, a in enumerate(tokens):
        excessive = False
        if a == REST:
            rests = 0
            for i in range(t - 1, -1, -1):
                if tokens[i] == REST:
                    rests += 1
                elif tokens[i] != HOLD:
                    break
            excessive = rests >= 2
        elif a != HOLD:
            onsets = [t]
            for i in range(t - 1, -1, -1):
                if tokens[i] == a:
                    onsets.append(i)
                elif tokens[i] not in (REST, HOLD):
                    break
            first = min(onsets)
            separated = any(tokens[i] in (REST, HOLD) for i in range(first, t))
            excessive = len(onsets) > (7 if separated else 5)
        out.append(-100.0 if excessive else 0.0)
    return out


def autocorrelation(values, k: int) -> Fraction | None:
    """rho_k of a whole sequence, exactly (None when the variance is 0)."""
    n = len(values)
    x = [n * v - sum(values) for v in values]  # n * (v - mean): centred, in integers
    den = sum(xi * xi for xi in x)
    if den == 0:
        return None
    return Fraction(sum(x[i] * x[i + k] for i in range(n - k)), den)


def oracle_low_autocorrelation(c: Composition) -> list[float]:
    """Recomputed from scratch at every onset over the pitches played so far."""
    tokens = c.tokens.tolist()
    out = []
    for t in range(len(tokens)):
        if pitch_of(tokens[t]) is None:
            out.append(0.0)
            continue
        prefix = [a for a in tokens[: t + 1] if pitch_of(a) is not None]
        total = Fraction(0)
        if len(prefix) >= 8:
            for k in (1, 2, 3):
                rho = autocorrelation(prefix, k)
                if rho is not None and abs(rho) > Fraction(3, 20):
                    total += 3 * abs(rho)
        out.append(-float(total))
    return out


def _distinct_pitches(window) -> int:
    return len({a for a in window if a not in (REST, HOLD)})


def oracle_motif(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = []
    for t in range(len(tokens)):
        d = _distinct_pitches(tokens[t - 7: t + 1]) if t >= 7 else 0
        out.append(3.0 + 0.3 * (d - 3) if d >= 3 else 0.0)
    return out


def oracle_repeated_motif(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = []
    for t in range(len(tokens)):
        value = 0.0
        if t >= 7:
            window = tokens[t - 7: t + 1]
            d = _distinct_pitches(window)
            earlier = any(tokens[s: s + 8] == window for s in range(0, t - 7 - 8 + 1))
            if d >= 3 and earlier:
                value = 4.0 + 1.0 * (d - 3)
        out.append(value)
    return out


def _interval_preference(prev: int, cur: int, key: Key) -> float:
    iv = abs(cur - prev)
    triad = tonic_triad(key)
    both_triad = prev % 12 in triad and cur % 12 in triad
    tonic_dominant = {(prev - key.tonic) % 12, (cur - key.tonic) % 12} == {0, 7}
    table = {0: 0.0, 1: 0.08, 2: 0.08, 3: 0.09, 4: 0.09, 5: 0.07, 6: 0.0, 7: 0.02, 8: 0.05, 9: 0.05,
             10: -0.3, 11: -0.3, 12: 0.0}
    if iv > 12:
        return -1.0
    if iv in (3, 4) and both_triad:
        return 0.15
    if iv == 7 and tonic_dominant:
        return 0.1
    return table[iv]


def oracle_preferred_intervals(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = []
    for t, a in enumerate(tokens):
        prev = last_pitch_before(tokens, t)
        if prev is None:
            out.append(0.0)
            continue
        on_tonic_or_dominant = (prev - c.key.tonic) % 12 in (0, 7)
        if a == HOLD:
            v = 0.3 if on_tonic_or_dominant else 0.075
        elif a == REST:
            v = 0.15 if on_tonic_or_dominant else 0.05
        else:
            v = _interval_preference(prev, pitch_of(a), c.key)
        out.append(5.0 * v)
    return out


def oracle_resolve_leaps(c: Composition) -> list[float]:
    """Replays the melody's pitch-to-pitch motions with the docstring's rules."""
    tokens = c.tokens.tolist()
    out = []
    open_leap = 0  # direction of the open leap, 0 if none
    for t, a in enumerate(tokens):
        cur, prev = pitch_of(a), last_pitch_before(tokens, t)
        value = 0.0
        if cur is not None and prev is not None and cur != prev:
            up = 1 if cur > prev else -1
            leap = abs(cur - prev) >= 7
            if open_leap == 0:
                open_leap = up if leap else 0
            elif up == open_leap:
                value = -5.0 if leap else 0.0  # the leap stays open either way
            else:
                value = 0.0 if leap else 5.0  # motion back closes it; only a step back resolves
                open_leap = 0
        out.append(value)
    return out


def oracle_unique_extrema(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = [0.0] * len(tokens)
    onsets = Counter(p for a in tokens if (p := pitch_of(a)) is not None)
    if onsets:
        out[-1] = 3.0 * (onsets[max(onsets)] == 1) + 3.0 * (onsets[min(onsets)] == 1)
    return out


# ---------------------------------------------------------------------------- chord-term oracles
def strong_beat(meter: Meter, t: int) -> bool:
    """Downbeat of every bar, plus beat 3 in 4/4 (the half bar)."""
    bar = meter.steps_per_bar(SPQ)
    pos = t % bar
    return pos == 0 or (str(meter) == "4/4" and pos == bar // 2)


def oracle_chord_tone_on_strong_beat(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = []
    for t in range(len(tokens)):
        p = sounding_pitch(tokens, t)
        chord = int(c.chords[t])
        if not strong_beat(c.meter, t) or chord == NO_CHORD or p is None:
            out.append(0.0)
        else:
            out.append(1.0 if p % 12 in chord_pcs(chord) else -1.0)
    return out


def oracle_consonance(c: Composition) -> list[float]:
    out = []
    for t, a in enumerate(c.tokens.tolist()):
        p, pcs = pitch_of(a), chord_pcs(int(c.chords[t]))
        if p is None or not pcs:
            out.append(0.0)
        elif p % 12 in pcs:
            out.append(1.0)
        elif (p - 1) % 12 in pcs:  # a semitone above a chord tone
            out.append(-1.0)
        else:
            out.append(0.0)
    return out


def oracle_cadence(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = [0.0] * len(tokens)
    pitches = [p for a in tokens if (p := pitch_of(a)) is not None]
    if pitches:
        final = pitches[-1]
        rel = (final - c.key.tonic) % 12
        if rel == 0:
            out[-1] = 1.0 + (0.5 if len(pitches) > 1 and 1 <= abs(final - pitches[-2]) <= 2 else 0.0)
        elif rel in ((3 if c.key.minor else 4), 7):
            out[-1] = 0.5
    return out


def oracle_stepwise_motion(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = []
    for t, a in enumerate(tokens):
        cur, prev = pitch_of(a), last_pitch_before(tokens, t)
        v = 0.0
        if cur is not None and prev is not None:
            d = abs(cur - prev)
            v = 1.0 if d in (1, 2) else (-0.5 if d > 9 else 0.0)
        out.append(v)
    return out


def oracle_leading_tone_resolution(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    leading = (c.key.tonic - 1) % 12
    out = []
    for t, a in enumerate(tokens):
        cur, prev = pitch_of(a), last_pitch_before(tokens, t)
        v = 0.0
        if cur is not None and prev is not None and cur != prev and prev % 12 == leading:
            v = 1.0 if cur == prev + 1 else -1.0
        out.append(v)
    return out


def oracle_range(c: Composition) -> list[float]:
    return [-1.0 if (p := pitch_of(a)) is not None and not 55 <= p <= 79 else 0.0 for a in c.tokens.tolist()]


def oracle_rhythmic_variety(c: Composition) -> list[float]:
    out = [0.0] * c.n_steps
    lengths = Counter(min(n.duration, 16) for n in tokens_to_notes(c.tokens, c.grid))
    total = sum(lengths.values())
    if total:
        h = -sum(m / total * math.log2(m / total) for m in lengths.values())
        out[-1] = min(1.0, h / 1.5)
    return out


def oracle_rest_ratio(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    out = [0.0] * len(tokens)
    silent = sum(sounding_pitch(tokens, t) is None for t in range(len(tokens)))
    share = silent / len(tokens)
    out[-1] = -5.0 * max(0.0, share - 0.25) / 0.75
    return out


# ---------------------------------------------------------------------------- melody-term oracles
# Default parameters of rewards.melody; every value recomputed from the prefix.
NOTE_LENGTH_EDGES = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
DEFAULT_PROFILE = (0.07, 0.32, 0.03, 0.37, 0.04, 0.13, 0.025, 0.015)


def tied_notes(tokens) -> list[list[int]]:
    """[pitch, onset, end) of each note read tied through: a NOTE_ON of the pitch sounding
    just before it (only HOLDs between) continues that note."""
    notes: list[list[int]] = []
    for t, a in enumerate(tokens):
        p = pitch_of(a)
        if a == HOLD:
            continue
        if notes and notes[-1][2] is None:
            if p is not None and p == notes[-1][0]:
                continue  # tied: the same pitch struck again
            notes[-1][2] = t
        if p is not None:
            notes.append([p, t, None])
    if notes and notes[-1][2] is None:
        notes[-1][2] = len(tokens)
    return notes


def moves(tokens) -> list[tuple[int, int]]:
    """(step, signed interval) of each change of pitch between consecutive notes."""
    out, prev = [], None
    for t, a in enumerate(tokens):
        p = pitch_of(a)
        if p is None:
            continue
        if prev is not None and p != prev:
            out.append((t, p - prev))
        prev = p
    return out


def _telescoped(values: list[float]) -> list[float]:
    return [v - (values[t - 1] if t else 0.0) for t, v in enumerate(values)]


def oracle_in_key_time(c: Composition) -> list[float]:
    pcs, spb = key_pcs(c.key), c.meter.steps_per_beat(SPQ)
    tokens = c.tokens.tolist()
    return [-1.0 / spb if (p := sounding_pitch(tokens, t)) is not None and p % 12 not in pcs else 0.0
            for t in range(len(tokens))]


def oracle_chord_tone_time(c: Composition) -> list[float]:
    spb = c.meter.steps_per_beat(SPQ)
    tokens = c.tokens.tolist()
    out = []
    for t in range(len(tokens)):
        p, pcs = sounding_pitch(tokens, t), chord_pcs(int(c.chords[t]))
        if p is None or not pcs:
            out.append(0.0)
        elif p % 12 in pcs:
            out.append(1.0 / spb)
        elif (p - 1) % 12 in pcs:
            out.append(-1.0 / spb)
        else:
            out.append(0.0)
    return out


def oracle_stepwise_share(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    values = []
    for t in range(len(tokens)):
        m = moves(tokens[: t + 1])
        values.append(sum(abs(d) <= 2 for _, d in m) / len(m) if m else 0.0)
    return _telescoped(values)


def oracle_leap_rate(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    values = []
    for t in range(len(tokens)):
        m = moves(tokens[: t + 1])
        r = sum(abs(d) >= 7 for _, d in m) / len(m) if m else 0.0
        values.append(-max(0.0, r - 0.1) / 0.9)
    return _telescoped(values)


def oracle_repeat_rate(c: Composition) -> list[float]:
    tokens = c.tokens.tolist()
    values = []
    for t in range(len(tokens)):
        struck = [pitch_of(a) for a in tokens[: t + 1] if pitch_of(a) is not None]
        pairs = list(zip(struck, struck[1:]))
        r = sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0
        values.append(-max(0.0, r - 0.25) / 0.75)
    return _telescoped(values)


def oracle_leap_resolution(c: Composition) -> list[float]:
    out = [0.0] * c.n_steps
    m = moves(c.tokens.tolist())
    for (_, d), (t, e) in zip(m, m[1:]):
        if abs(d) >= 7 and not (abs(e) <= 2 and (e > 0) != (d > 0)):
            out[t] = -1.0
    return out


def oracle_bar_motif(c: Composition) -> list[float]:
    n, bar = c.n_steps, c.steps_per_bar
    notes = tied_notes(c.tokens.tolist())
    out = [0.0] * n
    for t in range(n):
        if (t + 1) % bar and t != n - 1:
            continue
        start = t - t % bar
        inside = [p for p, o, _ in notes if start <= o <= t]
        out[t] = 1.0 if len(set(inside)) >= 3 and len(inside) <= 8 else 0.0
    return out


def _length_bin(steps: int) -> int:
    return max(i for i, e in enumerate(NOTE_LENGTH_EDGES) if steps / SPQ >= e)


def oracle_note_length_profile(c: Composition) -> list[float]:
    n = c.n_steps
    notes = tied_notes(c.tokens.tolist())
    values = []
    for t in range(n):
        done = [e - o for _, o, e in notes if e <= t or t == n - 1]
        if not done:
            values.append(0.0)
            continue
        h = [0] * len(NOTE_LENGTH_EDGES)
        for d in done:
            h[_length_bin(d)] += 1
        values.append(-0.5 * sum(abs(x / len(done) - q) for x, q in zip(h, DEFAULT_PROFILE)))
    return _telescoped(values)


def oracle_phrase_endings(c: Composition) -> list[float]:
    n, phrase = c.n_steps, 2 * c.steps_per_bar
    notes = tied_notes(c.tokens.tolist())
    out = [0.0] * n
    for t in range(n):
        final = t == n - 1
        if (t + 1) % phrase and not final:
            continue
        start = t - t % phrase
        inside = [x for x in notes if start <= x[1] <= t]
        if not inside:
            continue
        p, o, e = inside[-1]
        r = 1.0 if strong_beat(c.meter, o) and min(e, t + 1) - o >= SPQ else 0.0
        if final:
            r += 1.0 if p % 12 == c.key.tonic else 0.0
        out[t] = r
    return out


def oracle_period_form(c: Composition) -> list[float]:
    n, bar = c.n_steps, c.steps_per_bar
    out = [0.0] * n
    if n % bar or n // bar < 4 or (n // bar) % 2:
        return out
    half = n // bar // 2
    notes = tied_notes(c.tokens.tolist())

    def rel(p):
        return (p - c.key.tonic) % 12

    before = [x for x in notes if x[1] <= half * bar - 1]
    if before and rel(before[-1][0]) in (7, 11, 2):
        out[half * bar - 1] += 1.0
    first = {o: p for p, o, _ in notes if o < bar}
    back = {o - half * bar: p for p, o, _ in notes if half * bar <= o < (half + 1) * bar}
    common = sorted(set(first) & set(back))
    if first or back:
        matched = 0
        if common:
            o0 = common[0]
            matched = sum(first[o] - first[o0] == back[o] - back[o0] for o in common)
        out[(half + 1) * bar - 1] += matched / max(len(first), len(back))
    if len(notes) >= 2 and rel(notes[-1][0]) == 0 and rel(notes[-2][0]) in (2, 11, 10, 7):
        out[n - 1] += 1.0
    return out


ORACLES = {
    "in_key": oracle_in_key,
    "tonic": oracle_tonic,
    "no_repetition": oracle_no_repetition,
    "low_autocorrelation": oracle_low_autocorrelation,
    "motif": oracle_motif,
    "repeated_motif": oracle_repeated_motif,
    "preferred_intervals": oracle_preferred_intervals,
    "resolve_leaps": oracle_resolve_leaps,
    "unique_extrema": oracle_unique_extrema,
    "chord_tone_on_strong_beat": oracle_chord_tone_on_strong_beat,
    "consonance": oracle_consonance,
    "cadence": oracle_cadence,
    "stepwise_motion": oracle_stepwise_motion,
    "leading_tone_resolution": oracle_leading_tone_resolution,
    "range": oracle_range,
    "rhythmic_variety": oracle_rhythmic_variety,
    "rest_ratio": oracle_rest_ratio,
    "in_key_time": oracle_in_key_time,
    "chord_tone_time": oracle_chord_tone_time,
    "stepwise_share": oracle_stepwise_share,
    "leap_rate": oracle_leap_rate,
    "repeat_rate": oracle_repeat_rate,
    "leap_resolution": oracle_leap_resolution,
    "bar_motif": oracle_bar_motif,
    "note_length_profile": oracle_note_length_profile,
    "phrase_endings": oracle_phrase_endings,
    "period_form": oracle_period_form,
    **{name: (lambda c: [0.0] * c.n_steps) for name in GIVEN_VOICE_TERMS},
}


# ---------------------------------------------------------------------------- a user-written term
class OnsetsAbove(RewardTerm):
    """A plain-Python term: -``penalty`` for each NOTE_ON above ``ceiling`` (MIDI), and at
    the last step ``per_onset`` times the number of onsets in the episode (needs state)."""

    PARAMS = {"ceiling": 72, "penalty": 1.0, "per_onset": 0.5}

    def bind(self, batch) -> None:
        self.onsets = np.zeros(batch.batch_size, dtype=np.int64)

    def reset(self, batch, mask) -> None:
        self.onsets[mask] = 0

    def step(self, batch, actions, active) -> np.ndarray:
        pitch = batch.pitch_of[actions]
        self.onsets += (pitch >= 0) & active
        out = np.where(pitch > self.params["ceiling"], -float(self.params["penalty"]), 0.0)
        last = batch.t == batch.n_steps - 1
        return out + np.where(last, self.params["per_onset"] * self.onsets, 0.0)


# ---------------------------------------------------------------------------- hypothesis strategies
METERS = ("4/4", "3/4", "6/8")


@st.composite
def token_lines(draw, min_size: int = 1, max_size: int = 80) -> list[int]:
    """Token sequences that exercise the rules: a small palette (so pitches repeat and
    motifs occur) with RESTs and HOLDs, plus a few edits: a copied segment (repeated
    motifs), a run of one pitch (repetition), a lone pitch from anywhere (extrema)."""
    pitches = draw(st.lists(st.integers(2, DEFAULT_GRID.vocab_size - 1), min_size=1, max_size=8, unique=True))
    palette = [REST, HOLD, *pitches]
    n = draw(st.integers(min_size, max_size) | st.integers(max(min_size, min(24, max_size)), max_size))
    line = draw(st.lists(st.sampled_from(palette), min_size=n, max_size=n))
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["copy", "run", "outlier"]))
        if edit == "copy" and n >= 16:
            seg = draw(st.integers(4, min(16, n // 2)))
            start = draw(st.integers(0, n - 2 * seg))
            dest = draw(st.integers(start + seg, n - seg))
            line[dest: dest + seg] = line[start: start + seg]
        elif edit == "run":
            length = min(n, draw(st.integers(3, 10)))
            start = draw(st.integers(0, n - length))
            note = draw(st.sampled_from(pitches))
            gap = draw(st.sampled_from([None, REST, HOLD]))
            line[start: start + length] = [gap if gap is not None and i % 2 else note for i in range(length)]
        elif edit == "outlier":
            line[draw(st.integers(0, n - 1))] = draw(st.integers(2, DEFAULT_GRID.vocab_size - 1))
    return line


@st.composite
def compositions(draw, min_size: int = 1, max_size: int = 80) -> Composition:
    """Random compositions: random tokens, key (24), meter and a chord track that
    changes at random steps (N.C. included)."""
    tokens = draw(token_lines(min_size, max_size))
    n = len(tokens)
    key = draw(st.integers(0, 23))
    meter = draw(st.sampled_from(METERS))
    codes = draw(st.lists(st.integers(0, N_CHORDS), min_size=1, max_size=6))  # N_CHORDS = N.C.
    seg = draw(st.integers(1, 16))
    chords = np.array([codes[(t // seg) % len(codes)] for t in range(n)], dtype=np.int64)
    return Composition(np.array(tokens, dtype=np.int64), key=key, meter=meter, chords=chords)
