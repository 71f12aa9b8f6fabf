"""Text and RGB piano rolls, PNG files, and the safe writer every export uses."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from musicenv.composition import Composition
from musicenv.encoding import TokenGrid, notes_to_tokens
from musicenv.render import (
    RGB_HEADER_H,
    RGB_KEYBOARD_W,
    render_ansi,
    render_rgb,
    rgb_layout,
    save_png,
    write_atomically,
)
from musicenv.theory import resolve_progression

C_MAJOR_SCALE = [(60, 0, 4), (62, 4, 4), (64, 8, 4), (65, 12, 4), (67, 16, 4), (69, 20, 4), (71, 24, 4), (72, 28, 4)]


def scale() -> Composition:
    return Composition.from_progression(notes_to_tokens(C_MAJOR_SCALE, n_steps=32), "I-IV-V-I", key="C major")


def planned(tokens, progression="I-vi-ii-V7", n_steps=64, key="C major") -> Composition:
    """A composition written up to ``len(tokens)`` over a chord track planned for ``n_steps``."""
    codes = np.asarray(resolve_progression(progression, key))
    chords = codes[np.arange(n_steps) // 16 % len(codes)]
    return Composition(np.asarray(tokens, dtype=np.int64), key=key, chords=chords)


def row(text: str, label: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.split(" ", 1)[0] == label]
    return line


def cells(line: str) -> str:
    """A pitch row without its label."""
    return line[line.index("|"):]


# ---- ansi --------------------------------------------------------------------------------
def test_ansi_scale_shows_names_bars_chords_and_notes():
    text = render_ansi(scale())
    lines = text.splitlines()
    assert lines[0].split() == ["1", "2"]  # bar numbers
    assert lines[1].split() == ["C", "F"]  # the chord of each bar, at its onset
    assert lines[2].strip() == "|1...2...3...4...|1...2...3...4...|"
    # Each scale note starts (#) and is held (=) on its own row, one beat each.
    assert cells(row(text, "C4")) == "|#===············|················|"
    assert cells(row(text, "G4")) == "|················|#===············|"
    assert cells(row(text, "C5")) == "|················|············#===|"
    # Pitches outside C major are blank rows; the span is the notes' plus a margin.
    assert cells(row(text, "C#4")) == "|                |                |"
    labels = [ln.split(" ", 1)[0] for ln in lines[3:-1]]
    assert labels[0] == "D5" and labels[-1] == "Bb3"
    assert sum(cells(ln).count("#") for ln in lines[3:-1]) == len(C_MAJOR_SCALE)
    assert lines[-1].startswith("C major, 4/4") and "32/32 steps written" in lines[-1]


def test_ansi_chord_symbol_sits_above_its_onset():
    text = render_ansi(scale())
    chord_line, ruler = text.splitlines()[1:3]
    assert chord_line.index("F") == ruler.index("|1", 5) + 1  # over beat 1 of bar 2


def test_ansi_unfinished_composition_shows_the_plan():
    comp = planned(notes_to_tokens([(60, 0, 4), (64, 4, 6)], n_steps=10))
    text = render_ansi(comp, n_steps=64)
    lines = text.splitlines()
    assert lines[0].split() == ["1", "2", "3", "4"]
    assert lines[1].split() == ["C", "Am", "Dm", "G7"]
    assert cells(row(text, "E4")) == "|····#=====      |                |                |                |"
    assert "10/64 steps written" in lines[-1]
    assert len({len(ln) for ln in lines[2:-1]}) == 1  # ruler and every pitch row align


def test_ansi_empty_composition_shows_an_octave_around_middle_c():
    text = render_ansi(planned([], n_steps=16), n_steps=16)
    labels = [ln.split(" ", 1)[0] for ln in text.splitlines()[3:-1]]
    assert labels[0] == "F#4" and labels[-1] == "F#3" and "C4" in labels
    assert "#" not in "".join(cells(ln) for ln in text.splitlines()[3:-1])
    assert render_ansi(Composition(np.zeros(0, dtype=np.int64)))  # nothing planned either


def test_ansi_minor_key_and_compound_meter():
    comp = Composition.from_progression(notes_to_tokens([(69, 0, 6), (68, 6, 6)], n_steps=12), "i-V",
                                        key="A minor", meter="6/8", chords_per_bar=2)
    text = render_ansi(comp)
    assert text.splitlines()[1].split() == ["Am", "E"]
    assert text.splitlines()[2].strip() == "|1.....2.....|"
    # G# is the leading tone of A minor: spelled as such, and its row is in key.
    assert cells(row(text, "G#4")) == "|······#=====|"
    assert cells(row(text, "Bb4")) == "|            |"


def test_ansi_labels_follow_the_key_spelling():
    comp = Composition(notes_to_tokens([(60, 0, 4), (61, 4, 4)], n_steps=8), key="C# minor")
    labels = [ln.split(" ", 1)[0] for ln in render_ansi(comp).splitlines()[3:-1]]
    assert "B#3" in labels and "C#4" in labels and "C4" not in labels  # MIDI 60 is B#3 here


def test_ansi_chord_symbols_follow_the_key_spelling():
    comp = Composition.from_progression(notes_to_tokens([(61, 0, 16)], n_steps=16), "i-V", key="C# minor",
                                        chords_per_bar=2)
    assert render_ansi(comp).splitlines()[1].split() == ["C#m", "G#"]


def test_ansi_rejects_n_steps_shorter_than_the_composition():
    with pytest.raises(ValueError, match="n_steps=8 is shorter"):
        render_ansi(scale(), n_steps=8)


# ---- rgb ---------------------------------------------------------------------------------
def test_rgb_shape_depends_only_on_grid_and_length():
    a = render_rgb(scale(), n_steps=64)
    b = render_rgb(planned(notes_to_tokens([(83, 0, 2), (48, 2, 30)], n_steps=32), key="F# minor"), n_steps=64)
    c = render_rgb(planned([]), n_steps=64)
    layout = rgb_layout(scale(), 64)
    assert a.shape == b.shape == c.shape == (layout["height"], layout["width"], 3)
    assert a.dtype == np.uint8 and a.flags.c_contiguous
    assert not np.array_equal(a, b)
    assert layout["height"] > TokenGrid().n_pitches * layout["px_per_pitch"]  # header band above the rows


def test_rgb_draws_notes_where_they_sound():
    comp = scale()
    img = render_rgb(comp, n_steps=32)
    lay = rgb_layout(comp, 32)
    ps, pp = lay["px_per_step"], lay["px_per_pitch"]
    top = lay["height"] - comp.grid.n_pitches * pp
    left = lay["width"] - 1 - 32 * ps

    def cell(pitch: int, step: int) -> np.ndarray:
        y = top + (comp.grid.max_pitch - pitch) * pp + pp // 2
        return img[y, left + step * ps + ps // 2]

    note_colour = cell(60, 1)
    assert note_colour[2] > note_colour[0] + 60  # a blue note rectangle
    assert np.array_equal(cell(62, 5), note_colour)
    assert not np.array_equal(cell(61, 1), note_colour)  # no note there
    assert not np.array_equal(cell(60, 5), note_colour)  # C4 has ended


def test_rgb_repeated_notes_stay_apart():
    comp = Composition(notes_to_tokens([(60, 0, 4), (60, 4, 4)], n_steps=8))
    img = render_rgb(comp)
    lay = rgb_layout(comp)
    ps, pp = lay["px_per_step"], lay["px_per_pitch"]
    y = lay["height"] - comp.grid.n_pitches * pp + (comp.grid.max_pitch - 60) * pp + pp // 2
    x_boundary = 14 + 4 * ps
    assert not np.array_equal(img[y, x_boundary], img[y, x_boundary + ps // 2])


def test_rgb_rejects_n_steps_shorter_than_the_composition():
    with pytest.raises(ValueError, match="shorter"):
        render_rgb(scale(), n_steps=4)


def test_save_png_has_the_picture_size(tmp_path):
    comp = scale()
    path = save_png(comp, tmp_path / "roll.png", n_steps=64, title="scale")
    assert path == tmp_path / "roll.png"
    with Image.open(path) as im:
        assert im.format == "PNG"
        saved = np.asarray(im.convert("RGB"))
    assert np.array_equal(saved, render_rgb(comp, n_steps=64, title="scale", crop=True))


def test_cropped_picture_shows_the_range_used_and_names_c_and_the_tonic():
    comp = Composition(notes_to_tokens([(66, 0, 4), (68, 4, 4), (73, 8, 8)], n_steps=16), key="F# minor")
    lay = rgb_layout(comp, crop=True)
    assert (lay["low"], lay["high"]) == (63, 75)  # F#4..C#5 with 2 semitones each side, widened to an octave
    full, cropped = render_rgb(comp), render_rgb(comp, crop=True)
    assert cropped.shape[0] == lay["height"] < full.shape[0]
    assert lay["left"] > rgb_layout(comp)["left"]  # a strip for the pitch names
    strip = cropped[RGB_HEADER_H:, : lay["left"] - RGB_KEYBOARD_W]

    def row_has_text(pitch):
        y = (lay["high"] - pitch) * lay["px_per_pitch"]
        return (strip[y: y + lay["px_per_pitch"]] < 128).any()

    assert row_has_text(72) and row_has_text(66)  # C5 and the tonic F#4 are named
    assert not row_has_text(68)  # G#4 is not


# ---- safe writing ------------------------------------------------------------------------
WRITERS = {
    "midi": lambda comp, path: comp.to_midi(path),
    "musicxml": lambda comp, path: comp.to_musicxml(path),
    "png": lambda comp, path: save_png(comp, path),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_writing_onto_a_directory_fails_clearly(tmp_path, writer):
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match="existing directory") as err:
        WRITERS[writer](scale(), target)
    assert str(target) in str(err.value)
    assert list(target.iterdir()) == [] and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_writing_into_a_missing_directory_fails_clearly(tmp_path, writer):
    target = tmp_path / "missing" / "piece.out"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        WRITERS[writer](scale(), target)
    assert str(tmp_path / "missing") in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_writing_into_a_read_only_directory_fails_clearly(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            scale().to_midi(locked / "piece.mid")
    finally:
        locked.chmod(0o755)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "piece.mid"
    target.write_bytes(b"old")

    def half_write(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, half_write, what="MIDI file")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_staged_folder_is_all_or_nothing(tmp_path):
    from musicenv.files import staged_folder

    final = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed"), staged_folder(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary
    final.mkdir()  # an empty folder is taken over
    with staged_folder(final) as tmp:
        (tmp / "a.txt").write_text("first")
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and (final / "a.txt").read_text() == "first"
    with pytest.raises(OSError), staged_folder(final) as tmp:  # a full one only with replace
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in final.iterdir()] == ["a.txt"] and [p.name for p in tmp_path.iterdir()] == ["run"]
    with staged_folder(final, replace=True, tmp_name=".run.creating") as tmp:
        assert tmp == tmp_path / ".run.creating"
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in final.iterdir()] == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_successful_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "piece.mid"
    target.write_bytes(b"old")
    scale().to_midi(target)
    assert target.read_bytes()[:4] == b"MThd"
    assert list(tmp_path.iterdir()) == [target]


def test_write_accepts_str_paths(tmp_path):
    assert save_png(scale(), str(tmp_path / "roll.png")) == tmp_path / "roll.png"
