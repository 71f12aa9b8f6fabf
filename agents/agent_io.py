"""Trained agents as tensors and arrays: saving and loading SB3 models without pickle.

SB3's ``model.zip`` holds cloudpickled objects (schedules, spaces, the policy class),
so loading one can run any code its author put there. A musicenv run directory
therefore stores an agent as

* ``agent.pt``: the checkpoint envelope of :mod:`agents.models.checkpoint` — ``torch.save``
  of a dict of tensors, read back with ``torch.load(weights_only=True)`` — holding the
  policy's ``state_dict`` and, under ``modules``, the state of every other object SB3
  itself saves (``policy.optimizer``: the optimiser's moments, step counts and
  hyperparameters), plus JSON metadata: the algorithm class, the run's config hash and
  the counters training depends on (``num_timesteps``, ``_n_updates``,
  ``_episode_num``, DQN's ``_n_calls`` and ``exploration_rate``, the remaining
  progress that drives the learning-rate schedule);
* ``replay_buffer_<steps>_steps.npz`` (off-policy algorithms): the filled part of the
  replay buffer as plain arrays, read with ``np.load(allow_pickle=False)``;
* the resolved config (``config.yml``, read with ``yaml.safe_load``).

Loading rebuilds the algorithm from the config (:func:`agents.train.build_model`) and
then copies the tensors in (:func:`restore_agent`), checking every name, shape and
type; a file that is not such a checkpoint raises :class:`AgentFileError` saying what
is wrong, and nothing in it is ever executed.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.models.checkpoint import read_checkpoint, write_checkpoint
from agents.rundir import RunStateError
from musicenv.files import write_atomically

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["AGENT_FORMAT", "AGENT_VERSION", "AgentFileError", "save_agent", "read_agent", "restore_agent",
           "save_replay_buffer", "load_replay_buffer"]

AGENT_FORMAT = "musicenv.sb3_agent"
AGENT_VERSION = 1

#: Attributes of an SB3 algorithm that training reads back (saved as JSON numbers).
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_n_calls", "_current_progress_remaining",
            "exploration_rate")
#: Replay-buffer arrays (a dict of arrays for Dict observations; None when not kept).
BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class AgentFileError(RunStateError):
    """An agent or replay-buffer file is missing, corrupt, foreign or does not fit the run."""


def save_agent(model: BaseAlgorithm, path: str | os.PathLike, *, algo: str, config_hash: str | None = None) -> Path:
    """Write ``model``'s weights, optimiser state and counters to ``path``, atomically."""
    names, variables = model._get_torch_save_params()
    modules: dict[str, Any] = {}
    for name in names:
        if name == "policy":
            continue
        modules[name] = _get(model, name).state_dict()
    tensors = {name: _get(model, name).detach().cpu().clone() for name in variables}
    counters = {k: _number(getattr(model, k)) for k in COUNTERS if hasattr(model, k)}
    meta = {"algo": algo, "algo_class": type(model).__name__, "config_hash": config_hash, "counters": counters,
            "modules": sorted(modules), "variables": sorted(tensors)}
    return write_checkpoint(path, fmt=AGENT_FORMAT, version=AGENT_VERSION, metadata=meta, model=model.policy,
                            modules=modules, variables=tensors)


def _number(value: Any) -> int | float:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def read_agent(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload and metadata of an agent file; :class:`AgentFileError` if it is not one."""
    path = Path(path)
    payload, meta = read_checkpoint(path, fmt=AGENT_FORMAT, version=AGENT_VERSION, what="agent",
                                    error=AgentFileError, extra_keys=("modules", "variables"))
    for key in ("algo_class", "counters"):
        if key not in meta:
            raise AgentFileError(f"agent checkpoint {path}: metadata lacks {key!r}")
    if not isinstance(meta["counters"], dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in meta["counters"].values()):
        raise AgentFileError(f"agent checkpoint {path}: counters must be finite numbers, got {meta['counters']!r}")
    unknown = sorted(set(meta["counters"]) - set(COUNTERS))
    if unknown:
        raise AgentFileError(f"agent checkpoint {path}: unknown counters {unknown}; known: {', '.join(COUNTERS)}")
    if not isinstance(payload["modules"], dict) or not isinstance(payload["variables"], dict):
        raise AgentFileError(f"agent checkpoint {path}: 'modules' and 'variables' must be dicts")
    return payload, meta


def restore_agent(model: BaseAlgorithm, payload: dict[str, Any], meta: dict[str, Any], path: str | os.PathLike) -> None:
    """Copy an agent file's tensors and counters into ``model`` (built from the run's config)."""
    path = Path(path)
    if meta["algo_class"] != type(model).__name__:
        raise AgentFileError(f"agent checkpoint {path} holds a {meta['algo_class']} agent; the run's config "
                             f"builds a {type(model).__name__}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AgentFileError(f"agent checkpoint {path}: state_dict is not a dict of tensors")
    names, variables = model._get_torch_save_params()
    expected = sorted(n for n in names if n != "policy")
    if sorted(payload["modules"]) != expected or sorted(payload["variables"]) != sorted(variables):
        raise AgentFileError(f"agent checkpoint {path} holds modules {sorted(payload['modules'])} and variables "
                             f"{sorted(payload['variables'])}; a {type(model).__name__} has {expected} and "
                             f"{sorted(variables)}")
    try:
        model.policy.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise AgentFileError(f"agent checkpoint {path}: the weights do not fit the run's config ({e})") from e
    for name, sd in payload["modules"].items():
        try:
            _get(model, name).load_state_dict(sd)
        except Exception as e:  # optimisers raise ValueError, KeyError, TypeError for malformed state
            raise AgentFileError(f"agent checkpoint {path}: {name} state does not fit "
                                 f"({type(e).__name__}: {e})") from e
    for name, tensor in payload["variables"].items():
        target = _get(model, name)
        if not isinstance(tensor, torch.Tensor) or tensor.shape != target.shape:
            raise AgentFileError(f"agent checkpoint {path}: variable {name} is not a tensor of shape "
                                 f"{tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(tensor)
    for key, value in meta["counters"].items():
        current = getattr(model, key, None)
        setattr(model, key, int(value) if isinstance(current, int) and not isinstance(current, bool) else value)


# ------------------------------------------------------------------------ replay buffer
def save_replay_buffer(buffer: Any, path: str | os.PathLike) -> Path:
    """Write the filled part of an SB3 replay buffer as ``.npz`` arrays, atomically."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays: dict[str, np.ndarray] = {"pos": np.array(buffer.pos), "full": np.array(bool(buffer.full)),
                                     "buffer_size": np.array(buffer.buffer_size), "n_envs": np.array(buffer.n_envs)}
    for name in BUFFER_FIELDS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            arrays.update({f"{name}:{k}": v[:n] for k, v in value.items()})
        elif isinstance(value, np.ndarray):
            arrays[name] = value[:n]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: numpy would append .npz to a name
            np.savez(fh, **arrays)

    return write_atomically(path, write, what="replay buffer")


def load_replay_buffer(buffer: Any, path: str | os.PathLike) -> None:
    """Fill ``buffer`` (the fresh buffer of a model built from the run's config) from a
    file written by :func:`save_replay_buffer`; :class:`AgentFileError` if it does not fit."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise AgentFileError(f"replay buffer {path} is corrupt or not a .npz of plain arrays "
                             f"({type(e).__name__}: {e})") from e
    except Exception as e:  # zipfile.BadZipFile and friends
        raise AgentFileError(f"replay buffer {path} is corrupt ({type(e).__name__}: {e})") from e
    for key in ("pos", "full", "buffer_size", "n_envs"):
        if key not in arrays or arrays[key].shape != ():
            raise AgentFileError(f"replay buffer {path} lacks the scalar {key!r}")
    if int(arrays["buffer_size"]) != buffer.buffer_size or int(arrays["n_envs"]) != buffer.n_envs:
        raise AgentFileError(f"replay buffer {path} has buffer_size {int(arrays['buffer_size'])} and n_envs "
                             f"{int(arrays['n_envs'])}; the run's config has {buffer.buffer_size} and {buffer.n_envs}")
    pos, full = int(arrays["pos"]), bool(arrays["full"])
    if not 0 <= pos < buffer.buffer_size + (0 if full else 1):
        raise AgentFileError(f"replay buffer {path}: pos {pos} outside 0..{buffer.buffer_size - 1}")
    n = buffer.buffer_size if full else pos
    targets: dict[str, np.ndarray] = {}
    for name in BUFFER_FIELDS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            targets.update({f"{name}:{k}": v for k, v in value.items()})
        elif isinstance(value, np.ndarray):
            targets[name] = value
    extra = sorted(set(arrays) - set(targets) - {"pos", "full", "buffer_size", "n_envs"})
    missing = sorted(set(targets) - set(arrays))
    if extra or missing:
        raise AgentFileError(f"replay buffer {path}: arrays {missing} missing and {extra} unexpected for this run")
    for key, target in targets.items():
        src = arrays[key]
        if src.shape != (n, *target.shape[1:]) or src.dtype != target.dtype:
            raise AgentFileError(f"replay buffer {path}: {key} has shape {src.shape} and dtype {src.dtype}; "
                                 f"expected {(n, *target.shape[1:])} and {target.dtype}")
    for key, target in targets.items():
        target[:n] = arrays[key]
    buffer.pos, buffer.full = pos, full

