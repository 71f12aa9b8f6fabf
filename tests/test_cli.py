"""The `musicenv` command: `make run`'s demo writes files music21 reads back alike."""

from __future__ import annotations

import pytest

from musicenv.cli import main


def _melody_notes(path):
    import music21

    score = music21.converter.parse(str(path))
    part = score.parts[0].stripTies()
    return [(float(n.offset), float(n.quarterLength), n.pitch.midi) for n in part.recurse().notes
            if not isinstance(n, music21.harmony.ChordSymbol)]


def test_demo_writes_midi_and_musicxml_with_the_same_notes(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--pieces", "1", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "| total |" in printed and "|1...2...3...4...|" in printed
    for stem in ("random_1", "rule_based_1"):
        midi, xml, png = (tmp_path / f"{stem}{ext}" for ext in (".mid", ".musicxml", ".png"))
        assert midi.stat().st_size > 0 and png.stat().st_size > 0
        from_xml = _melody_notes(xml)
        from_midi = _melody_notes(midi)
        assert from_xml and [n[2] for n in from_xml] == [n[2] for n in from_midi]
        assert [n[0] for n in from_xml] == pytest.approx([n[0] for n in from_midi])


def test_demo_refuses_a_file_as_output_dir(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["demo", "--out", str(target), "--pieces", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_rewards_lists_the_catalogue(capsys):
    assert main(["rewards"]) == 0
    out = capsys.readouterr().out
    for name in ("in_key", "resolve_leaps", "chord_tone_on_strong_beat", "theory", "rl_tuner_theory"):
        assert name in out
