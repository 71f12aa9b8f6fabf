"""Jam terms: a melody and a chord accompaniment played together, one grid step at a time.

These terms score the *pair* (or the chords agent's progression) in the Jam
environments (:mod:`musicenv.jam_v0`, ``JamChords-v0``, ``JamMelody-v0``). Both agents
act at step t at the same time; before either agent's reward is computed the env
writes both tokens of step t into the duet's shared state, which it attaches to each
agent's :class:`~musicenv.core.CompositionBatch` as ``batch.jam`` with (B, T) arrays:

* ``melody_tokens``, ``chord_tokens``: both parts' tokens (chord tokens as in
  :mod:`musicenv.jam`: 0 N.C., 1 HOLD, 2 + chord code), valid up to step t;
* ``pitch``: the MIDI pitch the melody sounds at each step (-2 in a rest);
* ``chord``: the chord code sounding at each step (``NO_CHORD`` under N.C.);
* ``chord_start``: the step at which the harmony last changed (the sounding chord, or
  N.C., began; striking the sounding chord again does not change it), -1 before the start.

A chord *change* (or onset) below is a step where ``chord_start == t`` and a chord
sounds: striking the chord already sounding is no change, so re-striking one chord
every beat cannot farm the onset terms or dodge the frozen-harmony penalty.

So a pair term gives the same value in either agent's reward. They are plain numpy
terms vectorised over the batch (the fused kernel's signature has no second part);
using one outside a Jam env raises :class:`~rewards.base.RewardSpecError`.
"""

from __future__ import annotations

import numpy as np

from musicenv.core import C_END, C_T, K_STEPS_PER_BEAT
from musicenv.encoding import FIRST_PITCH_TOKEN
from musicenv.theory import (
    CHORD_PC_MASK,
    CHORD_QUALITY,
    CHORD_ROOT,
    KEY_SCALE_MASK,
    KEY_TONIC,
    NO_CHORD,
    QUALITIES,
)
from rewards.base import RewardSpecError, RewardTerm
from rewards.harmonization import F_DOMINANT, F_NONE, F_PREDOMINANT, F_TONIC
from rewards.registry import register

__all__ = ["JAM_PAIR_TERMS", "JAM_CHORD_TERMS", "JamTerm"]

_MAJ, _MIN, _DOM7, _DIM = (QUALITIES.index(q) for q in ("maj", "min", "dom7", "dim"))
# a chord whose tones are all in the key (row NO_CHORD: False)
_DIATONIC = np.array([[bool(np.all(KEY_SCALE_MASK[k][CHORD_PC_MASK[c]])) if c < NO_CHORD else False
                       for c in range(NO_CHORD + 1)] for k in range(24)])


def _function(code: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Harmonic function by root degree, as :func:`rewards.harmonization.harmonic_function`
    (vectorised; F_NONE for N.C.)."""
    rel = (CHORD_ROOT[code] - KEY_TONIC[key]) % 12
    f = np.full(code.shape, F_NONE)
    f[np.isin(rel, (0, 3, 4, 8, 9))] = F_TONIC
    f[np.isin(rel, (2, 5))] = F_PREDOMINANT
    f[np.isin(rel, (7, 10, 11))] = F_DOMINANT
    f[code == NO_CHORD] = F_NONE
    return f


class JamTerm(RewardTerm):
    """Base of the Jam terms: checks at bind time that the batch belongs to a Jam env."""

    def bind(self, batch) -> None:
        if not hasattr(batch, "jam"):
            raise RewardSpecError(f"reward term {self.name!r} scores a melody and its chords played together; "
                                  "it works in the Jam environments only (musicenv.jam_v0, JamChords-v0, JamMelody-v0)")

    def reset(self, batch, mask: np.ndarray) -> None:
        pass

    @staticmethod
    def _now(batch) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(batch.batch_size)
        t = np.minimum(batch.core[:, C_T], batch.n_steps - 1)
        return rows, t


@register("jam_note_in_chord")
class JamNoteInChord(JamTerm):
    """Reward melody notes that belong to the chord sounding with them.

    At every step on which the melody sounds a note: +``bonus`` (default 1) when its
    pitch class is a tone of the sounding chord, -``penalty`` (default 1) when it is not
    or no chord sounds; 0 while the melody rests. Range [-penalty, bonus] per step. A
    pair term. Source: ReaLchords' note-in-chord ratio (Wu et al. 2024), the harmonic
    half of its reward; per step, so that a long note weighs more.
    """

    PARAMS = {"bonus": 1.0, "penalty": 1.0}

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        j = batch.jam
        p, c = j.pitch[rows, t], j.chord[rows, t]
        inside = CHORD_PC_MASK[c, np.maximum(p, 0) % 12]
        return np.where(p < 0, 0.0, np.where(inside, self.params["bonus"], -self.params["penalty"]))


@register("jam_onset_alignment")
class JamOnsetAlignment(JamTerm):
    """Reward chord changes struck together with a melody note.

    At a step where the harmony changes to a new chord: +``bonus`` (default 1) when a
    melody note starts at the same step, -``penalty`` (default 0.5) when the melody
    holds or rests; 0 on other steps (a chord struck again on itself included). Range [-penalty, bonus] per step. A pair term.
    Source: ReaLchords' temporal coherence (its reward models judge whether the two
    parts' onsets agree; its metric compares their onset-interval histograms).
    """

    PARAMS = {"bonus": 1.0, "penalty": 0.5}

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        j = batch.jam
        struck = (j.chord_start[rows, t] == t) & (j.chord[rows, t] != NO_CHORD)
        note = j.melody_tokens[rows, t] >= FIRST_PITCH_TOKEN
        return np.where(struck, np.where(note, self.params["bonus"], -self.params["penalty"]), 0.0)


@register("jam_harmonic_rhythm")
class JamHarmonicRhythm(JamTerm):
    """Penalise harmony that is frozen (one chord for too long) or frantic (changes too fast).

    When the harmony changes (a new chord, or N.C.) after a chord that lasted less than
    ``min_beats`` beats (default 1): -``frantic`` (default 1). At the start of every beat
    at which the sounding chord has lasted ``max_beats`` beats (default 8) or more:
    -``frozen`` (default 1). 0 otherwise. Range [-(frantic + frozen), 0] per step.
    A pair term (its limits are the melody's phrase rhythm). Source: ReaLchords
    observed chord-length entropy collapse under RL (2.21 -> 1.35 against 2.19 in the
    data); harmonic rhythm of one to eight beats is the norm in folk songs and chorales
    (Kostka & Payne, *Tonal Harmony*, ch. 7, "harmonic rhythm").
    """

    PARAMS = {"min_beats": 1.0, "max_beats": 8.0, "frantic": 1.0, "frozen": 1.0}

    def validate(self) -> None:
        if not 0 <= self.params["min_beats"] < self.params["max_beats"]:
            raise RewardSpecError(f"jam_harmonic_rhythm: need 0 <= min_beats < max_beats, got {self.params}")

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        j = batch.jam
        spb = batch.consts[K_STEPS_PER_BEAT]
        prev_start = j.chord_start[rows, np.maximum(t - 1, 0)]
        prev_len = t - prev_start
        change = (j.chord_start[rows, t] == t) & (t > 0) & (prev_start >= 0)
        frantic = change & (prev_len < self.params["min_beats"] * spb)
        start = j.chord_start[rows, t]
        held = np.where(start >= 0, t - start, 0)
        frozen = (t % spb == 0) & (j.chord[rows, t] != NO_CHORD) & (held >= self.params["max_beats"] * spb)
        return -self.params["frantic"] * frantic - self.params["frozen"] * frozen


@register("jam_cadence_together")
class JamCadenceTogether(JamTerm):
    """Reward ending together on a cadence: the chords on the tonic, the melody on a tone of it.

    At the last step: +``bonus`` (default 1) when the final chord is the tonic triad
    (major or minor), the melody's last note (sounding, or the last one heard) belongs to
    it, and the chord before it was a dominant (V, V7 or vii°); +bonus/2 for the same
    ending reached from any other chord; -``penalty`` (default 1) otherwise. Range
    [-penalty, bonus], terminal only. A pair term. Source: the authentic cadence
    (Kostka & Payne, *Tonal Harmony*, ch. 10); both parts must arrive together.
    """

    PARAMS = {"bonus": 1.0, "penalty": 1.0}

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        last = t == batch.core[:, C_END] - 1
        out = np.zeros(batch.batch_size)
        if not last.any():
            return out
        j = batch.jam
        for b in np.flatnonzero(last):
            s = int(t[b])
            key = int(batch.key[b])
            c = int(j.chord[b, s])
            heard = j.pitch[b, :s + 1]
            notes = heard[heard >= 0]
            tonic = c != NO_CHORD and CHORD_ROOT[c] == KEY_TONIC[key] and CHORD_QUALITY[c] in (_MAJ, _MIN)
            if not tonic or len(notes) == 0 or not CHORD_PC_MASK[c, notes[-1] % 12]:
                out[b] = -self.params["penalty"]
                continue
            start = int(j.chord_start[b, s])
            before = int(j.chord[b, start - 1]) if start > 0 else NO_CHORD
            dominant = before != NO_CHORD and (
                ((CHORD_ROOT[before] - KEY_TONIC[key]) % 12 == 7 and CHORD_QUALITY[before] in (_MAJ, _DOM7))
                or ((CHORD_ROOT[before] - KEY_TONIC[key]) % 12 == 11 and CHORD_QUALITY[before] == _DIM))
            out[b] = self.params["bonus"] if dominant else self.params["bonus"] / 2
        return out


@register("jam_diatonic_chord")
class JamDiatonicChord(JamTerm):
    """Reward striking chords of the key.

    When the harmony changes to a chord: +``bonus`` (default 1) when all its tones belong to the key
    (``musicenv.theory.KEY_SCALE_MASK``; in minor the raised 6th and 7th count), -``penalty``
    (default 1) otherwise; 0 on other steps. Range [-penalty, bonus]. A chords term.
    Source: diatonic harmony (Kostka & Payne, *Tonal Harmony*, ch. 4); a prior, not a
    rule: after the melody modulates (the push test) it pulls the wrong way.
    """

    PARAMS = {"bonus": 1.0, "penalty": 1.0}

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        j = batch.jam
        code = j.chord[rows, t]
        struck = (j.chord_start[rows, t] == t) & (code != NO_CHORD)
        return np.where(struck, np.where(_DIATONIC[batch.key, code], self.params["bonus"], -self.params["penalty"]), 0.0)


@register("jam_functional_progression")
class JamFunctionalProgression(JamTerm):
    """Reward chord changes that follow the tonic - predominant - dominant - tonic cycle.

    When a chord is struck after a different chord: +``forward`` (default 1) for T->PD,
    T->D, PD->D and D->T, -``retrogression`` (default 1) for D->PD, 0 otherwise (the
    functions of ``functional_progression``, by root degree). Range [-retrogression,
    forward]. A chords term. Source: as ``functional_progression`` (Kostka & Payne,
    ch. 7), read on the chords struck rather than one chord per beat.
    """

    PARAMS = {"forward": 1.0, "retrogression": 1.0}

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        j = batch.jam
        tok = j.chord_tokens[rows, t]
        struck = (tok >= FIRST_PITCH_TOKEN) & (t > 0)
        new = np.where(struck, tok - FIRST_PITCH_TOKEN, NO_CHORD)
        old = np.where(t > 0, j.chord[rows, np.maximum(t - 1, 0)], NO_CHORD)
        f0, f1 = _function(old, batch.key), _function(new, batch.key)
        fwd = ((f0 == F_TONIC) & ((f1 == F_PREDOMINANT) | (f1 == F_DOMINANT))) | ((f0 == F_PREDOMINANT) & (f1 == F_DOMINANT)) \
            | ((f0 == F_DOMINANT) & (f1 == F_TONIC))
        back = (f0 == F_DOMINANT) & (f1 == F_PREDOMINANT)
        ok = struck & (new != old) & (old != NO_CHORD)
        return np.where(ok & fwd, self.params["forward"], np.where(ok & back, -self.params["retrogression"], 0.0))


JAM_PAIR_TERMS = ("jam_note_in_chord", "jam_onset_alignment", "jam_harmonic_rhythm", "jam_cadence_together")
JAM_CHORD_TERMS = ("jam_diatonic_chord", "jam_functional_progression")
