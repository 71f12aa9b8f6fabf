"""``musicenv benchmark``: grid validation, IQM and stratified bootstrap on hand-made
numbers, kill-and-resume of the smoke benchmark, and local vs Ray backends."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("stable_baselines3")

from experiments.aggregate import iqm, stratified_bootstrap_ci  # noqa: E402
from experiments.benchmark import (  # noqa: E402
    EVAL_FILE,
    RUN_INFO_FILE,
    BenchmarkConfigError,
    load_grid,
    parse_grid,
    plan_runs,
    run_benchmark,
)
from musicenv.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "experiments" / "configs" / "smoke.yaml"
VALID = {"rewards": {"theory": "theory"}, "algorithms": ["dqn"], "seeds": [0], "budgets": [128]}


# ------------------------------------------------------------------ IQM and bootstrap
def test_iqm_of_hand_made_numbers():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # trims 1, 2 and 7, 8: mean of 3..6
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # trims one from each end
    assert iqm([1, 2, 100]) == pytest.approx(103 / 3)  # fewer than 4: nothing trimmed
    assert iqm([0, 0, 0, 0, 1000, 1, 1, 1]) == pytest.approx(0.5)  # an outlier is cut
    np.testing.assert_allclose(iqm(np.array([[1, 2, 3, 4], [5, 6, 7, 100]]), axis=1), [2.5, 6.5])


def test_bootstrap_ci_is_seeded_and_brackets_the_iqm():
    scores = [[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]]
    a = stratified_bootstrap_ci(scores, reps=2000, seed=7)
    assert a == stratified_bootstrap_ci(scores, reps=2000, seed=7)
    assert 1.0 <= a[0] <= iqm(scores[0]) <= a[1] <= 9.0
    assert stratified_bootstrap_ci([[2.5, 2.5, 2.5]], reps=100) == (2.5, 2.5)
    assert stratified_bootstrap_ci([[np.nan, 2.0]], reps=100) == (2.0, 2.0)  # NaN dropped


def test_bootstrap_resamples_within_each_stratum():
    # Two tasks of three runs each: every stratified resample holds three 0s and three
    # 10s, so the pooled IQM (trim one from each end) is always 5; resampling the six
    # pooled runs instead would vary.
    assert stratified_bootstrap_ci([[0, 0, 0], [10, 10, 10]], reps=500, seed=1) == (5.0, 5.0)
    low, high = stratified_bootstrap_ci([[0, 0, 0, 10, 10, 10]], reps=500, seed=1)
    assert low < 5 < high


# ------------------------------------------------------------------------ grid checks
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("change, words", [
    ({"reward": "theory"}, ["'reward'", "rewards"]),  # a typo of a top-level key
    ({"rewards": {"bad": {"in_kee": 1}}}, ["rewards.bad", "in_kee"]),
    ({"algorithms": ["ppo", "sac"]}, ["algorithms", "sac", "ppo"]),
    ({"seeds": [0, "one"]}, ["seeds", "'one'"]),
    ({"budgets": [0]}, ["budgets", ">= 1"]),
    ({"train": {"seed": 3}}, ["train.seed", "set by the grid"]),
    ({"train": {"eval_frequency": 3}}, ["train.eval_frequency", "eval_freq"]),
    ({"eval": {"episodes": 0}}, ["eval.episodes"]),
    ({"hyperparams": {"dqn": {"n_stepz": 4}}}, ["hyperparams.dqn", "n_stepz"]),
    ({"hyperparams": {"ppo": {"n_steps": 4}}}, ["hyperparams.ppo", "not one of the grid's algorithms"]),
])
def test_malformed_grid_names_the_offending_key(tmp_path, change, words):
    path = write(tmp_path, yaml.safe_dump({**VALID, **change}))
    with pytest.raises(BenchmarkConfigError) as e:
        load_grid(path)
    for word in words:
        assert word in str(e.value), (word, str(e.value))


def test_missing_key_and_bad_yaml(tmp_path):
    with pytest.raises(BenchmarkConfigError, match=r"missing required key\(s\) \['budgets'\]"):
        parse_grid({k: v for k, v in VALID.items() if k != "budgets"})
    with pytest.raises(BenchmarkConfigError, match="not valid YAML"):
        load_grid(write(tmp_path, "rewards: {theory: theory\nalgorithms: [dqn]\n"))
    with pytest.raises(BenchmarkConfigError, match="expected a mapping"):
        load_grid(write(tmp_path, "- theory\n"))


def test_smoke_grid_plans_cells_by_seeds(tmp_path, capsys):
    grid = load_grid(SMOKE)
    runs = plan_runs(grid)
    assert len(runs) == 2 * 2 * 2 and len({r.cell for r in runs}) == 4
    assert {r.rel_dir for r in runs} >= {"runs/theory-ppo-512/seed0", "runs/chords-dqn-512/seed1"}
    assert main(["benchmark", str(SMOKE), "--dry-run", "--out", str(tmp_path)]) == 0
    assert "8 runs (0 finished" in capsys.readouterr().out
    assert main(["benchmark", str(write(tmp_path, "rewardz: {}\n"))]) == 2
    assert "'rewardz'" in capsys.readouterr().err


# --------------------------------------------------------------------- kill and resume
def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("runs/*/*") if p.is_dir())


def test_smoke_benchmark_killed_mid_run_resumes_with_nothing_lost(tmp_path):
    out = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "experiments.benchmark", str(SMOKE), "--jobs", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600  # generous: the first run compiles numba kernels on shared cores
        while not list(out.glob(f"runs/*/seed*/{EVAL_FILE}")):
            assert proc.poll() is None, "the benchmark ended before it could be killed"
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.2)
        time.sleep(random.uniform(0.2, 3.0))  # a random moment: the other job is somewhere in a run
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p: (p / RUN_INFO_FILE).read_text() for p in out.glob("runs/*/seed*") if (p / EVAL_FILE).exists()}
    assert 1 <= len(finished) < 8
    # whatever the kill left: finished runs are complete, everything else is a temporary
    for d in run_dirs(out):
        if d.name.startswith("seed"):
            assert (d / EVAL_FILE).exists() and (d / "final_metrics.json").exists(), d
        else:
            assert d.name.startswith(".tmp-seed"), d

    res = run_benchmark(SMOKE, out, jobs=2, progress=False)
    assert (res["total"], res["skipped"], res["ran"]) == (8, len(finished), 8 - len(finished))
    dirs = run_dirs(out)
    assert [d.name for d in dirs] == ["seed0", "seed1"] * 4  # no duplicates, no temporaries left
    for d in dirs:
        for name in (EVAL_FILE, RUN_INFO_FILE, "final_metrics.json", "learning_curve.csv", "agent.pt", "model.zip",
                     "sample.mid", "sample.png", "sample.json"):
            assert (d / name).is_file(), (d, name)
    for d, info in finished.items():  # finished runs were skipped, not redone
        assert (d / RUN_INFO_FILE).read_text() == info

    # every run is scored under both designs and every metric, optimised or not
    scores = json.loads((out / "runs/theory-ppo-512/seed0" / EVAL_FILE).read_text())["scores"]
    assert {"objective", "reward/theory/total", "reward/chords/total", "reward/chords/consonance",
            "reward/theory/in_key_time", "rl_tuner/notes_not_in_key", "muspy/pitch_class_entropy",
            "harmony/chord_tone_rate", "diversity/distinct_2"} <= set(scores)
    own = json.loads((out / "runs/chords-dqn-512/seed0" / EVAL_FILE).read_text())["scores"]
    assert own["objective"] == pytest.approx(own["reward/chords/total"])
    md = (out / "results.md").read_text()
    for heading in ("## RL Tuner statistics", "## MusPy-style statistics", "## Harmony statistics",
                    "Reward design `theory`", "Reward design `chords`", "![piano_rolls](piano_rolls.png)"):
        assert heading in md
    assert "| theory-ppo-512 | " in md
    for png in ("learning_curves.png", "piano_rolls.png", "bars_rl_tuner.png", "bars_reward_chords.png"):
        assert (out / png).stat().st_size > 1000, png

    # a third invocation trains nothing
    assert run_benchmark(SMOKE, out, jobs=1, progress=False)["ran"] == 0


# ------------------------------------------------------------------- local vs Ray
TINY = {"name": "tiny", "rewards": {"theory": "theory"}, "algorithms": ["dqn"], "seeds": [0, 1], "budgets": [192],
        "hyperparams": {"dqn": {"buffer_size": 500, "learning_starts": 64, "batch_size": 16}},
        "env_kwargs": {"n_bars": 2},
        "train": {"eval_freq": 0, "final_episodes": 2, "checkpoint_freq": 0, "baselines": []},
        "eval": {"episodes": 4}}


def test_local_and_ray_backends_give_the_same_numbers(tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs the optional extra: pip install 'musicenv[ray]'")
    grid = parse_grid(TINY)
    run_benchmark(grid, tmp_path / "local", jobs=2, backend="local", progress=False)
    run_benchmark(grid, tmp_path / "ray", jobs=2, backend="ray", progress=False)
    local = json.loads((tmp_path / "local" / "aggregate.json").read_text())["cells"]
    remote = json.loads((tmp_path / "ray" / "aggregate.json").read_text())["cells"]
    assert local == remote and local["theory-dqn-192"]["seeds"] == [0, 1]
    info = json.loads((tmp_path / "ray" / "runs/theory-dqn-192/seed1" / RUN_INFO_FILE).read_text())
    assert info["backend"] == "ray"


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_grid_validates(path):
    # each reward spec, algorithm, train key and cell's resolved training config is checked
    grid = load_grid(path)
    assert plan_runs(grid)


def test_jam_chords_cells_report_the_chords_not_the_partners_melody(tmp_path):
    """In JamChords-v0 the melody is a held-out chorale: the held-out scores are the
    agent's own (objective, ReaLchords' jam/* metrics), not the melody's style."""
    from agents.train import TrainConfig, build_model, resolve_config
    from experiments.benchmark import RunSpec, held_out_evaluation

    config = {"algo": "maskable_ppo", "env_id": "JamChords-v0", "env_kwargs": {"split": "train"}, "seed": 0,
              "n_threads": 1}
    model = build_model(resolve_config(TrainConfig(**config, out=str(tmp_path / "m"))))
    spec = RunSpec("cell", "JamChords-v0", "jam_chords", "maskable_ppo", 0, 0, config,
                   {"jam_chords": "jam_chords"}, eval_episodes=2, eval_seed=3_000_000)
    ev = held_out_evaluation(model, spec, tmp_path)
    scores = ev["scores"]
    assert {"objective", "jam/note_in_chord", "jam/chord_length_entropy_complete", "jam/onsets_on_beat"} <= set(scores)
    assert not any(k.startswith(("style/", "rl_tuner/", "reward/")) for k in scores), sorted(scores)
    assert 0 <= scores["jam/note_in_chord"] <= 1
    assert (tmp_path / "sample.mid").exists()
