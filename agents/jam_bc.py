"""Behaviour cloning of Bach's chords: an online chord policy to start RL from (ReaLchords' recipe).

ReaLchords (Wu et al. 2024) first fits an online chord model by maximum likelihood
on the data's melody/chord pairs, then fine-tunes it with RL, anchored to it. This
module does the first half for ``JamChords-v0``, as an SB3 MaskablePPO policy::

    musicenv jam-pretrain --out runs/jam_bc
    python -m experiments.jam_eval --runs runs/jam_bc                  # the cloned policy alone
    musicenv train --algo maskable_ppo --env JamChords-v0 --env-kwargs split=train \\
        --init-from runs/jam_bc --out runs/jam_bc_ppo                  # PPO started from it

* **Teacher.** The env is played over the training split's melodies (``split="train"``)
  while the chords agent plays the corpus's own chord track of each melody (Bach's
  chords, derived from all four voices; :func:`musicenv.jam.teacher_chord_tokens`
  keeps it legal: at most one change per beat), so every observation is the one the
  agent would see had it played Bach's chords so far (teacher forcing). With ``delay``
  (default 1) the teacher strikes each of Bach's changes that many 16ths after the
  beat, once the note struck on the beat has been heard: an online accompanist cannot
  know that note on the beat itself, so the on-beat teacher (``delay=0``) asks the
  policy to guess it (cloned: 0.567 note-in-chord on the test chorales), the delayed
  one to answer it (0.770; the teacher itself keeps 0.796 of Bach's 0.943). Each
  melody is played from every ``start_bar_stride``-th bar that leaves ``n_bars``
  bars, and ``pushes`` more times with a random push (the melody moved 1..11
  semitones from a random bar after the first, the teacher's chords moved with it:
  what recovering from the tritone push test looks like). The view is key-relative
  (the env's default), so no key augmentation is needed.
* **Fit.** The policy's masked action distribution (``policy.evaluate_actions`` with
  the env's action masks) is fitted to the teacher's actions by cross-entropy with
  Adam; the value head is left as built. The validation split's melodies (start
  bar 0, no push) measure the cross-entropy and the share of steps on which the
  policy's most likely action is the teacher's, after every epoch.
* **Output.** A normal run directory (``config.yml``, ``agent.pt``, ``run.json``,
  ``versions.json``, plus ``pretrain.json`` with the data sizes and the per-epoch
  losses), written all at once (a temporary folder renamed into place), so
  ``musicenv compose``, ``experiments.jam_eval --runs`` and ``musicenv train
  --init-from`` load it like any run. Nothing is pickled.

The run's ``config.yml`` is that of ``musicenv train --algo maskable_ppo --env
JamChords-v0`` with the given ``--hyperparams`` and ``--env-kwargs`` (the network
comes from ``policy_kwargs``): the RL run to continue with, e.g. ``musicenv train
--config runs/jam_bc/config.yml --init-from runs/jam_bc --out runs/jam_bc_ppo``. Its
``run.json`` records 0 RL timesteps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.rundir import (
    AGENT_FILE,
    CONFIG_FILE,
    RUN_FILE,
    RunStateError,
    now,
    package_versions,
    write_json,
)
from musicenv.files import staged_folder

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["PretrainError", "TeacherData", "collect_teacher_data", "fit_policy", "policy_cross_entropy", "pretrain", "add_commands",
           "PRETRAIN_FILE"]

ENV_ID = "JamChords-v0"
ALGO = "maskable_ppo"
PRETRAIN_FILE = "pretrain.json"


class PretrainError(ValueError):
    """Bad input to behaviour cloning (settings, data, output folder)."""


@dataclass
class TeacherData:
    """Teacher-forced steps: observations (a dict of (N, ...) float32 arrays), the
    action masks (N, 134) and the teacher's actions (N,) in the env's action space."""

    obs: dict[str, np.ndarray]
    masks: np.ndarray
    actions: np.ndarray
    episodes: int

    def __len__(self) -> int:
        return len(self.actions)


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PretrainError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def collect_teacher_data(env_kwargs: dict[str, Any] | None = None, *, start_bar_stride: int = 4, pushes: int = 1,
                         delay: int = 1, seed: int = 0, max_melodies: int | None = None) -> TeacherData:
    """Play ``JamChords-v0`` (made with ``env_kwargs``) over every melody of its pool with
    the data's chords as the chords agent's actions; see the module doc. ``delay``
    strikes the teacher's changes that many steps after the data's
    (:func:`musicenv.jam.teacher_chord_tokens`); ``seed`` draws the pushes;
    ``max_melodies`` keeps the first melodies of the pool only (tests)."""
    import gymnasium as gym

    import musicenv  # noqa: F401  (registers the envs)
    from musicenv.envs.jam import rotate_chord_codes, rotate_chord_tokens
    from musicenv.jam import teacher_chord_tokens

    start_bar_stride = _check_count(start_bar_stride, "start_bar_stride", 1)
    pushes = _check_count(pushes, "pushes", 0)
    kwargs = dict(env_kwargs or {})
    partner = kwargs.get("partner", "bach")
    if partner == "prior" or (isinstance(partner, (str, os.PathLike))
                              and os.path.isfile(os.path.join(partner, CONFIG_FILE))):
        raise PretrainError(f"partner {partner!r} has no chords to imitate; use a corpus with chords ('bach', or "
                            "a user's MIDI/MusicXML/ABC files whose chords musicenv.corpus derives)")
    env = gym.make(ENV_ID, **kwargs, disable_env_checker=True)
    try:
        core = env.unwrapped.core
        duet = core.duet
        T, bar, spb = duet.n_steps, duet.steps_per_bar, duet.steps_per_beat
        relative = duet.key_relative
        rng = np.random.default_rng(seed)
        pool = core.pool if max_melodies is None else core.pool[:_check_count(max_melodies, "max_melodies", 1)]
        obs_rows: dict[str, list[np.ndarray]] = {k: [] for k in env.observation_space.spaces}
        masks, actions = [], []
        episodes = 0
        env.reset(seed=seed)
        for i, mel in enumerate(pool):
            for start_bar in range(0, mel.n_steps // bar - duet.n_bars + 1, start_bar_stride):
                pushed = [{}] + [{"transpose": int(rng.integers(1, 12)), "transpose_bar": int(rng.integers(1, max(
                    duet.n_bars, 2)))} for _ in range(pushes)]
                for push in pushed:
                    obs, _ = env.reset(options={"melody": i, "start_bar": start_bar, **push})
                    codes = np.array(mel.chords[start_bar * bar:start_bar * bar + T], dtype=np.int64)
                    if push:
                        at = push["transpose_bar"] * bar
                        codes[at:] = rotate_chord_codes(codes[at:], np.array(-push["transpose"]))
                    teacher = teacher_chord_tokens(codes, spb, delay)
                    if relative:
                        teacher = rotate_chord_tokens(teacher[None, :], duet.tonic()[:1])[0]
                    for t in range(T):
                        mask = np.asarray(env.unwrapped.action_masks(), dtype=bool).reshape(-1)
                        a = int(teacher[t])
                        if not mask[a]:  # teacher_chord_tokens keeps to the mask; this would be a bug
                            raise RuntimeError(f"teacher action {a} is masked at step {t} of melody {mel.id}")
                        for k, v in obs.items():
                            obs_rows[k].append(np.asarray(v, dtype=np.float32))
                        masks.append(mask)
                        actions.append(a)
                        obs, _, done, _, _ = env.step(a)
                    if not done:
                        raise RuntimeError(f"the episode of melody {mel.id} did not end after {T} steps")
                    episodes += 1
    finally:
        env.close()
    if not actions:
        raise PretrainError("no melody is long enough to play; pass fewer n_bars")
    if all(a in (0, 1) for a in set(actions)):
        raise PretrainError(f"the melodies of partner {partner!r} have no chords (only N.C.); nothing to imitate")
    return TeacherData({k: np.stack(v) for k, v in obs_rows.items()}, np.stack(masks),
                       np.asarray(actions, dtype=np.int64), episodes)


def _batches(data: TeacherData, idx: np.ndarray, device: Any) -> tuple[dict, Any, np.ndarray]:
    import torch

    obs = {k: torch.as_tensor(v[idx], device=device) for k, v in data.obs.items()}
    return obs, torch.as_tensor(data.actions[idx], device=device), data.masks[idx]


def policy_cross_entropy(model: BaseAlgorithm, data: TeacherData, batch_size: int = 1024) -> dict[str, float]:
    """Mean cross-entropy (nats) of the teacher's actions under the policy's masked
    distribution, and the share of steps whose most likely legal action is the teacher's."""
    import torch

    policy = model.policy
    policy.set_training_mode(False)
    total, hits = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            idx = np.arange(lo, min(lo + batch_size, len(data)))
            obs, act, masks = _batches(data, idx, policy.device)
            dist = policy.get_distribution(obs, action_masks=masks)
            total += float(-dist.log_prob(act).sum())
            hits += int((dist.distribution.probs.argmax(dim=1) == act).sum())
    return {"cross_entropy": total / len(data), "accuracy": hits / len(data)}


def fit_policy(model: BaseAlgorithm, data: TeacherData, *, epochs: int = 8, batch_size: int = 256,
               learning_rate: float = 1e-3, max_grad_norm: float = 0.5, seed: int = 0,
               valid: TeacherData | None = None, log: Any = None) -> list[dict[str, float]]:
    """Fit ``model``'s policy to ``data`` by cross-entropy (see the module doc); one row
    per epoch (train loss, and the validation cross-entropy and accuracy when ``valid``)."""
    import torch

    epochs = _check_count(epochs, "epochs", 1)
    batch_size = _check_count(batch_size, "batch_size", 1)
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < float("inf")):
        raise PretrainError(f"learning_rate must be a positive number, got {learning_rate!r}")
    policy = model.policy
    opt = torch.optim.Adam(policy.parameters(), lr=float(learning_rate))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    rows = []
    for epoch in range(1, epochs + 1):
        policy.set_training_mode(True)
        order = rng.permutation(len(data))
        losses = []
        for lo in range(0, len(order), batch_size):
            obs, act, masks = _batches(data, order[lo:lo + batch_size], policy.device)
            _, log_prob, _ = policy.evaluate_actions(obs, act, action_masks=masks)
            loss = -log_prob.mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
            opt.step()
            losses.append(float(loss.detach()))
        row = {"epoch": epoch, "train_cross_entropy": float(np.mean(losses))}
        if valid is not None:
            row.update({f"valid_{k}": v for k, v in policy_cross_entropy(model, valid).items()})
        rows.append(row)
        if log is not None:
            print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  file=log, flush=True)
    policy.set_training_mode(False)
    return rows


def pretrain(out: str | os.PathLike, *, epochs: int = 15, hyperparams: dict[str, Any] | None = None,
             env_kwargs: dict[str, Any] | None = None, seed: int = 0, start_bar_stride: int = 4, pushes: int = 1,
             delay: int = 1, batch_size: int = 256, learning_rate: float = 1e-3, n_threads: int = 1, force: bool = False,
             max_melodies: int | None = None, log: Any = sys.stderr) -> Path:
    """Clone Bach's chords into a MaskablePPO policy for ``JamChords-v0`` and write it as
    the run directory ``out`` (see the module doc). ``env_kwargs`` default to
    ``split="train"``; the validation melodies are those of ``split="valid"``."""
    import torch
    from stable_baselines3.common.utils import set_random_seed

    from agents.agent_io import save_agent
    from agents.train.config import TrainConfig, resolve_config
    from agents.train.identity import config_hash, config_identity
    from agents.train.run import _check_new_run_dir, _config_yaml, build_model

    out = Path(out).expanduser()
    _check_new_run_dir(out, force=force)  # before any work
    kwargs = {"split": "train", **(env_kwargs or {})}
    if kwargs.get("split") == "test":
        raise PretrainError("split='test' holds the evaluation melodies; clone on 'train'")
    torch.set_num_threads(_check_count(n_threads, "n_threads", 1))
    cfg = resolve_config(TrainConfig(algo=ALGO, env_id=ENV_ID, env_kwargs=kwargs, hyperparams=dict(hyperparams or {}),
                                     seed=seed, out=str(out), n_threads=n_threads))
    set_random_seed(seed)  # the initial weights
    model = build_model(cfg)
    t0 = time.perf_counter()
    data = collect_teacher_data(cfg.env_kwargs, start_bar_stride=start_bar_stride, pushes=pushes, delay=delay,
                                seed=seed, max_melodies=max_melodies)
    valid_kwargs = {**cfg.env_kwargs, "split": "valid", "push_prob": 0.0}
    valid = collect_teacher_data(valid_kwargs, start_bar_stride=10**6, pushes=0, delay=delay, seed=seed,
                                 max_melodies=max_melodies)
    if log is not None:
        print(f"teacher data: {len(data)} steps of {data.episodes} episodes (validation: {len(valid)} steps); "
              f"{time.perf_counter() - t0:.0f} s", file=log, flush=True)
    before = policy_cross_entropy(model, valid)
    rows = fit_policy(model, data, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                      valid=valid, log=log)
    report = {"teacher": "the corpus's chord track (musicenv.jam.teacher_chord_tokens)", "delay": delay,
              "env_id": ENV_ID,
              "env_kwargs": cfg.env_kwargs, "valid_env_kwargs": valid_kwargs, "start_bar_stride": start_bar_stride,
              "pushes": pushes, "seed": seed, "epochs": epochs, "batch_size": batch_size,
              "learning_rate": learning_rate, "train_steps": len(data), "train_episodes": data.episodes,
              "valid_steps": len(valid), "valid_before": before, "curve": rows,
              "wall_time": time.perf_counter() - t0}
    # everything into a temporary sibling folder, then renamed into place: all or nothing
    with staged_folder(out, replace=force) as tmp:  # a non-empty out only with --force, checked above
        identity_hash = config_hash(config_identity(cfg))
        (tmp / CONFIG_FILE).write_text(_config_yaml(cfg), encoding="utf-8")
        write_json(tmp / "versions.json", package_versions())
        save_agent(model, tmp / AGENT_FILE, algo=ALGO, config_hash=identity_hash)
        write_json(tmp / PRETRAIN_FILE, report)
        write_json(tmp / RUN_FILE, {"status": "finished", "kind": "behaviour cloning (agents.jam_bc)",
                                    "config_hash": identity_hash, "seed": seed, "timesteps": 0,
                                    "finished": now(), "argv": sys.argv})
    return out


def _cmd(args: argparse.Namespace) -> int:
    from agents.train.cli import _parse_pairs
    from agents.train.errors import TrainConfigError

    try:
        out = pretrain(args.out, epochs=args.epochs, hyperparams=_parse_pairs(args.hyperparams, "--hyperparams"),
                       env_kwargs=_parse_pairs(args.env_kwargs, "--env-kwargs"), seed=args.seed,
                       start_bar_stride=args.start_bar_stride, pushes=args.pushes, delay=args.delay,
                       batch_size=args.batch_size,
                       learning_rate=args.learning_rate, n_threads=args.threads, force=args.force)
    except (PretrainError, TrainConfigError, RunStateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"run directory: {out}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``musicenv jam-pretrain`` (see the module doc)."""
    p = subparsers.add_parser(
        "jam-pretrain", help="clone Bach's chords into a JamChords-v0 MaskablePPO policy (start for RL)",
        description="Behaviour cloning for JamChords-v0 (ReaLchords' MLE start): play the training melodies with "
                    "the data's chords, fit the policy by cross-entropy, write a run directory that "
                    "`musicenv train --init-from` and `experiments.jam_eval --runs` load.")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write (new or empty)")
    p.add_argument("--epochs", type=int, default=15, help="passes over the teacher data (default: 15)")
    p.add_argument("--env-kwargs", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="JamChords-v0 keywords, values read as YAML (default: split=train)")
    p.add_argument("--hyperparams", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="MaskablePPO hyperparameters of the run's config (the network: policy_kwargs.net_arch=...); "
                        "give the same to `musicenv train --init-from`")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the pushes and the batches (default: 0)")
    p.add_argument("--start-bar-stride", type=int, default=4,
                   help="play each melody from every k-th bar that leaves n_bars bars (default: 4)")
    p.add_argument("--pushes", type=int, default=1, help="pushed copies of each excerpt (default: 1)")
    p.add_argument("--delay", type=int, default=1,
                   help="strike each of the teacher's chord changes this many steps after the data's, once the "
                        "note on the beat is heard (0: on the beat, as the data; default: 1)")
    p.add_argument("--batch-size", type=int, default=256, help="(default: 256)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's step size (default: 1e-3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--force", action="store_true", help="replace the run already in --out")
    p.set_defaults(func=_cmd)
