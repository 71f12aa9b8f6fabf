"""The note-RNN prior (agents.note_rnn): shapes, incremental = full-sequence, training,
sampling, checkpoints and their errors, the shipped prior, the prior_log_likelihood term
and the `musicenv pretrain / evaluate-prior / finetune-prior` commands."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts: see agents.prior_cli

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import musicenv  # noqa: E402,F401  (registers the envs)
import rewards  # noqa: E402
from agents.note_rnn import (  # noqa: E402
    BACH_PRIOR,
    DEFAULT_PRIOR,
    CheckpointError,
    NoteRNN,
    NoteRNNConfig,
    PriorLogLikelihood,
    evaluate_nll,
    melody_examples,
    train,
)
from musicenv.core import CompositionBatch  # noqa: E402
from musicenv.corpus import CorpusSplit  # noqa: E402
from musicenv.encoding import DEFAULT_GRID, HOLD, TokenGrid  # noqa: E402
from musicenv.theory import Meter  # noqa: E402

torch.set_num_threads(2)
V = DEFAULT_GRID.vocab_size
COND = ("chord", "key", "position")
ARCHS = [("lstm", (), False), ("gru", (), False), ("transformer", (), False), ("lstm", COND, False),
         ("lstm", (), True), ("gru", COND, True), ("transformer", COND, True)]
CHORALES = ["bach/bwv66.6", "bach/bwv10.7", "bach/bwv11.6", "bach/bwv13.6"]


def small(arch="lstm", conditioning=(), relative=False, seed=0, **kw) -> NoteRNN:
    torch.manual_seed(seed)
    return NoteRNN(NoteRNNConfig(arch=arch, hidden_size=32, embed_size=16, num_layers=2, dropout=0.0,
                                 conditioning=conditioning, relative_pitch=relative, **kw)).eval()


def random_cond(B, T, rng):
    return {"chord": torch.as_tensor(rng.integers(0, 133, (B, T))), "key": torch.as_tensor(rng.integers(0, 24, (B, T))),
            "position": torch.as_tensor(rng.integers(0, 16, (B, T)))}


@pytest.fixture(scope="module")
def chorales():
    from musicenv import corpus

    return corpus.load(CHORALES, progress=False, jobs=1)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("arch,cond,relative", ARCHS)
def test_shapes_and_incremental_steps_equal_the_full_sequence(arch, cond, relative):
    model = small(arch, cond, relative)
    rng = np.random.default_rng(0)
    B, T = 3, 12
    # mostly REST/HOLD with a few notes, so relative features see "no pitch yet" and gaps
    tokens = torch.as_tensor(rng.choice([0, 1, 1, 1, 2, 14, 20, 37], (B, T)))
    inputs = torch.cat([torch.full((B, 1), model.begin), tokens[:, :-1]], dim=1)
    c = random_cond(B, T, rng) if cond else None
    with torch.no_grad():
        logits, _ = model(inputs, c)
        assert logits.shape == (B, T, V)
        state = model.initial_state(B)
        for t in range(T):
            step_cond = {k: v[:, t] for k, v in c.items()} if c else None
            step_logits, state = model.step(inputs[:, t], state, step_cond)
            assert step_logits.shape == (B, V)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-5)
        lp, _ = model.log_probs(inputs[:, 0], model.initial_state(B), {k: v[:, 0] for k, v in c.items()} if c else None)
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(B))


@pytest.mark.parametrize("relative", [False, True])
def test_states_can_be_selected_and_merged_per_row(relative):
    model = small("lstm", relative=relative)
    with torch.no_grad():
        state = model.initial_state(4)
        _, state = model.step(torch.full((4,), model.begin), state)
        _, state = model.step(torch.tensor([2, 3, 4, 5]), state)
        fresh = model.initial_state(2)
        merged = model.merge_state(state, torch.tensor([1, 3]), fresh)
        assert torch.equal(model.select_state(merged, torch.tensor([1]))[0], fresh[0][:, :1])
        assert torch.equal(model.select_state(merged, torch.tensor([0]))[0], state[0][:, :1])


def test_conditioned_model_needs_its_conditioning():
    model = small("lstm", ("key",))
    with pytest.raises(ValueError, match="conditioned on"):
        model.step(torch.tensor([model.begin]), model.initial_state(1))
    with pytest.raises(ValueError, match="accepted"):
        NoteRNNConfig(conditioning=("tempo",))


# ---------------------------------------------------------------------------- training
def test_a_few_training_steps_reduce_the_loss(chorales):
    model = small("lstm")
    before = evaluate_nll(model, chorales)
    assert before == pytest.approx(np.log(V), abs=0.3)
    result = train(model, chorales, chorales, augment=True, batch_size=16, lr=1e-2, max_steps=30, eval_every=10,
                   warmup=5, progress=False)
    after = evaluate_nll(model, chorales)
    assert after < before - 1.0
    assert result.best_valid_nll == pytest.approx(after)
    assert result.n_train_examples == 12 * len(chorales)
    assert [h["step"] for h in result.history] == [0, 10, 20, 30]


def test_augmentation_moves_keys_and_chords_with_the_melody(chorales):
    examples, folded = melody_examples(chorales, augment=True)
    assert len(examples) == 12 * len(chorales) and folded == 0
    first = chorales[0]
    keys = {int(e.key) for e in examples[:12]}
    assert len(keys) == 12 and all((k >= 12) == (first.key >= 12) for k in keys)
    bar = Meter.parse(first.meter).steps_per_bar(DEFAULT_GRID.steps_per_quarter)
    np.testing.assert_array_equal(examples[0].position, np.arange(first.n_steps) % bar)


# ---------------------------------------------------------------------------- sampling
def test_sampling_shapes_temperature_and_seeds():
    model = small("lstm", seed=1)
    out = model.sample(5, 20, temperature=1.0, seed=0)
    assert out.shape == (5, 20) and out.min() >= 0 and out.max() < V
    np.testing.assert_array_equal(out, model.sample(5, 20, temperature=1.0, seed=0))
    greedy = model.sample(3, 20, temperature=0)
    assert (greedy == greedy[0]).all()  # argmax is deterministic and the same for every row
    # follow the argmax by hand
    with torch.no_grad():
        state, prev = model.initial_state(1), torch.tensor([model.begin])
        for t in range(20):
            logits, state = model.step(prev, state)
            prev = logits.argmax(-1)
            assert int(prev) == greedy[0, t]
    cold = model.sample(50, 20, temperature=0.01, seed=1)
    assert (cold == greedy[0]).mean() > 0.95
    hot = model.sample(50, 20, temperature=5.0, seed=1)
    assert len(np.unique(hot)) > len(np.unique(cold))
    primed = model.sample(2, 6, prime=[14, HOLD], seed=0)
    np.testing.assert_array_equal(primed[:, :2], [[14, HOLD], [14, HOLD]])
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, 4, temperature=-1)


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("arch,cond,relative", ARCHS)
def test_save_load_round_trip(tmp_path, arch, cond, relative):
    model = small(arch, cond, relative)
    path = model.save(tmp_path / "m.pt", corpus={"name": "hand"}, metrics={"test_nll": 1.23})
    back = NoteRNN.load(path, grid=DEFAULT_GRID)
    assert back.config == model.config and back.grid == model.grid
    assert back.metadata["corpus"] == {"name": "hand"} and back.metadata["metrics"]["test_nll"] == 1.23
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == 1 and json.loads(payload["metadata"])["grid"]["min_pitch"] == 48


def test_corrupt_and_mismatched_checkpoints_raise_clear_errors(tmp_path):
    model = small("lstm")
    good = model.save(tmp_path / "good.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        NoteRNN.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        NoteRNN.load(tmp_path / "junk.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        NoteRNN.load(tmp_path / "cut.pt")
    payload = torch.load(good, weights_only=True)
    for key in ("state_dict", "metadata"):
        torch.save({k: v for k, v in payload.items() if k != key}, tmp_path / "part.pt")
        with pytest.raises(CheckpointError, match=key):
            NoteRNN.load(tmp_path / "part.pt")
    torch.save({**payload, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        NoteRNN.load(tmp_path / "future.pt")
    state = dict(payload["state_dict"])
    state.pop("out.bias")
    torch.save({**payload, "state_dict": state}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="out.bias"):
        NoteRNN.load(tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="50..83"):
        NoteRNN.load(good, grid=TokenGrid(50, 83))
    with pytest.raises(CheckpointError, match="steps per quarter"):
        NoteRNN.load(good, grid=TokenGrid(48, 83, 2))
    other = NoteRNN(NoteRNNConfig(vocab_size=TokenGrid(50, 83).vocab_size, hidden_size=8, embed_size=4),
                    TokenGrid(50, 83)).save(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="trained on pitches 50..83"):
        NoteRNN.load(other, grid=DEFAULT_GRID)


def test_shipped_bach_prior_loads_offline():
    model = NoteRNN.load("bach")
    assert model.grid == DEFAULT_GRID and model.config.conditioning == ()
    assert BACH_PRIOR.stat().st_size < 5e6
    meta = model.metadata
    assert meta["corpus"]["name"] == "bach" and "command" in meta["training"]
    assert meta["metrics"]["test_nll"] < 0.8 * meta["metrics"]["best_ngram"]["test"]
    metrics = json.loads(BACH_PRIOR.with_name(BACH_PRIOR.stem + ".metrics.json").read_text())
    assert metrics["model"]["test"] == pytest.approx(meta["metrics"]["test_nll"])


@pytest.mark.slow
def test_shipped_bach_prior_reproduces_its_nll_on_the_bach_test_split():
    from musicenv import corpus

    model = NoteRNN.load("bach")
    _, valid, test = corpus.load("bach").split(seed=0)
    nll = evaluate_nll(model, test)
    assert nll == pytest.approx(model.metadata["metrics"]["test_nll"], abs=1e-4)
    assert evaluate_nll(model, valid) == pytest.approx(model.metadata["metrics"]["table"][-1]["valid"], abs=1e-4)
    assert nll <= 0.8 * model.metadata["metrics"]["best_ngram"]["test"]


# ---------------------------------------------------------------------------- the reward term
def _episode(env, actions, seed=0, name="prior_log_likelihood"):
    env.reset(seed=seed)
    values = []
    for a in actions:
        *_, info = env.step(int(a))
        values.append(info["reward_terms"][name])
    return np.array(values)


BACH = {"weight": 1.0, "checkpoint": "bach"}  # the token-only prior: no context to reproduce
MELODY = np.array([14, HOLD, HOLD, HOLD, 16, HOLD, 18, HOLD, 19, HOLD, 18, HOLD, 16, HOLD, HOLD, HOLD] * 2)


def test_prior_term_in_the_env_equals_the_model_log_softmax():
    env = gym.make("MusicComposition-v0", reward=rewards.make({"prior_log_likelihood": BACH}), n_bars=2)
    values = _episode(env, MELODY)
    expected = NoteRNN.load("bach").sequence_log_probs(MELODY)
    assert np.all(np.isfinite(values)) and np.all(values <= 0)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    np.testing.assert_allclose(_episode(env, MELODY, seed=1), values, atol=1e-6)  # reset starts from BEGIN


def test_prior_term_batched_equals_one_by_one_across_autoresets():
    rng = np.random.default_rng(0)
    n, steps = 3, 16
    actions = rng.integers(0, V, size=(2 * steps + 1, n))
    vec = gym.make_vec("MusicComposition-v0", num_envs=n, vectorization_mode="vector_entry_point",
                       reward={"prior_log_likelihood": BACH}, n_bars=1)
    vec.reset(seed=0)
    batched = np.array([vec.step(a)[4]["reward_terms"]["prior_log_likelihood"] for a in actions])
    single = gym.make("MusicComposition-v0", reward={"prior_log_likelihood": BACH}, n_bars=1)
    for b in range(n):
        np.testing.assert_allclose(batched[:steps, b], _episode(single, actions[:steps, b]), atol=1e-5)
        assert batched[steps, b] == 0.0  # the autoreset step: the action is ignored
        np.testing.assert_allclose(batched[steps + 1:, b], _episode(single, actions[steps + 1:, b]), atol=1e-5)


def test_prior_term_leaves_inactive_rows_alone(tmp_path):
    term = PriorLogLikelihood(checkpoint="bach")
    batch = CompositionBatch(2, 16, DEFAULT_GRID, Meter.parse("4/4"))
    term.bind(batch)
    term.reset(batch, np.array([True, True]))
    both = np.array([True, True])
    first = term.step(batch, np.array([14, 14]), both)
    batch.commit(np.array([14, 14]))
    only0 = np.array([True, False])
    term.step(batch, np.array([HOLD, 30]), only0)
    batch.commit(np.array([HOLD, 30]), only0)
    second = term.step(batch, np.array([HOLD, HOLD]), both)
    expected = NoteRNN.load("bach").sequence_log_probs([14, HOLD, HOLD])
    assert first[0] == pytest.approx(expected[0], abs=1e-5)
    assert second[0] == pytest.approx(expected[2], abs=1e-5)
    assert second[1] == pytest.approx(expected[1], abs=1e-5)  # row 1 never absorbed its token 30


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_prior_term_with_a_conditioned_checkpoint(tmp_path, arch):
    model = small(arch, COND, relative=True, seed=2)
    path = model.save(tmp_path / "cond.pt")
    env = gym.make("MusicComposition-v0", reward={"prior_log_likelihood": {"weight": 1.0, "checkpoint": str(path)}},
                   n_bars=2, key="D minor", progression="i-iv-V-i")
    values = _episode(env, MELODY)
    comp = env.unwrapped.composition
    cond = {"chord": comp.chords, "key": np.full(len(MELODY), comp.key.index),
            "position": np.arange(len(MELODY)) % 16}
    np.testing.assert_allclose(values, model.sequence_log_probs(MELODY, cond), atol=1e-5)
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_allclose(_episode(clone, MELODY), values, atol=1e-6)


def test_prior_term_rejects_another_grid_and_bad_checkpoints(tmp_path):
    with pytest.raises(rewards.RewardSpecError, match="trained on pitches 48..83"):
        gym.make("MusicComposition-v0", reward="prior_log_likelihood", max_pitch=84)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(rewards.RewardSpecError, match="corrupt"):
        gym.make("MusicComposition-v0", reward={"prior_log_likelihood": {"checkpoint": str(tmp_path / "junk.pt")}})


def test_rl_tuner_preset_resolves():
    reward = rewards.make("rl_tuner")
    weights = dict(zip(reward.names, reward.weights))
    assert weights == {**{name: 2.0 for name in rewards.RL_TUNER_RULES}, "prior_log_likelihood": 1.0}
    assert "rl_tuner" in rewards.available() and "prior_log_likelihood" in rewards.available()
    env = gym.make("MusicComposition-v0", reward="rl_tuner", n_bars=1)
    env.reset(seed=0)
    _, r, *_, info = env.step(14)
    assert r == pytest.approx(sum(info["reward_terms"].values()))


def test_importing_rewards_does_not_import_torch_or_agents():
    code = ("import sys, rewards; rewards.make('rl_tuner_theory'); rewards.available(); "
            "print(any(m == 'torch' or m.startswith('agents') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- commands
def test_pretrain_evaluate_and_finetune_commands(tmp_path, monkeypatch, chorales, capsys):
    from agents import prior_cli
    from musicenv.cli import main

    ids = chorales.ids
    splits = CorpusSplit(chorales.subset(ids[:2]), chorales.subset(ids[2:3]), chorales.subset(ids[3:]))
    monkeypatch.setattr(prior_cli, "_load_split", lambda name, seed: (chorales, splits))
    out = tmp_path / "prior.pt"
    assert main(["pretrain", "--corpus", "bach", "--out", str(out), "--hidden", "16", "--embed", "8", "--steps", "4",
                 "--eval-every", "2", "--batch-size", "8", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| uniform |" in printed and "| 8-gram |" in printed and "note-RNN (lstm 2x16)" in printed
    metrics = json.loads(out.with_name("prior.metrics.json").read_text())
    assert metrics["command"].startswith("musicenv pretrain --corpus bach --out")
    assert [r["model"] for r in metrics["table"]][:3] == ["uniform", "1-gram", "2-gram"]
    assert out.with_name("ngram_bach.npz").exists()
    assert NoteRNN.load(out).metadata["metrics"]["test_nll"] == pytest.approx(metrics["model"]["test"])

    assert main(["evaluate-prior", "--checkpoint", str(out), "--json", str(tmp_path / "eval.json"), "--threads", "1"]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["table"][-1]["test"] == pytest.approx(metrics["model"]["test"], abs=1e-5)

    assert main(["finetune-prior", "--checkpoint", str(out), "--corpus", "bach", "--out", str(tmp_path / "tr"),
                 "--steps", "2", "--eval-every", "1", "--batch-size", "8", "--threads", "1"]) == 0
    report = json.loads((tmp_path / "tr" / "transfer.json").read_text())
    names = [r["model"] for r in report["table"]]
    assert names[-3:] == ["(a) bach prior as is", "(b) fine-tuned", "(c) from scratch, same budget"]
    assert report["runs"]["finetuned"]["steps"] == report["runs"]["scratch"]["steps"] == 2


# ------------------------------------------------------------------ the prior observation
def test_observe_prior_matches_full_sequence_scoring_and_vector_matches_singles():
    import pickle

    import gymnasium as gym

    from agents.note_rnn import load_prior

    prior = load_prior("bach")
    env = gym.make("MusicComposition-v0", observe_prior="bach", n_bars=2)
    assert env.observation_space["prior"].shape == (38,)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    tokens, seen = [], []
    for t in range(32):
        a = int(rng.integers(2 if t == 0 else 0, 38))
        seen.append(obs["prior"].copy())
        tokens.append(a)
        obs, _, terminated, _, _ = env.step(a)
    assert terminated
    # each observed row is log p(. | tokens so far) of the prior run over the whole prefix
    for t in range(32):
        full = prior.sequence_log_probs(tokens[: t + 1])
        assert seen[t][tokens[t]] == pytest.approx(full[-1], abs=1e-4)
        assert np.exp(seen[t]).sum() == pytest.approx(1.0, abs=1e-4)

    # a pickled env goes on identically; a vector of 3 equals 3 single envs
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    assert np.array_equal(env.step(7)[0]["prior"], clone.step(7)[0]["prior"])
    vec = gym.make_vec("MusicComposition-v0", num_envs=3, vectorization_mode="vector_entry_point",
                       observe_prior=True, n_bars=1, key="C major", progression="I-IV-V-I")
    singles = [gym.make("MusicComposition-v0", observe_prior=True, n_bars=1, key="C major",
                        progression="I-IV-V-I") for _ in range(3)]
    vobs, _ = vec.reset(seed=0)
    sobs = [s.reset(seed=0)[0] for s in singles]
    acts = rng.integers(2, 38, size=(16, 3))
    for t in range(16):
        assert np.allclose(vobs["prior"], np.stack([o["prior"] for o in sobs]), atol=1e-5)
        vobs, *_ = vec.step(acts[t])
        sobs = [s.step(int(acts[t, i]))[0] for i, s in enumerate(singles)]


def test_observe_prior_rejects_bad_values():
    import gymnasium as gym


    with pytest.raises(ValueError, match="observe_prior must be"):
        gym.make("MusicComposition-v0", observe_prior=3)
    with pytest.raises(ValueError, match="does not exist"):
        gym.make("MusicComposition-v0", observe_prior="/nonexistent/prior.pt")
    with pytest.raises(ValueError, match="trained on pitches"):
        gym.make("MusicComposition-v0", observe_prior=True, min_pitch=40)


# ------------------------------------------------------------------------ compose source
def test_prior_compose_source_samples_the_prior_deterministically(tmp_path):
    import gymnasium as gym

    from agents.note_rnn import PriorPolicy, load_prior
    from musicenv.compose import compose, get_source

    info, _ = get_source("prior")
    assert info.uses_temperature
    env = gym.make("MusicComposition-v0", n_bars=1, key="C major")
    env.reset(seed=0)
    cold, hot = (PriorPolicy(env, temperature=0.5, checkpoint="bach"),
                 PriorPolicy(env, temperature=2.0, checkpoint="bach"))
    first_token = cold(None)  # step 0: the tracker restarts, then feeds the sampled token
    hot.tracker.reset(env.unwrapped.core.batch, np.ones(1, dtype=bool))
    hot.tracker.advance(env.unwrapped.core.batch, np.array([first_token]), np.ones(1, dtype=bool))
    # after that token both follow the prior's own distribution, p ** (1/T) renormalised
    base = np.exp(cold.tracker.logp[0].double().numpy())
    full = np.exp(np.array([load_prior("bach").sequence_log_probs([first_token, a])[-1] for a in range(38)]))
    assert np.allclose(base, full, atol=1e-5)
    for policy, temp in ((cold, 0.5), (hot, 2.0)):
        want = base ** (1 / temp)
        assert np.allclose(policy.probabilities(), want / want.sum(), atol=1e-6)
    first = compose("prior", n=2, out_dir=tmp_path / "a", seed=4, n_bars=1, wav=False, temperature=0.9)
    again = compose("prior", n=2, out_dir=tmp_path / "b", seed=4, n_bars=1, wav=False, temperature=0.9)
    assert (tmp_path / "a" / "prior_01.mid").read_bytes() == (tmp_path / "b" / "prior_01.mid").read_bytes()
    assert first is not None and again is not None
    with pytest.raises(ValueError, match="temperature"):
        PriorPolicy(env, temperature=0)


# ------------------------------------------------------------------------ compiled step
@pytest.mark.parametrize("make", [
    lambda: __import__("agents.note_rnn").note_rnn.load_prior("bach"),
    lambda: __import__("agents.note_rnn").note_rnn.load_prior("small"),
    lambda: NoteRNN(arch="lstm", num_layers=3, hidden_size=24, embed_size=8, relative_pitch=False).eval(),
], ids=["shipped", "small", "plain-3-layers"])
def test_compiled_lstm_step_equals_the_torch_step(make):
    from agents.note_rnn import LSTMStepper, load_prior  # noqa: F401 (used by the parameters)

    model = make()
    step = LSTMStepper(model)
    rng = np.random.default_rng(1)
    B = 9
    s_torch, s_fast = model.initial_state(B), model.initial_state(B)
    tokens = np.full(B, model.begin)
    with torch.inference_mode():
        for _ in range(30):  # rests, holds and pitches, anchors set and moved
            a, s_torch = model.log_probs(torch.from_numpy(tokens), s_torch)
            b, s_fast = step(tokens, s_fast)
            assert torch.allclose(a, b, atol=2e-5), float((a - b).abs().max())
            for x, y in zip(s_torch, s_fast):
                assert torch.allclose(x.float(), y.float(), atol=2e-5)
            tokens = rng.integers(0, 38, B)
    with pytest.raises(ValueError, match="serves LSTM"):
        LSTMStepper(NoteRNN(arch="gru", hidden_size=8, embed_size=4))


def test_the_small_prior_loads_by_name_and_matches_its_recorded_nll():
    from agents.note_rnn import SMALL_PRIOR, prior_path

    assert prior_path("small") == SMALL_PRIOR and prior_path("default") == DEFAULT_PRIOR
    small = NoteRNN.load(SMALL_PRIOR)
    assert small.config.num_layers == 1 and small.config.hidden_size == 64
    metrics = small.metadata["metrics"]
    assert metrics["test_nll"] < 0.8 * metrics["best_ngram"]["test"]
    env = __import__("gymnasium").make("MusicComposition-v0", reward={"prior_log_likelihood": {"checkpoint": "small"}})
    env.reset(seed=0)
    assert np.isfinite(env.step(5)[1])


def test_observe_prior_shares_the_tracker_of_a_prior_reward_term_of_the_same_prior():
    import gymnasium as gym

    from agents.note_rnn import PriorLogLikelihood, load_prior

    env = gym.make("MusicComposition-v0", reward="rl_tuner", observe_prior="bach", n_bars=1)
    core = env.unwrapped.core
    term = next(t for _, t, _ in core.reward.terms if isinstance(t, PriorLogLikelihood))
    assert core.prior is term._tracker  # one recurrent step per env step, not two
    other = gym.make("MusicComposition-v0", reward="rl_tuner", observe_prior="small", n_bars=1).unwrapped.core
    assert other.prior is not next(t for _, t, _ in other.reward.terms if isinstance(t, PriorLogLikelihood))._tracker
    obs, _ = env.reset(seed=2)
    tokens = []
    for a in (14, 1, 16, 18, 0, 18):
        expected = obs["prior"][a]
        obs, _, _, _, info = env.step(a)
        tokens.append(a)
        assert info["reward_terms"]["prior_log_likelihood"] == pytest.approx(expected, abs=1e-5)
        want = load_prior("bach").sequence_log_probs(tokens + [2])[-1]
        assert obs["prior"][2] == pytest.approx(want, abs=1e-4)
