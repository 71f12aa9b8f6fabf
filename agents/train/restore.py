"""Loading a run back: :func:`resume` an interrupted run, :func:`load_run` a run's agent.

Neither unpickles anything unless asked to (``unsafe_load_sb3_zip``); see
"Resuming" and "Run directory" in :mod:`agents.train`.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.rundir import (
    AGENT_FILE,
    MODEL_FILE,
    RUN_FILE,
    TENSORBOARD_DIR,
    agent_file,
    checkpoints,
    now,
    process_alive,
    read_json,
    sb3_zip_checkpoints,
    unsafe_hint,
    update_run_state,
)
from agents.train.algorithms import get_algorithm
from agents.train.config import TrainConfig, check_device, resolve_config
from agents.train.envs import make_vec_env
from agents.train.errors import RunStateError
from agents.train.identity import load_run_config
from agents.train.run import RunResult, build_model, init_policy, learn, load_agent, set_threads

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

__all__ = ["load_run", "resume"]


def _load_sb3_zip(cfg: TrainConfig, path: Path, venv: VecEnv | None, run_dir: Path, buffer: Path | None,
                  device: str) -> BaseAlgorithm:
    """UNSAFE: SB3's own loader (unpickles). Only behind ``unsafe_load_sb3_zip``."""
    kwargs: dict[str, Any] = {"device": device}
    if venv is not None:
        kwargs.update(env=venv, tensorboard_log=str(run_dir / TENSORBOARD_DIR), verbose=cfg.verbose)
    model = get_algorithm(cfg.algo).load_class().load(path, **kwargs)
    if buffer is not None and getattr(model, "replay_buffer", None) is not None:
        model.load_replay_buffer(buffer)
    return model


def resume(run_dir: str | os.PathLike, *, progress: bool | None = None,
           callbacks: Sequence[BaseCallback] = (), unsafe_load_sb3_zip: bool = False) -> RunResult:
    """Continue an interrupted run from its latest checkpoint (see module doc).

    A checkpoint that cannot be read (damaged, truncated, foreign) is skipped for the
    one before it, with a warning on stderr; its replay buffer too, if it has one.
    ``unsafe_load_sb3_zip`` lets a run of an older musicenv version, which has only
    SB3 ``.zip`` checkpoints, be resumed from them (they are pickles: trusted runs only).
    """
    from agents.agent_io import AgentFileError

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    cfg = resolve_config(cfg, read_hyperparams=False)
    cfg.out = str(run_dir)
    if progress is not None:
        cfg.progress = progress
    state = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).exists() else {}
    if not isinstance(state, dict):
        raise RunStateError(f"{str(run_dir / RUN_FILE)!r} is not a JSON object")
    if state.get("status") == "finished":
        raise RunStateError(f"{str(run_dir)!r} finished ({state.get('timesteps')} timesteps); nothing to resume. "
                            "Start a new run with --config to train longer.")
    if state.get("status") == "running" and process_alive(state.get("host"), state.get("pid")):
        raise RunStateError(f"{str(run_dir)!r} is still being trained by process {state['pid']} on this machine; "
                            "stop it first")
    spec = get_algorithm(cfg.algo)
    candidates = checkpoints(run_dir)
    if state.get("status") == "evaluating" and (run_dir / AGENT_FILE).is_file():
        candidates = [(-1, run_dir / AGENT_FILE, None), *candidates]  # trained; only the final evaluation is missing
    unsafe = False
    if not candidates and unsafe_load_sb3_zip:
        candidates, unsafe = sb3_zip_checkpoints(run_dir), True
        if state.get("status") == "evaluating" and (run_dir / MODEL_FILE).is_file():
            candidates = [(-1, run_dir / MODEL_FILE, None), *candidates]
    elif not candidates and unsafe_hint(run_dir):
        raise RunStateError(f"cannot resume {str(run_dir)!r} safely{unsafe_hint(run_dir)}")
    set_threads(cfg)
    resumes = list(state.get("resumes", []))
    k = len(resumes) + 1
    venv = make_vec_env(cfg, run_dir / f"train-resume{k}.monitor.csv")
    model, restored, skipped = None, {"checkpoint": None, "timesteps": 0}, []
    try:
        for _steps, path, buffer in candidates:
            try:
                if unsafe:
                    model = _load_sb3_zip(cfg, path, venv, run_dir, buffer if spec.off_policy else None, cfg.device)
                else:
                    model = load_agent(cfg, path, venv, run_dir, buffer if spec.off_policy else None)
            except AgentFileError as e:
                skipped.append(path.name)
                print(f"warning: {e}; falling back to the previous checkpoint", file=sys.stderr, flush=True)
                continue
            if spec.off_policy and buffer is None and path.name != AGENT_FILE:
                print(f"note: {path.name} has no saved replay buffer; training continues with an empty one",
                      file=sys.stderr, flush=True)
            model.set_random_seed(cfg.seed + cfg.n_envs * k)
            restored = {"checkpoint": path.name, "replay_buffer": buffer.name if buffer else None,
                        "timesteps": int(model.num_timesteps)}
            break
        if model is None:
            if skipped:
                print(f"warning: no readable checkpoint in {run_dir} ({', '.join(skipped)} skipped); "
                      "starting the run over", file=sys.stderr, flush=True)
            model = build_model(cfg, venv, run_dir)
            if cfg.init_from:
                init_policy(model, cfg)
    except BaseException:
        venv.close()
        raise
    if skipped:
        restored["skipped"] = skipped
    resumes.append({"at": now(), **restored})
    update_run_state(run_dir, status="running", resumes=resumes, host=platform.node(), pid=os.getpid())
    fresh = restored["checkpoint"] is None
    # curve rows newer than the checkpoint are redone; with no checkpoint, all of them
    return learn(cfg, model, run_dir, callbacks, reset_num_timesteps=fresh,
                  curve_keep_until=int(model.num_timesteps) if not fresh else -1)


# ----------------------------------------------------------------------------- sampling
def load_run(run_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
             device: str = "cpu", unsafe_load_sb3_zip: bool = False) -> tuple[BaseAlgorithm, TrainConfig]:
    """Load a run's agent and config, without unpickling anything.

    Loads ``agent.pt``, or, for an unfinished run, its latest checkpoint; or the
    ``checkpoint`` file given. The algorithm is rebuilt from ``config.yml`` and the
    weights copied in (:mod:`agents.agent_io`). The model has no env attached; play it
    with :class:`ModelPolicy` on ``agents.train.make_env(config)``. A run of an older
    musicenv version that has only SB3 ``.zip`` files is refused unless
    ``unsafe_load_sb3_zip`` (those files are pickles: load only runs you trust).
    """
    run_dir = Path(run_dir).expanduser()
    cfg = load_run_config(run_dir)
    cfg = resolve_config(cfg, read_hyperparams=False)
    cfg.device = check_device(device)
    path = Path(checkpoint) if checkpoint is not None else agent_file(run_dir)
    if path is None:
        if unsafe_load_sb3_zip and ((run_dir / MODEL_FILE).is_file() or sb3_zip_checkpoints(run_dir)):
            path = run_dir / MODEL_FILE if (run_dir / MODEL_FILE).is_file() else sb3_zip_checkpoints(run_dir)[0][1]
        else:
            raise RunStateError(f"{str(run_dir)!r} has neither {AGENT_FILE} nor a checkpoint yet"
                                f"{unsafe_hint(run_dir)}")
    if not path.is_file():
        raise RunStateError(f"no agent file {str(path)!r}")
    if path.suffix == ".zip":
        if not unsafe_load_sb3_zip:
            raise RunStateError(f"{str(path)!r} is an SB3 .zip (a pickle, which can run code when loaded); musicenv "
                                "loads it only with --unsafe-load-sb3-zip, for runs you trust")
        return _load_sb3_zip(cfg, path, None, run_dir, None, cfg.device), cfg
    return load_agent(cfg, path, None, run_dir), cfg

