"""The GAN critic at run time: the ``discriminator`` reward term and the ``gan`` compose source.

:class:`DiscriminatorReward` (``"discriminator"`` in :mod:`rewards`, which imports this
module by name on first use): the critic's calibrated score of the finished melody,
optionally as per-step shaping, optionally updating the critic on the agent's own
episodes (SeqGAN-style); see its docstring. :func:`gan_source` plays the generator in
``musicenv compose gan``. The model is :mod:`agents.models.gan`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from agents.models.checkpoint import grid_difference, load_frozen
from agents.models.gan import (
    DEFAULT_GAN,
    CheckpointError,
    MelodyGAN,
    SegmentSet,
    critic_step,
    random_token_melodies,
)
from rewards.base import RewardSpecError, RewardTerm

__all__ = ["DiscriminatorReward", "GANPolicy", "gan_source"]


def _load_frozen(path: Path) -> MelodyGAN:
    return load_frozen(MelodyGAN.load, path, CheckpointError, "GAN")


class DiscriminatorReward(RewardTerm):
    """How much the GAN critic takes the melody for a corpus melody (an adversarial reward).

    The critic of a :class:`MelodyGAN` (default: the shipped Bach GAN) scores the finished
    melody, with the episode's key (and chord track, if the critic is conditioned on it),
    at the last step; every other step gets 0 (``mode="terminal"``). The raw WGAN critic
    score has no fixed scale, so it is calibrated: ``(D(x) - m_real) / (m_real - m_random)``,
    where ``m_real`` is the critic's mean over 256 reference (corpus) segments and
    ``m_random`` its mean over 256 uniformly random token lines, both fixed sets drawn
    with ``seed``. So 0 means "as real as the average Bach segment", -1 "as bad as
    random tokens"; values are clipped to [-``clip``, ``clip``].

    ``mode="shaped"``: per-step potential-based shaping with the same total. After step t
    the potential is the calibrated score of the prefix written so far (the critic is
    length-agnostic; short prefixes are outside what it was trained on, so early values
    are rough), and the step's reward is the change in potential, ``Phi_t - Phi_{t-1}``
    with ``Phi_{-1} = 0``. The rewards of an episode sum exactly to the terminal score.
    Costs one critic pass per step.

    SeqGAN-style updates (``update_every`` > 0, Yu et al. 2017): the term keeps every
    finished episode (scored first, with the critic as it was) and once it holds
    ``update_every`` of them it runs ``update_steps`` WGAN-GP critic steps, each on up
    to ``update_batch`` of those episodes (as fakes, with their own keys/chords) against
    as many reference segments drawn at random (in a random key if the GAN was trained
    in all 12), Adam with ``lr``; then recalibrates and empties its store. The term then
    owns a private copy of the critic (``n_updates`` counts the updates; pickling keeps
    the updated weights). Needs episodes as long as the GAN's segments.

    Works on the GAN's grid and bar length (4/4 at 16ths for the shipped one); episodes
    of other lengths are scored whole (the critic saw ``seq_len``-step segments). The
    shipped critic was trained on the chorales in their own keys, so it judges melodies in
    keys the chorales seldom use from little data (``key="major"``/``"minor"`` env settings
    do not avoid this; a GAN trained with ``musicenv train-gan --augment`` does).
    Source: the critic of Gulrajani et al. 2017 (WGAN-GP); as a reward, SeqGAN (Yu et al.
    2017) and ORGAN (Guimaraes et al. 2017). Range [-clip, clip], default [-5, 5].
    """

    name: ClassVar[str] = "discriminator"
    PARAMS: ClassVar[dict[str, Any]] = {"checkpoint": "default", "mode": "terminal", "clip": 5.0,
                                        "update_every": 0, "update_steps": 1, "update_batch": 32,
                                        "lr": 1e-4, "seed": 0}

    def validate(self) -> None:
        p = self.params
        ck = p["checkpoint"]
        if not isinstance(ck, (str, os.PathLike)) or ck == "":
            raise RewardSpecError(f"discriminator: checkpoint must be 'default' or a path, got {ck!r}")
        if p["mode"] not in ("terminal", "shaped"):
            raise RewardSpecError(f"discriminator: mode must be 'terminal' or 'shaped', got {p['mode']!r}")
        if not p["clip"] > 0:
            raise RewardSpecError(f"discriminator: clip must be > 0, got {p['clip']!r}")
        for k in ("update_every", "update_steps", "update_batch", "seed"):
            if isinstance(p[k], bool) or not isinstance(p[k], (int, np.integer)) or p[k] < 0:
                raise RewardSpecError(f"discriminator: {k} must be an integer >= 0, got {p[k]!r}")
        if p["update_steps"] < 1 or p["update_batch"] < 1:
            raise RewardSpecError("discriminator: update_steps and update_batch must be >= 1")
        if not p["lr"] > 0:
            raise RewardSpecError(f"discriminator: lr must be > 0, got {p['lr']!r}")

    def _path(self) -> Path:
        ck = self.params["checkpoint"]
        return DEFAULT_GAN if ck == "default" else Path(ck).expanduser()

    @property
    def model(self) -> MelodyGAN:
        if getattr(self, "_model", None) is None:
            try:
                model = _load_frozen(self._path())
            except CheckpointError as e:
                raise RewardSpecError(f"discriminator: {e}") from e
            if self.params["update_every"]:
                model = copy.deepcopy(model)  # updates must not leak into other terms
                for p in model.critic.parameters():
                    p.requires_grad_(True)
                saved = getattr(self, "_updated_state", None)
                if saved is not None:
                    model.critic.load_state_dict({k: torch.from_numpy(v) for k, v in saved.items()})
            self._model = model
            self._calibration = None
        return self._model

    @property
    def n_updates(self) -> int:
        return getattr(self, "_n_updates", 0)

    # -- calibration ----------------------------------------------------------------------
    def _calibration_sets(self, T: int) -> tuple[SegmentSet, np.ndarray, np.ndarray]:
        model = self.model
        rng = np.random.default_rng(self.params["seed"])
        n = 256
        ref = model.reference
        if ref is None or not len(ref):
            raise RewardSpecError(f"discriminator: checkpoint {self._path()} holds no reference segments")
        real = ref.subset(rng.integers(0, len(ref), n))
        if real.seq_len != T:
            reps = -(-T // real.seq_len)
            real = SegmentSet(np.tile(real.tokens, reps)[:, :T], real.keys, np.tile(real.chords, reps)[:, :T],
                              real.grid, real.steps_per_bar)
        rand = random_token_melodies(n, T, model.grid, seed=int(self.params["seed"]) + 1)
        return real, rand, real.keys

    def _calibrate(self, T: int) -> tuple[float, float]:
        real, rand, keys = self._calibration_sets(T)
        m_real = float(self.model.score(real.tokens, real.keys, real.chords).mean())
        m_rand = float(self.model.score(rand, keys, real.chords).mean())
        scale = m_real - m_rand
        if not scale > 1e-9:
            scale = 1.0  # a critic that cannot tell random tokens from the corpus: raw offsets
        return m_real, scale

    def _scaled(self, raw: np.ndarray) -> np.ndarray:
        if getattr(self, "_calibration", None) is None:  # e.g. after unpickling
            self._calibration = self._calibrate(self._n_steps)
        m_real, scale = self._calibration
        clip = float(self.params["clip"])
        return np.clip((raw - m_real) / scale, -clip, clip)

    # -- protocol ---------------------------------------------------------------------------
    def bind(self, batch) -> None:
        from musicenv.core import K_STEPS_PER_BAR

        model = self.model
        if model.grid != batch.grid:
            raise RewardSpecError(f"discriminator: the GAN was {grid_difference(model.grid, batch.grid)}, the "
                                  "environment's grid")
        bar = int(batch.consts[K_STEPS_PER_BAR])
        if bar != model.config.steps_per_bar:
            raise RewardSpecError(f"discriminator: the GAN's bars have {model.config.steps_per_bar} steps "
                                  f"(4/4 at 16ths for the shipped one), the environment's {bar}")
        if self.params["update_every"] and batch.n_steps != model.config.seq_len:
            raise RewardSpecError(
                f"discriminator: update_every needs episodes of the GAN's {model.config.seq_len} steps "
                f"(n_bars={model.config.seq_len // bar}); the environment's have {batch.n_steps}")
        self._n_steps = batch.n_steps
        self._calibration = self._calibrate(batch.n_steps)
        self._potential = np.zeros(batch.batch_size)
        self._store: list[tuple[np.ndarray, int, np.ndarray]] = []

    def reset(self, batch, mask: np.ndarray) -> None:
        if getattr(self, "_potential", None) is None or len(self._potential) != batch.batch_size:
            self.bind(batch)
        self._potential[mask] = 0.0

    def _score_rows(self, batch, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        model = self.model
        chords = batch.chords[rows, :tokens.shape[1]] if "chord" in model.config.conditioning else None
        return self._scaled(model.score(tokens, batch.key[rows], chords))

    def step(self, batch, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        out = np.zeros(batch.batch_size)
        t = batch.t
        last = active & (t == batch.n_steps - 1)
        if self.params["mode"] == "shaped":
            # Rows are grouped by step so that each group's prefixes share a length.
            for step_t in np.unique(t[active]):
                rows = np.flatnonzero(active & (t == step_t))
                prefix = np.concatenate([batch.tokens[rows, :step_t], actions[rows, None]], axis=1)
                phi = self._score_rows(batch, rows, prefix)
                out[rows] = phi - self._potential[rows]
                self._potential[rows] = phi
            finished = np.flatnonzero(last)
        else:
            finished = np.flatnonzero(last)
            if finished.size:
                full = np.concatenate([batch.tokens[finished, :batch.n_steps - 1], actions[finished, None]], axis=1)
                out[finished] = self._score_rows(batch, finished, full)
        if self.params["update_every"] and finished.size:
            for b in finished:
                full = np.concatenate([batch.tokens[b, :batch.n_steps - 1], [actions[b]]]).astype(np.int64)
                self._store.append((full, int(batch.key[b]), batch.chords[b].copy()))
            if len(self._store) >= self.params["update_every"]:
                self._update(batch.n_steps)
        return out

    def _update(self, T: int) -> None:
        """SeqGAN-style: critic steps on the stored episodes against reference segments."""
        model = self.model
        p = self.params
        if getattr(self, "_optimizer", None) is None:
            self._optimizer = torch.optim.Adam(model.critic.parameters(), lr=float(p["lr"]), betas=(0.5, 0.9))
            self._rng = np.random.default_rng(int(p["seed"]) + 2)
            self._torch_gen = torch.Generator().manual_seed(int(p["seed"]) + 3)
        rng = self._rng
        episodes = self._store
        ref = model.reference
        augment = model.metadata.get("training", {}).get("augment", False)
        model.critic.train()
        for _ in range(int(p["update_steps"])):
            pick = rng.choice(len(episodes), size=min(len(episodes), int(p["update_batch"])), replace=False)
            fake = np.stack([episodes[i][0] for i in pick])
            keys = np.array([episodes[i][1] for i in pick], dtype=np.int64)
            chords = np.stack([episodes[i][2] for i in pick])
            real = ref.subset(rng.integers(0, len(ref), len(pick)))
            if augment:
                real = real.transposed(rng.integers(0, 12, len(pick)))
            with torch.enable_grad():
                critic_step(model, self._optimizer, real, fake, fake_keys=keys, fake_chords=chords,
                            gen=self._torch_gen)
        model.critic.eval()
        self._store = []
        self._n_updates = self.n_updates + 1
        self._calibration = self._calibrate(T)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        model = state.pop("_model", None)
        for k in ("_optimizer", "_torch_gen", "_calibration"):
            state.pop(k, None)
        if model is not None and self.n_updates:
            state["_updated_state"] = {k: v.detach().numpy().copy() for k, v in model.critic.state_dict().items()}
        return state


# ---------------------------------------------------------------------------- compose source
class GANPolicy:
    """Plays a GAN melody in a composition env: at the first step of each episode it
    samples one line for the episode's length, key and chords, then plays it token by token."""

    def __init__(self, model: MelodyGAN, env, seed: int | None = None, temperature: float = 1.0) -> None:
        self.model, self.env, self.temperature = model, env, temperature
        self.rng = np.random.default_rng(seed)
        self.core = env.unwrapped.core
        self.line: np.ndarray | None = None

    def __call__(self, obs: dict[str, np.ndarray]) -> int:
        batch = self.core.batch
        t = int(batch.t[0])
        if t == 0 or self.line is None:
            chords = batch.chords[:1, :batch.n_steps] if "chord" in self.model.config.conditioning else None
            keys = batch.key[:1] if self.model.config.conditioning else None
            self.line = self.model.generate(1, int(self.rng.integers(2**31)), length=batch.n_steps, keys=keys,
                                            chords=chords, temperature=self.temperature)[0]
        return int(self.line[min(t, len(self.line) - 1)])


def gan_source(env, *, argument: str | None, temperature: float):
    """The shipped GAN's generator (agents/pretrained/gan_bach.pt), conditioned on the episode's key."""
    core = getattr(env.unwrapped, "core", None)
    if core is None or not hasattr(core, "batch"):
        raise ValueError("the gan source plays MusicComposition-style envs (one melody token per step)")
    model = MelodyGAN.load(grid=core.grid)
    if core.steps_per_bar != model.config.steps_per_bar:
        raise ValueError(f"the GAN writes bars of {model.config.steps_per_bar} steps (4/4 at 16ths); "
                         f"use meter='4/4' and steps_per_quarter=4")
    return lambda seed: GANPolicy(model, env, seed=seed, temperature=temperature)

