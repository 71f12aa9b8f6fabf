"""The algorithm registry: what ``musicenv train --algo NAME`` can train.

An algorithm is an :class:`AlgorithmSpec` (the ``"module:Class"`` of an SB3-style
algorithm, its default policy and how training drives it) registered with
:func:`register_algorithm`, plus an rl-zoo3-style ``agents/hyperparams/<name>.yml``.
Nothing is imported until an algorithm is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.train.errors import TrainConfigError

__all__ = ["ALGORITHMS", "AlgorithmSpec", "get_algorithm", "import_path", "register_algorithm"]


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
        return import_path(self.class_path, what=f"algorithm {self.name!r}")


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
register_algorithm(AlgorithmSpec("maskable_kl_ppo", "agents.kl_anchor:AnchoredMaskablePPO", masked=True))
register_algorithm(AlgorithmSpec("kl_ppo", "agents.kl_control:KLPPO", default_policy="agents.policies:PriorActorCriticPolicy"))


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered under ``name`` or one of its aliases."""
    if not isinstance(name, str) or _norm_name(name) not in _ALIASES:
        raise TrainConfigError(f"unknown algorithm {name!r}; valid choices: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[_ALIASES[_norm_name(name)]]


def import_path(path: str, what: str) -> Any:
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise TrainConfigError(f"{what}: {path!r} is not an import path of the form 'package.module:Name'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise TrainConfigError(f"{what}: cannot import {path!r}: {e}") from e


