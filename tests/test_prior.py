"""The general melody prior: its data (musicenv.melodies: chord derivation, split, the
shipped token file), the conditioned note-RNN (context, conditioning dropout, compiled
step), the prior names, and the env/reward/compose plumbing that feeds it the env's
context."""

from __future__ import annotations

import os
import pickle

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts: see agents.prior_cli

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import musicenv  # noqa: E402,F401  (registers the envs)
from agents.note_rnn import (  # noqa: E402
    BACH_PRIOR,
    DEFAULT_PRIOR,
    PRIOR_NAMES,
    SMALL_PRIOR,
    CheckpointError,
    LSTMStepper,
    NoteRNN,
    NoteRNNConfig,
    context_arrays,
    evaluate_nll,
    melody_examples,
    prior_path,
    train,
)
from musicenv import melodies  # noqa: E402
from musicenv.encoding import DEFAULT_GRID, HOLD, REST  # noqa: E402
from musicenv.theory import (  # noqa: E402
    CHORD_PC_MASK,
    NO_CHORD,
    chord_name,
    parse_chord,
    parse_key,
    transpose_chords,
    transpose_key,
)

torch.set_num_threads(1)
G = DEFAULT_GRID
ALL = ("key", "meter", "position", "chord", "next_chord", "style")


def tok(*pitches_and_lengths):
    """Tokens of (midi pitch or None for a rest, steps) pairs."""
    out = []
    for p, n in pitches_and_lengths:
        out += [REST if p is None else G.token(p)] + [HOLD] * (n - 1)
    return np.array(out)


def names(chords, every):
    return [chord_name(int(c)) for c in chords[::every]]


# ---------------------------------------------------------------------------- theory helpers
def test_transpose_chords_and_keys():
    codes = [parse_chord(c) for c in ("C", "Am", "G7", "Bdim")] + [NO_CHORD]
    assert names(transpose_chords(codes, 2), 1) == ["D", "Bm", "A7", "C#dim", "N.C."]
    assert names(transpose_chords(codes, -13), 1) == ["B", "G#m", "F#7", "A#dim", "N.C."] or \
        names(transpose_chords(codes, -13), 1) == ["B", "Abm", "F#7", "Bbdim", "N.C."]
    assert transpose_key(parse_key("C major"), 7) == parse_key("G major")
    assert transpose_key(parse_key("A minor"), 3) == parse_key("C minor")
    with pytest.raises(ValueError, match="key index 24"):
        transpose_key(24, 1)


@given(st.lists(st.integers(0, NO_CHORD), min_size=1, max_size=20), st.integers(-24, 24))
@settings(max_examples=50, deadline=None)
def test_transposing_chords_moves_their_pitch_classes(codes, shift):
    moved = transpose_chords(codes, shift)
    for a, b in zip(codes, moved):
        assert np.array_equal(np.roll(CHORD_PC_MASK[a], shift), CHORD_PC_MASK[b])
    assert np.array_equal(transpose_chords(moved, -shift), codes)


# ---------------------------------------------------------------------------- chord derivation
def test_derived_chords_follow_the_melody_per_half_bar_in_4_4():
    # C E G E | F A C A | G B D B | C (whole): I IV V I, half a bar each
    m = tok((60, 2), (64, 2), (67, 2), (64, 2), (65, 2), (69, 2), (72, 2), (69, 2),
            (67, 2), (71, 2), (74, 2), (71, 2), (72, 8))
    assert names(melodies.derive_chords(m, parse_key("C"), "4/4"), 8) == ["C", "F", "G", "C"]


def test_derived_chords_use_the_key_and_prefer_the_dominant_seventh_when_its_seventh_sounds():
    # A minor: A C E C | G# B D F (the 7th F sounds: E7) | A (half note) then rest
    m = tok((69, 2), (72, 2), (76, 2), (72, 2), (68, 2), (71, 2), (74, 2), (65, 2), (69, 8))
    got = names(melodies.derive_chords(m, parse_key("A minor"), "4/4"), 8)
    assert got == ["Am", "E7", "Am"]
    # without the seventh, the triad
    m2 = tok((68, 4), (71, 2), (76, 2))
    assert names(melodies.derive_chords(m2, parse_key("A minor"), "4/4"), 8) == ["E"]


def test_derived_chords_weigh_notes_on_beats_over_passing_notes_and_keep_the_chord_over_rests():
    # 3/4, one chord a bar: C on the beat (dotted quarters), D passing between -> C major; then a rest bar
    m = tok((60, 4), (62, 1), (64, 3), (67, 4), (None, 12), (67, 4), (71, 4), (74, 4))
    got = names(melodies.derive_chords(m, parse_key("C"), "3/4"), 12)
    assert got == ["C", "C", "G"]


def test_derived_chords_are_diatonic_and_cover_every_step():
    rng = np.random.default_rng(0)
    for key in (parse_key("G"), parse_key("E minor")):
        allowed = set(melodies.diatonic_chords(key))
        for meter in ("4/4", "3/4", "2/4", "6/8"):
            m = rng.integers(0, G.vocab_size, 50)
            chords = melodies.derive_chords(m, key, meter)
            assert chords.shape == m.shape and set(chords.tolist()) <= allowed
            seg = melodies.segment_steps(meter, G.steps_per_quarter)
            assert all(len(set(chords[i:i + seg])) == 1 for i in range(0, 50, seg))
    assert np.all(melodies.derive_chords(tok((None, 16)), 0, "4/4") == NO_CHORD)


def test_next_chord_track():
    c = np.array([1, 1, 2, 2, 2, 1, 5])
    assert melodies.next_chord_track(c).tolist() == [2, 2, 1, 1, 1, 5, NO_CHORD]
    assert melodies.next_chord_track(np.array([3])).tolist() == [NO_CHORD]


def test_exact_duplicates_share_a_group_and_a_side():
    from musicenv.corpus import Melody

    a = Melody(tok((60, 4), (62, 4)), 0, "4/4", np.full(8, NO_CHORD), "x/a")
    b = Melody(tok((60, 4), (62, 4)), 0, "4/4", np.full(8, NO_CHORD), "y/b")
    c = Melody(tok((60, 4), (64, 4)), 0, "4/4", np.full(8, NO_CHORD), "z/c")
    groups = melodies._groups([a, b, c])
    assert groups == ["x/a", "x/a", "z/c"]
    codes = melodies._split_codes(groups)
    assert codes[0] == codes[1]


# ---------------------------------------------------------------------------- the shipped melodies
@pytest.fixture(scope="module")
def shipped():
    return melodies.load()


def test_shipped_melody_file_is_small_and_complete(shipped):
    assert melodies.SHIPPED.stat().st_size < 6e6
    rep = shipped.report["collections"]
    assert set(rep) == set(melodies.STYLES)
    assert rep["essen"]["melodies"] > 4000 and rep["oneills"]["melodies"] > 800 and rep["bach"]["melodies"] > 300
    for style in melodies.STYLES:
        parts = shipped.collections[style]
        n = [len(p) for p in parts]
        assert min(n) > 0 and n[0] > 6 * n[2]
        ids = [set(p.ids) for p in parts]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
        for m in parts.test[:20]:
            assert len(m.chords) == m.n_steps and m.meter in ("4/4", "3/4", "2/4", "6/8") and 0 <= m.key < 24
    assert rep["essen"]["chord_source"].get("derived", 0) > 0.9 * rep["essen"]["melodies"]
    assert rep["bach"]["chord_source"] == {"parts": rep["bach"]["melodies"]}


def test_exact_duplicates_never_straddle_splits(shipped):
    for style in melodies.STYLES:
        side = {}
        for part in melodies.SPLITS:
            for m in getattr(shipped.collections[style], part):
                side.setdefault(m.tokens.tobytes() + m.meter.encode(), set()).add(part)
        assert all(len(s) == 1 for s in side.values())


def test_a_few_pieces_reparse_to_the_shipped_arrays(shipped):
    """The first melody of each collection's first file, parsed afresh from music21's corpus,
    gives the shipped tokens, key, meter and chords (the melody file is not stale)."""
    from musicenv import corpus

    everything = {m.id: m for s in melodies.STYLES for p in shipped.collections[s] for m in p}
    order = [str(i) for i in np.load(melodies.SHIPPED, allow_pickle=False)["ids"]]
    for style, prefix in (("bach", "bach/"), ("essen", "essenFolksong/"), ("oneills", "oneills1850/")):
        pid = next(i for i in order if i.startswith(prefix))
        ref = everything[pid]
        fresh = corpus.load(pid.split("#")[0], cache=False, progress=False, jobs=1, limit=1,
                            chords=style == "bach")[0]
        assert fresh.id == pid
        assert np.array_equal(fresh.tokens, ref.tokens), pid
        assert (fresh.key, fresh.meter, fresh.pickup_steps) == (ref.key, ref.meter, ref.pickup_steps)
        chords = fresh.chords if style == "bach" else melodies.derive_chords(fresh.tokens, fresh.key, fresh.meter)
        assert np.array_equal(chords, ref.chords), pid


def test_unknown_names_raise_clear_errors(tmp_path):
    with pytest.raises(melodies.MelodyDataError, match="accepted: bach, essen, oneills"):
        melodies.style_index("jazz")
    with pytest.raises(melodies.MelodyDataError, match="does not exist"):
        melodies.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(melodies.MelodyDataError, match="cannot read"):
        melodies.load(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------- the conditioned model
def tiny(seed=0, hidden=24, harmonic=False) -> NoteRNN:
    torch.manual_seed(seed)
    return NoteRNN(NoteRNNConfig(hidden_size=hidden, embed_size=16, num_layers=1, dropout=0.0, relative_pitch=True,
                                 conditioning=ALL, missing_context=True, styles=melodies.STYLES,
                                 harmonic_pitch=harmonic)).eval()


def test_missing_context_scores_a_bare_sequence_and_equals_explicit_minus_ones():
    model = tiny()
    m = tok((60, 4), (62, 2), (64, 2), (65, 8))
    bare = model.sequence_log_probs(m)
    minus = {k: np.full(len(m), -1) for k in ALL}
    assert np.all(np.isfinite(bare)) and np.allclose(bare, model.sequence_log_probs(m, minus), atol=1e-6)
    ctx = context_arrays(G, key="C", progression="I-V", meter="4/4", n_bars=1, chords_per_bar=2, style="essen",
                         styles=melodies.STYLES)
    full = model.sequence_log_probs(m, {k: np.broadcast_to(v, len(m)) for k, v in ctx.items()})
    assert not np.allclose(full, bare)


def test_a_model_without_missing_context_still_demands_its_context():
    torch.manual_seed(0)
    model = NoteRNN(NoteRNNConfig(hidden_size=16, num_layers=1, conditioning=("key",)))
    with pytest.raises(ValueError, match="conditioned on"):
        model.sequence_log_probs(tok((60, 4)))
    with pytest.raises(ValueError, match="styles"):
        NoteRNNConfig(conditioning=("style",))


def test_conditioning_dropout_trains_the_bare_model_too():
    """A few updates with conditioning dropout on a context-dependent toy task: the bare
    NLL falls as well as the conditioned one (a bare sequence scores)."""
    from musicenv.corpus import Melody

    rng = np.random.default_rng(0)
    mels = []
    for i in range(24):
        key = int(rng.integers(0, 12))
        tonic = 60 + key % 12 - (12 if key % 12 > 6 else 0)
        m = tok(*[(tonic + d, 2) for d in (0, 4, 7, 12, 7, 4, 0, 0)])
        mels.append(("essen", Melody(m, key, "4/4", melodies.derive_chords(m, key, "4/4"), f"t{i}")))
    model = tiny(hidden=32)
    ex, _ = melody_examples(mels)
    bare_ex = [type(e)(e.tokens, np.full(len(e.tokens), -1), -1, np.full(len(e.tokens), -1),
                       np.full(len(e.tokens), -1), -1, -1) for e in ex]
    before_full, before_bare = evaluate_nll(model, ex), evaluate_nll(model, bare_ex)
    result = train(model, ex, ex, augment=False, max_steps=80, eval_every=40, warmup=5, lr=1e-2,
                   context_dropout=0.3, progress=False, batch_size=8)
    after_full, after_bare = evaluate_nll(model, ex), evaluate_nll(model, bare_ex)
    assert result.steps == 80
    assert after_full < 0.6 * before_full and after_bare < 0.7 * before_bare
    assert after_full < after_bare  # the key tells where the tonic is; the bare model must guess it
    with pytest.raises(ValueError, match="missing_context"):
        train(NoteRNN(NoteRNNConfig(hidden_size=8, num_layers=1, conditioning=("key",))), ex, ex,
              context_dropout=0.1, max_steps=1, progress=False)


def test_examples_carry_every_context():
    from musicenv.corpus import Melody

    m = tok((67, 4), (71, 4), (74, 8), (72, 16))
    chords = melodies.derive_chords(m, parse_key("C"), "4/4")
    [e], _ = melody_examples([("oneills", Melody(m, parse_key("C"), "4/4", chords, "x"))])
    assert e.style == 2 and e.meter == 0 and e.key == 0
    assert e.position.tolist()[:17] == list(range(16)) + [0]
    assert np.array_equal(e.next_chord, melodies.next_chord_track(chords))
    moved, folded = e.transposed(2, G)
    assert moved.key == 2 and names(moved.chord, 8) == names(transpose_chords(e.chord, 2), 8) and folded == 0


@pytest.mark.parametrize("harmonic", [False, True], ids=["plain", "harmonic-pitch"])
def test_compiled_step_equals_the_torch_step_with_context(harmonic):
    model = tiny(seed=3, harmonic=harmonic)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    step = LSTMStepper(model)
    rng = np.random.default_rng(0)
    B = 4
    s1, s2 = model.initial_state(B), model.initial_state(B)
    toks = np.full(B, model.begin)
    for t in range(10):
        cond = {"key": rng.integers(-1, 24, B), "chord": rng.integers(-1, NO_CHORD + 1, B), "position": t % 16,
                "style": np.array([0, 1, 2, -1])}
        a, s1 = model.log_probs(torch.from_numpy(toks), s1, cond)
        b, s2 = step(toks, s2, cond)
        np.testing.assert_allclose(a.detach().numpy(), b.numpy(), atol=2e-5)
        toks = rng.integers(0, G.vocab_size, B)
    with pytest.raises(ValueError, match="key ids must be in 0..23"):
        step(toks, s2, {"key": 30})


def test_harmonic_pitch_heads_score_scale_and_chord_degrees_in_every_key():
    """The key and chord heads add one value per pitch class above the tonic / root: with
    every other weight zero, a chord's tones get its head's boost in any key, N.C. and a
    missing chord add nothing, and the compiled step agrees."""
    model = tiny(harmonic=True)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.chord_out.bias[[0, 4, 7]] = 3.0  # root, third, fifth (of a major chord)
        model.key_out.bias[[0, 2, 4, 5, 7, 9, 11]] = 1.0  # major-scale degrees
    step = LSTMStepper(model)
    with torch.no_grad():
        for key, chord in (("C", "C"), ("Eb", "Ab"), ("B", "F#")):
            k, c = parse_key(key), parse_chord(chord)
            lp, _ = model.log_probs(np.array([model.begin]), model.initial_state(1), {"key": [k], "chord": [c]})
            fast, _ = step(np.array([model.begin]), model.initial_state(1), {"key": [k], "chord": [c]})
            np.testing.assert_allclose(lp.numpy(), fast.numpy(), atol=1e-5)
            pcs = [(G.min_pitch + i) % 12 for i in range(G.n_pitches)]
            notes = lp[0, 2:].numpy()
            tonic = parse_key(key) % 12
            for i, pc in enumerate(pcs):
                boost = 3.0 * CHORD_PC_MASK[c, pc] + 1.0 * ((pc - tonic) % 12 in (0, 2, 4, 5, 7, 9, 11))
                assert notes[i] - notes[pcs.index((tonic + 1) % 12)] == pytest.approx(boost, abs=1e-5)
        for cond in ({"chord": [NO_CHORD]}, {"chord": [-1]}, None):
            lp, _ = model.log_probs(np.array([model.begin]), model.initial_state(1), cond)
            assert np.allclose(lp[0, 2:].numpy(), lp[0, 2].item())  # no pitch preferred
    with pytest.raises(ValueError, match="harmonic_pitch .* needs 'key' or 'chord'"):
        NoteRNNConfig(conditioning=("meter",), harmonic_pitch=True)


# ---------------------------------------------------------------------------- names and plumbing
def test_prior_names():
    assert prior_path("default") == DEFAULT_PRIOR and prior_path("bach") == BACH_PRIOR
    assert prior_path("small") == SMALL_PRIOR and set(PRIOR_NAMES) == {"default", "bach", "small"}
    assert prior_path("x/y.pt").name == "y.pt"
    with pytest.raises(CheckpointError, match="does not exist|not found|missing"):
        NoteRNN.load("no/such/prior.pt")


@pytest.mark.parametrize("name", ["default", "bach", "small"])
def test_every_named_prior_loads(name):
    model = NoteRNN.load(name)
    assert model.grid == G
    if name == "default":
        assert set(model.config.conditioning) == set(ALL) and model.config.missing_context
        assert model.config.styles == melodies.STYLES
        assert DEFAULT_PRIOR.stat().st_size < 8e6
    else:
        assert model.config.conditioning == ()


def test_the_reward_term_feeds_the_env_context_to_the_prior(tmp_path):
    model = tiny(seed=1)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    path = model.save(tmp_path / "ctx.pt")
    spec = {"prior_log_likelihood": {"weight": 1.0, "checkpoint": str(path), "style": "oneills"}}
    env = gym.make("MusicComposition-v0", reward=spec, n_bars=2, key="D minor", progression="i-iv-V-i",
                   meter="3/4")
    rng = np.random.default_rng(0)
    actions = rng.integers(0, G.vocab_size, 24)
    env.reset(seed=0)
    values = [env.step(int(a))[4]["reward_terms"]["prior_log_likelihood"] for a in actions]
    comp = env.unwrapped.composition
    ctx = {"chord": comp.chords, "next_chord": melodies.next_chord_track(comp.chords),
           "position": np.arange(24) % 12, "key": np.full(24, comp.key.index), "meter": np.full(24, 1),
           "style": np.full(24, 2)}
    np.testing.assert_allclose(values, model.sequence_log_probs(actions, ctx), atol=1e-5)
    clone = pickle.loads(pickle.dumps(env))
    clone.reset(seed=0)
    again = [clone.step(int(a))[4]["reward_terms"]["prior_log_likelihood"] for a in actions]
    np.testing.assert_allclose(again, values, atol=1e-6)
    # bare scoring
    env2 = gym.make("MusicComposition-v0", n_bars=2, key="D minor", progression="i-iv-V-i", meter="3/4",
                    reward={"prior_log_likelihood": {"checkpoint": str(path), "context": False}})
    env2.reset(seed=0)
    bare = [env2.step(int(a))[4]["reward_terms"]["prior_log_likelihood"] for a in actions]
    np.testing.assert_allclose(bare, model.sequence_log_probs(actions), atol=1e-5)


def test_observe_prior_with_a_style_and_bad_styles(tmp_path):
    import rewards

    path = tiny().save(tmp_path / "ctx.pt")
    env = gym.make("MusicComposition-v0", observe_prior={"checkpoint": str(path), "style": "bach"}, n_bars=1)
    obs, _ = env.reset(seed=0)
    assert obs["prior"].shape == (G.vocab_size,) and np.all(obs["prior"] <= 0)
    with pytest.raises(ValueError, match="unknown style 'jazz'"):
        gym.make("MusicComposition-v0", observe_prior={"checkpoint": str(path), "style": "jazz"})
    with pytest.raises(rewards.RewardSpecError, match="style must be one of bach, essen, oneills"):
        rewards.make({"prior_log_likelihood": {"style": "jazz"}})
    with pytest.raises(rewards.RewardSpecError, match="not conditioned on a style"):
        gym.make("MusicComposition-v0", reward={"prior_log_likelihood": {"checkpoint": "bach", "style": "essen"}})


def test_context_arrays_errors():
    with pytest.raises(ValueError, match="chords_per_bar=3"):
        context_arrays(G, chords_per_bar=3)
    with pytest.raises(ValueError, match="unknown style"):
        context_arrays(G, style="essen")
    c = context_arrays(G, key="G", progression="I-V7", meter="6/8", n_bars=2, chords_per_bar=1)
    assert names(c["chord"], 12) == ["G", "D7"] and len(c["chord"]) == 24 and int(c["style"]) == -1
    assert int(c["meter"]) == 3 and c["position"][12] == 0


# ---------------------------------------------------------------------------- the shipped default prior
def test_default_prior_scores_bare_and_conditioned_melodies(shipped):
    """Conditioning dropout at work on the shipped prior: bare token sequences score well
    below uniform, and the context (key, meter, chords) lowers the NLL further."""
    from agents.prior_cli import _NO_STYLE, _with_context

    model = NoteRNN.load("default")
    ex, _ = melody_examples(shipped.split("test", ["oneills"])[:12])
    bare = evaluate_nll(model, _with_context(ex, ()))
    ctx = evaluate_nll(model, _with_context(ex, _NO_STYLE))
    assert bare < 0.5 * np.log(G.vocab_size)
    assert ctx < bare


def test_default_prior_samples_follow_the_env_key_and_chords():
    """Samples in the env's key over its progression (40 pieces, temperature 1) keep to the
    key and the chords far more than the token-only Bach prior's (README: 92 % / 59 %
    against 68 % / 24 %; the issue's goal of 95 % / 70 % is met only at temperature 0.8)."""
    from agents.prior_cli import conditioned_samples, melody_statistics

    new = melody_statistics(conditioned_samples(NoteRNN.load("default"), 40, seed=100))
    old = melody_statistics(conditioned_samples(NoteRNN.load("bach"), 40, seed=100, context=False))
    assert new["in_key"] >= 0.88 and new["strong_beat_chord_tones"] >= 0.5
    assert new["in_key"] > old["in_key"] + 0.1 and new["strong_beat_chord_tones"] > old["strong_beat_chord_tones"] + 0.2
    cool = melody_statistics(conditioned_samples(NoteRNN.load("default"), 40, seed=100, temperature=0.8))
    assert cool["in_key"] >= 0.93 and cool["strong_beat_chord_tones"] >= 0.6


@pytest.mark.slow
def test_default_prior_goals_against_the_own_trained_ngrams(shipped):
    """The per-collection goal: the prior with its context at least 20 % below the best add-k
    n-gram trained on the collection's own train split (orders 1-8, chosen on valid)."""
    from agents.prior_cli import _ngram_table

    model = NoteRNN.load("default")
    for style in melodies.STYLES:
        ex, _ = melody_examples(shipped.split("test", [style]))
        ngram = _ngram_table(shipped, style, melodies.SHIPPED)["best"]["test"]
        assert evaluate_nll(model, ex) <= 0.8 * ngram, style
