"""The throughput benchmark (experiments/throughput.py) keeps working: run at a tiny
size, it reports every figure of issue 8 as a finite, positive number, or as null
with the reason why that part is unavailable."""

from __future__ import annotations

import json
import math

import pytest

from experiments import throughput

FIGURES = ("single_vs_cartpole", "vector1024_vs_cartpole_vector", "vector1024_tokens_vs_cartpole_vector", "length_scaling",
           "prior_reward_steps_per_s_256", "prior_reward_ratio_256", "ppo_train_vs_cartpole", "import_s_ratio",
           "corpus_cached_load_s", "numba_compile_s")


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("MUSICENV_CACHE", str(tmp / "cache"))  # the corpus part parses one chorale here
    try:
        path = tmp / "bench.json"
        assert throughput.main(["--quick", "--json", str(path)]) == 0
        return json.loads(path.read_text())
    finally:
        mp.undo()


def test_quick_run_reports_every_figure(quick_report):
    for key in FIGURES:
        assert key in quick_report, key
        value = quick_report[key]
        if value is None:
            assert quick_report["reasons"][key].strip(), f"{key} is null without a reason"
        else:
            assert _positive(value), (key, value)
            assert quick_report["goals"][key]["met"] in (True, False)
    # only the parts that may legitimately be missing can be null
    for key in ("single_vs_cartpole", "vector1024_vs_cartpole_vector", "vector1024_tokens_vs_cartpole_vector",
                "length_scaling", "ppo_train_vs_cartpole",
                "import_s_ratio", "corpus_cached_load_s"):
        assert quick_report[key] is not None, quick_report["reasons"].get(key)
    assert quick_report["numba_compile_s"] is None  # skipped at the quick size
    assert (quick_report["prior_reward_steps_per_s_256"] is None) == (quick_report["prior_reward_ratio_256"] is None)


def test_quick_run_records_rates_load_and_versions(quick_report):
    raw = quick_report["raw"]
    for key in ("single_steps_per_s", "cartpole_steps_per_s", "vector_steps_per_s", "vector_tokens_steps_per_s",
                "cartpole_vector_steps_per_s",
                "n_bars_4_us_per_step", "n_bars_64_us_per_step", "import_musicenv_s", "import_gymnasium_s"):
        assert _positive(raw[key]), (key, raw.get(key))
    assert _positive(raw["ppo_dummy_vs_cartpole"]) and _positive(raw["ppo_shipped_vs_cartpole"])
    assert set(raw["ppo_sb3_defaults_runs"]) == {"cartpole", "music"}
    if quick_report["prior_reward_ratio_256"] is not None:  # the small prior is measured beside the default
        assert _positive(raw["prior_small_ratio_256"]) and _positive(raw["prior_small_env_steps_per_s"])
    for run in ("cartpole", "music", "music_dummy"):  # PPO: rate and where the time went, per run
        times = raw["ppo_runs"][run]
        assert all(_positive(times[k]) for k in ("steps_per_s", "total_s", "update_s", "rollout_s", "env_step_s"))
        assert times["env_step_s"] < times["rollout_s"] < times["total_s"]
        assert times["update_s"] + times["rollout_s"] <= times["total_s"] * 1.001
    settings = raw["ppo_settings"]
    assert (settings["n_envs"], settings["n_steps"], settings["batch_size"], settings["n_epochs"]) == (2, 32, 32, 1)
    assert settings["vec_env"] == "batched" and settings["torch_threads"] == 1
    assert settings["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}  # ppo.yml's net, written out
    assert raw["import_musicenv_loads"] == []  # import musicenv pulls in no numba, torch, music21
    load = quick_report["load_avg"]
    assert len(load["before"]) == 3 and len(load["after"]) == 3
    assert all(math.isfinite(x) and x >= 0 for x in load["before"] + load["after"])
    versions = quick_report["versions"]
    assert versions["numpy"] and versions["numba"] and versions["gymnasium"] and versions["python"]
    assert quick_report["settings"]["quick"] is True


def test_table_lists_figure_value_goal_and_verdict():
    res = throughput.Result(figures={"single_vs_cartpole": 0.75, "length_scaling": 1.3, "prior_reward_ratio_256": None},
                            reasons={"prior_reward_ratio_256": "no prior"})
    table = throughput.format_table(res).splitlines()
    assert table[0] == "| figure | value | goal | met? |"
    assert table[2] == "| `single_vs_cartpole` | 0.75 | >= 0.7 | yes |"
    assert table[3] == "| `length_scaling` | 1.30 | <= 1.1 | **no** |"
    assert table[4] == "| `prior_reward_ratio_256` | n/a | >= 0.2 | - |"


def test_bad_options_are_rejected(capsys):
    assert throughput.main(["--quick", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


def test_musicenv_bench_command_is_registered():
    from musicenv import cli

    assert "experiments.throughput" in cli.COMMAND_MODULES
    args = cli.build_parser().parse_args(["bench", "--quick", "--repeats", "2", "--steps", "100", "--json", "x.json"])
    assert args.func is throughput._run_cli
    assert (args.quick, args.repeats, args.steps, args.json) == (True, 2, 100, "x.json")


def test_profile_splits_a_vector_step_into_terms_observation_and_driver():
    prof = throughput.profile_vector_step(num_envs=8, steps=20, reward={"in_key": 1.0, "range": 2.0, "cadence": 1.0},
                                          observation="tokens", repeats=1)
    ns = prof["ns_per_env_step"]
    assert set(prof["terms_ns_per_env_step"]) == {"in_key", "range", "cadence"}
    assert all(v >= 0 for v in prof["terms_ns_per_env_step"].values())
    for part in ("step", "reward", "observation", "autoreset", "driver", "reward_fixed"):
        assert math.isfinite(ns[part]) and ns[part] >= 0, part
    # the parts are the step's: driver is what the timed calls leave
    assert ns["reward"] + ns["observation"] + ns["autoreset"] + ns["driver"] == pytest.approx(ns["step"])
    assert ns["reward"] < ns["step"] and ns["observation"] < ns["step"]
    assert prof["obs_bytes_per_env"] == 17 * 8  # the tokens observation: 17 int64
    dense = throughput.profile_vector_step(num_envs=4, steps=5, reward="in_key", repeats=1)
    assert dense["obs_bytes_per_env"] == 414 * 4  # the one-hot Dict: 414 float32
    table = throughput.format_profile(prof).splitlines()
    assert "observation='tokens'" in table[0] and table[2] == "| part | ns/env-step | share of the step |"
    assert sum("(alone)" in row for row in table) == 3 and table[-1].startswith("| step |")


def test_bench_profile_option(capsys):
    assert throughput.main(["--quick", "--profile", "--profile-reward", "no_such_term"]) == 2
    assert "--profile-reward" in capsys.readouterr().err
