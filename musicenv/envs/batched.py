"""Shared machinery of the musicenv environments: one batched core, two front ends.

:class:`BatchedComposer` owns a :class:`~musicenv.core.CompositionBatch`, the reward
composite, the per-episode context (key and chord progression) and the
observation kernel. :class:`SingleComposerEnv` is that core at batch size 1 behind
the ``gymnasium.Env`` API; :class:`VectorComposerEnv` runs it at batch size N
behind ``gymnasium.vector.VectorEnv`` with next-step autoreset. Both call the same
methods, so they agree step for step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numba import njit

from musicenv.composition import Composition
from musicenv.core import (
    C_END,
    C_EVENT_START,
    C_LAST_PITCH,
    C_T,
    K_N_STEPS,
    K_STEPS_PER_BAR,
    K_VOCAB,
    CompositionBatch,
    commit_kernel,
)
from musicenv.encoding import HOLD, TokenGrid
from musicenv.theory import (
    CHORD_QUALITY,
    CHORD_ROOT,
    COMMON_PROGRESSIONS,
    KEY_SCALE_MASK,
    N_KEYS,
    N_QUALITIES,
    NO_CHORD,
    Key,
    Meter,
    MusicTheoryError,
    parse_key,
    resolve_progression,
)

__all__ = ["BatchedComposer", "SingleComposerEnv", "VectorComposerEnv", "ActionError", "CHORD_FEATURES"]

#: Width of one chord's encoding in the observation: root one-hot (12), quality
#: one-hot (N_QUALITIES), "no chord" flag (1).
CHORD_FEATURES = 12 + N_QUALITIES + 1


class ActionError(ValueError):
    """An action is not a valid token for the environment."""


# ------------------------------------------------------------------------------ context
_MODE_KEYS = {
    "all": tuple(range(N_KEYS)),
    "major": tuple(range(12)),
    "minor": tuple(range(12, 24)),
}


def _resolve_keys(key: Any) -> tuple[int, ...]:
    """Keys an episode may draw from: 'random'/'all', 'major', 'minor', one key or a list."""
    if key is None:
        return _MODE_KEYS["all"]
    if isinstance(key, str) and key.lower() in ("random", "all", "major", "minor"):
        return _MODE_KEYS["all" if key.lower() == "random" else key.lower()]
    if isinstance(key, (list, tuple)):
        if not key:
            raise MusicTheoryError("empty list of keys; give at least one key name or index")
        return tuple(parse_key(k) for k in key)
    return (parse_key(key),)


def check_reset_options(options: dict, accepted: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the keys of ``options`` outside ``accepted`` and the
    accepted ones (every env's ``reset(options=...)`` check)."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; accepted: {', '.join(map(repr, accepted))}")


class ContextSampler:
    """Draws (key, chord track) per episode from the env's ``np_random``.

    ``progression`` is None (draw one of ``COMMON_PROGRESSIONS`` for the key's mode),
    a roman-numeral/chord-symbol string or list (fixed; numerals read in the episode's
    key), or a list of such progressions to draw from.
    """

    def __init__(self, key: Any, progression: Any, n_steps: int, steps_per_chord: int) -> None:
        self.keys = np.array(_resolve_keys(key), dtype=np.int64)
        self.n_steps, self.steps_per_chord = n_steps, steps_per_chord
        if progression is None:
            self.banks = {m: [list(p) for p in COMMON_PROGRESSIONS[m]] for m in ("major", "minor")}
        else:
            progs = progression if _is_progression_list(progression) else [progression]
            self.banks = {"major": list(progs), "minor": list(progs)}
        # chord track (and its next-chord track) of every (key, progression) pair,
        # precomputed so that drawing a batch of contexts is a vectorised lookup
        n_prog = max(len(v) for v in self.banks.values())
        self.n_prog = np.zeros(N_KEYS, dtype=np.int64)
        self.tracks = np.full((N_KEYS, n_prog, n_steps), NO_CHORD, dtype=np.int64)
        for k in np.unique(self.keys):
            bank = self.banks["minor" if k >= 12 else "major"]
            self.n_prog[k] = len(bank)
            for i, prog in enumerate(bank):
                self.tracks[k, i] = self.chord_track(resolve_progression(prog, int(k)))
        self.next_tracks = next_chord_track(self.tracks.reshape(-1, n_steps)).reshape(self.tracks.shape)

    def chord_track(self, codes: Sequence[int]) -> np.ndarray:
        idx = (np.arange(self.n_steps) // self.steps_per_chord) % len(codes)
        return np.asarray(codes, dtype=np.int64)[idx]

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` contexts: keys (n,), chord tracks and next-chord tracks (n, n_steps)."""
        keys = self.keys[rng.integers(0, len(self.keys), size=n)]
        prog = (rng.random(n) * self.n_prog[keys]).astype(np.int64)
        return keys, self.tracks[keys, prog], self.next_tracks[keys, prog]

    def from_options(self, options: dict, rng: np.random.Generator, n: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        check_reset_options(options, ("key", "progression"))
        keys, tracks, next_tracks = self.draw(rng, n)
        if options.get("key") is not None:
            keys = np.full(n, parse_key(options["key"]), dtype=np.int64)
            if options.get("progression") is None:
                bank = self.banks["major"]
                # one progression is passed as itself: a bank of one string progression
                # would otherwise read as a single progression of one (unknown) numeral
                own = bank[0] if len(bank) == 1 else bank
                sub = ContextSampler(int(keys[0]), None if self._default_bank() else own,
                                     self.n_steps, self.steps_per_chord)
                _, tracks, next_tracks = sub.draw(rng, n)
        if options.get("progression") is not None:
            tracks = np.stack([self.chord_track(resolve_progression(options["progression"], int(k))) for k in keys])
            next_tracks = next_chord_track(tracks)
        return keys, tracks, next_tracks

    def _default_bank(self) -> bool:
        return self.banks["major"] == [list(p) for p in COMMON_PROGRESSIONS["major"]]


def _is_progression_list(p: Any) -> bool:
    return isinstance(p, (list, tuple)) and len(p) > 0 and all(isinstance(x, (list, tuple)) for x in p)


# ------------------------------------------------------------------------------ observation
@njit(cache=True)
def observe_kernel(tokens, core, key, chords, next_chords, consts, history_len, out):  # pragma: no cover
    """Write the flat observation of composition b into ``out[b]`` (any content on entry).

    Layout: history (H x (V+1)) | pitch class (12) | position in bar (steps_per_bar) |
    note duration (1) | current chord, next chord (2 x CHORD_FEATURES) | key (24) | progress (1).
    Every entry reads a constant number of steps, so the cost does not grow with the
    episode's length.
    """
    n_q = 11
    chord_w = 12 + n_q + 1
    consts_n_steps = consts[K_N_STEPS]
    steps_per_bar = consts[K_STEPS_PER_BAR]
    vocab = consts[K_VOCAB]
    for b in range(tokens.shape[0]):
        out[b, :] = 0.0
        t = core[b, C_T]
        o = 0
        for i in range(history_len):
            s = t - history_len + i
            tok = tokens[b, s] if s >= 0 else vocab  # vocab = BEGIN padding
            out[b, o + i * (vocab + 1) + tok] = 1.0
        o += history_len * (vocab + 1)
        lp = core[b, C_LAST_PITCH]
        if lp >= 0:
            out[b, o + lp % 12] = 1.0
        o += 12
        out[b, o + t % steps_per_bar] = 1.0
        o += steps_per_bar
        dur = (t - core[b, C_EVENT_START]) / (2.0 * steps_per_bar) if t > 0 else 0.0
        out[b, o] = dur if dur < 1.0 else 1.0
        o += 1
        tc = t if t < consts_n_steps else consts_n_steps - 1
        for c_i in range(2):
            code = chords[b, tc] if c_i == 0 else next_chords[b, tc]
            if code == NO_CHORD:
                out[b, o + chord_w - 1] = 1.0
            else:
                out[b, o + CHORD_ROOT_T[code]] = 1.0
                out[b, o + 12 + CHORD_QUALITY_T[code]] = 1.0
            o += chord_w
        out[b, o + key[b]] = 1.0
        o += 24
        out[b, o] = t / consts_n_steps


@njit(cache=True)
def commit_observe_kernel(actions, active, tokens, core, pitch_of, key, chords, next_chords, consts, history_len,
                          out):  # pragma: no cover
    """:func:`~musicenv.core.commit_kernel` then :func:`observe_kernel`: one compiled call
    per environment step after the reward's."""
    commit_kernel(actions, active, tokens, core, pitch_of)
    observe_kernel(tokens, core, key, chords, next_chords, consts, history_len, out)


CHORD_ROOT_T = np.ascontiguousarray(CHORD_ROOT)
CHORD_QUALITY_T = np.ascontiguousarray(CHORD_QUALITY)


@njit(cache=True)
def next_chord_track(chords):  # pragma: no cover - compiled
    """``next[b, s]`` = the first chord after step s that differs from ``chords[b, s]``
    (NO_CHORD if the chord never changes again); ``chords`` has shape (B, T)."""
    nxt = np.full_like(chords, NO_CHORD)
    B, T = chords.shape
    for b in range(B):
        cur = NO_CHORD
        for s in range(T - 2, -1, -1):
            if chords[b, s + 1] != chords[b, s]:
                cur = chords[b, s + 1]
            nxt[b, s] = cur
    return nxt


#: Floor of the ``prior`` observation (log-probabilities, nats): below it a token is
#: impossible in all but name (e^-100), and a finite bound keeps the Box well formed.
PRIOR_OBS_MIN = -100.0


# ------------------------------------------------------------------------------ the core
class BatchedComposer:
    """B compositions, their reward and observation: the logic both front ends share."""

    def __init__(self, batch_size: int, *, reward: Any = "theory", key: Any = "random", progression: Any = None,
                 n_bars: int = 4, meter: Any = "4/4", steps_per_quarter: int = 4, min_pitch: int = 48,
                 max_pitch: int = 83, chords_per_bar: int = 1, tempo: float = 100.0, history_length: int = 8,
                 constraint: str | None = None, observe_prior: bool | str | os.PathLike = False) -> None:
        import rewards

        if not isinstance(n_bars, (int, np.integer)) or n_bars < 1:
            raise ValueError(f"n_bars must be a positive integer, got {n_bars!r}")
        if not isinstance(history_length, (int, np.integer)) or history_length < 1:
            raise ValueError(f"history_length must be a positive integer, got {history_length!r}")
        if constraint not in (None, "in_key"):
            raise ValueError(f"unknown constraint {constraint!r}; accepted: None, 'in_key'")
        if not (isinstance(tempo, (int, float)) and tempo > 0):
            raise ValueError(f"tempo must be a positive number of quarter notes per minute, got {tempo!r}")
        self.grid = TokenGrid(min_pitch, max_pitch, steps_per_quarter)
        self.meter = Meter.parse(meter)
        self.steps_per_bar = self.meter.steps_per_bar(steps_per_quarter)
        if not isinstance(chords_per_bar, (int, np.integer)) or chords_per_bar < 1 or self.steps_per_bar % chords_per_bar:
            raise ValueError(f"chords_per_bar={chords_per_bar!r} must be a positive divisor of the "
                             f"{self.steps_per_bar} steps of a {self.meter} bar")
        self.n_steps = int(n_bars) * self.steps_per_bar
        self.n_bars, self.tempo, self.history_length, self.constraint = int(n_bars), float(tempo), int(history_length), constraint
        self.sampler = ContextSampler(key, progression, self.n_steps, self.steps_per_bar // chords_per_bar)
        self.reward = rewards.make(reward)
        self.batch = CompositionBatch(batch_size, self.n_steps, self.grid, self.meter)
        self.reward.bind(self.batch)
        self.next_chords = np.full((batch_size, self.n_steps), NO_CHORD, dtype=np.int64)
        V = self.grid.vocab_size
        self.set_observation_layout({
            "history": (self.history_length, V + 1),
            "pitch_class": (12,),
            "position": (self.steps_per_bar,),
            "note_duration": (1,),
            "chords": (2, CHORD_FEATURES),
            "key": (N_KEYS,),
            "progress": (1,),
        })
        self.prior = None
        if observe_prior is not False:
            self._add_prior_observation(observe_prior)
        self.key_masks = np.ascontiguousarray(KEY_SCALE_MASK)
        b = self.batch
        # everything the compiled commit-and-observe step reads besides the actions, bound
        # once (the arrays are updated in place, never replaced)
        self._observe_args = (b.key, b.chords, self.next_chords, b.consts, self.history_length)

    def set_observation_layout(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Declare the Dict observation as named blocks of one flat float32 row, in order."""
        self.obs_shapes = dict(shapes)
        self.obs_slices = {}
        o = 0
        for name, shape in self.obs_shapes.items():
            size = int(np.prod(shape))
            self.obs_slices[name] = (o, o + size)
            o += size
        self.obs_size = o
        # (name, slice of the flat row, shape or None when the slice already has it):
        # how split_obs cuts a flat observation into the Dict's views
        self._obs_plan = [(name, slice(a, z), shape if len(shape) > 1 else None)
                          for (name, (a, z)), shape in zip(self.obs_slices.items(), self.obs_shapes.values())]

    def _add_prior_observation(self, checkpoint: bool | str | os.PathLike) -> None:
        """Append the ``prior`` block: log p(next token | tokens so far) under a frozen
        note-RNN (agents.note_rnn.PriorTracker), V entries after every other block, so
        the compiled observe kernels write the rest unchanged."""
        if checkpoint is True:
            checkpoint = "default"
        opts = dict(checkpoint) if isinstance(checkpoint, dict) else {"checkpoint": checkpoint}
        checkpoint, style = opts.pop("checkpoint", "default"), opts.pop("style", None)
        if opts or not isinstance(checkpoint, (str, os.PathLike)) or checkpoint == "":
            raise ValueError(f"observe_prior must be False, True, 'default', 'bach', 'small', a note-RNN checkpoint "
                             f"path or {{checkpoint: ..., style: bach|essen|oneills}}, got {checkpoint!r} {opts or ''}")
        from agents.note_rnn import PriorLogLikelihood, PriorTracker, prior_path

        # A prior_log_likelihood term of the same prior already tracks exactly this (its
        # step runs before the observation is written): share its tracker, one LSTM step.
        shared = next((term._tracker for _, term, _ in getattr(self.reward, "terms", ())
                       if isinstance(term, PriorLogLikelihood) and term.params["context"]
                       and (prior_path(term.params["checkpoint"]), term.params["style"]) == (prior_path(checkpoint), style)),
                      None)
        self.prior = shared if shared is not None else PriorTracker(self.batch, checkpoint, style=style)
        self._prior_owned = shared is None
        self.set_observation_layout({**self.obs_shapes, "prior": (self.grid.vocab_size,)})

    def _observe_prior(self, out: np.ndarray) -> None:
        a, z = self.obs_slices["prior"]
        np.maximum(self.prior.logp.numpy(), PRIOR_OBS_MIN, out=out[:, a:z])

    # -- spaces -----------------------------------------------------------------------
    def single_observation_space(self) -> spaces.Dict:
        return spaces.Dict({name: spaces.Box(PRIOR_OBS_MIN, 0.0, shape, dtype=np.float32) if name == "prior"
                            else spaces.Box(0.0, 1.0, shape, dtype=np.float32)
                            for name, shape in self.obs_shapes.items()})

    def single_action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.grid.vocab_size)

    # -- episode life cycle ---------------------------------------------------------------
    def reset(self, mask: np.ndarray, rng: np.random.Generator, options: dict | None) -> None:
        n = int(mask.sum())
        if options:
            keys, tracks, next_tracks = self.sampler.from_options(options, rng, n)
        else:
            keys, tracks, next_tracks = self.sampler.draw(rng, n)
        self.batch.reset(mask, keys, tracks)
        self.next_chords[mask] = next_tracks
        self.reward.reset(self.batch, mask)
        if self.prior is not None and self._prior_owned:
            self.prior.reset(self.batch, mask)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score, then commit ``actions`` where ``active`` (default all); returns
        (term values (B, n), reward (B,)), zero where inactive. Envs that map actions
        to tokens differently override :meth:`step_observe` only."""
        values, total, _ = self.step_observe(actions, active)
        return values, total

    def step_observe(self, actions: np.ndarray, active: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`step`, then :meth:`observe_flat`, in two compiled calls: returns (term
        values (B, n), reward (B,), flat observations (B, obs_size))."""
        b = self.batch
        if active is None:
            active = b.all_active
        values, total = self.reward.step(b, actions, active)
        if self.prior is not None and self._prior_owned:
            self.prior.advance(b, actions, active)
        out = np.empty((b.batch_size, self.obs_size), dtype=np.float32)
        commit_observe_kernel(actions, active, b.tokens, b.core, b.pitch_of, *self._observe_args, out)
        if self.prior is not None:
            self._observe_prior(out)
        return values, total, out

    def observe_flat(self) -> np.ndarray:
        b = self.batch
        out = np.empty((b.batch_size, self.obs_size), dtype=np.float32)
        observe_kernel(b.tokens, b.core, *self._observe_args, out)
        if self.prior is not None:
            self._observe_prior(out)
        return out

    def split_obs(self, flat: np.ndarray, index: int | None) -> dict[str, np.ndarray]:
        """Dict of views of flat observations: of composition ``index``, or of all (batched)."""
        obs = {}
        if index is None:
            n = flat.shape[0]
            for name, cols, shape in self._obs_plan:
                obs[name] = flat[:, cols] if shape is None else flat[:, cols].reshape((n, *shape))
            return obs
        row = flat[index]
        for name, cols, shape in self._obs_plan:
            obs[name] = row[cols] if shape is None else row[cols].reshape(shape)
        return obs

    def finished(self) -> np.ndarray:
        """(B,) bool: compositions whose episode is complete."""
        return self.batch.core[:, C_T] >= self.batch.core[:, C_END]

    def reset_info(self, index: int) -> dict[str, Any]:
        """The ``info`` a single env's ``reset`` returns for composition ``index``."""
        return {"key": Key.from_index(int(self.batch.key[index])).name}

    def render(self, index: int, mode: str):
        """Composition ``index`` as text (``"ansi"``) or a uint8 picture (``"rgb_array"``)."""
        from musicenv.render import render_ansi, render_rgb

        comp = self.composition(index)
        if mode == "ansi":
            return render_ansi(comp, n_steps=self.n_steps)
        return render_rgb(comp, n_steps=self.n_steps)

    def action_masks(self) -> np.ndarray:
        """(B, V) bool: actions allowed at the current step of each composition."""
        B, V = self.batch.batch_size, self.grid.vocab_size
        masks = np.ones((B, V), dtype=bool)
        masks[self.batch.core[:, C_T] == 0, HOLD] = False
        if self.constraint == "in_key":
            pcs = self.batch.pitch_of[2:] % 12
            masks[:, 2:] = self.key_masks[self.batch.key][:, pcs]
        return masks

    def composition(self, index: int) -> Composition:
        b = self.batch
        t = int(b.core[index, C_T])
        return Composition(b.tokens[index, :t].copy(), Key.from_index(int(b.key[index])), self.meter,
                           b.chords[index].copy(), self.grid, self.tempo,
                           title=f"musicenv: {Key.from_index(int(b.key[index])).name}, {self.meter}")

    def check_actions(self, actions: Any, n: int) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.shape != (n,) or arr.dtype.kind not in "iub":  # signed, unsigned integers or bool
            if arr.shape == (n,) and np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ActionError(f"expected {n} integer token(s), got {actions!r}; accepted: integers in "
                                  f"0..{self.grid.vocab_size - 1} (0 REST, 1 HOLD, 2.. NOTE_ON)")
        arr = arr.astype(np.int64, copy=False)
        V = self.grid.vocab_size
        if arr.min(initial=0) < 0 or arr.max(initial=0) >= V:
            raise ActionError(f"action {arr.tolist() if n > 1 else int(arr[0])} outside the action space; accepted: "
                              f"integers in 0..{V - 1} (0 REST, 1 HOLD, 2..{V - 1} NOTE_ON "
                              f"{self.grid.min_pitch}..{self.grid.max_pitch})")
        return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------ front ends
class SingleComposerEnv(gym.Env):
    """The batched core at batch size 1 behind the ``gymnasium.Env`` API (see the
    concrete envs' docstrings for the manual)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    #: The batched core class; an environment subclass names its own.
    core_class: type[BatchedComposer] = BatchedComposer

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; accepted: {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self._kwargs = kwargs
        self.core = self.core_class(1, **kwargs)
        self.observation_space = self.core.single_observation_space()
        self.action_space = self.core.single_action_space()
        self._mask = np.ones(1, dtype=bool)
        self._action = np.zeros(1, dtype=np.int64)
        self._done = True
        self.term_names = self.core.reward.names
        self._n_actions = int(self.action_space.n)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.core.reset(self._mask, self.np_random, options)
        self._done = False
        return self.core.split_obs(self.core.observe_flat(), 0), self.core.reset_info(0)

    def step(self, action):
        if self._done:
            raise RuntimeError("the episode is over (or reset() was never called); call reset() before step()")
        a = action.item() if isinstance(action, np.ndarray) and action.shape in ((), (1,)) else action
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < self._n_actions:
            self.core.check_actions([a] if not isinstance(a, (list, tuple)) else a, 1)  # raises with details
            raise ActionError(f"action {action!r} is not an integer token in 0..{self._n_actions - 1}")
        self._action[0] = a
        core = self.core
        values, total, flat = core.step_observe(self._action)
        terminated = bool(core.batch.core[0, C_T] >= core.batch.core[0, C_END])
        self._done = terminated
        return (core.split_obs(flat, 0), float(total[0]), terminated, False,
                {"reward_terms": dict(zip(self.term_names, values[0].tolist()))})

    def action_masks(self) -> np.ndarray:
        """Boolean mask over actions, for sb3-contrib's MaskablePPO."""
        return self.core.action_masks()[0]

    @property
    def composition(self) -> Composition:
        """The composition written so far (tokens, key, meter, chord track)."""
        return self.core.composition(0)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        return self.core.render(0, self.render_mode)


class VectorComposerEnv(gym.vector.VectorEnv):
    """The batched core at batch size ``num_envs`` with next-step autoreset: the step
    after an episode ends resets that sub-env (its action is ignored, its reward is 0)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}
    core_class: type[BatchedComposer] = BatchedComposer

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, max_episode_steps: int | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; accepted: {self.metadata['render_modes']} or None")
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.core = self.core_class(self.num_envs, **kwargs)
        self.single_observation_space = self.core.single_observation_space()
        self.single_action_space = self.core.single_action_space()
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.term_names = self.core.reward.names
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._all = np.ones(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.core.reset(self._all, self.np_random, options)
        self._needs_reset[:] = False
        return self.core.split_obs(self.core.observe_flat(), None), {}

    def step(self, actions):
        actions = self.core.check_actions(actions, self.num_envs)
        resetting = self._needs_reset
        if resetting.any():
            # sub-envs whose episode ended last step start anew instead of acting
            self.core.reset(resetting, self.np_random, None)
            values, total, flat = self.core.step_observe(actions, ~resetting)
        else:
            values, total, flat = self.core.step_observe(actions)
        terminated = self.core.finished()
        self._needs_reset = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        # values is fresh every step, so each term's column can be handed out as a view
        info = {"reward_terms": dict(zip(self.term_names, values.T))}
        return self.core.split_obs(flat, None), total, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """(num_envs, n_actions) boolean masks."""
        return self.core.action_masks()

    def composition(self, index: int) -> Composition:
        return self.core.composition(index)

    def render(self):
        if self.render_mode is None:
            return None
        return [self.core.render(i, self.render_mode) for i in range(self.num_envs)]
