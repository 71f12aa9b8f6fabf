"""The README's main job (`make run`) at a tiny size."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from experiments.main_job import SOURCES, MainJobSettings, run_main_job  # noqa: E402


def test_main_job_trains_compares_and_composes_all_three_sources(tmp_path, capsys):
    from PIL import Image

    settings = MainJobSettings(out=str(tmp_path / "out"), timesteps=64, pieces=2, wav=False, progress=False,
                               threads=1, hyperparams={"n_steps": 16, "batch_size": 32, "n_epochs": 1})
    results = run_main_job(settings)
    out = tmp_path / "out"
    assert list(results["sources"]) == [label for label, _ in SOURCES]
    for label, prefix in SOURCES:
        s = results["sources"][label]
        assert s["pieces"] == 2 and np.isfinite(s["reward_mean"]) and s["nll_under_prior"] > 0
        assert (out / "pieces" / prefix / "index.md").is_file()
        assert sorted(p.suffix for p in (out / "pieces" / prefix).glob(f"{prefix}_01.*")) == [
            ".mid", ".musicxml", ".png"]
    # the same seeds, so the same keys and progressions for every source
    keys = {prefix: [line.split("|")[3:5] for line in (out / "pieces" / prefix / "index.md").read_text().splitlines()
                     if line.startswith(("| 1 |", "| 2 |"))][:2] for _, prefix in SOURCES}  # (key, meter), first table
    assert keys["ppo"] == keys["prior"] == keys["random"]
    # the policy starts as the prior: after 64 steps of PPO it still plays much like it
    nll = {label: results["sources"][label]["nll_under_prior"] for label, _ in SOURCES}
    assert nll["random"] > nll["prior"] + 1
    table = (out / "results.md").read_text()
    assert "| NLL under the prior (nats/token) |" in table and "PPO from the prior | prior | random |" in table
    assert json.loads((out / "results.json").read_text())["pieces"] == 2
    rolls = Image.open(out / "piano_rolls.png")
    one = Image.open(out / "pieces" / "ppo" / "ppo_01.png")
    assert rolls.size[1] == pytest.approx(3 * one.size[1], abs=3 * 30)  # three rows (titles differ)

    # a second call reuses the finished run instead of training again
    capsys.readouterr()
    run_main_job(settings)
    assert "reusing the finished run" in capsys.readouterr().out

    # ... but never under another config: the differing keys are named, nothing is overwritten
    import dataclasses

    from agents.train import StaleRunError

    before = (out / "results.md").read_text()
    with pytest.raises(StaleRunError, match=r"n_timesteps: 64 -> 128; seed: 0 -> 5.*--force"):
        run_main_job(dataclasses.replace(settings, timesteps=128, seed=5))
    assert (out / "results.md").read_text() == before


def test_main_job_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="pieces must be an integer >= 1"):
        run_main_job(MainJobSettings(out=str(tmp_path), pieces=0))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((NotADirectoryError, ValueError)):
        run_main_job(MainJobSettings(out=str(blocker), timesteps=64, pieces=1))
