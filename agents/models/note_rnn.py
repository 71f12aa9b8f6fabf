"""The note-RNN prior's model: sequence models over the token vocabulary and their checkpoints.

The model layer's half of the note-RNN (torch, no training loop). Training and the data
it reads are in :mod:`agents.note_rnn` (which re-exports this module's public names),
the compiled one-token LSTM step in :mod:`agents.models.stepper`, the prior's
incremental state along episodes, the ``prior_log_likelihood`` reward term and the
``prior`` compose source in :mod:`agents.models.prior`.

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
  relative-pitch features conditioned on key, meter, position, current and next chord
  and style, trained on the Bach chorale sopranos, the Essen folk songs and O'Neill's
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

Training: see :mod:`agents.note_rnn`.

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
from collections.abc import Sequence
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
from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, TokenGrid
from musicenv.theory import (
    CHORD_ROOT,
    KEY_TONIC,
    N_CHORDS,
    N_KEYS,
    Meter,
)

__all__ = ["NoteRNN", "NoteRNNConfig", "CheckpointError", "load_prior", "prior_path", "context_arrays",
           "SMALL_PRIOR", "BACH_PRIOR", "DEFAULT_PRIOR", "PRIOR_NAMES", "CONTEXT_GROUPS", "FORMAT_VERSION",
           "CONDITIONS", "ARCHS"]

#: Version of the checkpoint layout; bump it when keys or their meaning change.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "musicenv.note_rnn"
#: The general melody prior, ``"default"``: a 1-layer LSTM conditioned on key, meter,
#: position in the bar, current and next chord and style, trained on Bach chorale
#: sopranos, the Essen folk songs and O'Neill's Irish tunes (:mod:`musicenv.melodies`);
#: see its ``.metrics.json`` for the command, figures and training record.
DEFAULT_PRIOR = PRETRAINED_DIR / "note_rnn_default.pt"
#: The Bach prior, ``"bach"``: token-only 2 x 128 LSTM on the Bach chorale sopranos (the
#: RL Tuner reproduction's prior).
BACH_PRIOR = PRETRAINED_DIR / "note_rnn_bach.pt"
#: A smaller Bach prior, ``"small"`` (1 x 64 LSTM, 37k parameters) with the same test NLL,
#: several times cheaper per step.
SMALL_PRIOR = PRETRAINED_DIR / "note_rnn_bach_small.pt"
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
        return config_from_dict(cls, data, "config")


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



def _load_frozen(path: Path) -> NoteRNN:
    from agents.models.checkpoint import load_frozen

    return load_frozen(NoteRNN.load, path, CheckpointError, "note-RNN")

