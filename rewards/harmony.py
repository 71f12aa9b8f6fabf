"""Chord-aware and form terms: the melody against the chord track, key and meter.

Kernel functions share the signature documented in :mod:`rewards.rl_tuner`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from musicenv.core import (
    C_EVENT_START,
    C_LAST_EVENT,
    C_LAST_PITCH,
    C_PREV_PITCH,
    K_N_STEPS,
    LEVEL_STRONG,
)
from musicenv.encoding import FIRST_PITCH_TOKEN, HOLD, REST
from musicenv.theory import CHORD_PC_MASK, KEY_IS_MINOR, KEY_LEADING_TONE, KEY_TONIC, NO_CHORD
from rewards.base import KernelTerm, RewardSpecError
from rewards.registry import register

_CHORD_PC = np.ascontiguousarray(CHORD_PC_MASK)
_TONIC = np.ascontiguousarray(KEY_TONIC)
_LEADING = np.ascontiguousarray(KEY_LEADING_TONE)
_MINOR = np.ascontiguousarray(KEY_IS_MINOR)


@njit(cache=True)
def _sounding_pitch(a, core, pitch_of):  # pragma: no cover
    """MIDI pitch sounding once ``a`` is placed (-1 in a rest)."""
    if a == HOLD:
        return core[C_LAST_PITCH] if core[C_LAST_EVENT] >= FIRST_PITCH_TOKEN else -1
    return pitch_of[a]


# ---------------------------------------------------------------------------- chord_tone_on_strong_beat
@njit(cache=True)
def chord_tone_on_strong_beat_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if beat_level[t] < LEVEL_STRONG or chords[t] == NO_CHORD:
        return 0.0
    pitch = _sounding_pitch(a, core, pitch_of)
    if pitch < 0:
        return 0.0
    return p[0] if _CHORD_PC[chords[t], pitch % 12] else -p[1]


@register("chord_tone_on_strong_beat")
class ChordToneOnStrongBeat(KernelTerm):
    """Reward chord tones on strong beats.

    On a strong beat (the downbeat of every bar, and beat 3 in 4/4), the pitch sounding
    after the step (a new note, or a note held into the beat) scores +``bonus``
    (default 1) if it belongs to the chord underneath and -``penalty`` (default 1) if
    not. Rests, other steps and "N.C." score 0. Range [-penalty, bonus] per step.
    Source: common-practice melody writing (non-chord tones belong on weak beats), e.g.
    Aldwell & Schachter, *Harmony and Voice Leading*, ch. 10.
    """

    kernel = "chord_tone_on_strong_beat"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- consonance
@njit(cache=True)
def consonance_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    chord = chords[t]
    if pitch < 0 or chord == NO_CHORD:
        return 0.0
    pc = pitch % 12
    if _CHORD_PC[chord, pc]:
        return p[0]
    if _CHORD_PC[chord, (pc + 11) % 12]:  # a semitone above a chord tone
        return -p[1]
    return 0.0


@register("consonance")
class Consonance(KernelTerm):
    """Reward new notes that agree with the chord underneath.

    Each NOTE_ON scores +``bonus`` (default 1) if its pitch class is a chord tone,
    -``penalty`` (default 1) if it lies a semitone *above* a chord tone (a minor 9th
    against it: F over C major, Ab over C major, C over G7 — the "avoid notes") and 0
    for other non-chord tones (9ths, #11ths, 6ths, major 7ths: usable tensions, e.g. D
    over C minor). HOLD, REST and "N.C." score 0. Range [-penalty, bonus] per step.
    Source: common-practice and jazz harmony (a minor 9th above a chord tone is the
    sharpest clash; e.g. Levine, *The Jazz Theory Book*, "avoid notes").
    """

    kernel = "consonance"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- cadence
@njit(cache=True)
def cadence_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if t != consts[K_N_STEPS] - 1:
        return 0.0
    pitch = pitch_of[a]
    prev = core[C_LAST_PITCH]
    if pitch < 0:  # the final sound is the last note (if a rest follows it, it still ends the phrase)
        pitch, prev = core[C_LAST_PITCH], core[C_PREV_PITCH]
    if pitch < 0:
        return 0.0
    rel = (pitch - _TONIC[key]) % 12
    third = 3 if _MINOR[key] else 4
    if rel == 0:
        r = p[0]
        if prev >= 0 and 1 <= abs(pitch - prev) <= 2:
            r += p[1]
        return r
    if rel == third or rel == 7:
        return 0.5 * p[0]
    return 0.0


@register("cadence")
class Cadence(KernelTerm):
    """Reward a melody that closes on the tonic, approached by step.

    At the last step, the final pitch of the melody (the last note, even if a rest
    follows it) scores +``bonus`` (default 1) on the tonic, plus ``step_bonus`` (default
    0.5) if it was reached by a step (1-2 semitones: 2-1 or 7-1, the melodic shapes of an
    authentic cadence); ``bonus / 2`` on the third or fifth of the tonic triad (an
    imperfect close); 0 otherwise. Range [0, bonus + step_bonus] per episode.
    Source: common-practice cadence formulas (e.g. Caplin, *Classical Form*, ch. 3).
    """

    kernel = "cadence"
    PARAMS = {"bonus": 1.0, "step_bonus": 0.5}


# ---------------------------------------------------------------------------- stepwise_motion
@njit(cache=True)
def stepwise_motion_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    prev = core[C_LAST_PITCH]
    if pitch < 0 or prev < 0:
        return 0.0
    d = abs(pitch - prev)
    if 1 <= d <= 2:
        return p[0]
    if d > p[2]:
        return -p[1]
    return 0.0


@register("stepwise_motion")
class StepwiseMotion(KernelTerm):
    """Reward conjunct (stepwise) motion; penalise very large leaps.

    Each NOTE_ON moving 1 or 2 semitones from the previous pitch scores +``bonus``
    (default 1); one leaping more than ``max_leap`` semitones (default 9, a major sixth)
    scores -``penalty`` (default 0.5); other intervals and repeated notes 0.
    Range [-penalty, bonus] per step.
    Source: melodic writing favours steps (e.g. Fux's and Jeppesen's counterpoint rules;
    corpus studies find most melodic intervals are steps, Huron, *Sweet Anticipation*, ch. 5).
    """

    kernel = "stepwise_motion"
    PARAMS = {"bonus": 1.0, "penalty": 0.5, "max_leap": 9}


# ---------------------------------------------------------------------------- leading_tone_resolution
@njit(cache=True)
def leading_tone_resolution_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    prev = core[C_LAST_PITCH]
    if pitch < 0 or prev < 0 or pitch == prev or prev % 12 != _LEADING[key]:
        return 0.0
    return p[0] if pitch == prev + 1 else -p[1]


@register("leading_tone_resolution")
class LeadingToneResolution(KernelTerm):
    """Reward the leading tone resolving up a semitone to the tonic.

    When the previous pitch is the leading tone (a semitone below the tonic; the raised
    7th in minor), the next different pitch scores +``bonus`` (default 1) if it is the
    tonic a semitone above, -``penalty`` (default 1) otherwise. Repeating the leading
    tone, rests and holds defer the decision. Range [-penalty, bonus] per step.
    Source: common-practice voice leading (the leading tone's tendency to the tonic).
    """

    kernel = "leading_tone_resolution"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- range
@njit(cache=True)
def range_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    if pitch >= 0 and (pitch < p[1] or pitch > p[2]):
        return -p[0]
    return 0.0


@register("range")
class Range(KernelTerm):
    """Keep the melody within a singable range.

    Each NOTE_ON below ``low`` or above ``high`` (MIDI, inclusive bounds; default 55..79,
    G3..G5, two octaves around the staff of a treble voice) scores -``penalty``
    (default 1). Range [-penalty, 0] per step.
    Source: vocal ranges of common-practice melody (soprano/tenor tessitura).
    """

    kernel = "range"
    PARAMS = {"penalty": 1.0, "low": 55, "high": 79}

    def validate(self) -> None:
        if self.params["low"] > self.params["high"]:
            raise RewardSpecError(f"range: low ({self.params['low']}) must not exceed high ({self.params['high']})")


# ---------------------------------------------------------------------------- rhythmic_variety
_MAX_DURATION_BIN = 16  # durations of 16 steps or more share the last bin


@njit(cache=True)
def rhythmic_variety_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    # fs[d - 1] counts finished notes lasting d steps (d >= 16 in the last bin)
    n = consts[K_N_STEPS]
    if a != HOLD and core[C_LAST_EVENT] >= FIRST_PITCH_TOKEN:
        d = min(t - core[C_EVENT_START], _MAX_DURATION_BIN)
        fs[d - 1] += 1.0
    if t != n - 1:
        return 0.0
    # the note sounding at the end finishes with the episode
    if a >= FIRST_PITCH_TOKEN:
        fs[0] += 1.0
    elif a == HOLD and core[C_LAST_EVENT] >= FIRST_PITCH_TOKEN:
        fs[min(n - core[C_EVENT_START], _MAX_DURATION_BIN) - 1] += 1.0
    total = 0.0
    for i in range(_MAX_DURATION_BIN):
        total += fs[i]
    if total == 0.0:
        return 0.0
    h = 0.0
    for i in range(_MAX_DURATION_BIN):
        if fs[i] > 0.0:
            q = fs[i] / total
            h -= q * math.log2(q)
    return p[0] * min(1.0, h / p[1])


@register("rhythmic_variety")
class RhythmicVariety(KernelTerm):
    """Reward a melody that uses several note lengths.

    At the last step: ``bonus * min(1, H / target_bits)`` where H is the Shannon entropy
    (bits) of the distribution of note durations in steps (rests excluded; 16 steps or
    longer pooled). Defaults bonus 1, target_bits 1.5 (e.g. three durations in fair
    proportions). A melody of one note length scores 0. Range [0, bonus] per episode.
    Source: rhythmic variety as a melody-quality feature (MusPy's rhythm statistics;
    Huron, *Sweet Anticipation*, ch. 10).
    """

    kernel = "rhythmic_variety"
    PARAMS = {"bonus": 1.0, "target_bits": 1.5}
    FSTATE_INIT = (0.0,) * _MAX_DURATION_BIN

    def validate(self) -> None:
        if self.params["target_bits"] <= 0:
            raise RewardSpecError(f"rhythmic_variety: target_bits must be > 0, got {self.params['target_bits']}")


# ---------------------------------------------------------------------------- rest_ratio
@njit(cache=True)
def rest_ratio_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    silent = a == REST or (a == HOLD and core[C_LAST_EVENT] < FIRST_PITCH_TOKEN)
    if silent:
        fs[0] += 1.0
    n = consts[K_N_STEPS]
    if t != n - 1:
        return 0.0
    share = fs[0] / n
    if share <= p[1]:
        return 0.0
    return -p[0] * (share - p[1]) / (1.0 - p[1])


@register("rest_ratio")
class RestRatio(KernelTerm):
    """Penalise melodies that are mostly silence.

    At the last step, with r the share of silent steps (RESTs and what they hold, and a
    leading HOLD), score ``-penalty * max(0, r - max_ratio) / (1 - max_ratio)``; defaults
    penalty 5, max_ratio 0.25. An all-rest episode scores -penalty. Range [-penalty, 0]
    per episode. Source: note density / empty-beat rate (MusPy's ``empty_beat_rate``) as
    a guard against the degenerate "play nothing" policy.
    """

    kernel = "rest_ratio"
    PARAMS = {"penalty": 5.0, "max_ratio": 0.25}
    FSTATE_INIT = (0.0,)

    def validate(self) -> None:
        if not 0 <= self.params["max_ratio"] < 1:
            raise RewardSpecError(f"rest_ratio: max_ratio must be in [0, 1), got {self.params['max_ratio']}")
