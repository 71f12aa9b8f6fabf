"""Score finished compositions with any reward spec, without running an environment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["score", "score_steps", "score_steps_batch"]


def score_steps_batch(spec: Any, compositions: Sequence, chunk: int = 4096
                      ) -> Iterator[tuple[list[int], tuple[str, ...], np.ndarray]]:
    """Replay ``compositions`` through the reward ``spec``, many at once.

    Yields ``(indices, names, values)`` with ``values[b, t, j]`` the weighted value of term
    j at step t of composition ``indices[b]`` — exactly what an environment replaying its
    tokens reports in ``info["reward_terms"]``. Compositions of equal length, grid and
    meter run together in batches of up to ``chunk``; each episode's length is its
    composition's length, so terminal terms fire at its last step. Empty compositions
    are skipped.
    """
    from musicenv.core import CompositionBatch
    from rewards.registry import make

    _check_compositions(compositions)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(compositions):
        if c.n_steps:
            groups.setdefault((c.n_steps, c.grid, c.meter), []).append(i)
    for (n, grid, meter), members in groups.items():
        for start in range(0, len(members), chunk):
            idx = members[start:start + chunk]
            reward = make(spec)
            batch = CompositionBatch(len(idx), n, grid, meter)
            mask = np.ones(len(idx), dtype=bool)
            keys = np.array([compositions[i].key.index for i in idx], dtype=np.int64)
            chords = np.stack([compositions[i].chords[:n] for i in idx])
            tokens = np.stack([compositions[i].tokens for i in idx])
            batch.reset(mask, key=keys, chords=chords)
            reward.bind(batch)
            reward.reset(batch, mask)
            out = np.empty((len(idx), n, len(reward.names)))
            for t in range(n):
                action = np.ascontiguousarray(tokens[:, t])
                out[:, t], _ = reward.step(batch, action)
                batch.commit(action)
            yield idx, reward.names, out


_COMPOSITION_ATTRS = ("tokens", "n_steps", "grid", "meter", "key", "chords")


def _check_compositions(compositions: Any) -> None:
    """TypeError unless ``compositions`` is a sequence of musicenv compositions."""
    if isinstance(compositions, (str, bytes)) or not hasattr(compositions, "__iter__"):
        raise TypeError(f"expected a sequence of musicenv compositions, got {type(compositions).__name__} "
                        f"{compositions!r:.60}")
    for c in compositions:
        if not all(hasattr(c, a) for a in _COMPOSITION_ATTRS):
            raise TypeError(f"rewards scores musicenv compositions (musicenv.composition.Composition: an env's "
                            f"env.unwrapped.composition, or Composition(tokens, key, ...)), got "
                            f"{type(c).__name__} {c!r:.60}")


def score_steps(spec: Any, composition) -> tuple[tuple[str, ...], np.ndarray]:
    """Per-step weighted term values of one ``composition`` under ``spec``:
    ``(names, values)`` with ``values[t, j]`` the contribution of term j at step t."""
    _check_compositions([composition])
    for _, names, values in score_steps_batch(spec, [composition]):
        return names, values[0]
    from rewards.registry import make

    return make(spec).names, np.zeros((0, len(make(spec).names)))


def score(spec: Any, composition) -> dict[str, float]:
    """Per-term totals of ``composition`` under ``spec`` (weighted, as in
    ``info["reward_terms"]``), plus ``"total"``, their sum."""
    names, values = score_steps(spec, composition)
    totals = {name: float(v) for name, v in zip(names, values.sum(axis=0))}
    totals["total"] = float(values.sum())
    return totals
