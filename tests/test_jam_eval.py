"""experiments.jam_eval: the Jam figures (accompanists, ReaLchords' metrics, push tests) on a few melodies."""

from __future__ import annotations

import json
import math

import pytest

from experiments import jam_eval


@pytest.fixture(scope="module")
def report():
    return jam_eval.evaluate([], max_melodies=2)


def test_report_ranks_the_accompanists_as_music_would(report):
    res = report["results"]
    assert list(res) == ["random", "rule (online)", "oracle (offline)", "data (Bach's chords)"]
    assert len(report["melodies"]) == 2 and all(s["pieces"] == 2 for s in res.values())
    # the offline oracle sees the future: at least as many chord tones as the online rule, which beats random
    assert res["oracle (offline)"]["note_in_chord"] >= res["rule (online)"]["note_in_chord"] > res["random"]["note_in_chord"]
    assert res["data (Bach's chords)"]["note_in_chord"] > 0.8
    # Bach's chords change on beats only
    assert res["data (Bach's chords)"]["onsets_on_beat"] == 1.0
    for s in res.values():
        assert 0 <= s["note_in_chord_ci"][0] <= s["note_in_chord"] <= s["note_in_chord_ci"][1] <= 1
        assert 0 <= s["changes_per_4_beats"] <= 4
    for name in ("random", "rule (online)", "oracle (offline)"):
        assert res[name]["tritone_recovery_beats"] >= 0 and not math.isnan(res[name]["cold_start_recovery_beats"])


def test_markdown_has_a_row_per_accompanist(report):
    md = jam_eval.markdown(report)
    rows = [r for r in md.splitlines() if r.startswith("| ")]
    assert len(rows) == 1 + 4
    assert all(r.count("|") == rows[0].count("|") for r in rows)
    assert "complete chords" in rows[0] and "on the beat" in rows[0]


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "eval"
    assert jam_eval.main(["--max-melodies", "1", "--out", str(out)]) == 0
    rep = json.loads((out / "jam_eval.json").read_text())
    assert len(rep["melodies"]) == 1
    assert (out / "jam_eval.md").read_text() == jam_eval.markdown(rep)
    assert "oracle (offline)" in capsys.readouterr().out


def test_max_melodies_below_one_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="max_melodies must be a positive integer"):
        jam_eval.evaluate([], max_melodies=0)
    with pytest.raises(SystemExit) as e:
        jam_eval.main(["--max-melodies", "0", "--out", str(tmp_path / "e")])
    assert e.value.code == 2 and "--max-melodies must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
