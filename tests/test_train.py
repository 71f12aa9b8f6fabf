"""agents.train: short runs of every algorithm, the run directory, resuming, sampling
from a run, and the errors raised before training starts."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

import musicenv  # noqa: E402
from agents.train import (  # noqa: E402
    ALGORITHMS,
    ModelPolicy,
    RunStateError,
    TrainConfig,
    TrainConfigError,
    latest_checkpoint,
    load_run,
    make_env,
    resolve_config,
    resume,
    train,
)
from musicenv.baselines import run_episode  # noqa: E402
from musicenv.cli import main  # noqa: E402
from rewards import RewardSpecError  # noqa: E402

#: Tiny budgets per algorithm: a few updates in well under a second of training.
TINY = {
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "maskable_ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "recurrent_ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 1, "policy_kwargs.lstm_hidden_size": 16},
    "a2c": {"n_steps": 8},
    "dqn": {"buffer_size": 1000, "learning_starts": 64, "batch_size": 32, "train_freq": 4,
            "target_update_interval": 100},
    "kl_ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "maskable_kl_ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    **{f"rl_tuner_{v}": {"buffer_size": 1000, "learning_starts": 64, "batch_size": 32} for v in ("q", "psi", "g")},
}
#: Algorithms that only exist for some envs (the KL-control agents need the prior
#: observation, which only MusicComposition-v0 has): their files hold only those sections.
MUSIC_ONLY = ("kl_ppo", "rl_tuner_q", "rl_tuner_psi", "rl_tuner_g")
#: A reward of three terms keeps evaluation cheap and the term table small.
REWARD = {"in_key": 1.0, "stepwise_motion": 1.0, "cadence": 2.0}


def tiny_config(tmp_path: Path, algo: str, **overrides) -> TrainConfig:
    fields = dict(algo=algo, reward=REWARD, n_timesteps=256, n_envs=2, out=str(tmp_path / algo),
                  hyperparams=dict(TINY[algo]), eval_freq=128, eval_episodes=2, final_episodes=3,
                  checkpoint_freq=128, progress=False)
    fields.update(overrides)
    return TrainConfig(**fields)


def read_curve(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "learning_curve.csv", newline="") as f:
        return list(csv.DictReader(f))


class StopAt(BaseCallback):
    """Raise ``error`` once the model has taken ``steps`` env steps (a crash or Ctrl-C)."""

    def __init__(self, steps: int, error: type[BaseException]) -> None:
        super().__init__()
        self.steps, self.error = steps, error

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.steps:
            raise self.error("stopped by the test")
        return True


# ----------------------------------------------------------------------------- every algorithm
@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_trains_and_writes_a_complete_run_directory(tmp_path, algo):
    result = train(tiny_config(tmp_path, algo))
    run = result.run_dir
    assert result.timesteps >= 256 and result.model.num_timesteps == result.timesteps

    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["algo"] == algo and config["seed"] == 0 and config["reward"] == REWARD
    assert config["n_envs"] == 2 and config["policy"] == ALGORITHMS[algo].default_policy
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "finished" and state["timesteps"] == result.timesteps
    assert state["seeds"] == {"training": [0, 1], "eval": [1_000_000, 1_000_001], "test": [2_000_000, 2_000_002]}
    versions = json.loads((run / "versions.json").read_text())
    assert {"python", "torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy", "musicenv"} <= set(versions)
    assert list((run / "tensorboard").glob("*_1/events.out.tfevents.*"))
    assert (run / "checkpoints" / "agent_128_steps.pt").is_file() and (run / "agent.pt").is_file()
    assert (run / "train.monitor.csv").is_file()
    assert not list(run.rglob("*.tmp*")), "no temporary files are left behind"

    curve = read_curve(run)
    assert [(int(r["timesteps"]), r["mode"]) for r in curve][:4] == [(0, "greedy"), (0, "sampled"),
                                                                      (128, "greedy"), (128, "sampled")]
    assert {"term/in_key", "term/cadence", "metric/rl_tuner/notes_not_in_key",
            "metric/muspy/pitch_class_entropy"} <= set(curve[0])

    final = json.loads((run / "final_metrics.json").read_text())
    assert final["episodes"] == 3 and final["seeds"] == [2_000_000, 2_000_002]
    for mode in ("greedy", "sampled"):
        summary = final[mode]
        assert set(summary["terms"]) == set(REWARD)
        # the terms are the reward, split up: their means add up to the mean reward
        assert sum(summary["terms"].values()) == pytest.approx(summary["reward_mean"])
        assert 0.0 <= summary["metrics"]["rl_tuner/notes_not_in_key"] <= 1.0
        # the style yardstick against real melodies (3 pieces: too few for the two-sample test)
        assert 0.0 <= summary["metrics"]["style/distance"] <= 1.0 and "style/notes_per_bar" in summary["metrics"]
    assert set(final["baselines"]["random"]["terms"]) == set(REWARD)

    model, cfg = load_run(run)
    assert type(model).__name__ == type(result.model).__name__ and cfg.algo == algo
    env = make_env(cfg)
    comp, totals = run_episode(env, ModelPolicy(model, env, deterministic=True), seed=5)
    assert comp.n_steps == 64 and set(totals) == {*REWARD, "total"}


def test_greedy_final_metrics_replay_exactly_from_the_saved_model(tmp_path):
    """final_metrics.json is reproducible from the run directory alone."""
    result = train(tiny_config(tmp_path, "ppo", eval_freq=0, checkpoint_freq=0))
    model, cfg = load_run(result.run_dir)
    env = make_env(cfg)
    totals = [run_episode(env, ModelPolicy(model, env, deterministic=True), seed=s)[1]["total"]
              for s in range(cfg.test_seed, cfg.test_seed + cfg.final_episodes)]
    saved = json.loads((result.run_dir / "final_metrics.json").read_text())
    assert np.mean(totals) == pytest.approx(saved["greedy"]["reward_mean"])


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_evaluating_during_training_does_not_change_what_is_learned(tmp_path, algo):
    import torch

    def weights(eval_freq: int) -> list:
        cfg = tiny_config(tmp_path / str(eval_freq), algo, n_envs=1, n_timesteps=192, eval_freq=eval_freq,
                          checkpoint_freq=0, final_episodes=1)
        return [p.detach().clone() for p in train(cfg).model.policy.parameters()]

    for a, b in zip(weights(0), weights(64)):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------- resuming
def test_resume_after_a_crash_continues_from_the_latest_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, "ppo", n_timesteps=512)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(cfg, callbacks=[StopAt(300, RuntimeError)])
    run = Path(cfg.out)
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "failed" and "stopped by the test" in state["error"]
    assert not (run / "agent.pt").exists() and not (run / "final_metrics.json").exists()
    assert latest_checkpoint(run)[0].name == "agent_256_steps.pt"

    result = resume(run)
    assert result.timesteps == 512
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "finished"
    assert state["resumes"][0]["checkpoint"] == "agent_256_steps.pt" and state["resumes"][0]["timesteps"] == 256
    # one curve, no evaluation twice: rows after the checkpoint (none here) are redone
    steps = [(int(r["timesteps"]), r["mode"]) for r in read_curve(run)]
    assert steps == [(t, m) for t in (0, 128, 256, 384, 512) for m in ("greedy", "sampled")]
    assert [p.name for p in (run / "tensorboard").iterdir()] == ["PPO_1"]
    assert (run / "train-resume1.monitor.csv").is_file()
    with pytest.raises(RunStateError, match="nothing to resume"):
        resume(run)


def test_ctrl_c_saves_a_checkpoint_and_resume_restores_the_replay_buffer(tmp_path):
    cfg = tiny_config(tmp_path, "dqn", n_envs=1, n_timesteps=300, eval_freq=0, checkpoint_freq=0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StopAt(200, KeyboardInterrupt)])
    run = Path(cfg.out)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    model_zip, buffer = latest_checkpoint(run)
    assert model_zip.name == "agent_200_steps.pt" and buffer.name == "replay_buffer_200_steps.npz"

    class BufferSize(BaseCallback):
        def _on_training_start(self) -> None:
            self.at_start = (self.model.num_timesteps, self.model.replay_buffer.size())

        def _on_step(self) -> bool:
            return True

    seen = BufferSize()
    result = resume(run, callbacks=[seen])
    # SB3 calls callbacks before storing a step's transition: the step Ctrl-C cut short is lost
    assert seen.at_start == (200, 199)
    assert result.timesteps == 300


def test_resume_without_any_checkpoint_starts_over(tmp_path):
    cfg = tiny_config(tmp_path, "a2c", n_envs=1, checkpoint_freq=0, eval_freq=64)
    with pytest.raises(RuntimeError):
        train(cfg, callbacks=[StopAt(100, RuntimeError)])
    result = resume(cfg.out)
    assert result.timesteps == 256
    steps = [int(r["timesteps"]) for r in read_curve(Path(cfg.out)) if r["mode"] == "greedy"]
    assert steps == [0, 64, 128, 192, 256]


def test_resume_after_training_only_redoes_the_final_evaluation(tmp_path, monkeypatch):
    import agents.train.run as train_module

    cfg = tiny_config(tmp_path, "ppo", n_envs=1, n_timesteps=128, eval_freq=0, checkpoint_freq=0)
    real = train_module.final_evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "final_evaluation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert json.loads((Path(cfg.out) / "run.json").read_text())["status"] == "evaluating"
    monkeypatch.setattr(train_module, "final_evaluation", real)
    result = resume(cfg.out)
    state = json.loads((Path(cfg.out) / "run.json").read_text())
    assert state["status"] == "finished" and state["resumes"][0]["checkpoint"] == "agent.pt"
    assert result.timesteps == 128 and (Path(cfg.out) / "final_metrics.json").is_file()


# ------------------------------------------------------------------------------------ sampling
def test_model_policy_samples_reproducibly_without_touching_global_random_state(tmp_path):
    import torch

    result = train(tiny_config(tmp_path, "maskable_ppo", eval_freq=0, checkpoint_freq=0, final_episodes=1))
    env = make_env(result.config)
    torch.manual_seed(123)
    np.random.seed(123)
    before = torch.get_rng_state().clone(), np.random.get_state()[1].copy()
    pieces = [run_episode(env, ModelPolicy(result.model, env, seed=7), seed=3)[0].tokens for _ in range(2)]
    other = run_episode(env, ModelPolicy(result.model, env, seed=8), seed=3)[0].tokens
    assert np.array_equal(pieces[0], pieces[1]) and not np.array_equal(pieces[0], other)
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])


def test_run_directories_are_a_compose_source(tmp_path):
    compose = pytest.importorskip("musicenv.compose")
    result = train(tiny_config(tmp_path, "ppo", eval_freq=0, checkpoint_freq=0, final_episodes=1))
    info, argument = compose.get_source(f"run:{result.run_dir}")
    env = make_env(result.config)
    make_policy = info.factory(env, argument=argument, temperature=1.0)
    a = run_episode(env, make_policy(11), seed=11)[0].tokens
    b = run_episode(env, make_policy(11), seed=11)[0].tokens
    assert np.array_equal(a, b)
    other_env = make_env(TrainConfig(env_kwargs={"history_length": 16}))
    with pytest.raises(RunStateError, match=r"space differs .*'history': the run's shape \(8, 39\), this env's "
                                            r"\(16, 39\); history_length=8\)"):
        info.factory(other_env, argument=argument, temperature=1.0)


def test_cli_compose_model_plays_a_run_like_the_run_source(tmp_path, capsys):
    result = train(tiny_config(tmp_path, "ppo", eval_freq=0, checkpoint_freq=0, final_episodes=1))
    for flags, source in ((["--model", str(result.run_dir)], f"run:{result.run_dir}"),
                          (["--model", str(result.run_dir), "--greedy"], f"run-greedy:{result.run_dir}")):
        a, b = tmp_path / f"a{len(flags)}", tmp_path / f"b{len(flags)}"
        assert main(["compose", *flags, "-n", "1", "--bars", "1", "--no-wav", "--out", str(a), "--name", "x"]) == 0
        assert main(["compose", source, "-n", "1", "--bars", "1", "--no-wav", "--out", str(b), "--name", "x"]) == 0
        assert (a / "x_01.mid").read_bytes() == (b / "x_01.mid").read_bytes()
    capsys.readouterr()


def test_compose_plays_a_run_with_the_observation_settings_it_was_trained_with(tmp_path):
    compose = pytest.importorskip("musicenv.compose")
    result = train(tiny_config(tmp_path, "ppo", eval_freq=0, checkpoint_freq=0, final_episodes=1,
                               env_kwargs={"observe_prior": True, "history_length": 4}))
    # the user asks for nothing about the observation: the run's settings are used
    records = compose.compose(f"run:{result.run_dir}", n=1, out_dir=tmp_path / "out", n_bars=1, wav=False,
                              key="G major")
    assert len(records) == 1 and records[0].files["midi"].is_file()


# -------------------------------------------------------------------------------------- errors
def test_unknown_algorithm_names_the_valid_choices():
    with pytest.raises(TrainConfigError, match="unknown algorithm 'ppo2'; valid choices: ppo, a2c, dqn, maskable_ppo, "
                                               "recurrent_ppo"):
        resolve_config(TrainConfig(algo="ppo2"))


def test_algorithm_aliases_resolve():
    assert resolve_config(TrainConfig(algo="MaskablePPO")).algo == "maskable_ppo"
    assert resolve_config(TrainConfig(algo="ppo_lstm")).algo == "recurrent_ppo"


@pytest.mark.parametrize(("algo", "key"), [("a2c", "batch_size"), ("ppo", "buffer_size"), ("dqn", "n_epochs")])
def test_a_keyword_the_constructor_does_not_take_is_refused_with_the_valid_keys(algo, key):
    with pytest.raises(TrainConfigError, match=rf"does not accept '{key}'; valid keys: .*learning_rate"):
        resolve_config(TrainConfig(algo=algo, hyperparams={key: 64}))


def test_policy_kwargs_are_checked_against_the_policy():
    with pytest.raises(TrainConfigError, match=r"policy_kwargs: policy .* does not accept 'lstm_hidden_size'; "
                                               r"valid keys: net_arch"):
        resolve_config(TrainConfig(algo="ppo", hyperparams={"policy_kwargs.lstm_hidden_size": 32}))
    with pytest.raises(TrainConfigError, match="activation_fn"):
        resolve_config(TrainConfig(hyperparams={"policy_kwargs.activation_fn": "swishy"}))


def test_reserved_keywords_are_refused():
    with pytest.raises(TrainConfigError, match="'seed' is set by train itself"):
        resolve_config(TrainConfig(hyperparams={"seed": 3}))


def test_an_unresolvable_reward_fails_before_training(tmp_path):
    with pytest.raises(RewardSpecError, match="unknown reward term 'in_kee'; available: .*in_key"):
        train(TrainConfig(reward={"in_kee": 1.0}, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_a_bad_env_id_or_env_kwarg_is_refused():
    with pytest.raises(TrainConfigError, match="unknown env id 'CartPole-v1'; valid choices: MusicComposition-v0"):
        resolve_config(TrainConfig(env_id="CartPole-v1"))
    with pytest.raises(TrainConfigError, match="n_barz"):
        resolve_config(TrainConfig(env_kwargs={"n_barz": 8}))
    assert resolve_config(TrainConfig(env_id="musicenv:MusicComposition-v0")).env_id == "MusicComposition-v0"


def test_malformed_hyperparameter_files_name_the_file_and_key(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("MusicComposition-v0:\n  n_steps: [64\n")
    with pytest.raises(TrainConfigError, match=r"broken\.yml' is not valid YAML"):
        resolve_config(TrainConfig(hyperparams_file=str(broken)))
    other = tmp_path / "other.yml"
    other.write_text("CartPole-v1:\n  n_envs: 4\n")
    with pytest.raises(TrainConfigError, match=r"other\.yml' has no section for 'MusicComposition-v0'; "
                                               r"sections: CartPole-v1"):
        resolve_config(TrainConfig(hyperparams_file=str(other)))
    typo = tmp_path / "typo.yml"
    typo.write_text("MusicComposition-v0:\n  n_envs: four\n  n_timesteps: 1000\n")
    with pytest.raises(TrainConfigError, match=r"typo\.yml', section 'MusicComposition-v0': n_envs must be an integer"):
        resolve_config(TrainConfig(hyperparams_file=str(typo)))


def test_exponent_numbers_are_read_as_floats_though_yaml_1_1_reads_strings(tmp_path):
    file = tmp_path / "ppo.yml"
    file.write_text("MusicComposition-v0:\n  n_timesteps: 1e5\n  learning_rate: 1e-4\n  clip_range: lin_2e-1\n")
    cfg = resolve_config(TrainConfig(hyperparams_file=str(file), hyperparams={"ent_coef": "1e-3"}))
    assert cfg.n_timesteps == 100_000 and cfg.hyperparams["learning_rate"] == 1e-4
    assert cfg.hyperparams["ent_coef"] == 1e-3 and cfg.hyperparams["clip_range"] == "lin_2e-1"


@pytest.mark.parametrize("env_id", musicenv.ENV_IDS)
def test_shipped_hyperparameter_files_resolve_for_every_algorithm_and_env(env_id):
    for algo in ALGORITHMS:
        if env_id != "MusicComposition-v0" and algo in MUSIC_ONLY:
            with pytest.raises(TrainConfigError, match=env_id):
                resolve_config(TrainConfig(algo=algo, env_id=env_id))
            continue
        cfg = resolve_config(TrainConfig(algo=algo, env_id=env_id))
        assert cfg.n_timesteps == 100_000 and cfg.n_envs >= 1, algo


@pytest.mark.parametrize("env_id", [e for e in musicenv.ENV_IDS if e != "MusicComposition-v0"])
def test_every_other_registered_env_trains(tmp_path, env_id):
    cfg = tiny_config(tmp_path, "ppo", env_id=env_id, reward=None, n_timesteps=128, eval_freq=0,
                      checkpoint_freq=0, final_episodes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # metrics may not read its compositions yet
        result = train(cfg)
    final = json.loads((result.run_dir / "final_metrics.json").read_text())
    assert sum(final["greedy"]["terms"].values()) == pytest.approx(final["greedy"]["reward_mean"])


def test_baselines_are_compose_sources_and_unknown_ones_are_refused():
    pytest.importorskip("musicenv.compose")
    assert resolve_config(TrainConfig(baselines=["random", "rule"])).baselines == ["random", "rule"]
    with pytest.raises(TrainConfigError, match="baseline 'randum'.*available sources"):
        resolve_config(TrainConfig(baselines=["randum"]))


def test_overlapping_seed_ranges_are_refused():
    with pytest.raises(TrainConfigError, match="training seeds 999999..1000006 overlap eval seeds"):
        resolve_config(TrainConfig(seed=999_999))


def test_an_existing_run_directory_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yml").write_text("algo: ppo\n")
    with pytest.raises(RunStateError, match="already holds a run; continue it with `musicenv train --resume"):
        train(TrainConfig(out=str(tmp_path / "run")))


# ------------------------------------------------------------------------------------------ CLI
def test_importing_the_train_command_imports_neither_torch_nor_sb3():
    import subprocess
    import sys

    code = ("import sys, agents.train; "
            "print(sorted(m for m in ('torch', 'stable_baselines3', 'sb3_contrib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["train", "--algo", "sac", "--out", str(tmp_path / "x")]) == 2
    assert "valid choices: ppo, a2c, dqn" in capsys.readouterr().err
    assert main(["train", "--hyperparams", "learning_rate"]) == 2
    assert "takes KEY=VALUE pairs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--seed", "3"]) == 2
    assert "drop --seed" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_cli_flags_become_the_config(tmp_path):
    from agents.train import config_from_args
    from musicenv.cli import build_parser

    args = build_parser().parse_args([
        "train", "--algo", "dqn", "--reward", "{in_key: 2, cadence: 1}", "--env-kwargs", "n_bars=2", "key=D minor",
        "--hyperparams", "learning_rate=lin_1e-3", "policy_kwargs.net_arch=[32, 32]", "--timesteps", "1e3",
        "--n-envs", "1", "--seed", "4", "--no-progress",
    ])
    cfg = resolve_config(config_from_args(args))
    assert cfg.reward == {"in_key": 2, "cadence": 1}
    assert cfg.env_kwargs["n_bars"] == 2 and cfg.env_kwargs["key"] == "D minor"
    # every other observation setting is pinned to the env's default, so the run keeps its meaning
    assert cfg.env_kwargs["history_length"] == 8 and cfg.env_kwargs["observe_prior"] is False
    assert cfg.hyperparams["learning_rate"] == "lin_1e-3" and cfg.hyperparams["policy_kwargs"] == {"net_arch": [32, 32]}
    assert cfg.hyperparams["buffer_size"] == 20000  # the file's other keys stay
    assert (cfg.n_timesteps, cfg.n_envs, cfg.seed, cfg.progress) == (1000, 1, 4, False)


def test_jam_configs_pin_the_keywords_their_base_class_takes():
    # JamChords-v0's constructor passes **kwargs on to the Jam view: those settings are pinned too
    from agents.train import TrainConfig

    cfg = resolve_config(TrainConfig(algo="maskable_ppo", env_id="JamChords-v0", env_kwargs={"n_bars": 4}))
    kw = cfg.env_kwargs
    assert kw["n_bars"] == 4 and kw["split"] == "test" and kw["partner"] == "bach"
    assert kw["key_relative"] is True and kw["history_length"] == 8 and kw["meter"] == "4/4"


def test_cli_trains_and_prints_the_comparison_with_the_random_policy(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--timesteps", "128", "--n-envs", "1", "--out", str(out), "--reward", "in_key",
                 "--hyperparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--eval-freq", "0",
                 "--final-episodes", "2", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and "random (baseline)" in printed
    cfg = TrainConfig.from_yaml(out / "config.yml")
    cfg.out = str(tmp_path / "rerun")
    assert main(["train", "--config", str(out / "config.yml"), "--out", cfg.out]) == 0
    first = json.loads((out / "final_metrics.json").read_text())
    again = json.loads((tmp_path / "rerun" / "final_metrics.json").read_text())
    assert first["greedy"]["reward_mean"] == again["greedy"]["reward_mean"], "a run reruns from its config"


def test_space_difference_names_the_block_and_the_keyword_that_sets_it():
    from types import SimpleNamespace

    from gymnasium import spaces

    from agents.train import space_difference

    def box(*shape):
        return spaces.Box(0.0, 1.0, shape, dtype=np.float32)

    run = SimpleNamespace(observation_space=spaces.Dict({"history": box(16, 39), "key": box(24)}),
                          action_space=spaces.Discrete(38))
    env = SimpleNamespace(observation_space=spaces.Dict({"history": box(8, 39), "key": box(24), "prior": box(38)}),
                          action_space=spaces.Discrete(38))
    assert space_difference(run, env) == ("block 'history': the run's shape (16, 39), this env's (8, 39); "
                                           "history_length=16, block 'prior' only in this env (observe_prior)")
    env.action_space = spaces.Discrete(40)
    assert space_difference(run, env) == "actions: the run's Discrete(38), this env's Discrete(40)"
