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

Optional conditioning (``conditioning``, any of :data:`CONDITIONS`) adds to the input at
step t an embedding of each context of the step being predicted: the chord code at step
t (:mod:`musicenv.theory`, ``NO_CHORD`` included), the next different chord of the
progression (``next_chord``), the key index (0..23), the meter, the step's position in
its bar (``t % steps_per_bar``; melodies start on a downbeat, see :mod:`musicenv.corpus`)
and a style (collection) id. With ``missing_context`` each table has one more row for
"not given" (id -1), and :func:`train`'s conditioning dropout teaches the model to score
with any subset of its context, down to bare tokens.

Shipped priors (:data:`PRIOR_NAMES`; every place a prior is named takes these names or a
checkpoint path):

* ``"default"`` (:data:`DEFAULT_PRIOR`): the general melody prior, a 1 x 64 LSTM with
  relative-pitch features and harmonic-pitch heads, conditioned on key, meter, position,
  current and next chord and style, trained on the Bach chorale sopranos, the Essen folk songs and O'Neill's
  Irish tunes (:mod:`musicenv.melodies`) in all 12 keys; command, NLL tables and training
  record in ``note_rnn_default.metrics.json``; ``musicenv evaluate-prior`` prints its
  per-collection and leave-one-collection-out tables.
* ``"bach"`` (:data:`BACH_PRIOR`): token-only, like the RL Tuner's Note RNN: a 2-layer
  LSTM of width 128 with relative-pitch features (255k parameters, 1 MB), trained on the
  Bach chorale sopranos in all 12 keys by ``musicenv pretrain --corpus bach --out
  agents/pretrained/note_rnn_bach.pt`` (1400 updates, about 11 minutes on 2 cores); test
  NLL 0.534 nats/token against 0.730 for the best n-gram (``note_rnn_bach.metrics.json``).
  The RL Tuner reproduction uses it.
* ``"small"`` (:data:`SMALL_PRIOR`): a 1 x 64 Bach prior with the same test NLL.

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
general prior (:data:`DEFAULT_PRIOR`); ``NoteRNN.load("bach")`` and every other name of
:data:`PRIOR_NAMES` work too.
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
from musicenv.theory import CHORD_ROOT, KEY_TONIC, N_CHORDS, N_KEYS, NO_CHORD, Meter, transpose_chords, transpose_key
from rewards.base import RewardSpecError, RewardTerm
from rewards.ngram import all_key_transpositions, best_shift, transpose

__all__ = ["NoteRNN", "NoteRNNConfig", "CheckpointError", "Example", "TrainResult", "PriorLogLikelihood",
           "PriorTracker", "PriorPolicy", "LSTMStepper", "load_prior", "prior_path",
           "SMALL_PRIOR", "BACH_PRIOR", "PRIOR_NAMES", "CONTEXT_GROUPS",
           "melody_examples", "context_arrays", "train", "evaluate_nll", "DEFAULT_PRIOR", "FORMAT_VERSION", "CONDITIONS"]

#: Version of the checkpoint layout; bump it when keys or their meaning change.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "musicenv.note_rnn"
_PRETRAINED = Path(__file__).resolve().parent / "pretrained"
#: The general melody prior, ``"default"``: a 1-layer LSTM conditioned on key, meter,
#: position in the bar, current and next chord and style, trained on Bach chorale
#: sopranos, the Essen folk songs and O'Neill's Irish tunes (:mod:`musicenv.melodies`);
#: see its ``.metrics.json`` for the command, figures and training record.
DEFAULT_PRIOR = _PRETRAINED / "note_rnn_default.pt"
#: The Bach prior, ``"bach"``: token-only 2 x 128 LSTM on the Bach chorale sopranos (the
#: RL Tuner reproduction's prior).
BACH_PRIOR = _PRETRAINED / "note_rnn_bach.pt"
#: A smaller Bach prior, ``"small"`` (1 x 64 LSTM, 37k parameters) with the same test NLL,
#: several times cheaper per step.
SMALL_PRIOR = _PRETRAINED / "note_rnn_bach_small.pt"
#: Every name a prior may be given by, and its file.
PRIOR_NAMES: dict[str, Path] = {"default": DEFAULT_PRIOR, "bach": BACH_PRIOR, "small": SMALL_PRIOR}
ARCHS = ("lstm", "gru", "transformer")
#: Every context a note-RNN can be conditioned on, with the number of values each takes
#: (``bar_positions`` and the number of ``styles`` come from the config).
CONDITIONS = ("chord", "key", "position", "meter", "next_chord", "style")
#: Groups of contexts dropped together by conditioning dropout (see :func:`train`).
CONTEXT_GROUPS: tuple[tuple[str, ...], ...] = (("key",), ("meter", "position"), ("chord", "next_chord"), ("style",))
IGNORE = -100  # target of padding positions
# tonic of each key id and root of each chord code (N.C. -1), each with a last entry -1
# for "not given" (id -1 indexes it)
_KEY_TONIC_T = torch.tensor([*KEY_TONIC.tolist(), -1], dtype=torch.long)
_CHORD_ROOT_T = torch.tensor([*CHORD_ROOT.tolist(), -1], dtype=torch.long)


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
        conditioning: any of :data:`CONDITIONS`: ``"chord"`` (chord code at the step,
            ``NO_CHORD`` included), ``"next_chord"`` (the next different chord of the
            progression, see :func:`musicenv.melodies.next_chord_track`), ``"key"``
            (0..23), ``"position"`` (step in the bar), ``"meter"`` (index into
            ``Meter.SUPPORTED``), ``"style"`` (index into ``styles``).
        bar_positions: size of the position-in-bar table (>= steps per bar of the meters used).
        missing_context: every conditioning table has one more row meaning "not given"
            (id -1, or the context left out of ``cond``), so the model scores a bare
            token sequence too; trained by conditioning dropout (:func:`train`).
        styles: names of the style ids (e.g. ``("bach", "essen", "oneills")``).
        relative_pitch: add relative-pitch features (see :class:`NoteRNN`): the interval of
            each input note from the previous pitch, and an output head that scores each
            candidate pitch by its interval from the last pitch, shared by all keys.
        harmonic_pitch: output heads that score each candidate pitch by its pitch class
            above the given key's tonic and above the given chord's root (see
            :class:`NoteRNN`); needs ``"key"`` or ``"chord"`` in ``conditioning``.
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
    missing_context: bool = False
    styles: tuple[str, ...] = ()
    harmonic_pitch: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; accepted: {', '.join(ARCHS)}")
        object.__setattr__(self, "conditioning", tuple(self.conditioning))
        object.__setattr__(self, "styles", tuple(self.styles))
        if "style" in self.conditioning and not self.styles:
            raise ValueError("conditioning on 'style' needs the style names (styles=...)")
        if not isinstance(self.missing_context, bool):
            raise ValueError(f"missing_context must be True or False, got {self.missing_context!r}")
        bad = [c for c in self.conditioning if c not in CONDITIONS]
        if bad or len(set(self.conditioning)) != len(self.conditioning):
            raise ValueError(f"conditioning {list(self.conditioning)} invalid; accepted: any of {', '.join(CONDITIONS)}")
        for name in ("vocab_size", "embed_size", "hidden_size", "num_layers", "n_heads", "bar_positions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.relative_pitch, bool):
            raise ValueError(f"relative_pitch must be True or False, got {self.relative_pitch!r}")
        if not isinstance(self.harmonic_pitch, bool):
            raise ValueError(f"harmonic_pitch must be True or False, got {self.harmonic_pitch!r}")
        if self.harmonic_pitch and not {"key", "chord"} & set(self.conditioning):
            raise ValueError("harmonic_pitch scores pitches against the key and chord: it needs 'key' or 'chord' "
                             f"in conditioning, got {list(self.conditioning)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.arch == "transformer" and self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of n_heads {self.n_heads}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conditioning"] = list(self.conditioning)
        d["styles"] = list(self.styles)
        return d

    def context_size(self, name: str) -> int:
        """Number of values of a context (without the "missing" row)."""
        return {"chord": N_CHORDS + 1, "next_chord": N_CHORDS + 1, "key": N_KEYS, "position": self.bar_positions,
                "meter": len(Meter.SUPPORTED), "style": len(self.styles)}[name]

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

    With ``harmonic_pitch`` (a model conditioned on ``key`` and/or ``chord``) the logit
    of each NOTE_ON token also adds ``key_out(h)[(pc - tonic) % 12]`` when the step's key
    is given and ``chord_out(h)[(pc - root) % 12]`` when its chord is given (not N.C.):
    the pitch class as a scale degree and as a chord degree. Like the relative-pitch
    head these are the same in every key, so "chord tones on the strong beats" is
    learnt once for all twelve roots instead of through the absolute embeddings.
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
        for name in c.conditioning:
            setattr(self, f"{name}_embed", nn.Embedding(c.context_size(name) + c.missing_context, width))
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
        # pitch class of each pitch index: (index + pc_offset) % 12
        self.pc_offset = grid.min_pitch % 12
        if c.harmonic_pitch:
            if "key" in c.conditioning:
                self.key_out = nn.Linear(c.hidden_size, 12)
            if "chord" in c.conditioning:
                self.chord_out = nn.Linear(c.hidden_size, 12)

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

    def _harmonic_logits(self, logits: torch.Tensor, h: torch.Tensor,
                         cond: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """Add the scale-degree and chord-degree heads to the NOTE_ON logits."""
        P = self.n_pitches
        pcs = (torch.arange(P, device=h.device) + self.pc_offset) % 12
        notes = logits[..., FIRST_PITCH_TOKEN:]
        for name, head, table in (("key", "key_out", _KEY_TONIC_T), ("chord", "chord_out", _CHORD_ROOT_T)):
            ids = None if cond is None else cond.get(name)
            if not hasattr(self, head) or ids is None:
                continue
            anchor = table.to(h.device)[ids.clamp(min=-1)]  # -1 (not given) -> the table's last row, -1
            term = getattr(self, head)(h).gather(-1, ((pcs - anchor[..., None]) % 12).expand(*h.shape[:-1], P))
            notes = notes + torch.where(anchor[..., None] >= 0, term, torch.zeros_like(term))
        return torch.cat([logits[..., :FIRST_PITCH_TOKEN], notes], dim=-1)

    def _inputs(self, inputs: torch.Tensor, cond: dict[str, torch.Tensor] | None) -> torch.Tensor:
        x = self.embed(inputs)
        c = self.config
        for name in c.conditioning:
            table = getattr(self, f"{name}_embed")
            if cond is None or name not in cond or cond[name] is None:
                if not c.missing_context:
                    raise ValueError(f"this model is conditioned on {list(c.conditioning)}; "
                                     f"pass cond={{{name!r}: tensor of the same shape as the tokens}}")
                x = x + table.weight[-1]
                continue
            ids = cond[name]
            if c.missing_context:
                ids = torch.where(ids < 0, table.num_embeddings - 1, ids)
            x = x + table(ids)
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
            logits = self._relative_logits(logits, h, last, first) if relative else logits
            if self.config.harmonic_pitch:
                logits = self._harmonic_logits(logits, h, cond)
            return logits, None
        if state is not None and self.config.arch == "gru":
            state = state[0]
        h, new = self.rnn(self.drop(x), state)
        new = new if isinstance(new, tuple) else (new,)
        h = self.drop(h)
        logits = self.out(h)
        if relative:
            logits = self._relative_logits(logits, h, last, first)
            new = (*new, torch.stack([last[:, -1], first[:, -1]], dim=1))
        if self.config.harmonic_pitch:
            logits = self._harmonic_logits(logits, h, cond)
        return logits, new

    # -- incremental API ---------------------------------------------------------------
    def initial_state(self, batch_size: int, capacity: int = 512) -> tuple[torch.Tensor, ...]:
        """State before BEGIN for ``batch_size`` sequences.

        LSTM: (h, c), GRU: (h,), each (num_layers, B, hidden), plus with ``relative_pitch``
        the (last, first) pitch index so far (B, 2) (-1: none yet). Transformer: the inputs so far,
        (tokens (B, capacity), conditioning (B, capacity, len(CONDITIONS)), lengths (B,)); it holds up
        to ``capacity`` steps (grown on demand)."""
        c = self.config
        dev = self.out.weight.device
        if c.arch == "transformer":
            return (torch.zeros(batch_size, capacity, dtype=torch.long, device=dev),
                    torch.zeros(batch_size, capacity, len(CONDITIONS), dtype=torch.long, device=dev),
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
            if cond is None or name not in cond or cond[name] is None:
                if self.config.missing_context:
                    out[name] = torch.full((batch,), -1, dtype=torch.long, device=dev)
                    continue
                raise ValueError(f"this model is conditioned on {list(self.config.conditioning)}; "
                                 f"step() needs cond={{{name!r}: (B,) ids of the step being predicted}}")
            v = cond[name]
            ids = v.to(dev, torch.long) if isinstance(v, torch.Tensor) else \
                torch.as_tensor(np.array(v, dtype=np.int64), device=dev)
            out[name] = ids.expand(batch) if ids.dim() == 0 else ids.reshape(batch)
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
        c = None if cond is None else {k: torch.as_tensor(np.array(v, dtype=np.int64))[None] for k, v in cond.items()}
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

    def sample_in_context(self, n: int, *, key: str | int = "C major", progression: str | Sequence = "I-IV-V-I",
                          meter: str = "4/4", n_bars: int = 4, chords_per_bar: int = 1, style: str | None = None,
                          temperature: float = 1.0, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Sample ``n`` melodies of ``n_bars`` bars in a key, over a chord progression, in a
        meter and (for a model conditioned on ``style``) a style.

        ``progression`` is anything :func:`musicenv.theory.resolve_progression` reads
        (roman numerals in ``key``, chord symbols or codes); it is played
        ``chords_per_bar`` chords a bar and repeated to fill ``n_bars``. Returns the
        tokens (n, steps) and the context arrays the model saw (:func:`context_arrays`).
        Contexts the model is not conditioned on are ignored (a token-only prior
        samples as :meth:`sample`)."""
        cond = context_arrays(self.grid, key=key, progression=progression, meter=meter, n_bars=n_bars,
                              chords_per_bar=chords_per_bar, style=style, styles=self.config.styles)
        length = len(cond["chord"])
        used = {k: v for k, v in cond.items() if k in self.config.conditioning}
        return self.sample(n, length, temperature, seed=seed, cond=used or None), cond

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
        path = DEFAULT_PRIOR if path is None else prior_path(path)
        hint = " (a shipped prior is missing: reinstall musicenv or retrain it with the command in its " \
            ".metrics.json)" if path in PRIOR_NAMES.values() else ""
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
def context_arrays(grid: TokenGrid = DEFAULT_GRID, *, key: str | int = "C major", progression: str | Sequence = "I-IV-V-I",
                   meter: str = "4/4", n_bars: int = 4, chords_per_bar: int = 1, style: str | None = None,
                   styles: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Per-step context ids of a piece (the arrays a conditioned note-RNN reads): ``chord``,
    ``next_chord``, ``position`` (n_steps,) and ``key``, ``meter``, ``style`` (scalars
    as 0-d arrays; style -1 for None). Raises ``ValueError`` (MusicTheoryError) for a
    key, progression or meter it cannot read, or a style not in ``styles``."""
    from musicenv.melodies import next_chord_track
    from musicenv.theory import parse_key, resolve_progression

    k = parse_key(key)
    m = Meter.parse(meter)
    if not isinstance(n_bars, (int, np.integer)) or n_bars < 1:
        raise ValueError(f"n_bars must be a positive integer, got {n_bars!r}")
    bar = m.steps_per_bar(grid.steps_per_quarter)
    if not isinstance(chords_per_bar, (int, np.integer)) or chords_per_bar < 1 or bar % chords_per_bar:
        raise ValueError(f"chords_per_bar={chords_per_bar!r} must be a positive divisor of the {bar} steps of a {m} bar")
    codes = resolve_progression(progression, k)
    slots = n_bars * chords_per_bar
    per_slot = np.array([codes[i % len(codes)] for i in range(slots)], dtype=np.int64)
    chords = np.repeat(per_slot, bar // chords_per_bar)
    if style is not None and style not in styles:
        raise ValueError(f"unknown style {style!r}; accepted: {', '.join(styles) or 'none (a model without styles)'}")
    return {"chord": chords, "next_chord": next_chord_track(chords),
            "position": np.arange(len(chords), dtype=np.int64) % bar, "key": np.array(k),
            "meter": np.array(Meter.SUPPORTED.index(str(m))),
            "style": np.array(-1 if style is None else list(styles).index(style))}


@dataclass
class Example:
    """One training or evaluation melody: tokens and its conditioning ids.

    Per-step arrays (``chord``, ``next_chord``, ``position``) have the tokens' length;
    ``key``, ``meter`` and ``style`` are one id for the melody (an array works too).
    -1 (or None) means "not given" (models with ``missing_context``)."""

    tokens: np.ndarray
    chord: np.ndarray
    key: np.ndarray | int
    position: np.ndarray
    next_chord: np.ndarray | None = None
    meter: int = -1
    style: int = -1

    def transposed(self, shift: int, grid: TokenGrid) -> tuple[Example, int]:
        """The example moved by ``shift`` semitones (pitches folded into ``grid``) and the
        number of notes folded."""
        tokens, folded = transpose(self.tokens, shift, grid)
        key = self.key if np.ndim(self.key) == 0 and int(self.key) < 0 else (
            np.vectorize(transpose_key)(self.key, shift) if np.ndim(self.key) else transpose_key(int(self.key), shift))
        nxt = None if self.next_chord is None else transpose_chords(self.next_chord, shift)
        return Example(tokens, transpose_chords(self.chord, shift), key, self.position, nxt, self.meter,
                       self.style), folded


def melody_examples(corpus, augment: bool = False, style: int | str | None = None) -> tuple[list[Example], int]:
    """Examples of every melody of a :class:`~musicenv.corpus.MelodyCorpus`, or of a list of
    ``(style, Melody)`` pairs (:meth:`musicenv.melodies.MelodySet.split`), in all 12 keys
    with ``augment``, and the number of notes folded back into range. ``style`` (a name
    of :data:`musicenv.melodies.STYLES` or its index) labels a plain corpus's melodies."""
    from musicenv.melodies import next_chord_track, style_index

    pairs = list(corpus) if isinstance(corpus, list) else [(style, m) for m in corpus]
    out, folded = [], 0
    for st, m in pairs:
        grid = m.grid
        meter = Meter.parse(m.meter)
        bar = meter.steps_per_bar(grid.steps_per_quarter)
        position = np.arange(m.n_steps, dtype=np.int64) % bar
        chords = np.asarray(m.chords, np.int64)
        base = Example(np.asarray(m.tokens, np.int64), chords, int(m.key), position, next_chord_track(chords),
                       Meter.SUPPORTED.index(str(meter)), style_index(st))
        if not augment:
            out.append(base)
            continue
        for shift, _, _ in all_key_transpositions(m.tokens, grid):
            ex, nf = base.transposed(shift, grid)
            folded += nf
            out.append(ex)
    return out, folded


def _collate(examples: Sequence[Example], begin: int, conditioning: Sequence[str]
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    T = max(len(e.tokens) for e in examples)
    B = len(examples)
    inputs = np.full((B, T), begin, dtype=np.int64)
    targets = np.full((B, T), IGNORE, dtype=np.int64)
    cond = {name: np.full((B, T), -1, dtype=np.int64) for name in conditioning}
    for i, e in enumerate(examples):
        n = len(e.tokens)
        targets[i, :n] = e.tokens
        inputs[i, 1:n] = e.tokens[:-1]
        for name in conditioning:
            v = getattr(e, name)
            if v is None:
                raise ValueError(f"the examples carry no {name!r} ids; build them with melody_examples()")
            cond[name][i, :n] = v
    return (torch.from_numpy(inputs), torch.from_numpy(targets),
            {k: torch.from_numpy(v) for k, v in cond.items()} if conditioning else None)


def _drop_context(cond: dict[str, torch.Tensor] | None, p: float, rng: np.random.Generator) -> None:
    """Conditioning dropout, in place: per melody, with probability ``p`` every context is
    dropped (a bare token sequence); otherwise each group of :data:`CONTEXT_GROUPS` is
    dropped with probability ``p``. Dropped ids become -1 ("not given")."""
    if not cond or p <= 0:
        return
    B = next(iter(cond.values())).shape[0]
    bare = rng.random(B) < p
    for group in CONTEXT_GROUPS:
        drop = torch.from_numpy(bare | (rng.random(B) < p))
        for name in group:
            if name in cond:
                cond[name][drop] = -1


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


def _as_examples(data, augment: bool = False) -> tuple[list[Example], int]:
    if isinstance(data, list) and data and isinstance(data[0], Example):
        return data, 0
    return melody_examples(data, augment)


def train(model: NoteRNN, train_corpus, valid_corpus, *, augment: bool | str = True, batch_size: int = 64,
          lr: float = 3e-3, weight_decay: float = 0.0, max_steps: int = 2000, warmup: int = 100,
          eval_every: int = 100, patience: int = 8, max_minutes: float | None = None, clip: float = 1.0,
          seed: int = 0, progress: bool = True, max_tokens: int | None = 16384,
          context_dropout: float = 0.0) -> TrainResult:
    """Fit ``model`` on ``train_corpus`` (see module doc); restores the weights with the
    best valid NLL and returns a :class:`TrainResult`.

    The corpora are :class:`~musicenv.corpus.MelodyCorpus` objects, lists of
    ``(style, Melody)`` pairs or lists of :class:`Example`. ``augment``: ``True`` uses
    every training melody in all 12 keys each pass; ``"random"`` puts each melody in one
    key drawn at random (uniform over the 12 pitch-class shifts, octave as in
    :func:`rewards.ngram.all_key_transpositions`) every time it is batched, which
    covers all keys over the passes at 1/12 of the memory; ``False`` uses the
    melodies as they are. ``context_dropout`` p (models with ``missing_context``):
    per melody and update, with probability p no context at all, otherwise each group
    of :data:`CONTEXT_GROUPS` left out with probability p, so the model learns to score
    with any subset of its context, down to a bare token sequence. The valid NLL that
    early stopping watches is computed with the full context.
    ``max_steps`` bounds the updates (the cosine schedule spans them); ``max_minutes``
    bounds the wall time (training stops at the next evaluation after it). A batch holds
    up to ``batch_size`` melodies and ``max_tokens`` padded tokens.
    """
    from musicenv.progress import progress_bar  # tqdm on a terminal, lines in a pipe

    if max_steps < 1 or eval_every < 1 or batch_size < 1:
        raise ValueError("max_steps, eval_every and batch_size must be >= 1")
    if augment not in (True, False, "random"):
        raise ValueError(f"augment must be True, False or 'random', got {augment!r}")
    if not 0.0 <= context_dropout < 1.0:
        raise ValueError(f"context_dropout must be in [0, 1), got {context_dropout!r}")
    if context_dropout > 0 and not model.config.missing_context:
        raise ValueError("context_dropout needs a model with missing_context=True")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    random_keys = augment == "random"
    train_ex, folded = _as_examples(train_corpus, augment is True)
    valid_ex, _ = _as_examples(valid_corpus, False)
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
                chosen = [train_ex[i] for i in idx]
                if random_keys:
                    moved = [e.transposed(best_shift(e.tokens, int(rng.integers(12)), model.grid), model.grid)
                             for e in chosen]
                    chosen = [e for e, _ in moved]
                    folded += sum(nf for _, nf in moved)
                inputs, targets, cond = _collate(chosen, model.begin, model.config.conditioning)
                _drop_context(cond, context_dropout, rng)
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
def _logits_from_heads(heads, V, n_pitches, anchors, relative, tonic, root, off_key, off_chord, pc_offset,
                       out):  # pragma: no cover - compiled
    """Next-token log-probabilities from the stacked output heads [out | relative | opening
    | key | chord] (the logits of NoteRNN._relative_logits and NoteRNN._harmonic_logits,
    then log-softmax). ``tonic`` / ``root`` (B,): -1 where not given; ``off_key`` /
    ``off_chord``: column of that head in ``heads``, -1 if the model has none."""
    B = heads.shape[0]
    P = n_pitches
    for b in range(B):
        last, first = anchors[b, 0], anchors[b, 1]
        for a in range(V):
            x = heads[b, a]
            if a >= 2:
                p = a - 2
                if relative:
                    x += heads[b, V + (p - last + P - 1 if last >= 0 else 2 * P - 1)]
                    if first >= 0:
                        x += heads[b, V + 2 * P + (p - first) % 12]
                if off_key >= 0 and tonic[b] >= 0:
                    x += heads[b, off_key + (p + pc_offset - tonic[b]) % 12]
                if off_chord >= 0 and root[b] >= 0:
                    x += heads[b, off_chord + (p + pc_offset - root[b]) % 12]
            out[b, a] = x
        # log-softmax in place (one pass for the max, one for the sum)
        mx = out[b, 0]
        for a in range(1, V):
            if out[b, a] > mx:
                mx = out[b, a]
        total = 0.0
        for a in range(V):
            total += math.exp(out[b, a] - mx)
        lse = mx + math.log(total)
        for a in range(V):
            out[b, a] -= lse


@njit(cache=True)
def _add_context_rows(gates, table, ids):  # pragma: no cover - compiled
    """gates[b] += sum_j table[ids[b, j]]: the conditioning embeddings' share of layer 1's gates."""
    for b in range(gates.shape[0]):
        for j in range(ids.shape[1]):
            r = ids[b, j]
            for k in range(gates.shape[1]):
                gates[b, k] += table[r, k]


class LSTMStepper:
    """One inference step of an LSTM :class:`NoteRNN`, compiled.

    Conditioned models too: each conditioning embedding is multiplied by W_ih once, so
    the context costs one table row per name and step (``cond`` as for
    :meth:`NoteRNN.step`; -1 or a missing name means "not given" for models with
    ``missing_context``).

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
        if c.arch != "lstm":
            raise ValueError("LSTMStepper serves LSTM note-RNNs")
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
        # conditioning tables stacked: rows offset[name] .. offset[name] + size (+ missing)
        self.conditioning, self.missing = tuple(c.conditioning), bool(c.missing_context)
        self.sizes = {name: c.context_size(name) for name in self.conditioning}
        tables, self.offsets, row = [], {}, 0
        for name in self.conditioning:
            tables.append(sd[f"{name}_embed.weight"] @ w0)
            self.offsets[name] = row
            row += tables[-1].shape[0]
        self.t_cond = np.ascontiguousarray(np.concatenate(tables) if tables else np.zeros((0, 4 * H)),
                                           dtype=np.float32)
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
        for table in (self.t_embed, self.t_interval, self.t_opening, self.t_cond,
                      *(w.numpy() for w in self.w_hh), *(w.numpy() for w in self.w_ih[1:]),
                      *(b.numpy() for b in self.b[1:])):
            table[..., g] *= 2
        heads_w, heads_b = [sd["out.weight"]], [sd["out.bias"]]
        if self.relative:
            heads_w += [sd["relative_out.weight"], sd["opening_out.weight"]]
            heads_b += [sd["relative_out.bias"], sd["opening_out.bias"]]
        # harmonic heads: their column in the stacked heads (-1: none), and per stacked
        # context row the key's tonic / chord's root (-1 for N.C. and "not given")
        self.pc_offset = model.pc_offset
        self.off_key = self.off_chord = -1
        for name, attr in (("key", "off_key"), ("chord", "off_chord")):
            if c.harmonic_pitch and name in self.conditioning:
                setattr(self, attr, sum(w.shape[0] for w in heads_w))
                heads_w.append(sd[f"{name}_out.weight"])
                heads_b.append(sd[f"{name}_out.bias"])
        self.row_tonic = np.full(self.t_cond.shape[0] + 1, -1, dtype=np.int64)  # last entry: no context
        self.row_root = self.row_tonic.copy()
        for name, table, anchor in (("key", self.row_tonic, KEY_TONIC), ("chord", self.row_root, CHORD_ROOT)):
            if name in self.conditioning:
                o = self.offsets[name]
                table[o:o + len(anchor)] = anchor
        self.w_heads = t(np.ascontiguousarray(np.concatenate(heads_w).T))
        self.b_heads = t(np.concatenate(heads_b).astype(np.float32))
        self.n_layers, self.H = c.num_layers, H
        self._none = np.full(0, -1, dtype=np.int64)

    def context_rows(self, cond: dict[str, Any] | None, shape: int | tuple[int, ...]) -> np.ndarray:
        """Rows of the stacked context table for ``cond``: shape ``(*shape, n_conditions)``;
        each entry of ``cond`` broadcasts to ``shape`` (B,) or e.g. (B, T). Precompute
        them once per episode and pass them as ``rows=`` to save the work per step."""
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        ids = np.empty((*shape, len(self.conditioning)), dtype=np.int64)
        for j, name in enumerate(self.conditioning):
            v = None if cond is None else cond.get(name)
            if v is None:
                if not self.missing:
                    raise ValueError(f"this model is conditioned on {list(self.conditioning)}; "
                                     f"step() needs cond={{{name!r}: (B,) ids of the step being predicted}}")
                v = -1
            v = np.broadcast_to(np.asarray(v, dtype=np.int64), shape)
            size = self.sizes[name]
            if v.size and (v.max() >= size or (v.min() < 0 and not self.missing)):
                raise ValueError(f"{name} ids must be in 0..{size - 1}"
                                 f"{' or -1 (not given)' if self.missing else ''}, got {v.min()}..{v.max()}")
            ids[..., j] = self.offsets[name] + np.where(v < 0, size, v)
        return ids

    def __call__(self, tokens: np.ndarray, state: tuple[torch.Tensor, ...], cond: dict[str, Any] | None = None,
                 rows: np.ndarray | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B,) tokens and a (h, c[, anchors]) state -> (log p (B, V) tensor, new state).
        The context is ``cond`` (as for :meth:`NoteRNN.step`) or ``rows``, its
        :meth:`context_rows` (B, n_conditions)."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        B = tokens.shape[0]
        anchors = state[2].numpy() if self.relative else np.full((B, 2), -1, dtype=np.int64)
        new_anchors = np.empty_like(anchors)
        first = np.empty((B, 4 * self.H), dtype=np.float32)
        _lstm_first_gates(tokens, anchors, self.begin, self.P, self.t_embed, self.t_interval, self.t_opening,
                          first, new_anchors)
        tonic = root = self._none
        if self.conditioning:
            rows = self.context_rows(cond, B) if rows is None else rows
            _add_context_rows(first, self.t_cond, rows)
            if self.off_key >= 0:
                tonic = self.row_tonic[rows[:, self.conditioning.index("key")]]
            if self.off_chord >= 0:
                root = self.row_root[rows[:, self.conditioning.index("chord")]]
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
        logp = np.empty((B, self.V), dtype=np.float32)
        _logits_from_heads(heads, self.V, self.P, new_anchors, self.relative, tonic, root, self.off_key,
                           self.off_chord, self.pc_offset, logp)
        new = (h_new, c_new)
        if self.relative:
            new = (*new, torch.from_numpy(new_anchors))
        return torch.from_numpy(logp), new


def prior_path(checkpoint: str | os.PathLike = "default") -> Path:
    """The file behind a prior name: ``"default"`` (:data:`DEFAULT_PRIOR`, the general
    conditioned prior), ``"bach"`` (:data:`BACH_PRIOR`), ``"small"`` (:data:`SMALL_PRIOR`)
    or a checkpoint path."""
    if isinstance(checkpoint, str) and checkpoint in PRIOR_NAMES:
        return PRIOR_NAMES[checkpoint]
    return Path(checkpoint).expanduser()


def load_prior(checkpoint: str | os.PathLike = "default") -> NoteRNN:
    """The frozen prior behind ``checkpoint`` (see :func:`prior_path`), loaded once per
    file and shared by every env and reward term that uses it."""
    return _load_frozen(prior_path(checkpoint))


def _style_id(model: NoteRNN, style: str | None) -> int:
    """Style id of ``style`` for ``model`` (-1 for None); ValueError if the model has no such style."""
    if style is None:
        return -1
    styles = model.config.styles
    if "style" not in model.config.conditioning:
        raise ValueError(f"style={style!r}: this prior is not conditioned on a style "
                         "(use the 'default' prior, or style=None)")
    if style not in styles:
        raise ValueError(f"unknown style {style!r}; this prior knows: {', '.join(styles)}")
    return styles.index(style)


def _stepper(model: NoteRNN) -> LSTMStepper | None:
    """The compiled step of a frozen LSTM prior (built once per model), else None."""
    if model.config.arch != "lstm":
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
    A conditioned prior (the ``default`` one) is fed the env's context for the step
    being predicted, read from the batch: ``key`` (``batch.key``), ``chord``
    (``batch.chords`` at that step), ``next_chord`` (the next different chord of the
    episode's progression), ``meter`` (``batch.meter``), ``position`` (step in the bar)
    and ``style`` (the ``style`` argument: ``"bach"``, ``"essen"``, ``"oneills"`` or
    None for no style). ``context=False`` feeds none of it (a bare token sequence;
    models with ``missing_context`` only). Serves the ``prior_log_likelihood`` reward
    term, the environments' ``observe_prior`` observation and ``compose prior``.

    LSTM priors step through :class:`LSTMStepper` (same numbers to ~1e-6, less
    per-operator overhead). ``checkpoint`` as for :func:`load_prior`. Raises
    :class:`CheckpointError` if it cannot be loaded and ``ValueError`` if the prior's
    grid or bar positions do not fit the batch's, or the style is unknown. Pickles
    without the model, which is reloaded from ``checkpoint``.
    """

    def __init__(self, batch, checkpoint: str | os.PathLike = "default", *, style: str | None = None,
                 context: bool = True) -> None:
        from musicenv.core import K_STEPS_PER_BAR

        self.checkpoint = checkpoint
        model = load_prior(checkpoint)
        self._step = _stepper(model)
        self.style, self.context = style, bool(context)
        self._style_id = _style_id(model, style)
        if not self.context and model.config.conditioning and not model.config.missing_context:
            raise ValueError(f"the prior {checkpoint!r} needs its context ({', '.join(model.config.conditioning)}); "
                             "context=False needs a prior trained with conditioning dropout")
        self._meter_id = Meter.SUPPORTED.index(str(batch.meter)) if str(batch.meter) in Meter.SUPPORTED else -1
        self._next = np.full((batch.batch_size, batch.n_steps), NO_CHORD, dtype=np.int64)
        # with the compiled step: each episode's context rows for every step, set at reset
        self._ctx = None
        if self._step is not None and model.config.conditioning and self.context:
            self._ctx = np.zeros((batch.batch_size, batch.n_steps, len(model.config.conditioning)), dtype=np.int64)

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
        if not conditioning or not self.context:
            return None
        t = np.minimum(t, batch.n_steps - 1)
        values = {"chord": lambda: batch.chords[rows, t], "key": lambda: batch.key[rows],
                  "position": lambda: t % self._bar, "next_chord": lambda: self._next[rows, t],
                  "meter": lambda: self._meter_id, "style": lambda: self._style_id}
        return {name: values[name]() for name in conditioning}

    def _log_probs(self, batch, tokens: np.ndarray, state: tuple, rows: np.ndarray, t: np.ndarray) -> tuple:
        """log p and new state for ``rows`` fed ``tokens``, predicting step ``t`` (per row)."""
        if self._ctx is not None:
            return self._step(tokens, state, rows=self._ctx[rows, np.minimum(t, batch.n_steps - 1)])
        cond = self._cond(batch, rows, t)
        if self._step is not None:
            return self._step(tokens, state, cond)
        return self.model.log_probs(torch.from_numpy(tokens), state, cond)

    def reset(self, batch, mask: np.ndarray) -> None:
        """Start the compositions where ``mask`` anew (state after BEGIN)."""
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return
        model = self.model
        idx = torch.from_numpy(rows)
        if "next_chord" in model.config.conditioning:
            from musicenv.melodies import next_chord_track

            for r in rows:
                self._next[r] = next_chord_track(batch.chords[r])
        if self._ctx is not None:  # the episode's context, all steps at once
            T = batch.n_steps
            steps = np.broadcast_to(np.arange(T), (rows.size, T))
            self._ctx[rows] = self._step.context_rows(self._cond(batch, rows[:, None], steps), (rows.size, T))
        with torch.inference_mode():
            if not model.config.conditioning:
                sub = tuple(s.expand(*[rows.size if d == model._batch_dim(i) else -1 for d in range(s.dim())])
                            for i, s in enumerate(self._begin_state))
                logp = self._begin_logp.expand(rows.size, -1)
            else:
                cap = batch.n_steps + 1
                logp, sub = self._log_probs(batch, np.full(rows.size, model.begin, dtype=np.int64),
                                            model.initial_state(rows.size, cap), rows,
                                            np.zeros(rows.size, dtype=np.int64))
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
                self.logp, self._state = self._log_probs(batch, acts.numpy(), self._state, np.arange(n), t + 1)
            else:
                rows = np.flatnonzero(go_on)
                idx = torch.from_numpy(rows)
                sub_state = model.select_state(self._state, idx)
                logp, sub = self._log_probs(batch, acts.numpy()[rows], sub_state, rows, t[rows] + 1)
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
    after BEGIN, exactly as the prior was trained. Range (-inf, 0] in nats; -log(38) =
    -3.6 is what a uniform guess would get, held-out melodies average about -0.5 to -1
    per step (the figures per collection are in the README's prior section), and an
    unidiomatic token costs much more. With the ``rl_tuner`` preset (weight 1,
    music-theory rules x 2) this is the paper's r = log p(a|s) + r_MT / c with c = 0.5.

    Incremental and batched: one recurrent step per env step for the whole batch,
    carrying each composition's hidden state (reset per composition; rows that are not
    active are left as they are). The conditioned ``default`` prior is fed the episode's
    key, meter, position in the bar, current and next chord, and ``style``
    (:class:`PriorTracker`), so it rewards melodies that fit the env's context.

    Params: ``checkpoint``: ``"default"`` (the general conditioned prior,
    :data:`DEFAULT_PRIOR`), ``"bach"`` (the token-only Bach prior, :data:`BACH_PRIOR`),
    ``"small"`` (the 1 x 64 Bach prior, :data:`SMALL_PRIOR`) or a path to a checkpoint
    written by :meth:`NoteRNN.save`; its grid must be the env's. ``style``: ``None``
    (default: no style), or ``"bach"``, ``"essen"``, ``"oneills"`` to score toward
    that collection's style (KL control toward a style; ``default`` prior only).
    ``context``: feed the env's context (default true); false scores the bare tokens.
    Source: Jaques et al. 2017, "Sequence Tutor" / RL Tuner, eq. 3 (KL control).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"checkpoint": "default", "style": None, "context": True}

    def validate(self) -> None:
        ck = self.params["checkpoint"]
        if not isinstance(ck, (str, os.PathLike)) or ck == "":
            raise RewardSpecError(f"prior_log_likelihood: checkpoint must be 'default', 'bach', 'small' or a path, "
                                  f"got {ck!r}")
        style = self.params["style"]
        from musicenv.melodies import STYLES

        if style is not None and style not in STYLES:
            raise RewardSpecError(f"prior_log_likelihood: style must be one of {', '.join(STYLES)} or null, "
                                  f"got {style!r}")
        if not isinstance(self.params["context"], bool):
            raise RewardSpecError(f"prior_log_likelihood: context must be true or false, got {self.params['context']!r}")

    @property
    def model(self) -> NoteRNN:
        """The frozen prior (one shared copy per checkpoint file, see :func:`load_prior`)."""
        try:
            return load_prior(self.params["checkpoint"])
        except CheckpointError as e:
            raise RewardSpecError(f"prior_log_likelihood: {e}") from e

    def bind(self, batch) -> None:
        try:
            self._tracker = PriorTracker(batch, self.params["checkpoint"], style=self.params["style"],
                                         context=self.params["context"])
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
    A conditioned prior (``checkpoint="default"``) reads the env's key, meter, chords and
    position, and ``style`` (``"bach"``, ``"essen"``, ``"oneills"`` or None).
    """

    def __init__(self, env, *, checkpoint: str | os.PathLike = "default", temperature: float = 1.0,
                 seed: int | None = None, style: str | None = None) -> None:
        core = getattr(env.unwrapped, "core", None)
        if core is None or not hasattr(core, "batch") or core.batch.batch_size != 1:
            raise ValueError("the prior plays single MusicComposition-style envs (one melody token per step)")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.core, self.temperature = core, float(temperature)
        self.tracker = PriorTracker(core.batch, checkpoint, style=style)
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


def _prior_source(env, *, argument: str | None, temperature: float, style: str | None = None,
                  prior: str | os.PathLike | None = None):
    """A prior (``prior``: default, bach, small or a path; default the general
    conditioned one) sampled at ``temperature`` in the env's key, meter and chords, and
    in ``style`` if given."""
    checkpoint = "default" if prior is None else prior
    try:
        PriorPolicy(env, temperature=temperature, checkpoint=checkpoint, style=style)  # fail now, not at piece 1
    except ValueError as e:
        raise ValueError(f"source prior: {e}") from e
    return lambda seed: PriorPolicy(env, temperature=temperature, seed=seed, checkpoint=checkpoint, style=style)


def _register_compose_source() -> None:
    try:
        from musicenv.compose import register_source
    except ImportError:  # compose is optional
        return
    register_source("prior", _prior_source, summary="a pretrained note-RNN prior (--prior, default the general "
                    "one) sampled at a temperature in the env's key and chords (--style bach|essen|oneills)",
                    uses_temperature=True, replace=True, options=("style", "prior"))


_register_compose_source()
