"""The note-RNN prior: sequence models over the token vocabulary, training, sampling,
checkpoints, and the ``prior_log_likelihood`` reward term.

Models
------
:class:`NoteRNN` predicts the next token of a melody on the env's grid
(:mod:`musicenv.encoding`: REST, HOLD, NOTE_ON(pitch); V = 38 by default) from the
tokens before it. Its input vocabulary adds ``BEGIN`` (index V), fed before the first
token, so the first token is predicted too. Three architectures share one interface
(:class:`NoteRNNConfig`):

* ``"lstm"`` / ``"gru"``: token embedding -> ``num_layers`` recurrent layers of
  ``hidden_size`` (dropout between layers and before the output) -> V logits;
* ``"transformer"``: a small causal pre-LayerNorm Transformer of ``num_layers`` blocks,
  width ``hidden_size``, ``n_heads`` heads, with ALiBi position biases (no position
  table, so it scores melodies of any length).

``relative_pitch`` adds features computed from the tokens themselves: the interval
from the last pitch and the pitch class above the melody's first pitch, on input and
output (see :class:`NoteRNN`); they make what is learnt in one key serve all twelve.

Optional conditioning (``conditioning`` in ``("chord", "key", "position")``) adds to
the input at step t an embedding of the chord code at step t
(:mod:`musicenv.theory`, ``NO_CHORD`` included), of the key index (0..23) and of the
step's position in its bar (``t % steps_per_bar``; melodies start on a downbeat, see
:mod:`musicenv.corpus`).

The shipped prior (:data:`DEFAULT_PRIOR`) is token-only, like the RL Tuner's Note RNN: a
2-layer LSTM of width 128 with relative-pitch features (255k parameters, 1 MB), trained
on the Bach chorale sopranos in all 12 keys by ``musicenv pretrain --corpus bach --out
agents/pretrained/note_rnn_bach.pt`` (1400 updates, about 11 minutes on 2 cores); test NLL
0.534 nats/token against 0.730 for the best n-gram (the full table and command are in
``note_rnn_bach.metrics.json`` beside it).

Incremental use (reward terms, policies): :meth:`NoteRNN.initial_state`,
:meth:`NoteRNN.step` (one token per row -> next-token logits and the new state) and
:meth:`NoteRNN.log_probs`. States are tuples of tensors; :meth:`NoteRNN.select_state`
and :meth:`NoteRNN.merge_state` pick and replace rows, so each composition of a batch
carries its own state and can be reset alone.

Training
--------
:func:`train` fits on whole melodies (batches of similar length, padded; loss = mean
cross-entropy in nats over real tokens), with Adam, gradient clipping, a linear warm-up
and cosine decay over ``max_steps`` updates, evaluation on the valid split every
``eval_every`` updates, early stopping after ``patience`` evaluations without
improvement (or at ``max_minutes``), and restores the best weights. With ``augment`` each
training melody is used in all 12 keys (:func:`rewards.ngram.all_key_transpositions`):
each pitch-class shift is placed at the octave that keeps the most notes inside the
grid's range, and notes still outside are folded by octaves into it (counted in
``TrainResult.notes_folded``); keys and chord roots move with the melody.

NLL (:func:`evaluate_nll`) is in nats per token over whole held-out melodies: every
token from the first, each predicted from BEGIN and the tokens before it, summed over
all melodies and divided by their total length (the n-gram baselines in
:mod:`rewards.ngram` are scored the same way).

Checkpoints
-----------
``torch.save`` of a plain dict: ``format`` (``"musicenv.note_rnn"``), ``format_version``,
``metadata`` (a JSON string: config, grid, vocabulary, corpus, training, metrics) and
``state_dict`` (tensors only), read back with ``torch.load(weights_only=True)``.
:meth:`NoteRNN.load` raises :class:`CheckpointError` naming the problem for a missing,
corrupt or foreign file, a missing key, a format version it does not know, or a grid or
vocabulary different from the one asked for. ``NoteRNN.load()`` with no argument loads the
shipped prior (:data:`DEFAULT_PRIOR`, trained by the command in its metrics file).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numba import njit
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
from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, TokenGrid
from musicenv.theory import N_CHORDS, N_KEYS, N_QUALITIES, NO_CHORD, Meter
from rewards.base import RewardSpecError, RewardTerm
from rewards.ngram import all_key_transpositions

__all__ = ["NoteRNN", "NoteRNNConfig", "CheckpointError", "Example", "TrainResult", "PriorLogLikelihood",
           "PriorTracker", "PriorPolicy", "LSTMStepper", "load_prior", "prior_path",
           "SMALL_PRIOR",
           "melody_examples", "train", "evaluate_nll", "DEFAULT_PRIOR", "FORMAT_VERSION", "CONDITIONS"]

#: Version of the checkpoint layout; bump it when keys or their meaning change.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "musicenv.note_rnn"
#: The shipped prior (Bach chorale sopranos, token-only LSTM); see its ``.metrics.json``.
DEFAULT_PRIOR = Path(__file__).resolve().parent / "pretrained" / "note_rnn_bach.pt"
#: A smaller shipped prior (1 x 64 LSTM, 37k parameters) with the same test NLL, several
#: times cheaper per step: ``checkpoint="small"`` where a prior is named.
SMALL_PRIOR = Path(__file__).resolve().parent / "pretrained" / "note_rnn_bach_small.pt"
ARCHS = ("lstm", "gru", "transformer")
CONDITIONS = ("chord", "key", "position")
IGNORE = -100  # target of padding positions


class CheckpointError(ValueError):
    """A note-RNN checkpoint is missing, corrupt, of another format, or does not match."""


@dataclass(frozen=True)
class NoteRNNConfig:
    """Architecture of a :class:`NoteRNN` (saved in checkpoints).

    Attributes:
        arch: ``"lstm"``, ``"gru"`` or ``"transformer"``.
        vocab_size: output tokens V (the grid's vocabulary); the input adds BEGIN = V.
        embed_size: token embedding width (RNNs; the Transformer embeds at ``hidden_size``).
        hidden_size: recurrent units per layer, or the Transformer's model width.
        num_layers: stacked recurrent layers or Transformer blocks.
        dropout: dropout between layers and before the output layer (training only).
        n_heads: attention heads (Transformer).
        conditioning: any of ``"chord"``, ``"key"``, ``"position"``.
        bar_positions: size of the position-in-bar table (>= steps per bar of the meters used).
        relative_pitch: add relative-pitch features (see :class:`NoteRNN`): the interval of
            each input note from the previous pitch, and an output head that scores each
            candidate pitch by its interval from the last pitch, shared by all keys.
    """

    arch: str = "lstm"
    vocab_size: int = DEFAULT_GRID.vocab_size
    embed_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.3
    n_heads: int = 4
    conditioning: tuple[str, ...] = ()
    bar_positions: int = 4 * DEFAULT_GRID.steps_per_quarter
    relative_pitch: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; accepted: {', '.join(ARCHS)}")
        object.__setattr__(self, "conditioning", tuple(self.conditioning))
        bad = [c for c in self.conditioning if c not in CONDITIONS]
        if bad or len(set(self.conditioning)) != len(self.conditioning):
            raise ValueError(f"conditioning {list(self.conditioning)} invalid; accepted: any of {', '.join(CONDITIONS)}")
        for name in ("vocab_size", "embed_size", "hidden_size", "num_layers", "n_heads", "bar_positions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.relative_pitch, bool):
            raise ValueError(f"relative_pitch must be True or False, got {self.relative_pitch!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.arch == "transformer" and self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of n_heads {self.n_heads}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conditioning"] = list(self.conditioning)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoteRNNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; accepted: {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------------------- transformer parts
def _alibi_slopes(n_heads: int) -> torch.Tensor:
    # Press et al. 2022: geometric slopes 2^(-8i/n) for i = 1..n.
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)])


class _Block(nn.Module):
    """Pre-LayerNorm causal self-attention + MLP block."""

    def __init__(self, width: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, W = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, W // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, W)))
        return x + self.drop(self.mlp(self.ln2(x)))


# ---------------------------------------------------------------------------- the model
class NoteRNN(nn.Module):
    """Next-token model over the token vocabulary (see module doc).

    Shapes: ``inputs`` (B, T) int64 in 0..V (V = BEGIN), conditioning tensors (B, T)
    int64, logits (B, T, V). ``grid`` records the pitch range and resolution the
    vocabulary stands for; ``metadata`` holds corpus, training and metrics records.

    With ``relative_pitch`` the model also sees and predicts pitches relative to two
    anchors taken from the tokens themselves: the last pitch (melodic interval) and the
    melody's first pitch (pitch class above it, a stand-in for the scale degree, since
    melodies mostly open on a tonic-triad note). The input at each step adds embeddings
    of the input note's interval from the pitch before it and of its pitch class above
    the first pitch; the logit of each NOTE_ON token adds ``rel(h)[pitch - last]`` (a head
    over intervals -(P-1)..P-1, one more entry before any pitch) and
    ``opening(h)[(pitch - first) % 12]``. These terms are the same in every key, so what
    the model learns in one transposition serves all twelve: with all-key augmentation
    it learns far faster than from absolute tokens alone (Bach, 500 updates: valid NLL
    0.63 vs 0.76). The absolute embedding and output still carry register. The model
    stays token-only: the anchors are functions of the tokens, and recurrent states
    carry them.
    """

    def __init__(self, config: NoteRNNConfig | None = None, grid: TokenGrid = DEFAULT_GRID,
                 metadata: dict[str, Any] | None = None, **config_kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = NoteRNNConfig(**{"vocab_size": grid.vocab_size, **config_kwargs})
        elif config_kwargs:
            raise TypeError("give either a NoteRNNConfig or keyword arguments, not both")
        if config.vocab_size != grid.vocab_size:
            raise ValueError(f"config.vocab_size={config.vocab_size} does not match the grid's {grid.vocab_size} tokens")
        self.config, self.grid = config, grid
        self.metadata: dict[str, Any] = dict(metadata or {})
        V, c = config.vocab_size, config
        self.begin = V
        width = c.hidden_size if c.arch == "transformer" else c.embed_size
        self.embed = nn.Embedding(V + 1, width)
        if "chord" in c.conditioning:
            self.chord_embed = nn.Embedding(N_CHORDS + 1, width)
        if "key" in c.conditioning:
            self.key_embed = nn.Embedding(N_KEYS, width)
        if "position" in c.conditioning:
            self.position_embed = nn.Embedding(c.bar_positions, width)
        if c.arch == "lstm":
            self.rnn = nn.LSTM(width, c.hidden_size, c.num_layers, batch_first=True,
                               dropout=c.dropout if c.num_layers > 1 else 0.0)
        elif c.arch == "gru":
            self.rnn = nn.GRU(width, c.hidden_size, c.num_layers, batch_first=True,
                              dropout=c.dropout if c.num_layers > 1 else 0.0)
        else:
            self.blocks = nn.ModuleList(_Block(width, c.n_heads, c.dropout) for _ in range(c.num_layers))
            self.ln_f = nn.LayerNorm(width)
            self.register_buffer("alibi", _alibi_slopes(c.n_heads), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_size, V)
        self.n_pitches = V - FIRST_PITCH_TOKEN
        if c.relative_pitch:
            P = self.n_pitches
            # input intervals -(P-1)..P-1 -> 0..2P-2; 2P-1 first pitch; 2P not a pitch
            self.interval_embed = nn.Embedding(2 * P + 1, width)
            # output: intervals -(P-1)..P-1 -> 0..2P-2; 2P-1 no pitch yet
            self.relative_out = nn.Linear(c.hidden_size, 2 * P)
            # pitch class above the melody's first pitch: 0..11; input also 12 first pitch, 13 not a pitch
            self.opening_embed = nn.Embedding(14, width)
            self.opening_out = nn.Linear(c.hidden_size, 12)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- full sequences -----------------------------------------------------------------
    def _anchors(self, inputs: torch.Tensor, init: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pitch index of each input (-1 for REST/HOLD/BEGIN); the last pitch and the
        melody's first pitch up to and including it (-1 if none); and ``init`` (B, 2),
        the (last, first) pitch before the sequence."""
        B, T = inputs.shape
        pitch = torch.where((inputs >= FIRST_PITCH_TOKEN) & (inputs < self.begin), inputs - FIRST_PITCH_TOKEN, -1)
        init = torch.full((B, 2), -1, dtype=torch.long, device=inputs.device) if init is None else init
        pos = torch.arange(T, device=inputs.device).expand_as(inputs)
        where = torch.where(pitch >= 0, pos, -1).cummax(dim=1).values
        last = torch.where(where >= 0, pitch.gather(1, where.clamp(min=0)), init[:, :1])
        first_pos = torch.where(pitch >= 0, pos, T - 1).min(dim=1).values
        first_here = pitch.gather(1, first_pos[:, None])
        first = torch.where(init[:, 1:] >= 0, init[:, 1:], torch.where(where >= 0, first_here, -1))
        return pitch, last, first, init

    def _relative_inputs(self, pitch: torch.Tensor, last: torch.Tensor, first: torch.Tensor,
                         init: torch.Tensor) -> torch.Tensor:
        P = self.n_pitches
        before = torch.cat([init[:, :1], last[:, :-1]], dim=1)
        first_before = torch.cat([init[:, 1:], first[:, :-1]], dim=1)
        interval = torch.where(pitch >= 0, torch.where(before >= 0, pitch - before + P - 1, 2 * P - 1), 2 * P)
        opening = torch.where(pitch >= 0, torch.where(first_before >= 0, (pitch - first_before) % 12, 12), 13)
        return self.interval_embed(interval) + self.opening_embed(opening)

    def _relative_logits(self, logits: torch.Tensor, h: torch.Tensor, last: torch.Tensor,
                         first: torch.Tensor) -> torch.Tensor:
        P = self.n_pitches
        cand = torch.arange(P, device=h.device)
        idx = torch.where(last[..., None] >= 0, cand - last[..., None] + P - 1, 2 * P - 1)
        notes = logits[..., FIRST_PITCH_TOKEN:] + self.relative_out(h).gather(-1, idx)
        opening = self.opening_out(h).gather(-1, (cand - first[..., None]) % 12)
        notes = notes + torch.where(first[..., None] >= 0, opening, torch.zeros_like(opening))
        return torch.cat([logits[..., :FIRST_PITCH_TOKEN], notes], dim=-1)

    def _inputs(self, inputs: torch.Tensor, cond: dict[str, torch.Tensor] | None) -> torch.Tensor:
        x = self.embed(inputs)
        for name in self.config.conditioning:
            if cond is None or name not in cond:
                raise ValueError(f"this model is conditioned on {list(self.config.conditioning)}; "
                                 f"pass cond={{{name!r}: tensor of the same shape as the tokens}}")
            x = x + getattr(self, f"{name}_embed")(cond[name])
        return x

    def _causal_bias(self, T: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(T, device=device)
        dist = (pos[:, None] - pos[None, :]).float()
        bias = -self.alibi[:, None, None] * dist
        return bias.masked_fill(dist < 0, float("-inf"))

    def forward(self, inputs: torch.Tensor, cond: dict[str, torch.Tensor] | None = None,
                state: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Logits (B, T, V) for input tokens (B, T) starting with BEGIN, and the final
        recurrent state (None for the Transformer, which always starts afresh)."""
        x = self._inputs(inputs, cond)
        relative = self.config.relative_pitch
        init = None
        if relative:
            if state is not None and self.config.arch != "transformer":
                state, init = state[:-1], state[-1]
            pitch, last, first, init = self._anchors(inputs, init)
            x = x + self._relative_inputs(pitch, last, first, init)
        if self.config.arch == "transformer":
            bias = self._causal_bias(x.shape[1], x.device)
            for block in self.blocks:
                x = block(x, bias)
            h = self.drop(self.ln_f(x))
            logits = self.out(h)
            return (self._relative_logits(logits, h, last, first) if relative else logits), None
        if state is not None and self.config.arch == "gru":
            state = state[0]
        h, new = self.rnn(self.drop(x), state)
        new = new if isinstance(new, tuple) else (new,)
        h = self.drop(h)
        logits = self.out(h)
        if relative:
            logits = self._relative_logits(logits, h, last, first)
            new = (*new, torch.stack([last[:, -1], first[:, -1]], dim=1))
        return logits, new

    # -- incremental API ---------------------------------------------------------------
    def initial_state(self, batch_size: int, capacity: int = 512) -> tuple[torch.Tensor, ...]:
        """State before BEGIN for ``batch_size`` sequences.

        LSTM: (h, c), GRU: (h,), each (num_layers, B, hidden), plus with ``relative_pitch``
        the (last, first) pitch index so far (B, 2) (-1: none yet). Transformer: the inputs so far,
        (tokens (B, capacity), conditioning (B, capacity, 3), lengths (B,)); it holds up
        to ``capacity`` steps (grown on demand)."""
        c = self.config
        dev = self.out.weight.device
        if c.arch == "transformer":
            return (torch.zeros(batch_size, capacity, dtype=torch.long, device=dev),
                    torch.zeros(batch_size, capacity, 3, dtype=torch.long, device=dev),
                    torch.zeros(batch_size, dtype=torch.long, device=dev))
        z = torch.zeros(c.num_layers, batch_size, c.hidden_size, device=dev)
        state = (z, z.clone()) if c.arch == "lstm" else (z,)
        if c.relative_pitch:
            state = (*state, torch.full((batch_size, 2), -1, dtype=torch.long, device=dev))
        return state

    def _batch_dim(self, i: int) -> int:
        """Batch dimension of state entry ``i``."""
        if self.config.arch == "transformer":
            return 0
        return 1 if i < (2 if self.config.arch == "lstm" else 1) else 0

    def select_state(self, state: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows ``index`` (int64 tensor) of a batched state."""
        return tuple(s.index_select(self._batch_dim(i), index) for i, s in enumerate(state))

    def merge_state(self, state: tuple[torch.Tensor, ...], index: torch.Tensor,
                    rows: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """A copy of ``state`` whose rows ``index`` are replaced by ``rows``."""
        out = []
        for i, (s, r) in enumerate(zip(state, rows)):
            if s.dim() >= 2 and s.shape[1] != r.shape[1] and self._batch_dim(i) == 0:  # transformer capacity
                cap = max(s.shape[1], r.shape[1])
                s, r = self._grow(s, cap), self._grow(r, cap)
            out.append(s.index_copy(self._batch_dim(i), index, r))
        return tuple(out)

    @staticmethod
    def _grow(buf: torch.Tensor, capacity: int) -> torch.Tensor:
        if buf.shape[1] >= capacity:
            return buf
        pad = torch.zeros((buf.shape[0], capacity - buf.shape[1], *buf.shape[2:]), dtype=buf.dtype, device=buf.device)
        return torch.cat([buf, pad], dim=1)

    def _cond_vector(self, cond: dict[str, Any] | None, batch: int) -> dict[str, torch.Tensor] | None:
        if not self.config.conditioning:
            return None
        dev = self.out.weight.device
        out = {}
        for name in self.config.conditioning:
            if cond is None or name not in cond:
                raise ValueError(f"this model is conditioned on {list(self.config.conditioning)}; "
                                 f"step() needs cond={{{name!r}: (B,) ids of the step being predicted}}")
            out[name] = torch.as_tensor(cond[name], dtype=torch.long, device=dev).reshape(batch)
        return out

    def step(self, tokens: torch.Tensor | np.ndarray, state: tuple[torch.Tensor, ...],
             cond: dict[str, Any] | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Feed one token per sequence (B,) (BEGIN = ``vocab_size`` first) and return the
        logits of the next token (B, V) and the new state. ``cond`` gives, for a
        conditioned model, the (B,) chord / key / position ids of the step being predicted."""
        dev = self.out.weight.device
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=dev).reshape(-1)
        B = tokens.shape[0]
        cv = self._cond_vector(cond, B)
        if self.config.arch != "transformer":
            seq_cond = None if cv is None else {k: v[:, None] for k, v in cv.items()}
            logits, new = self.forward(tokens[:, None], seq_cond, state)
            return logits[:, 0], new
        buf, cbuf, length = state
        cap = int(length.max()) + 1
        if cap > buf.shape[1]:
            buf, cbuf = self._grow(buf, 2 * cap), self._grow(cbuf, 2 * cap)
        rows = torch.arange(B, device=dev)
        buf = buf.clone()
        buf[rows, length] = tokens
        cbuf = cbuf.clone()
        if cv is not None:
            for j, name in enumerate(CONDITIONS):
                if name in cv:
                    cbuf[rows, length, j] = cv[name]
        T = cap
        seq_cond = {name: cbuf[:, :T, j] for j, name in enumerate(CONDITIONS) if name in self.config.conditioning}
        logits, _ = self.forward(buf[:, :T], seq_cond or None)
        return logits[rows, length], (buf, cbuf, length + 1)

    def log_probs(self, tokens: torch.Tensor | np.ndarray, state: tuple[torch.Tensor, ...],
                  cond: dict[str, Any] | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`step` followed by ``log_softmax``: (log p(next | history) (B, V), new state)."""
        logits, new = self.step(tokens, state, cond)
        return torch.log_softmax(logits.float(), dim=-1), new

    def sequence_log_probs(self, tokens: np.ndarray | Sequence[int], cond: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """log p of each token of one melody given BEGIN and the tokens before it: (T,)."""
        arr = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        inputs = torch.cat([torch.tensor([self.begin]), arr[:-1]])[None]
        c = None if cond is None else {k: torch.as_tensor(np.asarray(v, dtype=np.int64))[None] for k, v in cond.items()}
        was = self.training
        self.eval()
        with torch.inference_mode():
            logits, _ = self.forward(inputs, c)
            lp = torch.log_softmax(logits[0].float(), -1).gather(1, arr[:, None])[:, 0]
        self.train(was)
        return lp.numpy().astype(np.float64)

    # -- sampling -----------------------------------------------------------------------
    def sample(self, n: int, length: int, temperature: float = 1.0, *, seed: int | None = None,
               cond: dict[str, np.ndarray] | None = None, prime: Sequence[int] | None = None) -> np.ndarray:
        """Sample ``n`` melodies of ``length`` tokens: (n, length) int64.

        ``temperature`` divides the logits (< 1 sharper, > 1 flatter); 0 takes the most
        likely token every step. ``prime`` tokens, if given, are fed first and
        returned as the start of every melody. ``cond`` maps each conditioning name to
        ids of shape (length,) or (n, length).
        """
        if not (isinstance(temperature, (int, float)) and temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        gen = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
        prime = [] if prime is None else [int(t) for t in prime]
        out = np.zeros((n, length), dtype=np.int64)
        was = self.training
        self.eval()
        with torch.inference_mode():
            state = self.initial_state(n, capacity=length + 1)
            prev = torch.full((n,), self.begin, dtype=torch.long)
            for t in range(length):
                c = None
                if cond is not None:
                    c = {k: np.broadcast_to(np.asarray(v), (n, length))[:, t] for k, v in cond.items()}
                logits, state = self.step(prev, state, c)
                if t < len(prime):
                    nxt = torch.full((n,), prime[t], dtype=torch.long)
                elif temperature == 0:
                    nxt = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits.float() / temperature, -1)
                    nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
                out[:, t] = nxt.numpy()
                prev = nxt
        self.train(was)
        return out

    # -- checkpoints --------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **metadata: Any) -> Path:
        """Write a checkpoint (see module doc); ``metadata`` entries are merged into
        :attr:`metadata` first. Returns the path."""
        self.metadata.update(metadata)
        meta = {
            **self.metadata,
            "config": self.config.to_dict(),
            "grid": grid_metadata(self.grid),
            "vocab_size": self.vocab_size,
            "begin_token": self.begin,
            "torch_version": torch.__version__,
        }
        return write_checkpoint(path, fmt=CHECKPOINT_FORMAT, version=FORMAT_VERSION, metadata=meta, model=self)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, grid: TokenGrid | None = None) -> NoteRNN:
        """Load a checkpoint written by :meth:`save` (default: the shipped prior), on CPU,
        in eval mode. With ``grid``, the checkpoint must have been trained on that grid.

        Raises:
            CheckpointError: the file is missing, corrupt or not a note-RNN checkpoint,
                lacks a key, has an unknown format version, its weights do not fit its
                config, or its grid/vocabulary differs from ``grid``.
        """
        path = DEFAULT_PRIOR if path is None else Path(path).expanduser()
        hint = " (the shipped prior is missing: reinstall musicenv or run `musicenv pretrain`)" \
            if path == DEFAULT_PRIOR else ""
        payload, meta = read_checkpoint(path, fmt=CHECKPOINT_FORMAT, version=FORMAT_VERSION, what="note-RNN",
                                        error=CheckpointError, missing_hint=hint)
        for key in ("config", "grid", "vocab_size"):
            if key not in meta:
                raise CheckpointError(f"note-RNN checkpoint {path}: metadata lacks {key!r}")
        try:
            ck_grid = grid_from_metadata(meta)
            config = NoteRNNConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"note-RNN checkpoint {path}: bad grid or config in metadata ({e})") from e
        if meta["vocab_size"] != ck_grid.vocab_size or config.vocab_size != ck_grid.vocab_size:
            raise CheckpointError(f"note-RNN checkpoint {path}: vocabulary size {meta['vocab_size']} / config "
                                  f"{config.vocab_size} does not match its grid's {ck_grid.vocab_size} tokens")
        check_grid(ck_grid, grid, path, "note-RNN", CheckpointError)
        model = cls(config, ck_grid, metadata={k: v for k, v in meta.items()
                                               if k not in ("config", "grid", "vocab_size", "begin_token")})
        load_weights(model, payload, path, "note-RNN", CheckpointError)
        return model

    def __repr__(self) -> str:
        c = self.config
        cond = f", conditioning={list(c.conditioning)}" if c.conditioning else ""
        return (f"NoteRNN({c.arch}, layers={c.num_layers}, hidden={c.hidden_size}, vocab={c.vocab_size}"
                f"{cond}, parameters={self.n_parameters})")


# ---------------------------------------------------------------------------- data
@dataclass
class Example:
    """One training or evaluation melody: tokens and its per-step conditioning ids."""

    tokens: np.ndarray
    chord: np.ndarray
    key: np.ndarray
    position: np.ndarray


def _transpose_chords(chords: np.ndarray, shift: int) -> np.ndarray:
    chords = np.asarray(chords, dtype=np.int64)
    root, quality = chords // N_QUALITIES, chords % N_QUALITIES
    moved = ((root + shift) % 12) * N_QUALITIES + quality
    return np.where(chords == NO_CHORD, NO_CHORD, moved)


def _transpose_key(key: int, shift: int) -> int:
    return (key % 12 + shift) % 12 + 12 * (key >= 12)


def melody_examples(corpus, augment: bool = False) -> tuple[list[Example], int]:
    """Examples of every melody of a :class:`~musicenv.corpus.MelodyCorpus` (in all 12
    keys with ``augment``) and the number of notes folded back into range."""
    grid = corpus.grid
    out, folded = [], 0
    for m in corpus:
        bar = Meter.parse(m.meter).steps_per_bar(grid.steps_per_quarter)
        position = np.arange(m.n_steps, dtype=np.int64) % bar
        versions = all_key_transpositions(m.tokens, grid) if augment else [(0, np.asarray(m.tokens, np.int64), 0)]
        for shift, tokens, nf in versions:
            folded += nf
            key = _transpose_key(m.key, shift)
            out.append(Example(tokens, _transpose_chords(m.chords, shift), np.full(m.n_steps, key, np.int64), position))
    return out, folded


def _collate(examples: Sequence[Example], begin: int, conditioning: Sequence[str]
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    T = max(len(e.tokens) for e in examples)
    B = len(examples)
    inputs = np.full((B, T), begin, dtype=np.int64)
    targets = np.full((B, T), IGNORE, dtype=np.int64)
    cond = {name: np.zeros((B, T), dtype=np.int64) for name in conditioning}
    for i, e in enumerate(examples):
        n = len(e.tokens)
        targets[i, :n] = e.tokens
        inputs[i, 1:n] = e.tokens[:-1]
        for name in conditioning:
            cond[name][i, :n] = getattr(e, name)
    return (torch.from_numpy(inputs), torch.from_numpy(targets),
            {k: torch.from_numpy(v) for k, v in cond.items()} if conditioning else None)


def _batches(examples: Sequence[Example], batch_size: int, rng: np.random.Generator | None,
             max_tokens: int | None = None) -> list[list[int]]:
    """Index lists of similar-length examples; shuffled (jittered sort) when ``rng`` is given."""
    lengths = np.array([len(e.tokens) for e in examples], dtype=np.float64)
    key = lengths if rng is None else lengths * rng.uniform(0.9, 1.1, len(lengths))
    order = np.argsort(key, kind="stable")
    batches, cur = [], []
    for i in order:
        cur.append(int(i))
        if len(cur) >= batch_size or (max_tokens and len(cur) * lengths[cur].max() >= max_tokens):
            batches.append(cur)
            cur = []
    if cur:
        batches.append(cur)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def evaluate_nll(model: NoteRNN, data, batch_size: int = 32) -> float:
    """NLL in nats per token of whole melodies (a corpus, or a list of :class:`Example`;
    see module doc)."""
    examples = data if isinstance(data, list) and (not data or isinstance(data[0], Example)) else melody_examples(data)[0]
    if not examples:
        raise ValueError("evaluate_nll needs at least one melody")
    was = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for idx in _batches(examples, batch_size, None):
            inputs, targets, cond = _collate([examples[i] for i in idx], model.begin, model.config.conditioning)
            logits, _ = model(inputs, cond)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum")
            total += float(loss)
            n += int((targets != IGNORE).sum())
    model.train(was)
    return total / n


@dataclass
class TrainResult:
    """What :func:`train` did: best valid NLL, when, and the curve."""

    best_valid_nll: float
    best_step: int
    steps: int
    seconds: float
    stopped: str  # "max_steps", "early_stopping", "max_minutes"
    notes_folded: int
    n_train_examples: int
    n_train_tokens: int
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(model: NoteRNN, train_corpus, valid_corpus, *, augment: bool = True, batch_size: int = 64,
          lr: float = 3e-3, weight_decay: float = 0.0, max_steps: int = 2000, warmup: int = 100,
          eval_every: int = 100, patience: int = 8, max_minutes: float | None = None, clip: float = 1.0,
          seed: int = 0, progress: bool = True, max_tokens: int | None = 16384) -> TrainResult:
    """Fit ``model`` on ``train_corpus`` (see module doc); restores the weights with the
    best valid NLL and returns a :class:`TrainResult`.

    ``max_steps`` bounds the updates (the cosine schedule spans them); ``max_minutes``
    bounds the wall time (training stops at the next evaluation after it). A batch holds
    up to ``batch_size`` melodies and ``max_tokens`` padded tokens.
    """
    from musicenv.progress import progress_bar  # tqdm on a terminal, lines in a pipe

    if max_steps < 1 or eval_every < 1 or batch_size < 1:
        raise ValueError("max_steps, eval_every and batch_size must be >= 1")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_ex, folded = melody_examples(train_corpus, augment)
    valid_ex, _ = melody_examples(valid_corpus, False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, max_steps - warmup)
        return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    best = evaluate_nll(model, valid_ex)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_step, bad, step, stopped = 0, 0, 0, "max_steps"
    history = [{"step": 0, "valid_nll": best, "train_nll": float("nan"), "seconds": 0.0}]
    t0 = time.perf_counter()
    bar = progress_bar(total=max_steps, desc="training note-RNN", unit="step", disable=not progress, dynamic_ncols=True)
    running, run_n = 0.0, 0
    model.train()
    try:
        while step < max_steps:
            for idx in _batches(train_ex, batch_size, rng, max_tokens):
                inputs, targets, cond = _collate([train_ex[i] for i in idx], model.begin, model.config.conditioning)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                logits, _ = model(inputs, cond)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                step += 1
                running += loss.item()
                run_n += 1
                bar.update(1)
                if step % eval_every == 0 or step == max_steps:
                    v = evaluate_nll(model, valid_ex)
                    elapsed = time.perf_counter() - t0
                    history.append({"step": step, "valid_nll": v, "train_nll": running / run_n, "seconds": elapsed})
                    running, run_n = 0.0, 0
                    if v < best:
                        best, best_step, bad = v, step, 0
                        best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                    else:
                        bad += 1
                    bar.set_postfix(train=f"{history[-1]['train_nll']:.3f}", valid=f"{v:.3f}", best=f"{best:.3f}")
                    if bad >= patience:
                        stopped = "early_stopping"
                    elif max_minutes is not None and elapsed > 60 * max_minutes:
                        stopped = "max_minutes"
                    if stopped != "max_steps":
                        break
                if step >= max_steps:
                    break
            if stopped != "max_steps":
                break
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best, best_step, step, time.perf_counter() - t0, stopped, folded, len(train_ex),
                       int(sum(len(e.tokens) for e in train_ex)), history)


# ---------------------------------------------------------------------------- reward term
def _load_frozen(path: Path) -> NoteRNN:
    from agents.frozen import load_frozen

    return load_frozen(NoteRNN.load, path, CheckpointError, "note-RNN")


# ------------------------------------------------------------------ compiled inference step
@njit(cache=True)
def _lstm_first_gates(tokens, anchors, begin, n_pitches, t_embed, t_interval, t_opening, gates,
                      new_anchors):  # pragma: no cover - compiled
    """Layer 1's input part of the LSTM gates for one token per row (input projection and
    both biases folded into per-token tables), and the new (last, first) pitch anchors."""
    B = tokens.shape[0]
    P = n_pitches
    for b in range(B):
        tok = tokens[b]
        last0, first0 = anchors[b, 0], anchors[b, 1]
        pitch = tok - 2 if 2 <= tok < begin else -1  # FIRST_PITCH_TOKEN == 2
        if t_interval.shape[0] > 0:
            if pitch >= 0:
                iv = pitch - last0 + P - 1 if last0 >= 0 else 2 * P - 1
                op = (pitch - first0) % 12 if first0 >= 0 else 12
            else:
                iv = 2 * P
                op = 13
            for j in range(gates.shape[1]):
                gates[b, j] = t_embed[tok, j] + t_interval[iv, j] + t_opening[op, j]
        else:
            for j in range(gates.shape[1]):
                gates[b, j] = t_embed[tok, j]
        new_anchors[b, 0] = pitch if pitch >= 0 else last0
        new_anchors[b, 1] = first0 if first0 >= 0 else pitch


@njit(cache=True)
def _logits_from_heads(heads, V, n_pitches, anchors, relative, out):  # pragma: no cover - compiled
    """Next-token logits from the stacked output heads [out | relative | opening] (the
    relative-pitch logits of NoteRNN._relative_logits)."""
    B = heads.shape[0]
    P = n_pitches
    for b in range(B):
        last, first = anchors[b, 0], anchors[b, 1]
        for a in range(V):
            x = heads[b, a]
            if relative and a >= 2:
                p = a - 2
                x += heads[b, V + (p - last + P - 1 if last >= 0 else 2 * P - 1)]
                if first >= 0:
                    x += heads[b, V + 2 * P + (p - first) % 12]
            out[b, a] = x


class LSTMStepper:
    """One inference step of an unconditioned LSTM :class:`NoteRNN`, compiled.

    Same numbers as ``model.log_probs(tokens, state)`` (to float32 rounding, ~1e-6) at a
    fraction of the cost: torch spends most of a single step on per-operator overhead
    (about 60 small operators for the relative-pitch anchors, the LSTM and the output
    heads). Here layer 1's input projection is a table lookup (token, interval and
    pitch-class embeddings are multiplied by W_ih once, biases folded in), each layer
    is one or two matrix products plus the cell's few vectorised operators, and the
    three output heads are one matrix product plus a compiled gather. States are the model's own
    ((h, c, anchors) torch tensors), so it mixes freely with ``model.log_probs``.
    Frozen weights are copied at construction: build a new stepper after changing them.
    """

    def __init__(self, model: NoteRNN) -> None:
        c = model.config
        if c.arch != "lstm" or c.conditioning:
            raise ValueError("LSTMStepper serves unconditioned LSTM note-RNNs")
        with torch.no_grad():
            sd = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
        V, H = c.vocab_size, c.hidden_size
        self.V, self.P, self.begin, self.relative = V, model.n_pitches, model.begin, bool(c.relative_pitch)
        w0 = sd["rnn.weight_ih_l0"].T  # (E, 4H)
        bias0 = sd["rnn.bias_ih_l0"] + sd["rnn.bias_hh_l0"]
        self.t_embed = np.ascontiguousarray(sd["embed.weight"] @ w0 + bias0, dtype=np.float32)
        if self.relative:
            self.t_interval = np.ascontiguousarray(sd["interval_embed.weight"] @ w0, dtype=np.float32)
            self.t_opening = np.ascontiguousarray(sd["opening_embed.weight"] @ w0, dtype=np.float32)
        else:
            self.t_interval = self.t_opening = np.zeros((0, 4 * H), dtype=np.float32)
        # matrix products in torch, which keeps to torch.set_num_threads (numpy's BLAS
        # would start threads of its own and fight the env's for the cores)
        t = torch.from_numpy
        self.w_hh = [t(np.ascontiguousarray(sd[f"rnn.weight_hh_l{k}"].T)) for k in range(c.num_layers)]
        self.w_ih = [None] + [t(np.ascontiguousarray(sd[f"rnn.weight_ih_l{k}"].T)) for k in range(1, c.num_layers)]
        self.b = [None] + [t(sd[f"rnn.bias_ih_l{k}"] + sd[f"rnn.bias_hh_l{k}"]) for k in range(1, c.num_layers)]
        # tanh(x) = 2 sigmoid(2x) - 1, and torch's sigmoid is several times faster than
        # its tanh: double the cell-input block (g) of every gate table so one sigmoid
        # over all four blocks serves.
        g = slice(2 * H, 3 * H)
        for table in (self.t_embed, self.t_interval, self.t_opening,
                      *(w.numpy() for w in self.w_hh), *(w.numpy() for w in self.w_ih[1:]),
                      *(b.numpy() for b in self.b[1:])):
            table[..., g] *= 2
        heads_w, heads_b = [sd["out.weight"]], [sd["out.bias"]]
        if self.relative:
            heads_w += [sd["relative_out.weight"], sd["opening_out.weight"]]
            heads_b += [sd["relative_out.bias"], sd["opening_out.bias"]]
        self.w_heads = t(np.ascontiguousarray(np.concatenate(heads_w).T))
        self.b_heads = t(np.concatenate(heads_b).astype(np.float32))
        self.n_layers, self.H = c.num_layers, H

    def __call__(self, tokens: np.ndarray, state: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B,) tokens and a (h, c[, anchors]) state -> (log p (B, V) tensor, new state)."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        B = tokens.shape[0]
        anchors = state[2].numpy() if self.relative else np.full((B, 2), -1, dtype=np.int64)
        new_anchors = np.empty_like(anchors)
        first = np.empty((B, 4 * self.H), dtype=np.float32)
        _lstm_first_gates(tokens, anchors, self.begin, self.P, self.t_embed, self.t_interval, self.t_opening,
                          first, new_anchors)
        gates = torch.from_numpy(first)
        x = None
        with torch.no_grad():
            h_new, c_new = torch.empty_like(state[0]), torch.empty_like(state[1])
            for k in range(self.n_layers):
                if k:
                    gates = torch.addmm(self.b[k], x, self.w_ih[k])
                gates.addmm_(state[0][k], self.w_hh[k])
                i, f, g2, o = gates.sigmoid_().chunk(4, dim=1)  # g2 = sigmoid(2 g)
                c_k = torch.mul(f, state[1][k], out=c_new[k]).addcmul_(i, g2.mul(2).sub_(1))  # f c + i tanh(g)
                x = torch.mul(c_k, 2, out=h_new[k]).sigmoid_().mul_(2).sub_(1).mul_(o)  # o tanh(c)
            heads = torch.addmm(self.b_heads, x, self.w_heads).numpy()
        logits = np.empty((B, self.V), dtype=np.float32)
        _logits_from_heads(heads, self.V, self.P, new_anchors, self.relative, logits)
        new = (h_new, c_new)
        if self.relative:
            new = (*new, torch.from_numpy(new_anchors))
        return torch.log_softmax(torch.from_numpy(logits), dim=1), new


def prior_path(checkpoint: str | os.PathLike = "default") -> Path:
    """The file behind a prior name: ``"default"`` (:data:`DEFAULT_PRIOR`), ``"small"``
    (:data:`SMALL_PRIOR`) or a checkpoint path."""
    named = {"default": DEFAULT_PRIOR, "small": SMALL_PRIOR}
    if isinstance(checkpoint, str) and checkpoint in named:
        return named[checkpoint]
    return Path(checkpoint).expanduser()


def load_prior(checkpoint: str | os.PathLike = "default") -> NoteRNN:
    """The frozen prior behind ``checkpoint`` (see :func:`prior_path`), loaded once per
    file and shared by every env and reward term that uses it."""
    return _load_frozen(prior_path(checkpoint))


def _stepper(model: NoteRNN) -> LSTMStepper | None:
    """The compiled step of a frozen unconditioned LSTM prior (built once per model), else None."""
    if model.config.arch != "lstm" or model.config.conditioning:
        return None
    stepper = getattr(model, "_compiled_step", None)
    if stepper is None:
        stepper = model._compiled_step = LSTMStepper(model)
    return stepper


class PriorTracker:
    """Incremental log p(next token | history) of a frozen prior for a batch of compositions.

    One recurrent step per env step for the whole batch, carrying each composition's
    state: :attr:`logp` (B, V) holds, for every composition, the prior's log-probabilities
    of the token about to be placed (the first after BEGIN right after :meth:`reset`).
    A conditioned prior gets the episode's key, chord at each step and position in the
    bar. Serves the ``prior_log_likelihood`` reward term and the environments'
    ``observe_prior`` observation.

    An unconditioned LSTM prior steps through :class:`LSTMStepper` (same numbers to
    ~1e-6, less per-operator overhead). ``checkpoint`` as for :func:`load_prior`. Raises :class:`CheckpointError` if it cannot
    be loaded and ``ValueError`` if the prior's grid or bar positions do not fit the batch's.
    Pickles without the model, which is reloaded from ``checkpoint``.
    """

    def __init__(self, batch, checkpoint: str | os.PathLike = "default") -> None:
        from musicenv.core import K_STEPS_PER_BAR

        self.checkpoint = checkpoint
        model = load_prior(checkpoint)
        self._step = _stepper(model)

        if model.grid != batch.grid:
            g, e = model.grid, batch.grid
            raise ValueError(
                f"the prior was trained on pitches {g.min_pitch}..{g.max_pitch} at "
                f"{g.steps_per_quarter} steps per quarter ({g.vocab_size} tokens); the environment uses "
                f"{e.min_pitch}..{e.max_pitch} at {e.steps_per_quarter} ({e.vocab_size} tokens)")
        self.model = model
        self._bar = int(batch.consts[K_STEPS_PER_BAR])
        if "position" in model.config.conditioning and self._bar > model.config.bar_positions:
            raise ValueError(f"the prior knows {model.config.bar_positions} positions "
                             f"per bar, the environment's bars have {self._bar} steps")
        B = batch.batch_size
        with torch.inference_mode():
            self._state = model.initial_state(B, capacity=batch.n_steps + 1)
            self.logp = torch.zeros(B, model.vocab_size)
            if not model.config.conditioning:
                # The state after BEGIN is the same for every episode: compute it once.
                self._begin_logp, self._begin_state = model.log_probs(
                    torch.tensor([model.begin]), model.initial_state(1, capacity=batch.n_steps + 1))

    def _cond(self, batch, rows: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray] | None:
        conditioning = self.model.config.conditioning
        if not conditioning:
            return None
        t = np.minimum(t, batch.n_steps - 1)
        values = {"chord": batch.chords[rows, t], "key": batch.key[rows], "position": t % self._bar}
        return {name: values[name] for name in conditioning}

    def reset(self, batch, mask: np.ndarray) -> None:
        """Start the compositions where ``mask`` anew (state after BEGIN)."""
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return
        model = self.model
        idx = torch.from_numpy(rows)
        with torch.inference_mode():
            if not model.config.conditioning:
                sub = tuple(s.expand(*[rows.size if d == model._batch_dim(i) else -1 for d in range(s.dim())])
                            for i, s in enumerate(self._begin_state))
                logp = self._begin_logp.expand(rows.size, -1)
            else:
                cap = batch.n_steps + 1
                logp, sub = model.log_probs(torch.full((rows.size,), model.begin), model.initial_state(rows.size, cap),
                                            self._cond(batch, rows, np.zeros(rows.size, dtype=np.int64)))
            self._state = model.merge_state(self._state, idx, sub)
            self.logp = self.logp.index_copy(0, idx, logp)

    def advance(self, batch, actions: np.ndarray, active: np.ndarray) -> None:
        """Feed ``actions`` (B,) to the rows that are ``active`` and not at their episode's
        last step, *before* the batch commits them (``batch.t`` is the step being placed);
        other rows keep their state."""
        model = self.model
        acts = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))
        t = batch.t
        go_on = active & (t + 1 < batch.n_steps)
        n = int(go_on.sum())
        if n == 0:
            return
        with torch.inference_mode():
            if n == batch.batch_size:
                if self._step is not None:
                    self.logp, self._state = self._step(acts.numpy(), self._state)
                else:
                    self.logp, self._state = model.log_probs(acts, self._state,
                                                             self._cond(batch, np.arange(n), t + 1))
            else:
                rows = np.flatnonzero(go_on)
                idx = torch.from_numpy(rows)
                sub_state = model.select_state(self._state, idx)
                if self._step is not None:
                    logp, sub = self._step(acts.numpy()[rows], sub_state)
                else:
                    logp, sub = model.log_probs(acts[idx], sub_state, self._cond(batch, rows, t[rows] + 1))
                self._state = model.merge_state(self._state, idx, sub)
                self.logp = self.logp.index_copy(0, idx, logp)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["model"], state["_step"]  # frozen models are shared, not pickled
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.model = load_prior(self.checkpoint)
        self._step = _stepper(self.model)


class PriorLogLikelihood(RewardTerm):
    """Log-likelihood of each token under a frozen note-RNN prior (the RL Tuner's log p(a|s)).

    log p(a_t | a_0 .. a_{t-1}) under the prior, the episode's first token predicted
    after BEGIN, exactly as the prior was trained. Range (-inf, 0] in nats; the shipped
    prior averages -0.53 per step on held-out Bach chorale melodies, and -log(38) = -3.6
    is what a uniform guess would get; an unidiomatic token costs much more (a leap of
    almost two octaves about -10.6, a HOLD as the first token -4.9). With the ``rl_tuner`` preset (weight 1, music-theory rules
    x 2) this is the paper's r = log p(a|s) + r_MT / c with c = 0.5.

    Incremental and batched: one recurrent step per env step for the whole batch,
    carrying each composition's hidden state (reset per composition; rows that are not
    active are left as they are). A conditioned prior gets the episode's key, chord
    at each step and position in the bar.

    ``checkpoint``: ``"default"`` for the shipped Bach prior (:data:`DEFAULT_PRIOR`),
    ``"small"`` for the 1 x 64 one (:data:`SMALL_PRIOR`: the same test NLL, several
    times cheaper per step) or a path to a checkpoint written by :meth:`NoteRNN.save`;
    its grid must be the env's.
    Source: Jaques et al. 2017, "Sequence Tutor" / RL Tuner, eq. 3 (KL control).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"checkpoint": "default"}

    def validate(self) -> None:
        ck = self.params["checkpoint"]
        if not isinstance(ck, (str, os.PathLike)) or ck == "":
            raise RewardSpecError(f"prior_log_likelihood: checkpoint must be 'default', 'small' or a path, got {ck!r}")

    @property
    def model(self) -> NoteRNN:
        """The frozen prior (one shared copy per checkpoint file, see :func:`load_prior`)."""
        try:
            return load_prior(self.params["checkpoint"])
        except CheckpointError as e:
            raise RewardSpecError(f"prior_log_likelihood: {e}") from e

    def bind(self, batch) -> None:
        try:
            self._tracker = PriorTracker(batch, self.params["checkpoint"])
        except ValueError as e:  # CheckpointError included
            raise RewardSpecError(f"prior_log_likelihood: {e}") from e

    def reset(self, batch, mask: np.ndarray) -> None:
        self._tracker.reset(batch, mask)

    def step(self, batch, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        tracker = self._tracker
        values = tracker.logp.gather(1, torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))[:, None])
        tracker.advance(batch, actions, active)
        return values[:, 0].double().numpy()


# ---------------------------------------------------------------------------- compose source
class PriorPolicy:
    """Plays the prior in a composition env: each token sampled from the prior's
    ``p(next | tokens so far) ** (1 / temperature)``, token by token.

    Bound to the env's batched core (one-token-per-step envs such as
    MusicComposition-v0); the prior's state follows the episode through a
    :class:`PriorTracker` of batch size 1 and restarts whenever the env is at step 0.
    """

    def __init__(self, env, *, checkpoint: str | os.PathLike = "default", temperature: float = 1.0,
                 seed: int | None = None) -> None:
        core = getattr(env.unwrapped, "core", None)
        if core is None or not hasattr(core, "batch") or core.batch.batch_size != 1:
            raise ValueError("the prior plays single MusicComposition-style envs (one melody token per step)")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.core, self.temperature = core, float(temperature)
        self.tracker = PriorTracker(core.batch, checkpoint)
        self.rng = np.random.default_rng(seed)
        self._active = np.ones(1, dtype=bool)

    def probabilities(self) -> np.ndarray:
        """(V,) the distribution the next token is drawn from."""
        logp = self.tracker.logp[0].double().numpy() / self.temperature
        p = np.exp(logp - logp.max())
        return p / p.sum()

    def __call__(self, obs: Any = None) -> int:
        batch = self.core.batch
        if int(batch.t[0]) == 0:
            self.tracker.reset(batch, self._active)
        p = self.probabilities()
        action = int(self.rng.choice(p.size, p=p))
        self.tracker.advance(batch, np.array([action]), self._active)
        return action


def _prior_source(env, *, argument: str | None, temperature: float):
    """The shipped prior (:data:`DEFAULT_PRIOR`), sampled at ``temperature``."""
    try:
        PriorPolicy(env, temperature=temperature)  # fail now (grid mismatch), not at piece 1
    except ValueError as e:
        raise ValueError(f"source prior: {e}") from e
    return lambda seed: PriorPolicy(env, temperature=temperature, seed=seed)


def _register_compose_source() -> None:
    try:
        from musicenv.compose import register_source
    except ImportError:  # compose is optional
        return
    register_source("prior", _prior_source, summary="the pretrained note-RNN prior sampled at a temperature",
                    uses_temperature=True, replace=True)


_register_compose_source()
