"""Composition exports: MIDI (mido round trip) and MusicXML (music21 round trip)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from fractions import Fraction

import mido
import numpy as np
import pytest

from musicenv.composition import Composition, spell_pitch_class
from musicenv.encoding import HOLD, REST, TokenGrid, notes_to_tokens
from musicenv.theory import CHORD_PC_MASK, NO_CHORD, Chord, Key, parse_chord

C_MAJOR_SCALE = [(60, 0, 4), (62, 4, 4), (64, 8, 4), (65, 12, 4), (67, 16, 4), (69, 20, 4), (71, 24, 4), (72, 28, 4)]


def c_major_scale() -> Composition:
    """C4..C5 in quarter notes over C | F, 4/4."""
    return Composition.from_progression(notes_to_tokens(C_MAJOR_SCALE, n_steps=32), "I-IV-V-I", key="C major",
                                        title="C major scale")


def a_minor_waltz() -> Composition:
    """3/4 in A minor, 4 bars of 12 sixteenths: a leading HOLD (reads as a rest),
    rests (trailing one included), a 5-step note, notes tied across the barlines
    at steps 12 (C5, steps 10..14) and 36 (A4, steps 26..42)."""
    notes = [(69, 2, 3), (71, 5, 5), (72, 10, 4), (68, 16, 8), (69, 26, 16)]
    tokens = notes_to_tokens(notes, n_steps=48)
    tokens[0] = HOLD
    return Composition.from_progression(tokens, "i-iv-V", key="A minor", meter="3/4", title="waltz", tempo=132)


def f_sharp_six_eight() -> Composition:
    """6/8 in F# major with a note tied over the barline (steps 9..18)."""
    tokens = notes_to_tokens([(66, 0, 6), (70, 6, 3), (73, 9, 9), (70, 20, 4)], n_steps=24)
    return Composition.from_progression(tokens, "I-V7", key="F# major", meter="6/8", tempo=60)


def db_triplets() -> Composition:
    """Triplet eighths (3 steps per quarter) in Db major."""
    grid = TokenGrid(steps_per_quarter=3)
    tokens = notes_to_tokens([(61, 0, 1), (63, 1, 1), (65, 2, 1), (66, 3, 5), (68, 8, 4)], n_steps=12, grid=grid)
    return Composition.from_progression(tokens, "I-ii", key="Db major", chords_per_bar=2, grid=grid)


ALL_CASES = {"c_major_scale": c_major_scale, "a_minor_waltz": a_minor_waltz,
             "f_sharp_six_eight": f_sharp_six_eight, "db_triplets": db_triplets}


# ---- MIDI --------------------------------------------------------------------------------
def read_midi_notes(midi: mido.MidiFile, channel: int) -> list[tuple[int, int, int]]:
    """(pitch, onset tick, duration ticks) of every note on ``channel``, by onset then pitch."""
    out, sounding = [], {}
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type not in ("note_on", "note_off") or msg.channel != channel:
                continue
            if msg.type == "note_on" and msg.velocity > 0:
                assert msg.note not in sounding, f"note {msg.note} struck twice without release"
                sounding[msg.note] = (tick, msg.velocity)
            else:
                start, _ = sounding.pop(msg.note)
                out.append((msg.note, start, tick - start))
    assert not sounding, "notes left hanging at the end of the file"
    return sorted(out, key=lambda n: (n[1], n[0]))


def meta(midi: mido.MidiFile, kind: str) -> list[mido.MetaMessage]:
    return [m for track in midi.tracks for m in track if m.type == kind]


@pytest.mark.parametrize("case", list(ALL_CASES))
def test_midi_round_trip_melody_and_header(tmp_path, case):
    comp = ALL_CASES[case]()
    path = comp.to_midi(tmp_path / "piece.mid")
    assert path == tmp_path / "piece.mid"
    midi = mido.MidiFile(path)
    assert midi.type == 1 and midi.ticks_per_beat == 480
    tps = 480 // comp.grid.steps_per_quarter

    melody = read_midi_notes(midi, channel=0)
    assert [(p, on // tps, dur // tps) for p, on, dur in melody] == [tuple(n) for n in comp.notes()]
    assert all(on % tps == 0 and dur % tps == 0 for _, on, dur in melody)

    (tempo,) = meta(midi, "set_tempo")
    assert mido.tempo2bpm(tempo.tempo) == pytest.approx(comp.tempo, rel=1e-5)
    (ts,) = meta(midi, "time_signature")
    assert (ts.numerator, ts.denominator) == (comp.meter.numerator, comp.meter.denominator)
    names = [m.name for m in meta(midi, "track_name")]
    assert names == [comp.title, "Melody", "Chords"]
    # The file lasts the whole composition, trailing rests included.
    assert max(sum(m.time for m in track) for track in midi.tracks) == comp.n_steps * tps


def test_midi_pitches_are_not_transposed(tmp_path):
    # The RL Tuner's exporter wrote everything two semitones high; middle C must stay MIDI 60.
    midi = mido.MidiFile(c_major_scale().to_midi(tmp_path / "scale.mid"))
    assert [p for p, _, _ in read_midi_notes(midi, 0)] == [60, 62, 64, 65, 67, 69, 71, 72]


@pytest.mark.parametrize("key, expected", [
    ("C major", "C"), ("A minor", "Am"), ("F# minor", "F#m"), ("Bb major", "Bb"),
    ("C# major", "Db"), ("G# minor", "G#m"), ("Eb minor", "Ebm"), ("F# major", "F#"),
])
def test_midi_key_signature(tmp_path, key, expected):
    comp = Composition(notes_to_tokens([(60, 0, 4)], n_steps=4), key=key)
    (ks,) = meta(mido.MidiFile(comp.to_midi(tmp_path / "k.mid")), "key_signature")
    assert ks.key == expected


def test_midi_chord_track_plays_each_chord_low_and_quiet(tmp_path):
    comp = c_major_scale()  # C for bar 1, F for bar 2
    midi = mido.MidiFile(comp.to_midi(tmp_path / "c.mid"))
    chord_notes = read_midi_notes(midi, channel=1)
    by_onset: dict[int, list[tuple[int, int]]] = {}
    for pitch, onset, dur in chord_notes:
        by_onset.setdefault(onset, []).append((pitch, dur))
    assert sorted(by_onset) == [0, 16 * 120]
    assert [p for p, _ in by_onset[0]] == [48, 52, 55]  # C3 E3 G3
    assert [p for p, _ in by_onset[16 * 120]] == [53, 57, 60]  # F3 A3 C4: root in octave 3, stacked above
    assert all(d == 16 * 120 for chord in by_onset.values() for _, d in chord)

    velocities = {ch: {m.velocity for t in midi.tracks for m in t if m.type == "note_on" and m.channel == ch}
                  for ch in (0, 1)}
    assert max(velocities[1]) < min(velocities[0])
    programs = {m.channel: m.program for t in midi.tracks for m in t if m.type == "program_change"}
    assert programs[0] == 0 and programs[1] != programs[0]


@pytest.mark.parametrize("chord", [Chord(0), Chord(9, "min"), Chord(7, "dom7"), Chord(11, "dim"), Chord(5, "maj7"),
                                   Chord(2, "min7"), Chord(11, "hdim7"), Chord(0, "aug"), Chord(2, "sus4"),
                                   Chord(1, "dim7"), Chord(7, "sus2")], ids=str)
def test_chord_voicing_holds_the_chord_tones_with_root_in_octave_3(chord):
    code = chord.code
    voicing = Composition(np.zeros(0, dtype=np.int64)).chord_voicing(code)
    assert 48 <= voicing[0] <= 59
    assert voicing == sorted(voicing)
    assert {p % 12 for p in voicing} == set(np.flatnonzero(CHORD_PC_MASK[code]).tolist())


def test_midi_skips_no_chord_segments(tmp_path):
    tokens = notes_to_tokens([(64, 0, 16), (67, 16, 16)], n_steps=32)
    chords = [NO_CHORD] * 16 + [parse_chord("G")] * 16
    midi = mido.MidiFile(Composition(tokens, chords=chords).to_midi(tmp_path / "nc.mid"))
    assert read_midi_notes(midi, channel=1) == [(55, 16 * 120, 16 * 120), (59, 16 * 120, 16 * 120),
                                                (62, 16 * 120, 16 * 120)]


def test_midi_repeated_pitch_is_released_before_it_is_struck_again(tmp_path):
    tokens = notes_to_tokens([(60, 0, 2), (60, 2, 2), (60, 4, 4)], n_steps=8)
    midi = mido.MidiFile(Composition(tokens).to_midi(tmp_path / "rep.mid"))
    assert read_midi_notes(midi, 0) == [(60, 0, 240), (60, 240, 240), (60, 480, 480)]


def test_midi_of_an_empty_composition(tmp_path):
    midi = mido.MidiFile(Composition(np.zeros(0, dtype=np.int64)).to_midi(tmp_path / "empty.mid"))
    assert read_midi_notes(midi, 0) == [] and read_midi_notes(midi, 1) == []


def test_midi_rejects_a_tempo_midi_cannot_store(tmp_path):
    comp = Composition(notes_to_tokens([(60, 0, 4)], n_steps=4), tempo=1.0)
    with pytest.raises(ValueError, match="tempo"):
        comp.to_midi(tmp_path / "slow.mid")
    assert list(tmp_path.iterdir()) == []


# ---- pitch spelling ----------------------------------------------------------------------
@pytest.mark.parametrize("pc, key, name", [
    (6, "D major", "F#"), (1, "Ab major", "Db"), (11, "Db major", "Cb"), (5, "F# major", "E#"),
    (8, "A minor", "G#"), (6, "A minor", "F#"), (11, "C minor", "B"), (4, "Bb minor", "E"),
    (10, "C major", "Bb"), (6, "C major", "F#"), (1, "C major", "C#"), (10, "A minor", "Bb"),
])
def test_spell_pitch_class_in_key(pc, key, name):
    assert spell_pitch_class(pc, Key.parse(key)) == name


# ---- music21 / MusicXML ------------------------------------------------------------------
def melody_events(part) -> list[tuple[int, Fraction, Fraction]]:
    """(MIDI pitch, onset in quarters, length in quarters) of the notes of a music21 part,
    ties merged."""
    from music21 import harmony, note

    flat = part.stripTies().flatten()
    return [(n.pitch.midi, Fraction(n.offset).limit_denominator(96), Fraction(n.quarterLength).limit_denominator(96))
            for n in flat.notes if isinstance(n, note.Note) and not isinstance(n, harmony.Harmony)]


def expected_events(comp: Composition) -> list[tuple[int, Fraction, Fraction]]:
    spq = comp.grid.steps_per_quarter
    return [(n.pitch, Fraction(n.onset, spq), Fraction(n.duration, spq)) for n in comp.notes()]


@pytest.mark.parametrize("case, symbols", [
    ("c_major_scale", [("C", "major"), ("F", "major")]),
    ("a_minor_waltz", [("A", "minor"), ("D", "minor"), ("E", "major"), ("A", "minor")]),
    ("f_sharp_six_eight", [("F#", "major"), ("C#", "dominant-seventh")]),
])
def test_musicxml_round_trip(tmp_path, case, symbols):
    from music21 import converter, harmony, key, meter

    comp = ALL_CASES[case]()
    path = comp.to_musicxml(tmp_path / "piece.musicxml")
    score = converter.parse(str(path))
    melody = score.parts[0]
    assert [p.partName for p in score.parts] == ["Melody", "Chords"]
    assert score.metadata.bestTitle == comp.title

    assert melody_events(melody) == expected_events(comp)
    (k,) = melody.flatten().getElementsByClass(key.Key)
    assert (k.tonic.pitchClass, k.mode) == (comp.key.tonic, "minor" if comp.key.minor else "major")
    (ts,) = melody.flatten().getElementsByClass(meter.TimeSignature)
    assert ts.ratioString == str(comp.meter)

    parsed = list(melody.flatten().getElementsByClass(harmony.ChordSymbol))
    assert [(cs.root().name, cs.chordKind) for cs in parsed] == symbols
    spq = comp.grid.steps_per_quarter
    assert [Fraction(cs.offset) for cs in parsed] == [Fraction(on, spq) for _, on, _ in comp.chord_segments()]


def test_musicxml_ties_notes_across_barlines_and_keeps_leading_rest(tmp_path):
    from music21 import converter, harmony, note

    comp = a_minor_waltz()
    melody = converter.parse(str(comp.to_musicxml(tmp_path / "waltz.musicxml"))).parts[0]
    measures = list(melody.getElementsByClass("Measure"))
    assert len(measures) == 4
    first = [el for el in measures[0].notesAndRests if not isinstance(el, harmony.Harmony)]
    # The leading HOLD is a rest of 2 sixteenths before the first note.
    assert isinstance(first[0], note.Rest) and first[0].quarterLength == 0.5
    tied = [n for n in melody.flatten().notes if isinstance(n, note.Note) and n.tie is not None]
    # C5 (steps 10..14) crosses bar 1|2, A4 (steps 26..42) crosses bar 3|4: each is tied
    # from the end of one bar to a note that starts the next.
    for bar, midi in ((2, 72), (4, 69)):
        opening = next(n for n in measures[bar - 1].notesAndRests if not isinstance(n, harmony.Harmony))
        assert (opening.offset, opening.pitch.midi, opening.tie.type) == (0, midi, "stop")
    assert {(n.pitch.midi, n.measureNumber) for n in tied} >= {(72, 1), (72, 2), (69, 3), (69, 4)}


def test_to_music21_spells_for_the_key_and_adds_a_chords_part():
    from music21 import chord, harmony

    comp = db_triplets()
    score = comp.to_music21()
    melody, chords = score.parts
    names = [n.pitch.name for n in melody.flatten().notes if not isinstance(n, harmony.Harmony)]
    assert names == ["D-", "E-", "F", "G-", "A-"]
    assert [s.figure for s in melody.flatten().getElementsByClass(harmony.ChordSymbol)] == ["D-", "E-m"]
    blocks = list(chords.flatten().getElementsByClass(chord.Chord))
    assert [[p.nameWithOctave for p in c.pitches] for c in blocks] == [["D-3", "F3", "A-3"], ["E-3", "G-3", "B-3"]]
    assert [float(c.offset) for c in blocks] == [0.0, 2.0]


def test_compressed_musicxml(tmp_path):
    from music21 import converter

    comp = c_major_scale()
    path = comp.to_musicxml(tmp_path / "scale.mxl")
    assert zipfile.is_zipfile(path)
    assert melody_events(converter.parse(str(path)).parts[0]) == expected_events(comp)


def test_to_music21_of_an_empty_composition():
    score = Composition(np.array([], dtype=np.int64)).to_music21()
    assert len(score.parts[0].flatten().notes) == 0


def test_importing_composition_and_render_does_not_import_music21_mido_or_pil():
    code = (
        "import sys, numpy as np\n"
        "import musicenv.composition, musicenv.render\n"
        "c = musicenv.composition.Composition(np.array([2, 1, 0], dtype=np.int64))\n"
        "musicenv.render.render_ansi(c)\n"
        "print(sorted(m for m in ('music21', 'mido', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_chord_segments_can_cover_the_planned_length():
    chords = [parse_chord("C")] * 16 + [parse_chord("G")] * 16
    comp = Composition(np.array([REST] * 8, dtype=np.int64), chords=chords)
    assert comp.chord_segments() == [(parse_chord("C"), 0, 8)]
    assert comp.chord_segments(32) == [(parse_chord("C"), 0, 16), (parse_chord("G"), 16, 16)]
    assert comp.chord_segments(100) == comp.chord_segments(32)  # never past the chord track


def test_key_names_spell_the_tonic_as_the_key_signature_does():
    from musicenv.theory import Key

    assert Key.parse("Ab minor").name == "G# minor" and Key.parse("Db minor").name == "C# minor"
    assert Key.parse("C# major").name == "Db major" and Key.parse("Gb major").name == "F# major"
    assert Key.parse("Eb minor").name == "Eb minor"


@pytest.mark.parametrize("notes, clef", [
    ([(48, 0, 4), (50, 4, 4), (52, 8, 4), (55, 12, 4)], "BassClef"),   # C3..G3
    ([(60, 0, 4), (67, 4, 4), (64, 8, 4), (72, 12, 4)], "TrebleClef"),  # C4..C5
    ([(79, 0, 8), (83, 8, 8)], "TrebleClef"),
])
def test_melody_clef_follows_the_range(notes, clef):
    from music21 import clef as m21clef

    score = Composition.from_progression(notes_to_tokens(notes, 16), "C", key="C major").to_music21()
    clefs = list(score.parts[0].recurse().getElementsByClass(m21clef.Clef))
    assert [type(c).__name__ for c in clefs] == [clef]
    assert [type(c).__name__ for c in score.parts[1].recurse().getElementsByClass(m21clef.Clef)] == ["BassClef"]
