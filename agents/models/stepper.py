"""The compiled one-token step of a frozen LSTM note-RNN (numba), used while playing.

:class:`LSTMStepper` computes what :meth:`agents.models.note_rnn.NoteRNN.step` computes
for an LSTM prior, for a batch of rows at once, without torch's per-call overhead; the
env's ``observe_prior`` and the ``prior_log_likelihood`` term step the prior once per env
step through it (:class:`agents.models.prior.PriorTracker`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numba import njit

from agents.models.note_rnn import NoteRNN
from musicenv.theory import (
    CHORD_ROOT,
    KEY_TONIC,
)

__all__ = ["LSTMStepper"]


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


