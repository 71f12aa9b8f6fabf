"""The note-RNN prior at run time: its incremental state along episodes, the
``prior_log_likelihood`` reward term and the ``prior`` compose source.

:class:`PriorTracker` carries a frozen prior's state through a batch of episodes (one
recurrent step per env step, compiled for LSTMs); the env's ``observe_prior`` and
:class:`PriorLogLikelihood` (``"prior_log_likelihood"`` in :mod:`rewards`, imported by
name on first use) share it. :class:`PriorPolicy` samples the prior in an env;
:func:`prior_source` is ``musicenv compose prior``. The model is :mod:`agents.models.note_rnn`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch

from agents.models.checkpoint import grid_difference
from agents.models.note_rnn import CheckpointError, NoteRNN, load_prior
from agents.models.stepper import LSTMStepper
from musicenv.theory import (
    NO_CHORD,
    Meter,
)
from rewards.base import RewardSpecError, RewardTerm

__all__ = ["PriorTracker", "PriorLogLikelihood", "PriorPolicy", "prior_source"]


def _style_id(model: NoteRNN, style: str | None) -> int:
    """Style id of ``style`` for ``model`` (-1 for None); ValueError if the model has no such style."""
    if style is None:
        return -1
    styles = model.config.styles
    if "style" not in model.config.conditioning:
        raise ValueError(f"style={style!r}: this prior is not conditioned on a style "
                         "(use the 'default' prior, or style=None)")
    if style not in styles:
        raise ValueError(f"unknown style {style!r}; this prior knows: {', '.join(styles)}")
    return styles.index(style)


def _stepper(model: NoteRNN) -> LSTMStepper | None:
    """The compiled step of a frozen LSTM prior (built once per model), else None."""
    if model.config.arch != "lstm":
        return None
    stepper = getattr(model, "_compiled_step", None)
    if stepper is None:
        stepper = model._compiled_step = LSTMStepper(model)
    return stepper


class PriorTracker:
    """Incremental log p(next token | history) of a frozen prior for a batch of compositions.

    One recurrent step per env step for the whole batch, carrying each composition's
    state: :attr:`logp` (B, V) holds, for every composition, the prior's log-probabilities
    of the token about to be placed (the first after BEGIN right after :meth:`reset`).
    A conditioned prior (the ``default`` one) is fed the env's context for the step
    being predicted, read from the batch: ``key`` (``batch.key``), ``chord``
    (``batch.chords`` at that step), ``next_chord`` (the next different chord of the
    episode's progression), ``meter`` (``batch.meter``), ``position`` (step in the bar)
    and ``style`` (the ``style`` argument: ``"bach"``, ``"essen"``, ``"oneills"`` or
    None for no style). ``context=False`` feeds none of it (a bare token sequence;
    models with ``missing_context`` only). Serves the ``prior_log_likelihood`` reward
    term, the environments' ``observe_prior`` observation and ``compose prior``.

    LSTM priors step through :class:`LSTMStepper` (same numbers to ~1e-6, less
    per-operator overhead). ``checkpoint`` as for :func:`load_prior`. Raises
    :class:`CheckpointError` if it cannot be loaded and ``ValueError`` if the prior's
    grid or bar positions do not fit the batch's, or the style is unknown. Pickles
    without the model, which is reloaded from ``checkpoint``.
    """

    def __init__(self, batch, checkpoint: str | os.PathLike = "default", *, style: str | None = None,
                 context: bool = True) -> None:
        from musicenv.core import K_STEPS_PER_BAR

        self.checkpoint = checkpoint
        model = load_prior(checkpoint)
        self._step = _stepper(model)
        self.style, self.context = style, bool(context)
        self._style_id = _style_id(model, style)
        if not self.context and model.config.conditioning and not model.config.missing_context:
            raise ValueError(f"the prior {checkpoint!r} needs its context ({', '.join(model.config.conditioning)}); "
                             "context=False needs a prior trained with conditioning dropout")
        self._meter_id = Meter.SUPPORTED.index(str(batch.meter)) if str(batch.meter) in Meter.SUPPORTED else -1
        self._next = np.full((batch.batch_size, batch.n_steps), NO_CHORD, dtype=np.int64)
        # with the compiled step: each episode's context rows for every step, set at reset
        self._ctx = None
        if self._step is not None and model.config.conditioning and self.context:
            self._ctx = np.zeros((batch.batch_size, batch.n_steps, len(model.config.conditioning)), dtype=np.int64)

        if model.grid != batch.grid:
            raise ValueError(f"the prior was {grid_difference(model.grid, batch.grid)}, the environment's grid")
        self.model = model
        self._bar = int(batch.consts[K_STEPS_PER_BAR])
        if "position" in model.config.conditioning and self._bar > model.config.bar_positions:
            raise ValueError(f"the prior knows {model.config.bar_positions} positions "
                             f"per bar, the environment's bars have {self._bar} steps")
        B = batch.batch_size
        with torch.inference_mode():
            self._state = model.initial_state(B, capacity=batch.n_steps + 1)
            self.logp = torch.zeros(B, model.vocab_size)
            if not model.config.conditioning:
                # The state after BEGIN is the same for every episode: compute it once.
                self._begin_logp, self._begin_state = model.log_probs(
                    torch.tensor([model.begin]), model.initial_state(1, capacity=batch.n_steps + 1))

    def _cond(self, batch, rows: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray] | None:
        conditioning = self.model.config.conditioning
        if not conditioning or not self.context:
            return None
        t = np.minimum(t, batch.n_steps - 1)
        values = {"chord": lambda: batch.chords[rows, t], "key": lambda: batch.key[rows],
                  "position": lambda: t % self._bar, "next_chord": lambda: self._next[rows, t],
                  "meter": lambda: self._meter_id, "style": lambda: self._style_id}
        return {name: values[name]() for name in conditioning}

    def _log_probs(self, batch, tokens: np.ndarray, state: tuple, rows: np.ndarray, t: np.ndarray) -> tuple:
        """log p and new state for ``rows`` fed ``tokens``, predicting step ``t`` (per row)."""
        if self._ctx is not None:
            return self._step(tokens, state, rows=self._ctx[rows, np.minimum(t, batch.n_steps - 1)])
        cond = self._cond(batch, rows, t)
        if self._step is not None:
            return self._step(tokens, state, cond)
        return self.model.log_probs(torch.from_numpy(tokens), state, cond)

    def reset(self, batch, mask: np.ndarray) -> None:
        """Start the compositions where ``mask`` anew (state after BEGIN)."""
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return
        model = self.model
        idx = torch.from_numpy(rows)
        if "next_chord" in model.config.conditioning:
            from musicenv.melodies import next_chord_track

            for r in rows:
                self._next[r] = next_chord_track(batch.chords[r])
        if self._ctx is not None:  # the episode's context, all steps at once
            T = batch.n_steps
            steps = np.broadcast_to(np.arange(T), (rows.size, T))
            self._ctx[rows] = self._step.context_rows(self._cond(batch, rows[:, None], steps), (rows.size, T))
        with torch.inference_mode():
            if not model.config.conditioning:
                sub = tuple(s.expand(*[rows.size if d == model._batch_dim(i) else -1 for d in range(s.dim())])
                            for i, s in enumerate(self._begin_state))
                logp = self._begin_logp.expand(rows.size, -1)
            else:
                cap = batch.n_steps + 1
                logp, sub = self._log_probs(batch, np.full(rows.size, model.begin, dtype=np.int64),
                                            model.initial_state(rows.size, cap), rows,
                                            np.zeros(rows.size, dtype=np.int64))
            self._state = model.merge_state(self._state, idx, sub)
            self.logp = self.logp.index_copy(0, idx, logp)

    def advance(self, batch, actions: np.ndarray, active: np.ndarray) -> None:
        """Feed ``actions`` (B,) to the rows that are ``active`` and not at their episode's
        last step, *before* the batch commits them (``batch.t`` is the step being placed);
        other rows keep their state."""
        model = self.model
        acts = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))
        t = batch.t
        go_on = active & (t + 1 < batch.n_steps)
        n = int(go_on.sum())
        if n == 0:
            return
        with torch.inference_mode():
            if n == batch.batch_size:
                self.logp, self._state = self._log_probs(batch, acts.numpy(), self._state, np.arange(n), t + 1)
            else:
                rows = np.flatnonzero(go_on)
                idx = torch.from_numpy(rows)
                sub_state = model.select_state(self._state, idx)
                logp, sub = self._log_probs(batch, acts.numpy()[rows], sub_state, rows, t[rows] + 1)
                self._state = model.merge_state(self._state, idx, sub)
                self.logp = self.logp.index_copy(0, idx, logp)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["model"], state["_step"]  # frozen models are shared, not pickled
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.model = load_prior(self.checkpoint)
        self._step = _stepper(self.model)


class PriorLogLikelihood(RewardTerm):
    """Log-likelihood of each token under a frozen note-RNN prior (the RL Tuner's log p(a|s)).

    log p(a_t | a_0 .. a_{t-1}) under the prior, the episode's first token predicted
    after BEGIN, exactly as the prior was trained. Range (-inf, 0] in nats; -log(38) =
    -3.6 is what a uniform guess would get, held-out melodies average about -0.5 to -1
    per step (the figures per collection are in the README's prior section), and an
    unidiomatic token costs much more. With the ``rl_tuner`` preset (weight 1,
    music-theory rules x 2) this is the paper's r = log p(a|s) + r_MT / c with c = 0.5.

    Incremental and batched: one recurrent step per env step for the whole batch,
    carrying each composition's hidden state (reset per composition; rows that are not
    active are left as they are). The conditioned ``default`` prior is fed the episode's
    key, meter, position in the bar, current and next chord, and ``style``
    (:class:`PriorTracker`), so it rewards melodies that fit the env's context.

    Params: ``checkpoint``: ``"default"`` (the general conditioned prior,
    :data:`DEFAULT_PRIOR`), ``"bach"`` (the token-only Bach prior, :data:`BACH_PRIOR`),
    ``"small"`` (the 1 x 64 Bach prior, :data:`SMALL_PRIOR`) or a path to a checkpoint
    written by :meth:`NoteRNN.save`; its grid must be the env's. ``style``: ``None``
    (default: no style), or ``"bach"``, ``"essen"``, ``"oneills"`` to score toward
    that collection's style (KL control toward a style; ``default`` prior only).
    ``context``: feed the env's context (default true); false scores the bare tokens.
    Source: Jaques et al. 2017, "Sequence Tutor" / RL Tuner, eq. 3 (KL control).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"checkpoint": "default", "style": None, "context": True}

    def validate(self) -> None:
        ck = self.params["checkpoint"]
        if not isinstance(ck, (str, os.PathLike)) or ck == "":
            raise RewardSpecError(f"prior_log_likelihood: checkpoint must be 'default', 'bach', 'small' or a path, "
                                  f"got {ck!r}")
        style = self.params["style"]
        from musicenv.melodies import STYLES

        if style is not None and style not in STYLES:
            raise RewardSpecError(f"prior_log_likelihood: style must be one of {', '.join(STYLES)} or null, "
                                  f"got {style!r}")
        if not isinstance(self.params["context"], bool):
            raise RewardSpecError(f"prior_log_likelihood: context must be true or false, got {self.params['context']!r}")

    @property
    def model(self) -> NoteRNN:
        """The frozen prior (one shared copy per checkpoint file, see :func:`load_prior`)."""
        try:
            return load_prior(self.params["checkpoint"])
        except CheckpointError as e:
            raise RewardSpecError(f"prior_log_likelihood: {e}") from e

    def bind(self, batch) -> None:
        try:
            self._tracker = PriorTracker(batch, self.params["checkpoint"], style=self.params["style"],
                                         context=self.params["context"])
        except ValueError as e:  # CheckpointError included
            raise RewardSpecError(f"prior_log_likelihood: {e}") from e

    def reset(self, batch, mask: np.ndarray) -> None:
        self._tracker.reset(batch, mask)

    def step(self, batch, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        tracker = self._tracker
        values = tracker.logp.gather(1, torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))[:, None])
        tracker.advance(batch, actions, active)
        return values[:, 0].double().numpy()


# ---------------------------------------------------------------------------- compose source
class PriorPolicy:
    """Plays the prior in a composition env: each token sampled from the prior's
    ``p(next | tokens so far) ** (1 / temperature)``, token by token.

    Bound to the env's batched core (one-token-per-step envs such as
    MusicComposition-v0); the prior's state follows the episode through a
    :class:`PriorTracker` of batch size 1 and restarts whenever the env is at step 0.
    A conditioned prior (``checkpoint="default"``) reads the env's key, meter, chords and
    position, and ``style`` (``"bach"``, ``"essen"``, ``"oneills"`` or None).
    """

    def __init__(self, env, *, checkpoint: str | os.PathLike = "default", temperature: float = 1.0,
                 seed: int | None = None, style: str | None = None) -> None:
        core = getattr(env.unwrapped, "core", None)
        if core is None or not hasattr(core, "batch") or core.batch.batch_size != 1:
            raise ValueError("the prior plays single MusicComposition-style envs (one melody token per step)")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.core, self.temperature = core, float(temperature)
        self.tracker = PriorTracker(core.batch, checkpoint, style=style)
        self.rng = np.random.default_rng(seed)
        self._active = np.ones(1, dtype=bool)

    def probabilities(self) -> np.ndarray:
        """(V,) the distribution the next token is drawn from."""
        logp = self.tracker.logp[0].double().numpy() / self.temperature
        p = np.exp(logp - logp.max())
        return p / p.sum()

    def __call__(self, obs: Any = None) -> int:
        batch = self.core.batch
        if int(batch.t[0]) == 0:
            self.tracker.reset(batch, self._active)
        p = self.probabilities()
        action = int(self.rng.choice(p.size, p=p))
        self.tracker.advance(batch, np.array([action]), self._active)
        return action


def prior_source(env, *, argument: str | None, temperature: float, style: str | None = None,
                  prior: str | os.PathLike | None = None):
    """A prior (``prior``: default, bach, small or a path; default the general
    conditioned one) sampled at ``temperature`` in the env's key, meter and chords, and
    in ``style`` if given."""
    checkpoint = "default" if prior is None else prior
    try:
        PriorPolicy(env, temperature=temperature, checkpoint=checkpoint, style=style)  # fail now, not at piece 1
    except ValueError as e:
        raise ValueError(f"source prior: {e}") from e
    return lambda seed: PriorPolicy(env, temperature=temperature, seed=seed, checkpoint=checkpoint, style=style)

