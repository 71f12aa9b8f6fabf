"""Melody terms that cannot be farmed: time-weighted harmony, interval rates, rhythm,
phrase and form.

The RL Tuner's rules (:mod:`rewards.rl_tuner`) and the older chord terms
(:mod:`rewards.harmony`) pay *per note*: a line that strikes a new note on every 16th
earns more of them than a real melody does, whatever it sounds like. The terms here
are the building blocks of the default ``theory`` preset and are designed so that
neither density nor holding pays by itself:

* **Per beat** (time-weighted): what *sounds* at each step, weighted 1/steps-per-beat,
  so a beat of sound earns the same whether it is one quarter or four 16ths.
* **Rates**: a share over the melody's *moves* (changes of pitch between consecutive
  notes, rests skipped), paid as the change of ``scale * f(share)`` at each step, so
  the whole episode sums to ``scale * f(final share)`` — the value of the finished
  melody, whatever its number of notes. Early moves change the share most; the sum
  does not depend on the order of payment.
* **Per bar / per phrase / per piece** values.

Several terms read the melody *tied through*: a NOTE_ON of the pitch already sounding
(only HOLDs between) continues that note instead of starting a new one, as a tie would.
So splitting a note into repeated 16ths changes none of them; the repetition itself is
judged by ``no_repetition``. Hence, in the ``theory`` preset, splitting a note into
repeated notes never raises the score (a hypothesis test checks it).

Kernel functions share the signature documented in :mod:`rewards.rl_tuner`; each term
is O(1) per step (``period_form`` compares two bars once, at the return bar's end).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from musicenv.core import (
    C_LAST_EVENT,
    C_LAST_PITCH,
    K_N_STEPS,
    K_STEPS_PER_BAR,
    K_STEPS_PER_BEAT,
    K_STEPS_PER_QUARTER,
    LEVEL_STRONG,
)
from musicenv.encoding import FIRST_PITCH_TOKEN, REST
from musicenv.theory import CHORD_PC_MASK, KEY_IS_MINOR, KEY_SCALE_MASK, KEY_TONIC, NO_CHORD
from rewards.base import KernelTerm, RewardSpecError
from rewards.harmony import _sounding_pitch
from rewards.registry import register

__all__ = ["MELODY_TERMS", "NOTE_LENGTH_BINS", "DEFAULT_NOTE_LENGTH_PROFILE", "note_length_bin"]

_SCALE = np.ascontiguousarray(KEY_SCALE_MASK)
_CHORD_PC = np.ascontiguousarray(CHORD_PC_MASK)
_TONIC = np.ascontiguousarray(KEY_TONIC)
_MINOR = np.ascontiguousarray(KEY_IS_MINOR)

#: The terms of this module, in catalogue order.
MELODY_TERMS: tuple[str, ...] = ("in_key_time", "chord_tone_time", "stepwise_share", "leap_rate",
                                 "repeat_rate", "leap_resolution", "bar_motif", "note_length_profile", "phrase_endings",
                                 "period_form")

#: Lower edges of the note-length bins, in quarter notes: 16th (and shorter), 8th,
#: dotted 8th, quarter, dotted quarter, half, dotted half, whole (and longer). A length
#: falls in the last bin whose edge it reaches (a quarter tied to a 16th is a quarter).
NOTE_LENGTH_BINS: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
_BIN_EDGES = np.array(NOTE_LENGTH_BINS, dtype=np.float64)

#: Share of tied-through note lengths per bin in the prior's training collections,
#: equal parts Bach chorale sopranos, Essen and O'Neill's (each collection's own
#: histogram of whole pieces, then averaged; Bach 344 chorales: 16th 1 %, 8th 18 %,
#: quarter 55 %, half 18 %; Essen, first 400 songs: 4, 30, 38, 16 %; O'Neill's, first
#: 400 tunes: 16, 48, 20, 4 %), from ``musicenv.corpus.load("bach")``,
#: ``load("essen", limit=400)`` and ``load("oneills", limit=400)``, rounded.
DEFAULT_NOTE_LENGTH_PROFILE: tuple[float, ...] = (0.07, 0.32, 0.03, 0.37, 0.04, 0.13, 0.025, 0.015)


def note_length_bin(length_steps: int, steps_per_quarter: int) -> int:
    """Bin index (see :data:`NOTE_LENGTH_BINS`) of a note ``length_steps`` grid steps long."""
    q = length_steps / steps_per_quarter
    return int(np.searchsorted(_BIN_EDGES, q, side="right") - 1)


#: The bin edges in quarters x 4: integers, so that a length
#: of ``length`` steps reaches edge i exactly when ``4 * length >= _EDGES4[i] * spq``.
_EDGES4 = np.array([int(4 * e) for e in NOTE_LENGTH_BINS], dtype=np.int64)
assert np.array_equal(_EDGES4 / 4, _BIN_EDGES)


@njit(cache=True)
def _length_bin(length, spq):  # pragma: no cover
    """:func:`note_length_bin` in the kernels: integer comparisons, from the longest bin
    down (the same bin as comparing ``length / spq`` with the edges)."""
    q4 = 4 * length
    for i in range(_EDGES4.shape[0] - 1, 0, -1):
        if q4 >= _EDGES4[i] * spq:
            return i
    return 0


@njit(cache=True)
def _is_tied(a, core):  # pragma: no cover
    """True if NOTE_ON ``a`` re-strikes the pitch that is sounding (only HOLDs since it),
    which the tied-through reading treats as a continuation of that note."""
    return a >= FIRST_PITCH_TOKEN and a == core[C_LAST_EVENT]


@njit(cache=True)
def _is_move(a, core, pitch_of):  # pragma: no cover
    """The NOTE_ON ``a`` changes pitch from the previous note (rests skipped)."""
    pitch = pitch_of[a]
    prev = core[C_LAST_PITCH]
    return pitch >= 0 and prev >= 0 and pitch != prev


# ---------------------------------------------------------------------------- in_key_time
@njit(cache=True)
def in_key_time_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = _sounding_pitch(a, core, pitch_of)
    if pitch >= 0 and not _SCALE[key, pitch % 12]:
        return -p[0] / consts[K_STEPS_PER_BEAT]
    return 0.0


@register("in_key_time")
class InKeyTime(KernelTerm):
    """Penalise time spent on notes outside the key, per beat.

    Each step on which a pitch outside the key sounds (struck or held) scores
    -``penalty`` / steps-per-beat (default penalty 1), so a beat of out-of-key sound
    costs ``penalty`` however many notes fill it: a chromatic 16th passing note costs a
    quarter of a held one. Rests score 0. The key's scale is as in ``in_key`` (minor
    keys with the raised 6th and 7th). Range [-penalty / steps_per_beat, 0] per step,
    [-penalty * beats, 0] per episode.
    Source: Jaques et al. 2017, "stay in key", weighted by duration instead of per note
    so that it cannot be lowered by striking fewer, longer notes or diluted by more.
    """

    kernel = "in_key_time"
    PARAMS = {"penalty": 1.0}


# ---------------------------------------------------------------------------- chord_tone_time
@njit(cache=True)
def chord_tone_time_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    chord = chords[t]
    pitch = _sounding_pitch(a, core, pitch_of)
    if pitch < 0 or chord == NO_CHORD:
        return 0.0
    pc = pitch % 12
    if _CHORD_PC[chord, pc]:
        return p[0] / consts[K_STEPS_PER_BEAT]
    if _CHORD_PC[chord, (pc + 11) % 12]:
        return -p[1] / consts[K_STEPS_PER_BEAT]
    return 0.0


@register("chord_tone_time")
class ChordToneTime(KernelTerm):
    """Reward time spent on tones of the chord underneath, per beat.

    Each step on which a pitch sounds (struck or held into the step) scores
    +``bonus`` / steps-per-beat (default 1) if it is a tone of the chord at that step,
    -``penalty`` / steps-per-beat (default 1) if it lies a semitone above a chord tone
    (the "avoid notes" of ``consonance``), 0 for other tones, rests and N.C. A beat
    sounding a chord tone is worth ``bonus`` whether it holds one note or four, and a
    note held across a chord change is judged against the new chord.
    Range [-penalty, bonus] / steps_per_beat per step, [-penalty, bonus] * beats per
    episode. Source: ``consonance`` (common-practice and jazz harmony) weighted by time
    instead of per note, so that more notes do not earn more.
    """

    kernel = "chord_tone_time"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- stepwise_share
# fs: [steps, moves, share so far]
@njit(cache=True)
def stepwise_share_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if not _is_move(a, core, pitch_of):
        return 0.0
    before = fs[2]
    fs[1] += 1.0
    if abs(pitch_of[a] - core[C_LAST_PITCH]) <= 2:
        fs[0] += 1.0
    fs[2] = fs[0] / fs[1]
    return p[0] * (fs[2] - before)


@register("stepwise_share")
class StepwiseShare(KernelTerm):
    """Reward a melody that moves mostly by step: ``scale`` x the share of steps among its moves.

    A move is a change of pitch from one note to the next (rests skipped; repeated notes
    are not moves); a step moves 1 or 2 semitones. The episode's sum is ``scale`` (default
    1) times steps / moves of the finished melody, paid as the change of that value at
    each move (0 while there is no move). Writing more notes does not raise it; a melody
    without moves earns 0. Range [-scale, scale] per step, [0, scale] per episode.
    Source: melodies move mostly by step (about 70 % of the moves of Bach's chorale
    sopranos; Huron, *Sweet Anticipation*, ch. 5); ``stepwise_motion`` as a rate.
    """

    kernel = "stepwise_share"
    PARAMS = {"scale": 1.0}
    FSTATE_INIT = (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------- leap_rate
# fs: [leaps, moves, value paid so far]
@njit(cache=True)
def _excess_share(hits, total, scale, allowed):  # pragma: no cover
    """-scale * max(0, hits / total - allowed) / (1 - allowed); 0 without a total."""
    if total == 0:
        return 0.0
    excess = hits / total - allowed
    return -scale * excess / (1.0 - allowed) if excess > 0 else 0.0


@njit(cache=True)
def leap_rate_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if not _is_move(a, core, pitch_of):
        return 0.0
    before = fs[2]
    fs[1] += 1.0
    if abs(pitch_of[a] - core[C_LAST_PITCH]) >= p[1]:
        fs[0] += 1.0
    fs[2] = _excess_share(fs[0], fs[1], p[0], p[2])
    return fs[2] - before


@register("leap_rate")
class LeapRate(KernelTerm):
    """Penalise a melody whose moves are too often leaps.

    With r = leaps / moves (a leap moves ``leap`` semitones or more, default 7, a fifth;
    moves as in ``stepwise_share``), the episode's sum is ``-scale * max(0, r - allowed)
    / (1 - allowed)`` (defaults scale 1, allowed 0.1), paid as the change of that value at
    each move: 0 up to one leap in ten moves, -scale when every move leaps.
    Range [-scale, scale] per step, [-scale, 0] per episode.
    Source: leaps of a fifth or more are 2.5 % of Bach's chorale-soprano intervals and
    about 5 % of Essen's and O'Neill's (``musicenv.metrics.style_profile``); melodic
    writing treats large leaps as rare events (Huron, *Sweet Anticipation*, ch. 5).
    """

    kernel = "leap_rate"
    PARAMS = {"scale": 1.0, "leap": 7, "allowed": 0.1}
    FSTATE_INIT = (0.0, 0.0, 0.0)

    def validate(self) -> None:
        if self.params["leap"] < 1:
            raise RewardSpecError(f"leap_rate: leap must be >= 1 semitone, got {self.params['leap']}")
        if not 0 <= self.params["allowed"] < 1:
            raise RewardSpecError(f"leap_rate: allowed must be in [0, 1), got {self.params['allowed']}")


# ---------------------------------------------------------------------------- repeat_rate
# fs: [repeats, intervals]
@njit(cache=True)
def repeat_rate_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    if pitch < 0 or core[C_LAST_PITCH] < 0:
        return 0.0
    before = _excess_share(fs[0], fs[1], p[0], p[1])
    fs[1] += 1.0
    if pitch == core[C_LAST_PITCH]:
        fs[0] += 1.0
    return _excess_share(fs[0], fs[1], p[0], p[1]) - before


@register("repeat_rate")
class RepeatRate(KernelTerm):
    """Penalise a melody that repeats its notes more often than real melodies do.

    With r = repeats / intervals, where an interval is any pair of consecutive struck
    notes (rests skipped) and a repeat one that strikes the same pitch again (each
    NOTE_ON counts here, even one that the tied-through terms read as a continuation),
    the episode's sum is ``-scale * max(0, r - allowed) / (1 - allowed)`` (defaults
    scale 1, allowed 0.25), paid as the change of that value at each struck note: 0 up
    to one repeat in four intervals, -scale when every note repeats the one before. A
    held note is not a repeat, so this is the term that tells a quarter note from four
    struck 16ths of the same pitch. Striking a note again never lowers r, so splitting
    a note into repeated notes never raises this term. Range [-scale, scale] per step,
    [-scale, 0] per episode.
    Source: repeated notes are 14 % of the intervals of Bach's chorale sopranos, 16 % of
    Essen's and 9 % of O'Neill's (``musicenv.metrics.style_profile`` of the shipped
    reference windows, 8 bars; a tenth of the pieces exceed 26-31 %); the RL Tuner's
    ``no_repetition`` only charges runs of four or more.
    """

    kernel = "repeat_rate"
    PARAMS = {"scale": 1.0, "allowed": 0.25}
    FSTATE_INIT = (0.0, 0.0)

    def validate(self) -> None:
        if not 0 <= self.params["allowed"] < 1:
            raise RewardSpecError(f"repeat_rate: allowed must be in [0, 1), got {self.params['allowed']}")


# ---------------------------------------------------------------------------- leap_resolution
# fs: [direction of the open leap (+1 up, -1 down, 0 none)]
@njit(cache=True)
def leap_resolution_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if not _is_move(a, core, pitch_of):
        return 0.0
    d = pitch_of[a] - core[C_LAST_PITCH]
    direction = 1.0 if d > 0 else -1.0
    r = 0.0
    if fs[0] != 0.0:
        if not (direction != fs[0] and abs(d) <= 2):
            r = -p[0]
        fs[0] = 0.0
    if abs(d) >= p[1]:
        fs[0] = direction
    return r


@register("leap_resolution")
class LeapResolution(KernelTerm):
    """Penalise a large leap that the next move does not resolve by step in the opposite direction.

    After a leap of ``leap`` semitones or more (default 7, a fifth), the next move (the
    next change of pitch; rests and repeated notes wait) must be a step (1-2 semitones)
    in the opposite direction; anything else costs -``penalty`` (default 1), charged at
    that move. A second leap onward, or leaping back, is unresolved (and opens a new
    leap if it is one). A leap into the last note has nothing to resolve to and is not
    charged. Never positive, so leaping in order to resolve earns nothing.
    Range [-penalty, 0] per step. Source: the common-practice rule for leaps ("a leap is
    followed by stepwise motion in the opposite direction", e.g. Jeppesen,
    *Counterpoint*; gap-fill, Meyer 1973); the RL Tuner's ``resolve_leaps`` paid for any
    motion back, including a leap straight back to the same pitch.
    """

    kernel = "leap_resolution"
    PARAMS = {"penalty": 1.0, "leap": 7}
    FSTATE_INIT = (0.0,)

    def validate(self) -> None:
        if self.params["leap"] < 3:
            raise RewardSpecError(f"leap_resolution: leap must be >= 3 semitones (larger than a step), "
                                  f"got {self.params['leap']}")


# ---------------------------------------------------------------------------- bar_motif
# ist: [notes started in this bar, bitmask of their pitches 0..63, ... 64..127]
@njit(cache=True)
def bar_motif_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    if pitch >= 0 and not _is_tied(a, core):
        ist[0] += 1
        ist[1 + pitch // 64] |= np.int64(1) << np.int64(pitch % 64)
    bar = consts[K_STEPS_PER_BAR]
    if (t + 1) % bar != 0 and t != consts[K_N_STEPS] - 1:
        return 0.0
    distinct = 0
    for w in range(2):
        x = ist[1 + w]
        while x != 0:
            x &= x - 1
            distinct += 1
    notes = ist[0]
    ist[0] = 0
    ist[1] = 0
    ist[2] = 0
    if distinct >= p[1] and notes <= p[2]:
        return p[0]
    return 0.0


@register("bar_motif")
class BarMotif(KernelTerm):
    """Reward each bar that holds a motif: a few notes with at least three pitches.

    At the end of every bar (and of the episode), +``bonus`` (default 1) if the notes
    that start in the bar, read tied through, hold at least ``min_pitches`` (default 3)
    distinct pitches and number at most ``max_notes`` (default 8, eighth notes in 4/4).
    A held or repeated note gives no motif; a bar of 16ths on every step is a run, not a
    motif, and earns nothing. Range [0, bonus] per step, [0, bonus * bars] per episode.
    Source: Jaques et al. 2017, "reward motifs" (a motif: a short group of notes with at
    least three pitches), counted in notes per bar instead of distinct pitches in any
    8 grid steps, which a stream of 16ths satisfied at almost every step.
    """

    kernel = "bar_motif"
    PARAMS = {"bonus": 1.0, "min_pitches": 3, "max_notes": 8}

    def istate_size(self, n_steps: int) -> int:
        return 3

    def validate(self) -> None:
        if self.params["min_pitches"] < 1 or self.params["max_notes"] < self.params["min_pitches"]:
            raise RewardSpecError("bar_motif: need 1 <= min_pitches <= max_notes, got "
                                  f"{self.params['min_pitches']}, {self.params['max_notes']}")


# ---------------------------------------------------------------------------- note_length_profile
# fs: [onset of the sounding note (-1: none), notes counted, value paid so far, count per bin x8]
_N_BINS = len(NOTE_LENGTH_BINS)


@njit(cache=True)
def _profile_value(fs, p):  # pragma: no cover
    """-scale * total-variation distance of the counted lengths to the profile (``p[1:]``,
    normalised by :meth:`NoteLengthProfile.param_vector`)."""
    tv = 0.0
    for i in range(_N_BINS):
        tv += abs(fs[3 + i] / fs[1] - p[1 + i])
    return -p[0] * 0.5 * tv


@njit(cache=True)
def note_length_profile_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    spq = consts[K_STEPS_PER_QUARTER]
    changed = False
    if a == REST or (a >= FIRST_PITCH_TOKEN and not _is_tied(a, core)):
        if fs[0] >= 0:
            fs[3 + _length_bin(t - fs[0], spq)] += 1.0
            fs[1] += 1.0
            changed = True
        fs[0] = t if a >= FIRST_PITCH_TOKEN else -1.0
    if t == consts[K_N_STEPS] - 1 and fs[0] >= 0:
        fs[3 + _length_bin(t + 1 - fs[0], spq)] += 1.0
        fs[1] += 1.0
        fs[0] = -1.0
        changed = True
    if not changed:
        return 0.0
    value = _profile_value(fs, p)
    r = value - fs[2]
    fs[2] = value
    return r


@register("note_length_profile")
class NoteLengthProfile(KernelTerm):
    """Reward note lengths distributed like those of real melodies.

    The melody's notes, read tied through, are counted by length in 8 bins (16th and
    shorter, 8th, dotted 8th, quarter, dotted quarter, half, dotted half, whole and
    longer; see ``NOTE_LENGTH_BINS``); the episode's sum is ``-scale`` (default 1) times
    the total-variation distance (half the L1 distance, in [0, 1]) between that
    histogram and a profile, paid as the change of that value whenever a note ends (the
    last one at the last step). Parameters ``w16``..``w1`` give the profile (normalised;
    default :data:`DEFAULT_NOTE_LENGTH_PROFILE`, the prior's training collections). A
    stream of 16ths scores about -0.9 * scale, one held note about -0.99 * scale, real
    melodies about -0.2 to -0.4 * scale. Range [-scale, scale] per step, [-scale, 0] per
    episode. Source: rhythm as a distribution of durations (MusPy's rhythm statistics;
    Huron, *Sweet Anticipation*, ch. 10), against the corpus the prior learned from.
    """

    kernel = "note_length_profile"
    PARAMS = {"scale": 1.0, **{name: w for name, w in zip(
        ("w16", "w8", "w8dot", "w4", "w4dot", "w2", "w2dot", "w1"), DEFAULT_NOTE_LENGTH_PROFILE)}}
    FSTATE_INIT = (-1.0, 0.0, 0.0) + (0.0,) * _N_BINS

    def param_vector(self) -> np.ndarray:
        """``scale`` and the profile divided by its sum, once (the kernel reads shares)."""
        vec = super().param_vector()
        total = 0.0
        for w in vec[1:]:
            total += w
        vec[1:] = vec[1:] / total
        return vec

    def validate(self) -> None:
        weights = [self.params[k] for k in list(self.PARAMS)[1:]]
        if min(weights) < 0 or sum(weights) <= 0:
            raise RewardSpecError(f"note_length_profile: the profile weights w16..w1 must be >= 0 with a positive "
                                  f"sum, got {weights}")


# ---------------------------------------------------------------------------- phrase_endings
# fs: [onset of the latest note (-1 none), its pitch, step it ended (-1 sounding)]
@njit(cache=True)
def phrase_endings_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if a == REST:
        if fs[0] >= 0 and fs[2] < 0:
            fs[2] = t
    elif a >= FIRST_PITCH_TOKEN and not _is_tied(a, core):
        fs[0] = t
        fs[1] = pitch_of[a]
        fs[2] = -1.0
    n = consts[K_N_STEPS]
    phrase = int(p[4]) * consts[K_STEPS_PER_BAR]
    final = t == n - 1
    if (t + 1) % phrase != 0 and not final:
        return 0.0
    start = t + 1 - phrase if (t + 1) % phrase == 0 else t - t % phrase
    if fs[0] < start:  # no note begins in this phrase
        return 0.0
    onset = int(fs[0])
    end = fs[2] if fs[2] >= 0 else t + 1.0
    r = 0.0
    if beat_level[onset] >= LEVEL_STRONG and end - onset >= p[3] * consts[K_STEPS_PER_QUARTER]:
        r += p[0]
    if final:
        if int(fs[1]) % 12 == _TONIC[key]:
            r += p[1]
    elif fs[2] >= 0:
        r += p[2]
    return r


@register("phrase_endings")
class PhraseEndings(KernelTerm):
    """Reward phrases that end like phrases: a long note on a strong beat, the tonic at the close.

    The piece is cut into phrases of ``phrase_bars`` bars (default 2; the last may be
    shorter). At the end of each phrase, its final note (the last note, read tied
    through, that begins in the phrase) scores +``bonus`` (default 1) if it begins on a
    strong beat and lasts at least ``min_quarters`` quarter notes (default 1; counted to
    its release or the phrase's end); at the end of the piece, +``tonic_bonus`` (default
    1) if that note is the tonic; at the end of an inner phrase, +``breath_bonus``
    (default 0: the breath is optional) if a rest follows the note before the phrase
    ends. A phrase in which no note begins scores 0.
    Range [0, bonus + max(tonic_bonus, breath_bonus)] per step.
    Source: phrase endings and cadences in melody (Caplin, *Classical Form*, ch. 3;
    the fermatas of the chorales, the long final notes of folk song phrases).
    """

    kernel = "phrase_endings"
    PARAMS = {"bonus": 1.0, "tonic_bonus": 1.0, "breath_bonus": 0.0, "min_quarters": 1.0, "phrase_bars": 2}
    FSTATE_INIT = (-1.0, -1.0, -1.0)

    def validate(self) -> None:
        if self.params["phrase_bars"] < 1 or float(self.params["phrase_bars"]) != int(self.params["phrase_bars"]):
            raise RewardSpecError(f"phrase_endings: phrase_bars must be a whole number >= 1, "
                                  f"got {self.params['phrase_bars']}")
        if self.params["min_quarters"] < 0:
            raise RewardSpecError(f"phrase_endings: min_quarters must be >= 0, got {self.params['min_quarters']}")


# ---------------------------------------------------------------------------- period_form
# fs: [onset of the latest note, its pitch, pitch of the note before it (-1)]
# ist: [pitch of the note beginning at offset o of the first bar, o < bar] +
#      [same for the return bar]  (-1: no note begins there)
@njit(cache=True)
def _dominant_tone(pc, key):  # pragma: no cover
    rel = (pc - _TONIC[key]) % 12
    return rel == 7 or rel == 11 or rel == 2


@njit(cache=True)
def period_form_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    bar = consts[K_STEPS_PER_BAR]
    n = consts[K_N_STEPS]
    if bar > 64 or n < 4 * bar:
        return 0.0
    mid = n >> 1  # the first step of the second half (when the piece qualifies)
    pitch = pitch_of[a]
    if pitch >= 0 and not _is_tied(a, core):
        fs[2] = fs[1]
        fs[1] = pitch
        fs[0] = t
        if t < bar:
            ist[t] = pitch
        elif mid <= t < mid + bar:
            ist[bar + t - mid] = pitch
    if t != mid - 1 and t != mid + bar - 1 and t != n - 1:
        return 0.0
    if n % (2 * bar) != 0:  # an odd number of bars, or not whole bars
        return 0.0
    r = 0.0
    if t == mid - 1 and fs[1] >= 0 and _dominant_tone(int(fs[1]) % 12, key):
        r += p[0]  # half cadence: the first half closes on a tone of V
    if t == mid + bar - 1:
        ref = -1
        ret = -1
        matched = 0
        count0 = 0
        count1 = 0
        for o in range(bar):
            x = ist[o]
            y = ist[bar + o]
            if x >= 0:
                count0 += 1
            if y >= 0:
                count1 += 1
            if x >= 0 and y >= 0:
                if ref < 0:
                    ref = x
                    ret = y
                if x - ref == y - ret:
                    matched += 1
        most = count0 if count0 > count1 else count1
        if most > 0:
            r += p[2] * matched / most  # the opening bar returns (possibly transposed)
    if t == n - 1 and fs[1] >= 0 and int(fs[1]) % 12 == _TONIC[key] and fs[2] >= 0:
        rel = (int(fs[2]) - _TONIC[key]) % 12
        if rel == 2 or rel == 11 or rel == 10 or rel == 7:
            r += p[1]  # authentic close: 2-1, 7-1 or 5-1 onto the tonic
    return r


@register("period_form")
class PeriodForm(KernelTerm):
    """Reward the shape of a period: half cadence at the middle, the opening returning, authentic close.

    For a piece of an even number of bars (4 or more; made for 8-bar pieces, where the
    points are bars 4, 5 and 8): +``half_cadence`` (default 1) if the last note begun
    by the end of the first half is a tone of the dominant triad (scale degree 5, 7 or
    2); +``return_bonus`` (default 1) times the share of the first bar's notes that come
    back at the same places in the first bar of the second half, at the same intervals
    (transposition allowed; the share is matched notes over the larger of the two bars'
    note counts), paid at that bar's end; +``authentic_cadence`` (default 1) if the
    final note is the tonic reached from scale degree 2, 7 (either form in minor) or 5.
    Notes are read tied through. Pieces of other lengths (and bars longer than 64 steps)
    score 0.
    Range [0, max(half_cadence, return_bonus, authentic_cadence)] per step, [0, sum of
    the three] per episode. Source: the classical period (antecedent ending on a half
    cadence, consequent restating the basic idea and closing with a perfect authentic
    cadence; Caplin, *Classical Form*, ch. 4).
    """

    kernel = "period_form"
    PARAMS = {"half_cadence": 1.0, "authentic_cadence": 1.0, "return_bonus": 1.0}
    FSTATE_INIT = (-1.0, -1.0, -1.0)
    ISTATE_FILL = -1

    def istate_size(self, n_steps: int) -> int:
        return 2 * 64  # two bars of up to 64 steps (4/4 at 16 steps per quarter); longer bars score 0
