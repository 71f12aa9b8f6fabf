"""Score a finished composition with any reward spec, without running an environment."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["score", "score_steps"]


def score_steps(spec: Any, composition) -> tuple[tuple[str, ...], np.ndarray]:
    """Per-step weighted term values of ``composition`` under ``spec``.

    Returns ``(names, values)`` with ``values[t, j]`` the contribution of term j at step
    t, exactly what an environment replaying the composition's tokens would report in
    ``info["reward_terms"]``. The episode length is the composition's length, so terminal
    terms fire at its last step.
    """
    from musicenv.core import CompositionBatch
    from rewards.registry import make

    reward = make(spec)
    n = composition.n_steps
    if n == 0:
        return reward.names, np.zeros((0, len(reward.names)))
    batch = CompositionBatch(1, n, composition.grid, composition.meter)
    mask = np.ones(1, dtype=bool)
    batch.reset(mask, key=np.array([composition.key.index]), chords=composition.chords[None, :n])
    reward.bind(batch)
    reward.reset(batch, mask)
    out = np.empty((n, len(reward.names)))
    action = np.empty(1, dtype=np.int64)
    for t, tok in enumerate(composition.tokens.tolist()):
        action[0] = tok
        values, _ = reward.step(batch, action)
        out[t] = values[0]
        batch.commit(action)
    return reward.names, out


def score(spec: Any, composition) -> dict[str, float]:
    """Per-term totals of ``composition`` under ``spec`` (weighted, as in
    ``info["reward_terms"]``), plus ``"total"``, their sum."""
    names, values = score_steps(spec, composition)
    totals = {name: float(v) for name, v in zip(names, values.sum(axis=0))}
    totals["total"] = float(values.sum())
    return totals
