"""Music theory tables and the token encoding: musical facts and round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicenv.encoding import (
    DEFAULT_GRID,
    HOLD,
    REST,
    EncodingError,
    Note,
    TokenGrid,
    durations,
    notes_to_tokens,
    pitch_class_octave,
    tokens_to_notes,
)
from musicenv.theory import (
    KEY_NAMES,
    N_CHORDS,
    NO_CHORD,
    Chord,
    Key,
    Meter,
    MusicTheoryError,
    chord_name,
    parse_chord,
    parse_key,
    parse_roman,
    resolve_progression,
)


def test_24_keys_and_their_scales():
    assert len(KEY_NAMES) == 24 and len(set(KEY_NAMES)) == 24
    assert Key.parse("C major").scale == (0, 2, 4, 5, 7, 9, 11)
    assert Key.parse("A minor").scale == (9, 11, 0, 2, 4, 5, 7)
    assert Key.parse("F# major").pitch_classes == frozenset({6, 8, 10, 11, 1, 3, 5})
    # minor keys also accept the raised 6th and 7th (F# and G# in A minor)
    assert Key.parse("a").pitch_classes == frozenset({9, 11, 0, 2, 4, 5, 7, 6, 8})
    assert parse_key("Bb") == 10 and parse_key("bb") == 22 and parse_key("Eb minor") == 15
    assert Key.parse(parse_key("G major")) == Key(7)


@pytest.mark.parametrize("bad", ["H major", "C lydian", 24, -1, ""])
def test_unknown_keys_are_rejected_with_what_is_accepted(bad):
    with pytest.raises(MusicTheoryError, match="accepted"):
        parse_key(bad)


def test_chord_qualities():
    assert Chord.parse("C").pitch_classes == (0, 4, 7)
    assert Chord.parse("Am").pitch_classes == (9, 0, 4)
    assert Chord.parse("Bdim").pitch_classes == (11, 2, 5)
    assert Chord.parse("Caug").pitch_classes == (0, 4, 8)
    assert Chord.parse("G7").pitch_classes == (7, 11, 2, 5)
    assert Chord.parse("Fmaj7").pitch_classes == (5, 9, 0, 4)
    assert Chord.parse("Dm7").pitch_classes == (2, 5, 9, 0)
    assert Chord.parse("Bm7b5").quality == "hdim7"
    assert parse_chord("N.C.") == NO_CHORD
    assert all(parse_chord(chord_name(c)) == c for c in range(N_CHORDS + 1))


@pytest.mark.parametrize("bad", ["X", "Cxyz", "H7", N_CHORDS + 1])
def test_unknown_chords_are_rejected(bad):
    with pytest.raises(MusicTheoryError):
        parse_chord(bad)


def test_roman_numerals_in_any_key():
    assert [chord_name(c) for c in resolve_progression("I-vi-IV-V7", "C major")] == ["C", "Am", "F", "G7"]
    assert [chord_name(c) for c in resolve_progression("I-vi-IV-V7", "Eb major")] == ["Eb", "Cm", "Ab", "Bb7"]
    assert [chord_name(c) for c in resolve_progression("i iv V7 i", "A minor")] == ["Am", "Dm", "E7", "Am"]
    assert chord_name(parse_roman("vii°", "C major")) == "Bdim"
    assert chord_name(parse_roman("bVII", "C major")) == "Bb"
    assert chord_name(parse_roman("iiø7", "A minor")) == "Bm7b5"
    assert [chord_name(c) for c in resolve_progression(["C", "G7", 0], "C major")] == ["C", "G7", "C"]
    with pytest.raises(MusicTheoryError, match="neither a roman numeral"):
        resolve_progression("I-Q-V", "C major")
    with pytest.raises(MusicTheoryError, match="empty"):
        resolve_progression("", "C major")


def test_meters():
    assert Meter.parse("4/4").steps_per_bar(4) == 16 and Meter.parse("4/4").strong_beats == (0, 2)
    assert Meter.parse("3/4").steps_per_bar(4) == 12 and Meter.parse("3/4").strong_beats == (0,)
    six_eight = Meter.parse("6/8")
    assert six_eight.beats_per_bar == 2 and six_eight.steps_per_beat(4) == 6 and six_eight.steps_per_bar(4) == 12
    with pytest.raises(MusicTheoryError, match="accepted"):
        Meter.parse("7/8")


def test_token_grid_matches_the_rl_tuner_vocabulary():
    g = DEFAULT_GRID
    assert g.vocab_size == 38 and g.token(48) == 2 and g.token(60) == 14 and g.token(83) == 37
    assert g.pitch(14) == 60 and g.token_name(14) == "C4" and g.token_name(REST) == "REST"
    with pytest.raises(EncodingError, match="48..83"):
        g.token(84)
    with pytest.raises(EncodingError, match="vocabulary"):
        g.check_tokens([0, 1, 38])
    with pytest.raises(EncodingError):
        TokenGrid(80, 70)


def test_tokens_to_notes_reads_rhythm_and_rests():
    tokens = [HOLD, 14, HOLD, HOLD, HOLD, REST, HOLD, 16, 18, HOLD]
    assert tokens_to_notes(tokens) == [Note(60, 1, 4), Note(62, 7, 1), Note(64, 8, 2)]
    assert tokens_to_notes(tokens, include_rests=True) == [
        Note(None, 0, 1), Note(60, 1, 4), Note(None, 5, 2), Note(62, 7, 1), Note(64, 8, 2)]
    pcs, octaves = pitch_class_octave(tokens)
    assert pcs.tolist() == [-1, 0, -1, -1, -1, -1, -1, 2, 4, -1] and octaves[1] == 5
    assert durations(tokens).tolist() == [4, 1, 2]


def test_notes_to_tokens_rejects_overlaps_and_out_of_range():
    with pytest.raises(EncodingError, match="overlaps"):
        notes_to_tokens([(60, 0, 4), (62, 2, 2)])
    with pytest.raises(EncodingError, match="range"):
        notes_to_tokens([(100, 0, 4)])
    with pytest.raises(EncodingError, match="n_steps"):
        notes_to_tokens([(60, 0, 8)], n_steps=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(48, 83), st.integers(0, 3), st.integers(1, 8)), max_size=20))
def test_notes_round_trip(raw):
    notes, t = [], 0
    for pitch, gap, dur in raw:
        t += gap
        notes.append(Note(pitch, t, dur))
        t += dur
    tokens = notes_to_tokens(notes, n_steps=t + 2)
    assert tokens_to_notes(tokens) == notes
    assert np.array_equal(notes_to_tokens(tokens_to_notes(tokens), n_steps=len(tokens)), tokens)
