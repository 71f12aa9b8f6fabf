"""The note-RNN prior: sequence models over the token vocabulary, training, sampling,
checkpoints, and the ``prior_log_likelihood`` reward term.

This module trains it (training layer). The model and its checkpoints are in the model
layer, :mod:`agents.models.note_rnn`; the compiled LSTM step in
:mod:`agents.models.stepper`; the tracker, the reward term and the compose source in
:mod:`agents.models.prior`. Their public names are re-exported here, so
``from agents.note_rnn import NoteRNN, load_prior`` keeps working.

The models, the shipped priors (``default``, ``bach``, ``small``), incremental use and
the checkpoint format are described in :mod:`agents.models.note_rnn`.

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
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.models.note_rnn import (
    BACH_PRIOR,
    CONDITIONS,
    CONTEXT_GROUPS,
    DEFAULT_PRIOR,
    FORMAT_VERSION,
    IGNORE,
    PRIOR_NAMES,
    SMALL_PRIOR,
    CheckpointError,
    NoteRNN,
    NoteRNNConfig,
    context_arrays,
    load_prior,
    prior_path,
)
from agents.models.prior import PriorLogLikelihood, PriorPolicy, PriorTracker
from agents.models.stepper import LSTMStepper
from musicenv.encoding import TokenGrid
from musicenv.theory import (
    Meter,
    transpose_chords,
    transpose_key,
)
from rewards.ngram import all_key_transpositions, best_shift, transpose

__all__ = ["NoteRNN", "NoteRNNConfig", "CheckpointError", "Example", "TrainResult", "PriorLogLikelihood",
           "PriorTracker", "PriorPolicy", "LSTMStepper", "load_prior", "prior_path",
           "SMALL_PRIOR", "BACH_PRIOR", "PRIOR_NAMES", "CONTEXT_GROUPS",
           "melody_examples", "context_arrays", "train", "evaluate_nll", "DEFAULT_PRIOR", "FORMAT_VERSION", "CONDITIONS"]


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


