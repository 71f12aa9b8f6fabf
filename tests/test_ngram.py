"""N-gram models (rewards.ngram): hand counts, normalisation, files, transpositions, the
baseline table and the ngram_log_likelihood reward term."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest

import musicenv  # noqa: F401  (registers the envs)
import rewards
from musicenv.encoding import DEFAULT_GRID, HOLD, REST, TokenGrid
from rewards.ngram import (
    MAX_ORDER,
    NGramError,
    NGramModel,
    all_key_transpositions,
    ngram_baselines,
    shipped_ngram_path,
    transpose,
)

C4, D4, E4, G4 = 14, 16, 18, 21  # tokens of MIDI 60, 62, 64, 67 on the default grid
BEGIN = 4  # with vocab_size 4 in the hand-made cases


# ---------------------------------------------------------------------------- hand counts
def test_bigram_probabilities_match_hand_counts():
    # Bigrams with BEGIN: (B,2) (2,3) (3,2) (2,3) | (B,2) (2,2). From 2: ->3 twice, ->2 once.
    model = NGramModel(2, 4, k=0.5).fit([[2, 3, 2, 3], [2, 2]])
    lp = lambda ctx, a: float(model.log_prob(np.array([ctx]), np.array([a]))[0])  # noqa: E731
    assert math.exp(lp(2, 3)) == pytest.approx((2 + 0.5) / (3 + 0.5 * 4))
    assert math.exp(lp(2, 2)) == pytest.approx((1 + 0.5) / (3 + 2))
    assert math.exp(lp(2, 0)) == pytest.approx(0.5 / 5)
    assert math.exp(lp(BEGIN, 2)) == pytest.approx((2 + 0.5) / (2 + 2))
    assert math.exp(lp(3, 2)) == pytest.approx((1 + 0.5) / (1 + 2))
    # A context never seen (token 0 before anything) gets the uniform distribution.
    assert math.exp(lp(0, 1)) == pytest.approx(1 / 4)


def test_unigram_and_trigram_contexts():
    seqs = [[0, 1, 1, 2], [1]]
    uni = NGramModel(1, 3, k=1.0).fit(seqs)
    # counts: 0 x1, 1 x3, 2 x1 over 5 tokens
    np.testing.assert_allclose(uni.distribution(np.array([0]))[0], [(1 + 1) / 8, (3 + 1) / 8, (1 + 1) / 8])
    tri = NGramModel(3, 3, k=1.0)
    B = 3
    # contexts of [0, 1, 1, 2]: (B,B) (B,0) (0,1) (1,1), oldest most significant in base 4
    np.testing.assert_array_equal(tri.context_ids(np.array([0, 1, 1, 2])),
                                  [B * 4 + B, B * 4 + 0, 0 * 4 + 1, 1 * 4 + 1])
    assert tri.begin_context == B * 4 + B
    assert tri.next_context(np.array([B * 4 + B]), np.array([0]))[0] == B * 4 + 0


@pytest.mark.parametrize("order", [1, 2, 4, MAX_ORDER])
def test_distributions_normalise(order):
    rng = np.random.default_rng(order)
    seqs = [rng.integers(0, 6, size=n) for n in (5, 17, 40)]
    model = NGramModel(order, 6, k=0.03).fit(seqs)
    contexts = np.concatenate([model.context_ids(s) for s in seqs] + [np.array([model.begin_context, 0])])
    np.testing.assert_allclose(model.distribution(contexts).sum(axis=1), 1.0, rtol=1e-12)


def test_nll_is_the_mean_negative_log_prob_over_every_token():
    seqs = [np.array([2, 3, 2, 3]), np.array([2, 2])]
    model = NGramModel(2, 4, k=0.1).fit(seqs)
    manual = -np.concatenate([model.sequence_log_probs(s) for s in seqs]).sum() / 6
    assert model.nll(seqs) == pytest.approx(manual)
    assert model.with_k(0.2).nll(seqs) != pytest.approx(manual)


def test_bad_orders_and_tokens_are_rejected():
    with pytest.raises(NGramError, match="order"):
        NGramModel(0, 4)
    with pytest.raises(NGramError, match="order"):
        NGramModel(MAX_ORDER + 1, 4)
    with pytest.raises(NGramError, match="k must be"):
        NGramModel(2, 4, k=0)
    with pytest.raises(NGramError, match="outside"):
        NGramModel(2, 4).fit([[0, 4]])


# ---------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    model = NGramModel(3, 38, k=0.02, meta={"corpus": "hand"}).fit([[C4, HOLD, D4, E4, REST], [G4, HOLD, HOLD]])
    path = model.save(tmp_path / "m.npz")
    back = NGramModel.load(path)
    assert (back.order, back.vocab_size, back.k, back.meta["corpus"]) == (3, 38, 0.02, "hand")
    ctx = np.arange(0, back.n_context_ids, 997)
    np.testing.assert_array_equal(back.distribution(ctx), model.distribution(ctx))


def test_corrupt_or_missing_files_raise_clear_errors(tmp_path):
    with pytest.raises(NGramError, match="does not exist"):
        NGramModel.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(NGramError, match="corrupt"):
        NGramModel.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(NGramError, match="lacks"):
        NGramModel.load(other)


# ---------------------------------------------------------------------------- transpositions
def test_all_key_transpositions_move_every_pitch_class_once():
    melody = np.array([REST, C4, HOLD, D4, E4, HOLD, G4, HOLD])
    versions = all_key_transpositions(melody, DEFAULT_GRID)
    assert len(versions) == 12
    assert versions[0][0] == 0 and np.array_equal(versions[0][1], melody)
    shifts = [d for d, _, _ in versions]
    assert sorted(d % 12 for d in shifts) == list(range(12))
    assert all(-6 <= d <= 6 for d in shifts)  # a middle-register line moves the shortest way
    for d, moved, folded in versions:
        assert folded == 0
        on = melody >= 2
        np.testing.assert_array_equal(moved[on], melody[on] + d)
        np.testing.assert_array_equal(moved[~on], melody[~on])  # REST and HOLD stay


def test_notes_that_cannot_fit_are_folded_by_octaves_and_counted():
    grid = DEFAULT_GRID
    full = np.array([grid.token(48), grid.token(83)])  # the whole range: every shift pushes one note out
    moved, folded = transpose(full, 1, grid)
    assert folded == 1
    assert [grid.pitch(int(t)) for t in moved] == [49, 72]  # 84 folded down an octave
    versions = all_key_transpositions(full, grid)
    assert sum(f for _, _, f in versions) == 11


# ---------------------------------------------------------------------------- baselines
def test_baseline_table_chooses_order_and_k_on_valid():
    grid = TokenGrid(60, 72)
    rng = np.random.default_rng(0)
    # a strict cycle C D E ... : order 2 already predicts it, and valid follows the same cycle
    cycle = np.tile(np.array([2, 4, 6, 7]), 10)
    train = [cycle, cycle[1:]]
    valid = [cycle[2:]]
    test = [rng.permutation(cycle)]
    table = ngram_baselines(train, valid, test, grid, orders=range(1, 4), ks=(0.01, 1.0))
    assert table["uniform"]["test"] == pytest.approx(math.log(grid.vocab_size))
    assert [r["order"] for r in table["ngrams"]] == [1, 2, 3]
    assert table["best"]["order"] >= 2 and table["best"]["k"] == 0.01
    assert table["ngrams"][0]["valid"] > table["ngrams"][1]["valid"]


# ---------------------------------------------------------------------------- the reward term
def test_shipped_model_loads_and_matches_the_default_grid():
    model = NGramModel.load(shipped_ngram_path("bach"))
    assert model.vocab_size == DEFAULT_GRID.vocab_size and model.grid() == DEFAULT_GRID
    assert 1 <= model.order <= MAX_ORDER and model.meta["corpus"] == "bach"


def _play(env, actions, seed=0):
    env.reset(seed=seed)
    out = []
    for a in actions:
        _, r, *_ , info = env.step(int(a))
        out.append(info["reward_terms"]["ngram_log_likelihood"])
    return np.array(out)


def test_term_in_the_env_equals_the_model_log_probs():
    env = gym.make("MusicComposition-v0", reward={"ngram_log_likelihood": 1.0}, n_bars=2)
    melody = np.array([C4, HOLD, HOLD, HOLD, D4, HOLD, E4, HOLD] * 4)
    values = _play(env, melody)
    model = NGramModel.load(shipped_ngram_path("bach"))
    np.testing.assert_allclose(values, model.sequence_log_probs(melody))
    assert np.all(values < 0) and np.all(np.isfinite(values))
    # a second episode starts from BEGIN again
    np.testing.assert_allclose(_play(env, melody, seed=1), values)


def test_term_batched_equals_one_by_one():
    rng = np.random.default_rng(3)
    n, steps = 4, 32
    actions = rng.integers(0, 38, size=(steps, n))
    vec = gym.make_vec("MusicComposition-v0", num_envs=n, vectorization_mode="vector_entry_point",
                       reward="ngram_log_likelihood", n_bars=2)
    vec.reset(seed=0)
    batched = np.array([vec.step(a)[4]["reward_terms"]["ngram_log_likelihood"] for a in actions])
    single = gym.make("MusicComposition-v0", reward="ngram_log_likelihood", n_bars=2)
    for b in range(n):
        np.testing.assert_allclose(batched[:, b], _play(single, actions[:, b]))


def test_term_rejects_another_grid_and_missing_files(tmp_path):
    with pytest.raises(rewards.RewardSpecError, match="grid"):
        gym.make("MusicComposition-v0", reward="ngram_log_likelihood", min_pitch=50)
    with pytest.raises(rewards.RewardSpecError, match="does not exist"):
        gym.make("MusicComposition-v0", reward={"ngram_log_likelihood": {"model": str(tmp_path / "none.npz")}})


def test_term_with_a_user_model_and_pickling(tmp_path):
    path = NGramModel(2, 38, k=1.0).fit([[C4, D4, C4, D4]]).save(tmp_path / "mine.npz")
    spec = {"ngram_log_likelihood": {"weight": 1.0, "model": str(path)}}
    env = gym.make("MusicComposition-v0", reward=spec, n_bars=1)
    values = _play(env, [C4, D4] * 8)
    assert values[1] == pytest.approx(math.log((2 + 1) / (2 + 38)))  # D4 after C4: both times C4 was seen
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_allclose(_play(clone, [C4, D4] * 8), values)
    assert "ngram_log_likelihood" in rewards.available()
