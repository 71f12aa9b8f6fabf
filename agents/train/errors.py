"""The errors of training: a bad config (:class:`TrainConfigError`) and a run directory that
cannot be used as asked (:class:`RunStateError`, :class:`StaleRunError`, from
:mod:`agents.rundir`, re-exported here)."""

from __future__ import annotations

from agents.rundir import RunStateError, StaleRunError

__all__ = ["TrainConfigError", "RunStateError", "StaleRunError"]


class TrainConfigError(ValueError):
    """A training config (algorithm, env id, hyperparameter, YAML file, flag) is invalid."""

