"""The reward protocol: terms, built-in (numba) terms and the weighted composite.

A reward term scores the token placed at step t for every composition of a
:class:`~musicenv.core.CompositionBatch` and returns a float array of shape (B,).
It is called *before* the token is committed, so ``batch.tokens[b, :t]`` is the
history and ``actions[b]`` the new token; a term that needs memory keeps it per
composition and updates it in :meth:`RewardTerm.step` (which therefore both scores
and absorbs the token). A term may add a terminal score at the last step
(``t == n_steps - 1``).

Two kinds of terms share this protocol:

* :class:`RewardTerm` subclasses written in plain Python/numpy by users: override
  :meth:`~RewardTerm.bind`, :meth:`~RewardTerm.reset` and :meth:`~RewardTerm.step`.
* :class:`KernelTerm` subclasses, the built-in catalogue: each is a small numba
  function that scores one composition; :class:`CompositeReward` runs all of its
  kernel terms over the whole batch in a single compiled call
  (:mod:`rewards.kernels`), which is what keeps the environment fast at batch
  size 1 and 1024 alike.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

__all__ = ["RewardTerm", "KernelTerm", "CompositeReward", "RewardSpecError"]


class RewardSpecError(ValueError):
    """A reward spec (name, weight, keyword argument or YAML file) is invalid."""


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


class RewardTerm:
    """Base class of every reward term.

    Subclasses set ``name`` (via :func:`rewards.register`) and declare their
    keyword parameters with defaults in ``PARAMS``; ``self.params`` holds the
    resolved values. Terms must be picklable and deterministic.
    """

    name: ClassVar[str] = ""
    PARAMS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.PARAMS))
        if unknown:
            accepted = ", ".join(f"{k}={v!r}" for k, v in self.PARAMS.items()) or "none"
            raise RewardSpecError(
                f"reward term {self.name or type(self).__name__!r} got unknown keyword argument(s) "
                f"{unknown}; accepted: {accepted}"
            )
        self.params: dict[str, Any] = {**self.PARAMS, **kwargs}
        for k, v in self.params.items():
            default = self.PARAMS[k]
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                    raise RewardSpecError(
                        f"reward term {self.name!r}: {k} must be a number, got {v!r}"
                    )
                if not math.isfinite(float(v)):
                    raise RewardSpecError(f"reward term {self.name!r}: {k} must be finite, got {v!r}")
        self.validate()

    def validate(self) -> None:
        """Check parameter values; raise :class:`RewardSpecError` if they make no sense."""

    @classmethod
    def summary(cls) -> str:
        return _summary(cls)

    def bind(self, batch) -> None:
        """Allocate per-composition state for ``batch`` (called once per batch)."""

    def reset(self, batch, mask: np.ndarray) -> None:
        """Clear the state of compositions where ``mask`` is true (new episodes)."""

    def step(self, batch, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Score ``actions`` (shape (B,)) placed at step ``batch.t`` and absorb them;
        return shape (B,). Compositions where ``active[b]`` is false (finished, about to
        be reset) must be left alone; their value is ignored."""
        raise NotImplementedError

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if v != self.PARAMS[k]}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params == other.params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.params.items()))))


class KernelTerm(RewardTerm):
    """A built-in term computed by a numba function inside :mod:`rewards.kernels`.

    ``kernel`` names the term's ``@njit(cache=True)`` function ``<kernel>_kernel``,
    defined in the same ``rewards`` module as the class; the fused dispatch
    (:mod:`rewards.kernel_dispatch`) is generated from the registered classes by
    ``python -m rewards.kernels --write``. The function gets the parameters in
    ``PARAMS`` order as floats, a float64 state row of ``len(FSTATE_INIT)`` (reset to
    those values) and an int64 state row of :meth:`istate_size` entries (reset to
    ``ISTATE_FILL``).
    """

    kernel: ClassVar[str] = ""
    FSTATE_INIT: ClassVar[tuple[float, ...]] = ()
    ISTATE_FILL: ClassVar[int] = 0

    def istate_size(self, n_steps: int) -> int:
        return 0

    def param_vector(self) -> np.ndarray:
        return np.array([float(v) for v in self.params.values()], dtype=np.float64)

    def step(self, batch, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        # A lone kernel term runs through a one-term composite (one implementation).
        if getattr(self, "_solo_batch", None) is not batch:
            self._solo = CompositeReward([(self.name, self, 1.0)])
            self._solo.bind(batch)
            self._solo_batch = batch
        return self._solo.step(batch, actions, active)[0][:, 0]

    def bind(self, batch) -> None:
        self._solo_batch = None

    def reset(self, batch, mask: np.ndarray) -> None:
        if getattr(self, "_solo_batch", None) is batch:
            self._solo.reset(batch, mask)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_solo", None)
        state.pop("_solo_batch", None)
        return state


class CompositeReward:
    """A weighted sum of named reward terms.

    ``step`` returns ``(values, total)``: ``values[b, j]`` is term j's weighted
    contribution (weight x raw score) and ``total[b]`` their sum, the reward.
    """

    def __init__(self, terms: list[tuple[str, RewardTerm, float]]) -> None:
        if not terms:
            raise RewardSpecError("a reward needs at least one term; see rewards.available()")
        names = [n for n, _, _ in terms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RewardSpecError(f"reward term(s) {dup} given more than once")
        for n, _, w in terms:
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(float(w)):
                raise RewardSpecError(f"weight of reward term {n!r} must be a finite number, got {w!r}")
        self.terms = [(n, t, float(w)) for n, t, w in terms]
        self.names: tuple[str, ...] = tuple(names)
        self.weights = np.array([w for _, _, w in self.terms], dtype=np.float64)
        self._batch = None

    # -- binding -----------------------------------------------------------------------
    def bind(self, batch) -> None:
        from rewards import kernels

        self._batch = batch
        self._kernel_cols = np.array([j for j, (_, t, _) in enumerate(self.terms) if isinstance(t, KernelTerm)],
                                     dtype=np.int64)
        self._python_cols = [j for j, (_, t, _) in enumerate(self.terms) if not isinstance(t, KernelTerm)]
        kterms = [self.terms[j][1] for j in self._kernel_cols]
        self._kernel = kernels.KernelBatch(kterms, batch, self.weights[self._kernel_cols], self._kernel_cols)
        self._numpy_total = len(self.terms) > kernels.MAX_ROW_SUM  # beyond what the kernel's sum mimics
        for j in self._python_cols:
            self.terms[j][1].bind(batch)

    def reset(self, batch, mask: np.ndarray) -> None:
        if batch is not self._batch:
            self.bind(batch)
        self._kernel.reset(mask)
        for j in self._python_cols:
            self.terms[j][1].reset(batch, mask)

    def step(self, batch, actions: np.ndarray, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score and absorb ``actions`` where ``active`` (default all); returns fresh
        ``(values (B, n_terms), total (B,))`` with zeros for inactive compositions."""
        if active is None:
            active = batch.all_active
        if batch is not self._batch:
            raise RuntimeError("CompositeReward.step called on a batch it was not bound/reset to")
        B = batch.batch_size
        values = np.empty((B, len(self.terms)), dtype=np.float64)
        total = np.empty(B, dtype=np.float64)
        for j in self._python_cols:
            name, term, w = self.terms[j]
            raw = np.asarray(term.step(batch, actions, active), dtype=np.float64)
            if raw.shape != (B,):
                raise ValueError(f"reward term {name!r} returned shape {raw.shape}, expected ({B},)")
            values[:, j] = np.where(active, w * raw, 0.0)
        # the compiled step scores the built-in terms and sums every row into total
        self._kernel.step(actions, active, values, total)
        if self._numpy_total:
            total = values.sum(axis=1)
        return values, total

    def __repr__(self) -> str:
        inner = ", ".join(f"{n!r}: {w:g}" for n, _, w in self.terms)
        return f"CompositeReward({{{inner}}})"
