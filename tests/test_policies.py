"""Policies from the prior (agents.policies): the initial policy is the note-RNN prior,
the RNN path reproduces the env's incremental prior, freezing works, and the policies
train, save and load through SB3 and agents.train."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.utils import obs_as_tensor

import musicenv  # noqa: F401  (registers the envs)
from agents.policies import (
    MaskablePriorActorCriticPolicy,
    NoteRNNExtractor,
    PriorActorCriticPolicy,
    PriorObservationExtractor,
    PriorQPolicy,
)
from agents.train import TrainConfig, TrainConfigError, train

V = 38
EPISODE = 64  # default MusicComposition-v0: 4 bars x 16 steps


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_env(**kwargs) -> gym.Env:
    # the token-only Bach prior: the "rnn" source re-reads bare tokens, so it reproduces the env's
    # prior exactly only for a prior without context (the default prior runs bare there)
    return gym.make("MusicComposition-v0", observe_prior="bach", history_length=EPISODE, **kwargs)


BACH_RNN = {"prior_source": "rnn", "features_extractor_kwargs": {"checkpoint": "bach"}}


@pytest.fixture(scope="module")
def states() -> dict[str, np.ndarray]:
    """Every observation of 3 random pieces (192 states: each step 0..63 three times)."""
    env = make_env()
    rng = np.random.default_rng(0)
    obs_list = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs_list.append(obs)
            # notes of the RL Tuner's range and rests, never HOLD at step 0 (masked)
            obs, _, terminated, truncated, _ = env.step(int(rng.choice([0, *range(2, V)])))
            done = terminated or truncated
    return {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}


def kl_to_prior(logits: torch.Tensor, prior: np.ndarray) -> torch.Tensor:
    """KL(policy || prior) per state, in nats."""
    lp = torch.log_softmax(logits.double(), -1)
    lq = torch.log_softmax(torch.as_tensor(prior, dtype=torch.float64), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def policy_logits(model, states) -> torch.Tensor:
    with torch.no_grad():
        return model.policy.get_distribution(obs_as_tensor(states, "cpu")).distribution.logits


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_initial_actor_critic_policy_is_the_prior(states, algo):
    model = algo(PriorActorCriticPolicy, make_env(), seed=0, device="cpu")
    kl = kl_to_prior(policy_logits(model, states), states["prior"])
    assert float(kl.max()) < 1e-3
    # the prior is far from uniform here, so a policy ignoring it would fail the check
    assert float(kl_to_prior(torch.zeros(1, V), states["prior"][:1])[0]) > 0.5
    # and a trained residual does move the policy away from it
    with torch.no_grad():
        model.policy.action_net.bias[5] = 3.0
    assert float(kl_to_prior(policy_logits(model, states), states["prior"]).mean()) > 1e-2


def test_the_network_sees_the_prior_as_probabilities(states):
    """Log-probabilities down to -100 would saturate the tanh MLP; the features carry exp(prior)."""
    model = PPO(PriorActorCriticPolicy, make_env(), seed=0, device="cpu")
    extractor = model.policy.features_extractor
    assert isinstance(extractor, PriorObservationExtractor)
    with torch.no_grad():
        features = extractor(obs_as_tensor(states, "cpu"))
    assert features.shape == (len(states["prior"]), extractor.features_dim)
    assert float(features.min()) >= 0.0 and float(features.max()) <= 1.0
    keys = list(model.observation_space.spaces)
    start = sum(int(np.prod(model.observation_space[k].shape)) for k in keys[:keys.index("prior")])
    np.testing.assert_allclose(features[:, start:start + V].numpy(), np.exp(states["prior"]), rtol=1e-6)


def test_rnn_extractor_reproduces_the_env_prior_over_whole_pieces(states):
    """The extractor re-reads the history window; with history_length = episode length
    its logits must match the env's incremental prior at every step (step 0: after BEGIN)."""
    model = PPO(PriorActorCriticPolicy, make_env(), policy_kwargs=BACH_RNN, seed=0, device="cpu")
    assert isinstance(model.policy.features_extractor, NoteRNNExtractor)
    kl = kl_to_prior(policy_logits(model, states), states["prior"])
    assert float(kl.max()) < 1e-3
    # the pretrained output layers survive SB3's orthogonal initialisation of the extractor
    from agents.note_rnn import NoteRNN

    shipped = NoteRNN.load("bach")
    assert torch.equal(model.policy.features_extractor.rnn.out.weight, shipped.out.weight)


def test_rnn_extractor_refuses_a_history_window_shorter_than_the_piece():
    env = gym.make("MusicComposition-v0", history_length=16)
    extractor = NoteRNNExtractor(env.observation_space)
    obs, _ = env.reset(seed=0)
    for t in range(20):
        tensors = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
        if t < 16:
            extractor(tensors)
        else:
            with pytest.raises(ValueError, match="history_length >= the episode length"):
                extractor(tensors)
        obs, *_ = env.step(2 + t % 12)
    lenient = NoteRNNExtractor(env.observation_space, allow_truncation=True)
    assert lenient(tensors).shape == (1, lenient.features_dim)


def test_initial_dqn_q_values_are_the_prior_log_probabilities(states):
    model = DQN(PriorQPolicy, make_env(), seed=0, device="cpu")
    obs = obs_as_tensor(states, "cpu")
    prior = torch.log_softmax(torch.as_tensor(states["prior"]), -1)
    with torch.no_grad():
        for net in (model.q_net, model.q_net_target):
            q = net(obs)
            assert q.shape == (len(prior), V)
            assert torch.allclose(torch.softmax(q, -1), prior.exp(), atol=1e-6)
            assert torch.equal(q.argmax(1), prior.argmax(1))
        assert torch.equal(model.policy._predict(obs), prior.argmax(1))


def test_dqn_rnn_prior_source_matches_the_env_prior(states):
    model = DQN(PriorQPolicy, make_env(), policy_kwargs=BACH_RNN, seed=0, device="cpu")
    with torch.no_grad():
        q = model.q_net(obs_as_tensor(states, "cpu"))
    assert float(kl_to_prior(q, states["prior"]).max()) < 1e-3


def rnn_params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.policy.features_extractor.rnn.parameters()]


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_keeps_the_rnn_fixed_and_unfrozen_fine_tunes_it(freeze):
    kwargs = {"prior_source": "rnn", "features_extractor_kwargs": {"freeze": freeze}}
    model = PPO(PriorActorCriticPolicy, make_env(), policy_kwargs=kwargs, n_steps=64, batch_size=64, n_epochs=1,
                learning_rate=1e-3, seed=0, device="cpu")
    before = rnn_params(model)
    model.learn(64)  # one rollout, one gradient step
    after = rnn_params(model)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, after))
    assert unchanged is freeze


def test_missing_prior_observation_is_a_clear_error():
    env = gym.make("MusicComposition-v0")
    with pytest.raises(ValueError, match=r"obs\['prior'\].*observe_prior=True"):
        PPO(PriorActorCriticPolicy, env, device="cpu")
    with pytest.raises(ValueError, match=r"observe_prior=True"):
        DQN(PriorQPolicy, env, device="cpu")
    with pytest.raises(ValueError, match=r"unknown prior_source 'notes'; valid choices: observation, rnn"):
        PPO(PriorActorCriticPolicy, make_env(), policy_kwargs={"prior_source": "notes"}, device="cpu")
    with pytest.raises(TrainConfigError, match="observe_prior=True"):
        train(TrainConfig(algo="ppo", policy="agents.policies:PriorActorCriticPolicy", n_timesteps=64, n_envs=1,
                          progress=False))


def test_save_and_load_give_identical_actions(tmp_path, states):
    obs = {k: v[:40] for k, v in states.items()}
    for algo, policy, kwargs in ((PPO, PriorActorCriticPolicy, {"prior_source": "rnn"}),
                                 (DQN, PriorQPolicy, {})):
        model = algo(policy, make_env(), policy_kwargs=kwargs, seed=0, device="cpu")
        with torch.no_grad():  # a trained model: residual (and RNN) away from their initial values
            for p in model.policy.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.save(tmp_path / "model.zip")
        loaded = algo.load(tmp_path / "model.zip", device="cpu")
        assert type(loaded.policy) is policy
        a, _ = model.predict(obs, deterministic=True)
        b, _ = loaded.predict(obs, deterministic=True)
        np.testing.assert_array_equal(a, b)
        if algo is PPO:
            torch.testing.assert_close(policy_logits(model, obs), policy_logits(loaded, obs))


def test_ppo_a2c_and_dqn_train_from_the_prior_through_agents_train(tmp_path):
    common = {"n_timesteps": 256, "n_envs": 2, "eval_freq": 0, "checkpoint_freq": 0, "final_episodes": 1,
              "progress": False, "env_kwargs": {"observe_prior": True}}
    runs = {  # algo: (policy, hyperparameters)
        "ppo": ("agents.policies:PriorActorCriticPolicy", {"n_steps": 64, "batch_size": 64, "n_epochs": 1}),
        "a2c": ("agents.policies:PriorActorCriticPolicy", {"n_steps": 8}),
        "dqn": ("agents.policies:PriorQPolicy", {"learning_starts": 64, "buffer_size": 1000}),
    }
    for algo, (policy, hyperparams) in runs.items():
        result = train(TrainConfig(algo=algo, policy=policy, hyperparams=hyperparams, out=str(tmp_path / algo),
                                   **common))
        assert result.timesteps >= 256
        assert type(result.model.policy) is (PriorQPolicy if algo == "dqn" else PriorActorCriticPolicy)
        assert np.isfinite(result.final_metrics["sampled"]["reward_mean"])


def test_maskable_ppo_from_the_prior_respects_the_masks(states):
    from sb3_contrib import MaskablePPO

    env = make_env(constraint="in_key")
    model = MaskablePPO(MaskablePriorActorCriticPolicy, env, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                        device="cpu")
    kl = kl_to_prior(policy_logits(model, states), states["prior"])
    assert float(kl.max()) < 1e-3  # without masks: the prior
    model.learn(64)
    obs, _ = env.reset(seed=5)
    for _ in range(16):
        masks = env.unwrapped.action_masks()
        action, _ = model.predict(obs, action_masks=masks)
        assert masks[int(action)]
        obs, *_ = env.step(int(action))
