"""Species-counterpoint rules: a line written against a given voice (a cantus firmus).

The given voice is the batch's ``voice`` track (MIDI pitch per step, -1 where there is
none); ``consts[K_VOICE_ABOVE]`` says whether it sounds above (1) or below (0) the line
being written; ``consts[K_STEPS_PER_BAR]`` is the species (notes of the line per cantus
note: 1 or 2) and ``beat_level`` marks the steps that start a cantus note
(``LEVEL_DOWNBEAT``); ``core[C_END]`` is the episode's length. Each step of the line is
one note (a NOTE_ON token); the previous two notes of the line are ``core[C_LAST_PITCH]``
and ``core[C_PREV_PITCH]``. Every term scores 0 where there is no given voice, so the
terms are harmless (and useless) in MusicComposition-v0.

Source for every rule: J. J. Fux, *Gradus ad Parnassum* (1725), book 1, first and
second species, in A. Mann's translation *The Study of Counterpoint* (1943/1965);
K. Jeppesen, *Counterpoint* (1939), ch. on two-part writing. Kernel functions share the
signature documented in :mod:`rewards.rl_tuner`.
"""

from __future__ import annotations

from numba import njit

from musicenv.core import (
    C_END,
    C_LAST_PITCH,
    C_PREV_PITCH,
    K_STEPS_PER_BAR,
    K_VOICE_ABOVE,
    LEVEL_DOWNBEAT,
)
from rewards.base import KernelTerm
from rewards.registry import register

#: Vertical interval classes (semitones mod 12) that are consonant in two voices:
#: unison/octave, thirds, fifth, sixths. The fourth (5) is a dissonance against the bass,
#: and in two voices the lower voice is the bass.
CONSONANT_CLASSES = (0, 3, 4, 7, 8, 9)
PERFECT_CLASSES = (0, 7)


@njit(cache=True)
def _consonant(ic):  # pragma: no cover - compiled
    return ic == 0 or ic == 3 or ic == 4 or ic == 7 or ic == 8 or ic == 9


@njit(cache=True)
def _sign(x):  # pragma: no cover - compiled
    return 1 if x > 0 else (-1 if x < 0 else 0)


@njit(cache=True)
def _is_step(d):  # pragma: no cover - compiled
    return d == 1 or d == 2 or d == -1 or d == -2


# ---------------------------------------------------------------------------- vertical_consonance
@njit(cache=True)
def vertical_consonance_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    cp, cf = pitch_of[a], voice[t]
    if cp < 0 or cf < 0:
        return 0.0
    iv = abs(cp - cf)
    ic = iv % 12
    r = 0.0
    if t == 0 or t == core[C_END] - 1:
        # a perfect consonance: unison/octave, or a fifth at the start above the cantus
        ok = ic == 0 or (t == 0 and ic == 7 and consts[K_VOICE_ABOVE] == 0)
        return p[0] if ok else -p[1]
    if beat_level[t] >= LEVEL_DOWNBEAT:
        if iv == 0:
            r = -p[1]  # the unison only at the start and the end
        elif _consonant(ic):
            r = p[0]
        else:
            r = -p[1]
        # a dissonant weak beat just before must have been a passing tone
        if t >= 2 and beat_level[t - 1] < LEVEL_DOWNBEAT and voice[t - 1] >= 0:
            p1, p2 = core[C_LAST_PITCH], core[C_PREV_PITCH]
            if p1 >= 0 and not _consonant(abs(p1 - voice[t - 1]) % 12):
                d_in, d_out = p1 - p2, cp - p1
                passing = p2 >= 0 and _is_step(d_in) and _is_step(d_out) and _sign(d_in) == _sign(d_out)
                if not passing:
                    r -= p[1]
        return r
    return p[0] if _consonant(ic) else 0.0  # weak beat: a dissonance is judged when it moves on


@register("vertical_consonance")
class VerticalConsonance(KernelTerm):
    """Reward consonant intervals against the given voice; perfect ones at the start and end.

    Consonant interval classes: unison/octave, minor/major third, perfect fifth,
    minor/major sixth (compound intervals alike); the fourth, tritone, seconds and
    sevenths are dissonant. First note: a unison/octave, or a fifth when the line is
    above the cantus (below it a fifth would put the line in another mode): +``bonus``
    (default 1), else -``penalty`` (default 1). Last note: unison/octave only. Notes on
    a downbeat in between: +bonus if consonant, -penalty if dissonant or a unison
    (unisons only at the ends). Second species weak beats: +bonus if consonant, 0 if
    dissonant — a dissonance must be a passing tone (approached and left by step in one
    direction), which is checked when the next note is placed: -penalty there if not.
    Range [-2 penalty, bonus] per step; 0 without a given voice.
    Source: Fux, *Gradus ad Parnassum*, first and second species.
    """

    kernel = "vertical_consonance"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- parallel_perfects
@njit(cache=True)
def _parallel_perfect(cp0, cf0, cp1, cf1):  # pragma: no cover - compiled
    """Same perfect interval class (fifth, octave/unison) reached with both voices moving
    the same way."""
    if cp0 < 0 or cf0 < 0:
        return False
    ic0, ic1 = abs(cp0 - cf0) % 12, abs(cp1 - cf1) % 12
    if ic0 != ic1 or not (ic1 == 0 or ic1 == 7):
        return False
    s = _sign(cp1 - cp0)
    return s != 0 and s == _sign(cf1 - cf0)


@njit(cache=True)
def parallel_perfects_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    cp, cf = pitch_of[a], voice[t]
    if cp < 0 or cf < 0 or t < 1:
        return 0.0
    r = 0.0
    if _parallel_perfect(core[C_LAST_PITCH], voice[t - 1], cp, cf):
        r -= p[0]
    # second species: fifths/octaves on successive downbeats
    if consts[K_STEPS_PER_BAR] == 2 and t >= 2 and beat_level[t] >= LEVEL_DOWNBEAT:
        if _parallel_perfect(core[C_PREV_PITCH], voice[t - 2], cp, cf):
            r -= p[0]
    return r


@register("parallel_perfects")
class ParallelPerfects(KernelTerm):
    """Penalise parallel fifths and octaves (unisons) against the given voice.

    -``penalty`` (default 1) when the interval with the given voice is a fifth (or an
    octave/unison, compound alike) and was the same perfect interval at the previous
    note, both voices having moved in the same direction. In second species the same
    check runs again between successive downbeats. Contrary fifths/octaves are left to
    ``direct_perfects``'s neighbour rules (not penalised here). Range [-2 penalty, 0].
    Source: Fux, *Gradus ad Parnassum*, first species, the fundamental rules.
    """

    kernel = "parallel_perfects"
    PARAMS = {"penalty": 1.0}


# ---------------------------------------------------------------------------- direct_perfects
@njit(cache=True)
def direct_perfects_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    cp, cf = pitch_of[a], voice[t]
    if cp < 0 or cf < 0 or t < 1:
        return 0.0
    cp0, cf0 = core[C_LAST_PITCH], voice[t - 1]
    if cp0 < 0 or cf0 < 0:
        return 0.0
    ic0, ic1 = abs(cp0 - cf0) % 12, abs(cp - cf) % 12
    if ic0 == ic1 or not (ic1 == 0 or ic1 == 7):
        return 0.0  # not into a perfect interval, or parallel (parallel_perfects' case)
    s = _sign(cp - cp0)
    if s == 0 or s != _sign(cf - cf0):
        return 0.0
    upper_move = (cf - cf0) if consts[K_VOICE_ABOVE] == 1 else (cp - cp0)
    return -p[0] if abs(upper_move) > 2 else 0.0


@register("direct_perfects")
class DirectPerfects(KernelTerm):
    """Penalise direct (hidden) fifths and octaves: similar motion into a perfect interval
    with a leap in the upper voice.

    -``penalty`` (default 1) when the interval becomes a fifth or octave/unison from a
    different interval, both voices moving in the same direction and the upper voice
    moving by more than a whole tone. Range [-penalty, 0].
    Source: Fux, *Gradus ad Parnassum* (similar motion into a perfect consonance);
    the upper-voice-leap form is the common textbook reading (e.g. Jeppesen).
    """

    kernel = "direct_perfects"
    PARAMS = {"penalty": 1.0}


# ---------------------------------------------------------------------------- contrary_motion
@njit(cache=True)
def contrary_motion_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    cp, cf = pitch_of[a], voice[t]
    if cp < 0 or cf < 0 or beat_level[t] < LEVEL_DOWNBEAT:
        return 0.0
    species = consts[K_STEPS_PER_BAR]
    if t < species:
        return 0.0
    cp0 = core[C_LAST_PITCH] if species == 1 else core[C_PREV_PITCH]
    cf0 = voice[t - species]
    if cp0 < 0 or cf0 < 0:
        return 0.0
    s_cp, s_cf = _sign(cp - cp0), _sign(cf - cf0)
    if s_cp * s_cf < 0:
        return p[0]
    if (s_cp == 0) != (s_cf == 0):
        return p[1]
    return 0.0


@register("contrary_motion")
class ContraryMotion(KernelTerm):
    """Reward contrary motion and, less, oblique motion between successive downbeats.

    From the previous downbeat's pair of notes to this one's: +``contrary`` (default 1)
    when the voices move in opposite directions, +``oblique`` (default 0.5) when exactly
    one of them moves, 0 for similar or parallel motion and when neither moves. Scored on
    downbeats only (in second species the cantus is still on weak beats, so every weak
    beat would be "oblique"). Range [0, contrary].
    Source: Fux, *Gradus ad Parnassum*: "contrary and oblique motion are to be preferred".
    """

    kernel = "contrary_motion"
    PARAMS = {"contrary": 1.0, "oblique": 0.5}


# ---------------------------------------------------------------------------- voice_crossing
@njit(cache=True)
def voice_crossing_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    cp, cf = pitch_of[a], voice[t]
    if cp < 0 or cf < 0:
        return 0.0
    given_above = consts[K_VOICE_ABOVE] == 1
    if (given_above and cp > cf) or (not given_above and cp < cf):
        return -p[0]
    if t >= 1 and voice[t - 1] >= 0 and voice[t - 1] != cf:
        cf0 = voice[t - 1]
        if (given_above and cp > cf0) or (not given_above and cp < cf0):
            return -p[0]  # overlap: beyond where the other voice just was
    return 0.0


@register("voice_crossing")
class VoiceCrossing(KernelTerm):
    """Penalise voice crossing and overlap with the given voice.

    -``penalty`` (default 1) when the line passes to the other side of the given voice
    (above a cantus it should stay below, or vice versa; a unison is not a crossing),
    or, when the cantus has just moved, when the line passes beyond the cantus's
    previous note (overlap). Range [-penalty, 0].
    Source: Fux, *Gradus ad Parnassum*; Jeppesen, *Counterpoint* (overlapping voices).
    """

    kernel = "voice_crossing"
    PARAMS = {"penalty": 1.0}


# ---------------------------------------------------------------------------- melodic_leaps
@njit(cache=True)
def melodic_leaps_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    cp = pitch_of[a]
    if cp < 0 or voice[t] < 0:
        return 0.0
    p1, p2 = core[C_LAST_PITCH], core[C_PREV_PITCH]
    if p1 < 0:
        return 0.0
    d = cp - p1
    m = abs(d)
    r = 0.0
    if m == 6 or m == 9 or m == 10 or m == 11 or m > 12 or (m == 8 and d < 0):
        r -= p[0]
    if p2 >= 0:
        d0 = p1 - p2
        if abs(d0) >= 5:  # a leap of a fourth or more wants to be turned back
            r += p[1] if d * d0 < 0 else -p[1]
    return r


@register("melodic_leaps")
class MelodicLeaps(KernelTerm):
    """Penalise forbidden melodic leaps; reward turning back after a large leap.

    Allowed melodic intervals are seconds, thirds, perfect fourth and fifth, the minor
    sixth upward and the octave; the tritone, major sixth, minor sixth downward,
    sevenths and anything beyond an octave score -``forbidden`` (default 1). After a leap
    of a fourth or more, the next note scores +``compensation`` (default 1) if it moves
    the other way and -``compensation`` if it moves on or repeats. Range
    [-(forbidden + compensation), compensation].
    Source: Fux, *Gradus ad Parnassum* (the allowed leaps); the leap-compensation rule as
    in Jeppesen, *Counterpoint*.
    """

    kernel = "melodic_leaps"
    PARAMS = {"forbidden": 1.0, "compensation": 1.0}


# ---------------------------------------------------------------------------- single_climax
@njit(cache=True)
def single_climax_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if t != core[C_END] - 1 or voice[t] < 0:
        return 0.0
    top = pitch_of[a]
    count = 1
    for s in range(t):
        q = pitch_of[tokens[s]]
        if q > top:
            top, count = q, 1
        elif q == top:
            count += 1
    if top < 0:
        return 0.0
    return p[0] if count == 1 else -p[1]


@register("single_climax")
class SingleClimax(KernelTerm):
    """Reward a line whose highest note is reached exactly once.

    At the last note: +``bonus`` (default 1) if the line's highest pitch occurs once,
    -``penalty`` (default 1) if it occurs more often. Range [-penalty, bonus], terminal
    only. Source: Jeppesen, *Counterpoint* (the melodic climax); Fux's examples.
    """

    kernel = "single_climax"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- proper_cadence
@njit(cache=True)
def proper_cadence_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    cp, cf = pitch_of[a], voice[t]
    if t != core[C_END] - 1 or cp < 0 or cf < 0:
        return 0.0
    cp0, cf0 = core[C_LAST_PITCH], voice[t - 1] if t >= 1 else -1
    if cp0 < 0 or cf0 < 0:
        return -p[1]
    d_cp, d_cf = cp - cp0, cf - cf0
    ok = ((cp - cf) % 12 == 0 and _is_step(d_cp) and _is_step(d_cf) and d_cp * d_cf < 0
          and (abs(d_cp) == 1 or abs(d_cf) == 1))
    return p[0] if ok else -p[1]


@register("proper_cadence")
class ProperCadence(KernelTerm):
    """Reward the proper cadence: both voices step in contrary motion onto the final.

    At the last note: +``bonus`` (default 1) if the line ends an octave/unison from the
    cantus's final, both voices arrive by step in contrary motion, and one of the two
    steps is a semitone (the leading tone, raised by musica ficta in Dorian, Mixolydian
    and Aeolian; in Phrygian the cantus's own semitone F-E); otherwise -``penalty``
    (default 1). Range [-penalty, bonus], terminal only.
    Source: the *clausula vera*, Fux, *Gradus ad Parnassum*; Jeppesen, *Counterpoint*.
    """

    kernel = "proper_cadence"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


#: The counterpoint terms in the order the report lists them.
COUNTERPOINT_TERMS = ("vertical_consonance", "parallel_perfects", "direct_perfects", "contrary_motion",
                      "voice_crossing", "melodic_leaps", "single_climax", "proper_cadence")
