"""A melody GAN: LSTM generator, 1-D CNN critic, and the critic as a reward term.

Data: fixed-length segments
---------------------------
The GAN works on segments of ``n_bars`` bars (default 4 bars of 4/4 at 16ths, i.e.
T = 64 steps, one default ``MusicComposition-v0`` episode) cut from corpus melodies at
every bar line (:func:`corpus_segments`; only melodies in the chosen meter; melodies
start on a downbeat, see :mod:`musicenv.corpus`). A segment that starts inside a note
re-articulates it (its first token becomes that note's NOTE_ON); segments without a
single note are skipped. With ``--augment`` (:meth:`SegmentSet.augmented`) every segment
is also used in all 12 keys (:func:`rewards.ngram.best_shift` rules: the octave placement
that keeps most notes in range, the rest folded), key and chords moving with it. The
shipped GAN is trained without it: within a 10-minute budget the 12-fold data learnt
about half as fast (after 400 generator steps, valid overlaps of pitch class / interval /
note length 0.72 / 0.42 / 0.62 with it, 0.88 / 0.51 / 0.46 without), so the shipped model
knows best the keys the chorales use (17 of the 24, mostly with up to three sharps or flats).

Representation: a pitch sequence and a rhythm sequence
------------------------------------------------------
Per step t the model reads or writes two channels:

* **pitch** ``p_t``: a one-hot over P + 1 classes, index 0 = REST and index i = MIDI
  ``grid.min_pitch + i - 1`` (P = 36 by default): *what sounds* at step t;
* **rhythm** ``o_t``: 1 if an event (note or rest) starts at step t, 0 if the previous
  one goes on. ``o_0 = 1`` always.

So a held note keeps its pitch in ``p`` while ``o`` is 0 (the pitch channel is a piano
roll, the rhythm channel marks articulations). Tokens map both ways
(:func:`tokens_to_channels`, :func:`channels_to_tokens`)::

    o_t = 0                 -> HOLD
    o_t = 1, p_t = REST     -> REST
    o_t = 1, p_t = i >= 1   -> NOTE_ON(grid.min_pitch + i - 1)   (token i + 1)

Models
------
:class:`Generator`: noise ``z`` (and optionally the key, and the chord at each step)
sets the LSTM's initial state; each step it reads the previous step's pitch and onset,
its position in the bar (one-hot), ``z`` and the context, and emits pitch logits (P + 1)
and onset logits (2). The pitch it writes is ``p_t = o_t q_t + (1 - o_t) p_{t-1}``:
a HOLD keeps the sounding pitch by construction, so the generator cannot write a held
note whose pitch changes, and the critic never sees one.

:class:`Critic`: a 1-D CNN over the channels [pitch one-hot, onset, position in bar
one-hot, context] -> four strided convolutions (LeakyReLU, no normalisation, as
WGAN-GP requires) -> mean over time -> one score. Mean pooling makes it length-agnostic:
it scores segments of any length (it was trained on T-step ones).

Objective: WGAN-GP on straight-through Gumbel-softmax one-hots
----------------------------------------------------------------
Training is a Wasserstein GAN with gradient penalty (Gulrajani et al. 2017; penalty 10,
``n_critic`` = 5 critic steps per generator step, Adam betas (0.5, 0.9) as in the paper,
lr 2e-4 for both networks: twice the paper's, which learnt faster within a 10-minute
budget here). The
generator's categorical choices are made differentiable with the **straight-through
Gumbel-softmax** (Jang et al. 2017): the forward pass samples hard one-hots (Gumbel-max,
i.e. exact categorical samples) and the backward pass uses the gradient of the
tempered softmax. Why this pair:

* WGAN-GP is the objective known to train on discrete sequences without pre-training
  (Gulrajani et al.'s character model); the standard GAN loss with a sigmoid
  discriminator saturates early when the discriminator wins, which on short budgets
  it does.
* The critic only ever sees *hard* one-hots, from the corpus and from the generator.
  With plain softmax outputs (Gulrajani et al.'s choice, ``relaxation="softmax"``
  here) a critic can tell fakes by their softness alone; that still trains a
  generator, but the critic's score of a hard, token-valued melody then means little,
  and this critic doubles as a reward for an RL agent's token sequences. Straight-through
  keeps the critic's inputs in the domain it is used on.

Checkpoints
-----------
``torch.save`` of a plain dict: ``format`` (``"musicenv.gan"``), ``format_version``,
``metadata`` (a JSON string: config, grid, meter, segment length, corpus, training
settings, metrics), ``state_dict`` (generator and critic tensors) and ``reference``
(tensors: the training segments' tokens, keys and chords, kept so that sampling a
context, calibrating the reward and SeqGAN-style critic updates work offline), read back
with ``torch.load(weights_only=True)``. :meth:`MelodyGAN.load` raises
:class:`CheckpointError` naming the problem for a missing, corrupt or foreign file, a
missing key, an unknown format version, weights that do not fit the config, or a grid
different from the one asked for. ``MelodyGAN.load()`` loads the shipped
:data:`DEFAULT_GAN` (Bach chorale sopranos; figures in its ``.metrics.json``).

Reward term
-----------
:class:`DiscriminatorReward` (``"discriminator"`` in :mod:`rewards`): the critic's
calibrated score of the finished melody, optionally as per-step shaping, optionally
updating the critic on the agent's own episodes (SeqGAN-style); see its docstring.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.checkpoint import (
    check_grid,
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
    Meter,
    transpose_chords,
    transpose_key,
)
from rewards.base import RewardSpecError, RewardTerm

__all__ = ["GANConfig", "Generator", "Critic", "MelodyGAN", "CheckpointError", "SegmentSet", "GANTrainResult",
           "DiscriminatorReward", "corpus_segments", "critic_losses", "critic_step", "tokens_to_channels", "channels_to_tokens",
           "random_token_melodies", "random_note_melodies", "train", "evaluate", "format_evaluation",
           "DEFAULT_GAN", "FORMAT_VERSION", "CONDITIONS", "RELAXATIONS"]

#: Version of the checkpoint layout; bump it when keys or their meaning change.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "musicenv.gan"
#: The shipped GAN (Bach chorale sopranos, 4 bars of 4/4); see its ``.metrics.json``.
DEFAULT_GAN = Path(__file__).resolve().parent / "pretrained" / "gan_bach.pt"
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


def corpus_segments(corpus, n_bars: int = 4, meter: str = "4/4", stride_bars: int = 1) -> SegmentSet:
    """Segments of ``n_bars`` bars of every melody of ``corpus`` (a
    :class:`~musicenv.corpus.MelodyCorpus`) in ``meter``, starting at every
    ``stride_bars``-th bar line (see module doc). Raises ``ValueError`` if none fits."""
    grid = corpus.grid
    bar = Meter.parse(meter).steps_per_bar(grid.steps_per_quarter)
    T = n_bars * bar
    toks, keys, chords = [], [], []
    for m in corpus:
        if Meter.parse(m.meter) != Meter.parse(meter) or m.n_steps < T:
            continue
        tokens = np.asarray(m.tokens, dtype=np.int64)
        sounding = _sounding_tokens(tokens)
        for s in range(0, m.n_steps - T + 1, stride_bars * bar):
            w = tokens[s:s + T].copy()
            if w[0] == HOLD:
                w[0] = sounding[s]
            if not (w >= FIRST_PITCH_TOKEN).any():
                continue
            toks.append(w)
            keys.append(int(m.key))
            chords.append(np.asarray(m.chords[s:s + T], dtype=np.int64))
    if not toks:
        raise ValueError(f"no melody of corpus {getattr(corpus, 'name', '')!r} has {n_bars} bars of {meter}")
    return SegmentSet(np.stack(toks), np.array(keys, dtype=np.int64), np.stack(chords), grid, bar)


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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GAN config keys {unknown}")
        return cls(**data)


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


# ---------------------------------------------------------------------------- training
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


@dataclass
class GANTrainResult:
    """What :func:`train` did: generator steps, wall time, the best evaluation."""

    steps: int
    seconds: float
    best_step: int
    best_valid: dict[str, float]
    stopped: str
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EVAL_FEATURES = ("pitch_class", "interval", "note_length")


def _quick_eval(model: MelodyGAN, reference_tokens: np.ndarray, n: int, seed: int) -> dict[str, float]:
    from musicenv.metrics import compare_sets, distinct_n

    samples = model.generate(n, seed)
    cmp = compare_sets(list(samples), list(reference_tokens), features=EVAL_FEATURES)
    out = {f"overlap/{f}": cmp[f]["overlap"] for f in EVAL_FEATURES}
    out["overlap/mean"] = float(np.nanmean([out[f"overlap/{f}"] for f in EVAL_FEATURES]))
    out["distinct_4"] = distinct_n(list(samples), 4)
    return out


def train(model: MelodyGAN, data: SegmentSet, valid: SegmentSet | None = None, *, max_steps: int = 3000,
          max_minutes: float | None = None, batch_size: int = 64, n_critic: int = 5, gp_weight: float = 10.0,
          lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.9), eval_every: int = 200,
          eval_samples: int = 128, seed: int = 0, log_dir: str | os.PathLike | None = None,
          checkpoint_path: str | os.PathLike | None = None, progress: bool = True,
          callback: Callable[[int, dict[str, float]], None] | None = None) -> GANTrainResult:
    """Train ``model`` adversarially on ``data`` (WGAN-GP, see module doc).

    Each generator step follows ``n_critic`` critic steps, each on a fresh batch of
    ``batch_size`` real segments (their keys/chords also condition the fakes) against
    generated ones. Stops after ``max_steps`` generator steps or ``max_minutes``. Every
    ``eval_every`` steps (and at the end) ``eval_samples`` melodies are compared with the
    ``valid`` segments (overlapped area of the pitch-class, interval and note-length
    histograms, :func:`musicenv.metrics.compare_sets`); the weights with the best mean
    overlap are restored at the end (GAN training oscillates) and, with
    ``checkpoint_path``, saved there after every improvement. ``log_dir`` gets
    TensorBoard scalars. Shows a tqdm progress bar.
    """
    from musicenv.progress import progress_bar  # tqdm on a terminal, lines in a pipe

    if len(data) < 2:
        raise ValueError("need at least 2 training segments")
    if data.grid != model.grid or data.seq_len != model.config.seq_len or data.steps_per_bar != model.config.steps_per_bar:
        raise ValueError(f"segments (T={data.seq_len}, bar={data.steps_per_bar}, {data.grid}) do not fit the model "
                         f"(T={model.config.seq_len}, bar={model.config.steps_per_bar}, {model.grid})")
    for name, v in (("max_steps", max_steps), ("batch_size", batch_size), ("n_critic", n_critic)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    cfg = model.config
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(model.critic.parameters(), lr=lr, betas=betas)
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))
    ref_tokens = valid.tokens if valid is not None and len(valid) else None
    t0 = time.perf_counter()
    deadline = None if max_minutes is None else t0 + 60.0 * max_minutes
    best_score, best_step, best_valid, best_state = -math.inf, 0, {}, None
    history: list[dict[str, float]] = []
    stopped = "max_steps"
    T = cfg.seq_len
    hard = cfg.relaxation == "st_gumbel"

    def evaluate_now(step: int) -> None:
        nonlocal best_score, best_step, best_valid, best_state
        model.eval()
        res = _quick_eval(model, ref_tokens, eval_samples, seed=seed + step)
        model.train()
        res["step"] = step
        res["minutes"] = (time.perf_counter() - t0) / 60
        history.append(res)
        if writer is not None:
            for k, v in res.items():
                if k not in ("step", "minutes"):
                    writer.add_scalar(f"valid/{k}", v, step)
        if res["overlap/mean"] > best_score:
            best_score, best_step, best_valid = res["overlap/mean"], step, dict(res)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if checkpoint_path is not None:
                model.save(checkpoint_path, training_progress={"step": step, "valid": res})

    model.train()
    bar = progress_bar(total=max_steps, desc="train-gan", unit="step", disable=not progress, dynamic_ncols=True)
    step = 0
    logs: dict[str, float] = {}
    try:
        while step < max_steps:
            if deadline is not None and time.perf_counter() > deadline:
                stopped = "max_minutes"
                break
            # Critic: n_critic batches; all fakes generated in one batched call.
            idx = rng.integers(0, len(data), (n_critic, batch_size))
            reals = [data.subset(i) for i in idx]
            with torch.no_grad():
                all_keys = np.concatenate([r.keys for r in reals])
                all_chords = np.concatenate([r.chords for r in reals])
                ctx = model.context(all_keys, all_chords, T)
                z = torch.randn(n_critic * batch_size, cfg.noise_size, generator=gen)
                fp, fo = model.generator(z, ctx, T, hard=hard, tau=cfg.tau, gen=gen)
            for k in range(n_critic):
                sl = slice(k * batch_size, (k + 1) * batch_size)
                logs = critic_step(model, opt_d, reals[k], None, (fp[sl], fo[sl]), gp_weight=gp_weight, gen=gen)
            # Generator: maximise the critic's score of its samples.
            real = data.subset(rng.integers(0, len(data), batch_size))
            ctx = model.context(real.keys, real.chords, T)
            z = torch.randn(batch_size, cfg.noise_size, generator=gen)
            fp, fo = model.generator(z, ctx, T, hard=hard, tau=cfg.tau, gen=gen)
            loss_g = -model.critic(fp, fo, ctx).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            step += 1
            logs["generator_loss"] = float(loss_g.detach())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(W=f"{logs['wasserstein']:.3f}", gp=f"{logs['gradient_penalty']:.3f}",
                                best=f"{best_score:.3f}")
                if writer is not None:
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, step)
            if callback is not None:
                callback(step, logs)
            if ref_tokens is not None and eval_every and step % eval_every == 0:
                evaluate_now(step)
    finally:
        bar.close()
    if ref_tokens is not None and (not history or history[-1]["step"] != step):
        evaluate_now(step)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if writer is not None:
        writer.close()
    return GANTrainResult(step, time.perf_counter() - t0, best_step if best_state is not None else step,
                          best_valid, stopped, history)


# ---------------------------------------------------------------------------- baselines and evaluation
def random_token_melodies(n: int, length: int, grid: TokenGrid = DEFAULT_GRID, seed: int = 0) -> np.ndarray:
    """Uniformly random tokens (REST, HOLD, every NOTE_ON alike) at every step, except no
    HOLD at step 0: what an untrained agent plays. (n, length) int64."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, grid.vocab_size, (n, length))
    out[:, 0] = np.where(out[:, 0] == HOLD, REST, out[:, 0])
    return out


#: Note lengths (steps) drawn by :func:`random_note_melodies`: 16th, 8th, dotted 8th,
#: quarter, dotted quarter, half.
RANDOM_NOTE_LENGTHS = (1, 2, 3, 4, 6, 8)


def random_note_melodies(n: int, length: int, grid: TokenGrid = DEFAULT_GRID, seed: int = 0, *,
                         low: int = 60, high: int = 79) -> np.ndarray:
    """A "random melody" baseline: back-to-back notes (no rests), each pitch uniform in
    MIDI ``low..high`` (a soprano's C4..G5), each length uniform over
    :data:`RANDOM_NOTE_LENGTHS`; the last note is cut at ``length``. (n, length) int64."""
    rng = np.random.default_rng(seed)
    out = np.full((n, length), HOLD, dtype=np.int64)
    for i in range(n):
        t = 0
        while t < length:
            out[i, t] = grid.token(int(rng.integers(low, high + 1)))
            t += int(rng.choice(RANDOM_NOTE_LENGTHS))
    return out


def _diversity(samples: Sequence[np.ndarray], train_rows: set[bytes] | None) -> dict[str, float]:
    from musicenv.metrics import as_composition, distinct_ngrams, mean_pairwise_edit_distance

    arr = [np.asarray(s, dtype=np.int64) for s in samples]
    out = {k: float(v) for k, v in distinct_ngrams(arr).items()}
    out["edit_distance"] = mean_pairwise_edit_distance([as_composition(a) for a in arr], normalize=True)
    out["unique"] = len({a.tobytes() for a in arr}) / len(arr)
    if train_rows is not None:
        out["copied"] = float(np.mean([a.tobytes() in train_rows for a in arr]))
    return out


def evaluate(model: MelodyGAN, corpus: Any = "bach", *, n: int = 200, seed: int = 0, split_seed: int = 0,
             include_prior: bool = True, progress: bool = False) -> dict[str, dict[str, float]]:
    """Measure the GAN's samples against the corpus's held-out test split.

    Sets of ``n`` melodies of T steps each: ``gan`` (:meth:`MelodyGAN.generate`, contexts
    from its reference segments), ``random_tokens`` (:func:`random_token_melodies`),
    ``random_melody`` (:func:`random_note_melodies`), ``prior`` (the shipped note-RNN,
    :mod:`agents.note_rnn`, sampled at temperature 1 for T steps; left out if it is not
    installed) and ``corpus_valid`` (the valid split's segments: the ceiling a model of
    the corpus could reach). The reference is the test split cut into non-overlapping
    T-step segments (:func:`corpus_segments` with a stride of the segment length).

    Per set: ``overlap/<feature>`` (overlapped area of the pooled histograms with the
    reference's, :func:`musicenv.metrics.compare_sets`; 1 = same distribution) for the
    pitch-class, interval and note-length histograms; ``kl/<feature>``; diversity:
    ``distinct_1..4`` (distinct token n-grams / all), ``edit_distance`` (mean pairwise
    edit distance of note sequences / longer length), ``unique`` (share of distinct
    samples) and ``copied`` (share of samples that equal a training segment exactly, in
    any key). ``corpus`` is a name for :func:`musicenv.corpus.load` or a loaded corpus.
    """
    from musicenv import corpus as corpus_mod
    from musicenv.metrics import compare_sets

    mc = corpus_mod.load(corpus, model.grid, progress=progress) if isinstance(corpus, str) else corpus
    split = mc.split(seed=split_seed)
    bars = model.config.seq_len // model.config.steps_per_bar
    meter = model.metadata.get("meter", "4/4")
    test = corpus_segments(split.test, bars, meter, stride_bars=bars)
    valid = corpus_segments(split.valid, bars, meter, stride_bars=bars)
    train_segs = corpus_segments(split.train, bars, meter, stride_bars=1)
    train_rows = {r.tobytes() for r in train_segs.augmented().tokens}
    T = model.config.seq_len
    rng = np.random.default_rng(seed)
    sets: dict[str, np.ndarray] = {
        "gan": model.generate(n, seed),
        "random_tokens": random_token_melodies(n, T, model.grid, seed),
        "random_melody": random_note_melodies(n, T, model.grid, seed),
    }
    notes: dict[str, Any] = {}
    if include_prior:
        try:
            from agents.note_rnn import NoteRNN

            prior = NoteRNN.load(grid=model.grid)
            sets["prior"] = prior.sample(n, T, 1.0, seed=seed)
        except (ImportError, ValueError, OSError) as e:  # the prior is optional here; say why it is missing
            notes["prior"] = f"left out: {e}"
    pick = rng.choice(len(valid), size=min(n, len(valid)), replace=False)
    sets["corpus_valid"] = valid.tokens[pick]
    reference = list(test.tokens)
    out: dict[str, dict[str, float]] = {}
    for name, tokens in sets.items():
        cmp = compare_sets(list(tokens), reference, features=EVAL_FEATURES)
        row = {f"overlap/{f}": cmp[f]["overlap"] for f in EVAL_FEATURES}
        row.update({f"kl/{f}": cmp[f]["kl"] for f in EVAL_FEATURES})
        row.update(_diversity(list(tokens), train_rows))
        row["n"] = float(len(tokens))
        out[name] = row
    out["_reference"] = {"test_segments": float(len(test)), "valid_segments": float(len(valid)),
                         "train_segments": float(len(train_segs))}
    if notes:
        out["_notes"] = notes
    return out


def format_evaluation(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of :func:`evaluate`'s results (one row per set)."""
    cols = [f"overlap/{f}" for f in EVAL_FEATURES] + ["distinct_2", "distinct_4", "edit_distance", "unique", "copied"]
    head = ["set", "n", "pitch-class overlap", "interval overlap", "note-length overlap",
            "distinct-2", "distinct-4", "edit dist.", "unique", "copied"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, row in results.items():
        if name.startswith("_"):
            continue
        cells = [f"{row.get(c, math.nan):.3f}" for c in cols]
        lines.append(f"| {name} | {int(row['n'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- reward term
def _load_frozen(path: Path) -> MelodyGAN:
    from agents.frozen import load_frozen

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
            g, e = model.grid, batch.grid
            raise RewardSpecError(
                f"discriminator: the GAN was trained on pitches {g.min_pitch}..{g.max_pitch} at "
                f"{g.steps_per_quarter} steps per quarter; the environment uses {e.min_pitch}..{e.max_pitch} at "
                f"{e.steps_per_quarter}")
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


def _gan_source(env, *, argument: str | None, temperature: float):
    """The shipped GAN's generator (agents/pretrained/gan_bach.pt), conditioned on the episode's key."""
    core = getattr(env.unwrapped, "core", None)
    if core is None or not hasattr(core, "batch"):
        raise ValueError("the gan source plays MusicComposition-style envs (one melody token per step)")
    model = MelodyGAN.load(grid=core.grid)
    if core.steps_per_bar != model.config.steps_per_bar:
        raise ValueError(f"the GAN writes bars of {model.config.steps_per_bar} steps (4/4 at 16ths); "
                         f"use meter='4/4' and steps_per_quarter=4")
    return lambda seed: GANPolicy(model, env, seed=seed, temperature=temperature)


def _register_compose_source() -> None:
    try:
        from musicenv.compose import register_source
    except ImportError:  # compose is optional
        return
    register_source("gan", _gan_source, summary="the GAN's generator (agents.gan), one line per episode",
                    uses_temperature=True, replace=True)


_register_compose_source()
