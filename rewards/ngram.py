"""N-gram models of token sequences (numpy only) and the ``ngram_log_likelihood`` term.

An :class:`NGramModel` of order n predicts each token from the n - 1 tokens before
it, with ``BEGIN`` (index ``vocab_size``) padding the start of every melody, and
add-k smoothing::

    p(a | c) = (count(c, a) + k) / (count(c) + k * V)

so an unseen context gets the uniform distribution 1/V. Counts are kept sparse (sorted
int64 keys, looked up with ``np.searchsorted``), so orders up to 8 fit in memory for a
corpus of a few hundred thousand tokens. Models save to and load from ``.npz``
(``allow_pickle=False``) with JSON metadata (order, k, vocabulary, grid, corpus).

:func:`ngram_baselines` fits orders 1..8 on a training split, chooses k (and whether
to train on all 12 transpositions, :func:`all_key_transpositions`) on the valid split
and reports nats per token on the test split: the baselines next to which the note-RNN
prior is judged (``musicenv evaluate-prior``).

The shipped model ``"bach"`` (``agents/pretrained/ngram_bach.npz``) is the order and k
that scored best on the valid split of the Bach chorale sopranos (seed-0 split of
``musicenv.corpus.load("bach")``), fitted on their training split in all 12 keys; it is
written next to the prior by ``musicenv pretrain`` (see ``agents/pretrained/*.metrics.json``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicenv.encoding import FIRST_PITCH_TOKEN, TokenGrid, transpose_tokens
from rewards.base import RewardSpecError, RewardTerm
from rewards.registry import register

__all__ = ["NGramModel", "NGramError", "NGramLogLikelihood", "all_key_transpositions", "transpose",
           "ngram_baselines", "shipped_ngram_path", "FORMAT_VERSION", "MAX_ORDER"]

#: Version of the ``.npz`` layout; bump it when the stored arrays change.
FORMAT_VERSION = 1
MAX_ORDER = 8  # inclusive
#: Smoothing constants tried on the valid split by :func:`ngram_baselines`.
DEFAULT_KS = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
_SHIPPED = {"bach": "ngram_bach.npz"}


class NGramError(ValueError):
    """An n-gram model file is missing, corrupt or does not match the grid."""


def shipped_ngram_path(name: str = "bach") -> Path:
    """Path of a shipped n-gram model (it lives beside the shipped note-RNN prior)."""
    return Path(__file__).resolve().parent.parent / "agents" / "pretrained" / _SHIPPED[name]


# ---------------------------------------------------------------------------- transposition
def transpose(tokens: np.ndarray, shift: int, grid: TokenGrid) -> tuple[np.ndarray, int]:
    """Tokens moved by ``shift`` semitones; pitches leaving the grid's range are folded
    back by octaves (as :mod:`musicenv.corpus` does). Returns (tokens, notes folded).
    :func:`musicenv.encoding.transpose_tokens` over the whole sequence."""
    return transpose_tokens(tokens, shift, grid)


def best_shift(tokens: np.ndarray, pitch_class_shift: int, grid: TokenGrid) -> int:
    """The transposition by ``pitch_class_shift`` (mod 12) semitones that keeps the most
    notes of ``tokens`` in the grid's range: among shifts d = s - 12, s (and s - 24,
    s + 12), the one leaving fewest notes outside, ties to the smaller |d|."""
    s = pitch_class_shift % 12
    tokens = np.asarray(tokens)
    pitch = tokens[tokens >= FIRST_PITCH_TOKEN] - FIRST_PITCH_TOKEN + grid.min_pitch
    best, best_cost = 0, None
    for d in sorted((s - 24, s - 12, s, s + 12), key=lambda d: (abs(d), d)):
        cost = int(((pitch + d < grid.min_pitch) | (pitch + d > grid.max_pitch)).sum())
        if best_cost is None or cost < best_cost:
            best, best_cost = d, cost
    return best


def all_key_transpositions(tokens: np.ndarray, grid: TokenGrid) -> list[tuple[int, np.ndarray, int]]:
    """The melody in all 12 keys: ``(shift, tokens, notes folded)`` for each pitch-class
    shift 0..11 (shift 0 is the melody itself).

    Each pitch-class shift is realised by the octave placement that keeps the most notes
    in range (:func:`best_shift`: a soprano line moves up to 6 semitones either way);
    notes still outside the range are folded by octaves into it and counted.
    """
    out = []
    for s in range(12):
        d = best_shift(tokens, s, grid)
        moved, folded = transpose(tokens, d, grid)
        out.append((d, moved, folded))
    return out


# ---------------------------------------------------------------------------- the model
class NGramModel:
    """Add-k smoothed n-gram model over a token vocabulary of ``vocab_size`` (see module doc).

    ``order`` 1..8 (1 = unigram); contexts are the ``order - 1`` previous tokens,
    ``BEGIN`` (= ``vocab_size``) before the start. Log-probabilities are natural logs.
    """

    def __init__(self, order: int, vocab_size: int, k: float = 0.01, *, meta: dict[str, Any] | None = None) -> None:
        if not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
            raise NGramError(f"order must be an integer in 1..{MAX_ORDER}, got {order!r}")
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
            raise NGramError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        if not (isinstance(k, (int, float, np.floating)) and k > 0 and math.isfinite(k)):
            raise NGramError(f"k must be a positive number, got {k!r}")
        self.order, self.vocab_size, self.k = int(order), int(vocab_size), float(k)
        self.base = self.vocab_size + 1
        self.n_context_ids = self.base ** (self.order - 1)
        if self.n_context_ids * self.vocab_size >= 2**62:
            raise NGramError(f"order {order} over {vocab_size} tokens overflows int64 context ids")
        self.begin_context = int(sum(self.vocab_size * self.base**j for j in range(self.order - 1)))
        self.meta: dict[str, Any] = dict(meta or {})
        empty = np.zeros(0, dtype=np.int64)
        self.keys, self.counts, self.contexts, self.context_counts = empty, empty, empty, empty

    # -- contexts ---------------------------------------------------------------------
    def context_ids(self, tokens: np.ndarray) -> np.ndarray:
        """Context id of every position of one melody (the ``order - 1`` tokens before it,
        oldest most significant, BEGIN-padded): shape (T,)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = self.order - 1
        if n == 0:
            return np.zeros(len(tokens), dtype=np.int64)
        padded = np.concatenate([np.full(n, self.vocab_size, dtype=np.int64), tokens[:-1] if len(tokens) else tokens])
        windows = np.lib.stride_tricks.sliding_window_view(padded, n)
        weights = self.base ** np.arange(n - 1, -1, -1, dtype=np.int64)
        return windows @ weights

    def next_context(self, context: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Context ids after appending ``tokens`` to contexts ``context`` (elementwise)."""
        if self.order == 1:
            return np.zeros_like(np.asarray(context))
        return (np.asarray(context) * self.base + np.asarray(tokens)) % self.n_context_ids

    # -- fitting ----------------------------------------------------------------------
    def fit(self, sequences: Iterable[np.ndarray]) -> NGramModel:
        """Count the n-grams of ``sequences`` (each a melody from its start); returns self."""
        keys = []
        for seq in sequences:
            seq = np.asarray(seq, dtype=np.int64)
            if seq.size and (seq.min() < 0 or seq.max() >= self.vocab_size):
                raise NGramError(f"token outside 0..{self.vocab_size - 1} in a training sequence")
            keys.append(self.context_ids(seq) * self.vocab_size + seq)
        allk = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        self.keys, self.counts = np.unique(allk, return_counts=True)
        self.counts = self.counts.astype(np.int64)
        ctx = self.keys // self.vocab_size
        starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]]) if ctx.size else np.zeros(0, dtype=np.int64)
        self.contexts = ctx[starts]
        self.context_counts = np.add.reduceat(self.counts, starts) if starts.size else np.zeros(0, dtype=np.int64)
        return self

    def with_k(self, k: float) -> NGramModel:
        """The same counts with another smoothing constant (shares the arrays)."""
        other = NGramModel(self.order, self.vocab_size, k, meta={**self.meta, "k": float(k)})
        other.keys, other.counts, other.contexts, other.context_counts = (
            self.keys, self.counts, self.contexts, self.context_counts)
        return other

    @property
    def n_tokens(self) -> int:
        """Tokens counted in training."""
        return int(self.counts.sum())

    # -- probabilities ----------------------------------------------------------------
    @staticmethod
    def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
        if sorted_keys.size == 0:
            return np.zeros(query.shape, dtype=np.int64)
        i = np.searchsorted(sorted_keys, query)
        i = np.minimum(i, sorted_keys.size - 1)
        return np.where(sorted_keys[i] == query, values[i], 0)

    def log_prob(self, context: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """log p(token | context) for arrays of context ids and tokens (same shape)."""
        context = np.asarray(context, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        num = self._lookup(self.keys, self.counts, context * self.vocab_size + tokens) + self.k
        den = self._lookup(self.contexts, self.context_counts, context) + self.k * self.vocab_size
        return np.log(num) - np.log(den)

    def distribution(self, context: np.ndarray) -> np.ndarray:
        """p(. | context) for each context id: shape (*context.shape, V); rows sum to 1."""
        context = np.asarray(context, dtype=np.int64)
        grid = context[..., None] * 0 + np.arange(self.vocab_size)
        return np.exp(self.log_prob(np.broadcast_to(context[..., None], grid.shape), grid))

    def sequence_log_probs(self, tokens: np.ndarray) -> np.ndarray:
        """log p of every token of one melody given the tokens before it: shape (T,)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        return self.log_prob(self.context_ids(tokens), tokens)

    def nll(self, sequences: Iterable[np.ndarray]) -> float:
        """Negative log-likelihood in nats per token over whole melodies (every token,
        from the first, predicted from the tokens before it)."""
        total, n = 0.0, 0
        for seq in sequences:
            lp = self.sequence_log_probs(seq)
            total -= float(lp.sum())
            n += lp.size
        if n == 0:
            raise NGramError("nll of an empty set of sequences")
        return total / n

    # -- files ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.npz`` (counts) with JSON metadata; returns the path."""
        path = Path(path)
        meta = {**self.meta, "format_version": FORMAT_VERSION, "kind": "ngram", "order": self.order,
                "vocab_size": self.vocab_size, "k": self.k}
        from musicenv.files import write_atomically

        path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file handle: numpy would append .npz to a name
                np.savez_compressed(fh, keys=self.keys, counts=self.counts.astype(np.int32),
                                    meta=np.array(json.dumps(meta, sort_keys=True)))

        return write_atomically(path, write, what="n-gram model")

    @classmethod
    def load(cls, path: str | os.PathLike) -> NGramModel:
        """Read a model written by :meth:`save`; raises :class:`NGramError` naming the problem."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = sorted({"keys", "counts", "meta"} - set(data.files))
                if missing:
                    raise NGramError(f"n-gram file {path} lacks {missing}: not written by NGramModel.save")
                keys, counts, meta = data["keys"], data["counts"], json.loads(str(data["meta"]))
        except NGramError:
            raise
        except FileNotFoundError as e:
            raise NGramError(f"n-gram file {path} does not exist") from e
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise NGramError(f"n-gram file {path} is corrupt or not an .npz: {e}") from e
        if meta.get("kind") != "ngram" or meta.get("format_version") != FORMAT_VERSION:
            raise NGramError(f"n-gram file {path} has kind={meta.get('kind')!r}, format_version="
                             f"{meta.get('format_version')!r}; expected 'ngram', {FORMAT_VERSION}")
        model = cls(int(meta["order"]), int(meta["vocab_size"]), float(meta["k"]), meta=meta)
        model.keys, model.counts = keys.astype(np.int64), counts.astype(np.int64)
        if model.keys.size and (np.any(np.diff(model.keys) <= 0) or model.keys[-1] >= model.n_context_ids * model.vocab_size):
            raise NGramError(f"n-gram file {path} is corrupt: keys are not sorted ids of its order and vocabulary")
        model.fit_from_counts()
        return model

    def fit_from_counts(self) -> None:
        """Rebuild the context totals from ``keys`` and ``counts``."""
        ctx = self.keys // self.vocab_size
        if ctx.size == 0:
            self.contexts = self.context_counts = np.zeros(0, dtype=np.int64)
            return
        starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])
        self.contexts, self.context_counts = ctx[starts], np.add.reduceat(self.counts, starts)

    def grid(self) -> TokenGrid | None:
        """The grid recorded in the metadata (None if the model was fitted without one)."""
        g = self.meta.get("grid")
        return None if g is None else TokenGrid(g["min_pitch"], g["max_pitch"], g["steps_per_quarter"])

    def __repr__(self) -> str:
        return (f"NGramModel(order={self.order}, vocab_size={self.vocab_size}, k={self.k:g}, "
                f"tokens={self.n_tokens}, contexts={self.contexts.size})")


# ---------------------------------------------------------------------------- baselines
def ngram_baselines(train: Sequence[np.ndarray], valid: Sequence[np.ndarray], test: Sequence[np.ndarray],
                    grid: TokenGrid, *, orders: Iterable[int] = range(1, MAX_ORDER + 1),
                    ks: Sequence[float] = DEFAULT_KS, augment: Sequence[bool] = (False, True),
                    meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Uniform and n-gram baselines in nats per token on ``test``.

    For each order, every training variant in ``augment`` (False: the training melodies
    as they are; True: in all 12 keys) and every k in ``ks`` is scored on ``valid``; the
    best (variant, k) per order is then scored on ``test``. The best order is the one
    with the lowest valid NLL. Returns a JSON-able dict::

        {"uniform": {"test": log V}, "ngrams": [{"order", "k", "augmented", "valid", "test"}...],
         "best": {...one of ngrams...}, "models": {order: NGramModel}}  # "models" is dropped by callers saving JSON
    """
    V = grid.vocab_size
    variants = {}
    for aug in augment:
        variants[aug] = [t for seq in train for _, t, _ in all_key_transpositions(seq, grid)] if aug else list(train)
    rows, models = [], {}
    for order in orders:
        best = None
        for aug, seqs in variants.items():
            counted = NGramModel(order, V, meta={**(meta or {}), "augmented": aug}).fit(seqs)
            for k in ks:
                m = counted.with_k(k)
                v = m.nll(valid)
                if best is None or v < best[0]:
                    best = (v, aug, k, m)
        v, aug, k, m = best
        rows.append({"order": order, "k": k, "augmented": aug, "valid": v, "test": m.nll(test)})
        models[order] = m
    uniform = math.log(V)
    best_row = min(rows, key=lambda r: r["valid"])
    return {"uniform": {"valid": uniform, "test": uniform}, "ngrams": rows, "best": best_row, "models": models}


# ---------------------------------------------------------------------------- the reward term
_MODEL_CACHE: dict[tuple[str, int, int], NGramModel] = {}


def _load_cached(path: Path) -> NGramModel:
    try:
        st = path.stat()
    except OSError as e:
        raise NGramError(f"n-gram model file {path} does not exist") from e
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = NGramModel.load(path)
    return _MODEL_CACHE[key]


@register("ngram_log_likelihood")
class NGramLogLikelihood(RewardTerm):
    """Log-likelihood of each token under an n-gram model of a corpus: a cheap learned prior.

    log p(a_t | a_{t-n+1} .. a_{t-1}) under an add-k smoothed n-gram model, with the
    start of the episode padded by BEGIN, as the model was trained. Range (-inf, 0],
    in practice about [log(k / (N_c + kV)), 0] (about [-13, 0] for the shipped model);
    -log(V) = -3.64 for a context never seen in training. The cost is one
    ``searchsorted`` per step for the whole batch, no torch.

    ``model``: ``"bach"`` (default) for the shipped model (Bach chorale sopranos,
    training split, all 12 keys; order and k chosen on the valid split, see
    :mod:`rewards.ngram`), or a path to an ``.npz`` written by :meth:`NGramModel.save`.
    The environment's grid must be the model's (default 48..83, 4 steps per quarter).
    Source: the n-gram baselines of music language modelling (e.g. Conklin & Witten
    1995, multiple viewpoints); here the cheap stand-in for the RL Tuner's log p(a|s).
    """

    PARAMS = {"model": "bach"}

    def validate(self) -> None:
        m = self.params["model"]
        if not isinstance(m, (str, os.PathLike)) or (isinstance(m, str) and not m):
            raise RewardSpecError(f"ngram_log_likelihood: model must be 'bach' or a path to an .npz, got {m!r}")

    def _path(self) -> Path:
        m = self.params["model"]
        return shipped_ngram_path(m) if isinstance(m, str) and m in _SHIPPED else Path(m).expanduser()

    @property
    def model(self) -> NGramModel:
        if getattr(self, "_model", None) is None:
            try:
                self._model = _load_cached(self._path())
            except NGramError as e:
                raise RewardSpecError(f"ngram_log_likelihood: {e}") from e
        return self._model

    def bind(self, batch) -> None:
        model = self.model
        grid = model.grid()
        if model.vocab_size != batch.grid.vocab_size or (grid is not None and grid != batch.grid):
            raise RewardSpecError(
                f"ngram_log_likelihood: the model {self._path().name} was fitted on grid {grid} "
                f"({model.vocab_size} tokens) but the environment uses {batch.grid} ({batch.grid.vocab_size} tokens)")
        self._context = np.full(batch.batch_size, model.begin_context, dtype=np.int64)

    def reset(self, batch, mask: np.ndarray) -> None:
        self._context[mask] = self.model.begin_context

    def step(self, batch, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        model = self._model
        values = model.log_prob(self._context, actions)
        self._context = np.where(active, model.next_context(self._context, actions), self._context)
        return values

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_model", None)
        return state
