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

Warm start
----------
``musicenv train --init-from RUN_DIR`` (``TrainConfig.init_from``) starts a new run from
the policy weights of another run (its ``agent.pt``, or its latest checkpoint), e.g. a
behaviour-cloned policy (``musicenv jam-pretrain``, :mod:`agents.jam_bc`). Only the
policy's parameters are copied; the optimiser, the timestep counter and the schedules
start fresh. The run must use the same algorithm, the same observation and action
spaces and the same network; otherwise training stops before anything is written,
saying what differs. The path is part of the run's identity.

Sampling from a run
-------------------
:func:`load_run` returns ``(model, config)``; :class:`ModelPolicy` turns a model into
the ``policy(obs) -> action`` callable that :func:`musicenv.baselines.run_episode`
plays (masks for MaskablePPO, LSTM state for RecurrentPPO). Two ``musicenv compose``
sources play a run (:mod:`agents.train.sources`): ``run:RUN_DIR`` samples the policy,
``run-greedy:RUN_DIR`` plays its most likely token::

    musicenv compose run:runs/ppo -n 8 --out out/ppo

Extending
---------
New algorithms (e.g. KL control) join with :func:`register_algorithm` and a
``agents/hyperparams/<name>.yml``; policies and features extractors built elsewhere
(e.g. from the note-RNN prior) are named by import path in the YAML
(``policy: "agents.policies:PriorPolicy"``,
``policy_kwargs: {features_extractor_class: "agents.policies:NoteRNNExtractor"}``);
``baselines`` names any ``musicenv compose`` source (``random``, ``rule``, ``prior``, ...) to be
played on the same held-out pieces as the agent.

Modules
-------
One concern each; this package re-exports their public names:
:mod:`~agents.train.algorithms` (the algorithm registry),
:mod:`~agents.train.config` (:class:`TrainConfig`, hyperparameter files, :func:`resolve_config`),
:mod:`~agents.train.envs` (:func:`make_env`, :func:`make_vec_env`),
:mod:`~agents.train.identity` (a run's identity and hash, reuse checks),
:mod:`~agents.train.run` (:func:`train`), :mod:`~agents.train.evaluation` (the final
evaluation and its baselines), :mod:`~agents.train.restore` (:func:`resume`,
:func:`load_run`), :mod:`~agents.train.sources` (the ``run`` compose sources) and
:mod:`~agents.train.cli` (``musicenv train``). The run directory's file names and state
live in :mod:`agents.rundir`, :class:`ModelPolicy` in :mod:`agents.sampling`.

These modules import torch and SB3 only inside functions, so ``musicenv``'s CLI can
list the ``train`` command without importing them.
"""


from agents.rundir import (
    AGENT_FILE,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CURVE_FILE,
    FINAL_METRICS_FILE,
    MODEL_FILE,
    RUN_FILE,
    TENSORBOARD_DIR,
    VERSIONS_FILE,
    checkpoints,
    json_safe,
    latest_checkpoint,
    package_versions,
    write_json,
)
from agents.sampling import ModelPolicy
from agents.train.algorithms import ALGORITHMS, AlgorithmSpec, get_algorithm, register_algorithm
from agents.train.cli import add_commands, config_from_args
from agents.train.config import (
    HYPERPARAMS_DIR,
    TrainConfig,
    algorithm_kwargs,
    load_hyperparams,
    resolve_config,
)
from agents.train.envs import VEC_ENVS, make_env, make_vec_env
from agents.train.errors import RunStateError, StaleRunError, TrainConfigError
from agents.train.evaluation import baseline_source, final_evaluation
from agents.train.identity import (
    UNHASHED_FIELDS,
    check_reusable,
    config_hash,
    config_identity,
    identity_difference,
    run_identity,
)
from agents.train.restore import load_run, resume
from agents.train.run import RunResult, build_model, train
from agents.train.sources import OBSERVATION_KWARGS, space_difference

__all__ = [
    "AGENT_FILE", "ALGORITHMS", "AlgorithmSpec", "CHECKPOINT_DIR", "CONFIG_FILE", "CURVE_FILE", "FINAL_METRICS_FILE",
    "HYPERPARAMS_DIR", "MODEL_FILE", "ModelPolicy", "OBSERVATION_KWARGS", "RUN_FILE", "RunResult", "RunStateError",
    "StaleRunError", "TENSORBOARD_DIR", "TrainConfig", "TrainConfigError", "UNHASHED_FIELDS", "VEC_ENVS",
    "VERSIONS_FILE", "add_commands", "algorithm_kwargs", "baseline_source", "build_model", "check_reusable",
    "checkpoints", "config_from_args", "config_hash", "config_identity", "final_evaluation", "get_algorithm",
    "identity_difference", "json_safe", "latest_checkpoint", "load_hyperparams", "load_run", "make_env",
    "make_vec_env", "package_versions", "register_algorithm", "resolve_config", "resume", "run_identity",
    "space_difference", "train", "write_json",
]
