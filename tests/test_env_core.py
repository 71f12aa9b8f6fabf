"""The env core's contract: the driver's declared hooks, the batch's task-specific
facts, and the shared width constants (issue 16)."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given
from hypothesis import strategies as st

from musicenv.core import (
    K_STEPS_PER_BAR,
    K_STEPS_PER_BEAT,
    K_VOCAB,
    K_VOICE_ABOVE,
    LEVEL_BEAT,
    LEVEL_DOWNBEAT,
    LEVEL_STRONG,
    CompositionBatch,
)
from musicenv.encoding import FIRST_PITCH_TOKEN, TokenGrid
from musicenv.envs.batched import (
    ActionError,
    BatchedComposer,
    EpisodeContext,
    SingleComposerEnv,
    VectorComposerEnv,
)
from musicenv.theory import (
    CHORD_FEATURES,
    N_KEYS,
    N_PITCH_CLASSES,
    N_QUALITIES,
    NO_CHORD,
    Meter,
    chord_name,
    parse_chord,
    transpose_chords,
)


# ------------------------------------------------------------------------------ a task written from the docstring
class DroneComposer(BatchedComposer):
    """A melody over a drone on the tonic: the smallest task the hooks allow (plain numpy
    observation, no fused kernel), written from BatchedComposer's docstring."""

    RESET_OPTIONS = ("key",)

    def __init__(self, batch_size: int, *, reward="in_key", n_steps: int = 8, observation: str = "dict") -> None:
        if n_steps < 2:
            raise ValueError(f"n_steps must be >= 2, got {n_steps!r}")
        grid = TokenGrid(60, 71, 4)
        super().__init__(CompositionBatch(batch_size, n_steps, grid, Meter.parse("4/4")), reward=reward, tempo=90,
                         observation=observation)

    def draw_context(self, index, rng, options):
        keys = rng.integers(0, N_KEYS, size=len(index)) if options.get("key") is None \
            else np.full(len(index), int(options["key"]))
        drone = 48 + keys % N_PITCH_CLASSES
        return EpisodeContext(keys, voice=np.repeat(drone[:, None], self.capacity, axis=1))

    def observation_layout(self):
        return {"key": (N_KEYS,), "progress": (1,)}

    def observe(self, out):
        b = self.batch
        out[:] = 0.0
        out[np.arange(b.batch_size), b.key] = 1.0
        out[:, N_KEYS] = b.t / self.capacity


class DroneEnv(SingleComposerEnv):
    """A test env: a melody over a drone."""

    core_class = DroneComposer


class DroneVectorEnv(VectorComposerEnv):
    core_class = DroneComposer


class TokenDroneComposer(DroneComposer):
    """The drone task with the compact observation too: two integer fields."""

    OBSERVATION_MODES = ("dict", "tokens")

    def token_observation_layout(self):
        return {"key": [N_KEYS], "step": [self.capacity + 1]}

    def observe_tokens(self, out):
        out[:, 0] = self.batch.key
        out[:, 1] = self.batch.t


class TokenDroneEnv(SingleComposerEnv):
    """A test env: a melody over a drone, observed as integers."""

    core_class = TokenDroneComposer


class TokenDroneVectorEnv(VectorComposerEnv):
    core_class = TokenDroneComposer


def test_the_tokens_observation_is_two_optional_hooks():
    with pytest.raises(ValueError, match="unknown observation mode 'tokens'; accepted: 'dict'"):
        DroneEnv(observation="tokens")
    env = TokenDroneEnv(observation="tokens")
    check_env(env, skip_render_check=True)
    assert env.observation_space == gym.spaces.Dict({"key": gym.spaces.MultiDiscrete([N_KEYS]),
                                                     "step": gym.spaces.MultiDiscrete([9])})
    obs, _ = env.reset(seed=0, options={"key": 14})
    assert obs["key"].tolist() == [14] and obs["step"].tolist() == [0] and obs["step"].dtype == np.int64
    obs, *_ = env.step(FIRST_PITCH_TOKEN)
    assert obs["step"].tolist() == [1]
    vec = TokenDroneVectorEnv(num_envs=2, observation="tokens")  # the vector front end takes the mode alike
    obs, _ = vec.reset(seed=0)
    assert obs["key"].shape == (2, 1) and vec.observation_space.contains(obs)
    dense = TokenDroneEnv()  # the default stays the one-hot Dict
    assert dense.reset(seed=0)[0]["key"].shape == (N_KEYS,)


def test_driver_is_abstract_and_names_its_hooks():
    with pytest.raises(TypeError, match="draw_context.*observ|observ.*draw_context"):
        BatchedComposer(CompositionBatch(1, 4, TokenGrid(), Meter.parse("4/4")), reward="in_key", tempo=100)

    class NoTask(SingleComposerEnv):
        pass

    with pytest.raises(TypeError, match="NoTask must set core_class"):
        NoTask()


def test_a_task_from_the_three_hooks_is_a_full_env():
    env = DroneEnv()
    check_env(env, skip_render_check=True)  # rendered below (the checker wants a registered spec)
    obs, info = env.reset(seed=0, options={"key": 14})
    assert info == {"key": "D minor"} and obs["key"][14] == 1 and obs["progress"][0] == 0
    total, terminated, steps = 0.0, False, 0
    while not terminated:
        obs, r, terminated, _, info = env.step(FIRST_PITCH_TOKEN + 2)  # D4, in D minor
        total += r
        steps += 1
    assert steps == 8 and total == 0.0 and obs["progress"][0] == 1.0
    assert env.unwrapped.core.batch.voice[0, :3].tolist() == [50, 50, 50]  # the drone on D3
    env.reset(options={"key": 14})
    _, r, _, _, _ = env.step(FIRST_PITCH_TOKEN + 3)  # Eb4, outside D minor
    assert r < 0
    with pytest.raises(ValueError, match="accepted: 'key'"):
        env.reset(options={"mode": "dorian"})
    with pytest.raises(ActionError, match="0..13"):
        env.step(14)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.step(2)[1] == env.step(2)[1]
    shown = DroneEnv(render_mode="ansi")
    shown.reset(seed=0, options={"key": 14})
    shown.step(FIRST_PITCH_TOKEN + 2)
    assert "D minor" in shown.render()


def test_vector_front_end_runs_any_task():
    vec = DroneVectorEnv(num_envs=3, n_steps=4)
    obs, _ = vec.reset(seed=1)
    assert obs["key"].shape == (3, N_KEYS)
    for _ in range(4):
        _, r, term, _, info = vec.step(np.full(3, FIRST_PITCH_TOKEN))
    assert term.all() and set(info["reward_terms"]) == {"in_key"}
    assert vec.action_masks().all()


# ------------------------------------------------------------------------------ the batch's task-specific facts
def test_composition_batch_defaults_follow_grid_and_meter():
    b = CompositionBatch(2, 8, TokenGrid(60, 71, 1), Meter.parse("4/4"))
    assert b.vocab_size == b.consts[K_VOCAB] == 14
    assert b.consts[K_STEPS_PER_BAR] == 4 and b.consts[K_STEPS_PER_BEAT] == 1 and b.consts[K_VOICE_ABOVE] == 0
    # one step per quarter in 4/4: downbeat, beat, strong beat (beat 3), beat -- what
    # Harmonization-v0 relies on
    assert b.beat_level.tolist() == [LEVEL_DOWNBEAT, LEVEL_BEAT, LEVEL_STRONG, LEVEL_BEAT] * 2


def test_composition_batch_takes_a_tasks_own_facts():
    table = np.array([-1, -1, 0, 1, 2, NO_CHORD - 1])
    b = CompositionBatch(1, 3, TokenGrid(60, 61, 1), Meter.parse("4/4"), token_pitch=table,
                         beat_level=[LEVEL_DOWNBEAT] * 3, steps_per_bar=2, steps_per_beat=1, voice_above=True)
    assert b.vocab_size == b.consts[K_VOCAB] == 6 and b.pitch_of.tolist() == table.tolist()
    assert b.consts[K_STEPS_PER_BAR] == 2 and b.consts[K_VOICE_ABOVE] == 1
    assert b.beat_level.tolist() == [LEVEL_DOWNBEAT] * 3
    with pytest.raises(ValueError, match=r"beat_level has shape \(2,\); expected \(3,\)"):
        CompositionBatch(1, 3, TokenGrid(), Meter.parse("4/4"), beat_level=[0, 0])
    with pytest.raises(ValueError, match="exceeds the supported 256"):
        CompositionBatch(1, 3, TokenGrid(), Meter.parse("4/4"), token_pitch=np.zeros(257))


def test_counterpoint_and_harmonization_state_their_facts_at_construction():
    cp = gym.make("Counterpoint-v0", species=2, voice="below").unwrapped.core.batch
    assert cp.consts[K_STEPS_PER_BAR] == 2 and cp.consts[K_STEPS_PER_BEAT] == 1 and cp.consts[K_VOICE_ABOVE] == 1
    assert cp.beat_level[:4].tolist() == [LEVEL_DOWNBEAT, 0, LEVEL_DOWNBEAT, 0]
    ha = gym.make("Harmonization-v0").unwrapped.core.batch
    assert ha.vocab_size == FIRST_PITCH_TOKEN + NO_CHORD
    assert ha.pitch_of[FIRST_PITCH_TOKEN + parse_chord("G7")] == parse_chord("G7")


# ------------------------------------------------------------------------------ widths and transposition
def test_widths_have_one_home():
    assert N_PITCH_CLASSES == 12 and CHORD_FEATURES == 12 + N_QUALITIES + 1 == 24
    spaces = {env_id: gym.make(env_id).observation_space for env_id in
              ("MusicComposition-v0", "Harmonization-v0")}
    for space in spaces.values():
        assert space["chords"].shape == (2, CHORD_FEATURES) and space["key"].shape == (N_KEYS,)


def test_transpose_chords_moves_roots_and_keeps_qualities():
    codes = [parse_chord(c) for c in ("C", "Am7", "G7", "Bdim")] + [NO_CHORD]
    assert [chord_name(c) if c != NO_CHORD else "N.C." for c in transpose_chords(codes, 2)] == \
        ["D", "Bm7", "A7", "C#dim", "N.C."]
    assert [chord_name(c) for c in transpose_chords(codes[:2], -3)] == ["A", "F#m7"]
    assert transpose_chords(np.array([[0, NO_CHORD]]), 5).shape == (1, 2)


@given(codes=st.lists(st.integers(0, NO_CHORD), min_size=1, max_size=20), shift=st.integers(-24, 24))
def test_transpose_chords_round_trip(codes, shift):
    moved = transpose_chords(codes, shift)
    np.testing.assert_array_equal(transpose_chords(moved, -shift), codes)
    assert np.array_equal(moved == NO_CHORD, np.array(codes) == NO_CHORD)


def test_every_env_kernel_uses_numbas_disk_cache():
    """numba's ``cache=True`` keeps env creation fast in every new process: no kernel of
    the env core or an env module compiles in memory only."""
    import importlib
    import pkgutil

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    import musicenv.core
    import musicenv.envs

    modules = [musicenv.core] + [importlib.import_module(f"musicenv.envs.{m.name}")
                                 for m in pkgutil.iter_modules(musicenv.envs.__path__)]
    kernels = {f"{mod.__name__}.{name}": obj for mod in modules for name, obj in vars(mod).items()
               if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == mod.__name__}
    assert len(kernels) >= 10, sorted(kernels)
    assert not [name for name, k in kernels.items() if isinstance(k._cache, NullCache)]
