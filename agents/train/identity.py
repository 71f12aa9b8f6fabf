"""A run's identity: what it computes, hashed, so a finished run is reused only for the
same config (see "Reuse" in :mod:`agents.train`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.rundir import CONFIG_FILE, VERSIONS_FILE, json_safe, read_json
from agents.train.config import TrainConfig
from agents.train.errors import RunStateError, StaleRunError

__all__ = ["UNHASHED_FIELDS", "check_reusable", "config_hash", "config_identity", "identity_difference",
           "load_run_config", "run_identity"]

#: TrainConfig fields that do not change what a run computes (left out of its identity).
UNHASHED_FIELDS = ("out", "progress", "verbose", "n_threads", "device", "hyperparams_file", "checkpoint_freq")


def config_identity(cfg: TrainConfig) -> dict[str, Any]:
    """What a run computes: the resolved config without :data:`UNHASHED_FIELDS`, plus
    the musicenv version (see "Reuse" in the module doc)."""
    import musicenv

    data = {k: v for k, v in cfg.to_dict().items() if k not in UNHASHED_FIELDS}
    data["musicenv_version"] = musicenv.__version__
    return json_safe(data)


def config_hash(identity: Mapping[str, Any]) -> str:
    """A short hash of a :func:`config_identity`."""
    import hashlib

    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_identity(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The identity of the run in ``run_dir`` (its ``config.yml`` and the musicenv
    version in ``versions.json``)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    data = {k: v for k, v in cfg.to_dict().items() if k not in UNHASHED_FIELDS}
    versions = read_json(run_dir / VERSIONS_FILE) if (run_dir / VERSIONS_FILE).is_file() else {}
    data["musicenv_version"] = versions.get("musicenv", "unknown") if isinstance(versions, dict) else "unknown"
    return json_safe(data)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def identity_difference(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key: stored -> wanted`` for every (dotted) key where two identities differ."""
    a, b = _flatten(stored), _flatten(wanted)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            before, after = ("(unset)" if v is missing else repr(v) for v in (va, vb))
            out.append(f"{key}: {before} -> {after}")
    return out


def check_reusable(run_dir: str | os.PathLike, cfg: TrainConfig, what: str = "run") -> None:
    """Raise :class:`StaleRunError` unless the run in ``run_dir`` has ``cfg``'s identity
    (the message names the differing keys and the ``--force`` way out)."""
    diff = identity_difference(run_identity(run_dir), config_identity(cfg))
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise StaleRunError(f"{what} {str(run_dir)!r} was made with another config ({shown}); pass --force to "
                            "delete it and start over, or choose another output folder")



def load_run_config(run_dir: Path) -> TrainConfig:
    if not run_dir.is_dir():
        raise RunStateError(f"{str(run_dir)!r} is not a run directory (no such directory)")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunStateError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE})")
    return TrainConfig.from_yaml(run_dir / CONFIG_FILE)

