"""agents.vec_env.BatchedVecEnv: the SB3 VecEnv over a musicenv batched core gives the
same transitions as SB3's DummyVecEnv over single envs (same seeds, same actions),
with SB3's autoreset, info and seeding conventions, and trains the same agent."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import musicenv
from agents.vec_env import BatchedVecEnv
from musicenv.envs.batched import ActionError

N_ENVS = 3


def _pair(env_id: str, n: int = N_ENVS, **kwargs):
    dummy = DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(n)])
    return dummy, BatchedVecEnv(env_id, n, kwargs)


def _assert_obs_equal(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (where, k)
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{where}, {k}")


def _assert_same_rollout(dummy, batched, steps: int, seed: int) -> int:
    """Step both with the same random actions; return how many episodes ended."""
    _assert_obs_equal(dummy.reset(), batched.reset(), "reset")
    assert dummy.reset_infos == batched.reset_infos
    n_actions = batched.action_space.n
    rng = np.random.default_rng(seed)
    ended = 0
    for t in range(steps):
        actions = rng.integers(0, n_actions, size=dummy.num_envs)
        od, rd, dd, infos_d = dummy.step(actions)
        ob, rb, db, infos_b = batched.step(actions)
        _assert_obs_equal(od, ob, f"step {t}")
        assert rd.dtype == rb.dtype == np.float32
        np.testing.assert_array_equal(rd, rb)
        np.testing.assert_array_equal(dd, db)
        for i, (x, y) in enumerate(zip(infos_d, infos_b)):
            assert x.keys() == y.keys(), (t, i)
            assert x["reward_terms"] == y["reward_terms"]
            assert x["TimeLimit.truncated"] is y["TimeLimit.truncated"] is False
            if "terminal_observation" in x:
                _assert_obs_equal(x["terminal_observation"], y["terminal_observation"], f"step {t}, terminal {i}")
        assert dummy.reset_infos == batched.reset_infos, t
        ended += int(dd.sum())
    return ended


@pytest.mark.parametrize("env_id", musicenv.ENV_IDS)
def test_same_transitions_as_dummy_vec_env(env_id):
    dummy, batched = _pair(env_id)
    dummy.seed(7)
    batched.seed(7)
    # long enough for two episodes per sub-env (the Jam envs play 8 bars, 128 steps)
    steps = max(140, 2 * gym.make(env_id).unwrapped.core.n_steps + 12)
    ended = _assert_same_rollout(dummy, batched, steps=steps, seed=1)
    assert ended >= 2 * N_ENVS  # autoreset is exercised, several times per sub-env


def test_unseeded_reset_keeps_each_generator_and_options_apply_once():
    dummy, batched = _pair("MusicComposition-v0", reward="in_key")
    for venv in (dummy, batched):
        venv.seed(3)
        venv.reset()
        venv.set_options({"key": "D minor", "progression": "i-iv-V-i"})
    # the next reset uses the options; it and the autoresets after it draw from the
    # generators seeded by the first reset
    _assert_same_rollout(dummy, batched, steps=70, seed=2)  # one autoreset at step 64
    assert [info["key"] for info in batched.reset_infos] != ["D minor"] * N_ENVS  # options were used once
    batched.set_options({"key": "D minor"})
    batched.reset()
    assert [info["key"] for info in batched.reset_infos] == ["D minor"] * N_ENVS


def test_autoreset_starts_a_new_piece_at_once():
    venv = BatchedVecEnv("MusicComposition-v0", 2, {"reward": "in_key", "n_bars": 1})  # 16 steps
    venv.seed(0)
    obs = venv.reset()
    assert np.all(obs["progress"] == 0.0)
    for t in range(16):
        obs, rewards, dones, infos = venv.step(np.full(2, 14))  # D4 throughout
        assert dones.tolist() == [t == 15] * 2
    # the episode's last observation is in the infos; the returned one is the next piece's first
    for i in range(2):
        assert infos[i]["terminal_observation"]["progress"][0] == 1.0
        assert obs["progress"][i, 0] == 0.0
        assert obs["history"][i, :, -1].all()  # only BEGIN padding in the new piece's history
    assert set(infos[0]["reward_terms"]) == {"in_key"}


def test_action_masks_reach_maskable_ppo_as_the_single_envs_give_them():
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    dummy, batched = _pair("MusicComposition-v0", constraint="in_key")
    for venv in (dummy, batched):
        venv.seed(5)
        venv.reset()
    assert is_masking_supported(batched)
    masks = get_action_masks(batched)
    np.testing.assert_array_equal(masks, get_action_masks(dummy))
    assert masks.shape == (N_ENVS, 38) and not masks[:, 1].any()  # no HOLD at the first step
    batched.step(np.array([14, 15, 16]))
    assert get_action_masks(batched)[:, 1].all()
    assert batched.env_method("action_masks", indices=[2])[0].shape == (38,)
    assert batched.get_attr("render_mode") == [None] * N_ENVS
    assert batched.env_is_wrapped(gym.Wrapper) == [False] * N_ENVS
    assert [c.n_steps for c in batched.get_attr("composition", indices=0)] == [1]
    assert batched.env_method("render") == [None] * N_ENVS  # no render_mode


def test_bad_use_raises_clear_errors():
    with pytest.raises(ValueError, match="no vector entry point|not a musicenv"):
        BatchedVecEnv("CartPole-v1", 2)
    with pytest.raises(ValueError, match="n_envs must be a positive integer"):
        BatchedVecEnv("MusicComposition-v0", 0)
    venv = BatchedVecEnv("MusicComposition-v0", 2, {"reward": "in_key"})
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.array([2, 3]))
    venv.reset()
    with pytest.raises(ActionError, match="outside the action space"):
        venv.step(np.array([2, 38]))
    with pytest.raises(ActionError, match="expected 2 integer action"):
        venv.step(np.array([2, 3, 4]))
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")
    assert not venv.has_attr("no_such_attribute")
    with pytest.raises(AttributeError, match="share one batched core"):
        venv.set_attr("render_mode", "ansi")


def test_pickled_copy_continues_identically():
    venv = BatchedVecEnv("Counterpoint-v0", 2)
    venv.seed(11)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        venv.step(rng.integers(0, venv.action_space.n, size=2))
    copy = pickle.loads(pickle.dumps(venv))
    for _ in range(40):
        a = rng.integers(0, venv.action_space.n, size=2)
        (o1, r1, d1, _), (o2, r2, d2, _) = venv.step(a), copy.step(a)
        _assert_obs_equal(o1, o2, "copy")
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)


def _ppo_weights_after_a_short_run(batched: bool):
    import torch
    from stable_baselines3 import PPO

    dummy, fast = _pair("MusicComposition-v0", n=2, reward="theory")
    model = PPO("MultiInputPolicy", VecMonitor(fast if batched else dummy), seed=0, n_steps=64, batch_size=64,
                n_epochs=1, device="cpu")
    model.learn(192)
    assert len(model.ep_info_buffer) == 4  # VecMonitor's "episode" stats: 2 envs x 2 pieces
    return torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach()


def test_ppo_learns_the_same_weights_on_batched_and_dummy_envs():
    """Same transitions, same seeds: PPO ends with bit-identical weights either way."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: more threads only contend for the shared cores
    try:
        weights = [_ppo_weights_after_a_short_run(batched) for batched in (True, False)]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(weights[0], weights[1])


def test_train_makes_batched_envs_by_default_and_dummy_or_subproc_on_request():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from agents.train import TrainConfig, TrainConfigError, make_vec_env, resolve_config

    cfg = resolve_config(TrainConfig(reward="in_key", n_envs=2, baselines=[]))
    assert cfg.vec_env == "batched"
    kinds = {"batched": BatchedVecEnv, "dummy": DummyVecEnv, "subproc": SubprocVecEnv}
    for name, cls in kinds.items():
        venv = make_vec_env(resolve_config({**cfg.to_dict(), "vec_env": name}))
        try:
            assert isinstance(venv, VecMonitor) and isinstance(venv.venv, cls), name
            venv.seed(0)
            obs = venv.reset()
            assert obs["history"].shape == (2, 8, 39)
            _, rewards, _, infos = venv.step(np.array([14, 37]))  # D4, B5
            assert set(infos[0]["reward_terms"]) == {"in_key"} and rewards.shape == (2,)
        finally:
            venv.close()
    with pytest.raises(TrainConfigError, match="valid choices: batched, dummy, subproc"):
        resolve_config({**cfg.to_dict(), "vec_env": "threads"})
