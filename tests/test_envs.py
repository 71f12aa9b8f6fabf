"""Tests every environment id this package registers: checker, determinism, pickling,
rendering, SubprocVecEnv, single-vs-vector agreement, bad input. The ids come from
Gymnasium's registry (every spec whose entry point is in ``musicenv``), as in
Gymnasium's own tests/envs/test_envs.py and MiniGrid's, so a new env is covered the
day it is registered."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils.env_checker import check_env, data_equivalence
from hypothesis import given, settings
from hypothesis import strategies as st

import musicenv
import rewards
from musicenv.envs.batched import ActionError
from musicenv.theory import MusicTheoryError, chord_name


def _entry_module(entry_point) -> str:
    return entry_point if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")


#: Every registered spec whose entry point lives in this package.
ENV_SPECS = [spec for spec in gym.registry.values()
             if _entry_module(spec.entry_point).replace(":", ".").split(".")[0] == "musicenv"]
ENV_IDS = [spec.id for spec in ENV_SPECS]
#: The ids with a vector entry point (``gym.make_vec(..., vectorization_mode="vector_entry_point")``).
VECTOR_IDS = [spec.id for spec in ENV_SPECS if spec.vector_entry_point is not None]
#: (id, render mode) for every render mode each env declares in its ``metadata``.
RENDER_CASES = [(spec.id, mode) for spec in ENV_SPECS
                for mode in (spec.entry_point if callable(spec.entry_point)
                             else load_env_creator(spec.entry_point)).metadata["render_modes"]]


def _observation_modes(spec) -> tuple[str, ...]:
    """The observation modes an env's task implements (``BatchedComposer.OBSERVATION_MODES``)."""
    env_cls = spec.entry_point if callable(spec.entry_point) else load_env_creator(spec.entry_point)
    return getattr(getattr(env_cls, "core_class", None), "OBSERVATION_MODES", ("dict",))


#: (id, observation mode) for every mode each env implements: the sweeps below run in each.
MODE_CASES = [(spec.id, mode) for spec in ENV_SPECS for mode in _observation_modes(spec)]
VECTOR_MODE_CASES = [(i, m) for i, m in MODE_CASES if i in VECTOR_IDS]


def _mode_kwargs(mode: str) -> dict:
    """Constructor keywords selecting ``mode`` (none for the default, so that envs without
    the ``observation`` argument are swept too)."""
    return {} if mode == "dict" else {"observation": mode}


#: Steps of the determinism test (Gymnasium's own rollout length).
DETERMINISM_STEPS = 50


def _assert_obs_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_registry_sweep_sees_every_env():
    assert {"MusicComposition-v0", "Counterpoint-v0", "Harmonization-v0"} <= set(ENV_IDS)
    assert tuple(ENV_IDS) == musicenv.ENV_IDS
    assert set(VECTOR_IDS) == set(ENV_IDS)  # every musicenv env has its batched vector version
    assert {mode for _, mode in RENDER_CASES} == {"ansi", "rgb_array"}
    assert ("MusicComposition-v0", "tokens") in MODE_CASES


@pytest.mark.parametrize("env_id, obs_mode", MODE_CASES)
def test_env_checker_passes_without_warnings(env_id, obs_mode):
    env = gym.make(env_id, **_mode_kwargs(obs_mode))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    messages = [str(w.message) for w in caught if "musicenv" in str(w.filename) or "gymnasium" in str(w.filename)]
    assert not messages, messages
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_with_module_prefix(env_id):
    env = gym.make(f"musicenv:{env_id}")
    env.reset(seed=0)
    env.close()


@pytest.mark.parametrize("env_id, obs_mode", MODE_CASES)
def test_deterministic_under_seed(env_id, obs_mode):
    """Two envs seeded alike give equal observations, rewards, flags and infos for 50
    steps (across episode ends), as in Gymnasium's determinism rollout."""
    env1, env2 = gym.make(env_id, **_mode_kwargs(obs_mode)), gym.make(env_id, **_mode_kwargs(obs_mode))
    for env in (env1, env2):
        env.action_space.seed(123)
    assert data_equivalence(env1.reset(seed=123), env2.reset(seed=123), exact=True)
    for _ in range(DETERMINISM_STEPS):
        a1, a2 = env1.action_space.sample(), env2.action_space.sample()
        assert a1 == a2
        out1, out2 = env1.step(a1), env2.step(a2)
        assert data_equivalence(out1, out2, exact=True)
        if out1[2] or out1[3]:
            assert data_equivalence(env1.reset(), env2.reset(), exact=True)
    # a different seed gives a different context somewhere over a few episodes
    keys_a = [env1.reset(seed=s)[1]["key"] for s in range(6)]
    keys_b = [env1.reset(seed=s + 100)[1]["key"] for s in range(6)]
    assert keys_a != keys_b


@pytest.mark.parametrize("env_id, obs_mode", MODE_CASES)
def test_pickled_env_behaves_like_original(env_id, obs_mode):
    env = gym.make(env_id, **_mode_kwargs(obs_mode))
    env.reset(seed=7)
    n = env.action_space.n  # actions below are tokens of MusicComposition-v0, folded into smaller spaces
    for a in (14, 1, 16, 1, 0, 18):
        env.step(a % n)
    clone = pickle.loads(pickle.dumps(env))
    for a in (19, 1, 1, 21, 2, 0, 14) * 3:
        o1, r1, t1, _, i1 = env.step(a % n)
        o2, r2, t2, _, i2 = clone.step(a % n)
        _assert_obs_equal(o1, o2)
        assert r1 == r2 and t1 == t2 and i1 == i2
        np.testing.assert_array_equal(env.unwrapped.composition.tokens, clone.unwrapped.composition.tokens)
        if t1:  # short episodes (Counterpoint-v0) end inside the loop: both start anew alike
            (o1, i1), (o2, i2) = env.reset(), clone.reset()
            _assert_obs_equal(o1, o2)
            assert i1 == i2


@pytest.mark.parametrize("env_id, mode", RENDER_CASES)
def test_render_modes(env_id, mode):
    """Every render mode gives its type after reset and after a step."""
    env = gym.make(env_id, render_mode=mode)
    env.reset(seed=0)
    first = env.render()
    env.step(14 % env.action_space.n)
    second = env.render()
    for frame in (first, second):
        if mode == "ansi":
            assert isinstance(frame, str) and frame
        else:
            assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    if mode == "rgb_array":
        assert first.shape == second.shape
        assert not np.array_equal(first, second)  # the new note is drawn


@pytest.mark.parametrize("env_id, obs_mode", MODE_CASES)
def test_sb3_subproc_vec_env(env_id, obs_mode):
    from stable_baselines3.common.vec_env import SubprocVecEnv

    kwargs = _mode_kwargs(obs_mode)
    venv = SubprocVecEnv([lambda: gym.make(f"musicenv:{env_id}", **kwargs) for _ in range(2)], start_method="spawn")
    try:
        venv.seed(3)
        obs = venv.reset()
        assert all(v.shape[0] == 2 for v in obs.values())
        total = np.zeros(2)
        for _ in range(70):  # crosses an episode end
            obs, reward, done, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
            total += reward
            assert "reward_terms" in infos[0]
        assert np.all(np.isfinite(total))
    finally:
        venv.close()


@pytest.mark.parametrize("env_id, obs_mode", VECTOR_MODE_CASES)
def test_vector_env_of_one_matches_single_env(env_id, obs_mode):
    single = gym.make(env_id, **_mode_kwargs(obs_mode))
    vec = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", **_mode_kwargs(obs_mode))
    n_steps = single.unwrapped.core.n_steps
    rng = np.random.default_rng(1)
    o1, _ = single.reset(seed=5)
    o2, _ = vec.reset(seed=5)
    for _ in range(2 * n_steps + 5):
        _assert_obs_equal(o1, {k: v[0] for k, v in o2.items()})
        a = int(rng.integers(0, single.action_space.n))
        o1, r1, t1, _, i1 = single.step(a)
        o2, r2, t2, _, i2 = vec.step(np.array([a]))
        assert r1 == pytest.approx(r2[0], abs=0) and t1 == t2[0]
        for name, v in i1["reward_terms"].items():
            assert v == i2["reward_terms"][name][0]
        if t1:
            o1, _ = single.reset()
            o2, r2, t2, _, _ = vec.step(np.array([0]))  # next-step autoreset: action ignored
            assert r2[0] == 0.0 and not t2[0]


@pytest.mark.parametrize("env_id, obs_mode", VECTOR_MODE_CASES)
def test_vector_env_matches_independent_single_envs(env_id, obs_mode):
    n = 4
    vec = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **_mode_kwargs(obs_mode))
    singles = [gym.make(env_id, **_mode_kwargs(obs_mode)) for _ in range(n)]
    # options that fix the whole context, in the env's own terms (MusicComposition-v0:
    # {"key": "D minor", "progression": "i-iv-V-i"})
    opts = type(singles[0].unwrapped).EXAMPLE_RESET_OPTIONS
    vec.reset(seed=0, options=opts)
    for s in singles:
        s.reset(seed=0, options=opts)
    rng = np.random.default_rng(2)
    steps = singles[0].unwrapped.core.n_steps
    for _ in range(steps):
        acts = rng.integers(0, singles[0].action_space.n, size=n)
        vo, vr, vt, _, vi = vec.step(acts)
        for i, s in enumerate(singles):
            o, r, t, _, info = s.step(int(acts[i]))
            assert r == vr[i] and t == vt[i]
            _assert_obs_equal(o, {k: v[i] for k, v in vo.items()})
    assert vt.all()


def test_vector_env_autoreset_and_spaces():
    vec = gym.make_vec("MusicComposition-v0", num_envs=3, vectorization_mode="vector_entry_point", n_bars=1)
    obs, _ = vec.reset(seed=0)
    assert vec.observation_space.contains(obs)
    for _ in range(16):
        obs, r, term, trunc, info = vec.step(vec.action_space.sample())
    assert term.all() and not trunc.any()
    obs, r, term, trunc, info = vec.step(vec.action_space.sample())
    assert (r == 0).all() and not term.any()
    np.testing.assert_array_equal(obs["progress"], 0.0)
    assert vec.action_masks().shape == (3, vec.single_action_space.n)
    with pytest.raises(ActionError, match="0..37"):
        vec.step(np.array([0, 1, 38]))


def test_music_composition_episode_length_and_terms():
    env = gym.make("MusicComposition-v0", n_bars=2, meter="3/4")
    env.reset(seed=0)
    steps = 0
    term = False
    while not term:
        _, r, term, trunc, info = env.step(env.action_space.sample())
        steps += 1
        assert set(info["reward_terms"]) == set(rewards.make("theory").names)
        assert sum(info["reward_terms"].values()) == pytest.approx(r)
    assert steps == 2 * 12
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_reset_options_and_constructor_context():
    env = gym.make("MusicComposition-v0", key="E minor", progression="i-VI-III-VII")
    _, info = env.reset(seed=0)
    assert info["key"] == "E minor"
    comp = env.unwrapped.composition
    assert comp.key.name == "E minor" and len(comp) == 0
    assert [chord_name(c) for c in comp.chords[::16]] == ["Em", "C", "G", "D"]
    _, info = env.reset(options={"key": "Bb major", "progression": ["ii", "V7", "I", "I"]})
    comp = env.unwrapped.composition
    assert info["key"] == "Bb major" and [chord_name(c) for c in comp.chords[:48:16]] == ["Cm", "F7", "Bb"]
    with pytest.raises(ValueError, match="accepted: 'key', 'progression'"):
        env.reset(options={"tempo_bpm": 3})
    with pytest.raises(MusicTheoryError):
        env.reset(options={"key": "H major"})


def test_composition_records_the_actions():
    env = gym.make("MusicComposition-v0", key="C major")
    env.reset(seed=0)
    for a in (14, 1, 1, 1, 16, 1, 0, 18):
        env.step(a)
    comp = env.unwrapped.composition
    assert comp.tokens.tolist() == [14, 1, 1, 1, 16, 1, 0, 18]
    assert [n.pitch for n in comp.notes()] == [60, 62, 64]
    assert [n.duration for n in comp.notes()] == [4, 2, 1]


def test_action_masks():
    env = gym.make("MusicComposition-v0", key="C major", constraint="in_key")
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    assert mask.dtype == bool and mask.shape == (38,)
    assert not mask[1] and mask[0]  # nothing to hold at the start
    assert mask[14] and not mask[15]  # C4 allowed, C#4 not
    assert mask[2:].sum() == 21  # 7 pitch classes x 3 octaves
    env.step(14)
    assert env.unwrapped.action_masks()[1]


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"reward": "no_such_term"}, rewards.RewardSpecError, "available"),
    ({"reward": {"in_key": float("nan")}}, rewards.RewardSpecError, "finite"),
    ({"reward": {"in_key": {"weight": 1, "bogus": 2}}}, rewards.RewardSpecError, "accepted"),
    ({"n_bars": 0}, ValueError, "n_bars"),
    ({"meter": "5/4"}, MusicTheoryError, "accepted"),
    ({"key": "H major"}, MusicTheoryError, "key"),
    ({"key": "C major", "progression": "C Xyz G"}, MusicTheoryError, "neither a roman numeral"),
    ({"constraint": "scale"}, ValueError, "in_key"),
    ({"chords_per_bar": 3}, ValueError, "divisor"),
    ({"min_pitch": 90, "max_pitch": 80}, ValueError, "range"),
    ({"render_mode": "midi"}, ValueError, "ansi"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gym.make("MusicComposition-v0", **kwargs)


@pytest.mark.parametrize("action", [-1, 38, 3.5, "C4", None, [1, 2]])
def test_out_of_range_action_raises(action):
    env = gym.make("MusicComposition-v0", disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises(ActionError, match="0..37"):
        env.step(action)


def test_flatten_observation():
    env = gym.wrappers.FlattenObservation(gym.make("MusicComposition-v0"))
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1 and obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert obs.shape[0] == 8 * 39 + 12 + 16 + 1 + 48 + 24 + 1  # default history_length 8


def test_import_musicenv_is_light():
    code = ("import sys, musicenv, gymnasium as gym; "
            "print(all(m not in sys.modules for m in ('numba', 'torch', 'music21', 'rewards')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@settings(max_examples=40, deadline=None)
@given(actions=st.lists(st.integers(0, 37), min_size=1, max_size=140), seed=st.integers(0, 2**16),
       meter=st.sampled_from(["4/4", "3/4", "6/8"]))
def test_random_action_sequences_never_crash(actions, seed, meter):
    env = gym.make("MusicComposition-v0", meter=meter, n_bars=2, disable_env_checker=True)
    obs, _ = env.reset(seed=seed)
    for a in actions:
        obs, r, term, _, info = env.step(a)
        assert np.isfinite(r) and all(np.isfinite(v) for v in info["reward_terms"].values())
        assert env.observation_space.contains(obs)
        if term:
            env.reset()


def test_reset_key_option_with_a_fixed_string_progression():
    env = gym.make("MusicComposition-v0", progression="I-vi-IV-V")
    env.reset(seed=0, options={"key": "A major"})
    assert [chord_name(c) for c in env.unwrapped.composition.chords[::16]] == ["A", "F#m", "D", "E"]
