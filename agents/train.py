"""Training: one entry point for Stable-Baselines3 agents on musicenv environments.

``train(config) -> RunResult`` (and ``musicenv train``) trains PPO, A2C, DQN
(stable-baselines3), MaskablePPO or RecurrentPPO (sb3-contrib) on any musicenv
environment with any reward spec::

    from agents.train import TrainConfig, train
    result = train(TrainConfig(algo="ppo", reward="theory", n_timesteps=100_000, out="runs/ppo"))
    print(result.final_metrics["greedy"]["reward_mean"])

    musicenv train --algo ppo --reward theory --timesteps 100000 --out runs/ppo
    musicenv train --resume runs/ppo

Configuration
-------------
Hyperparameters live in rl-zoo3-style YAML, ``agents/hyperparams/<algo>.yml``, one
section per env id (special keys ``n_envs``, ``n_timesteps``, ``policy``,
``env_kwargs``; every other key is a keyword of the algorithm's constructor).
:class:`TrainConfig` fields and ``TrainConfig.hyperparams`` override the file
(``--hyperparams key=value``, dotted keys reach into mappings:
``policy_kwargs.net_arch=[128,128]``). Everything is validated before training
starts, with messages naming the valid choices: the algorithm, the env id, every
hyperparameter against the constructor's (and the policy's) signature, the reward
spec (``rewards.make``), the env kwargs (by making the env) and the YAML file.

Seeds
-----
Training envs are seeded ``seed, seed+1, ..., seed+n_envs-1`` (each env's own
generator then draws every later episode's key and progression). The periodic
evaluation plays ``eval_episodes`` pieces with seeds ``eval_seed + k`` (the same
pieces at every evaluation, so the curve compares like with like) and the final
evaluation ``final_episodes`` pieces with seeds ``test_seed + k``; the three ranges
are checked to be disjoint. Both evaluations run the policy greedily
(``deterministic=True``) and sampled; the sampled runs draw from random streams of
their own (see :class:`ModelPolicy`), so evaluating never changes what training does.

Run directory
-------------
::

    RUN_DIR/
      config.yml            resolved config: rerun with ``musicenv train --config RUN_DIR/config.yml``
      run.json              status (running/interrupted/failed/evaluating/finished), seeds, timesteps,
                            resumes, host and pid
      versions.json         python, torch, stable-baselines3, sb3-contrib, gymnasium, numpy, musicenv
      agent.pt              the final agent: weights, optimiser state and counters (tensors + JSON)
      model.zip             the same model in SB3's format, for other tools; never loaded by musicenv
                            (it holds pickles) unless you pass --unsafe-load-sb3-zip
      final_metrics.json    greedy and sampled: mean reward, per-term means, music metrics;
                            and the baselines (default: the random policy) on the same pieces
      learning_curve.csv    one row per evaluation and mode (greedy/sampled)
      train*.monitor.csv    training episodes (SB3 VecMonitor), one file per (re)start
      tensorboard/<ALGO>_1/ TensorBoard event files (training stats and eval/*)
      checkpoints/agent_<steps>_steps.pt   periodic checkpoints (as agent.pt)
      checkpoints/replay_buffer_<steps>_steps.npz   off-policy only, the two latest checkpoints' only

Every file is written atomically (a temporary file renamed into place), so a killed
run never leaves a half-written model, checkpoint, curve or metrics file.

**Loading a run directory never unpickles.** Agents are stored as tensors
(``torch.save`` of state dicts, read with ``torch.load(weights_only=True)``), replay
buffers as ``.npz`` arrays (``allow_pickle=False``), configs as YAML (``safe_load``)
and state as JSON; :func:`load_run` and :func:`resume` rebuild the algorithm from
``config.yml`` and copy the tensors in (:mod:`agents.agent_io`). SB3's ``model.zip``
is written for interoperability only; runs of older musicenv versions that have
nothing else are loaded only with ``unsafe_load_sb3_zip=True``
(``--unsafe-load-sb3-zip``, or the compose source ``run-unsafe-sb3-zip:RUN_DIR``),
and only if you trust whoever wrote them.

Reuse
-----
A run's *identity* is its resolved config (env id, every env keyword including the
observation settings, which :func:`resolve_config` pins to their values, reward
spec, algorithm, hyperparameters, seeds, budget, evaluation settings) plus the
musicenv version, without the settings that do not change results (``out``,
``progress``, ``verbose``, ``n_threads``, ``device``, ``checkpoint_freq``, and
``hyperparams_file``, whose content is in ``hyperparams``); :func:`config_hash` hashes it
into ``run.json``. The benchmark and the main job reuse a finished run only when
the identities match, and otherwise stop with :class:`StaleRunError`, naming the
keys that differ (``--force`` starts over). ``musicenv train --out RUN_DIR --force``
replaces an existing run.

Resuming
--------
``musicenv train --resume RUN_DIR`` (:func:`resume`) continues an interrupted run
(Ctrl-C, a crash, a killed process) with its saved config: it loads the latest
checkpoint (model weights, optimiser state, the timestep counter — hence the
learning-rate and exploration schedules — and, for off-policy algorithms, the replay
buffer saved with that checkpoint), trains the remaining timesteps and appends to
the same learning curve and TensorBoard run (curve rows newer than the checkpoint
are dropped, as that training is redone). Ctrl-C saves a checkpoint before exiting;
a run stopped after training but before its final evaluation only redoes that. A run
marked running whose process is alive on this machine is refused.
Not restored: the training envs' random state (they are reseeded with
``seed + n_envs * k`` at the k-th resume, so they do not replay the first start's
pieces) and an on-policy rollout in progress. A resumed run is thus as valid as
an uninterrupted one, but not bit-identical to it. With no checkpoint yet, resuming
starts the run over.

Sampling from a run
-------------------
:func:`load_run` returns ``(model, config)``; :class:`ModelPolicy` turns a model into
the ``policy(obs) -> action`` callable that :func:`musicenv.baselines.run_episode`
plays (masks for MaskablePPO, LSTM state for RecurrentPPO). Importing this module
registers two ``musicenv compose`` sources: ``run:RUN_DIR`` samples the policy,
``run-greedy:RUN_DIR`` plays its most likely token::

    musicenv compose run:runs/ppo -n 8 --out out/ppo

Extending
---------
New algorithms (e.g. KL control) join with :func:`register_algorithm` and a
``agents/hyperparams/<name>.yml``; policies and features extractors built elsewhere
(e.g. from the note-RNN prior) are named by import path in the YAML
(``policy: "agents.policies:PriorPolicy"``,
``policy_kwargs: {features_extractor_class: "agents.policies:NoteRNNExtractor"}``);
``baselines`` names any ``musicenv compose`` source (``prior`` once registered) to be
played on the same held-out pieces as the agent.

This module imports torch and SB3 only inside functions, so ``musicenv``'s CLI can
list the ``train`` command without importing them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import inspect
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from musicenv.files import write_text as _write_text

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

__all__ = [
    "ALGORITHMS",
    "AlgorithmSpec",
    "HYPERPARAMS_DIR",
    "ModelPolicy",
    "RunResult",
    "RunStateError",
    "StaleRunError",
    "build_model",
    "config_hash",
    "config_identity",
    "run_identity",
    "identity_difference",
    "TrainConfig",
    "TrainConfigError",
    "add_commands",
    "latest_checkpoint",
    "load_hyperparams",
    "load_run",
    "register_algorithm",
    "resolve_config",
    "resume",
    "train",
]

#: Folder of the shipped rl-zoo3-style hyperparameter files, ``<algo>.yml``.
HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"

#: Keys of a hyperparameter section that are not constructor keywords.
SPECIAL_KEYS = ("n_envs", "n_timesteps", "policy", "env_kwargs")

#: Constructor keywords that ``train`` sets itself (and which flag sets each).
RESERVED_KEYS = {
    "env": "--env", "seed": "--seed", "device": "--device", "verbose": "--verbose",
    "tensorboard_log": "the run directory", "_init_setup_model": "train",
}

#: Keywords whose string values "lin_<x>" mean a linear decay from x to 0.
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")

#: Short names accepted for ``policy_kwargs.activation_fn``.
ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "gelu": "GELU", "leaky_relu": "LeakyReLU",
               "silu": "SiLU"}

CONFIG_FILE, RUN_FILE, VERSIONS_FILE = "config.yml", "run.json", "versions.json"
AGENT_FILE = "agent.pt"
MODEL_FILE, FINAL_METRICS_FILE, CURVE_FILE = "model.zip", "final_metrics.json", "learning_curve.csv"
#: TrainConfig fields that do not change what a run computes (left out of its identity).
UNHASHED_FIELDS = ("out", "progress", "verbose", "n_threads", "device", "hyperparams_file", "checkpoint_freq")
CHECKPOINT_DIR, TENSORBOARD_DIR = "checkpoints", "tensorboard"


class TrainConfigError(ValueError):
    """A training config (algorithm, env id, hyperparameter, YAML file, flag) is invalid."""


class RunStateError(ValueError):
    """A run directory cannot be used as asked (missing files, already finished, ...)."""


class StaleRunError(RunStateError):
    """A finished run was made with another config than the one asked for."""


# --------------------------------------------------------------------------- algorithms
@dataclass(frozen=True)
class AlgorithmSpec:
    """How ``train`` builds and drives one algorithm.

    Attributes:
        name: canonical name, also the stem of its hyperparameter file.
        class_path: ``"module:Class"`` of the SB3-style algorithm, imported when used.
        default_policy: policy used when neither the YAML nor the config names one.
        off_policy: has a replay buffer (saved with checkpoints, restored on resume).
        masked: ``predict`` takes ``action_masks`` (the env's ``action_masks()``).
        recurrent: ``predict`` carries a hidden state across an episode.
    """

    name: str
    class_path: str
    default_policy: str = "MultiInputPolicy"
    off_policy: bool = False
    masked: bool = False
    recurrent: bool = False

    def load_class(self) -> type:
        return _import_path(self.class_path, what=f"algorithm {self.name!r}")


#: Canonical name -> spec. Items that build on the note-RNN prior (policies from the
#: prior, KL control) add theirs with :func:`register_algorithm`.
ALGORITHMS: dict[str, AlgorithmSpec] = {}
_ALIASES: dict[str, str] = {}


def register_algorithm(spec: AlgorithmSpec, aliases: Sequence[str] = ()) -> None:
    """Make ``spec`` trainable by name (and by each alias, case and ``-``/``_`` insensitive)."""
    ALGORITHMS[spec.name] = spec
    for alias in (spec.name, *aliases):
        _ALIASES[_norm_name(alias)] = spec.name


def _norm_name(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


register_algorithm(AlgorithmSpec("ppo", "stable_baselines3:PPO"))
register_algorithm(AlgorithmSpec("a2c", "stable_baselines3:A2C"))
register_algorithm(AlgorithmSpec("dqn", "stable_baselines3:DQN", off_policy=True))
register_algorithm(AlgorithmSpec("maskable_ppo", "sb3_contrib:MaskablePPO", masked=True), aliases=("ppo_mask",))
register_algorithm(AlgorithmSpec("recurrent_ppo", "sb3_contrib:RecurrentPPO", default_policy="MultiInputLstmPolicy",
                                 recurrent=True), aliases=("ppo_lstm",))
register_algorithm(AlgorithmSpec("rl_tuner_q", "agents.kl_control:RLTunerQ",
                                 default_policy="agents.policies:PriorQPolicy", off_policy=True))
register_algorithm(AlgorithmSpec("rl_tuner_psi", "agents.kl_control:RLTunerPsi",
                                 default_policy="agents.policies:PriorQPolicy", off_policy=True))
register_algorithm(AlgorithmSpec("rl_tuner_g", "agents.kl_control:RLTunerG", off_policy=True))
register_algorithm(AlgorithmSpec("kl_ppo", "agents.kl_control:KLPPO", default_policy="agents.policies:PriorActorCriticPolicy"))


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered under ``name`` or one of its aliases."""
    if not isinstance(name, str) or _norm_name(name) not in _ALIASES:
        raise TrainConfigError(f"unknown algorithm {name!r}; valid choices: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[_ALIASES[_norm_name(name)]]


def _import_path(path: str, what: str) -> Any:
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise TrainConfigError(f"{what}: {path!r} is not an import path of the form 'package.module:Name'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise TrainConfigError(f"{what}: cannot import {path!r}: {e}") from e


# ------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything that describes a training run (saved as the run's ``config.yml``).

    ``None`` means "from the hyperparameter file": ``n_timesteps``, ``n_envs``,
    ``policy``. ``hyperparams`` overrides the file's constructor keywords (dotted keys
    reach into mappings). Frequencies and counts are in env steps summed over all
    training envs; 0 disables periodic evaluation / checkpoints.
    """

    algo: str = "ppo"
    env_id: str = "MusicComposition-v0"
    reward: Any = None  # a rewards.make spec; None: the env's default
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_timesteps: int | None = None
    n_envs: int | None = None
    policy: str | None = None
    hyperparams: dict[str, Any] = field(default_factory=dict)
    hyperparams_file: str | None = None  # default: agents/hyperparams/<algo>.yml
    out: str | None = None  # default: runs/<algo>-<env>-seed<seed>-<time>
    eval_freq: int = 10_000
    eval_episodes: int = 10
    final_episodes: int = 100
    checkpoint_freq: int = 25_000
    baselines: list[str] = field(default_factory=lambda: ["random"])  # musicenv.compose sources
    eval_seed: int = 1_000_000
    test_seed: int = 2_000_000
    vec_env: str = "batched"  # or "dummy", "subproc" (see make_vec_env)
    device: str = "cpu"
    n_threads: int = 1  # torch.set_num_threads
    progress: bool = True
    verbose: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys (naming the valid ones)."""
        if not isinstance(data, Mapping):
            raise TrainConfigError(f"{source} must be a mapping of config keys, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise TrainConfigError(f"{source}: unknown config key(s) {unknown}; valid keys: {', '.join(names)}")
        return cls(**copy.deepcopy(dict(data)))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a config written by a run (``RUN_DIR/config.yml``) or by hand."""
        return cls.from_dict(_read_yaml(Path(path)), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise TrainConfigError(f"cannot read {str(path)!r}: {e}") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TrainConfigError(f"{str(path)!r} is not valid YAML: {e}") from e


def load_hyperparams(algo: str, env_id: str, path: str | os.PathLike | None = None) -> tuple[dict[str, Any], Path]:
    """The ``env_id`` section of an rl-zoo3-style file (default: the shipped ``<algo>.yml``)."""
    spec = get_algorithm(algo)
    file = Path(path) if path is not None else HYPERPARAMS_DIR / f"{spec.name}.yml"
    data = _read_yaml(file)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TrainConfigError(f"{str(file)!r} must map env ids to hyperparameter sections, "
                               f"got {type(data).__name__}")
    if env_id not in data:
        raise TrainConfigError(f"{str(file)!r} has no section for {env_id!r}; sections: "
                               f"{', '.join(map(str, data)) or '(none)'}")
    section = data[env_id]
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise TrainConfigError(f"{str(file)!r}, key {env_id!r}: expected a mapping of hyperparameters, "
                               f"got {section!r}")
    for key in section:
        if not isinstance(key, str):
            raise TrainConfigError(f"{str(file)!r}, section {env_id!r}: key {key!r} is not a string")
    return _numbers(copy.deepcopy(dict(section))), file


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string; read such strings as the floats meant."""
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _set_dotted(target: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = target
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise TrainConfigError(f"{source}: cannot set {key!r}: {p!r} is {child!r}, not a mapping")
        node = child
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        merged = dict(node[last])
        merged.update(value)
        node[last] = merged
    else:
        node[last] = value


def _as_count(value: Any, name: str, source: str, minimum: int = 1) -> int:
    """An integer >= minimum (YAML's 1e5 is a float; integral floats are accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or (
            isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer())):
        raise TrainConfigError(f"{source}: {name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise TrainConfigError(f"{source}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _normalise_env_id(env_id: Any) -> str:
    import musicenv

    valid = ", ".join(musicenv.ENV_IDS)
    if not isinstance(env_id, str):
        raise TrainConfigError(f"env id must be a string, got {env_id!r}; valid choices: {valid}")
    name = env_id.removeprefix("musicenv:")
    if name not in musicenv.ENV_IDS:
        raise TrainConfigError(f"unknown env id {env_id!r}; valid choices: {valid}")
    return name


def _check_keywords(cls: type, keys: Sequence[str], what: str, source: str, skip: Sequence[str] = ()) -> None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n != "self" and n not in skip
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = [k for k in keys if k not in accepted]
    if unknown:
        raise TrainConfigError(f"{source}: {what} does not accept {', '.join(map(repr, unknown))}; "
                               f"valid keys: {', '.join(accepted)}")


def _policy_class(algo_cls: type, policy: Any, source: str) -> type:
    if isinstance(policy, str) and ":" in policy:
        return _import_path(policy, what=f"{source}: policy")
    aliases = getattr(algo_cls, "policy_aliases", {})
    if isinstance(policy, str) and policy in aliases:
        return aliases[policy]
    raise TrainConfigError(f"{source}: unknown policy {policy!r} for {algo_cls.__name__}; valid choices: "
                           f"{', '.join(aliases)} or an import path 'package.module:Class'")


def resolve_config(config: TrainConfig | Mapping[str, Any], *, read_hyperparams: bool = True) -> TrainConfig:
    """Validate ``config`` and fill in everything the run needs, without training.

    Reads the hyperparameter file (unless ``read_hyperparams`` is False, as when
    resuming a run whose config is already resolved), merges the overrides, checks the
    algorithm, env id, every constructor and policy keyword, the reward spec and the
    env kwargs (by making the env once), the counts and the seed ranges. Returns a
    new, fully explicit config; raises :class:`TrainConfigError` (or
    ``rewards.RewardSpecError`` for a reward spec) naming the valid choices.
    """
    cfg = TrainConfig.from_dict(config.to_dict() if isinstance(config, TrainConfig) else config)
    spec = get_algorithm(cfg.algo)
    cfg.algo = spec.name
    cfg.env_id = _normalise_env_id(cfg.env_id)
    algo_cls = spec.load_class()

    params: dict[str, Any] = {}
    source = "config"
    if read_hyperparams:
        params, file = load_hyperparams(spec.name, cfg.env_id, cfg.hyperparams_file)
        cfg.hyperparams_file = str(file)
        source = f"{str(file)!r}, section {cfg.env_id!r}"
    if not isinstance(cfg.hyperparams, Mapping):
        raise TrainConfigError(f"hyperparams must be a mapping of key -> value, got {cfg.hyperparams!r}")
    for key, value in cfg.hyperparams.items():
        if not isinstance(key, str) or not key:
            raise TrainConfigError(f"hyperparameter names must be non-empty strings, got {key!r}")
        _set_dotted(params, key, _numbers(copy.deepcopy(value)), "hyperparams")
    for key, flag in RESERVED_KEYS.items():
        if key in params:
            raise TrainConfigError(f"{source}: {key!r} is set by train itself (use {flag}), remove it")

    file_env_kwargs = params.pop("env_kwargs", None) or {}
    if not isinstance(file_env_kwargs, Mapping):
        raise TrainConfigError(f"{source}: env_kwargs must be a mapping, got {file_env_kwargs!r}")
    if not isinstance(cfg.env_kwargs, Mapping):
        raise TrainConfigError(f"env_kwargs must be a mapping, got {cfg.env_kwargs!r}")
    if cfg.reward is not None and "reward" not in cfg.env_kwargs:
        # a reward in the hyperparameter file is the algorithm's default; --reward overrides it
        file_env_kwargs = {k: v for k, v in file_env_kwargs.items() if k != "reward"}
    env_kwargs = {**file_env_kwargs, **cfg.env_kwargs}
    if "reward" in env_kwargs:
        if cfg.reward is not None and env_kwargs["reward"] != cfg.reward:
            raise TrainConfigError("the reward is given twice (reward and env_kwargs.reward); give it once")
        cfg.reward = env_kwargs.pop("reward")
    if "render_mode" in env_kwargs:
        raise TrainConfigError("env_kwargs.render_mode is not used in training; remove it")
    cfg.env_kwargs = env_kwargs

    n_envs = params.pop("n_envs", None)
    n_timesteps = params.pop("n_timesteps", None)
    policy = params.pop("policy", None)
    if cfg.n_envs is not None:
        cfg.n_envs = _as_count(cfg.n_envs, "n_envs", "config")
    else:
        cfg.n_envs = _as_count(n_envs if n_envs is not None else 1, "n_envs", source)
    if cfg.n_timesteps is not None:
        cfg.n_timesteps = _as_count(cfg.n_timesteps, "n_timesteps", "config")
    elif n_timesteps is not None:
        cfg.n_timesteps = _as_count(n_timesteps, "n_timesteps", source)
    else:
        raise TrainConfigError(f"{source}: no n_timesteps; give it in the file or with --timesteps")
    cfg.policy = cfg.policy or policy or spec.default_policy
    policy_cls = _policy_class(algo_cls, cfg.policy, source)
    _check_keywords(algo_cls, list(params), f"{algo_cls.__name__}(...)", source,
                    skip=("policy", *RESERVED_KEYS))
    policy_kwargs = params.get("policy_kwargs")
    if policy_kwargs is not None:
        if not isinstance(policy_kwargs, Mapping):
            raise TrainConfigError(f"{source}: policy_kwargs must be a mapping, got {policy_kwargs!r}")
        _check_keywords(policy_cls, list(policy_kwargs), f"policy {policy_cls.__name__}", f"{source}, policy_kwargs",
                        skip=("observation_space", "action_space", "lr_schedule"))
        _resolve_policy_kwargs(policy_kwargs, source)  # fails early on bad import paths
    for key in SCHEDULE_KEYS:
        _schedule(params.get(key), key, source)
    cfg.hyperparams = params

    for name in ("seed", "eval_seed", "test_seed"):
        setattr(cfg, name, _as_count(getattr(cfg, name), name, "config", minimum=0))
    for name in ("eval_freq", "checkpoint_freq", "verbose"):
        setattr(cfg, name, _as_count(getattr(cfg, name), name, "config", minimum=0))
    for name in ("eval_episodes", "final_episodes", "n_threads"):
        setattr(cfg, name, _as_count(getattr(cfg, name), name, "config", minimum=1))
    if cfg.vec_env not in VEC_ENVS:
        raise TrainConfigError(f"unknown vec_env {cfg.vec_env!r}; valid choices: {', '.join(VEC_ENVS)}")
    if not isinstance(cfg.progress, bool):
        raise TrainConfigError(f"progress must be true or false, got {cfg.progress!r}")
    ranges = {"training": (cfg.seed, cfg.seed + cfg.n_envs), "eval": (cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes),
              "test": (cfg.test_seed, cfg.test_seed + cfg.final_episodes)}
    names = list(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (a0, a1), (b0, b1) = ranges[a], ranges[b]
            if a0 < b1 and b0 < a1:
                raise TrainConfigError(f"{a} seeds {a0}..{a1 - 1} overlap {b} seeds {b0}..{b1 - 1}; "
                                       "choose seed, eval_seed and test_seed so the ranges are disjoint")

    cfg.reward = _resolve_reward(cfg.reward)
    _check_yaml_safe(cfg.env_kwargs, "env_kwargs")
    _check_yaml_safe(cfg.hyperparams, "hyperparams (give classes as 'module:Name' strings)")
    if isinstance(cfg.baselines, str) or not all(isinstance(b, str) for b in cfg.baselines):
        raise TrainConfigError(f"baselines must be a list of source names, got {cfg.baselines!r}")
    cfg.baselines = list(cfg.baselines)
    cfg.device = _check_device(cfg.device)
    env = make_env(cfg)
    try:
        # pin every setting the env would otherwise take from its defaults (history_length,
        # observe_prior, ...), so the run means the same thing if a default changes later
        cfg.env_kwargs = {**_env_defaults(env), **cfg.env_kwargs}
        for name in cfg.baselines:
            baseline_source(name, env)
    finally:
        env.close()
    return cfg


def _env_defaults(env: gym.Env) -> dict[str, Any]:
    """The env's constructor keywords that have plain default values (not ``reward``)."""
    unwrapped = env.unwrapped
    core = getattr(unwrapped, "core_class", None)
    target = core.__init__ if core is not None else type(unwrapped).__init__
    out: dict[str, Any] = {}
    for name, p in inspect.signature(target).parameters.items():
        if (p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                and name not in ("self", "batch_size", "num_envs", "reward", "render_mode")
                and p.default is not inspect.Parameter.empty
                and (p.default is None or type(p.default) in (bool, int, float, str))):
            out[name] = p.default
    return out


def _check_device(device: Any) -> str:
    """``device`` if torch can use it on this machine (``auto``, ``cpu``, ``cuda[:N]``, ``mps``)."""
    import torch

    if not isinstance(device, str) or not device:
        raise TrainConfigError(f"device must be a torch device name such as cpu, cuda, cuda:0 or auto, got {device!r}")
    if device == "auto":
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise TrainConfigError(f"device {device!r} is not a torch device name; accepted: auto, cpu, cuda, cuda:N, "
                               "mps") from e
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TrainConfigError(f"device {device!r}: this machine has no CUDA device (torch "
                                   f"{torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise TrainConfigError(f"device {device!r}: this machine has {count} CUDA device(s), "
                                   f"cuda:0..cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise TrainConfigError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise TrainConfigError(f"device {device!r}: musicenv trains on cpu, cuda[:N] or mps, not {dev.type}")
    return device


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
    cfg = _load_run_config(run_dir)
    data = {k: v for k, v in cfg.to_dict().items() if k not in UNHASHED_FIELDS}
    versions = _read_json(run_dir / VERSIONS_FILE) if (run_dir / VERSIONS_FILE).is_file() else {}
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


def _resolve_reward(reward: Any) -> Any:
    """Check the spec resolves (``rewards.make``) and inline a YAML file's mapping, so the
    run's config reproduces it without the file."""
    import rewards

    if reward is None:
        return None
    rewards.make(reward)  # raises RewardSpecError naming the available terms
    if isinstance(reward, (str, os.PathLike)) and os.fspath(reward).endswith((".yml", ".yaml")):
        reward = _read_yaml(Path(reward))
    _check_yaml_safe(reward, "reward")
    return copy.deepcopy(reward)


def _check_yaml_safe(value: Any, name: str) -> None:
    try:
        yaml.safe_dump(value)
    except yaml.YAMLError as e:
        raise TrainConfigError(f"{name} must be plain data (names, numbers, lists, mappings) so the run's "
                               f"config can be saved; got {value!r}") from e


def _schedule(value: Any, key: str, source: str) -> Any:
    """``"lin_<x>"`` -> SB3 ``LinearSchedule(x, 0, 1)``; other values unchanged."""
    if not (isinstance(value, str) and value.startswith("lin_")):
        return value
    try:
        start = float(value[4:])
    except ValueError:
        raise TrainConfigError(f"{source}: {key}={value!r} is not 'lin_<number>' (e.g. lin_3e-4)") from None
    from stable_baselines3.common.utils import LinearSchedule

    return LinearSchedule(start, 0.0, 1.0)


def _resolve_policy_kwargs(policy_kwargs: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = dict(policy_kwargs)
    for key, value in policy_kwargs.items():
        if not isinstance(value, str):
            continue
        if key == "activation_fn":
            if value.lower() in ACTIVATIONS:
                import torch.nn

                out[key] = getattr(torch.nn, ACTIVATIONS[value.lower()])
            else:
                out[key] = _import_path(value, what=f"{source}, policy_kwargs.activation_fn (or one of "
                                                    f"{', '.join(ACTIVATIONS)})")
        elif key.endswith("_class"):
            out[key] = _import_path(value, what=f"{source}, policy_kwargs.{key}")
    return out


def algorithm_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The constructor keywords of a resolved config, with schedules and classes built."""
    kwargs = copy.deepcopy(cfg.hyperparams)
    for key in SCHEDULE_KEYS:
        if key in kwargs:
            kwargs[key] = _schedule(kwargs[key], key, "hyperparams")
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = _resolve_policy_kwargs(kwargs["policy_kwargs"], "hyperparams")
    return kwargs


# ---------------------------------------------------------------------------------- envs
def make_env(cfg: TrainConfig, render_mode: str | None = None) -> gym.Env:
    """One env of the run (what the evaluations play)."""
    import gymnasium as gym

    import musicenv  # noqa: F401  (registers the envs)

    kwargs = dict(cfg.env_kwargs)
    if cfg.reward is not None:
        kwargs["reward"] = cfg.reward
    try:
        return gym.make(cfg.env_id, render_mode=render_mode, **kwargs)
    except TypeError as e:
        raise TrainConfigError(f"env_kwargs {sorted(cfg.env_kwargs)} rejected by {cfg.env_id}: {e}; "
                               f"see help(gymnasium.spec({cfg.env_id!r}).entry_point) for its arguments") from e
    except ValueError as e:
        if type(e).__name__ == "RewardSpecError":
            raise
        raise TrainConfigError(f"env_kwargs rejected by {cfg.env_id}: {e}") from e


#: Accepted ``TrainConfig.vec_env`` values (see :func:`make_vec_env`).
VEC_ENVS = ("batched", "dummy", "subproc")


class _EnvFactory:
    """Picklable env constructor for SubprocVecEnv."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def __call__(self) -> gym.Env:
        return make_env(self.cfg)


def make_vec_env(cfg: TrainConfig, monitor_file: Path | None = None) -> VecEnv:
    """``n_envs`` training envs under SB3's VecMonitor, as ``cfg.vec_env`` says.

    ``"batched"`` (the default): :class:`agents.vec_env.BatchedVecEnv`, all envs stepped
    by one call of the env's batched core, with the same transitions as ``"dummy"`` (SB3's
    DummyVecEnv over ``n_envs`` single envs) for the same seeds, at a fraction of its
    cost. ``"subproc"``: SubprocVecEnv, one process per env. MaskablePPO reaches the
    envs' ``action_masks()`` through ``env_method`` (SB3 looks it up through the
    gymnasium wrappers), so no ActionMasker wrapper is needed.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    if cfg.vec_env == "batched":
        from agents.vec_env import BatchedVecEnv

        kwargs = dict(cfg.env_kwargs)
        if cfg.reward is not None:
            kwargs["reward"] = cfg.reward
        venv = BatchedVecEnv(cfg.env_id, cfg.n_envs, kwargs)
    else:
        fns = [_EnvFactory(cfg) for _ in range(cfg.n_envs)]
        venv = SubprocVecEnv(fns) if cfg.vec_env == "subproc" else DummyVecEnv(fns)
    return VecMonitor(venv, filename=str(monitor_file) if monitor_file else None)


# ------------------------------------------------------------------------------ the run
@dataclass
class RunResult:
    """What :func:`train` returns."""

    run_dir: Path
    config: TrainConfig
    model: BaseAlgorithm
    final_metrics: dict[str, Any]
    timesteps: int
    wall_time: float  # seconds of this call (training, evaluations, saving)


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


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a run directory; :class:`RunStateError` if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunStateError(f"cannot read {str(path)!r}: not a JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise RunStateError(f"cannot read {str(path)!r}: expected a JSON object, got {type(data).__name__}")
    return data


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
        policy = _policy_class(algo_cls, cfg.policy, "config") if ":" in str(cfg.policy) else cfg.policy
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


_build_model = build_model


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


def _update_run_state(run_dir: Path, **changes: Any) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    state = _read_json(path) if path.exists() else {}
    state.update(changes)
    write_json(path, state)
    return state


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
    _set_threads(cfg)
    # The constructor validates the hyperparameters against the envs; do it before
    # anything is written. (The run's model is built again below, on the monitored envs
    # of the run directory; both are seeded alike.)
    venv = make_vec_env(cfg)
    try:
        _build_model(cfg, venv, run_dir)
    finally:
        venv.close()
    if force and (run_dir / CONFIG_FILE).exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    _write_text(run_dir / CONFIG_FILE, _config_yaml(cfg))
    write_json(run_dir / VERSIONS_FILE, package_versions())
    _update_run_state(run_dir, status="running", config_hash=config_hash(config_identity(cfg)),
                      seed=cfg.seed, timesteps=0, n_timesteps=cfg.n_timesteps,
                      seeds={"training": [cfg.seed, cfg.seed + cfg.n_envs - 1],
                             "eval": [cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes - 1],
                             "test": [cfg.test_seed, cfg.test_seed + cfg.final_episodes - 1]},
                      started=_now(), resumes=[], argv=sys.argv, host=platform.node(), pid=os.getpid())
    model = _build_model(cfg, make_vec_env(cfg, run_dir / "train.monitor.csv"), run_dir)
    return _learn(cfg, model, run_dir, callbacks, reset_num_timesteps=True)


def _config_yaml(cfg: TrainConfig) -> str:
    header = ("# Resolved training config written by agents.train; rerun with\n"
              "#   musicenv train --config THIS_FILE --out NEW_RUN_DIR\n")
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _set_threads(cfg: TrainConfig) -> None:
    import torch

    torch.set_num_threads(cfg.n_threads)


def _learn(cfg: TrainConfig, model: BaseAlgorithm, run_dir: Path, extra: Sequence[BaseCallback], *,
           reset_num_timesteps: bool, curve_keep_until: int | None = None) -> RunResult:
    from agents.callbacks import save_checkpoint

    t0 = time.perf_counter()
    remaining = cfg.n_timesteps - (0 if reset_num_timesteps else model.num_timesteps)
    spec = get_algorithm(cfg.algo)
    try:
        if remaining > 0:
            callbacks = _callbacks(cfg, run_dir, curve_keep_until, extra)
            if _progress_lines(cfg):
                from agents.callbacks import ProgressLines

                callbacks.append(ProgressLines(cfg.n_timesteps, label=f"training {run_dir.name}"))
            model.learn(remaining, callback=callbacks,
                        progress_bar=cfg.progress and not _progress_lines(cfg),
                        reset_num_timesteps=reset_num_timesteps, tb_log_name=type(model).__name__)
    except KeyboardInterrupt:
        save_checkpoint(model, run_dir / CHECKPOINT_DIR, save_replay_buffer=spec.off_policy, algo=spec.name,
                        config_hash=config_hash(config_identity(cfg)))
        _update_run_state(run_dir, status="interrupted", timesteps=int(model.num_timesteps), stopped=_now())
        raise
    except BaseException as e:
        _update_run_state(run_dir, status="failed", timesteps=int(model.num_timesteps), stopped=_now(),
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
    _update_run_state(run_dir, status="evaluating", timesteps=int(model.num_timesteps))
    metrics = final_evaluation(model, cfg, progress=_progress_lines(cfg))
    write_json(run_dir / FINAL_METRICS_FILE, metrics)
    _update_run_state(run_dir, status="finished", timesteps=int(model.num_timesteps), finished=_now())
    return RunResult(run_dir, cfg, model, metrics, int(model.num_timesteps), time.perf_counter() - t0)


def baseline_source(name: str, env: gym.Env) -> Callable[[int], Callable[[Any], int]]:
    """``make_policy(seed)`` of a baseline: a ``musicenv.compose`` source by name
    (``random``: uniformly random legal tokens, ``rule``, and ``prior`` once the note-RNN
    registers it). Without ``musicenv.compose``, only ``random`` exists."""
    try:
        from musicenv.compose import get_source
    except ImportError:
        if name != "random":
            raise TrainConfigError(f"unknown baseline {name!r}; valid choices: random") from None
        from musicenv.baselines import RandomPolicy

        return lambda seed: RandomPolicy(env, seed=seed, masked=True)
    try:
        info, argument = get_source(name)
    except ValueError as e:
        raise TrainConfigError(f"baseline {name!r}: {e}") from e
    return info.factory(env, argument=argument, temperature=1.0)


def _progress_lines(cfg: TrainConfig) -> bool:
    """Progress as plain lines: asked for, and stdout is not a terminal (a pipe, a log)."""
    return bool(cfg.progress) and not sys.stdout.isatty()


def final_evaluation(model: BaseAlgorithm, cfg: TrainConfig, *, progress: bool = False) -> dict[str, Any]:
    """Greedy and sampled episodes on the held-out test seeds, and each of
    ``cfg.baselines`` (by default the random policy, the floor every reward design is
    compared against) on the same pieces. ``progress`` prints a line at least every
    10 s or 5 % of the pieces."""
    from agents.callbacks import ProgressPrinter, evaluate, evaluate_per_piece

    seeds = list(range(cfg.test_seed, cfg.test_seed + cfg.final_episodes))
    printer = (ProgressPrinter("final evaluation", len(seeds) * (2 + len(cfg.baselines)), unit="pieces")
               if progress else None)
    env = make_env(cfg)
    try:
        out: dict[str, Any] = {"timesteps": int(model.num_timesteps), "episodes": cfg.final_episodes,
                               "seeds": [seeds[0], seeds[-1]], "reward": cfg.reward}
        for mode, deterministic in (("greedy", True), ("sampled", False)):
            out[mode] = evaluate(env, ModelPolicy(model, env, deterministic=deterministic, seed=cfg.test_seed),
                                 seeds, progress=printer)
        out["baselines"] = {name: evaluate_per_piece(env, baseline_source(name, env), seeds, progress=printer)
                            for name in cfg.baselines}
    finally:
        env.close()
    return out


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


def _sb3_zip_checkpoints(run_dir: Path) -> list[tuple[int, Path, Path | None]]:
    return checkpoints(run_dir, sb3_zip=True)


def _unsafe_hint(run_dir: Path) -> str:
    zips = [p.name for p in (run_dir / MODEL_FILE, *(c[1] for c in _sb3_zip_checkpoints(run_dir))) if p.is_file()]
    if not zips:
        return ""
    return (f"; it holds only SB3 .zip files ({', '.join(zips[:3])}), as older musicenv versions wrote. They are "
            "pickles and can run code when loaded: if you trust whoever wrote this run, pass --unsafe-load-sb3-zip "
            "(compose: the source run-unsafe-sb3-zip:RUN_DIR)")


def _alive(host: Any, pid: Any) -> bool:
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


def _load_run_config(run_dir: Path) -> TrainConfig:
    if not run_dir.is_dir():
        raise RunStateError(f"{str(run_dir)!r} is not a run directory (no such directory)")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunStateError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE})")
    return TrainConfig.from_yaml(run_dir / CONFIG_FILE)


def _load_agent(cfg: TrainConfig, path: Path, venv: VecEnv | None, run_dir: Path,
                buffer: Path | None = None) -> BaseAlgorithm:
    """Build the run's algorithm from its config and copy in the agent file's tensors
    (and the replay buffer's arrays); :class:`agents.agent_io.AgentFileError` if a file
    is damaged or does not fit."""
    from agents.agent_io import load_replay_buffer, read_agent, restore_agent

    payload, meta = read_agent(path)  # first: a damaged file costs no model building
    model = build_model(cfg, venv, run_dir)
    restore_agent(model, payload, meta, path)
    if buffer is not None and getattr(model, "replay_buffer", None) is not None:
        load_replay_buffer(model.replay_buffer, buffer)
    return model


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
    cfg = _load_run_config(run_dir)
    cfg = resolve_config(cfg, read_hyperparams=False)
    cfg.out = str(run_dir)
    if progress is not None:
        cfg.progress = progress
    state = _read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).exists() else {}
    if not isinstance(state, dict):
        raise RunStateError(f"{str(run_dir / RUN_FILE)!r} is not a JSON object")
    if state.get("status") == "finished":
        raise RunStateError(f"{str(run_dir)!r} finished ({state.get('timesteps')} timesteps); nothing to resume. "
                            "Start a new run with --config to train longer.")
    if state.get("status") == "running" and _alive(state.get("host"), state.get("pid")):
        raise RunStateError(f"{str(run_dir)!r} is still being trained by process {state['pid']} on this machine; "
                            "stop it first")
    spec = get_algorithm(cfg.algo)
    candidates = checkpoints(run_dir)
    if state.get("status") == "evaluating" and (run_dir / AGENT_FILE).is_file():
        candidates = [(-1, run_dir / AGENT_FILE, None), *candidates]  # trained; only the final evaluation is missing
    unsafe = False
    if not candidates and unsafe_load_sb3_zip:
        candidates, unsafe = _sb3_zip_checkpoints(run_dir), True
        if state.get("status") == "evaluating" and (run_dir / MODEL_FILE).is_file():
            candidates = [(-1, run_dir / MODEL_FILE, None), *candidates]
    elif not candidates and _unsafe_hint(run_dir):
        raise RunStateError(f"cannot resume {str(run_dir)!r} safely{_unsafe_hint(run_dir)}")
    _set_threads(cfg)
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
                    model = _load_agent(cfg, path, venv, run_dir, buffer if spec.off_policy else None)
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
    except BaseException:
        venv.close()
        raise
    if skipped:
        restored["skipped"] = skipped
    resumes.append({"at": _now(), **restored})
    _update_run_state(run_dir, status="running", resumes=resumes, host=platform.node(), pid=os.getpid())
    fresh = restored["checkpoint"] is None
    # curve rows newer than the checkpoint are redone; with no checkpoint, all of them
    return _learn(cfg, model, run_dir, callbacks, reset_num_timesteps=fresh,
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
    cfg = _load_run_config(run_dir)
    cfg = resolve_config(cfg, read_hyperparams=False)
    cfg.device = _check_device(device)
    if checkpoint is not None:
        path = Path(checkpoint)
    elif (run_dir / AGENT_FILE).is_file():
        path = run_dir / AGENT_FILE
    else:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            path = ckpt[0]
        elif unsafe_load_sb3_zip and ((run_dir / MODEL_FILE).is_file() or _sb3_zip_checkpoints(run_dir)):
            path = run_dir / MODEL_FILE if (run_dir / MODEL_FILE).is_file() else _sb3_zip_checkpoints(run_dir)[0][1]
        else:
            raise RunStateError(f"{str(run_dir)!r} has neither {AGENT_FILE} nor a checkpoint yet"
                                f"{_unsafe_hint(run_dir)}")
    if not path.is_file():
        raise RunStateError(f"no agent file {str(path)!r}")
    if path.suffix == ".zip":
        if not unsafe_load_sb3_zip:
            raise RunStateError(f"{str(path)!r} is an SB3 .zip (a pickle, which can run code when loaded); musicenv "
                                "loads it only with --unsafe-load-sb3-zip, for runs you trust")
        return _load_sb3_zip(cfg, path, None, run_dir, None, cfg.device), cfg
    return _load_agent(cfg, path, None, run_dir), cfg


class ModelPolicy:
    """A trained SB3 model as the ``policy(obs) -> action`` callable of
    :func:`musicenv.baselines.run_episode`.

    ``deterministic=True`` plays the greedy action; False samples from the policy's
    distribution (for DQN: epsilon-greedy at the model's current exploration rate).
    With a ``seed``, sampling draws from random streams of its own (torch's CPU
    generator and numpy's global one are swapped in around each ``predict`` and
    restored after), so the pieces are reproducible and playing them changes no one
    else's random state. MaskablePPO models get the env's ``action_masks()`` at every
    step; RecurrentPPO models carry their LSTM state through an episode. A new episode
    is recognised by the observation's ``progress`` being 0 (every musicenv env has
    it); for other observations call :meth:`reset` between episodes.
    """

    def __init__(self, model: BaseAlgorithm, env: gym.Env, deterministic: bool = False,
                 seed: int | None = None) -> None:
        self.model, self.env, self.deterministic = model, env, deterministic
        params = inspect.signature(model.predict).parameters
        self.masked = "action_masks" in params
        self.recurrent = hasattr(model.policy, "lstm_actor")
        self._streams: list[Any] | None = None
        if seed is not None and not deterministic:
            import torch

            self._streams = [torch.Generator().manual_seed(int(seed)).get_state(),
                             np.random.RandomState(int(seed) % 2**32).get_state(),
                             np.random.default_rng(int(seed)).bit_generator.state]
        self.reset()

    def reset(self) -> None:
        """Forget the hidden state (call between episodes of envs without ``progress``)."""
        self._state: Any = None
        self._episode_start = np.ones((1,), dtype=bool)

    def __call__(self, obs: Any) -> int:
        if isinstance(obs, Mapping) and "progress" in obs and float(np.asarray(obs["progress"]).flat[0]) == 0.0:
            self.reset()
        kwargs: dict[str, Any] = {"deterministic": self.deterministic}
        if self.masked:
            kwargs["action_masks"] = self.env.get_wrapper_attr("action_masks")()
        if self.recurrent:
            kwargs.update(state=self._state, episode_start=self._episode_start)
        action, state = self._predict(obs, kwargs)
        if self.recurrent:
            self._state = state
            self._episode_start = np.zeros((1,), dtype=bool)
        return int(np.asarray(action).reshape(-1)[0])

    def _predict(self, obs: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        if self._streams is None:
            return self.model.predict(obs, **kwargs)
        import torch

        # Sampling draws from torch's CPU generator (policy distributions), numpy's
        # global one and the model's action space (DQN's epsilon-greedy): swap in ours.
        space_rng = self.model.action_space.np_random.bit_generator
        saved = torch.get_rng_state(), np.random.get_state(), space_rng.state
        torch.set_rng_state(self._streams[0])
        np.random.set_state(self._streams[1])
        space_rng.state = self._streams[2]
        try:
            return self.model.predict(obs, **kwargs)
        finally:
            self._streams = [torch.get_rng_state(), np.random.get_state(), space_rng.state]
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            space_rng.state = saved[2]


def _run_source(deterministic: bool, unsafe: bool = False) -> Callable[..., Callable[[int], ModelPolicy]]:
    """A ``musicenv.compose`` source factory playing a run directory's model."""

    def factory(env: gym.Env, *, argument: str | None, temperature: float) -> Callable[[int], ModelPolicy]:
        if not argument:
            raise RunStateError("the run source needs a run directory: run:RUN_DIR")
        model, cfg = load_run(argument, unsafe_load_sb3_zip=unsafe)
        env_id = env.spec.id if env.spec is not None else None
        if env_id != cfg.env_id:
            raise RunStateError(f"run {argument!r} was trained on {cfg.env_id}, not {env_id}; pass --env {cfg.env_id}")
        if env.observation_space != model.observation_space or env.action_space != model.action_space:
            raise RunStateError(f"run {argument!r} was trained with env_kwargs {cfg.env_kwargs}, whose observation or "
                                f"action space differs from this env's ({_space_difference(model, env)}); compose "
                                "with the same settings")
        return lambda seed: ModelPolicy(model, env, deterministic=deterministic, seed=seed)

    return factory


def _space_difference(model: BaseAlgorithm, env: gym.Env) -> str:
    """What differs between a model's spaces and an env's, with the env keyword that
    sets it where one does (a run trained before a default changed records no value)."""
    from gymnasium import spaces

    if env.action_space != model.action_space:
        return f"actions: the run's {model.action_space}, this env's {env.action_space}"
    ours, theirs = model.observation_space, env.observation_space
    if not (isinstance(ours, spaces.Dict) and isinstance(theirs, spaces.Dict)):
        return f"observations: the run's {ours}, this env's {theirs}"
    parts = []
    for key in sorted(set(ours.spaces) | set(theirs.spaces)):
        a, b = ours.spaces.get(key), theirs.spaces.get(key)
        if a == b:
            continue
        if a is None or b is None:
            parts.append(f"block {key!r} only in {'this env' if a is None else 'the run'}"
                         + (" (observe_prior)" if key == "prior" else ""))
            continue
        hint = f"; history_length={a.shape[0]}" if key == "history" and a.shape[1:] == b.shape[1:] else ""
        parts.append(f"block {key!r}: the run's shape {a.shape}, this env's {b.shape}{hint}")
    return ", ".join(parts)


#: Env settings that shape the observation: a run is composed with the values it was trained with.
OBSERVATION_KWARGS = ("observe_prior", "history_length")


def _run_observation_kwargs(argument: str | None) -> dict[str, Any]:
    """The observation-shaping env settings of run ``argument`` (for ``musicenv compose``)."""
    if not argument:
        return {}
    cfg = _load_run_config(Path(argument).expanduser())
    return {k: v for k, v in cfg.env_kwargs.items() if k in OBSERVATION_KWARGS}


def _register_compose_sources() -> None:
    """Make run directories a ``musicenv compose`` source (``run:RUN_DIR``, sampled, and
    ``run-greedy:RUN_DIR``), when ``musicenv.compose`` exists."""
    try:
        from musicenv.compose import register_source
    except ImportError:
        return
    register_source("run", _run_source(False), argument="RUN_DIR", replace=True, env_kwargs=_run_observation_kwargs,
                    summary="a trained agent (a `musicenv train` run directory), sampling its policy")
    register_source("run-greedy", _run_source(True), argument="RUN_DIR", replace=True,
                    env_kwargs=_run_observation_kwargs,
                    summary="a trained agent (a `musicenv train` run directory), always its most likely token")
    register_source("run-unsafe-sb3-zip", _run_source(False, unsafe=True), argument="RUN_DIR", replace=True,
                    env_kwargs=_run_observation_kwargs,
                    summary="UNSAFE: a run of an older musicenv that has only SB3 model.zip (a pickle, which can "
                            "run code): only for runs you trust")


# ---------------------------------------------------------------------------------- CLI
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
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its latest checkpoint")
    p.add_argument("--force", action="store_true", help="replace the run already in --out (default: refuse)")
    p.add_argument("--unsafe-load-sb3-zip", action="store_true",
                   help="with --resume: allow a run of an older musicenv that has only SB3 .zip checkpoints; they "
                        "are pickles and can run code, so only for runs you trust")
    p.set_defaults(func=_cmd_train)


_register_compose_sources()
