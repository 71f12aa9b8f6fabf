"""``musicenv train``: the command line of :mod:`agents.train`."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from agents.train.algorithms import ALGORITHMS, get_algorithm
from agents.train.config import TrainConfig
from agents.train.envs import VEC_ENVS
from agents.train.errors import RunStateError, TrainConfigError
from agents.train.restore import resume
from agents.train.run import train

__all__ = ["add_commands", "config_from_args"]


def _parse_pairs(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise TrainConfigError(f"{flag} takes KEY=VALUE pairs, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise TrainConfigError(f"{flag} {pair!r}: the value is not valid YAML: {e}") from e
    return out


def _steps_arg(text: str) -> int:
    """An env-step count: ``100000``, ``100_000`` or ``1e5``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a whole number of env steps (e.g. 100000 or 1e5), got {text!r}")
    return int(value)


def _parse_reward(text: str) -> Any:
    """A name or path as is; inline YAML (``{in_key: 2, motif: 1}``, ``[in_key, motif]``) parsed."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise TrainConfigError(f"--reward {text!r} is not valid YAML: {e}") from e
    return text


_CONFIG_FLAGS = {  # argparse dest -> TrainConfig field
    "algo": "algo", "env_id": "env_id", "seed": "seed", "timesteps": "n_timesteps", "n_envs": "n_envs",
    "policy": "policy", "hyperparams_file": "hyperparams_file", "out": "out", "eval_freq": "eval_freq",
    "eval_episodes": "eval_episodes", "final_episodes": "final_episodes", "checkpoint_freq": "checkpoint_freq",
    "vec_env": "vec_env", "device": "device", "threads": "n_threads", "verbose": "verbose", "baselines": "baselines",
    "init_from": "init_from",
}


_FLAG_NAMES = {"env_id": "--env"}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config a ``musicenv train`` command line describes (before resolution)."""
    data = TrainConfig.from_yaml(args.config).to_dict() if args.config else TrainConfig().to_dict()
    if args.config and (args.algo is not None and get_algorithm(args.algo).name != get_algorithm(data["algo"]).name):
        # another algorithm's keywords would not fit
        data["hyperparams"], data["hyperparams_file"], data["policy"] = {}, None, None
    for dest, name in _CONFIG_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            data[name] = value
    if args.reward is not None:
        data["reward"] = _parse_reward(args.reward)
    data["env_kwargs"] = {**(data.get("env_kwargs") or {}), **_parse_pairs(args.env_kwargs, "--env-kwargs")}
    data["hyperparams"] = {**(data.get("hyperparams") or {}), **_parse_pairs(args.hyperparams, "--hyperparams")}
    if args.progress is not None:
        data["progress"] = args.progress
    return TrainConfig.from_dict(data)


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        if args.resume:
            given = [_FLAG_NAMES.get(d, f"--{d.replace('_', '-')}") for d in (*_CONFIG_FLAGS, "reward", "config")
                     if getattr(args, d) is not None] + [f for f, v in (("--env-kwargs", args.env_kwargs),
                                                                          ("--hyperparams", args.hyperparams)) if v]
            if given:
                raise TrainConfigError(f"--resume continues a run with its saved config; drop {', '.join(given)} "
                                       "(only --progress/--no-progress may change)")
            if args.force:
                raise TrainConfigError("--force goes with --out (replace a run), not with --resume")
            result = resume(args.resume, progress=args.progress, unsafe_load_sb3_zip=args.unsafe_load_sb3_zip)
        else:
            if args.unsafe_load_sb3_zip:
                raise TrainConfigError("--unsafe-load-sb3-zip goes with --resume (a new run loads nothing)")
            result = train(config_from_args(args), force=args.force)
    except KeyboardInterrupt:
        print("\ninterrupted; a checkpoint was saved. Continue with: musicenv train --resume RUN_DIR",
              file=sys.stderr)
        return 130
    except (TrainConfigError, RunStateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        if type(e).__name__ != "RewardSpecError":
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.final_metrics
    print(f"run directory: {result.run_dir}  ({result.timesteps} timesteps, {result.wall_time:.0f} s)")
    rows = [("greedy", m["greedy"]), ("sampled", m["sampled"]),
            *((f"{name} (baseline)", r) for name, r in m["baselines"].items())]
    print(f"mean reward over {m['episodes']} held-out pieces (seeds {m['seeds'][0]}..{m['seeds'][1]}):")
    for name, r in rows:
        print(f"  {name:<18} {r['reward_mean']:9.2f} +- {r['reward_std']:.2f}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``musicenv train`` (see the module doc)."""
    p = subparsers.add_parser(
        "train", help="train an SB3 agent (PPO, A2C, DQN, MaskablePPO, RecurrentPPO) on a musicenv env",
        description="Train an agent; writes a run directory (config, model, TensorBoard logs, learning curve, "
                    "checkpoints, final metrics). Hyperparameters come from agents/hyperparams/<algo>.yml.",
    )
    p.add_argument("--algo", help=f"algorithm: {', '.join(ALGORITHMS)} (default: ppo)")
    p.add_argument("--env", dest="env_id", help="env id (default: MusicComposition-v0)")
    p.add_argument("--reward", help="reward spec: a term or preset name, a YAML file, or inline YAML such as "
                                    "'{in_key: 2, motif: 1}' (default: the env's)")
    p.add_argument("--env-kwargs", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="env constructor keywords, values read as YAML (e.g. n_bars=8 key='D minor')")
    p.add_argument("--hyperparams", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override hyperparameters, values read as YAML (e.g. learning_rate=1e-4 "
                        "policy_kwargs.net_arch=[128,128])")
    p.add_argument("--hyperparams-file", help="rl-zoo3-style YAML to read instead of agents/hyperparams/<algo>.yml")
    p.add_argument("--config", help="start from a saved config (e.g. RUN_DIR/config.yml); other flags override it")
    p.add_argument("--policy", help="SB3 policy name or 'module:Class' (default: from the YAML)")
    p.add_argument("--seed", type=int, help="seed of the first training env (default: 0)")
    p.add_argument("--timesteps", type=_steps_arg, help="total env steps (default: from the YAML)")
    p.add_argument("--n-envs", type=int, help="parallel training envs (default: from the YAML)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<algo>-<env>-seed<seed>-<time>)")
    p.add_argument("--eval-freq", type=_steps_arg, help="env steps between evaluations, 0 for none (default: 10000)")
    p.add_argument("--eval-episodes", type=int, help="pieces per evaluation and mode (default: 10)")
    p.add_argument("--final-episodes", type=int, help="held-out pieces in final_metrics.json (default: 100)")
    p.add_argument("--baselines", nargs="+", metavar="SOURCE",
                   help="musicenv compose sources also played on the held-out pieces (default: random)")
    p.add_argument("--checkpoint-freq", type=_steps_arg, help="env steps between checkpoints, 0 for none (default: 25000)")
    p.add_argument("--vec-env", choices=VEC_ENVS, help="vectorisation (default: batched, one batched step for "
                   "all envs; dummy: SB3's DummyVecEnv; subproc: one process per env)")
    p.add_argument("--device", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, help="torch threads (default: 1)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress: a bar on a terminal, a plain line every 10 s or 5 %% when stdout is a "
                        "pipe or a file (default: yes)")
    p.add_argument("--verbose", type=int, help="SB3 verbosity 0/1/2 (default: 0)")
    p.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from the policy weights of this run (same algorithm, env spaces and network; e.g. "
                        "`musicenv jam-pretrain`'s behaviour-cloned chords); optimiser and counters start fresh")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its latest checkpoint")
    p.add_argument("--force", action="store_true", help="replace the run already in --out (default: refuse)")
    p.add_argument("--unsafe-load-sb3-zip", action="store_true",
                   help="with --resume: allow a run of an older musicenv that has only SB3 .zip checkpoints; they "
                        "are pickles and can run code, so only for runs you trust")
    p.set_defaults(func=_cmd_train)

