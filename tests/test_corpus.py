"""Tests for musicenv.corpus: corpus pieces, hand-made files, the report, cache and splits."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from musicenv import corpus
from musicenv.composition import Composition
from musicenv.corpus import CorpusError, CorpusReport, Melody, MelodyCorpus, match_chord
from musicenv.encoding import REST, TokenGrid, tokens_to_notes
from musicenv.theory import NO_CHORD, Key, chord_name

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache directory through $MUSICENV_CACHE."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MUSICENV_CACHE", str(cache))
    return cache


def _load(source, **kwargs) -> MelodyCorpus:
    kwargs.setdefault("jobs", 1)
    kwargs.setdefault("progress", False)
    return corpus.load(source, **kwargs)


def _pitches(melody: Melody) -> list[int]:
    return [n.pitch for n in tokens_to_notes(melody.tokens, melody.grid)]


# ---- music21's corpus -------------------------------------------------------------------------
def test_bwv66_6_soprano_key_meter_and_length():
    from music21 import corpus as m21corpus

    c = _load("bach/bwv66.6")
    assert len(c) == 1
    m = c[0]
    score = m21corpus.parse("bach/bwv66.6")
    soprano = [n.pitch.midi for n in score.parts[0].stripTies().flatten().notes]
    assert _pitches(m) == soprano
    assert soprano[:3] == [73, 71, 69]  # C#5 B4 A4
    assert m.key == Key.parse("F# minor").index
    assert m.meter == "4/4"
    # One-beat upbeat: three beats of rest put the first downbeat on a bar line.
    assert m.pickup_steps == 12
    assert m.tokens[0] == REST and tokens_to_notes(m.tokens)[0].onset == 12
    assert m.n_steps == (score.parts[0].highestTime + 3) * 4
    assert m.id == "bach/bwv66.6"
    assert c.report.counts["pickup_padded"] == 1


def test_bwv66_6_chord_track_from_the_four_parts():
    m = _load("bach/bwv66.6")[0]
    assert len(m.chords) == m.n_steps
    assert np.all(m.chords[:12] == NO_CHORD)  # the padded rest
    assert chord_name(m.chords[12]) == "A"  # upbeat: A C# E in the lower voices
    assert chord_name(m.chords[16]) == "F#m"  # first downbeat: the tonic
    assert chord_name(m.chords[-1]) == "F#"  # Picardy third at the end
    # Constant within each beat.
    assert np.all(m.chords.reshape(-1, 4) == m.chords.reshape(-1, 4)[:, :1])


def test_bwv269_is_g_major_in_three_four():
    from music21 import corpus as m21corpus

    m = _load("bach/bwv269")[0]
    score = m21corpus.parse("bach/bwv269")
    assert m.key == Key.parse("G major").index
    assert m.meter == "3/4"
    assert m.n_steps == (score.parts[0].highestTime + m.pickup_steps / 4) * 4
    assert _pitches(m) == [n.pitch.midi for n in score.parts[0].stripTies().flatten().notes]


def test_chords_can_be_switched_off():
    m = _load("bach/bwv66.6", chords=False)[0]
    assert np.all(m.chords == NO_CHORD)


def test_one_essen_song_with_limit():
    c = _load("essen", limit=1)
    assert len(c) == 1
    m = c[0]
    assert m.id.startswith("essenFolksong/") and "#" in m.id
    assert m.meter in ("4/4", "3/4", "2/4", "6/8")
    assert m.title and m.title != m.id
    assert c.report.n_melodies == 1 and c.report.n_files == 1
    # Songs before it that were skipped are in the report; songs after the limit are not.
    number = int(m.id.split("#")[1])
    assert all(int(pid.split("#")[1]) < number for pid in c.report.skipped)


def test_unknown_name_lists_accepted_names():
    with pytest.raises(CorpusError, match="bach.*essen.*oneills"):
        _load("no-such-corpus-xyz")


# ---- hand-made files --------------------------------------------------------------------------
def _write_midi(path: Path) -> Path:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("time_signature", numerator=3, denominator=4))
    track.append(mido.MetaMessage("key_signature", key="Em"))
    # E4 quarter, an F#-G-A triplet, E7 (too high) and F#1 (too low) quarters.
    for pitch, ticks in [(64, 480), (66, 160), (67, 160), (69, 160), (100, 480), (30, 480)]:
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=ticks))
    mid.save(path)
    return path


def _write_musicxml(path: Path) -> Path:
    from music21 import chord, harmony, key, meter, note, stream

    part = stream.Part()
    part.append(meter.TimeSignature("6/8"))
    part.append(key.Key("D"))
    part.append(harmony.ChordSymbol("D"))
    part.append(note.Note("D5", quarterLength=1.5))
    part.append(note.Note("E5", quarterLength=0.5).getGrace())
    part.append(chord.Chord(["F#4", "A4", "D5"], quarterLength=1.5))
    part.append(harmony.ChordSymbol("A7"))
    part.append(note.Note("C#7", quarterLength=1.5))  # MIDI 97, above the range
    part.append(note.Rest(quarterLength=1.5))
    score = stream.Score([part])
    score.write("musicxml", fp=path)
    return path


def test_midi_file_triplet_quantized_and_out_of_range_folded(tmp_path: Path):
    c = _load(_write_midi(tmp_path / "tune.mid"))
    m = c[0]
    assert m.id == "tune.mid" and m.meter == "3/4" and m.key == Key.parse("E minor").index
    # Triplet onsets 1 1/3 and 1 2/3 beats round to steps 5 and 7; 100 -> 76, 30 -> 54.
    assert tokens_to_notes(m.tokens) == [(64, 0, 4), (66, 4, 1), (67, 5, 2), (69, 7, 1), (76, 8, 4), (54, 12, 4)]
    assert m.n_steps == 24  # two bars of 3/4, the second ending in a rest
    assert c.report.counts["quantized"] == 3
    assert c.report.counts["pitch_folded"] == 2
    assert c.report.problems["tune.mid"]["pitch_folded"] == 2


def test_musicxml_grace_dropped_chord_top_note_and_chord_symbols(tmp_path: Path):
    c = _load(_write_musicxml(tmp_path / "lead.musicxml"))
    m = c[0]
    assert m.meter == "6/8" and m.key == Key.parse("D major").index
    # The grace note goes, the chord gives its top D5, C#7 (97) comes down two octaves to C#5.
    assert tokens_to_notes(m.tokens) == [(74, 0, 6), (74, 6, 6), (73, 12, 6)]
    assert m.n_steps == 24
    assert c.report.counts["grace_dropped"] == 1
    assert c.report.counts["chord_top_note"] == 1
    assert c.report.counts["pitch_folded"] == 1
    assert c.report.counts["chords_from_symbols"] == 1
    assert [chord_name(code) for code, _, _ in m.to_composition().chord_segments()] == ["D", "A7"]
    assert m.to_composition().chord_segments()[1][1] == 12


def test_abc_fixture_pickup_triplet_grace_chords_and_skipped_meter():
    c = _load(DATA / "three_tunes.abc")
    assert c.ids == ["three_tunes.abc#1", "three_tunes.abc#3"]
    tune = c[0]
    assert tune.title == "Pickup, triplet and grace note"
    assert tune.meter == "3/4" and tune.key == Key.parse("G").index  # meter from the file header
    # Eighth-note upbeat in 3/4: 10 steps of rest; the triplet A B c is quantized to 1, 2, 1 steps.
    assert tune.pickup_steps == 10
    assert tokens_to_notes(tune.tokens) == [
        (62, 10, 2), (67, 12, 4), (69, 16, 1), (71, 17, 2), (72, 19, 1), (74, 20, 4), (74, 24, 8), (72, 32, 4),
        (71, 36, 12)]
    segs = [(chord_name(code), start, dur) for code, start, dur in tune.to_composition().chord_segments()]
    assert segs == [("N.C.", 0, 12), ("G", 12, 12), ("D7", 24, 12), ("G", 36, 12)]
    low = c[1]
    assert low.key == Key.parse("A minor").index and low.meter == "2/4"
    assert _pitches(low) == [57, 64, 69]  # A2 folded up to A3
    counts = c.report.counts
    assert counts["quantized"] == 3 and counts["grace_dropped"] == 1 and counts["pitch_folded"] == 1
    assert counts["skipped_unsupported_meter"] == 1
    assert "5/4" in c.report.skipped["three_tunes.abc#2"]


def test_repeated_abc_tunes_load_once(tmp_path: Path):
    tune = "T:Twice\nM:2/4\nL:1/8\nK:C\nCDEF | G4 |]\n"
    (tmp_path / "twice.abc").write_text(f"X:1\n{tune}\nX:2\n{tune}\nX:3\nT:Other\nM:2/4\nL:1/8\nK:C\nGFED | C4 |]\n")
    c = _load(tmp_path / "twice.abc")
    assert c.ids == ["twice.abc#1", "twice.abc#3"]
    assert c.report.counts["skipped_duplicate"] == 1
    assert "twice.abc#2" in c.report.problems
    # O'Neill's numbers identify tunes across the collection's overlapping files.
    tasks = [corpus._Task("a.abc", "a", "abc", [("a#0550", "X:550\nT:x\nK:C\nC|]\n")]),
             corpus._Task("b.abc", "b", "abc", [("b#550", "X:550\nT:y\nK:C\nD|]\n"),
                                                ("b#551", "X:551\nT:z\nK:C\nE|]\n")])]
    kept, dupes = corpus._dedupe_tunes(tasks, by_number=True)
    assert dupes == ["b#550"] and [pid for t in kept for pid, _ in t.tunes] == ["a#0550", "b#551"]


def test_corrupt_files_are_reported_by_name_and_the_rest_loads(tmp_path: Path):
    folder = tmp_path / "songs"
    folder.mkdir()
    _write_midi(folder / "good.mid")
    (folder / "broken.mid").write_bytes(b"\x00\x01garbage, not a MIDI file\xff" * 4)
    (folder / "broken.xml").write_bytes(b"<score-partwise><part id='P1'><measure")
    (folder / "notes.txt").write_text("ignored: not a score")
    c = _load(folder)
    assert c.ids == ["good.mid"]
    assert c.report.counts["skipped_unreadable"] == 2
    names = {Path(name).name for name in c.report.errors}
    assert names == {"broken.mid", "broken.xml"}
    assert all(msg for msg in c.report.errors.values())
    assert "broken.xml" in c.report.summary()


def test_extract_melody_from_a_music21_stream():
    from music21 import meter, note, stream

    part = stream.Part([meter.TimeSignature("2/4"), note.Note("C4", quarterLength=0.5),
                        note.Note("D4", quarterLength=0.125), note.Note("E4", quarterLength=1.375),
                        note.Note("G4"), note.Note("C5")])
    melody, counts = corpus.extract_melody(part, piece_id="tiny")
    # The 32nd note D4 rounds to one 16th step; E4 then starts at step 3 (2.5 rounds up).
    assert tokens_to_notes(melody.tokens) == [(60, 0, 2), (62, 2, 1), (64, 3, 5), (67, 8, 4), (72, 12, 4)]
    assert melody.key == Key.parse("C major").index and counts["key_analyzed"] == 1
    assert counts["quantized"] == 2
    with pytest.raises(CorpusError, match="5/4"):
        corpus.extract_melody(stream.Part([meter.TimeSignature("5/4"), note.Note("C4")]))


def test_nothing_loadable_raises(tmp_path: Path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"junk")
    with pytest.raises(CorpusError, match="no melodies"):
        _load(bad)


def test_bad_inputs_raise_corpus_error(tmp_path: Path):
    with pytest.raises(CorpusError, match="does not exist"):
        _load(tmp_path / "missing.mid")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CorpusError, match="unknown file type"):
        _load(tmp_path / "notes.txt")
    with pytest.raises(CorpusError, match="limit"):
        _load("bach", limit=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no"):
        _load(tmp_path / "empty")


# ---- cache ------------------------------------------------------------------------------------
def test_second_load_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _cache_in_tmp: Path):
    folder = tmp_path / "songs"
    folder.mkdir()
    _write_midi(folder / "a.mid")
    _write_musicxml(folder / "b.musicxml")
    first = _load(folder)
    assert not first.report.from_cache
    assert sorted(p.suffix for p in _cache_in_tmp.iterdir()) == [".json", ".npz"]

    def no_parsing(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(corpus, "_parse_task", no_parsing)
    second = _load(folder)
    assert second.report.from_cache
    assert second.ids == first.ids
    for a, b in zip(first, second):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.chords, b.chords)
        assert (a.key, a.meter, a.title, a.pickup_steps) == (b.key, b.meter, b.title, b.pickup_steps)
    assert second.report.counts == first.report.counts
    assert second.report.problems == first.report.problems

    # A different grid, chord option or limit is a different cache entry: it must parse.
    for kwargs in ({"grid": TokenGrid(steps_per_quarter=2)}, {"grid": TokenGrid(min_pitch=40)},
                   {"chords": True}, {"limit": 1}):
        with pytest.raises(AssertionError, match="cache should have been used"):
            _load(folder, **kwargs)
    # So is a changed file.
    time.sleep(0.01)
    _write_midi(folder / "a.mid")
    with pytest.raises(AssertionError, match="cache should have been used"):
        _load(folder)


def test_cache_key_separates_grids_and_sources():
    key = corpus._cache_key
    base = key("bach", ["bach"], TokenGrid(), True, None)
    assert base == key("bach", ["bach"], TokenGrid(), True, None)
    assert len({base, key("bach", ["bach"], TokenGrid(steps_per_quarter=2), True, None),
                key("bach", ["bach"], TokenGrid(max_pitch=84), True, None),
                key("bach", ["bach"], TokenGrid(), False, None),
                key("essen", ["essen"], TokenGrid(), True, None),
                key("bach", ["bach"], TokenGrid(), True, 10)}) == 6


def test_corrupt_cache_is_ignored_and_rewritten(tmp_path: Path, _cache_in_tmp: Path):
    first = _load(DATA / "three_tunes.abc")
    npz = next(_cache_in_tmp.glob("*.npz"))
    npz.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable corpus cache"):
        again = _load(DATA / "three_tunes.abc")
    assert not again.report.from_cache and again.ids == first.ids
    assert _load(DATA / "three_tunes.abc").report.from_cache


def test_report_round_trips_through_json():
    report = CorpusReport(source="x", n_files=2, n_melodies=1)
    report.count("quantized", 3, piece="p")
    report.errors["bad.mid"] = "MidiException: bad header"
    assert CorpusReport.from_dict(report.to_dict()) == report


def test_parallel_parse_matches_serial():
    works = ["bach/bwv66.6", "bach/bwv269", "bach/bwv347"]
    serial = _load(works, cache=False)
    parallel = corpus.load(works, jobs=2, progress=False, cache=False)
    assert serial.ids == parallel.ids == works
    for a, b in zip(serial, parallel):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.chords, b.chords)


# ---- splits and helpers -----------------------------------------------------------------------
def _synthetic(ids: list[str]) -> MelodyCorpus:
    tokens = np.array([2, 1, 0, 3], dtype=np.int64)
    mels = [Melody(tokens, 0, "4/4", np.full(4, NO_CHORD), pid) for pid in ids]
    return MelodyCorpus(mels, CorpusReport(source="synthetic"), name="synthetic")


def test_split_is_deterministic_disjoint_and_stable_when_pieces_are_added():
    c = _synthetic([f"piece{i}" for i in range(1000)])
    train, valid, test = c.split(seed=0)
    again = c.split(seed=0)
    assert (train.ids, valid.ids, test.ids) == (again.train.ids, again.valid.ids, again.test.ids)
    assert not set(train.ids) & set(valid.ids) and not set(train.ids) & set(test.ids)
    assert not set(valid.ids) & set(test.ids)
    assert sorted(train.ids + valid.ids + test.ids) == sorted(c.ids)
    assert 50 <= len(valid) <= 150 and 50 <= len(test) <= 150
    bigger = _synthetic([f"piece{i}" for i in range(1200)]).split(seed=0)
    assert set(test.ids) <= set(bigger.test.ids) and set(valid.ids) <= set(bigger.valid.ids)
    other = c.split(seed=1)
    assert other.test.ids != test.ids
    with pytest.raises(CorpusError):
        c.split(valid=0.6, test=0.5)


def test_helpers_give_token_arrays_and_compositions():
    c = _load(DATA / "three_tunes.abc")
    arrays = c.token_arrays()
    assert [len(a) for a in arrays] == [48, 16]
    comps = c.compositions()
    assert all(isinstance(x, Composition) for x in comps)
    assert np.array_equal(comps[0].tokens, arrays[0]) and comps[0].meter.numerator == 3
    assert comps[0].key == Key.parse("G major")
    assert comps[0].chord_symbols() == ["N.C.", "G", "D7", "G"]


# ---- chord matching ---------------------------------------------------------------------------
def _pcs(*names: str) -> np.ndarray:
    from musicenv.theory import parse_pitch_class

    w = np.zeros(12)
    for n in names:
        w[parse_pitch_class(n)] += 1
    return w


@pytest.mark.parametrize("tones, bass, expected", [
    (("C", "E", "G"), None, "C"),
    (("A", "C", "E"), None, "Am"),
    (("B", "D", "F"), None, "Bdim"),
    (("G", "B", "D", "F"), None, "G7"),
    (("D", "F", "A", "C"), None, "Dm7"),
    (("G", "B", "F"), None, "G7"),  # dominant seventh without its fifth
    (("C", "E"), "C", "C"),  # open third over the root
    (("C", "E", "G", "E", "C", "G", "D"), None, "C"),  # a passing D does not change the chord
    (("B", "D", "F", "Ab"), "B", "Bdim7"),  # symmetric chord: the bass names the root
    (("C",), None, "N.C."),  # a unison is not a chord
    ((), None, "N.C."),
    (("C", "C#", "D", "Eb", "E"), None, "N.C."),  # a cluster is not recognisable
])
def test_match_chord(tones, bass, expected):
    from musicenv.theory import parse_pitch_class

    b = None if bass is None else parse_pitch_class(bass)
    assert chord_name(match_chord(_pcs(*tones), b)) == expected


def test_match_chord_rejects_bad_weights():
    with pytest.raises(ValueError, match="12 non-negative"):
        match_chord([1, 2, 3])
    # With the root fixed (as for a chord symbol) the closest quality on that root wins.
    assert chord_name(match_chord(_pcs("C", "E", "G"), root=9, min_fit=0.0)) == "Am7"


# ---- the whole Bach corpus --------------------------------------------------------------------
@pytest.mark.slow
def test_full_bach_corpus(_cache_in_tmp: Path):
    t0 = time.perf_counter()
    c = corpus.load("bach", jobs=2, progress=False)
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached = corpus.load("bach", progress=False)
    cached_s = time.perf_counter() - t0
    print(f"\nbach: {len(c)} chorales parsed in {parse_s:.1f} s, loaded from cache in {cached_s:.3f} s")
    print(c.report.summary())
    # 371 Riemenschneider chorales, 21 listed twice, a handful in 3/2, 12/8 or changing meter.
    assert 330 <= len(c) <= 371
    assert c.report.counts["skipped_duplicate"] == 21
    assert cached.report.from_cache and cached.ids == c.ids
    assert cached_s < 1.0
    assert all(m.meter in ("4/4", "3/4", "2/4", "6/8") for m in c)
    pitches = np.concatenate([c.grid.pitch_table()[m.tokens] for m in c])
    sung = pitches[pitches >= 0]
    # A soprano's range (bwv254 dips to A3), not a trumpet's or a violin's.
    assert 57 <= sung.min() and sung.max() <= 81
    assert np.mean(np.concatenate(c.chord_arrays()) != NO_CHORD) > 0.9
