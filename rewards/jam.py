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

__all__ = ["JAM_PAIR_TERMS", "JAM_CHORD_TERMS", "BACH_CHORD_COUNTS", "JamTerm"]

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


@register("jam_chord_lengths")
class JamChordLengths(JamTerm):
    """Reward a distribution of chord lengths like the data's (harmonic rhythm, calibrated).

    Keeps, per episode, the histogram n of the lengths (in grid steps) of the chords
    played so far; when a chord ends (the harmony changes after it, or the episode
    ends while it sounds) it pays the change of ``-N * KL(q || p)``, where q = n / N is
    the episode's length distribution and p the reference: ``p1``..``p4`` for chords of
    exactly 1..4 beats (defaults: the Bach chorales of the train split, 4/4, first 8
    bars: 0.843, 0.121, 0.022, 0.010) and ``floor`` (default 0.004) for every other
    length (fractions of a beat, longer chords). The per-episode sum is ``-N * KL``
    (0 when the lengths follow p exactly): it pays changing as often as the data and
    also *varying* the length as much, so neither a frozen harmony, a frantic one,
    nor one fixed length (the collapse ReaLchords measured: chord-length entropy 2.21
    -> 1.35 against 2.19 in the data) maximises it. N.C. stretches are not chords.
    Range per chord about [log floor - log N, log N + 1] (a few units); 0 on other steps.
    A pair term. Source: ReaLchords' chord-length entropy (Wu et al. 2024), turned
    into a reward on the distribution it summarises.
    """

    PARAMS = {"p1": 0.843, "p2": 0.121, "p3": 0.022, "p4": 0.010, "floor": 0.004}

    def validate(self) -> None:
        if any(self.params[k] < 0 for k in self.PARAMS) or self.params["floor"] <= 0:
            raise RewardSpecError(f"jam_chord_lengths: probabilities must be >= 0 and floor > 0, got {self.params}")

    def bind(self, batch) -> None:
        super().bind(batch)
        self.counts = np.zeros((batch.batch_size, batch.n_steps + 1), dtype=np.int64)

    def reset(self, batch, mask: np.ndarray) -> None:
        self.counts[mask] = 0

    def _logp(self, length: int, spb: int) -> float:
        beats, rest = divmod(length, spb)
        p = self.params.get(f"p{beats}", 0.0) if rest == 0 else 0.0
        return float(np.log(max(p, self.params["floor"])))

    def _gain(self, row: int, length: int, spb: int) -> float:
        n = self.counts[row]
        total = int(n.sum())
        k = int(n[length])
        # F(n) = sum_L n_L log p_L - sum_L n_L log(n_L / N); the change when n_length += 1
        ent_before = (total * np.log(total) - k * np.log(k) if k else total * np.log(total)) if total else 0.0
        ent_after = (total + 1) * np.log(total + 1) - (k + 1) * np.log(k + 1)
        # sum_L n_L log(n_L / N) = sum n_L log n_L - N log N; only the terms of `length` and N change
        n[length] += 1
        return self._logp(length, spb) + float(ent_after - ent_before)

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        j = batch.jam
        spb = int(batch.consts[K_STEPS_PER_BEAT])
        out = np.zeros(batch.batch_size)
        prev = np.maximum(t - 1, 0)
        ended = (j.chord_start[rows, t] == t) & (t > 0) & (j.chord[rows, prev] != NO_CHORD)
        last = (t == batch.core[:, C_END] - 1) & (j.chord[rows, t] != NO_CHORD)
        for b in np.flatnonzero((ended | last) & active):
            s = int(t[b])
            if ended[b]:
                out[b] += self._gain(b, s - int(j.chord_start[b, s - 1]), spb)
            if last[b]:
                out[b] += self._gain(b, s + 1 - int(j.chord_start[b, s]), spb)
        return out


#: Chords struck in the Bach chorales of the train split (``corpus.load("bach").split(seed=0)``,
#: 242 pieces, every chord change of the corpus's chord tracks), by mode, scale degree of
#: the root (semitones above the tonic) and quality; chords seen fewer than 5 times are
#: left out (they get ``jam_chord_vocabulary``'s floor).
BACH_CHORD_COUNTS = {
    "major": {(0, "maj"): 1220, (0, "dom7"): 55, (0, "maj7"): 20, (0, "sus4"): 42, (0, "sus2"): 15, (1, "dim"): 18, (1, "dim7"): 8, (2, "maj"): 159, (2, "min"): 296, (2, "dom7"): 113, (2, "min7"): 150, (2, "sus4"): 45, (2, "sus2"): 7, (3, "maj"): 11, (3, "dim7"): 5, (4, "maj"): 93, (4, "min"): 154, (4, "dim"): 23, (4, "aug"): 6, (4, "dom7"): 22, (4, "min7"): 41, (4, "hdim7"): 17, (4, "sus4"): 27, (5, "maj"): 426, (5, "maj7"): 50, (5, "sus2"): 13, (6, "dim"): 21, (6, "hdim7"): 13, (6, "dim7"): 7, (7, "maj"): 890, (7, "min"): 39, (7, "dom7"): 176, (7, "min7"): 10, (7, "sus4"): 135, (8, "dim"): 11, (8, "dim7"): 17, (9, "maj"): 72, (9, "min"): 413, (9, "dom7"): 52, (9, "min7"): 144, (9, "hdim7"): 12, (9, "sus4"): 22, (10, "maj"): 37, (10, "maj7"): 12, (11, "maj"): 9, (11, "min"): 13, (11, "dim"): 75, (11, "dom7"): 6, (11, "min7"): 22, (11, "hdim7"): 26, (11, "dim7"): 6},
    "minor": {(0, "maj"): 298, (0, "min"): 701, (0, "aug"): 11, (0, "dom7"): 50, (0, "min7"): 35, (0, "hdim7"): 5, (0, "sus4"): 62, (0, "sus2"): 12, (1, "maj"): 66, (1, "maj7"): 21, (2, "maj"): 29, (2, "min"): 22, (2, "dim"): 65, (2, "dom7"): 16, (2, "min7"): 22, (2, "hdim7"): 130, (2, "dim7"): 8, (2, "sus4"): 9, (3, "maj"): 521, (3, "min"): 11, (3, "aug"): 6, (3, "dom7"): 18, (3, "maj7"): 16, (3, "sus4"): 32, (3, "sus2"): 7, (4, "dim"): 21, (4, "dim7"): 13, (5, "maj"): 136, (5, "min"): 497, (5, "dom7"): 77, (5, "min7"): 90, (5, "dim7"): 7, (5, "sus4"): 37, (5, "sus2"): 15, (6, "maj"): 10, (6, "dim7"): 20, (7, "maj"): 384, (7, "min"): 124, (7, "dim"): 26, (7, "aug"): 10, (7, "dom7"): 71, (7, "min7"): 33, (7, "hdim7"): 49, (7, "dim7"): 9, (7, "sus4"): 78, (8, "maj"): 319, (8, "maj7"): 72, (8, "sus2"): 8, (9, "dim"): 16, (9, "min7"): 7, (9, "hdim7"): 24, (9, "dim7"): 5, (10, "maj"): 382, (10, "min"): 97, (10, "dom7"): 62, (10, "min7"): 34, (10, "dim7"): 7, (10, "sus4"): 45, (10, "sus2"): 5, (11, "dim"): 39, (11, "dim7"): 24},
}


def _chord_log_prior(floor: float) -> np.ndarray:
    """(2, 12, N_QUALITIES) log of each chord's share of BACH_CHORD_COUNTS over the most
    common chord's, per mode, at least log(floor / max share)."""
    from musicenv.theory import N_QUALITIES

    out = np.zeros((2, 12, N_QUALITIES))
    for m, mode in enumerate(("major", "minor")):
        counts = np.zeros((12, N_QUALITIES))
        for (deg, q), n in BACH_CHORD_COUNTS[mode].items():
            counts[deg, QUALITIES.index(q)] = n
        share = counts / counts.sum()
        out[m] = np.log(np.maximum(share, floor) / share.max())
    return out


@register("jam_chord_vocabulary")
class JamChordVocabulary(JamTerm):
    """Reward striking the chords a key's music uses, as often as Bach does (a data prior).

    When the harmony changes to a chord: ``log(p(c) / p_max)``, where p is the share of
    that chord, by scale degree of its root and quality, among the chords struck in Bach
    chorales of the same mode (:data:`BACH_CHORD_COUNTS`; p_max: I in major, i in minor),
    at least ``log(floor / p_max)`` (``floor`` default 0.001). So 0 for the tonic triad,
    about -0.3 for V in major, -2.1 for ii7, -5.4 for a chord Bach (almost) never
    strikes; 0 on other steps. Range [log(floor / p_max), 0]. A chords term: what the
    KL penalty to a teacher model does in ReaLchords (Wu et al. 2024), a small
    data-derived prior that keeps the policy's chords idiomatic (without it PPO favours
    four-note chords that cover more melody notes in any key).
    """

    PARAMS = {"floor": 0.001}

    def validate(self) -> None:
        if not 0 < self.params["floor"] < 1:
            raise RewardSpecError(f"jam_chord_vocabulary: floor must be in (0, 1), got {self.params['floor']}")

    def bind(self, batch) -> None:
        super().bind(batch)
        self.table = _chord_log_prior(self.params["floor"])

    def step(self, batch, actions, active):
        rows, t = self._now(batch)
        j = batch.jam
        code = j.chord[rows, t]
        struck = (j.chord_start[rows, t] == t) & (code != NO_CHORD)
        c = np.where(struck, code, 0)
        deg = (CHORD_ROOT[c] - KEY_TONIC[batch.key]) % 12
        return np.where(struck, self.table[(batch.key >= 12).astype(np.int64), deg, CHORD_QUALITY[c]], 0.0)


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


JAM_PAIR_TERMS = ("jam_note_in_chord", "jam_onset_alignment", "jam_harmonic_rhythm", "jam_chord_lengths",
                  "jam_cadence_together")
JAM_CHORD_TERMS = ("jam_diatonic_chord", "jam_chord_vocabulary", "jam_functional_progression")
