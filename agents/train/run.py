"""A training run: build the algorithm, write the run directory, learn, save, evaluate.

See :mod:`agents.train` for the run directory and what each file holds.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agents.rundir import (
    AGENT_FILE,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CURVE_FILE,
    FINAL_METRICS_FILE,
    MODEL_FILE,
    TENSORBOARD_DIR,
    VERSIONS_FILE,
    now,
    package_versions,
    update_run_state,
    write_json,
)
from agents.train.algorithms import get_algorithm
from agents.train.config import TrainConfig, algorithm_kwargs, policy_class, resolve_config
from agents.train.envs import make_env, make_vec_env
from agents.train.errors import RunStateError, TrainConfigError
from agents.train.evaluation import final_evaluation, progress_lines
from agents.train.identity import config_hash, config_identity
from musicenv.files import write_text as _write_text

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

__all__ = ["RunResult", "build_model", "init_policy", "load_agent", "set_threads", "train"]


@dataclass
class RunResult:
    """What :func:`train` returns."""

    run_dir: Path
    config: TrainConfig
    model: BaseAlgorithm
    final_metrics: dict[str, Any]
    timesteps: int
    wall_time: float  # seconds of this call (training, evaluations, saving)



def _default_out(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.algo}-{cfg.env_id}-seed{cfg.seed}-{stamp}"


def _check_new_run_dir(out: Path, force: bool = False) -> None:
    """Raise unless ``out`` is missing, an empty directory, or (with ``force``) a run
    directory to be replaced; and unless it can be created (creates nothing)."""
    from musicenv.files import check_out_dir

    try:
        check_out_dir(out, what="run directory")
    except OSError as e:
        raise RunStateError(str(e)) from e
    if not out.exists():
        return
    if (out / CONFIG_FILE).exists():
        if force:
            return
        raise RunStateError(f"{str(out)!r} already holds a run; continue it with "
                            f"`musicenv train --resume {out}`, replace it with --force, or choose another --out")
    if any(out.iterdir()):
        raise RunStateError(f"--out {str(out)!r} is not empty; choose a new or empty directory")


def build_model(cfg: TrainConfig, venv: VecEnv | None = None, run_dir: Path | None = None) -> BaseAlgorithm:
    """The algorithm a resolved config describes, untrained: on ``venv`` (for training)
    or, without one, on the spaces of :func:`make_env` (for playing loaded weights)."""
    algo_cls = get_algorithm(cfg.algo).load_class()
    try:
        # an import path names a class SB3 cannot look up by name; aliases stay strings
        policy = policy_class(algo_cls, cfg.policy, "config") if ":" in str(cfg.policy) else cfg.policy
        if venv is not None:
            return algo_cls(policy, venv, seed=cfg.seed, device=cfg.device, verbose=cfg.verbose,
                            tensorboard_log=str(run_dir / TENSORBOARD_DIR) if run_dir is not None else None,
                            **algorithm_kwargs(cfg))
        env = make_env(cfg)
        try:
            spaces = env.observation_space, env.action_space
        finally:
            env.close()
        # as SB3's own load(): construct without an env, give it the spaces, then set up
        model = algo_cls(policy, None, device=cfg.device, verbose=cfg.verbose, _init_setup_model=False,
                         **algorithm_kwargs(cfg))
        model.observation_space, model.action_space = spaces
        model.n_envs = cfg.n_envs
        model._setup_model()
        return model
    except (TypeError, ValueError, AssertionError) as e:
        raise TrainConfigError(f"{algo_cls.__name__} rejected the hyperparameters {cfg.hyperparams}: {e}") from e




def _callbacks(cfg: TrainConfig, run_dir: Path, curve_rows_after: int | None, extra: Sequence[BaseCallback]) -> list:
    from agents.callbacks import LearningCurve, MusicEvalCallback, PeriodicCheckpoint

    spec = get_algorithm(cfg.algo)
    cbs: list = []
    if cfg.checkpoint_freq:
        cbs.append(PeriodicCheckpoint(run_dir / CHECKPOINT_DIR, cfg.checkpoint_freq,
                                      save_replay_buffer=spec.off_policy, algo=spec.name,
                                      config_hash=config_hash(config_identity(cfg))))
    if cfg.eval_freq:
        curve = LearningCurve(run_dir / CURVE_FILE, keep_until=curve_rows_after)
        cbs.append(MusicEvalCallback(lambda: make_env(cfg), eval_freq=cfg.eval_freq, n_episodes=cfg.eval_episodes,
                                     seed=cfg.eval_seed, curve=curve))
    cbs.extend(extra)
    return cbs




def train(config: TrainConfig | Mapping[str, Any], callbacks: Sequence[BaseCallback] = (), *,
          force: bool = False) -> RunResult:
    """Train one agent as ``config`` says and write its run directory (see module doc).

    Everything is validated before the run directory is created or training starts,
    including that the run directory can be created. ``force`` replaces a run already
    in ``config.out`` (it is deleted once the new run is validated). ``callbacks`` are
    extra SB3 callbacks run after the built-in ones. Ctrl-C saves a checkpoint, marks
    the run interrupted and re-raises ``KeyboardInterrupt``.
    """
    cfg = resolve_config(config)
    run_dir = Path(cfg.out) if cfg.out is not None else _default_out(cfg)
    _check_new_run_dir(run_dir, force=force)
    cfg.out = str(run_dir)
    set_threads(cfg)
    # The constructor validates the hyperparameters against the envs; do it before
    # anything is written. (The run's model is built again below, on the monitored envs
    # of the run directory; both are seeded alike.)
    venv = make_vec_env(cfg)
    try:
        trial = build_model(cfg, venv, run_dir)
        # a run that does not fit fails here, before anything is written; its weights are kept
        start_weights = init_policy(trial, cfg) if cfg.init_from else None
    finally:
        venv.close()
    if force and (run_dir / CONFIG_FILE).exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    _write_text(run_dir / CONFIG_FILE, _config_yaml(cfg))
    write_json(run_dir / VERSIONS_FILE, package_versions())
    update_run_state(run_dir, status="running", config_hash=config_hash(config_identity(cfg)),
                      seed=cfg.seed, timesteps=0, n_timesteps=cfg.n_timesteps,
                      seeds={"training": [cfg.seed, cfg.seed + cfg.n_envs - 1],
                             "eval": [cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes - 1],
                             "test": [cfg.test_seed, cfg.test_seed + cfg.final_episodes - 1]},
                      started=now(), resumes=[], argv=sys.argv, host=platform.node(), pid=os.getpid())
    model = build_model(cfg, make_vec_env(cfg, run_dir / "train.monitor.csv"), run_dir)
    if start_weights is not None:  # built from the same config as the trial: the checks hold
        model.policy.load_state_dict(start_weights, strict=True)
    return learn(cfg, model, run_dir, callbacks, reset_num_timesteps=True)


def load_agent(cfg: TrainConfig, path: Path, venv: VecEnv | None = None, run_dir: Path | None = None,
               buffer: Path | None = None) -> BaseAlgorithm:
    """Build a run's algorithm from its config and copy in the agent file's tensors
    (and the replay buffer's arrays); :class:`agents.agent_io.AgentFileError` if a file
    is damaged or does not fit."""
    from agents.agent_io import load_replay_buffer, read_agent, restore_agent

    payload, meta = read_agent(path)  # first: a damaged file costs no model building
    model = build_model(cfg, venv, run_dir)
    restore_agent(model, payload, meta, path)
    if buffer is not None and getattr(model, "replay_buffer", None) is not None:
        load_replay_buffer(model.replay_buffer, buffer)
    return model


def init_policy(model: BaseAlgorithm, cfg: TrainConfig) -> dict[str, Any]:
    """Copy the policy weights of run ``cfg.init_from`` into ``model`` (a new run's
    untrained algorithm): ``musicenv train --init-from RUN_DIR``. Only the policy's
    parameters (features extractor, actor, critic) are copied, from the run's
    ``agent.pt`` (or, unfinished, its latest checkpoint); the optimiser, the timestep
    counter and the schedules start fresh. The run must have been trained with the
    same algorithm (or one with the same policy class: maskable_ppo for
    maskable_kl_ppo), on observation and action spaces equal to this run's, with the
    same network; otherwise :class:`TrainConfigError` says what differs (a folder that
    is no run raises :class:`RunStateError`). Returns the policy state dict it copied."""
    from agents.rundir import agent_file
    from agents.train.identity import load_run_config

    source = Path(cfg.init_from).expanduser()
    try:
        other_cfg = resolve_config(load_run_config(source), read_hyperparams=False)
    except (RunStateError, TrainConfigError) as e:
        raise type(e)(f"--init-from: {e}") from e
    path = agent_file(source)
    if path is None:
        raise RunStateError(f"--init-from {str(source)!r} has neither {AGENT_FILE} nor a checkpoint")
    other = load_agent(other_cfg, path)
    if type(other.policy) is not type(model.policy):
        raise TrainConfigError(f"--init-from {str(source)!r} holds a {other_cfg.algo} run with a "
                               f"{type(other.policy).__name__}; this run trains {cfg.algo} with a "
                               f"{type(model.policy).__name__}: start from a run of the same algorithm (or one "
                               "whose policy is of the same class, such as maskable_ppo for maskable_kl_ppo)")
    differences = []
    if other.action_space != model.action_space:
        differences.append(f"actions: the run's {other.action_space}, this run's {model.action_space}")
    theirs, ours = other.observation_space, model.observation_space
    if theirs != ours:
        a, b = getattr(theirs, "spaces", {}), getattr(ours, "spaces", {})
        blocks = [f"block {k!r}: the run's {getattr(a.get(k), 'shape', 'none')}, this run's "
                  f"{getattr(b.get(k), 'shape', 'none')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        differences.append("observations: " + (", ".join(blocks) if blocks else f"the run's {theirs}, this run's {ours}"))
    if differences:
        raise TrainConfigError(f"--init-from {str(source)!r} does not fit this run ({'; '.join(differences)}); train "
                               f"with its env and env_kwargs ({other_cfg.env_id}, {other_cfg.env_kwargs})")
    theirs_sd, ours_sd = other.policy.state_dict(), model.policy.state_dict()
    misfits = [f"{k}: the run's {tuple(theirs_sd[k].shape) if k in theirs_sd else 'none'}, this run's "
               f"{tuple(ours_sd[k].shape) if k in ours_sd else 'none'}" for k in sorted(set(theirs_sd) | set(ours_sd))
               if k not in theirs_sd or k not in ours_sd or theirs_sd[k].shape != ours_sd[k].shape]
    if misfits:
        raise TrainConfigError(f"--init-from {str(source)!r}: its network does not fit this run's ("
                               + "; ".join(misfits[:3]) + (f"; and {len(misfits) - 3} more" if len(misfits) > 3 else "")
                               + f"); give the same policy and policy_kwargs (it has {other_cfg.policy}, "
                               f"{other_cfg.hyperparams.get('policy_kwargs')})")
    model.policy.load_state_dict(theirs_sd, strict=True)
    return theirs_sd


def _config_yaml(cfg: TrainConfig) -> str:
    header = ("# Resolved training config written by agents.train; rerun with\n"
              "#   musicenv train --config THIS_FILE --out NEW_RUN_DIR\n")
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)




def set_threads(cfg: TrainConfig) -> None:
    import torch

    torch.set_num_threads(cfg.n_threads)


def learn(cfg: TrainConfig, model: BaseAlgorithm, run_dir: Path, extra: Sequence[BaseCallback], *,
           reset_num_timesteps: bool, curve_keep_until: int | None = None) -> RunResult:
    from agents.callbacks import save_checkpoint

    t0 = time.perf_counter()
    remaining = cfg.n_timesteps - (0 if reset_num_timesteps else model.num_timesteps)
    spec = get_algorithm(cfg.algo)
    try:
        if remaining > 0:
            callbacks = _callbacks(cfg, run_dir, curve_keep_until, extra)
            if progress_lines(cfg):
                from agents.callbacks import ProgressLines

                callbacks.append(ProgressLines(cfg.n_timesteps, label=f"training {run_dir.name}"))
            model.learn(remaining, callback=callbacks,
                        progress_bar=cfg.progress and not progress_lines(cfg),
                        reset_num_timesteps=reset_num_timesteps, tb_log_name=type(model).__name__)
    except KeyboardInterrupt:
        save_checkpoint(model, run_dir / CHECKPOINT_DIR, save_replay_buffer=spec.off_policy, algo=spec.name,
                        config_hash=config_hash(config_identity(cfg)))
        update_run_state(run_dir, status="interrupted", timesteps=int(model.num_timesteps), stopped=now())
        raise
    except BaseException as e:
        update_run_state(run_dir, status="failed", timesteps=int(model.num_timesteps), stopped=now(),
                          error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if model.env is not None:
            model.env.close()
    from agents.agent_io import save_agent
    from musicenv.files import write_atomically

    save_agent(model, run_dir / AGENT_FILE, algo=spec.name, config_hash=config_hash(config_identity(cfg)))
    # SB3's own format, for other tools only (musicenv never loads it: it holds pickles)
    write_atomically(run_dir / MODEL_FILE, lambda tmp: model.save(tmp), what="model")
    # if the final evaluation is cut short, --resume evaluates agent.pt without training
    update_run_state(run_dir, status="evaluating", timesteps=int(model.num_timesteps))
    metrics = final_evaluation(model, cfg, progress=progress_lines(cfg))
    write_json(run_dir / FINAL_METRICS_FILE, metrics)
    update_run_state(run_dir, status="finished", timesteps=int(model.num_timesteps), finished=now())
    return RunResult(run_dir, cfg, model, metrics, int(model.num_timesteps), time.perf_counter() - t0)

