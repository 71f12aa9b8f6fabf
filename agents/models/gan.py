"""The melody GAN's model: LSTM generator, 1-D CNN critic, their config and checkpoints.

The model layer's half of the GAN (torch, no training loop): :class:`MelodyGAN`
(:class:`Generator` + :class:`Critic`), the channel representation
(:func:`tokens_to_channels`, :func:`channels_to_tokens`), the segments it is trained
and calibrated on (:class:`SegmentSet`), one WGAN-GP critic update (:func:`critic_step`,
also used by the ``discriminator`` reward term's online updates) and checkpoint
reading. Training, evaluation and the design notes are in :mod:`agents.gan`; the reward
term and the compose source in :mod:`agents.models.discriminator`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.models import PRETRAINED_DIR
from agents.models.checkpoint import (
    check_grid,
    config_from_dict,
    grid_from_metadata,
    grid_metadata,
    load_weights,
    read_checkpoint,
    write_checkpoint,
)
from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, HOLD, REST, TokenGrid
from musicenv.theory import (
    CHORD_FEATURES,
    N_KEYS,
    N_QUALITIES,
    NO_CHORD,
    transpose_chords,
    transpose_key,
)

__all__ = ["GANConfig", "Generator", "Critic", "MelodyGAN", "CheckpointError", "SegmentSet", "critic_losses",
           "critic_step", "tokens_to_channels", "channels_to_tokens", "random_token_melodies", "DEFAULT_GAN",
           "FORMAT_VERSION", "CONDITIONS", "RELAXATIONS"]

#: Version of the checkpoint layout; bump it when keys or their meaning change.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "musicenv.gan"
#: The shipped GAN (Bach chorale sopranos, 4 bars of 4/4); see its ``.metrics.json``.
DEFAULT_GAN = PRETRAINED_DIR / "gan_bach.pt"
CONDITIONS = ("key", "chord")
RELAXATIONS = ("st_gumbel", "softmax")

class CheckpointError(ValueError):
    """A GAN checkpoint is missing, corrupt, of another format, or does not match."""


# ---------------------------------------------------------------------------- representation
def tokens_to_channels(tokens: np.ndarray, grid: TokenGrid = DEFAULT_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Pitch and rhythm channels of token sequences (see module doc).

    ``tokens`` (N, T) or (T,) ints. Returns ``pitch`` (same shape, 0 = REST, i = MIDI
    ``min_pitch + i - 1``; what sounds at each step) and ``onset`` (same shape, 1 where
    an event starts; step 0 always 1, a leading HOLD reads as a rest).
    """
    arr = np.asarray(tokens, dtype=np.int64)
    one = arr.ndim == 1
    arr = np.atleast_2d(arr)
    if arr.size and (arr.min() < 0 or arr.max() >= grid.vocab_size):
        raise ValueError(f"tokens outside the vocabulary 0..{grid.vocab_size - 1}")
    onset = arr != HOLD
    onset[:, 0] = True
    steps = np.arange(arr.shape[1])[None, :]
    last = np.maximum.accumulate(np.where(onset, steps, 0), axis=1)
    src = np.take_along_axis(arr, last, axis=1)
    pitch = np.where(src >= FIRST_PITCH_TOKEN, src - FIRST_PITCH_TOKEN + 1, 0)
    onset = onset.astype(np.int64)
    return (pitch[0], onset[0]) if one else (pitch, onset)


def channels_to_tokens(pitch: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Tokens of pitch-class-index and onset channels (inverse of :func:`tokens_to_channels`):
    HOLD where ``onset`` is 0 (except step 0), else REST for pitch 0 and NOTE_ON for i >= 1."""
    pitch, onset = np.asarray(pitch, dtype=np.int64), np.asarray(onset, dtype=np.int64).copy()
    onset[..., 0] = 1
    event = np.where(pitch == 0, REST, pitch + FIRST_PITCH_TOKEN - 1)
    return np.where(onset == 1, event, HOLD).astype(np.int64)


def _sounding_tokens(tokens: np.ndarray) -> np.ndarray:
    """Per step, the latest non-HOLD token (REST before the first)."""
    steps = np.arange(len(tokens))
    ev = tokens != HOLD
    last = np.maximum.accumulate(np.where(ev, steps, -1))
    return np.where(last >= 0, tokens[np.maximum(last, 0)], REST)


@dataclass
class SegmentSet:
    """Fixed-length melody segments with their context.

    Attributes:
        tokens: (N, T) int64 tokens; no segment starts with HOLD.
        keys: (N,) key indices 0..23.
        chords: (N, T) chord codes (:mod:`musicenv.theory`, ``NO_CHORD`` where unknown).
        grid: the token grid.
        steps_per_bar: bar length in steps (positions are ``t % steps_per_bar``).
    """

    tokens: np.ndarray
    keys: np.ndarray
    chords: np.ndarray
    grid: TokenGrid = DEFAULT_GRID
    steps_per_bar: int = 16

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    def subset(self, index: np.ndarray) -> SegmentSet:
        return SegmentSet(self.tokens[index], self.keys[index], self.chords[index], self.grid, self.steps_per_bar)

    def transposed(self, shifts: np.ndarray) -> SegmentSet:
        """Each segment moved by ``shifts[i]`` pitch classes (0..11), at the octave that
        keeps most of its notes in range (remaining notes folded by octaves)."""
        from rewards.ngram import best_shift, transpose

        tokens, keys, chords = self.tokens.copy(), self.keys.copy(), self.chords.copy()
        for i, s in enumerate(np.asarray(shifts, dtype=np.int64)):
            if s % 12 == 0:
                continue
            d = best_shift(tokens[i], int(s), self.grid)
            tokens[i] = transpose(tokens[i], d, self.grid)[0]
            keys[i] = transpose_key(int(keys[i]), d)
            chords[i] = transpose_chords(chords[i], d)
        return SegmentSet(tokens, keys, chords, self.grid, self.steps_per_bar)

    def augmented(self) -> SegmentSet:
        """The set in all 12 keys (12 N segments; shift 0 first)."""
        n = len(self)
        parts = [self.transposed(np.full(n, s)) for s in range(12)]
        return SegmentSet(np.concatenate([p.tokens for p in parts]), np.concatenate([p.keys for p in parts]),
                          np.concatenate([p.chords for p in parts]), self.grid, self.steps_per_bar)



# ---------------------------------------------------------------------------- models
@dataclass(frozen=True)
class GANConfig:
    """Architecture and objective of a :class:`MelodyGAN` (saved in checkpoints).

    Attributes:
        n_pitches: pitches P of the grid (the pitch channel has P + 1 classes).
        seq_len: segment length T in steps that it is trained on.
        steps_per_bar: bar length in steps (position features are ``t % steps_per_bar``).
        noise_size: size of the noise vector z.
        hidden_size: LSTM units of the generator.
        critic_channels: output channels of the critic's four convolutions.
        kernel_size: width of the critic's convolutions.
        conditioning: any of ``"key"`` (one-hot of 24) and ``"chord"`` (per step: root
            one-hot, quality one-hot, no-chord flag), given to both networks.
        relaxation: ``"st_gumbel"`` (straight-through Gumbel-softmax, hard one-hots in
            the forward pass) or ``"softmax"`` (soft probabilities; see module doc).
        tau: softmax temperature of the relaxation in training.
    """

    n_pitches: int = DEFAULT_GRID.n_pitches
    seq_len: int = 64
    steps_per_bar: int = 16
    noise_size: int = 32
    hidden_size: int = 128
    critic_channels: tuple[int, ...] = (32, 64, 64, 64)
    kernel_size: int = 5
    conditioning: tuple[str, ...] = ("key",)
    relaxation: str = "st_gumbel"
    tau: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditioning", tuple(self.conditioning))
        object.__setattr__(self, "critic_channels", tuple(int(c) for c in self.critic_channels))
        bad = [c for c in self.conditioning if c not in CONDITIONS]
        if bad:
            raise ValueError(f"unknown conditioning {bad}; accepted: {list(CONDITIONS)}")
        if self.relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {self.relaxation!r}")
        for name in ("n_pitches", "seq_len", "steps_per_bar", "noise_size", "hidden_size", "kernel_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.critic_channels or min(self.critic_channels) < 1:
            raise ValueError(f"critic_channels must be positive integers, got {self.critic_channels!r}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau!r}")

    @property
    def n_classes(self) -> int:
        return self.n_pitches + 1

    @property
    def context_size(self) -> int:
        return (N_KEYS if "key" in self.conditioning else 0) + (CHORD_FEATURES if "chord" in self.conditioning else 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conditioning"], d["critic_channels"] = list(self.conditioning), list(self.critic_channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GANConfig:
        return config_from_dict(cls, data, "GAN config")


def context_features(config: GANConfig, keys: np.ndarray | torch.Tensor, chords: np.ndarray | torch.Tensor | None,
                     T: int) -> torch.Tensor | None:
    """Per-step context (B, T, context_size) float32, or None without conditioning."""
    if not config.conditioning:
        return None
    keys = torch.as_tensor(np.array(keys, dtype=np.int64))
    B = keys.shape[0]
    parts = []
    if "key" in config.conditioning:
        parts.append(F.one_hot(keys, N_KEYS).float()[:, None, :].expand(B, T, N_KEYS))
    if "chord" in config.conditioning:
        if chords is None:
            raise ValueError("this GAN is conditioned on chords: give a chord track per step")
        c = torch.as_tensor(np.array(chords, dtype=np.int64))[:, :T]
        none = c == NO_CHORD
        safe = torch.where(none, torch.zeros_like(c), c)
        feat = torch.cat([F.one_hot(safe // N_QUALITIES, 12), F.one_hot(safe % N_QUALITIES, N_QUALITIES),
                          none[..., None].long()], -1).float()
        feat[..., :-1] *= (~none)[..., None].float()
        parts.append(feat)
    return torch.cat(parts, -1)


def _positions(T: int, steps_per_bar: int) -> torch.Tensor:
    return F.one_hot(torch.arange(T) % steps_per_bar, steps_per_bar).float()


def _gumbel(shape: torch.Size, gen: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=gen).clamp_(1e-10, 1.0 - 1e-10)
    return -torch.log(-torch.log(u))


class Generator(nn.Module):
    """LSTM generator: noise (+ context) -> pitch and onset channels (see module doc)."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = c = config
        self.init = nn.Linear(c.noise_size + (N_KEYS if "key" in c.conditioning else 0), 2 * c.hidden_size)
        in_size = c.n_classes + 1 + c.steps_per_bar + c.noise_size + c.context_size
        self.cell = nn.LSTMCell(in_size, c.hidden_size)
        self.head = nn.Linear(c.hidden_size, c.n_classes + 2)  # pitch logits, then [hold, onset] logits

    def forward(self, z: torch.Tensor, context: torch.Tensor | None, T: int, *, hard: bool = True,
                tau: float = 1.0, temperature: float = 1.0, gen: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Channels of B = len(z) melodies of T steps: pitch (B, T, P + 1) and onset
        (B, T) float tensors. ``hard``: sampled one-hots in the forward pass
        (straight-through Gumbel-softmax gradients), else softmax probabilities;
        ``temperature`` divides the logits."""
        c = self.config
        K = c.n_classes
        B = z.shape[0]
        init_in = z
        if "key" in c.conditioning:
            init_in = torch.cat([z, context[:, 0, :N_KEYS]], -1)
        h, cell = torch.tanh(self.init(init_in)).chunk(2, -1)
        h, cell = h.contiguous(), cell.contiguous()
        # Inputs that do not depend on earlier outputs, for all steps at once.
        static = [_positions(T, c.steps_per_bar).expand(B, T, -1), z[:, None, :].expand(B, T, -1)]
        if context is not None:
            static.append(context[:, :T])
        static = torch.cat(static, -1)
        noise = _gumbel((B, T, K + 2), gen) if hard else None
        prev = z.new_zeros(B, K + 1)  # previous pitch one-hot and onset
        pitches, onsets = [], []
        for t in range(T):
            h, cell = self.cell(torch.cat([prev, static[:, t]], -1), (h, cell))
            logits = self.head(h) / temperature
            if hard:
                y = logits + noise[:, t]
                soft_q = torch.softmax(y[:, :K] / tau, -1)
                soft_o = torch.softmax(y[:, K:] / tau, -1)[:, 1:]
                q = F.one_hot(y[:, :K].argmax(-1), K).to(soft_q.dtype) - soft_q.detach() + soft_q
                o = (y[:, K + 1:] > y[:, K:K + 1]).to(soft_o.dtype) - soft_o.detach() + soft_o
            else:
                q = torch.softmax(logits[:, :K] / tau, -1)
                o = torch.softmax(logits[:, K:] / tau, -1)[:, 1:]
            if t == 0:
                o = torch.ones_like(o)
                p = q
            else:
                p = o * q + (1 - o) * prev[:, :K]
            pitches.append(p)
            onsets.append(o[:, 0])
            prev = torch.cat([p, o], -1)
        return torch.stack(pitches, 1), torch.stack(onsets, 1)


class Critic(nn.Module):
    """1-D CNN critic over pitch, onset, position-in-bar and context channels -> (B,) scores."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = c = config
        in_ch = c.n_classes + 1 + c.steps_per_bar + c.context_size
        layers: list[nn.Module] = []
        for i, out_ch in enumerate(c.critic_channels):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv1d(in_ch, out_ch, c.kernel_size, stride=stride, padding=c.kernel_size // 2),
                       nn.LeakyReLU(0.2)]
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(in_ch, 1)

    def forward(self, pitch: torch.Tensor, onset: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """``pitch`` (B, T, P + 1), ``onset`` (B, T), ``context`` (B, T, C) or None -> (B,)."""
        B, T, _ = pitch.shape
        parts = [pitch, onset[..., None], _positions(T, self.config.steps_per_bar).expand(B, T, -1)]
        if context is not None:
            parts.append(context[:, :T])
        x = torch.cat(parts, -1).transpose(1, 2)
        return self.out(self.convs(x).mean(-1))[:, 0]


class MelodyGAN(nn.Module):
    """Generator and critic on one grid, with the reference segments they were trained on.

    ``reference`` is a :class:`SegmentSet` (its tokens, keys and chords are saved with
    the weights): contexts for :meth:`generate` are drawn from it, and the reward term
    calibrates and updates the critic with it.
    """

    def __init__(self, config: GANConfig | None = None, grid: TokenGrid = DEFAULT_GRID,
                 reference: SegmentSet | None = None, metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config or GANConfig(n_pitches=grid.n_pitches)
        if self.config.n_pitches != grid.n_pitches:
            raise ValueError(f"config has {self.config.n_pitches} pitches, the grid {grid.n_pitches}")
        self.grid = grid
        self.generator = Generator(self.config)
        self.critic = Critic(self.config)
        self.reference = reference
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def n_parameters(self) -> dict[str, int]:
        return {"generator": sum(p.numel() for p in self.generator.parameters()),
                "critic": sum(p.numel() for p in self.critic.parameters())}

    # -- channels -------------------------------------------------------------------------
    def one_hot(self, tokens: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Float channels of token arrays (B, T): pitch (B, T, P + 1) and onset (B, T)."""
        pitch, onset = tokens_to_channels(np.atleast_2d(tokens), self.grid)
        return F.one_hot(torch.from_numpy(pitch), self.config.n_classes).float(), torch.from_numpy(onset).float()

    def context(self, keys: np.ndarray | None, chords: np.ndarray | None, T: int) -> torch.Tensor | None:
        if not self.config.conditioning:
            return None
        if keys is None:
            raise ValueError(f"this GAN is conditioned on {list(self.config.conditioning)}: give keys (and chords)")
        return context_features(self.config, keys, chords, T)

    def sample_contexts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Keys (n,) and chord tracks (n, T) of ``n`` reference segments drawn uniformly, in
        their own keys: samples then follow the corpus's distribution of keys too."""
        if self.reference is None or not len(self.reference):
            T = self.config.seq_len
            return rng.integers(0, N_KEYS, n), np.full((n, T), NO_CHORD, dtype=np.int64)
        sub = self.reference.subset(rng.integers(0, len(self.reference), n))
        return sub.keys.copy(), sub.chords.copy()

    # -- generation and scoring -----------------------------------------------------------
    def generate(self, n: int, seed: int | None = None, *, length: int | None = None,
                 keys: np.ndarray | None = None, chords: np.ndarray | None = None,
                 temperature: float = 1.0) -> np.ndarray:
        """Sample ``n`` melodies: token arrays of shape (n, length) int64 (default length:
        the training segment length). ``keys`` (n,) and ``chords`` (n, length) condition a
        conditioned model; drawn from the reference segments when not given.
        ``temperature`` divides the logits (< 1 sharper). Deterministic for a given seed."""
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        T = int(length or self.config.seq_len)
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        if self.config.conditioning and keys is None:
            keys, drawn = self.sample_contexts(int(n), rng)
            if chords is None:
                chords = np.resize(drawn, (int(n), T)) if T != drawn.shape[1] else drawn
        if keys is not None:
            keys = np.broadcast_to(np.asarray(keys, dtype=np.int64), (int(n),))
        if chords is not None:
            chords = np.broadcast_to(np.asarray(chords, dtype=np.int64), (int(n), T))
        was = self.training
        self.eval()
        with torch.inference_mode():
            z = torch.randn(int(n), self.config.noise_size, generator=gen)
            pitch, onset = self.generator(z, self.context(keys, chords, T), T, hard=True, tau=1.0,
                                          temperature=float(temperature), gen=gen)
        self.train(was)
        return channels_to_tokens(pitch.argmax(-1).numpy(), onset.round().long().numpy())

    def score(self, tokens: np.ndarray, keys: np.ndarray | None = None, chords: np.ndarray | None = None
              ) -> np.ndarray:
        """Raw critic scores (higher = more like the corpus) of token arrays (B, T): (B,) float64."""
        tokens = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
        with torch.inference_mode():
            pitch, onset = self.one_hot(tokens)
            ctx = self.context(keys, chords, tokens.shape[1])
            return self.critic(pitch, onset, ctx).double().numpy()

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **metadata: Any) -> Path:
        """Write a checkpoint (see module doc); ``metadata`` entries are merged into
        :attr:`metadata` first. Written atomically. Returns the path."""
        self.metadata.update(metadata)
        meta = {
            **self.metadata,
            "config": self.config.to_dict(),
            "grid": grid_metadata(self.grid),
            "seq_len": self.config.seq_len,
            "steps_per_bar": self.config.steps_per_bar,
            "representation": "pitch one-hot (0 = REST, i = min_pitch + i - 1) + onset flag per step",
            "torch_version": torch.__version__,
        }
        ref = self.reference
        reference = {}
        if ref is not None:
            reference = {"tokens": torch.from_numpy(ref.tokens.astype(np.int8)),
                         "keys": torch.from_numpy(ref.keys.astype(np.int8)),
                         "chords": torch.from_numpy(ref.chords.astype(np.int16))}
        return write_checkpoint(path, fmt=CHECKPOINT_FORMAT, version=FORMAT_VERSION, metadata=meta, model=self,
                                reference=reference)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, grid: TokenGrid | None = None) -> MelodyGAN:
        """Load a checkpoint written by :meth:`save` (default: the shipped GAN), on CPU, in
        eval mode. With ``grid``, the checkpoint must have been trained on that grid.

        Raises:
            CheckpointError: the file is missing, corrupt or not a GAN checkpoint, lacks a
                key, has an unknown format version, its weights do not fit its config, or
                its grid differs from ``grid``.
        """
        path = DEFAULT_GAN if path is None else Path(path).expanduser()
        hint = " (the shipped GAN is missing: reinstall musicenv or run `musicenv train-gan`)" \
            if path == DEFAULT_GAN else ""
        payload, meta = read_checkpoint(path, fmt=CHECKPOINT_FORMAT, version=FORMAT_VERSION, what="GAN",
                                        error=CheckpointError, extra_keys=("reference",), missing_hint=hint)
        try:
            ck_grid = grid_from_metadata(meta)
            config = GANConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"GAN checkpoint {path}: bad metadata, grid or config ({e})") from e
        if config.n_pitches != ck_grid.n_pitches:
            raise CheckpointError(f"GAN checkpoint {path}: config has {config.n_pitches} pitches, its grid "
                                  f"{ck_grid.n_pitches}")
        check_grid(ck_grid, grid, path, "GAN", CheckpointError)
        ref = payload["reference"]
        reference = None
        if ref:
            try:
                tokens = ref["tokens"].numpy().astype(np.int64)
                reference = SegmentSet(tokens, ref["keys"].numpy().astype(np.int64),
                                       ref["chords"].numpy().astype(np.int64), ck_grid, config.steps_per_bar)
                if tokens.ndim != 2 or tokens.min() < 0 or tokens.max() >= ck_grid.vocab_size or \
                        reference.chords.shape != tokens.shape or reference.keys.shape != tokens.shape[:1]:
                    raise ValueError("reference arrays have inconsistent shapes or tokens outside the vocabulary")
            except (KeyError, AttributeError, ValueError) as e:
                raise CheckpointError(f"GAN checkpoint {path}: bad reference segments ({e})") from e
        model = cls(config, ck_grid, reference,
                    metadata={k: v for k, v in meta.items()
                              if k not in ("config", "grid", "seq_len", "steps_per_bar", "representation")})
        load_weights(model, payload, path, "GAN", CheckpointError)
        return model

    def __repr__(self) -> str:
        c, n = self.config, self.n_parameters
        return (f"MelodyGAN(T={c.seq_len}, hidden={c.hidden_size}, critic={list(c.critic_channels)}, "
                f"conditioning={list(c.conditioning)}, relaxation={c.relaxation}, "
                f"parameters={n['generator']}+{n['critic']})")


# ---------------------------------------------------------------------------- critic update
def critic_losses(critic: Critic, real: tuple[torch.Tensor, torch.Tensor], fake: tuple[torch.Tensor, torch.Tensor],
                  ctx_real: torch.Tensor | None, ctx_fake: torch.Tensor | None,
                  gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean critic scores of real and fake channels and the WGAN-GP penalty, mean
    (||grad D(x_hat)|| - 1)^2 at random interpolates x_hat of real and fake pitch/onset
    channels (the real context is kept, not interpolated)."""
    B = real[0].shape[0]
    eps = torch.rand(B, 1, 1, generator=gen)
    p_hat = (eps * real[0] + (1 - eps) * fake[0]).detach().requires_grad_(True)
    o_hat = (eps[:, :, 0] * real[1] + (1 - eps[:, :, 0]) * fake[1]).detach().requires_grad_(True)
    d_real = critic(real[0], real[1], ctx_real).mean()
    d_fake = critic(fake[0], fake[1], ctx_fake).mean()
    # The penalty gets its own pass: in one pass with the real and fake rows, the double
    # backward would run over all three batches (measured 2x slower).
    gp, go = torch.autograd.grad(critic(p_hat, o_hat, ctx_real).sum(), (p_hat, o_hat), create_graph=True)
    norm = torch.sqrt(gp.pow(2).sum((1, 2)) + go.pow(2).sum(1) + 1e-12)
    return d_real, d_fake, ((norm - 1) ** 2).mean()


def critic_step(model: MelodyGAN, optimizer: torch.optim.Optimizer, real: SegmentSet, fake_tokens: np.ndarray | None,
                fake: tuple[torch.Tensor, torch.Tensor] | None = None, *, fake_keys: np.ndarray | None = None,
                fake_chords: np.ndarray | None = None, gp_weight: float = 10.0,
                gen: torch.Generator | None = None) -> dict[str, float]:
    """One WGAN-GP critic update: real segments against fake ones (token arrays, or
    channel tensors ``fake``) of the same length and batch size. The fakes are paired with
    the real segments' context unless ``fake_keys``/``fake_chords`` are given. Returns the
    losses."""
    T = real.seq_len
    ctx_r = model.context(real.keys, real.chords, T)
    if fake is None:
        fake = model.one_hot(fake_tokens)
    ctx_f = ctx_r if fake_keys is None else model.context(fake_keys, fake_chords, T)
    d_real, d_fake, gp = critic_losses(model.critic, model.one_hot(real.tokens), fake, ctx_r, ctx_f, gen)
    loss = d_fake - d_real + gp_weight * gp
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"critic_loss": float(loss.detach()), "wasserstein": float((d_real - d_fake).detach()),
            "gradient_penalty": float(gp.detach())}



def random_token_melodies(n: int, length: int, grid: TokenGrid = DEFAULT_GRID, seed: int = 0) -> np.ndarray:
    """Uniformly random tokens (REST, HOLD, every NOTE_ON alike) at every step, except no
    HOLD at step 0: what an untrained agent plays. (n, length) int64."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, grid.vocab_size, (n, length))
    out[:, 0] = np.where(out[:, 0] == HOLD, REST, out[:, 0])
    return out


