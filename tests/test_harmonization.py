"""Harmonization-v0 and its terms: exact values on hand-made cases, agreement with Bach."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import musicenv  # noqa: F401
from musicenv.envs.harmonization import CHORD_VOCABULARY, chorale_melodies, melody_beats
from musicenv.theory import CHORD_ROOT, NO_CHORD, MusicTheoryError, chord_name

TERMS = ["melody_chord_tone", "functional_progression", "harmonic_cadence", "corpus_agreement"]
I, II, III, IV, V, VI, VII, V7 = range(8)  # noqa: E741  (roman numerals, as musicians write them)


def play(melody, key, actions, **kw):
    env = gym.make("Harmonization-v0", reward=TERMS, melody=melody, key=key, **kw)
    env.reset(seed=0)
    rows = []
    for a in actions:
        _, r, term, _, info = env.step(a)
        rows.append(info["reward_terms"])
    assert term
    return {n: [row[n] for row in rows] for n in TERMS}, env


def test_vocabulary_in_major_and_minor():
    env = gym.make("Harmonization-v0")
    core = env.unwrapped.core
    assert [chord_name(c) for c in core.vocab[0]] == ["C", "Dm", "Em", "F", "G", "Am", "Bdim", "G7"]
    assert [chord_name(c) for c in core.vocab[12 + 9]] == ["Am", "Bdim", "C", "Dm", "E", "F", "Abdim", "E7"]
    assert len(CHORD_VOCABULARY["major"]) == env.action_space.n == 8


def test_melody_chord_tones():
    v, _ = play("C5 D5 E5 F5", "C major", [I, V, I, IV])
    assert v["melody_chord_tone"] == [1, 1, 1, 1]
    v, _ = play("C5 F5 r B4", "C major", [I, I, I, I])
    assert v["melody_chord_tone"] == [1, -1, 0, -1]  # F over C; a rest scores 0; B over C
    assert v["corpus_agreement"] == [0, 0, 0, 0]  # a user melody has no composer's harmony


def test_functional_progressions():
    v, _ = play("C5 C5 D5 C5", "C major", [I, IV, V, I])
    assert v["functional_progression"] == [0, 1, 1, 1]  # T -> PD -> D -> T
    v, _ = play("C5 D5 C5 C5", "C major", [I, V, IV, I])
    assert v["functional_progression"] == [0, 1, -1, 0]  # D -> PD is a retrogression; PD -> T (plagal) 0
    v, _ = play("A4 B4 C5 A4", "A minor", [I, II, V7, I])  # i ii° V7 i
    assert v["functional_progression"] == [0, 1, 1, 1]


def test_cadences():
    assert play("C5 D5 B4 C5", "C major", [I, II, V7, I])[0]["harmonic_cadence"] == [0, 0, 0, 1]  # authentic
    assert play("C5 C5 C5 C5", "C major", [I, I, IV, I])[0]["harmonic_cadence"] == [0, 0, 0, 0.5]  # plagal
    assert play("C5 C5 B4 C5", "C major", [I, I, V, VI])[0]["harmonic_cadence"] == [0, 0, 0, -1]  # deceptive
    assert play("C5 C5 C5 D5", "C major", [I, I, IV, V])[0]["harmonic_cadence"] == [0, 0, 0, -1]  # half
    assert play("A4 A4 G#4 A4", "A minor", [I, I, V, I])[0]["harmonic_cadence"] == [0, 0, 0, 1]


def _bach_projection(core, key, bach):
    """For each beat the vocabulary action closest to Bach's chord: same chord, else same root."""
    vocab = core.vocab[key]
    acts = []
    for c in bach:
        exact = np.flatnonzero(vocab == c)
        root = np.flatnonzero(CHORD_ROOT[vocab] == CHORD_ROOT[c]) if c != NO_CHORD else []
        acts.append(int(exact[0]) if len(exact) else int(root[0]) if len(root) else 0)
    return acts


def test_corpus_agreement_exact_and_bach_scores_highest():
    env = gym.make("Harmonization-v0", reward=["corpus_agreement"])
    core = env.unwrapped.core
    _, info = env.reset(seed=0, options={"melody": "bach/bwv347"})
    n = core.n_steps
    key, bach = int(core.batch.key[0]), core.batch.chords[0, :n].copy()
    acts = _bach_projection(core, key, bach)
    codes = core.vocab[key, acts]
    expected = sum(1.0 if c == b else 0.5 if b != NO_CHORD and CHORD_ROOT[c] == CHORD_ROOT[b] else 0.0
                   for c, b in zip(codes, bach))
    got = sum(env.step(a)[1] for a in acts)
    assert got == expected and got >= 0.75 * n  # Bach's own harmony mostly lies in the vocabulary
    rng = np.random.default_rng(0)
    for _ in range(30):  # no other harmonization agrees more
        env.reset(options={"melody": "bach/bwv347"})
        assert sum(env.step(int(a))[1] for a in rng.integers(0, 8, size=n)) < got


def test_transposition_and_options():
    env = gym.make("Harmonization-v0")
    _, info = env.reset(seed=0, options={"melody": "bach/bwv347"})
    core = env.unwrapped.core
    assert info == {"key": "A major", "melody": "bach/bwv347"}
    pitches, chords = core.batch.voice[0, :core.n_steps].copy(), core.batch.chords[0, :core.n_steps].copy()
    _, info = env.reset(options={"melody": "bach/bwv347", "key": "D major"})
    assert info["key"] == "D major"
    up = core.batch.voice[0, :core.n_steps]
    np.testing.assert_array_equal(up[pitches >= 0], pitches[pitches >= 0] + 5)
    known = chords != NO_CHORD
    np.testing.assert_array_equal(CHORD_ROOT[core.batch.chords[0, :core.n_steps][known]],
                                  (CHORD_ROOT[chords[known]] + 5) % 12)
    with pytest.raises(MusicTheoryError, match="major key only"):
        env.reset(options={"melody": "bach/bwv347", "key": "D minor"})
    with pytest.raises(ValueError, match="accepted: 'key', 'melody'"):
        env.reset(options={"progression": "I-IV"})
    with pytest.raises(ValueError, match="unknown melody"):
        env.reset(options={"melody": "bach/nope"})
    with pytest.raises(ValueError, match="key"):
        gym.make("Harmonization-v0", melody="C5 D5 E5")


def test_episode_is_the_chorale_ending():
    pool = chorale_melodies()
    m = next(x for x in pool if x.id == "bach/bwv347")
    pitch, _ = melody_beats(m.tokens, m.chords, m.grid, 4)
    env = gym.make("Harmonization-v0", n_bars=2)
    env.reset(seed=0, options={"melody": "bach/bwv347"})
    n = env.unwrapped.core.n_steps
    assert 5 <= n <= 8
    np.testing.assert_array_equal(env.unwrapped.core.batch.voice[0, :n], pitch[-n:])


def test_export_melody_and_chords(tmp_path):
    env = gym.make("Harmonization-v0", melody="C5 D5 B4 C5", key="C major")
    env.reset(seed=0)
    for a in (I, II, V7, I):
        env.step(a)
    comp = env.unwrapped.composition
    assert comp.chord_symbols() == ["C", "Dm", "G7", "C"]
    assert [n.pitch for n in comp.notes()] == [72, 74, 71, 72]
    assert comp.to_midi(tmp_path / "h.mid").stat().st_size > 0
    assert comp.to_musicxml(tmp_path / "h.musicxml").stat().st_size > 0


@pytest.mark.slow
def test_ppo_beats_random_on_harmonization():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from musicenv.baselines import run_episode

    def evaluate(policy, n=40):
        env = gym.make("Harmonization-v0")
        return float(np.mean([run_episode(env, lambda o: policy(o, env), seed=1000 + ep)[1]["total"]
                              for ep in range(n)]))

    model = PPO("MultiInputPolicy", make_vec_env("Harmonization-v0", n_envs=8, seed=0), seed=0, n_steps=128,
                batch_size=256, verbose=0)
    model.learn(40_000)
    ppo = evaluate(lambda o, e: int(model.predict(o, deterministic=True)[0]))
    rnd = evaluate(lambda o, e: int(e.action_space.sample()))
    assert ppo > rnd + 10
