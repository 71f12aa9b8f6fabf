"""Tests of agents.gan: representation, shapes, training, checkpoints, the reward term."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import musicenv  # noqa: E402,F401  (registers the envs)
from agents import gan  # noqa: E402
from musicenv.encoding import DEFAULT_GRID, HOLD, REST  # noqa: E402
from musicenv.theory import NO_CHORD  # noqa: E402

G = DEFAULT_GRID
C4, D4, E4, G4 = (G.token(p) for p in (60, 62, 64, 67))
TINY = gan.GANConfig(seq_len=32, steps_per_bar=16, noise_size=4, hidden_size=16, critic_channels=(8, 8),
                     kernel_size=3, conditioning=("key",))


def _segments(n: int = 24, T: int = 32, seed: int = 0) -> gan.SegmentSet:
    """Quarter and eighth notes on the C major scale around C4..C5."""
    rng = np.random.default_rng(seed)
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    tokens = np.full((n, T), HOLD, dtype=np.int64)
    for i in range(n):
        t = 0
        while t < T:
            tokens[i, t] = G.token(scale[rng.integers(len(scale))])
            t += int(rng.choice([2, 4]))
    return gan.SegmentSet(tokens, np.zeros(n, dtype=np.int64), np.full((n, T), NO_CHORD), G, 16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from threads, and on a busy machine waiting threads cost seconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny() -> gan.MelodyGAN:
    torch.manual_seed(0)
    return gan.MelodyGAN(TINY, G, reference=_segments(), metadata={"training": {"augment": False}})


@pytest.fixture
def tiny_checkpoint(tiny: gan.MelodyGAN, tmp_path: Path) -> Path:
    return tiny.save(tmp_path / "tiny.pt")


# ------------------------------------------------------------------ representation
def test_channels_of_a_hand_made_line():
    # C4 (3 steps), rest (2 steps), D4 (1 step), D4 again (2 steps)
    tokens = np.array([C4, HOLD, HOLD, REST, HOLD, D4, D4, HOLD])
    pitch, onset = gan.tokens_to_channels(tokens)
    c4, d4 = 60 - G.min_pitch + 1, 62 - G.min_pitch + 1
    assert pitch.tolist() == [c4, c4, c4, 0, 0, d4, d4, d4]
    assert onset.tolist() == [1, 0, 0, 1, 0, 1, 1, 0]
    assert gan.channels_to_tokens(pitch, onset).tolist() == tokens.tolist()


def test_leading_hold_reads_as_a_rest():
    pitch, onset = gan.tokens_to_channels(np.array([HOLD, HOLD, E4]))
    assert pitch.tolist()[:2] == [0, 0] and onset.tolist() == [1, 0, 1]
    assert gan.channels_to_tokens(pitch, onset).tolist() == [REST, HOLD, E4]


class _Melody:
    def __init__(self, tokens, key=0, meter="4/4"):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.key, self.meter, self.n_steps = key, meter, len(tokens)
        self.chords = np.arange(len(tokens)) % 5


class _Corpus(list):
    grid, name = G, "fake"


def test_segments_start_at_bar_lines_and_re_articulate_held_notes():
    # bar 1: C4 whole note; bar 2: the C4 held on, then G4; bar 3: rests only
    line = np.full(48, HOLD)
    line[0], line[24], line[32] = C4, G4, REST
    segs = gan.corpus_segments(_Corpus([_Melody(line, key=7), _Melody(line[:16], meter="3/4")]), n_bars=1)
    # bars 1 and 2 (bar 3 has no note; the 3/4 melody is left out)
    assert len(segs) == 2 and segs.seq_len == 16
    assert segs.tokens[0, 0] == C4 and segs.tokens[1, 0] == C4  # bar 2 starts inside the held C4
    assert segs.tokens[1, 8] == G4 and segs.keys.tolist() == [7, 7]
    assert segs.chords[1].tolist() == (np.arange(16, 32) % 5).tolist()


def test_transposition_moves_notes_key_and_chords_together():
    segs = _segments(n=2)
    up = segs.transposed(np.array([2, 0]))
    on = segs.tokens[0] >= 2
    assert (up.tokens[0][on] - segs.tokens[0][on] == 2).all() and (up.tokens[1] == segs.tokens[1]).all()
    assert up.keys.tolist() == [2, 0]  # C major -> D major
    assert len(segs.augmented()) == 24


# ------------------------------------------------------------------ shapes
def test_generator_and_critic_shapes(tiny: gan.MelodyGAN):
    z = torch.randn(5, TINY.noise_size)
    ctx = tiny.context(np.arange(5), None, 32)
    pitch, onset = tiny.generator(z, ctx, 32)
    assert pitch.shape == (5, 32, G.n_pitches + 1) and onset.shape == (5, 32)
    assert torch.allclose(pitch.sum(-1), torch.ones(5, 32)) and (onset[:, 0] == 1).all()
    assert tiny.critic(pitch, onset, ctx).shape == (5,)
    # length-agnostic critic: a 48-step line scores too
    assert tiny.score(np.full((2, 48), C4), keys=np.zeros(2)).shape == (2,)


def test_generate_gives_valid_token_arrays_deterministically(tiny: gan.MelodyGAN):
    a = tiny.generate(6, seed=3)
    assert a.shape == (6, 32) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() < G.vocab_size and (a[:, 0] != HOLD).all()
    assert (tiny.generate(6, seed=3) == a).all()
    assert not (tiny.generate(6, seed=4) == a).all()
    assert tiny.generate(2, seed=0, length=48, keys=np.array([3, 15])).shape == (2, 48)


def test_bad_config_and_arguments_raise(tiny: gan.MelodyGAN):
    with pytest.raises(ValueError, match="conditioning"):
        gan.GANConfig(conditioning=("tempo",))
    with pytest.raises(ValueError, match="relaxation"):
        gan.GANConfig(relaxation="gumbel")
    with pytest.raises(ValueError, match="temperature"):
        tiny.generate(2, seed=0, temperature=0)


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("relaxation", ["st_gumbel", "softmax"])
def test_a_few_training_steps_change_both_networks(relaxation: str):
    torch.manual_seed(0)
    cfg = gan.GANConfig(**{**TINY.to_dict(), "relaxation": relaxation})
    model = gan.MelodyGAN(cfg, G, reference=_segments())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    result = gan.train(model, _segments(), _segments(n=8, seed=1), max_steps=3, batch_size=8, n_critic=2,
                       eval_every=2, eval_samples=8, progress=False, callback=lambda s, logs: seen.append(logs))
    assert result.steps == 3 and len(seen) == 3 and result.stopped == "max_steps"
    assert {"critic_loss", "wasserstein", "gradient_penalty", "generator_loss"} <= set(seen[-1])
    assert [h["step"] for h in result.history] == [2, 3]
    assert 0 <= result.best_valid["overlap/mean"] <= 1
    after = model.state_dict()
    for part in ("generator.", "critic."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(part)), part


def test_training_rejects_segments_of_another_length(tiny: gan.MelodyGAN):
    with pytest.raises(ValueError, match="do not fit"):
        gan.train(tiny, _segments(T=48), max_steps=1, progress=False)


# ------------------------------------------------------------------ checkpoints
def test_save_load_round_trip(tiny: gan.MelodyGAN, tiny_checkpoint: Path):
    loaded = gan.MelodyGAN.load(tiny_checkpoint, grid=G)
    assert loaded.config == TINY and loaded.grid == G
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert (loaded.reference.tokens == tiny.reference.tokens).all()
    assert (loaded.generate(4, seed=1) == tiny.generate(4, seed=1)).all()
    assert loaded.metadata["training"] == {"augment": False}
    raw = torch.load(tiny_checkpoint, weights_only=True)  # tensors and strings only
    assert raw["format"] == "musicenv.gan" and raw["format_version"] == gan.FORMAT_VERSION


def test_corrupt_foreign_and_mismatched_checkpoints_raise_clearly(tiny_checkpoint: Path, tmp_path: Path):
    with pytest.raises(gan.CheckpointError, match="does not exist"):
        gan.MelodyGAN.load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(gan.CheckpointError, match="corrupt"):
        gan.MelodyGAN.load(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:2000])
    with pytest.raises(gan.CheckpointError, match="corrupt"):
        gan.MelodyGAN.load(truncated)
    payload = torch.load(tiny_checkpoint, weights_only=True)
    for change, message in [({"format": "musicenv.note_rnn"}, "not a 'musicenv.gan'"),
                            ({"format_version": 99}, "format version 99"),
                            ({"state_dict": {"critic.out.weight": torch.zeros(3)}}, "do not fit")]:
        bad = tmp_path / "bad.pt"
        torch.save({**payload, **change}, bad)
        with pytest.raises(gan.CheckpointError, match=message):
            gan.MelodyGAN.load(bad)
    with pytest.raises(gan.CheckpointError, match="asked for 40"):
        gan.MelodyGAN.load(tiny_checkpoint, grid=type(G)(40, 75, 4))


# ------------------------------------------------------------------ reward term
def test_rewards_does_not_import_torch_and_lists_the_term():
    code = ("import sys, rewards; assert 'torch' not in sys.modules; "
            "assert 'discriminator' in rewards.available(); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _play(env, actions):
    values = []
    for a in actions:
        _, _, term, _, info = env.step(a)
        values.append(info["reward_terms"]["discriminator"])
    return np.array(values), term


@pytest.mark.skipif(not gan.DEFAULT_GAN.is_file(), reason="shipped GAN not built")
def test_shipped_discriminator_is_terminal_and_batch_equals_single():
    kwargs = dict(reward={"theory": 1, "discriminator": 1}, key="D minor", progression="i-iv-V-i")
    rng = np.random.default_rng(0)
    lines = rng.integers(2, G.vocab_size, (3, 64))
    lines[:, 1::2] = HOLD
    lines[1] = np.where(np.arange(64) % 4 == 0, G.token(62), HOLD)  # repeated D4 quarters
    singles = []
    for line in lines:
        env = gym.make("MusicComposition-v0", **kwargs)
        env.reset(seed=0)
        values, terminated = _play(env, line)
        assert terminated and (values[:-1] == 0).all() and np.isfinite(values[-1]) and values[-1] != 0
        assert -5 <= values[-1] <= 5
        singles.append(values)
    venv = gym.make_vec("MusicComposition-v0", num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    venv.reset(seed=0)
    batch = []
    for t in range(64):
        _, _, _, _, info = venv.step(lines[:, t])
        batch.append(info["reward_terms"]["discriminator"])
    # equal up to float32 rounding (the critic runs in float32 on batches of different sizes)
    np.testing.assert_allclose(np.array(batch).T, np.array(singles), rtol=1e-4, atol=1e-6)


def _bound_term(checkpoint: Path, B: int, **params):
    import rewards
    from musicenv.core import CompositionBatch
    from musicenv.theory import Meter

    term = rewards.get("discriminator")(checkpoint=str(checkpoint), **params)
    batch = CompositionBatch(B, 32, G, Meter.parse("4/4"))
    term.bind(batch)
    term.reset(batch, np.ones(B, dtype=bool))
    return term, batch


def _episode(term, batch, lines: np.ndarray) -> np.ndarray:
    out = []
    active = np.ones(len(lines), dtype=bool)
    for t in range(lines.shape[1]):
        out.append(term.step(batch, lines[:, t], active))
        batch.commit(lines[:, t], active)
    return np.array(out).T


def test_shaped_mode_sums_to_the_terminal_score(tiny_checkpoint: Path):
    lines = _segments(n=3, seed=5).tokens
    terminal, b1 = _bound_term(tiny_checkpoint, 3)
    shaped, b2 = _bound_term(tiny_checkpoint, 3, mode="shaped", clip=1e6)
    t_vals, s_vals = _episode(terminal, b1, lines), _episode(shaped, b2, lines)
    assert (t_vals[:, :-1] == 0).all() and (s_vals[:, :-1] != 0).any()
    np.testing.assert_allclose(s_vals.sum(axis=1), t_vals[:, -1], rtol=1e-9, atol=1e-9)


def test_calibration_puts_reference_near_zero_and_random_tokens_near_minus_one(tiny: gan.MelodyGAN, tmp_path: Path):
    # teach the tiny critic to tell the reference from random tokens first
    opt = torch.optim.Adam(tiny.critic.parameters(), lr=1e-2)
    for i in range(20):
        gan.critic_step(tiny, opt, tiny.reference.subset(np.arange(16)), gan.random_token_melodies(16, 32, seed=i))
    term, batch = _bound_term(tiny.save(tmp_path / "taught.pt"), 1, clip=1e6)
    assert term._calibration[1] > 0
    real, rand, keys = term._calibration_sets(32)
    scores = term._scaled(term.model.score(real.tokens, real.keys))
    rand_scores = term._scaled(term.model.score(rand, keys))
    assert scores.mean() == pytest.approx(0, abs=1e-9) and rand_scores.mean() == pytest.approx(-1, abs=1e-9)


def test_seqgan_updates_change_the_critic_only_for_that_term(tiny_checkpoint: Path):
    term, batch = _bound_term(tiny_checkpoint, 2, update_every=4, update_steps=2, update_batch=4)
    from agents.models.discriminator import _load_frozen

    frozen = _load_frozen(tiny_checkpoint)  # the shared frozen copy the other terms use
    before = {k: v.clone() for k, v in term.model.critic.state_dict().items()}
    lines = gan.random_token_melodies(2, 32, seed=1)
    first = _episode(term, batch, lines)
    assert term.n_updates == 0 and len(term._store) == 2
    batch.reset(np.ones(2, dtype=bool))
    term.reset(batch, np.ones(2, dtype=bool))
    second = _episode(term, batch, lines)
    assert term.n_updates == 1 and term._store == []
    np.testing.assert_allclose(first, second)  # scored before the update
    after = term.model.critic.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)
    assert all(torch.equal(frozen.critic.state_dict()[k], before[k]) for k in before)  # no leak
    # the third episode is scored by the updated critic, and pickling keeps it
    batch.reset(np.ones(2, dtype=bool))
    term.reset(batch, np.ones(2, dtype=bool))
    clone = pickle.loads(pickle.dumps(term))
    assert clone.n_updates == 1
    for k, v in clone.model.critic.state_dict().items():
        assert torch.equal(v, after[k])


def test_bad_term_parameters_and_mismatched_env_raise(tiny_checkpoint: Path):
    import rewards

    with pytest.raises(rewards.RewardSpecError, match="mode"):
        rewards.make({"discriminator": {"mode": "sometimes"}})
    with pytest.raises(rewards.RewardSpecError, match="does not exist"):
        env = gym.make("MusicComposition-v0", reward={"discriminator": {"checkpoint": "/nonexistent/gan.pt"}})
    with pytest.raises(rewards.RewardSpecError, match="steps"):
        gym.make("MusicComposition-v0", meter="3/4",
                 reward={"discriminator": {"checkpoint": str(tiny_checkpoint)}})
    with pytest.raises(rewards.RewardSpecError, match="update_every"):
        gym.make("MusicComposition-v0", n_bars=4,
                 reward={"discriminator": {"checkpoint": str(tiny_checkpoint), "update_every": 8}})
    env = gym.make("MusicComposition-v0", n_bars=2,
                   reward={"discriminator": {"checkpoint": str(tiny_checkpoint), "update_every": 8}})
    env.reset(seed=0)


# ------------------------------------------------------------------ evaluation helpers and CLI
def test_random_baselines_have_the_stated_shapes():
    tokens = gan.random_token_melodies(5, 64, seed=0)
    assert tokens.shape == (5, 64) and (tokens[:, 0] != HOLD).all()
    notes = gan.random_note_melodies(5, 64, seed=0)
    pitches = notes[notes >= 2] - 2 + G.min_pitch
    assert (notes != REST).all() and pitches.min() >= 60 and pitches.max() <= 79


def test_cli_registers_train_gan_and_eval_gan():
    from musicenv.cli import build_parser

    args = build_parser().parse_args(["train-gan", "--minutes", "1", "--out", "x", "--conditioning"])
    assert args.minutes == 1 and args.conditioning == [] and args.n_critic == 5
    assert build_parser().parse_args(["eval-gan"]).checkpoint is None


def test_gan_compose_source_plays_one_generated_line_per_episode(tiny_checkpoint: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    compose = pytest.importorskip("musicenv.compose")
    import agents.models.gan as gan_model

    monkeypatch.setattr(gan_model, "DEFAULT_GAN", tiny_checkpoint)  # MelodyGAN.load()'s default
    info, argument = compose.get_source("gan")
    env = gym.make("MusicComposition-v0", reward="in_key", key="G major")
    make_policy = info.factory(env, argument=argument, temperature=1.0)
    pieces = []
    for _ in range(2):
        policy = make_policy(7)
        obs, _ = env.reset(seed=0)
        terminated = False
        while not terminated:
            obs, _, terminated, _, _ = env.step(policy(obs))
        pieces.append(env.unwrapped.composition.tokens)
        assert (pieces[-1] == policy.line).all() and pieces[-1][0] != HOLD
    assert (pieces[0] == pieces[1]).all()  # same seed, same key: same line
    expected = gan.MelodyGAN.load(tiny_checkpoint).generate(1, np.random.default_rng(7).integers(2**31),
                                                              length=64, keys=np.array([7]))[0]
    assert (pieces[0] == expected).all()
