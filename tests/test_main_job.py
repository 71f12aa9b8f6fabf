"""The README's main job (`make run`) at a tiny size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from experiments.main_job import BAND, SOURCES, MainJobSettings, band_check, run_main_job  # noqa: E402


def test_main_job_trains_compares_and_composes_every_source(tmp_path, capsys):
    from PIL import Image

    settings = MainJobSettings(out=str(tmp_path / "out"), timesteps=64, pieces=2, c2st_pieces=6, wav=False,
                               progress=False, threads=1, hyperparams={"n_steps": 16, "batch_size": 32, "n_epochs": 1})
    results = run_main_job(settings)
    out = tmp_path / "out"
    assert list(results["sources"]) == [label for label, _, _ in SOURCES]
    for label, prefix, _ in SOURCES:
        s, row = results["sources"][label], results["rows"][label]
        assert s["pieces"] == 2 and np.isfinite(s["reward_mean"]) and row["nll"] > 0
        assert row["c2st_pieces"] == 6 and 0 <= row["c2st_accuracy"] <= 1 and 0 <= row["style_distance"] <= 1
        assert set(row["band"]) == {key for key, _, _, _ in BAND} | {"theory"}
        assert (out / "pieces" / prefix / "index.md").is_file()
        assert sorted(p.suffix for p in (out / "pieces" / prefix).glob(f"{prefix}_01.*")) == [
            ".mid", ".musicxml", ".png"]
    # real melodies are reference rows: no band, no C2ST against themselves
    real = [label for label in results["rows"] if label.startswith("real: ")]
    assert len(real) == 3 and all("band" not in results["rows"][r] for r in real)
    assert results["rows"][real[0]]["final_long"] > 0.9  # Bach's last bars end on long notes
    # the same seeds, so the same keys and progressions for every source
    keys = {prefix: [line.split("|")[3:5] for line in (out / "pieces" / prefix / "index.md").read_text().splitlines()
                     if line.startswith(("| 1 |", "| 2 |"))][:2] for _, prefix, _ in SOURCES}
    assert keys["showcase"] == keys["ppo_scratch"] == keys["prior"] == keys["random"]
    # ... drawn from the cadential bank, in training and in the comparison
    for run in ("showcase", "ppo_scratch"):
        assert "progression: cadential" in (out / run / "config.yml").read_text()
    assert "progression: `cadential`" in (out / "pieces" / "prior" / "index.md").read_text()
    # the showcase starts as the prior: after 64 steps it still plays much like it
    nll = {label: results["rows"][label]["nll"] for label, _, _ in SOURCES}
    assert nll["random"] > nll[SOURCES[0][0]] + 1
    table = (out / "results.md").read_text()
    assert "| *band* | 2.5-8 |" in table and "real: Bach chorale sopranos" in table and "C2ST" in table
    assert json.loads((out / "results.json").read_text())["pieces"] == 2
    rolls = Image.open(out / "piano_rolls.png")
    assert rolls.size[1] > 4 * 60  # four rows

    # a second call reuses the finished runs instead of training again
    capsys.readouterr()
    run_main_job(settings)
    assert capsys.readouterr().out.count("reusing the finished run") == 2

    # ... but never under another config: the differing keys are named, nothing is overwritten
    import dataclasses

    from agents.train import StaleRunError

    before = (out / "results.md").read_text()
    with pytest.raises(StaleRunError, match=r"n_timesteps: 64 -> 128; seed: 0 -> 5.*--force"):
        run_main_job(dataclasses.replace(settings, timesteps=128, seed=5))
    assert (out / "results.md").read_text() == before


def test_band_check_reads_the_issue_band():
    row = {"notes_per_bar": 3.6, "sixteenth_share": 0.01, "leap_share": 0.03, "final_long": 1.0, "final_tonic": 0.75,
           "in_key_share": 0.98, "strong_chord_tone_share": 0.9, "nll": 0.6, "theory": 30.0}
    assert all(band_check(row, prior_theory=10.0, random_theory=-100.0).values())
    bad = {**row, "notes_per_bar": 12.0, "sixteenth_share": 0.7, "final_tonic": math.nan, "theory": 5.0}
    met = band_check(bad, prior_theory=10.0, random_theory=-100.0)
    assert [k for k, v in met.items() if not v] == ["notes_per_bar", "sixteenth_share", "final_tonic", "theory"]


def test_main_job_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="pieces must be an integer >= 1"):
        run_main_job(MainJobSettings(out=str(tmp_path), pieces=0))
    with pytest.raises(ValueError, match="kl_coef must be a number >= 0"):
        run_main_job(MainJobSettings(out=str(tmp_path), kl_coef=-1.0))
    with pytest.raises(ValueError, match=r"gamma must be a number in \(0, 1\]"):
        run_main_job(MainJobSettings(out=str(tmp_path), gamma=1.5))
    with pytest.raises(ValueError, match="progression must be a bank name or a progression"):
        run_main_job(MainJobSettings(out=str(tmp_path), progression=""))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((NotADirectoryError, ValueError)):
        run_main_job(MainJobSettings(out=str(blocker), timesteps=64, pieces=1))
