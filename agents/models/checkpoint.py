"""The checkpoint envelope shared by the shipped models (note-RNN prior, GAN).

A checkpoint is ``torch.save`` of a plain dict: ``format`` (a name such as
``"musicenv.note_rnn"``), ``format_version``, ``metadata`` (a JSON string) and
``state_dict`` (tensors only), plus model-specific entries of tensors. It is read back
with ``torch.load(weights_only=True)``, so loading never runs pickled code. Each model
module keeps its own ``CheckpointError`` and layout; the reading and writing, and the
error messages for a missing, corrupt, foreign or mismatched file, are here; and
:func:`load_frozen`, one frozen copy per checkpoint file shared by every learned reward
term and observation (a term evaluated in many envs loads its model once; an
overwritten file, told by its modification time and size, is reloaded).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from musicenv.encoding import TokenGrid

__all__ = ["write_checkpoint", "read_checkpoint", "grid_metadata", "grid_from_metadata", "check_grid",
           "load_weights", "load_frozen", "grid_difference",
           "config_from_dict"]

ENVELOPE_KEYS = ("format", "format_version", "metadata", "state_dict")


def grid_metadata(grid: TokenGrid) -> dict[str, int]:
    """The grid as checkpoint metadata (read back by :func:`grid_from_metadata`)."""
    return {"min_pitch": grid.min_pitch, "max_pitch": grid.max_pitch, "steps_per_quarter": grid.steps_per_quarter}


def write_checkpoint(path: str | os.PathLike, *, fmt: str, version: int, metadata: dict[str, Any],
                     model: nn.Module, **extra: Any) -> Path:
    """Write ``model``'s weights, ``metadata`` (JSON) and ``extra`` entries atomically
    (a temporary file, then a rename). Returns the path."""
    path = Path(path)
    payload = {
        "format": fmt,
        "format_version": version,
        "metadata": json.dumps(metadata, sort_keys=True),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        **extra,
    }
    from musicenv.files import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: torch.save(payload, tmp), what=f"{fmt} checkpoint")


def read_checkpoint(path: Path, *, fmt: str, version: int, what: str, error: type[Exception],
                    extra_keys: Sequence[str] = (), missing_hint: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload and the parsed metadata of the checkpoint at ``path``.

    Raises ``error`` (its message starting "``what`` checkpoint PATH") if the file does
    not exist (``missing_hint`` appended), is corrupt or not a torch checkpoint, is not a
    dict, lacks an envelope key or one of ``extra_keys``, is of another format or format
    version, or its metadata is not JSON.
    """
    if not path.is_file():
        raise error(f"{what} checkpoint {path} does not exist{missing_hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights only load failed" in str(e).lower() or "weights_only" in str(e):
            raise error(f"{what} checkpoint {path} holds pickled Python objects, not only tensors; musicenv never "
                        "loads such a file, as unpickling can run code (was it replaced or written by another "
                        "program?)") from e
        # torch raises many types for damaged files (UnpicklingError, RuntimeError from the zip
        # reader, EOFError, zipfile.BadZipFile...): all mean the same thing to the user.
        raise error(f"{what} checkpoint {path} is corrupt or not a torch checkpoint "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(payload, dict):
        raise error(f"{path} holds a {type(payload).__name__}, not a {what} checkpoint dict")
    missing = [k for k in (*ENVELOPE_KEYS, *extra_keys) if k not in payload]
    if missing:
        raise error(f"{what} checkpoint {path} lacks the key(s) {missing}")
    if payload["format"] != fmt:
        raise error(f"{path} is a {payload['format']!r} file, not a {fmt!r} checkpoint")
    if payload["format_version"] != version:
        raise error(f"{what} checkpoint {path} has format version {payload['format_version']!r}; "
                    f"this musicenv reads version {version}")
    try:
        meta = json.loads(payload["metadata"])
    except (TypeError, ValueError) as e:
        raise error(f"{what} checkpoint {path}: metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise error(f"{what} checkpoint {path}: metadata is not a JSON object")
    return payload, meta


def grid_from_metadata(meta: dict[str, Any]) -> TokenGrid:
    """The grid written by :func:`grid_metadata`; ``KeyError``/``TypeError``/``ValueError``
    if it is missing or malformed (the caller names the checkpoint)."""
    g = meta["grid"]
    return TokenGrid(int(g["min_pitch"]), int(g["max_pitch"]), int(g["steps_per_quarter"]))


def grid_difference(trained: TokenGrid, used: TokenGrid) -> str:
    """``"trained on pitches a..b at s steps per quarter (V tokens)"`` for both grids, to
    say why a model does not fit an environment or a request."""
    return (f"trained on pitches {trained.min_pitch}..{trained.max_pitch} at {trained.steps_per_quarter} steps per "
            f"quarter ({trained.vocab_size} tokens), not {used.min_pitch}..{used.max_pitch} at "
            f"{used.steps_per_quarter} ({used.vocab_size} tokens)")


def check_grid(ck_grid: TokenGrid, grid: TokenGrid | None, path: Path, what: str, error: type[Exception]) -> None:
    """Raise ``error`` if ``grid`` is given and differs from the checkpoint's."""
    if grid is not None and grid != ck_grid:
        raise error(f"{what} checkpoint {path} was {grid_difference(ck_grid, grid)}")


def config_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """``cls(**data)`` for a config dataclass read from a checkpoint; ``ValueError``
    naming the unknown keys and the accepted ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; accepted: {sorted(known)}")
    return cls(**data)


def load_weights(model: nn.Module, payload: dict[str, Any], path: Path, what: str, error: type[Exception]) -> None:
    """Load the payload's ``state_dict`` into ``model`` (strictly) and put it in eval mode."""
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"{what} checkpoint {path}: state_dict is not a dict of tensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise error(f"{what} checkpoint {path}: weights do not fit its config ({e})") from e
    model.eval()


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
