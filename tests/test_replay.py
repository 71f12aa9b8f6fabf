"""Replays trajectories recorded before the env core was split into a driver and task
hooks (issue 16), and demands the same observations, rewards, reward terms, masks,
terminations and reset infos, bit for bit.

Every registered id has recordings in ``tests/data/trajectories/<id>.npz``, single env
and vector env (next-step autoreset), for fixed seeds; actions are drawn from a fixed
generator among the actions ``action_masks()`` allows, so the masks matter too.

The reward specs name their terms explicitly (``rl_tuner_theory``, which keeps the
paper's values, plus two chord terms for MusicComposition-v0; each env's own terms for
the others), never the ``theory`` preset, which is being redesigned (issue 18). A
deliberate change of a term or an env's behaviour is re-recorded with::

    PYTHONPATH=$PWD python tests/test_replay.py --record [ENV_ID ...]

and the diff of the ``.npz`` files says so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import musicenv

DATA = Path(__file__).parent / "data" / "trajectories"

_MC_REWARD = {"rl_tuner_theory": 1.0, "chord_tone_on_strong_beat": 3.0, "consonance": 2.0}
_CP_REWARD = {"vertical_consonance": 2.0, "parallel_perfects": 3.0, "direct_perfects": 1.0, "contrary_motion": 1.0,
              "voice_crossing": 2.0, "melodic_leaps": 1.0, "single_climax": 2.0, "proper_cadence": 4.0}
_HA_REWARD = {"melody_chord_tone": 2.0, "functional_progression": 1.0, "harmonic_cadence": 4.0,
              "corpus_agreement": 1.0}

_JAM_CHORDS_REWARD = {"jam_note_in_chord": 1.0, "jam_onset_alignment": 0.5, "jam_harmonic_rhythm": 1.0,
                      "jam_cadence_together": 4.0, "jam_diatonic_chord": 0.25, "jam_functional_progression": 0.25}
_JAM_MELODY_REWARD = {"in_key": 1.0, "jam_note_in_chord": 2.0, "jam_onset_alignment": 0.5, "jam_cadence_together": 4.0}
#: env id -> cases: (case name, constructor kwargs, reset options of the first reset,
#: number of steps). Each case is recorded as a single env (two seeds) and as a vector
#: env of three.
CASES: dict[str, list[tuple[str, dict[str, Any], dict[str, Any] | None, int]]] = {
    "MusicComposition-v0": [
        ("default", {"reward": _MC_REWARD}, None, 80),
        ("in_key_3_4", {"reward": _MC_REWARD, "meter": "3/4", "n_bars": 2, "chords_per_bar": 3,
                        "constraint": "in_key", "history_length": 5, "key": ["E minor", "Bb major"],
                        "progression": [["I", "IV", "V", "I"], ["ii", "V7", "I", "vi"]]}, {"key": "G minor"}, 60),
        ("six_eight", {"reward": _MC_REWARD, "meter": "6/8", "n_bars": 1, "min_pitch": 60, "max_pitch": 72,
                       "steps_per_quarter": 2, "key": "major"}, {"progression": "C Am F G7"}, 30),
    ],
    "Counterpoint-v0": [
        ("default", {"reward": _CP_REWARD}, None, 40),
        ("species2_below", {"reward": _CP_REWARD, "species": 2, "voice": "below", "cantus": "random",
                            "constraint": "diatonic", "key": "D minor"}, {"key": "E phrygian"}, 40),
    ],
    "Harmonization-v0": [
        ("default", {"reward": _HA_REWARD}, None, 40),
        ("user_melody", {"reward": _HA_REWARD, "melody": "G4 A4 B4 r D5 C5 B4 A4 G4", "key": "G major",
                         "n_bars": None}, None, 20),
        ("transposed", {"reward": _HA_REWARD, "n_bars": 2}, {"melody": "bach/bwv347", "key": "Bb major"}, 12),
    ],
    # Jam: the jam terms by explicit name (the presets may be re-weighted)
    "JamChords-v0": [
        ("default", {"reward": _JAM_CHORDS_REWARD}, None, 40),
        ("tritone_push", {"reward": _JAM_CHORDS_REWARD, "n_bars": 6}, {"melody": 3, "transpose": 6}, 90),
    ],
    "JamMelody-v0": [
        ("default", {"reward": _JAM_MELODY_REWARD, "n_bars": 2}, None, 40),
    ],
}
SEEDS = (3, 11)
N_VEC = 3


def _pick(rng: np.random.Generator, mask: np.ndarray) -> int:
    return int(rng.choice(np.flatnonzero(mask)))


def record_single(env_id: str, kwargs: dict, options: dict | None, n_steps: int, seed: int) -> dict[str, np.ndarray]:
    """One single env's trajectory: a frame per reset and per step."""
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(seed + 1000)
    frames: list[dict[str, Any]] = []
    obs, info = env.reset(seed=seed, options=options)
    frames.append({"obs": obs, "action": -1, "reward": 0.0, "terminated": False, "terms": None, "info": info,
                   "mask": env.unwrapped.action_masks()})
    for _ in range(n_steps):
        a = _pick(rng, frames[-1]["mask"])
        obs, r, term, trunc, info = env.step(a)
        assert not trunc
        frames.append({"obs": obs, "action": a, "reward": r, "terminated": term,
                       "terms": list(info["reward_terms"].values()), "info": {},
                       "mask": env.unwrapped.action_masks(), "names": list(info["reward_terms"])})
        if term:
            obs, info = env.reset()
            frames.append({"obs": obs, "action": -1, "reward": 0.0, "terminated": False, "terms": None, "info": info,
                           "mask": env.unwrapped.action_masks()})
    env.close()
    names = next(f["names"] for f in frames if "names" in f)
    out = {f"obs.{k}": np.stack([f["obs"][k] for f in frames]) for k in frames[0]["obs"]}
    out.update({
        "action": np.array([f["action"] for f in frames], dtype=np.int64),
        "reward": np.array([f["reward"] for f in frames], dtype=np.float64),
        "terminated": np.array([f["terminated"] for f in frames], dtype=bool),
        "terms": np.array([f["terms"] or [0.0] * len(names) for f in frames], dtype=np.float64),
        "term_names": np.array(names),
        "mask": np.stack([f["mask"] for f in frames]),
        "info": np.array([json.dumps(f["info"], sort_keys=True) for f in frames]),
    })
    return out


def record_vector(env_id: str, kwargs: dict, options: dict | None, n_steps: int, seed: int) -> dict[str, np.ndarray]:
    """A vector env of ``N_VEC``: a frame per step (the first is the reset)."""
    env = gym.make_vec(env_id, num_envs=N_VEC, vectorization_mode="vector_entry_point", **kwargs)
    rng = np.random.default_rng(seed + 2000)
    obs, _ = env.reset(seed=seed, options=options)
    frames = [{"obs": obs, "action": np.full(N_VEC, -1), "reward": np.zeros(N_VEC), "terminated": np.zeros(N_VEC, bool),
               "terms": None, "mask": env.action_masks()}]
    for _ in range(n_steps):
        acts = np.array([_pick(rng, m) for m in frames[-1]["mask"]], dtype=np.int64)
        obs, r, term, trunc, info = env.step(acts)
        assert not trunc.any()
        frames.append({"obs": obs, "action": acts, "reward": r, "terminated": term,
                       "terms": np.stack(list(info["reward_terms"].values()), axis=1), "mask": env.action_masks()})
    env.close()
    n_terms = frames[1]["terms"].shape[1]
    out = {f"obs.{k}": np.stack([f["obs"][k] for f in frames]) for k in frames[0]["obs"]}
    out.update({
        "action": np.stack([f["action"] for f in frames]).astype(np.int64),
        "reward": np.stack([f["reward"] for f in frames]).astype(np.float64),
        "terminated": np.stack([f["terminated"] for f in frames]).astype(bool),
        "terms": np.stack([np.zeros((N_VEC, n_terms)) if f["terms"] is None else f["terms"] for f in frames]),
        "mask": np.stack([f["mask"] for f in frames]),
    })
    return out


def record(env_id: str) -> dict[str, np.ndarray]:
    """Every trajectory of ``env_id``'s cases, keyed ``<case>/<single|vector>/<seed>/<field>``."""
    arrays = {}
    for case, kwargs, options, n_steps in CASES[env_id]:
        for seed in SEEDS:
            for kind, fn in (("single", record_single), ("vector", record_vector)):
                if kind == "vector" and seed != SEEDS[0]:
                    continue
                for field, value in fn(env_id, kwargs, options, n_steps, seed).items():
                    arrays[f"{case}/{kind}/{seed}/{field}"] = value
    return arrays


def _registered_ids() -> list[str]:
    return sorted(spec.id for spec in gym.registry.values()
                  if isinstance(spec.entry_point, str) and spec.entry_point.startswith("musicenv."))


def test_every_registered_env_has_recordings():
    assert set(_registered_ids()) <= set(CASES), "record trajectories of the new env (see the module docstring)"
    for env_id in CASES:
        assert (DATA / f"{env_id}.npz").exists(), env_id


@pytest.mark.parametrize("env_id", sorted(CASES))
def test_replay_matches_recording(env_id):
    with np.load(DATA / f"{env_id}.npz", allow_pickle=False) as f:
        expected = {k: f[k] for k in f.files}
    got = record(env_id)
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k, strict=True)


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "--record":
        raise SystemExit("usage: python tests/test_replay.py --record [ENV_ID ...]")
    DATA.mkdir(parents=True, exist_ok=True)
    for env_id in argv[1:] or sorted(CASES):
        np.savez_compressed(DATA / f"{env_id}.npz", **record(env_id))
        print(f"{env_id}: {(DATA / f'{env_id}.npz').stat().st_size} bytes")


if __name__ == "__main__":
    assert musicenv  # registers the ids
    main(sys.argv[1:])
