"""The files of a training run directory: their names, the run state (``run.json``),
standard JSON, the checkpoint listing and the errors of a run that cannot be used.

Shared by training (:mod:`agents.train`), checkpoints (:mod:`agents.callbacks`) and
agent files (:mod:`agents.agent_io`); imports no torch and no SB3.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from musicenv.files import write_text as _write_text

__all__ = ["AGENT_FILE", "CHECKPOINT_DIR", "CONFIG_FILE", "CURVE_FILE", "FINAL_METRICS_FILE", "MODEL_FILE",
           "RUN_FILE", "TENSORBOARD_DIR", "VERSIONS_FILE", "RunStateError", "StaleRunError", "checkpoints",
           "agent_file", "json_safe", "latest_checkpoint", "now", "package_versions", "read_json", "update_run_state",
           "write_json"]

CONFIG_FILE, RUN_FILE, VERSIONS_FILE = "config.yml", "run.json", "versions.json"
AGENT_FILE = "agent.pt"
MODEL_FILE, FINAL_METRICS_FILE, CURVE_FILE = "model.zip", "final_metrics.json", "learning_curve.csv"
CHECKPOINT_DIR, TENSORBOARD_DIR = "checkpoints", "tensorboard"


class RunStateError(ValueError):
    """A run directory cannot be used as asked (missing files, already finished, ...)."""


class StaleRunError(RunStateError):
    """A finished run was made with another config than the one asked for."""



def package_versions() -> dict[str, str]:
    """Versions of everything a run's numbers depend on."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy", "numba", "musicenv"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    import musicenv

    out["musicenv"] = musicenv.__version__
    return out


def json_safe(data: Any) -> Any:
    """NaN (an undefined statistic) becomes null, so the file is standard JSON."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {str(k): json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as standard JSON (NaN -> null), atomically."""
    _write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a run directory; :class:`RunStateError` if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunStateError(f"cannot read {str(path)!r}: not a JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise RunStateError(f"cannot read {str(path)!r}: expected a JSON object, got {type(data).__name__}")
    return data



def update_run_state(run_dir: Path, **changes: Any) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    state = read_json(path) if path.exists() else {}
    state.update(changes)
    write_json(path, state)
    return state



def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")



# ------------------------------------------------------------------------------- resume
def checkpoints(run_dir: str | os.PathLike, *, sb3_zip: bool = False) -> list[tuple[int, Path, Path | None]]:
    """``(timesteps, agent file, replay buffer or None)`` of every checkpoint, newest
    first; with ``sb3_zip``, those in SB3's pickle format that older musicenv versions
    wrote (``model_<steps>_steps.zip``, ``replay_buffer_<steps>_steps.pkl``)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    prefix, suffix, buffer_suffix = ("model_", "_steps.zip", ".pkl") if sb3_zip else ("agent_", "_steps.pt", ".npz")
    found = []
    for p in ckpt_dir.glob(f"{prefix}*{suffix}"):
        steps = p.name[len(prefix):-len(suffix)]
        if steps.isdigit():
            buffer = ckpt_dir / f"replay_buffer_{steps}_steps{buffer_suffix}"
            found.append((int(steps), p, buffer if buffer.is_file() else None))
    return sorted(found, key=lambda c: c[0], reverse=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, Path | None] | None:
    """``(agent file, replay buffer or None)`` of the newest checkpoint, or None."""
    found = checkpoints(run_dir)
    return (found[0][1], found[0][2]) if found else None


def agent_file(run_dir: str | os.PathLike) -> Path | None:
    """The agent file a run is played or continued from: ``agent.pt`` once trained, else
    its newest checkpoint's; None if it has neither."""
    run_dir = Path(run_dir)
    if (run_dir / AGENT_FILE).is_file():
        return run_dir / AGENT_FILE
    ckpt = latest_checkpoint(run_dir)
    return ckpt[0] if ckpt is not None else None


def sb3_zip_checkpoints(run_dir: Path) -> list[tuple[int, Path, Path | None]]:
    return checkpoints(run_dir, sb3_zip=True)


def unsafe_hint(run_dir: Path) -> str:
    zips = [p.name for p in (run_dir / MODEL_FILE, *(c[1] for c in sb3_zip_checkpoints(run_dir))) if p.is_file()]
    if not zips:
        return ""
    return (f"; it holds only SB3 .zip files ({', '.join(zips[:3])}), as older musicenv versions wrote. They are "
            "pickles and can run code when loaded: if you trust whoever wrote this run, pass --unsafe-load-sb3-zip "
            "(compose: the source run-unsafe-sb3-zip:RUN_DIR)")


def process_alive(host: Any, pid: Any) -> bool:
    """Whether process ``pid`` runs on this machine (a run marked running may have been killed)."""
    if host != platform.node() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

