"""The env core: a generic batched driver, the task hooks an environment fills in, and
the two front ends.

:class:`BatchedComposer` drives B compositions at once: it owns the
:class:`~musicenv.core.CompositionBatch`, binds the reward composite to it, lays out
the observation (named blocks of one flat float32 row, plus the optional ``prior``
block), checks actions, steps (score, commit, observe), and renders and exports.
What a task is -- its context, its observation and kernel, how an action becomes a
token, its masks, its composition -- it leaves to a few declared hooks that each
environment module fills in (MiniGrid's shape: ``MiniGridEnv._gen_grid`` overridden
by small env files). :class:`SingleComposerEnv` is a task at batch size 1 behind the
``gymnasium.Env`` API; :class:`VectorComposerEnv` runs it at batch size N behind
``gymnasium.vector.VectorEnv`` with next-step autoreset. Both call the same methods,
so they agree step for step.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numba import njit

from musicenv.composition import Composition
from musicenv.core import C_END, C_T, CompositionBatch
from musicenv.theory import (
    CHORD_FEATURES,
    CHORD_QUALITY,
    CHORD_ROOT,
    N_PITCH_CLASSES,
    NO_CHORD,
    Key,
)

__all__ = ["BatchedComposer", "EpisodeContext", "SingleComposerEnv", "VectorComposerEnv", "ActionError",
           "check_reset_options", "check_observation_mode", "write_chord_features", "write_steps_left",
           "PRIOR_OBS_MIN", "OBSERVATION_MODE_DOCS"]


class ActionError(ValueError):
    """An action is not a valid token for the environment."""


def check_reset_options(options: dict, accepted: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the keys of ``options`` outside ``accepted`` and the
    accepted ones (every env's ``reset(options=...)`` check)."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; accepted: {', '.join(map(repr, accepted))}")


@dataclass
class EpisodeContext:
    """What :meth:`BatchedComposer.draw_context` draws for the n compositions it resets,
    in the order of their indices.

    ``key`` (n,) key index 0..23 (``musicenv.theory``); ``chords`` (n, capacity) chord
    code per step; ``voice`` (n, capacity) MIDI pitch of a given voice per step (-2 rest,
    -1 none); ``length`` (n,) episode length in steps. ``None`` leaves ``chords`` and
    ``voice`` as they are (NO_CHORD and -1 unless a task writes them) and makes every
    episode ``capacity`` steps long.
    """

    key: np.ndarray
    chords: np.ndarray | None = None
    voice: np.ndarray | None = None
    length: np.ndarray | None = None


#: The observation modes, for error messages: name -> what it is.
OBSERVATION_MODE_DOCS = {
    "dict": "a Dict of float32 one-hot and scaled blocks (SB3's MultiInputPolicy)",
    "tokens": "a Dict of small integer fields (MultiDiscrete): token indices and context codes, for agents "
              "that embed them",
}


def check_observation_mode(observation: Any, accepted: tuple[str, ...], who: str) -> None:
    """Raise ``ValueError`` unless ``observation`` is one of ``accepted`` (saying what each is)."""
    if not isinstance(observation, str) or observation not in accepted:
        what = "; ".join(f"{m!r}: {OBSERVATION_MODE_DOCS.get(m, '')}" for m in accepted)
        raise ValueError(f"{who}: unknown observation mode {observation!r}; accepted: {what}")


# ------------------------------------------------------------------------------ observation helpers
CHORD_ROOT_T = np.ascontiguousarray(CHORD_ROOT)
CHORD_QUALITY_T = np.ascontiguousarray(CHORD_QUALITY)


@njit(cache=True)
def write_chord_features(out, b, o, code):  # pragma: no cover - compiled
    """Write chord ``code``'s encoding (``CHORD_FEATURES`` wide: root one-hot, quality
    one-hot, "no chord" flag) at ``out[b, o:]``; codes >= NO_CHORD read as no chord."""
    if code >= NO_CHORD:
        out[b, o + CHORD_FEATURES - 1] = 1.0
    else:
        out[b, o + CHORD_ROOT_T[code]] = 1.0
        out[b, o + N_PITCH_CLASSES + CHORD_QUALITY_T[code]] = 1.0


@njit(cache=True)
def write_steps_left(out, b, o, left, width):  # pragma: no cover - compiled
    """One-hot of the steps left including this one, 1 .. ``width`` (``width`` or more),
    at ``out[b, o:o + width]``; nothing when no step is left."""
    if left >= 1:
        out[b, o + (left if left < width else width) - 1] = 1.0


@njit(cache=True)
def _all_below(actions, n):  # pragma: no cover - compiled
    """Every entry of ``actions`` is in 0 .. n - 1."""
    for a in actions:
        if a < 0 or a >= n:
            return False
    return True


#: Floor of the ``prior`` observation (log-probabilities, nats): below it a token is
#: impossible in all but name (e^-100), and a finite bound keeps the Box well formed.
PRIOR_OBS_MIN = -100.0


# ------------------------------------------------------------------------------ the driver
class BatchedComposer(ABC):
    """B compositions of one task, their reward and observation: the driver both front
    ends share, and the hooks a task fills in.

    **Writing an environment** (see ``counterpoint.py`` and ``harmonization.py``):

    1. Subclass ``BatchedComposer``. In ``__init__(self, batch_size, *, reward=..., **your
       arguments)``: check your arguments (a specific error saying what is accepted), set
       what your hooks read (sizes, tables, per-composition arrays of ``batch_size`` rows),
       then call ``super().__init__(CompositionBatch(batch_size, capacity, grid, meter,
       ...), reward=reward, tempo=tempo)``. The batch's keywords say what a step, a bar, a
       beat and a token are for the reward terms (``token_pitch``, ``beat_level``,
       ``steps_per_bar``, ``steps_per_beat``, ``voice_above``); pass ``n_actions`` when the
       action space is not the token vocabulary. After it returns, ``self.batch`` and
       ``self.reward`` exist (bind the arrays your kernel reads once, here).
    2. Implement the three abstract hooks:

       * :meth:`draw_context` -- the key, chords, given voice and length of the episodes
         being reset, from ``rng`` and the reset options (list them in ``RESET_OPTIONS``);
       * :meth:`observation_layout` -- the observation's named blocks and their shapes;
       * :meth:`observe` -- write those blocks, flat and in order, for every composition
         (a numba kernel; widths from ``musicenv.theory`` constants).

    3. Override the optional hooks whose default does not fit: :meth:`action_tokens`
       (action -> token written; a task with a second stream, e.g. a chord track chosen
       by a second agent, writes it here too), :meth:`commit_observe` (commit and observe
       fused in one compiled call, for speed), :meth:`score` (a task with several reward
       composites, e.g. one per agent), :meth:`action_masks`, :meth:`describe_actions`,
       :meth:`composition`, :meth:`reset_info`, :meth:`render`.
    4. Front ends: ``class MyEnv(SingleComposerEnv)`` with ``core_class = MyComposer`` and
       the manual as its docstring, ``class MyVectorEnv(VectorComposerEnv)`` likewise;
       register both in ``musicenv/__init__.py``. The registry-wide tests
       (``tests/test_envs.py``) then cover it; record its trajectories
       (``tests/test_replay.py``).

    The driver's own attributes: ``batch``, ``reward``, ``grid``, ``meter``, ``tempo``,
    ``n_actions``, ``capacity`` (steps the batch holds), ``n_steps`` (composition 0's
    episode length), ``observation`` (the mode), ``obs_shapes``, ``obs_slices``,
    ``obs_size``, ``obs_dtype``, ``obs_nvecs`` (tokens mode), ``prior``.

    **Observation modes.** ``observation="dict"`` (the default) lays out the blocks of
    :meth:`observation_layout` as one flat float32 row; ``observation="tokens"`` (tasks
    listing it in ``OBSERVATION_MODES``) those of :meth:`token_observation_layout` as
    one flat int64 row of ``MultiDiscrete`` fields, written by :meth:`observe_tokens`.
    """

    #: Keys ``reset(options=...)`` accepts (checked before :meth:`draw_context`).
    RESET_OPTIONS: tuple[str, ...] = ()
    #: Observation modes the task implements: ``"dict"`` (one-hot blocks, :meth:`observe`)
    #: and, with :meth:`token_observation_layout` and :meth:`observe_tokens`, ``"tokens"``.
    OBSERVATION_MODES: tuple[str, ...] = ("dict",)

    def __init__(self, batch: CompositionBatch, *, reward: Any, tempo: float, n_actions: int | None = None,
                 observe_prior: bool | str | os.PathLike = False, observation: str = "dict") -> None:
        import rewards

        if not (isinstance(tempo, (int, float)) and tempo > 0):
            raise ValueError(f"tempo must be a positive number of quarter notes per minute, got {tempo!r}")
        check_observation_mode(observation, self.OBSERVATION_MODES, type(self).__name__)
        self.tempo = float(tempo)
        self.reward = rewards.make(reward)
        self.batch = batch
        self.grid, self.meter, self.capacity = batch.grid, batch.meter, batch.n_steps
        self.n_actions = batch.vocab_size if n_actions is None else int(n_actions)
        self.reward.bind(self.batch)
        self.observation = observation
        if observation == "tokens":
            nvecs = {name: np.asarray(nvec, dtype=np.int64) for name, nvec in self.token_observation_layout().items()}
            self.obs_nvecs = nvecs
            self.obs_dtype = np.dtype(np.int64)
            self.set_observation_layout({name: nvec.shape for name, nvec in nvecs.items()})
        else:
            self.obs_nvecs = {}
            self.obs_dtype = np.dtype(np.float32)
            self.set_observation_layout(self.observation_layout())
        self.prior = None
        if observe_prior is not False:
            self._add_prior_observation(observe_prior)

    # -- hooks a task implements ---------------------------------------------------------
    @abstractmethod
    def draw_context(self, index: np.ndarray, rng: np.random.Generator, options: dict) -> EpisodeContext:
        """The context of new episodes for compositions ``index`` (int array, ascending),
        drawn from ``rng`` (the only source of randomness) or fixed by ``options`` (keys
        within ``RESET_OPTIONS``, possibly empty). Store any per-composition extras (a
        cantus, a melody id) under ``index`` here; the driver then resets the batch, the
        reward and the prior."""

    @abstractmethod
    def observation_layout(self) -> dict[str, tuple[int, ...]]:
        """The Dict observation: block name -> shape, in the order :meth:`observe` writes
        them into one flat float32 row. Every block is a ``Box(0, 1)``."""

    @abstractmethod
    def observe(self, out: np.ndarray) -> None:
        """Write the observation of every composition into ``out`` (B, obs_size), float32,
        any content on entry: the blocks of :meth:`observation_layout`, flat, in order.
        It reads only the batch and the context, at each composition's step ``core[b, C_T]``."""

    # -- the compact observation (optional) ------------------------------------------------
    def token_observation_layout(self) -> dict[str, Any]:
        """The ``"tokens"`` observation: block name -> ``MultiDiscrete`` bounds (an int
        array whose shape is the block's shape; entry i takes values 0 .. nvec[i] - 1), in
        the order :meth:`observe_tokens` writes them into one flat int64 row. A task that
        implements it and :meth:`observe_tokens` lists ``"tokens"`` in ``OBSERVATION_MODES``."""
        raise NotImplementedError(f"{type(self).__name__} has no 'tokens' observation")

    def observe_tokens(self, out: np.ndarray) -> None:
        """Write the ``"tokens"`` observation of every composition into ``out`` (B,
        obs_size) int64, as :meth:`observe` does for the one-hot one."""
        raise NotImplementedError(f"{type(self).__name__} has no 'tokens' observation")

    def commit_observe_tokens(self, tokens: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        """:meth:`commit_observe` for the ``"tokens"`` observation."""
        self.batch.commit(tokens, active)
        self.observe_tokens(out)

    # -- hooks with defaults -------------------------------------------------------------
    def action_tokens(self, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        """The tokens (B,) int64 that ``actions`` (checked, int64) write at each
        composition's step. Default: the action is the token."""
        return actions

    def score(self, tokens: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reward of placing ``tokens`` where ``active``, before they are committed: (term
        values (B, n_terms), reward (B,)), zero where inactive. Default: the reward composite."""
        return self.reward.step(self.batch, tokens, active)

    def commit_observe(self, tokens: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        """Commit ``tokens`` where ``active``, then :meth:`observe` into ``out``. A task
        overrides it with one compiled call (``commit_kernel`` then its observe kernel)."""
        self.batch.commit(tokens, active)
        self.observe(out)

    def action_masks(self) -> np.ndarray:
        """(B, n_actions) bool: actions allowed at each composition's current step. Default: all."""
        return np.ones((self.batch.batch_size, self.n_actions), dtype=bool)

    def describe_actions(self) -> str:
        """What the actions mean, for error messages (e.g. "0 REST, 1 HOLD, ...")."""
        return f"{self.n_actions} choices"

    def reset_info(self, index: int) -> dict[str, Any]:
        """The ``info`` a single env's ``reset`` returns for composition ``index``."""
        return {"key": Key.from_index(int(self.batch.key[index])).name}

    def composition(self, index: int) -> Composition:
        """Composition ``index`` so far: the line's tokens with the key, meter and chord track."""
        b = self.batch
        t = int(b.core[index, C_T])
        return Composition(b.tokens[index, :t].copy(), Key.from_index(int(b.key[index])), self.meter,
                           b.chords[index].copy(), self.grid, self.tempo,
                           title=f"musicenv: {Key.from_index(int(b.key[index])).name}, {self.meter}")

    def render(self, index: int, mode: str):
        """Composition ``index`` as text (``"ansi"``) or a uint8 picture (``"rgb_array"``),
        over its planned length."""
        from musicenv.render import render_ansi, render_rgb

        comp = self.composition(index)
        n_steps = int(self.batch.core[index, C_END])
        if mode == "ansi":
            return render_ansi(comp, n_steps=n_steps)
        return render_rgb(comp, n_steps=n_steps)

    # -- observation layout --------------------------------------------------------------
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
        the compiled observe kernels write the rest unchanged. In the ``"tokens"`` mode
        the block is float32 and travels next to the int64 row (see :meth:`split_obs`)."""
        if checkpoint is True:
            checkpoint = "default"
        opts = dict(checkpoint) if isinstance(checkpoint, dict) else {"checkpoint": checkpoint}
        checkpoint, style = opts.pop("checkpoint", "default"), opts.pop("style", None)
        if opts or not isinstance(checkpoint, (str, os.PathLike)) or checkpoint == "":
            raise ValueError(f"observe_prior must be False, True, 'default', 'bach', 'small', a note-RNN checkpoint "
                             f"path or {{checkpoint: ..., style: bach|essen|oneills}}, got {checkpoint!r} {opts or ''}")
        from agents.models.note_rnn import prior_path
        from agents.models.prior import PriorLogLikelihood, PriorTracker

        # A prior_log_likelihood term of the same prior already tracks exactly this (its
        # step runs before the observation is written): share its tracker, one LSTM step.
        shared = next((term._tracker for _, term, _ in getattr(self.reward, "terms", ())
                       if isinstance(term, PriorLogLikelihood) and term.params["context"]
                       and (prior_path(term.params["checkpoint"]), term.params["style"]) == (prior_path(checkpoint), style)),
                      None)
        self.prior = shared if shared is not None else PriorTracker(self.batch, checkpoint, style=style)
        self._prior_owned = shared is None
        if self.observation == "dict":
            self.set_observation_layout({**self.obs_shapes, "prior": (self.grid.vocab_size,)})

    def _observe_prior(self, out: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Write the ``prior`` block into ``out`` (dict mode), or return ``(out, prior
        block)`` (tokens mode: the int64 row and a fresh float32 (B, V) array)."""
        if self.observation == "tokens":
            return out, np.maximum(self.prior.logp.numpy(), PRIOR_OBS_MIN).astype(np.float32, copy=False)
        a, z = self.obs_slices["prior"]
        np.maximum(self.prior.logp.numpy(), PRIOR_OBS_MIN, out=out[:, a:z])
        return out

    # -- spaces -----------------------------------------------------------------------
    def single_observation_space(self) -> spaces.Dict:
        prior = spaces.Box(PRIOR_OBS_MIN, 0.0, (self.grid.vocab_size,), dtype=np.float32)
        if self.observation == "tokens":
            blocks: dict[str, spaces.Space] = {name: spaces.MultiDiscrete(nvec) for name, nvec in self.obs_nvecs.items()}
            if self.prior is not None:
                blocks["prior"] = prior
            return spaces.Dict(blocks)
        return spaces.Dict({name: prior if name == "prior" else spaces.Box(0.0, 1.0, shape, dtype=np.float32)
                            for name, shape in self.obs_shapes.items()})

    def single_action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.n_actions)

    @property
    def n_steps(self) -> int:
        """Steps of composition 0's current episode (the single env's planned length)."""
        return int(self.batch.core[0, C_END])

    # -- episode life cycle ---------------------------------------------------------------
    def reset(self, mask: np.ndarray, rng: np.random.Generator, options: dict | None) -> None:
        """Start new episodes where ``mask`` (B,) is true, their context drawn from ``rng``
        or fixed by ``options``."""
        if options:
            check_reset_options(options, self.RESET_OPTIONS)
        ctx = self.draw_context(np.flatnonzero(mask), rng, options or {})
        self.batch.reset(mask, ctx.key, ctx.chords, ctx.voice, ctx.length)
        self.reward.reset(self.batch, mask)
        if self.prior is not None and self._prior_owned:
            self.prior.reset(self.batch, mask)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score, then commit ``actions`` where ``active`` (default all); returns
        (term values (B, n), reward (B,)), zero where inactive."""
        values, total, _ = self.step_observe(actions, active)
        return values, total

    def step_observe(self, actions: np.ndarray, active: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, Any]:
        """:meth:`step`, then the observation: returns (term values (B, n), reward (B,),
        flat observations (B, obs_size) of ``obs_dtype``; in the ``"tokens"`` mode with
        a prior, the pair (flat int64 observations, prior block)). :meth:`split_obs`
        turns the last into the Dict."""
        b = self.batch
        if active is None:
            active = b.all_active
        tokens = self.action_tokens(actions, active)
        values, total = self.score(tokens, active)
        if self.prior is not None and self._prior_owned:
            self.prior.advance(b, tokens, active)
        out = np.empty((b.batch_size, self.obs_size), dtype=self.obs_dtype)
        if self.observation == "tokens":
            self.commit_observe_tokens(tokens, active, out)
        else:
            self.commit_observe(tokens, active, out)
        if self.prior is not None:
            return values, total, self._observe_prior(out)
        return values, total, out

    def observe_flat(self) -> Any:
        """Flat observations (B, obs_size) of the current step (see :meth:`step_observe`)."""
        out = np.empty((self.batch.batch_size, self.obs_size), dtype=self.obs_dtype)
        if self.observation == "tokens":
            self.observe_tokens(out)
        else:
            self.observe(out)
        if self.prior is not None:
            return self._observe_prior(out)
        return out

    def split_obs(self, flat: Any, index: int | None) -> dict[str, np.ndarray]:
        """Dict of views of flat observations: of composition ``index``, or of all (batched)."""
        if isinstance(flat, tuple):  # tokens mode with a prior: (int64 row, float32 prior block)
            flat, prior = flat
            obs = self.split_obs(flat, index)
            obs["prior"] = prior if index is None else prior[index]
            return obs
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

    def check_actions(self, actions: Any, n: int) -> np.ndarray:
        """``actions`` as a contiguous (n,) int64 array, or :class:`ActionError` saying
        what is accepted. Integral floats are accepted, booleans are not."""
        if (type(actions) is np.ndarray and actions.dtype == np.int64 and actions.shape == (n,)
                and actions.flags.c_contiguous and _all_below(actions, self.n_actions)):
            return actions  # the common case, checked in one compiled pass
        arr = np.asarray(actions)
        if arr.shape == (n,) and np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        N = self.n_actions
        if arr.shape != (n,) or arr.dtype.kind not in "iu":
            raise ActionError(f"expected {n} integer action(s), got {actions!r}; accepted: integers in 0..{N - 1} "
                              f"({self.describe_actions()})")
        if arr.min(initial=0) < 0 or arr.max(initial=0) >= N:
            raise ActionError(f"action {arr.tolist() if n > 1 else int(arr[0])} outside the action space; accepted: "
                              f"integers in 0..{N - 1} ({self.describe_actions()})")
        return np.ascontiguousarray(arr.astype(np.int64, copy=False))


# ------------------------------------------------------------------------------ front ends
class SingleComposerEnv(gym.Env):
    """The batched core at batch size 1 behind the ``gymnasium.Env`` API (see the
    concrete envs' docstrings for the manual)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    #: The task (a :class:`BatchedComposer` subclass); an environment names its own.
    core_class: type[BatchedComposer]

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; accepted: {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self._kwargs = kwargs
        if not isinstance(getattr(self, "core_class", None), type):
            raise TypeError(f"{type(self).__name__} must set core_class to its task (a BatchedComposer subclass)")
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
    core_class: type[BatchedComposer]

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, max_episode_steps: int | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; accepted: {self.metadata['render_modes']} or None")
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        if not isinstance(getattr(self, "core_class", None), type):
            raise TypeError(f"{type(self).__name__} must set core_class to its task (a BatchedComposer subclass)")
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
