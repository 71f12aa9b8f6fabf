"""Jam, a PettingZoo environment: a melody agent and a chords agent play together, online.

Named as PettingZoo's own environments are::

    from musicenv import jam_v0

    env = jam_v0.parallel_env(n_bars=8, key="random")   # ParallelEnv
    observations, infos = env.reset(seed=0)
    while env.agents:
        actions = {a: env.action_space(a).sample(infos[a]["action_mask"]) for a in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)

    aec = jam_v0.env()   # the AEC version, through pettingzoo.utils.parallel_to_aec

## Agents

`"melody"` and `"chords"` act at every grid step (16th notes by default) at the same
time; each sees only the past: its own and its partner's tokens so far, the key, the
meter (through `position`) and the position in the piece.

| Agent | Action space | Tokens |
|-------|--------------|--------|
| `melody` | `Discrete(38)` | 0 REST, 1 HOLD, 2.. NOTE_ON 48..83 (`MusicComposition-v0`'s vocabulary) |
| `chords` | `Discrete(134)` | 0 N.C., 1 HOLD, 2 + root * 11 + quality (`musicenv.theory`); at most one change per beat |

`infos[agent]["action_mask"]` (int8) gives the legal actions: the chords agent may
strike a chord (or N.C.) once per beat, HOLD otherwise; neither may HOLD at the
first step. An illegal chord action is played as HOLD (N.C. at the first step), so
agents without masking still play.

## Observations

The `Dict` observations of `JamMelody-v0` and `JamChords-v0` (see their docstrings:
`musicenv.envs.jam.JamMelodyEnv`, `JamChordsEnv`). The chords agent observes and acts
in absolute pitch here by default; `key_relative=True` gives it `JamChords-v0`'s
default view (everything relative to the key's tonic, chord roots of its actions
counted from the tonic), the view that lets one policy play in every key.

## Rewards

Each agent's reward spec is made with `rewards.make`: `melody_reward` (default
`"jam_melody"`: the melody `theory` preset plus the pair terms) and `chords_reward`
(default `"jam_chords"`: the pair terms plus chord-progression terms); the pair terms
(`rewards.jam`) see both tokens of the step. `infos[agent]["reward_terms"]` has each
term's contribution.

## Episode

A key is drawn from `key` (default any of the 24) at reset (`options={"key": ...}`
fixes it); both agents terminate after `n_bars` bars.

## Arguments

`parallel_env(melody_reward="jam_melody", chords_reward="jam_chords", key="random",
n_bars=8, meter="4/4", steps_per_quarter=4, min_pitch=48, max_pitch=83,
history_length=8, tempo=100, key_relative=False, render_mode=None)`; `render_mode` "ansi" or "rgb_array"
shows the melody with the chords as a piano roll. `env.unwrapped.composition` is the
duet so far (melody and chord track) for MIDI, MusicXML and WAV export.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils import parallel_to_aec, wrappers

__all__ = ["parallel_env", "env", "raw_env", "AGENTS"]

AGENTS = ("melody", "chords")


class raw_env(ParallelEnv):  # noqa: N801  (PettingZoo's naming)
    """The Jam duet as a PettingZoo ``ParallelEnv`` (see the module docstring)."""

    metadata = {"name": "jam_v0", "render_modes": ["ansi", "rgb_array"], "is_parallelizable": True, "render_fps": 4}

    def __init__(self, *, melody_reward: Any = "jam_melody", chords_reward: Any = "jam_chords", key: Any = "random",
                 n_bars: int = 8, meter: Any = "4/4", steps_per_quarter: int = 4, min_pitch: int = 48,
                 max_pitch: int = 83, history_length: int = 8, tempo: float = 100.0, key_relative: bool = False,
                 render_mode: str | None = None) -> None:
        from musicenv.envs.jam import Duet
        from musicenv.envs.music_composition import _resolve_keys

        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; accepted: {self.metadata['render_modes']} or None")
        if not (isinstance(tempo, (int, float)) and tempo > 0):
            raise ValueError(f"tempo must be a positive number of quarter notes per minute, got {tempo!r}")
        self.render_mode, self.tempo = render_mode, float(tempo)
        self.duet = Duet(1, melody_reward=melody_reward, chords_reward=chords_reward, n_bars=n_bars, meter=meter,
                         steps_per_quarter=steps_per_quarter, min_pitch=min_pitch, max_pitch=max_pitch,
                         history_length=history_length, key_relative=bool(key_relative))
        self.keys = np.array(_resolve_keys(key), dtype=np.int64)
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._obs_spaces = {a: self.duet.observation_space(a) for a in AGENTS}
        self._act_spaces = {"melody": spaces.Discrete(self.duet.grid.vocab_size),
                            "chords": spaces.Discrete(int(self.duet.chord_masks().shape[1]))}
        self._names = {a: self.duet.rewards[a].names for a in AGENTS}
        self._rng = np.random.default_rng()
        self._mask = np.ones(1, dtype=bool)

    @functools.cache  # noqa: B019  (PettingZoo's idiom; two agents)
    def observation_space(self, agent: str) -> spaces.Dict:
        return self._obs_spaces[agent]

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_spaces[agent]

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        return {a: {k: v[0] for k, v in self.duet.observe(a).items()} for a in self.agents}

    def _masks(self) -> dict[str, np.ndarray]:
        return {"melody": self.duet.melody_masks()[0].astype(np.int8), "chords": self.duet.chord_masks()[0].astype(np.int8)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        from musicenv.theory import Key, parse_key

        if seed is not None or not hasattr(self, "_seeded"):
            self._rng = np.random.default_rng(seed)
            self._seeded = True
        opts = dict(options or {})
        unknown = sorted(set(opts) - {"key"})
        if unknown:  # PettingZoo's API test resets with {"options": 1}: ignored, but said so
            warnings.warn(f"jam_v0 ignores unknown reset option(s) {unknown}; accepted: 'key'", stacklevel=2)
        k = int(self.keys[self._rng.integers(len(self.keys))])
        if opts.get("key") is not None:
            k = parse_key(opts["key"])
        self.duet.reset(self._mask, np.array([k], dtype=np.int64))
        self.agents = list(self.possible_agents)
        masks = self._masks()
        infos = {a: {"key": Key.from_index(k).name, "action_mask": masks[a]} for a in self.agents}
        return self._observations(), infos

    def step(self, actions: dict[str, Any]):
        from musicenv.envs.batched import ActionError

        if not self.agents:
            raise RuntimeError("the episode is over (or reset() was never called); call reset() before step()")
        missing = set(self.agents) - set(actions)
        if missing:
            raise ActionError(f"no action for agent(s) {sorted(missing)}; step() needs one action per agent in "
                              f"{self.agents}")
        tok = {}
        for a in self.agents:
            x = actions[a]
            x = x.item() if isinstance(x, np.ndarray) and x.size == 1 else x
            n = self._act_spaces[a].n
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or not 0 <= x < n:
                raise ActionError(f"action {actions[a]!r} of agent {a!r} outside its action space; accepted: an "
                                  f"integer in 0..{n - 1}")
            tok[a] = np.array([int(x)], dtype=np.int64)
        chords = self.duet.legal_chords(self.duet.chords_from_relative(tok["chords"]) if self.duet.key_relative
                                        else tok["chords"])
        out = self.duet.play(tok["melody"], chords)
        done = bool(self.duet.finished()[0])
        rewards = {a: float(out[a][1][0]) for a in self.agents}
        masks = self._masks()
        infos = {a: {"reward_terms": dict(zip(self._names[a], out[a][0][0].tolist())), "action_mask": masks[a]}
                 for a in self.agents}
        infos["chords"]["played"] = int(chords[0])
        observations = self._observations()
        terminations = {a: done for a in self.agents}
        truncations = {a: False for a in self.agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    @property
    def composition(self):
        """The duet so far: the melody with the chords played as its chord track."""
        return self.duet.composition(0, self.tempo)

    def render(self):
        if self.render_mode is None:
            import gymnasium

            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        from musicenv.render import render_ansi, render_rgb

        comp = self.composition
        n = self.duet.n_steps
        return render_ansi(comp, n_steps=n) if self.render_mode == "ansi" else render_rgb(comp, n_steps=n)

    def close(self) -> None:
        pass


def parallel_env(**kwargs: Any) -> raw_env:
    """The Jam duet as a PettingZoo ``ParallelEnv`` (arguments: see the module docstring)."""
    return raw_env(**kwargs)


def env(**kwargs: Any):
    """The AEC version: :func:`parallel_env` through ``pettingzoo.utils.parallel_to_aec``,
    with PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(parallel_to_aec(raw_env(**kwargs)))
