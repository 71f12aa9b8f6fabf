"""Harmonization terms: chords chosen one per beat under a given melody.

In Harmonization-v0 the batch's tokens hold ``FIRST_PITCH_TOKEN + chord code`` (codes of
:mod:`musicenv.theory`), the ``voice`` track the melody's pitch at each beat (-2 in a
rest; -1 means no melody at all), the ``chords`` track the composer's own chord per beat where the corpus knows
it (``NO_CHORD`` elsewhere), ``key`` the key and ``core[C_END]`` the episode's length.
Kernel functions share the signature documented in :mod:`rewards.rl_tuner`. Every term
scores 0 where there is no melody (``voice`` -1), so they do nothing in the other envs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from musicenv.core import C_END
from musicenv.encoding import FIRST_PITCH_TOKEN
from musicenv.theory import CHORD_PC_MASK, CHORD_QUALITY, CHORD_ROOT, KEY_TONIC, NO_CHORD, QUALITIES
from rewards.base import KernelTerm
from rewards.registry import register

_CHORD_PC = np.ascontiguousarray(CHORD_PC_MASK)
_ROOT = np.ascontiguousarray(CHORD_ROOT)
_QUALITY = np.ascontiguousarray(CHORD_QUALITY)
_TONIC = np.ascontiguousarray(KEY_TONIC)
_MAJ, _MIN, _DOM7 = QUALITIES.index("maj"), QUALITIES.index("min"), QUALITIES.index("dom7")

#: Harmonic functions returned by :func:`harmonic_function`.
F_NONE, F_TONIC, F_PREDOMINANT, F_DOMINANT = 0, 1, 2, 3


@njit(cache=True)
def _code(a):  # pragma: no cover - compiled
    c = a - FIRST_PITCH_TOKEN
    return c if 0 <= c < NO_CHORD else -1


@njit(cache=True)
def harmonic_function(code, key):  # pragma: no cover - compiled
    """Function of a chord by its root's degree: I, iii/III, vi/VI tonic; ii, IV
    predominant; V, vii, and VII in minor dominant; other roots none."""
    rel = (_ROOT[code] - _TONIC[key]) % 12
    if rel == 0 or rel == 3 or rel == 4 or rel == 8 or rel == 9:
        return F_TONIC
    if rel == 2 or rel == 5:
        return F_PREDOMINANT
    if rel == 7 or rel == 10 or rel == 11:
        return F_DOMINANT
    return F_NONE


# ---------------------------------------------------------------------------- melody_chord_tone
@njit(cache=True)
def melody_chord_tone_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    m, c = voice[t], _code(a)
    if m < 0 or c < 0:
        return 0.0
    return p[0] if _CHORD_PC[c, m % 12] else -p[1]


@register("melody_chord_tone")
class MelodyChordTone(KernelTerm):
    """Reward chords that contain the melody note of their beat.

    +``bonus`` (default 1) when the melody's pitch class at the beat's onset is a chord
    tone, -``penalty`` (default 1) when it is not; 0 in a melodic rest. Range
    [-penalty, bonus] per beat. Source: chorale harmonization practice (the soprano
    note belongs to the chord on the beat; non-chord tones fall between beats), e.g.
    Aldwell & Schachter, *Harmony and Voice Leading*, ch. 4.
    """

    kernel = "melody_chord_tone"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- functional_progression
@njit(cache=True)
def functional_progression_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    c = _code(a)
    if c < 0 or t < 1 or voice[t] == -1:
        return 0.0
    c0 = _code(tokens[t - 1])
    if c0 < 0:
        return 0.0
    f0, f1 = harmonic_function(c0, key), harmonic_function(c, key)
    if f0 == F_NONE or f1 == F_NONE:
        return 0.0
    if (f0 == F_TONIC and (f1 == F_PREDOMINANT or f1 == F_DOMINANT)) or (f0 == F_PREDOMINANT and f1 == F_DOMINANT) \
            or (f0 == F_DOMINANT and f1 == F_TONIC):
        return p[0]
    if f0 == F_DOMINANT and f1 == F_PREDOMINANT:
        return -p[1]
    return 0.0


@register("functional_progression")
class FunctionalProgression(KernelTerm):
    """Reward chord changes that follow the tonic - predominant - dominant - tonic cycle.

    Functions by root degree (``harmonic_function``): I, iii, vi tonic; ii, IV
    predominant; V, vii° (and VII in minor) dominant. From the previous beat's chord to
    this one: +``forward`` (default 1) for T->PD, T->D, PD->D and D->T; -``retrogression``
    (default 1) for D->PD; 0 for staying within a function and anything else. Range
    [-retrogression, forward] per beat. Source: functional harmony (Riemann; e.g.
    Kostka & Payne, *Tonal Harmony*, ch. 7, "the circle of fifths and the normative
    progression").
    """

    kernel = "functional_progression"
    PARAMS = {"forward": 1.0, "retrogression": 1.0}


# ---------------------------------------------------------------------------- harmonic_cadence
@njit(cache=True)
def harmonic_cadence_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    c = _code(a)
    if c < 0 or t != core[C_END] - 1 or t < 1 or voice[t] == -1:
        return 0.0
    c0 = _code(tokens[t - 1])
    tonic = _TONIC[key]
    final_tonic = _ROOT[c] == tonic and (_QUALITY[c] == _MAJ or _QUALITY[c] == _MIN)
    if not final_tonic or c0 < 0:
        return -p[1]
    rel0 = (_ROOT[c0] - tonic) % 12
    if rel0 == 7 and (_QUALITY[c0] == _MAJ or _QUALITY[c0] == _DOM7):
        return p[0]
    if rel0 == 5:
        return 0.5 * p[0]
    return -p[1]


@register("harmonic_cadence")
class HarmonicCadence(KernelTerm):
    """Reward an authentic (or plagal) cadence at the end of the phrase.

    At the last beat: +``bonus`` (default 1) when a major V or V7 goes to the tonic triad
    (major or minor: a Picardy third counts), +bonus/2 for IV/iv -> I (plagal), and
    -``penalty`` (default 1) for any other ending. Range [-penalty, bonus], terminal
    only. Source: Kostka & Payne, *Tonal Harmony*, ch. 10 (cadences); Bach's chorales
    end their last phrase with an authentic cadence.
    """

    kernel = "harmonic_cadence"
    PARAMS = {"bonus": 1.0, "penalty": 1.0}


# ---------------------------------------------------------------------------- corpus_agreement
@njit(cache=True)
def corpus_agreement_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    c, ref = _code(a), chords[t]
    if c < 0 or ref == NO_CHORD or voice[t] == -1:
        return 0.0
    if c == ref:
        return p[0]
    if _ROOT[c] == _ROOT[ref]:
        return p[1]
    return 0.0


@register("corpus_agreement")
class CorpusAgreement(KernelTerm):
    """Reward agreeing with the composer's own harmony, beat by beat.

    Where the corpus knows the chord of the beat (Bach's, derived from all four parts,
    see :mod:`musicenv.corpus`): +``match`` (default 1) for the same root and quality,
    +``same_root`` (default 0.5) for the same root only, 0 otherwise and where the
    corpus has none. Range [0, match] per beat. Source: comparison with the original is
    the usual evaluation of automatic chorale harmonization (e.g. Allan & Williams 2005).
    """

    kernel = "corpus_agreement"
    PARAMS = {"match": 1.0, "same_root": 0.5}


HARMONIZATION_TERMS = ("melody_chord_tone", "functional_progression", "harmonic_cadence", "corpus_agreement")
