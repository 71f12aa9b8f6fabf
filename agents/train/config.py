"""Training configs: :class:`TrainConfig`, the hyperparameter files and
:func:`resolve_config`, which validates a config and fills in everything a run needs.

See :mod:`agents.train` ("Configuration") for the file format and the overrides.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from agents.train.algorithms import get_algorithm, import_path
from agents.train.envs import VEC_ENVS, make_env
from agents.train.errors import TrainConfigError
from agents.train.evaluation import baseline_source

if TYPE_CHECKING:
    import gymnasium as gym

__all__ = ["ACTIVATIONS", "HYPERPARAMS_DIR", "RESERVED_KEYS", "SCHEDULE_KEYS", "SPECIAL_KEYS", "TrainConfig",
           "algorithm_kwargs", "check_device", "load_hyperparams", "read_yaml", "resolve_config"]

#: Folder of the shipped rl-zoo3-style hyperparameter files, ``<algo>.yml``.
HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"

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
    init_from: str | None = None  # a run directory whose policy weights start this run (--init-from)

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
        return cls.from_dict(read_yaml(Path(path)), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_yaml(path: Path) -> Any:
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
    data = read_yaml(file)
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


def policy_class(algo_cls: type, policy: Any, source: str) -> type:
    if isinstance(policy, str) and ":" in policy:
        return import_path(policy, what=f"{source}: policy")
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
    policy_cls = policy_class(algo_cls, cfg.policy, source)
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

    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from):
        raise TrainConfigError(f"init_from must be the path of a run directory, got {cfg.init_from!r}")
    cfg.reward = _resolve_reward(cfg.reward)
    _check_yaml_safe(cfg.env_kwargs, "env_kwargs")
    _check_yaml_safe(cfg.hyperparams, "hyperparams (give classes as 'module:Name' strings)")
    if isinstance(cfg.baselines, str) or not all(isinstance(b, str) for b in cfg.baselines):
        raise TrainConfigError(f"baselines must be a list of source names, got {cfg.baselines!r}")
    cfg.baselines = list(cfg.baselines)
    cfg.device = check_device(cfg.device)
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
    """The env's constructor keywords that have plain default values (not ``reward``),
    the subclass's first: a constructor that passes ``**kwargs`` on to its base class
    (the Jam views) has the base's keywords too."""
    unwrapped = env.unwrapped
    core = getattr(unwrapped, "core_class", None)
    out: dict[str, Any] = {}
    for cls in (core or type(unwrapped)).__mro__:
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters
        for name, p in params.items():
            if (p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                    and name not in ("self", "batch_size", "num_envs", "reward", "render_mode")
                    and p.default is not inspect.Parameter.empty
                    and (p.default is None or type(p.default) in (bool, int, float, str))):
                out.setdefault(name, p.default)
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return out


def check_device(device: Any) -> str:
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



def _resolve_reward(reward: Any) -> Any:
    """Check the spec resolves (``rewards.make``) and inline a YAML file's mapping, so the
    run's config reproduces it without the file."""
    import rewards

    if reward is None:
        return None
    rewards.make(reward)  # raises RewardSpecError naming the available terms
    if isinstance(reward, (str, os.PathLike)) and os.fspath(reward).endswith((".yml", ".yaml")):
        reward = read_yaml(Path(reward))
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
                out[key] = import_path(value, what=f"{source}, policy_kwargs.activation_fn (or one of "
                                                    f"{', '.join(ACTIVATIONS)})")
        elif key.endswith("_class"):
            out[key] = import_path(value, what=f"{source}, policy_kwargs.{key}")
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


