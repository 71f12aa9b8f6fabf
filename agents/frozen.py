"""Frozen copies of shipped models, shared by the learned reward terms.

A reward term evaluated in many environments (or many vector sub-envs) should not load
its model once per env: :func:`load_frozen` keeps one frozen (no-grad) instance per
checkpoint file, keyed by path, modification time and size so an overwritten file is
reloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["load_frozen"]

_CACHE: dict[tuple[str, str, int, int], Any] = {}


def load_frozen(load: Callable[[Path], Any], path: Path, error: type[Exception], what: str) -> Any:
    """``load(path)`` once per checkpoint file, with every parameter frozen.

    Raises ``error`` naming ``what`` and the path if the file does not exist.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise error(f"{what} checkpoint {path} does not exist") from e
    key = (getattr(load, "__qualname__", repr(load)), str(path), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        model = load(path)
        for p in model.parameters():
            p.requires_grad_(False)
        _CACHE[key] = model
    return _CACHE[key]
