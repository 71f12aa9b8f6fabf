"""Chord-, key- and form-aware terms (rewards.harmony): every docstring case with exact
values, and naive oracles checked by hypothesis over random keys, chords and meters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from reward_helpers import ORACLES, comp, compositions, nonzero, raw, tok

import rewards
from musicenv.encoding import HOLD, REST, notes_to_tokens
from musicenv.theory import NO_CHORD, parse_chord

B3, C4, D4, E4, F4, G4, A4, B4, C5 = 59, 60, 62, 64, 65, 67, 69, 71, 72


def line16(*items):
    """Tokens one step per item: MIDI numbers, or 'R' / 'H'."""
    return [REST if x == "R" else HOLD if x == "H" else tok(x) for x in items]


def over(chord: str, tokens, key="C major", meter="4/4"):
    """A composition whose every step sounds ``chord``."""
    return comp(tokens, key=key, meter=meter, chords=[parse_chord(chord)] * len(tokens))


# ---------------------------------------------------------------------------- chord_tone_on_strong_beat
def test_chord_tones_on_the_strong_beats_of_4_4():
    # I (C) in bar 1, IV (F) in bar 2; strong beats at steps 0, 8, 16, 24.
    line = notes_to_tokens([(E4, 0, 4), (D4, 4, 4), (D4, 8, 4), (F4, 12, 4), (F4, 16, 8), (B4, 24, 8)])
    values = raw("chord_tone_on_strong_beat", comp(line, progression="I-IV"))
    assert nonzero(values) == {0: 1.0, 8: -1.0, 16: 1.0, 24: -1.0}


def test_a_note_held_into_a_strong_beat_counts():
    line = notes_to_tokens([(G4, 0, 4), (C4, 4, 8), (E4, 12, 8), (D4, 20, 12)])
    values = raw("chord_tone_on_strong_beat", comp(line, progression="I-IV"))
    # C held over step 8 (C chord) +1; E held over 16 (F chord) -1; D held over 24 -1.
    assert nonzero(values) == {0: 1.0, 8: 1.0, 16: -1.0, 24: -1.0}


def test_rests_and_no_chord_score_zero_on_strong_beats():
    line = notes_to_tokens([(D4, 0, 4), (None, 8, 8)], n_steps=16)  # rest (and its hold) over step 8
    assert nonzero(raw("chord_tone_on_strong_beat", comp(line, progression="I"))) == {0: -1.0}
    assert nonzero(raw("chord_tone_on_strong_beat", comp(line, chords=[NO_CHORD] * 16))) == {}
    assert nonzero(raw("chord_tone_on_strong_beat", comp([HOLD] * 9, progression="I"))) == {}  # leading HOLD is silence


@pytest.mark.parametrize("meter", ["3/4", "6/8"])
def test_only_the_downbeat_is_strong_in_3_4_and_6_8(meter):
    # Bars of 12 steps; steps 4 and 8 (3/4 beats 2, 3) and 6 (6/8 beat 2) are not strong.
    line = notes_to_tokens([(C4, 0, 4), (D4, 4, 2), (D4, 6, 2), (D4, 8, 4), (F4, 12, 12)])
    values = raw("chord_tone_on_strong_beat", comp(line, meter=meter, progression="I-V"))
    assert nonzero(values) == {0: 1.0, 12: -1.0}


def test_chord_tone_parameters():
    line = notes_to_tokens([(E4, 0, 8), (D4, 8, 8)])
    values = raw("chord_tone_on_strong_beat", comp(line, progression="I"), bonus=2.0, penalty=0.5)
    assert nonzero(values) == {0: 2.0, 8: -0.5}


# ---------------------------------------------------------------------------- consonance
@pytest.mark.parametrize(
    ("chord", "expected"),
    [
        # pitch classes C C# D Eb E F F# G Ab A Bb B
        ("C", [1, -1, 0, 0, 1, -1, 0, 1, -1, 0, 0, 0]),  # F and Ab: a minor 9th above E and G
        ("Cm", [1, -1, 0, 1, -1, 0, 0, 1, -1, 0, 0, 0]),  # D (the 9th) is a usable tension
        ("G7", [-1, 0, 1, -1, 0, 1, -1, 1, -1, 0, 0, 1]),  # C over G7 is the classic avoid note
    ],
)
def test_consonance_of_every_pitch_class(chord, expected):
    values = raw("consonance", over(chord, line16(*range(60, 72))))
    np.testing.assert_array_equal(values, expected)


def test_consonance_ignores_holds_rests_and_no_chord():
    assert nonzero(raw("consonance", over("C", line16(C4, "H", "R", "H", 61)))) == {0: 1.0, 4: -1.0}
    assert nonzero(raw("consonance", comp(line16(61, 62, 64), chords=[NO_CHORD] * 3))) == {}
    assert nonzero(raw("consonance", over("C", line16(C4, 61)), bonus=0.5, penalty=2.0)) == {0: 0.5, 1: -2.0}


# ---------------------------------------------------------------------------- cadence
@pytest.mark.parametrize(
    ("key", "ending", "expected"),
    [
        ("C major", (D4, C4), 1.5),  # 2-1
        ("C major", (B3, C4), 1.5),  # 7-1
        ("C major", (D4, C5), 1.0),  # tonic, but by a leap
        ("C major", (E4, C4), 1.0),
        ("C major", (D4, C4, "R", "H"), 1.5),  # a rest after the last note still ends on it
        ("C major", (D4, C4, "H", "H"), 1.5),
        ("C major", (C4, C4), 1.0),  # reached from itself: no step
        ("C major", (D4, E4), 0.5),  # imperfect close on the third
        ("C major", (A4, G4), 0.5),  # ... or the fifth
        ("C major", (C4, D4), 0.0),
        ("C major", ("R", "H"), 0.0),  # the final sound is F
        ("A minor", (B4, A4), 1.5),
        ("A minor", (68, A4), 1.5),  # G#-A
        ("A minor", (D4, C4), 0.5),  # the minor third
        ("A minor", (D4, 61), 0.0),  # C#: a major third is no close in minor
        ("C minor", (F4, 63), 0.5),  # Eb
        ("C minor", (F4, E4), 0.0),
        ("G major", (A4, G4), 1.5),
    ],
)
def test_cadence(key, ending, expected):
    line = line16(*([E4, G4, E4, F4] + list(ending)))
    values = raw("cadence", comp(line, key=key))
    assert nonzero(values) == ({len(line) - 1: expected} if expected else {})


def test_cadence_of_a_pitchless_melody_is_zero():
    assert nonzero(raw("cadence", comp(line16("R", "H", "R", "H")))) == {}


def test_cadence_parameters():
    values = raw("cadence", comp(line16(G4, D4, C4)), bonus=2.0, step_bonus=1.0)
    assert nonzero(values) == {2: 3.0}
    assert nonzero(raw("cadence", comp(line16(C4, E4)), bonus=2.0)) == {1: 1.0}


# ---------------------------------------------------------------------------- stepwise_motion
def test_stepwise_motion():
    line = line16(60, 61, 63, 66, 60, 70, 70, "R", "H", 81, 72, 70, 61)
    values = raw("stepwise_motion", comp(line))
    # steps +1; 3, 6 and 9 semitones 0; 10 and 11 -0.5; a repeat 0; rests skipped
    np.testing.assert_array_equal(values, [0, 1, 1, 0, 0, -0.5, 0, 0, 0, -0.5, 0, 1, 0])
    values = raw("stepwise_motion", comp(line16(60, 70, 71)), max_leap=10, penalty=2.0, bonus=0.25)
    np.testing.assert_array_equal(values, [0, 0, 0.25])


# ---------------------------------------------------------------------------- leading_tone_resolution
@pytest.mark.parametrize(
    ("key", "line", "expected"),
    [
        ("C major", (B3, C4), {1: 1.0}),
        ("C major", (B3, A4), {1: -1.0}),
        ("C major", (B3, B3, C4), {2: 1.0}),  # a repeated leading tone defers
        ("C major", (B3, "R", "H", C4), {3: 1.0}),  # so do rests and holds
        ("C major", (B3, C5), {1: -1.0}),  # the tonic a semitone *above* only
        ("C major", (B4, C4), {1: -1.0}),
        ("C major", (C4, B3, C4, D4), {2: 1.0}),
        ("A minor", (68, A4), {1: 1.0}),  # G# (the raised 7th) to A
        ("A minor", (G4, A4), {}),  # G natural is no leading tone
        ("A minor", (68, E4), {1: -1.0}),
        ("G major", (66, G4), {1: 1.0}),  # F# to G
        ("G major", (B3, C4), {}),
    ],
)
def test_leading_tone_resolution(key, line, expected):
    assert nonzero(raw("leading_tone_resolution", comp(line16(*line), key=key))) == expected


# ---------------------------------------------------------------------------- range
@pytest.mark.parametrize(("pitch", "expected"), [(48, -1.0), (54, -1.0), (55, 0.0), (67, 0.0), (79, 0.0), (80, -1.0)])
def test_range_bounds_are_inclusive(pitch, expected):
    assert raw("range", comp(line16(pitch, "H", "R")))[0] == expected


def test_range_parameters_and_rests():
    values = raw("range", comp(line16(59, 60, 72, 73, "R", "H")), low=60, high=72, penalty=2.0)
    np.testing.assert_array_equal(values, [-2, 0, 0, -2, 0, 0])


# ---------------------------------------------------------------------------- rhythmic_variety
def _entropy(*counts):
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts)


@pytest.mark.parametrize(
    ("notes", "n_steps", "expected"),
    [
        ([(C4, 4 * i, 4) for i in range(8)], 32, 0.0),  # one duration
        ([(C4, 0, 4), (D4, 4, 4), (E4, 8, 4), (F4, 12, 4), (G4, 16, 8), (A4, 24, 8)], 32, _entropy(4, 2) / 1.5),
        ([(C4, 0, 4), (D4, 8, 4), (E4, 16, 8)], 32, _entropy(2, 1) / 1.5),  # rests are not durations
        ([(C4, 0, 2), (D4, 2, 2), (E4, 4, 4), (F4, 8, 4), (G4, 12, 8), (A4, 20, 8)], 28, 1.0),  # log2(3) > 1.5
        ([(C4, 0, 16), (D4, 16, 20)], 36, 0.0),  # 16 steps or more share a bin
        ([(C4, 0, 4), (D4, 4, 28)], 32, 1 / 1.5),
        ([(C4, 0, 8), (D4, 8, 1)], 9, 1 / 1.5),  # a note on the last step lasts 1
        ([(C4, 0, 3), (D4, 3, 6)], 9, 1 / 1.5),  # a note held to the end
        ([], 8, 0.0),
    ],
)
def test_rhythmic_variety_entropy(notes, n_steps, expected):
    values = raw("rhythmic_variety", comp(notes_to_tokens(notes, n_steps)))
    assert np.all(values[:-1] == 0.0)
    assert values[-1] == pytest.approx(expected, abs=1e-12)


def test_rhythmic_variety_parameters():
    tokens = notes_to_tokens([(C4, 0, 4), (D4, 4, 28)], 32)
    assert raw("rhythmic_variety", comp(tokens), target_bits=1.0, bonus=2.0)[-1] == pytest.approx(2.0)


# ---------------------------------------------------------------------------- rest_ratio
@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (notes_to_tokens([(C4, 0, 8), (D4, 12, 12)], 32), -5 * (12 / 32 - 0.25) / 0.75),  # 12 silent of 32
        ([HOLD] * 8 + [tok(C4)] + [HOLD] * 23, 0.0),  # 8 of 32 = max_ratio exactly
        ([HOLD] * 9 + [tok(C4)] + [HOLD] * 22, -5 * (9 / 32 - 0.25) / 0.75),  # a leading HOLD is silence
        ([REST] + [HOLD] * 31, -5.0),
        (notes_to_tokens([(C4, 0, 32)]), 0.0),
    ],
)
def test_rest_ratio(tokens, expected):
    values = raw("rest_ratio", comp(tokens))
    assert np.all(values[:-1] == 0.0)
    assert values[-1] == pytest.approx(expected, abs=1e-12)


def test_rest_ratio_parameters():
    tokens = notes_to_tokens([(C4, 0, 16)], 32)  # half silent
    assert raw("rest_ratio", comp(tokens), max_ratio=0.0, penalty=1.0)[-1] == pytest.approx(-0.5)


# ---------------------------------------------------------------------------- oracles
@settings(max_examples=100, deadline=None, derandomize=True)
@given(compositions())
def test_chord_terms_match_naive_oracles(c):
    names, values = rewards.score_steps(list(rewards.CHORD_TERMS), c)
    for j, name in enumerate(names):
        np.testing.assert_allclose(values[:, j], ORACLES[name](c), rtol=0, atol=1e-9, err_msg=name)
