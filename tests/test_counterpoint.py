"""Counterpoint-v0 and the species-counterpoint terms: every rule on hand-made cases with
exact values, the cantus sources, export and the report."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import musicenv  # noqa: F401
import rewards
from musicenv.envs.counterpoint import (
    FUX_CANTUS,
    MODE_SCALES,
    counterpoint_report,
    format_report,
    parse_pitches,
    random_cantus,
)
from musicenv.theory import MusicTheoryError

FUX_DORIAN = "D4 F4 E4 D4 G4 F4 A4 G4 F4 E4 D4"
# Fux's own first-species example above his Dorian cantus (Gradus, fig. 6)
FUX_FIRST_SPECIES = "A4 A4 G4 A4 B4 C5 C5 B4 D5 C#5 D5"


def values(cantus, line, term, **kw):
    return [r["terms"][term] for r in counterpoint_report(cantus, line, **kw)]


def test_fux_example_term_by_term():
    rows = counterpoint_report(FUX_DORIAN, FUX_FIRST_SPECIES)
    tot = {n: sum(r["terms"][n] for r in rows) for n in rows[0]["terms"]}
    assert tot == {"vertical_consonance": 11.0, "parallel_perfects": 0.0, "direct_perfects": 0.0,
                   "contrary_motion": 5.0, "voice_crossing": 0.0, "melodic_leaps": 0.0,
                   # Fux's line touches its top note D5 twice (9th note and the final)
                   "single_climax": -1.0, "proper_cadence": 1.0}
    assert [r["interval"] for r in rows] == ["P5", "M3", "m3", "P5", "M3", "P5", "m3", "M3", "M6", "M6", "P1/P8"]
    assert rows[-1]["broken"] == ["the highest note occurs more than once"]
    assert all(not r["broken"] for r in rows[:-1])
    assert "ok" in format_report(rows)


def test_parallel_fifths_and_octaves_penalised():
    assert values("D4 F4 E4 D4", "A4 C5 B4 D5", "parallel_perfects") == [0, -1, -1, 0]
    assert values("D4 E4 D4", "D5 E5 D5", "parallel_perfects") == [0, -1, -1]  # octaves
    # fifth to twelfth by contrary motion (A4/D4 -> D5/G3) is not "parallel"
    assert values("D4 G3 D4", "A4 D5 A4", "parallel_perfects") == [0, 0, 0]
    # a repeated fifth (neither voice moves) is not a parallel
    assert values("D4 D4 D4", "A4 A4 A4", "parallel_perfects") == [0, 0, 0]


def test_parallel_fifths_on_successive_downbeats_in_second_species():
    # downbeats: A4/D4 then B4/E4 (fifths), weak beat C5 between
    assert values("D4 E4 D4", "A4 C5 B4 C#5 D5", "parallel_perfects", species=2) == [0, 0, -1, 0, 0]


def test_direct_fifths_need_a_leap_in_the_upper_voice():
    # m3 G4/E4 -> P5 C5/F4: similar motion, upper voice leaps a fourth
    assert values("E4 F4 E4", "G4 C5 B4", "direct_perfects") == [0, -1, 0]
    # m6 C5/E4 -> P5 D5/G4: similar motion, upper voice steps: allowed
    assert values("E4 G4 E4", "C5 D5 B4", "direct_perfects") == [0, 0, 0]
    # line below: the cantus is the upper voice; its leap E4 -> A4 into the octave A3 counts
    assert values("E4 A4 E4", "G3 A3 E3", "direct_perfects", voice="below") == [0, -1, 0]


def test_contrary_motion_rewarded_oblique_half_similar_nothing():
    assert values("D4 E4 F4", "A4 G4 A4", "contrary_motion") == [0, 1.0, 0]  # contrary, then similar
    assert values("D4 F4 E4", "A4 A4 A4", "contrary_motion") == [0, 0.5, 0.5]  # oblique
    # second species: judged between downbeats only (A4/D4 -> G4/E4 contrary)
    assert values("D4 E4 D4", "A4 B4 G4 A4 A4", "contrary_motion", species=2) == [0, 0, 1.0, 0, 1.0]


def test_voice_crossing_and_overlap():
    assert values("D4 F4 E4", "A4 E4 G4", "voice_crossing") == [0, -1, 0]  # E4 below the cantus's F4
    # overlap: the cantus moves F4 -> D4, the line goes to E4, below where the cantus was
    assert values("D4 F4 D4 E4", "A4 A4 E4 G4", "voice_crossing") == [0, 0, -1, 0]
    assert values("D4 D4 E4", "D3 D4 C4", "voice_crossing", voice="below") == [0, 0, 0]  # unison is no crossing
    assert values("D4 F4 E4", "D3 G4 C4", "voice_crossing", voice="below") == [0, -1, 0]


def test_melodic_leaps_forbidden_and_compensated():
    cf = "C4 C4 C4 C4"
    assert values(cf, "E4 C#5 B4 C5", "melodic_leaps") == [0, -1, 1, 0]  # M6 up, then turned back
    assert values(cf, "E4 A#4 G4 E4", "melodic_leaps") == [0, -1, 1, 0]  # tritone
    assert values(cf, "C5 E4 G4 E4", "melodic_leaps") == [0, -1, 1, 0]  # minor sixth down
    assert values(cf, "E4 C5 B4 A4", "melodic_leaps") == [0, 0, 1, 0]  # minor sixth up is allowed
    assert values(cf, "C4 G4 A4 G4", "melodic_leaps") == [0, 0, -1, 0]  # a fifth up, then on up
    assert values(cf, "C4 C5 B4 G4", "melodic_leaps") == [0, 0, 1, 0]  # octave, then back


def test_single_climax():
    assert values("D4 F4 E4 D4", "A4 D5 C#5 D4", "single_climax") == [0, 0, 0, 1]
    assert values("D4 F4 E4 D4", "A4 D5 D5 D4", "single_climax") == [0, 0, 0, -1]


def test_proper_cadence_clausula_vera():
    assert values("F4 E4 D4", "A4 C#5 D5", "proper_cadence") == [0, 0, 1]  # leading tone to the final
    assert values("F4 E4 D4", "A4 C5 D5", "proper_cadence") == [0, 0, -1]  # no semitone in either voice
    assert values("F4 E4 D4", "A4 E5 D5", "proper_cadence") == [0, 0, -1]  # similar motion
    assert values("G4 F4 E4", "B4 D5 E5", "proper_cadence") == [0, 0, 1]  # Phrygian: the cantus's F-E
    assert values("F4 E4 D4", "D3 C#3 D3", "proper_cadence", voice="below") == [0, 0, 1]


def test_vertical_consonance_first_and_last_and_middle():
    assert values("D4 F4 D4", "F4 A4 D5", "vertical_consonance") == [-1, 1, 1]  # a third at the start
    assert values("D4 F4 D4", "A4 A4 D5", "vertical_consonance") == [1, 1, 1]  # fifth above the cantus
    assert values("D4 F4 D4", "G3 D4 D3", "vertical_consonance", voice="below") == [-1, 1, 1]  # fifth below
    assert values("D4 F4 D4", "D4 B4 A4", "vertical_consonance") == [1, -1, -1]  # tritone; fifth at the end
    assert values("D4 F4 E4 D4", "D5 F4 G4 D4", "vertical_consonance") == [1, -1, 1, 1]  # unison inside
    assert values("D4 G4 D4", "D5 C5 D5", "vertical_consonance") == [1, -1, 1]  # a fourth is dissonant


def test_second_species_passing_dissonance():
    # G4 over D4 is a fourth on a weak beat, passing A4-G4-F4: allowed (0), nothing owed later
    assert values("D4 A3 D4", "A4 G4 F4 E4 D4", "vertical_consonance", species=2) == [1, 0, 1, 1, 1]
    # the same fourth left by leap is not a passing tone: -1 when the next note comes (m3 C5/A3: +1 - 1)
    assert values("D4 A3 D4", "A4 G4 C5 B4 D5", "vertical_consonance", species=2)[:3] == [1, 0, 0]


def test_terms_score_zero_without_a_given_voice():
    env = gym.make("MusicComposition-v0", reward=["vertical_consonance", "parallel_perfects", "proper_cadence",
                                                  "contrary_motion", "single_climax"])
    env.reset(seed=0)
    for a in range(2, 66):
        _, r, term, _, _ = env.step(a % 38)
        assert r == 0.0
        if term:
            break


def test_counterpoint_preset_and_env_rewards():
    assert set(rewards.PRESETS["counterpoint"]) == {
        "vertical_consonance", "parallel_perfects", "direct_perfects", "contrary_motion", "voice_crossing",
        "melodic_leaps", "single_climax", "proper_cadence"}
    env = gym.make("Counterpoint-v0")
    _, info = env.reset(seed=0, options={"cantus": "fux_dorian"})
    assert info == {"key": "D dorian", "cantus": parse_pitches(FUX_DORIAN)}
    total = 0.0
    for p in parse_pitches(FUX_FIRST_SPECIES):
        obs, r, term, trunc, info = env.step(p - 55)
        assert sum(info["reward_terms"].values()) == pytest.approx(r)
        total += r
    assert term and not trunc
    # 2*11 + 1*5 - 2*1 + 4*1 (preset weights)
    assert total == pytest.approx(29.0)


def test_fux_cantus_obey_cantus_rules():
    for name, (mode, text) in FUX_CANTUS.items():
        p = parse_pitches(text)
        scale = MODE_SCALES[mode]
        assert p[0] % 12 == p[-1] % 12, name
        assert all((q - p[-1]) % 12 in scale for q in p), name
        assert abs(p[-2] - p[-1]) <= 2, name  # the final approached by step


def test_random_cantus_obeys_cantus_rules():
    rng = np.random.default_rng(0)
    for i in range(60):
        mode = list(MODE_SCALES)[i % 6]
        p = random_cantus(rng, mode, 62, 8 + i % 5)
        steps = np.diff(p)
        assert p[0] == p[-1] == 62 and p[-2] in (63, 64) and len(p) == 8 + i % 5
        assert p.count(max(p)) == 1 and max(p) - min(p) <= 12
        assert not np.any(steps == 0) and not np.any(np.abs(steps) == 6)
        assert np.mean(np.abs(steps) <= 2) >= 0.5  # mostly stepwise
        assert all((q - 62) % 12 in MODE_SCALES[mode] for q in p)


def test_cantus_sources_key_and_bad_input():
    env = gym.make("Counterpoint-v0", cantus="random", key="G mixolydian")
    _, info = env.reset(seed=1)
    assert info["key"] == "G mixolydian" and info["cantus"][0] % 12 == 7
    _, info = env.reset(options={"cantus": "fux_dorian", "key": "E minor"})  # transposed, keeps its mode
    assert info["key"] == "E dorian" and info["cantus"][:3] == [64, 67, 66]
    _, info = gym.make("Counterpoint-v0").reset(options={"cantus": "C4 D4 E4 D4 C4"})  # mode inferred
    assert info["key"] == "C ionian" and info["cantus"] == [60, 62, 64, 62, 60]
    with pytest.raises(ValueError, match="accepted: 'key', 'cantus'"):
        env.reset(options={"progression": "I-IV-V"})
    with pytest.raises(MusicTheoryError, match="mode"):
        gym.make("Counterpoint-v0", key="D lokrian")
    with pytest.raises(ValueError, match="species"):
        gym.make("Counterpoint-v0", species=3)
    with pytest.raises(ValueError, match="cantus"):
        gym.make("Counterpoint-v0", cantus="fux_locrian")


def test_second_species_episode_and_masks():
    env = gym.make("Counterpoint-v0", species=2, constraint="diatonic")
    obs, info = env.reset(seed=0, options={"cantus": "fux_dorian"})
    assert env.unwrapped.core.n_steps == 21 and obs["position"].tolist() == [1.0, 0.0]
    mask = env.unwrapped.action_masks()
    allowed = {(55 + i) % 12 for i in np.flatnonzero(mask)}
    assert allowed == {2, 4, 5, 7, 9, 11, 0, 1}  # D dorian plus the raised leading tone C#
    steps = 0
    term = False
    while not term:
        _, _, term, _, _ = env.step(int(np.flatnonzero(mask)[steps % mask.sum()]))
        steps += 1
    assert steps == 21
    comp = env.unwrapped.composition
    assert len(comp.line.notes()) == 21 and comp.line.n_steps == 44 == comp.cantus.n_steps


def test_export_has_both_voices(tmp_path):
    env = gym.make("Counterpoint-v0", voice="below", render_mode="ansi")
    env.reset(seed=0, options={"cantus": "fux_dorian"})
    for p in parse_pitches("D3 D3 A2 B2 E3 D3 C#3 E3 D3 C#3 D3"):
        env.step(p - 36)
    comp = env.unwrapped.composition
    score = comp.to_music21()
    assert [p.partName for p in score.parts] == ["Cantus firmus", "Counterpoint"]
    assert [n.pitch.midi for n in score.parts[0].flatten().notes] == parse_pitches(FUX_DORIAN)
    assert len(score.parts[1].flatten().notes) == 11
    assert comp.to_midi(tmp_path / "cp.mid").stat().st_size > 0
    assert comp.to_musicxml(tmp_path / "cp.musicxml").stat().st_size > 0
    text = env.render()
    assert "cantus firmus" in text and "D dorian" in text


def test_observation_contents():
    env = gym.make("Counterpoint-v0")
    obs, _ = env.reset(seed=0, options={"cantus": "fux_dorian"})
    assert obs["cantus"][0, -1] == 1 and obs["cantus"][1, 62 - 36] == 1 and obs["cantus"][2, 65 - 36] == 1
    assert obs["interval"][12] == 1 and obs["mode"][1] == 1 and obs["final"][2] == 1
    obs, *_ = env.step(69 - 55)
    assert obs["interval"][7] == 1 and obs["history"][-1, 69 - 55] == 1 and obs["notes_left"][3] == 1


@pytest.mark.slow
def test_ppo_beats_random_on_counterpoint():
    from stable_baselines3 import PPO

    from musicenv.baselines import run_episode

    def evaluate(policy, n=30):
        env = gym.make("Counterpoint-v0")
        return float(np.mean([run_episode(env, lambda o: policy(o, env), seed=1000 + ep)[1]["total"]
                              for ep in range(n)]))

    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("Counterpoint-v0", n_envs=8, seed=0)
    model = PPO("MultiInputPolicy", venv, seed=0, n_steps=128, batch_size=256, verbose=0)
    model.learn(60_000)
    ppo = evaluate(lambda o, e: int(model.predict(o, deterministic=True)[0]))
    rnd = evaluate(lambda o, e: int(e.action_space.sample()))
    assert ppo > rnd + 10
