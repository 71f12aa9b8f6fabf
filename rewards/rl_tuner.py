"""The RL Tuner's music-theory rules (Jaques et al. 2017), generalised to any key.

Each rule is a numba function scoring one composition at one step (the
signature every built-in kernel shares, see :mod:`rewards.kernels`) plus a term
class whose docstring is the rule's manual. Defaults reproduce the paper's
values; where the paper's reference code has a defect (see RL_TUNER.md §6 in the
project's shared notes) the docstring says what we do instead.

Kernel signature::

    fn(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist) -> float

``a`` the token placed at step ``t``; ``tokens``/``chords`` the composition's rows;
``voice`` its given second voice (MIDI pitch per step, -1 where none; see
:class:`musicenv.core.CompositionBatch`);
``core`` its running facts (``musicenv.core.C_*``); ``consts`` batch constants
(``K_*``); ``p`` the term's parameters in ``PARAMS`` order; ``fs``/``ist`` its
float/int state rows, which the function updates as it absorbs ``a``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from musicenv.core import (
    C_LAST_PITCH,
    C_WINDOW,
    K_N_STEPS,
    K_STEPS_PER_BEAT,
    MOTIF_WINDOW,
)
from musicenv.encoding import HOLD, REST
from musicenv.theory import KEY_IS_MINOR, KEY_SCALE_MASK, KEY_TONIC
from rewards.base import KernelTerm, RewardSpecError
from rewards.registry import register

_SCALE = np.ascontiguousarray(KEY_SCALE_MASK)
_TONIC = np.ascontiguousarray(KEY_TONIC)
_MINOR = np.ascontiguousarray(KEY_IS_MINOR)


# ---------------------------------------------------------------------------- in_key
@njit(cache=True)
def in_key_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    if pitch >= 0 and not _SCALE[key, pitch % 12]:
        return -p[0]
    return 0.0


@register("in_key")
class InKey(KernelTerm):
    """Penalise notes outside the episode's key.

    -``penalty`` (default 1) for each NOTE_ON whose pitch class is not in the key;
    REST and HOLD are always in key. Major keys use the major scale; minor keys the
    natural minor scale plus the raised 6th and 7th (melodic/harmonic minor).
    Range [-penalty, 0] per step. Source: Jaques et al. 2017 (RL Tuner), "stay in key",
    generalised from C major to all 24 keys.
    """

    kernel = "in_key"
    PARAMS = {"penalty": 1.0}


# ---------------------------------------------------------------------------- tonic
@njit(cache=True)
def tonic_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    n = consts[K_N_STEPS]
    beat = consts[K_STEPS_PER_BEAT]
    pitch = pitch_of[a]
    is_tonic = pitch >= 0 and pitch % 12 == _TONIC[key]
    last_beat = n - beat
    if t == 0 or t == last_beat:
        return p[0] if is_tonic else 0.0
    if 0 <= last_beat < t:
        closing = pitch_of[tokens[last_beat]]
        if closing < 0 or closing % 12 != _TONIC[key]:
            return 0.0  # the final beat did not start on the tonic: nothing to hold
        if t == last_beat + 1:
            return p[0] if a == HOLD else 0.0
        return p[0] if a == HOLD or a == REST else 0.0
    return 0.0


@register("tonic")
class Tonic(KernelTerm):
    """Reward starting on the tonic and ending on a held tonic.

    +``bonus`` (default 3) each: the first step plays the tonic; the first step of
    the final beat plays the tonic; if it does, the step after it is HOLD and the
    remaining steps of the final beat are HOLD or REST. Range [0, bonus] per step, at most
    ``bonus * (steps_per_beat + 1)`` per episode (15 with 16th notes, as in the paper).
    Source: Jaques et al. 2017, "begin and end on the tonic". Differences from the
    reference code: any octave of the tonic counts (the code only knew middle C), and
    the "final bar" is the meter's final beat at any resolution (the code's last 4 steps),
    and the holds of the final beat only count when they hold a final tonic (the code paid
    them for holding anything, even a rest).
    """

    kernel = "tonic"
    PARAMS = {"bonus": 3.0}


# ---------------------------------------------------------------------------- no_repetition
# fs: [run pitch, onsets of it in the current run, a REST/HOLD came after the run's first
#      onset, RESTs in the trailing REST/HOLD run]
@njit(cache=True)
def no_repetition_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    excessive = False
    if a == REST:
        excessive = fs[3] >= p[3]
        fs[3] += 1.0
        fs[2] = 1.0
    elif a == HOLD:
        fs[2] = 1.0
    else:
        if a == fs[0]:
            limit = p[2] if fs[2] > 0 else p[1]
            excessive = fs[1] >= limit
            fs[1] += 1.0
        else:
            # RESTs/HOLDs before the run's first onset do not separate its repeats
            fs[0] = a
            fs[1] = 1.0
            fs[2] = 0.0
        fs[3] = 0.0
    return -p[0] if excessive else 0.0


@register("no_repetition")
class NoRepetition(KernelTerm):
    """Penalise a note repeated too many times in a row, and long runs of rests.

    -``penalty`` (default 100) when the token would be: the (``max_repeats`` + 1)-th
    onset (default the 6th) of one pitch with nothing but that pitch in between; the
    (``max_repeats_separated`` + 1)-th (default 8th) when RESTs or HOLDs separate the
    repeats; the (``max_rests`` + 1)-th (default 3rd) REST in a row (HOLDs between them
    allowed). Range [-penalty, 0] per step.
    Source: Jaques et al. 2017, "a single tone should not be repeated more than four
    times unless a rest is introduced or a note is held". Differences from the reference
    code: a HOLD is never penalised (the code counted HOLDs as repeated tokens, capping
    every note at 6 sixteenths, contrary to the paper's own words); its unreachable third
    threshold is dropped; RESTs or HOLDs before the first onset of a run do not count as
    separating its repeats (the code's walk-back counted them, so one rest before a run
    let a pitch sound 7 times in a row). The walk-back is computed incrementally (O(1)).
    """

    kernel = "no_repetition"
    PARAMS = {"penalty": 100.0, "max_repeats": 5, "max_repeats_separated": 7, "max_rests": 2}
    FSTATE_INIT = (-1.0, 0.0, 0.0, 0.0)

    def validate(self) -> None:
        for k in ("max_repeats", "max_repeats_separated", "max_rests"):
            if self.params[k] < 1:
                raise RewardSpecError(f"no_repetition: {k} must be >= 1, got {self.params[k]}")


# ---------------------------------------------------------------------------- low_autocorrelation
# ist: [S, Q, P1, P2, P3, n, last1, last2, last3, first0, first1, first2] over the pitches
# of the onsets so far (last1 = the latest)
@njit(cache=True)
def low_autocorrelation_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    v = pitch_of[a]
    if v < 0:
        return 0.0
    n_prev = ist[5]
    for k in range(1, 4):
        if n_prev >= k:
            ist[1 + k] += ist[5 + k] * v
    ist[8] = ist[7]
    ist[7] = ist[6]
    ist[6] = v
    if n_prev < 3:
        ist[9 + n_prev] = v
    n = n_prev + 1
    ist[5] = n
    S = ist[0] + v
    Q = ist[1] + v * v
    ist[0] = S
    ist[1] = Q
    if n < p[3]:
        return 0.0
    B = n * n * Q - n * S * S
    if B == 0:  # constant line: the coefficient is undefined; no penalty
        return 0.0
    total = 0.0
    for k in range(1, 4):
        if n <= k:
            break
        first = 0
        last = 0
        for i in range(k):
            first += ist[9 + i]
            last += ist[6 + i]
        A = n * n * ist[1 + k] - n * S * ((S - last) + (S - first)) + (n - k) * S * S
        # |rho| > threshold, decided exactly in integers: |A| * den > num * B
        if abs(A) * p[2] > p[1] * B:
            total += p[0] * abs(A) / B
    return -total


@register("low_autocorrelation")
class LowAutocorrelation(KernelTerm):
    """Penalise strong autocorrelation of the melody's pitches at lags 1, 2 and 3.

    At each new note, the autocorrelation coefficient rho_k of the sequence of pitches
    played so far (one value per onset) is computed for k = 1, 2, 3; each |rho_k| above
    ``threshold_num / threshold_den`` (default 3/20 = 0.15) costs ``scale * |rho_k|``
    (scale 3). HOLD and REST score 0. Range [-3 * scale, 0] per step.
    Source: Jaques et al. 2017, "penalise autocorrelation" (repetitive patterns).
    Differences from the reference code, which correlated raw token values at every
    step: the signal is the pitch of each onset, so held notes and rests are not read as
    very low pitches (with token values every long note made the line look periodic and
    was penalised); the threshold is decided exactly in integers (the code's float
    rounding decided ties); a constant line, whose coefficient is 0/0, is not penalised
    (the code divided by zero); the penalty starts at the ``min_length``-th note (default
    8), so the first pair of notes is not punished for being a pair (the code charged -1.5
    for any two different notes). Incremental, O(1) per step.
    """

    kernel = "low_autocorrelation"
    PARAMS = {"scale": 3.0, "threshold_num": 3, "threshold_den": 20, "min_length": 8}

    def istate_size(self, n_steps: int) -> int:
        return 12

    def validate(self) -> None:
        if self.params["threshold_den"] <= 0 or self.params["threshold_num"] < 0:
            raise RewardSpecError("low_autocorrelation: need threshold_num >= 0 and threshold_den > 0")
        for k in ("threshold_num", "threshold_den", "min_length"):
            if float(self.params[k]) != int(self.params[k]):
                raise RewardSpecError(f"low_autocorrelation: {k} must be a whole number, got {self.params[k]}")


# ---------------------------------------------------------------------------- motifs
@njit(cache=True)
def _window_distinct_pitches(window, pitch_of):  # pragma: no cover
    """Number of distinct NOTE_ON tokens among the 8 tokens packed in ``window``."""
    count = 0
    for i in range(MOTIF_WINDOW):
        tok = (window >> (8 * i)) & 0xFF
        if pitch_of[tok] < 0:
            continue
        new = True
        for j in range(i):
            if ((window >> (8 * j)) & 0xFF) == tok:
                new = False
                break
        if new:
            count += 1
    return count


@njit(cache=True)
def _slot(window, cap):  # pragma: no cover
    """Home slot of a packed window in a hash table of ``cap`` (a power of 2) slots."""
    x = window ^ (window >> 29)
    x = x * -7046029254386353131
    x = x ^ (x >> 32)
    return x & (cap - 1)


@njit(cache=True)
def motif_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if t < MOTIF_WINDOW - 1:
        return 0.0
    window = (core[C_WINDOW] << 8) | a
    d = _window_distinct_pitches(window, pitch_of)
    if d >= p[2]:
        return p[0] + p[1] * (d - p[2])
    return 0.0


@register("motif")
class Motif(KernelTerm):
    """Reward a window of 8 steps that holds a motif.

    The last 8 tokens (the placed one included; half a 4/4 bar of 16ths, the paper's
    "bar") form a motif when they contain at least ``min_pitches`` (default 3) distinct
    pitches. Reward ``bonus + per_extra * (d - min_pitches)`` for d distinct pitches
    (defaults 3 and 0.3: 3.0..4.5 at 16th notes). Range [0, bonus + 5 * per_extra].
    Source: Jaques et al. 2017, "reward motifs".
    """

    kernel = "motif"
    PARAMS = {"bonus": 3.0, "per_extra": 0.3, "min_pitches": 3}


@njit(cache=True)
def repeated_motif_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    # ist is an open-addressing hash set of the packed 8-token windows that lie wholly
    # before the current window; -1 marks an empty slot (no packed window equals -1
    # because every token is < 256 and the top byte of a window is a token < 255).
    cap = ist.shape[0]
    if t >= 2 * MOTIF_WINDOW - 1:
        old = 0
        for i in range(t - 2 * MOTIF_WINDOW + 1, t - MOTIF_WINDOW + 1):
            old = (old << 8) | tokens[i]
        h = _slot(old, cap)
        while ist[h] != -1 and ist[h] != old:
            h = (h + 1) & (cap - 1)
        ist[h] = old
    if t < 2 * MOTIF_WINDOW - 1:
        return 0.0
    window = (core[C_WINDOW] << 8) | a
    d = _window_distinct_pitches(window, pitch_of)
    if d < p[2]:
        return 0.0
    h = _slot(window, cap)
    while ist[h] != -1:
        if ist[h] == window:
            return p[0] + p[1] * (d - p[2])
        h = (h + 1) & (cap - 1)
    return 0.0


@register("repeated_motif")
class RepeatedMotif(KernelTerm):
    """Reward a motif that repeats an earlier one exactly.

    When the last 8 tokens form a motif (>= ``min_pitches`` distinct pitches) and the
    same 8 tokens (REST and HOLD included) occur earlier wholly before this window (no
    overlap), reward ``bonus + per_extra * (d - min_pitches)`` (defaults 4 and 1: 4..9).
    First possible at step 15. Range [0, bonus + 5 * per_extra].
    Source: Jaques et al. 2017, "reward repeated motifs". Incremental: earlier windows
    are kept in a hash set, O(1) per step at any episode length.
    """

    kernel = "repeated_motif"
    PARAMS = {"bonus": 4.0, "per_extra": 1.0, "min_pitches": 3}
    ISTATE_FILL = -1

    def istate_size(self, n_steps: int) -> int:
        cap = 16
        while cap < 2 * n_steps:
            cap *= 2
        return cap


# ---------------------------------------------------------------------------- preferred_intervals
@njit(cache=True)
def _tonic_triad_member(pitch, key):  # pragma: no cover
    rel = (pitch - _TONIC[key]) % 12
    third = 3 if _MINOR[key] else 4
    return rel == 0 or rel == third or rel == 7


@njit(cache=True)
def _interval_value(prev, pitch, key):  # pragma: no cover
    """Base preference (before scaling) of the melodic interval prev -> pitch."""
    iv = abs(pitch - prev)
    both_triad = _tonic_triad_member(prev, key) and _tonic_triad_member(pitch, key)
    if iv > 12:
        return -1.0
    if iv == 0 or iv == 6 or iv == 12:
        return 0.0
    if iv <= 2:
        return 0.08
    if iv <= 4:
        return 0.15 if both_triad else 0.09
    if iv == 5:
        return 0.07
    if iv == 7:
        return 0.1 if both_triad else 0.02
    if iv <= 9:
        return 0.05
    return -0.3  # sevenths


@njit(cache=True)
def preferred_intervals_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    prev = core[C_LAST_PITCH]
    if prev < 0:
        return 0.0
    rel = (prev - _TONIC[key]) % 12
    on_tonic_or_dominant = rel == 0 or rel == 7
    if a == HOLD:
        return p[0] * (0.3 if on_tonic_or_dominant else 0.075)
    if a == REST:
        return p[0] * (0.15 if on_tonic_or_dominant else 0.05)
    return p[0] * _interval_value(prev, pitch_of[a], key)


@register("preferred_intervals")
class PreferredIntervals(KernelTerm):
    """Prefer small, consonant melodic intervals; penalise sevenths and leaps over an octave.

    Scores the interval from the previous pitch (rests and holds skipped; nothing before
    the first pitch) to the placed token, times ``scale`` (default 5):
    seconds (1-2 semitones) 0.08; thirds (3-4) 0.09, or 0.15 between two tones of the
    tonic triad; fourth 0.07; fifth 0.02, or 0.1 between tonic and dominant; sixths (8-9)
    0.05; unison, tritone and octave 0; sevenths (10-11) -0.3; more than an octave -1.
    HOLD after the tonic or dominant 0.3, after another pitch 0.075; REST after the tonic
    or dominant 0.15, otherwise 0.05. Direction is ignored. Range [-scale, 0.3 * scale].
    Source: Jaques et al. 2017, "preferred intervals". Differences from the reference code
    (which knew only major/perfect sizes): minor seconds, minor thirds and minor sixths
    score like their major sizes and the minor seventh like the major one; the code's
    "in-key third/fifth" (written for C major as "4 semitones from C or E") is made
    key-general as an interval between two tones of the tonic triad.
    """

    kernel = "preferred_intervals"
    PARAMS = {"scale": 5.0}


# ---------------------------------------------------------------------------- resolve_leaps
# fs: [open leap direction (+1 up, -1 down, 0 none)]
@njit(cache=True)
def resolve_leaps_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    prev = core[C_LAST_PITCH]
    if pitch < 0 or prev < 0 or pitch == prev:
        return 0.0
    direction = 1.0 if pitch > prev else -1.0
    is_leap = abs(pitch - prev) >= p[1]
    if fs[0] == 0.0:
        if is_leap:
            fs[0] = direction
        return 0.0
    if direction == fs[0]:
        return -p[0] if is_leap else 0.0
    fs[0] = 0.0
    return 0.0 if is_leap else p[0]


@register("resolve_leaps")
class ResolveLeaps(KernelTerm):
    """Reward moving back after a large leap; penalise a further leap onward.

    A leap is an interval of ``leap`` semitones or more (default 7, a fifth) between
    consecutive pitches (rests and holds in between are skipped). After a leap, the next
    motion in the opposite direction by less than a leap resolves it: +``bonus``
    (default 5). A further leap in the same direction while it is open costs -bonus; steps
    onward in the same direction or repeated notes leave it open. Leaping straight back
    closes it with 0. Range [-bonus, bonus] per step.
    Source: Jaques et al. 2017, "resolve large leaps by moving back in the opposite
    direction". Difference from the reference code, which only counted a return to or
    past the note the leap left from (and only after 7 steps for a leap back): we follow
    the paper's wording, so an octave leap up followed by a step down is resolved.
    """

    kernel = "resolve_leaps"
    PARAMS = {"bonus": 5.0, "leap": 7}
    FSTATE_INIT = (0.0,)

    def validate(self) -> None:
        if self.params["leap"] < 1:
            raise RewardSpecError(f"resolve_leaps: leap must be >= 1 semitone, got {self.params['leap']}")


# ---------------------------------------------------------------------------- unique_extrema
# fs: [highest pitch, its onsets, lowest pitch, its onsets]
@njit(cache=True)
def unique_extrema_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    if pitch >= 0:
        if pitch > fs[0]:
            fs[0] = pitch
            fs[1] = 1.0
        elif pitch == fs[0]:
            fs[1] += 1.0
        if fs[2] < 0 or pitch < fs[2]:
            fs[2] = pitch
            fs[3] = 1.0
        elif pitch == fs[2]:
            fs[3] += 1.0
    if t != consts[K_N_STEPS] - 1 or fs[0] < 0:
        return 0.0
    r = 0.0
    if fs[1] == 1.0:
        r += p[0]
    if fs[3] == 1.0:
        r += p[0]
    return r


@register("unique_extrema")
class UniqueExtrema(KernelTerm):
    """Reward a single climax and a single lowest note.

    At the last step only: +``bonus`` (default 3) if the highest pitch of the melody is
    played (as an onset) exactly once, +bonus if the lowest pitch is. A melody with no
    pitch scores 0. Range [0, 2 * bonus] per episode.
    Source: Jaques et al. 2017, "unique highest and lowest note". Difference from the
    reference code: the maximum is taken over pitches only (the code included REST and
    HOLD tokens, so a pitchless episode with one HOLD earned +3).
    """

    kernel = "unique_extrema"
    PARAMS = {"bonus": 3.0}
    FSTATE_INIT = (-1.0, 0.0, -1.0, 0.0)
