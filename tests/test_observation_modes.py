"""The two observation modes of MusicComposition-v0: the one-hot Dict (default) and the
compact ``"tokens"`` Dict of integer fields, which must carry exactly the same facts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import musicenv  # noqa: F401
from musicenv.theory import CHORD_FEATURES, N_KEYS, N_PITCH_CLASSES, N_QUALITIES


def _decode_dict(obs: dict, steps_per_bar: int, n_steps: int) -> dict:
    """The tokens-mode fields read back from one one-hot observation."""
    h = obs["history"]
    chords = []
    for row in obs["chords"]:
        if row[CHORD_FEATURES - 1] == 1.0:
            chords.append([N_PITCH_CLASSES, N_QUALITIES])
        else:
            chords.append([int(np.argmax(row[:N_PITCH_CLASSES])), int(np.argmax(row[N_PITCH_CLASSES:-1]))])
    pc = obs["pitch_class"]
    return {
        "history": np.argmax(h, axis=1),
        "pitch_class": [int(np.argmax(pc)) if pc.any() else N_PITCH_CLASSES],
        "position": [int(np.argmax(obs["position"]))],
        "note_duration": [int(round(float(obs["note_duration"][0]) * 2 * steps_per_bar))],
        "chords": chords,
        "key": [int(np.argmax(obs["key"]))],
        "step": [int(round(float(obs["progress"][0]) * n_steps))],
    }


def _check_same_facts(d: dict, t: dict, steps_per_bar: int, n_steps: int) -> None:
    expected = _decode_dict(d, steps_per_bar, n_steps)
    assert set(t) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(t[name], np.asarray(value), err_msg=name)
        assert t[name].dtype == np.int64


def test_tokens_observation_on_a_hand_made_melody():
    env = gym.make("MusicComposition-v0", observation="tokens", key="D major", progression="I-IV-V-I")
    obs, _ = env.reset(seed=0)
    assert obs["history"].tolist() == [38] * 8  # all BEGIN padding (V = 38)
    assert obs["pitch_class"].tolist() == [12] and obs["step"].tolist() == [0] and obs["key"].tolist() == [2]
    assert obs["chords"].tolist() == [[2, 0], [7, 0]]  # D major now, G major next
    for a in (14, 1, 1, 1, 18, 1):  # C4 for a quarter, then E4 held for two steps
        obs, *_ = env.step(a)
    assert obs["history"].tolist() == [38, 38, 14, 1, 1, 1, 18, 1]
    assert obs["pitch_class"].tolist() == [4]  # E
    assert obs["position"].tolist() == [6] and obs["step"].tolist() == [6]
    assert obs["note_duration"].tolist() == [2]  # E4 began 2 steps ago
    assert env.observation_space.contains(obs)
    space = env.observation_space
    assert space["history"].nvec.tolist() == [39] * 8 and space["key"].nvec.tolist() == [N_KEYS]
    assert space["chords"].nvec.tolist() == [[13, N_QUALITIES + 1]] * 2 and space["step"].nvec.tolist() == [65]


@settings(max_examples=25, deadline=None)
@given(actions=st.lists(st.integers(0, 37), min_size=1, max_size=60), seed=st.integers(0, 2**16),
       meter=st.sampled_from(["4/4", "3/4", "6/8"]), history=st.integers(1, 12))
def test_tokens_and_dict_observations_carry_the_same_facts(actions, seed, meter, history):
    """Step for step, the tokens observation is the one-hot one read back, and the
    rewards and terms of the two modes are identical (hypothesis, random actions)."""
    kw = dict(meter=meter, n_bars=2, history_length=history, disable_env_checker=True)
    d_env = gym.make("MusicComposition-v0", **kw)
    t_env = gym.make("MusicComposition-v0", observation="tokens", **kw)
    core = d_env.unwrapped.core
    bar, n = core.steps_per_bar, core.capacity
    d, _ = d_env.reset(seed=seed)
    t, _ = t_env.reset(seed=seed)
    _check_same_facts(d, t, bar, n)
    for a in actions:
        d, rd, term, _, di = d_env.step(a)
        t, rt, _, _, ti = t_env.step(a)
        assert rd == rt and di == ti
        _check_same_facts(d, t, bar, n)
        assert t_env.observation_space.contains(t)
        if term:
            d, _ = d_env.reset()
            t, _ = t_env.reset()


def test_vector_tokens_observation_autoresets_and_is_compact():
    n = 3
    vec = gym.make_vec("MusicComposition-v0", num_envs=n, vectorization_mode="vector_entry_point", n_bars=1,
                       observation="tokens")
    obs, _ = vec.reset(seed=0)
    assert vec.observation_space.contains(obs)
    core = vec.unwrapped.core
    assert core.obs_dtype == np.int64 and core.obs_size == 8 + 1 + 1 + 1 + 4 + 1 + 1
    for _ in range(16):
        obs, r, term, _, _ = vec.step(vec.action_space.sample())
    assert term.all() and obs["step"].ravel().tolist() == [16] * n
    obs, r, term, _, _ = vec.step(vec.action_space.sample())
    assert (r == 0).all() and obs["step"].ravel().tolist() == [0] * n
    assert (obs["history"] == 38).all()


def test_unknown_observation_mode_and_tasks_without_tokens_say_what_is_accepted():
    with pytest.raises(ValueError, match="'dict'.*'tokens'"):
        gym.make("MusicComposition-v0", observation="onehot")
    with pytest.raises(ValueError, match="observation"):
        gym.make("MusicComposition-v0", observation=None)


def test_tokens_observation_with_the_prior_block():
    pytest.importorskip("torch")
    d_env = gym.make("MusicComposition-v0", observe_prior="small", n_bars=1)
    t_env = gym.make("MusicComposition-v0", observe_prior="small", n_bars=1, observation="tokens")
    assert t_env.observation_space["prior"] == d_env.observation_space["prior"]
    d, _ = d_env.reset(seed=1)
    t, _ = t_env.reset(seed=1)
    for a in (14, 1, 16, 0, 18):
        np.testing.assert_array_equal(d["prior"], t["prior"])
        assert t["prior"].dtype == np.float32 and t_env.observation_space.contains(t)
        d, *_ = d_env.step(a)
        t, *_ = t_env.step(a)
    vec = gym.make_vec("MusicComposition-v0", num_envs=2, vectorization_mode="vector_entry_point",
                       observe_prior="small", n_bars=1, observation="tokens")
    obs, _ = vec.reset(seed=1)
    assert obs["prior"].shape == (2, 38) and obs["history"].shape == (2, 8)
    obs, *_ = vec.step(np.array([14, 16]))
    assert vec.observation_space.contains(obs)
