"""Reliability (issue 15): bad inputs get a specific message and no traceback; loading a
run never unpickles; shipped files are read-only; stale results are not reused; every
command and option is documented; killed jobs lose nothing that had finished."""

from __future__ import annotations

import argparse
import builtins
import copy
import fcntl
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.train import RunStateError, TrainConfig, TrainConfigError, load_run, resume, train
from musicenv.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PRIOR = ROOT / "agents" / "pretrained" / "note_rnn_bach.pt"


def tiny(out: Path, algo: str = "ppo", **kw) -> TrainConfig:
    base = dict(algo=algo, n_timesteps=128, n_envs=2, env_kwargs={"n_bars": 1}, eval_freq=0, checkpoint_freq=64,
                final_episodes=1, baselines=[], progress=False, out=str(out))
    if algo == "dqn":
        base.update(n_envs=1, hyperparams={"buffer_size": 300, "learning_starts": 32, "batch_size": 16})
    base.update(kw)
    return TrainConfig(**base)


class Stop:
    """An SB3 callback raising ``exc`` once the model has taken ``at`` steps."""

    def __new__(cls, at: int, exc: type[BaseException]):
        from stable_baselines3.common.callbacks import BaseCallback

        class _Stop(BaseCallback):
            def _on_step(self) -> bool:
                if self.num_timesteps >= at:
                    raise exc("stopped by the test")
                return True

        return _Stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished PPO run and an interrupted DQN run (checkpoints with replay buffers)."""
    base = tmp_path_factory.mktemp("runs")
    finished = train(tiny(base / "ppo")).run_dir
    cfg = tiny(base / "dqn", "dqn")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Stop(96, KeyboardInterrupt)])
    return {"finished": finished, "interrupted": Path(cfg.out)}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def grid_file(tmp_path: Path, **changes) -> Path:
    grid = {"name": "tiny", "rewards": {"theory": "theory"}, "algorithms": ["ppo"], "seeds": [0], "budgets": [64],
            "hyperparams": {"ppo": {"n_envs": 1, "n_steps": 32, "batch_size": 32, "n_epochs": 1}},
            "env_kwargs": {"n_bars": 1},
            "train": {"eval_freq": 0, "final_episodes": 1, "checkpoint_freq": 0, "baselines": []},
            "eval": {"episodes": 2}}
    grid.update(changes)
    return write(tmp_path / "grid.yaml", yaml.safe_dump(grid))


# ---------------------------------------------------------------- 40+ bad inputs, no traceback
def cli_cases(tmp: Path, runs: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(id, argv, words the error message must contain)."""
    a_file = write(tmp / "a_file.txt", "not a folder")
    bad_yaml = write(tmp / "bad.yml", "algo: [ppo\n")
    unknown_key = write(tmp / "unknown.yml", "algo: ppo\nlearning_rat: 0.1\n")
    pieces = tmp / "pieces"
    write(pieces / "rule_01.mid", "an old piece")
    old_run = tmp / "old_run"  # a run of an older musicenv: SB3 zips only
    shutil.copytree(runs["finished"], old_run)
    (old_run / "agent.pt").unlink()
    for p in (old_run / "checkpoints").glob("agent_*"):
        p.unlink()
    junk = write(tmp / "junk.pt", "junk")
    fin = str(runs["finished"])
    train_ = ["train", "--timesteps", "64", "--n-envs", "1", "--env-kwargs", "n_bars=1", "--no-progress"]
    return [
        ("train-algo", [*train_, "--algo", "bogus"], "unknown algorithm 'bogus'"),
        ("train-env", [*train_, "--env", "Nope-v0"], "unknown env id 'Nope-v0'"),
        ("train-device-cuda7", [*train_, "--device", "cuda:7", "--out", str(tmp / "r1")], "cuda:7"),
        ("train-device-junk", [*train_, "--device", "toaster", "--out", str(tmp / "r2")], "not a torch device"),
        ("train-hyperparam", [*train_, "--hyperparams", "n_epochz=3"], "does not accept 'n_epochz'"),
        ("train-hyperparam-yaml", [*train_, "--hyperparams", "n_epochs"], "KEY=VALUE"),
        ("train-reward", [*train_, "--reward", "no_such_term"], "unknown reward term 'no_such_term'"),
        ("train-reward-yaml", [*train_, "--reward", "{in_key: [1"], "not valid YAML"),
        ("train-timesteps", [*train_, "--timesteps", "lots"], "whole number of env steps"),
        ("train-env-kwarg", [*train_, "--env-kwargs", "history_length=0"], "history_length"),
        ("train-env-kwarg-unknown", [*train_, "--env-kwargs", "colour=blue"], "colour"),
        ("train-out-file", [*train_, "--out", str(a_file)], "not a directory"),
        ("train-out-run", [*train_, "--out", fin], "already holds a run"),
        ("train-resume-missing", ["train", "--resume", str(tmp / "nothing")], "not a run directory"),
        ("train-resume-finished", ["train", "--resume", fin], "nothing to resume"),
        ("train-resume-flags", ["train", "--resume", fin, "--seed", "3"], "drop --seed"),
        ("train-resume-force", ["train", "--resume", fin, "--force"], "--force goes with --out"),
        ("train-unsafe-new", [*train_, "--unsafe-load-sb3-zip"], "goes with --resume"),
        ("train-resume-old-zip", ["train", "--resume", str(tmp / "nothing_either")], "not a run directory"),
        ("train-config-missing", [*train_, "--config", str(tmp / "none.yml")], "cannot read"),
        ("train-config-yaml", [*train_, "--config", str(bad_yaml)], "not valid YAML"),
        ("train-config-key", [*train_, "--config", str(unknown_key)], "unknown config key(s) ['learning_rat']"),
        ("train-hyperparams-file", [*train_, "--hyperparams-file", str(tmp / "none.yml")], "cannot read"),
        ("train-seed-overlap", [*train_, "--seed", "1000000"], "overlap"),
        ("train-policy", [*train_, "--policy", "NoSuchPolicy"], "unknown policy 'NoSuchPolicy'"),
        ("compose-source", ["compose", "mozart", "--out", str(tmp / "c1")], "mozart"),
        ("compose-existing", ["compose", "rule", "-n", "1", "--out", str(pieces), "--no-wav"], "--overwrite"),
        ("compose-name", ["compose", "rule", "--name", "../escape", "--out", str(tmp / "c2")], "not a plain"),
        ("compose-out-file", ["compose", "rule", "--out", str(a_file)], "not a directory"),
        ("compose-run-missing", ["compose", f"run:{tmp / 'nothing'}", "--out", str(tmp / "c3")],
         "not a run directory"),
        ("compose-old-zip", ["compose", f"run:{old_run}", "--out", str(tmp / "c4"), "--no-wav"],
         "--unsafe-load-sb3-zip"),
        ("compose-run-env", ["compose", f"run:{fin}", "--env", "Counterpoint-v0", "--out", str(tmp / "c5")],
         "Counterpoint-v0 rejects the settings of"),
        ("compose-temperature", ["compose", "rule", "--temperature", "0.5", "--out", str(tmp / "c6")],
         "does not sample"),
        ("compose-both", ["compose", "rule", "--model", fin, "--out", str(tmp / "c7")], "not both"),
        ("benchmark-missing", ["benchmark", str(tmp / "none.yaml")], "cannot read benchmark config"),
        ("benchmark-name", ["benchmark", str(grid_file(tmp / "g1", name="../../../x")), "--dry-run"],
         "not a plain name"),
        ("benchmark-design", ["benchmark", str(grid_file(tmp / "g2", rewards={"../x": "theory"})), "--dry-run"],
         "design name '../x'"),
        ("benchmark-jobs", ["benchmark", str(grid_file(tmp / "g3")), "--jobs", "0", "--out", str(tmp / "b0")],
         "--jobs must be"),
        ("benchmark-init-from", ["benchmark", str(grid_file(tmp / "g5", train={
            "init_from": str(tmp / "no_run"), "eval_freq": 0, "final_episodes": 1, "checkpoint_freq": 0,
            "baselines": []})), "--out", str(tmp / "b5")], "train.init_from"),
        ("benchmark-out-file", ["benchmark", str(grid_file(tmp / "g4")), "--out", str(a_file)], "not a directory"),
        ("bench-only", ["bench", "--only", "bogus"], "unknown figure(s) ['bogus']"),
        ("bench-json", ["bench", "--only", "import", "--json", str(a_file / "x.json")], "not a directory"),
        ("pretrain-shipped", ["pretrain", "--out", str(SHIPPED_PRIOR)], "shipped with musicenv"),
        ("pretrain-suffix", ["pretrain", "--out", str(tmp / "prior.txt")], "must be a .pt file"),
        ("pretrain-out-under-file", ["pretrain", "--out", str(a_file / "prior.pt")], "not a directory"),
        ("finetune-out-file", ["finetune-prior", "--out", str(a_file)], "not a directory"),
        ("train-gan-out-file", ["train-gan", "--out", str(a_file)], "not a directory"),
        ("evaluate-prior-junk", ["evaluate-prior", "--checkpoint", str(junk), "--threads", "1"], "corrupt"),
        ("evaluate-prior-json", ["evaluate-prior", "--json", str(tmp / "none" / "x.json")], "does not exist"),
        ("jam-pretrain-delay", ["jam-pretrain", "--out", str(tmp / "bc1"), "--delay", "4"],
         "delay must be an integer in 0..3"),
        ("jam-pretrain-out-file", ["jam-pretrain", "--out", str(a_file)], "not a directory"),
        ("main-job-timesteps", ["main-job", "--timesteps", "0", "--out", str(tmp / "m1")], "timesteps must be"),
        ("main-job-out-file", ["main-job", "--out", str(a_file)], "not a directory"),
        ("demo-out-file", ["demo", "--out", str(a_file)], "not a directory"),
    ]


def test_bad_cli_inputs_get_a_specific_message_and_no_traceback(runs, tmp_path, capsys):
    cases = cli_cases(tmp_path, runs)
    assert len(cases) >= 40
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    for name, argv, words in cases:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err
        assert code == 2, (name, code, err)
        assert words in err, (name, err)
        assert "Traceback" not in err, (name, err)
    # nothing was written half way: the files that were there are untouched
    for p, mtime in before.items():
        assert p.stat().st_mtime_ns == mtime, p


def _library_cases(tmp: Path, runs: dict[str, Path]) -> list[tuple[str, object, type[Exception], str]]:
    import gymnasium as gym

    import rewards
    from agents.agent_io import AgentFileError, load_replay_buffer
    from musicenv.compose import compose
    from musicenv.files import OutputPathError, check_not_shipped, check_plain_name

    truncated = tmp / "truncated"
    shutil.copytree(runs["finished"], truncated)
    data = (truncated / "agent.pt").read_bytes()
    (truncated / "agent.pt").write_bytes(data[: len(data) // 2])
    return [
        ("score-string", lambda: rewards.score("theory", "C D E F"), TypeError, "musicenv compositions"),
        ("score-list-of-ints", lambda: rewards.score("theory", [60, 62]), TypeError, "musicenv compositions"),
        ("reward-unknown", lambda: rewards.make("nope"), rewards.RewardSpecError, "unknown reward term"),
        ("env-n-bars", lambda: gym.make("MusicComposition-v0", n_bars=0), ValueError, "n_bars"),
        ("config-key", lambda: TrainConfig.from_dict({"bogus": 1}), TrainConfigError, "unknown config key"),
        ("load-truncated", lambda: load_run(truncated), AgentFileError, "corrupt"),
        ("load-missing", lambda: load_run(tmp / "nope"), RunStateError, "not a run directory"),
        ("buffer-foreign", lambda: load_replay_buffer(None, runs["finished"] / "config.yml"), AgentFileError,
         "not a .npz"),
        ("plain-name", lambda: check_plain_name("../x", "piece name"), OutputPathError, "not a plain name"),
        ("shipped", lambda: check_not_shipped(SHIPPED_PRIOR), PermissionError, "--force"),
        ("compose-name", lambda: compose("rule", 1, tmp / "c", name="a/b", wav=False), ValueError, "plain"),
    ]


def test_bad_library_inputs_raise_specific_errors(runs, tmp_path):
    for name, call, exc, words in _library_cases(tmp_path, runs):
        with pytest.raises(exc, match=None) as info:
            call()
        assert words in str(info.value), (name, str(info.value))


def test_device_cuda7_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TrainConfigError, match="cuda:7"):
        train(tiny(tmp_path / "run", device="cuda:7"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- payloads
class Payload:
    """Unpickling this writes ``marker``: what an attacker would put in a shared run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def plant(path: Path, marker: Path) -> None:
    """Replace ``path`` by a file of its kind carrying a payload."""
    payload = Payload(marker)
    if path.suffix == ".pt":
        import torch

        torch.save({"format": "musicenv.sb3_agent", "format_version": 1, "metadata": "{}", "state_dict": payload,
                    "modules": {}, "variables": {}}, path)
    elif path.suffix == ".npz":
        with open(path, "wb") as fh:
            np.savez(fh, pos=np.array(1), full=np.array(False), actions=np.array([payload], dtype=object))
    elif path.suffix in (".yml", ".yaml"):
        path.write_text(f"!!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w').write('pwned')\"]\n")
    else:  # JSON, CSV, zip, TensorBoard events: a raw pickle in their place
        path.write_bytes(pickle.dumps(payload))


def _exercise(run: Path, tmp: Path) -> list[str]:
    """Everything that reads a run directory; the errors it raised."""
    from musicenv.compose import compose

    errors = []
    for action in (lambda: load_run(run),
                   lambda: resume(run, progress=False),
                   lambda: compose(f"run:{run}", 1, tmp / f"pieces-{len(errors)}", n_bars=1, wav=False)):
        try:
            action()
        except (ValueError, OSError) as e:
            errors.append(f"{type(e).__name__}: {e}")
    return errors


def test_a_payload_planted_in_any_file_of_a_run_directory_never_runs(runs, tmp_path):
    marker = tmp_path / "PWNED"
    assert not marker.exists()
    checked = 0
    for kind, source in runs.items():
        files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
        assert any(f.suffix == ".npz" for f in files) or kind == "finished"
        for rel in files:
            run = tmp_path / f"{kind}-{checked}"
            shutil.copytree(source, run)
            plant(run / rel, marker)
            errors = _exercise(run, tmp_path / f"out-{checked}")
            assert not marker.exists(), f"the payload in {kind}/{rel} ran"
            for e in errors:  # a clear error: names what is wrong, no pickled object's repr
                assert "Payload" not in e, e
                assert any(w in e for w in (rel.name, "pickled Python objects", "not valid YAML", "nothing to resume",
                                            "is not a", "plain arrays", "corrupt", "cannot read")), (rel, e)
            checked += 1
    assert checked >= 10


def test_sb3_zip_is_loaded_only_with_the_unsafe_opt_in(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["finished"], old)
    (old / "agent.pt").unlink()
    for p in (old / "checkpoints").glob("agent_*"):
        p.unlink()
    with pytest.raises(RunStateError, match="--unsafe-load-sb3-zip"):
        load_run(old)
    model, cfg = load_run(old, unsafe_load_sb3_zip=True)  # the user trusts it
    assert model.num_timesteps >= 128 and cfg.algo == "ppo"


# -------------------------------------------------------------- truncated checkpoint on resume
def test_resume_falls_back_past_a_truncated_checkpoint_and_says_so(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["interrupted"], run)
    newest = max((run / "checkpoints").glob("agent_*_steps.pt"), key=lambda p: int(p.name.split("_")[1]))
    older = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("agent_*_steps.pt"))[-2]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])
    result = resume(run, progress=False)
    err = capsys.readouterr().err
    assert newest.name in err and "falling back to the previous checkpoint" in err
    state = json.loads((run / "run.json").read_text())
    assert state["resumes"][-1]["checkpoint"] == f"agent_{older}_steps.pt"
    assert state["resumes"][-1]["timesteps"] == older and state["resumes"][-1]["skipped"] == [newest.name]
    assert result.timesteps == 128 and state["status"] == "finished"


def test_checkpoints_restore_weights_optimizer_counters_and_buffer_exactly(runs, tmp_path):
    import torch

    from agents.agent_io import load_replay_buffer, read_agent, restore_agent
    from agents.train import build_model, checkpoints, resolve_config

    run = runs["interrupted"]
    steps, agent, buffer = checkpoints(run)[0]
    cfg = resolve_config(TrainConfig.from_yaml(run / "config.yml"), read_hyperparams=False)
    model = build_model(cfg)
    payload, meta = read_agent(agent)
    restore_agent(model, payload, meta, agent)
    load_replay_buffer(model.replay_buffer, buffer)
    assert model.num_timesteps == steps and meta["counters"]["num_timesteps"] == steps
    assert model.replay_buffer.size() == steps - 1  # SB3 stores a step after its callbacks
    for k, v in payload["state_dict"].items():
        assert torch.equal(model.policy.state_dict()[k], v)
    opt = model.policy.optimizer.state_dict()
    assert opt["state"] and all(int(s["step"]) > 0 for s in opt["state"].values())
    assert model.exploration_rate == pytest.approx(meta["counters"]["exploration_rate"])


# ------------------------------------------------------------------------- stale reuse
def test_benchmark_refuses_stale_runs_and_force_retrains_them(tmp_path, capsys):
    from experiments.benchmark import RUN_INFO_FILE, BenchmarkStateError, load_grid, run_benchmark

    out = tmp_path / "out"
    run_benchmark(load_grid(grid_file(tmp_path)), out, progress=False, aggregate_results=False)
    info = (out / "runs/theory-ppo-64/seed0" / RUN_INFO_FILE).read_text()
    # the same grid again: nothing to do
    assert run_benchmark(load_grid(grid_file(tmp_path)), out, progress=False, aggregate_results=False)["ran"] == 0
    changed = grid_file(tmp_path, hyperparams={"ppo": {"n_envs": 1, "n_steps": 32, "batch_size": 32,
                                                       "n_epochs": 2}})
    with pytest.raises(BenchmarkStateError, match=r"hyperparams\.n_epochs: 1 -> 2.*--force"):
        run_benchmark(load_grid(changed), out, progress=False, aggregate_results=False)
    assert (out / "runs/theory-ppo-64/seed0" / RUN_INFO_FILE).read_text() == info  # untouched
    assert main(["benchmark", str(changed), "--out", str(out)]) == 2
    assert "n_epochs" in capsys.readouterr().err
    res = run_benchmark(load_grid(changed), out, progress=False, aggregate_results=False, force=True)
    assert res["ran"] == 1
    cfg = yaml.safe_load((out / "runs/theory-ppo-64/seed0" / "config.yml").read_text())
    assert cfg["hyperparams"]["n_epochs"] == 2
    # a design added to the grid: the old runs lack its scores, so they are stale too
    more = grid_file(tmp_path, rewards={"theory": "theory", "chords": {"chord_tone_on_strong_beat": 1}},
                     hyperparams={"ppo": {"n_envs": 1, "n_steps": 32, "batch_size": 32, "n_epochs": 2}})
    with pytest.raises(BenchmarkStateError, match="designs"):
        run_benchmark(load_grid(more), out, progress=False, aggregate_results=False)


def test_second_benchmark_on_the_same_out_is_refused_cleanly(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running benchmark holds it
        assert main(["benchmark", str(grid_file(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "another benchmark is running" in err and "Traceback" not in err
    assert not (out / "runs").exists()


def test_a_run_is_reused_only_with_the_same_identity(runs, tmp_path):
    from agents.train import StaleRunError, check_reusable, resolve_config

    run = runs["finished"]
    same = resolve_config(TrainConfig.from_yaml(run / "config.yml"), read_hyperparams=False)
    check_reusable(run, same)  # no error
    for change, words in (({"seed": 5}, "seed: 0 -> 5"), ({"n_timesteps": 4096}, "n_timesteps: 128 -> 4096"),
                          ({"env_kwargs": {"n_bars": 2}}, "env_kwargs.n_bars: 1 -> 2")):
        other = copy.deepcopy(same)
        for k, v in change.items():
            setattr(other, k, {**getattr(other, k), **v} if isinstance(v, dict) else v)
        with pytest.raises(StaleRunError, match=words.replace(".", r"\.").replace(">", ">")):
            check_reusable(run, other)
    # what does not change results does not count
    check_reusable(run, dataclasses_replace(same, n_threads=2, progress=True, device="cpu", out="elsewhere"))


def dataclasses_replace(cfg: TrainConfig, **changes) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def test_run_configs_pin_every_observation_setting(runs):
    cfg = yaml.safe_load((runs["finished"] / "config.yml").read_text())
    assert cfg["env_kwargs"]["history_length"] == 8 and cfg["env_kwargs"]["observe_prior"] is False
    assert cfg["env_kwargs"]["n_bars"] == 1


def test_train_force_replaces_a_run_and_only_a_run(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["finished"], run)
    (run / "stale-marker").write_text("from the old run")
    train(tiny(run, n_timesteps=64), force=True)
    assert not (run / "stale-marker").exists()
    assert yaml.safe_load((run / "config.yml").read_text())["n_timesteps"] == 64


# --------------------------------------------------------------------- names and folders
def test_compose_refuses_a_folder_with_pieces_or_replaces_them_all(tmp_path):
    from musicenv.compose import ExistingPiecesError, compose

    compose("rule", 3, tmp_path, wav=False, n_bars=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ExistingPiecesError, match="--overwrite"):
        compose("random", 1, tmp_path, wav=False, n_bars=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    compose("random", 1, tmp_path, wav=False, n_bars=1, overwrite=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["index.md", "random_01.mid", "random_01.musicxml", "random_01.png"]  # no old piece left


def test_benchmark_names_stay_in_their_folder(tmp_path):
    from experiments.benchmark import BenchmarkConfigError, load_grid

    for bad in ("../../../x", "a/b", ".hidden", ".."):
        with pytest.raises(BenchmarkConfigError, match="plain name"):
            load_grid(grid_file(tmp_path, name=bad), validate=False)


# ------------------------------------------------------------------------ shipped files
def test_shipped_files_are_read_only_to_the_commands(tmp_path, capsys, monkeypatch):
    import hashlib

    digest = hashlib.sha256(SHIPPED_PRIOR.read_bytes()).hexdigest()
    monkeypatch.chdir(ROOT)  # as the user did: from the repository root
    # the default output of pretrain is under runs/, never the package
    args = build_parser().parse_args(["pretrain"])
    assert args.out is None
    for argv in (["pretrain", "--out", str(SHIPPED_PRIOR)],
                 ["pretrain", "--out", str(SHIPPED_PRIOR.relative_to(ROOT))]):
        assert main(argv) == 2
        assert "shipped with musicenv" in capsys.readouterr().err
    assert hashlib.sha256(SHIPPED_PRIOR.read_bytes()).hexdigest() == digest
    shipped = [p for p in (ROOT / "agents" / "pretrained").iterdir() if p.is_file()]
    from musicenv.files import check_not_shipped

    for p in shipped:
        with pytest.raises(PermissionError, match="--force"):
            check_not_shipped(p)
        assert check_not_shipped(p, force=True) == p
    for command in ("pretrain", "finetune-prior", "train-gan"):
        out = build_parser().parse_args([command]).out
        assert out is None or not str(Path(out).resolve()).startswith(str(ROOT / "agents")), (command, out)


# --------------------------------------------------------------------------- the parser
def test_every_subcommand_and_option_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices)
    for name, p in sub.choices.items():
        assert helps[name] and "\n" not in helps[name], name
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)


# ------------------------------------------------------------------------ progress lines
def test_progress_lines_when_piped(tmp_path, capsys):
    import sys as _sys

    assert not _sys.stdout.isatty()  # pytest captures stdout: as in a pipe
    train(tiny(tmp_path / "run", n_timesteps=128, checkpoint_freq=0, progress=True, final_episodes=4,
               baselines=["random"]))
    shown = capsys.readouterr()
    lines = shown.out.splitlines()
    training = [ln for ln in lines if ln.startswith("training run:")]
    final = [ln for ln in lines if ln.startswith("final evaluation:")]
    # SB3 finishes its last rollout, so the count may pass the budget
    assert training and re.match(r"training run: \d+/128 steps \(100%\)", training[-1]), training
    assert final and final[-1].startswith("final evaluation: 12/12 pieces (100%)")
    assert "\r" not in shown.out + shown.err  # no progress bar in a pipe


# ---------------------------------------------------------------------------- kill tests
@pytest.mark.slow
def test_train_killed_at_a_random_moment_resumes_without_losing_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    code = ("import sys; from musicenv.cli import main; sys.exit(main(['train', '--timesteps', '4096', "
            "'--n-envs', '2', '--env-kwargs', 'n_bars=1', '--eval-freq', '0', '--checkpoint-freq', '256', "
            f"'--final-episodes', '2', '--baselines', 'random', '--no-progress', '--out', {str(run)!r}]))")
    rng = random.Random(int(time.time()))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 300
        while not list((run / "checkpoints").glob("agent_*_steps.pt")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 3.0))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    saved = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("agent_*_steps.pt"))
    result = resume(run, progress=False)
    state = json.loads((run / "run.json").read_text())
    restored = state["resumes"][0]
    if restored["checkpoint"] == "agent.pt":
        # on a quiet machine the kill can land after training, during the final evaluation:
        # the trained agent is newer than every checkpoint and is what the run resumes from
        assert restored["timesteps"] >= 4096 and restored["timesteps"] >= saved[-1]
    else:
        assert restored["checkpoint"] == f"agent_{saved[-1]}_steps.pt"
        assert restored["timesteps"] == saved[-1]  # the newest finished checkpoint was kept
    assert result.timesteps == 4096 and state["status"] == "finished"


PRETRAIN_SCRIPT = """
import sys
from agents import prior_cli
from musicenv import corpus
from musicenv.cli import main
data = corpus.load(["bach/bwv66.6", "bach/bwv10.7", "bach/bwv11.6", "bach/bwv13.6"], progress=False, jobs=1)
ids = data.ids
splits = corpus.CorpusSplit(data.subset(ids[:2]), data.subset(ids[2:3]), data.subset(ids[3:]))
prior_cli._load_split = lambda name, seed: (data, splits)
sys.exit(main(["pretrain", "--corpus", "bach", "--out", sys.argv[1], "--hidden", "16", "--embed", "8",
               "--steps", sys.argv[2], "--eval-every", "2", "--batch-size", "8", "--threads", "1",
               "--max-minutes", "2", "--patience", "100000"]))
"""


@pytest.mark.slow
def test_pretrain_killed_mid_training_leaves_the_finished_prior_intact(tmp_path):
    from agents.note_rnn import NoteRNN

    script = write(tmp_path / "pretrain.py", PRETRAIN_SCRIPT)
    out = tmp_path / "prior.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(script), str(out), "4"], cwd=ROOT, check=True, env=env,
                   capture_output=True, timeout=600)
    finished = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("prior", "ngram"))}
    assert set(finished) == {"prior.pt", "prior.metrics.json", "ngram_bach.npz"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), "100000"], cwd=ROOT, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # progress lines: the output is a pipe
            if line.startswith("training note-RNN"):
                break
        time.sleep(random.uniform(0.0, 2.0))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for name, data in finished.items():
        assert (tmp_path / name).read_bytes() == data, name  # nothing half-written over it
    NoteRNN.load(out)


def test_resume_of_an_old_sb3_zip_run_needs_the_unsafe_opt_in(runs, tmp_path):
    """A run of an older musicenv (SB3 .zip checkpoints only) resumes only when the user says so."""
    run = tmp_path / "old"
    shutil.copytree(runs["interrupted"], run)
    model, _ = load_run(run)  # its newest checkpoint, as SB3 would have saved it
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    model.save(run / "checkpoints" / f"model_{model.num_timesteps}_steps.zip")
    with pytest.raises(RunStateError, match="--unsafe-load-sb3-zip"):
        resume(run, progress=False)
    result = resume(run, progress=False, unsafe_load_sb3_zip=True)
    state = json.loads((run / "run.json").read_text())
    assert state["resumes"][-1]["checkpoint"] == f"model_{model.num_timesteps}_steps.zip"
    assert result.timesteps == 128 and (run / "agent.pt").is_file()  # from now on stored safely
