"""The ``preference`` reward term: a preference model fitted on a listening study.

Registered lazily (``rewards.LAZY_TERMS["preference"]``), so ``import rewards`` does not
import this module; it needs numpy and scipy only, no torch (unless the model uses the
prior's features).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rewards.base import RewardSpecError, RewardTerm

__all__ = ["PreferenceReward"]

_MODEL_CACHE: dict[tuple[str, int, int], object] = {}
_MODES = ("terminal", "shaped")


def _load_cached(path: Path):
    from musicenv.study.fit import PreferenceModel, PreferenceModelError

    try:
        st = path.stat()
    except OSError as e:
        raise RewardSpecError(f"preference: model file {str(path)!r} does not exist; fit one with "
                              "`musicenv study fit STUDY_DIR --out MODEL.json`") from e
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _MODEL_CACHE:
        try:
            _MODEL_CACHE[key] = PreferenceModel.load(path)
        except PreferenceModelError as e:
            raise RewardSpecError(f"preference: {e}") from e
    return _MODEL_CACHE[key]


class PreferenceReward(RewardTerm):
    """What listeners preferred: a Bradley–Terry ensemble fitted on a listening study.

    value(piece) = ensemble mean − k · ensemble spread − offset, in logits of preference
    (a piece 1 higher is preferred with probability 0.73; 0 is the study's average piece);
    see :mod:`musicenv.study.fit`. Range: unbounded in principle, in practice within a few
    units of 0 for pieces like the study's. ``mode="terminal"`` (default) pays it once, at
    the last step. ``mode="shaped"`` pays as it goes: with the value of the piece so far
    as a potential phi, taken every ``every`` steps (default 0: at the end of every bar),
    each step pays gamma · phi(next) − phi(now), and the last step adds the whole piece's
    value. With ``gamma=1`` (default) that is the change in value at each checkpoint and
    the episode total equals terminal mode's; this is what raised the hidden utility of
    simulated raters under PPO's gamma 0.8 (README, "Listening study"), where a value paid
    only at the end barely reaches the first steps. ``gamma`` < 1 is potential-based
    shaping in the strict sense (Ng et al. 1999): the return discounted by ``gamma`` equals
    terminal mode's, so the agent's optimum is unchanged, but for gamma 0.8 over 64 steps
    that optimum hardly depends on the value at all. Scoring the piece so far costs a
    feature computation per checkpoint. ``k`` (>= 0, default 1) sets the pessimism against
    over-optimising the model; ``scale`` multiplies the value.

    ``model``: path to a model JSON written by ``musicenv study fit``.
    Source: Bradley & Terry 1952; preference reward models (Christiano et al. 2017), with
    an ensemble's spread as an uncertainty penalty against reward over-optimisation.
    """

    PARAMS = {"model": "", "k": 1.0, "mode": "terminal", "scale": 1.0, "every": 0, "gamma": 1.0}

    def validate(self) -> None:
        m = self.params["model"]
        if not isinstance(m, (str, os.PathLike)) or not str(m):
            raise RewardSpecError("preference: give the model file, e.g. {'preference': {'weight': 1, "
                                  "'model': 'study/preference.json'}}")
        if self.params["k"] < 0:
            raise RewardSpecError(f"preference: k must be >= 0, got {self.params['k']!r}")
        every = self.params["every"]
        if every < 0 or int(every) != every:
            raise RewardSpecError(f"preference: every must be a whole number of steps >= 0 (0: a bar), got {every!r}")
        if not 0.0 < self.params["gamma"] <= 1.0:
            raise RewardSpecError(f"preference: gamma must be in (0, 1], got {self.params['gamma']!r}")
        if self.params["mode"] not in _MODES:
            raise RewardSpecError(f"preference: mode must be one of {', '.join(_MODES)}, got {self.params['mode']!r}")

    @property
    def model(self):
        if getattr(self, "_model", None) is None:
            self._model = _load_cached(Path(self.params["model"]).expanduser())
        return self._model

    def bind(self, batch) -> None:
        self.model  # noqa: B018 - fail at bind time on a bad file
        self._prev = np.zeros(batch.batch_size)

    def reset(self, batch, mask: np.ndarray) -> None:
        self._prev[mask] = 0.0

    def _values(self, batch, rows: np.ndarray, actions: np.ndarray, t: np.ndarray) -> np.ndarray:
        from musicenv.composition import Composition
        from musicenv.theory import Key

        comps = []
        for b in rows:
            tokens = np.append(batch.tokens[b, :t[b]], actions[b])
            comps.append(Composition(tokens, Key.from_index(int(batch.key[b])), batch.meter,
                                     batch.chords[b].copy(), batch.grid))
        return self.params["scale"] * self.model.score(comps, k=self.params["k"])

    def step(self, batch, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        from musicenv.core import C_END, C_T, K_STEPS_PER_BAR

        out = np.zeros(batch.batch_size)
        t = batch.core[:, C_T].copy()
        end = batch.core[:, C_END]
        last = active & (t + 1 >= end)
        if self.params["mode"] == "terminal":
            rows = np.flatnonzero(last)
            if rows.size:
                out[rows] = self._values(batch, rows, actions, t)
            return out
        # Potential-based shaping (Ng et al. 1999): F = gamma * phi(s') - phi(s), with phi the value
        # of the piece at the latest checkpoint, 0 before the first and after the end, plus the
        # value of the whole piece at the end. gamma = 1: plain differences, summing to that value.
        every = int(self.params["every"]) or int(batch.consts[K_STEPS_PER_BAR])
        gamma = float(self.params["gamma"])
        check = active & ((t + 1) % every == 0) & ~last
        rows = np.flatnonzero(check | last)
        if gamma < 1.0:
            out[active] = (gamma - 1.0) * self._prev[active]
        if rows.size:
            v = self._values(batch, rows, actions, t)
            out[rows] = np.where(last[rows], v, gamma * v) - self._prev[rows]
            self._prev[rows] = np.where(last[rows], 0.0, v)
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_model", None)
        return state
