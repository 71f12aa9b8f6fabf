"""The fused numba kernel that runs every built-in reward term over a batch.

One compiled call per environment step scores all built-in terms of a
:class:`~rewards.base.CompositeReward` for all B compositions: a loop over the
batch and, inside it, a dispatch on each term's kernel id to the term's own numba
function (defined next to its class in ``rl_tuner.py``, ``harmony.py``, ...). The
per-call overhead is paid once, not once per term, which is what keeps a
single env fast; the loop over B is what makes the vector env fast.

To add a built-in term: write its kernel function with the shared signature (see
:mod:`rewards.rl_tuner`), give its :class:`~rewards.base.KernelTerm` subclass
``kernel = "<name>"``, append the name to ``KERNEL_NAMES`` and add one branch to
:func:`_dispatch`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rewards import harmony as H
from rewards import rl_tuner as R
from rewards.base import KernelTerm

#: Kernel ids, in dispatch order.
KERNEL_NAMES: tuple[str, ...] = (
    "in_key", "tonic", "no_repetition", "low_autocorrelation", "motif", "repeated_motif",
    "preferred_intervals", "resolve_leaps", "unique_extrema",
    "chord_tone_on_strong_beat", "consonance", "cadence", "stepwise_motion",
    "leading_tone_resolution", "range", "rhythmic_variety", "rest_ratio",
)
KERNEL_IDS: dict[str, int] = {n: i for i, n in enumerate(KERNEL_NAMES)}


@njit(cache=True)
def _dispatch(tid, a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if tid == 0:
        return R.in_key_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 1:
        return R.tonic_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 2:
        return R.no_repetition_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 3:
        return R.low_autocorrelation_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 4:
        return R.motif_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 5:
        return R.repeated_motif_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 6:
        return R.preferred_intervals_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 7:
        return R.resolve_leaps_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 8:
        return R.unique_extrema_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 9:
        return H.chord_tone_on_strong_beat_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 10:
        return H.consonance_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 11:
        return H.cadence_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 12:
        return H.stepwise_motion_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 13:
        return H.leading_tone_resolution_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 14:
        return H.range_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 15:
        return H.rhythmic_variety_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    if tid == 16:
        return H.rest_ratio_kernel(a, t, key, tokens, chords, core, consts, beat_level, pitch_of, p, fs, ist)
    return np.nan


@njit(cache=True)
def step_terms_kernel(actions, active, tokens, key, chords, core, consts, beat_level, pitch_of,
                      term_ids, params, weights, f_off, fstate, i_off, istate, cols, out):  # pragma: no cover
    """For every active composition b and built-in term j: ``out[b, cols[j]] = weights[j] *
    score`` (0 where b is inactive)."""
    for b in range(actions.shape[0]):
        if not active[b]:
            for j in range(term_ids.shape[0]):
                out[b, cols[j]] = 0.0
            continue
        a = actions[b]
        t = core[b, 0]
        for j in range(term_ids.shape[0]):
            v = _dispatch(term_ids[j], a, t, key[b], tokens[b], chords[b], core[b], consts, beat_level, pitch_of,
                          params[j], fstate[b, f_off[j]:f_off[j + 1]], istate[b, i_off[j]:i_off[j + 1]])
            out[b, cols[j]] = weights[j] * v


class KernelBatch:
    """The built-in terms of one composite, bound to one batch: parameters, state and
    the compiled step."""

    def __init__(self, terms: list[KernelTerm], batch, weights: np.ndarray, cols: np.ndarray | None = None) -> None:
        self.batch = batch
        n = len(terms)
        self.term_ids = np.array([KERNEL_IDS[t.kernel] for t in terms], dtype=np.int64)
        width = max([len(t.params) for t in terms] + [1])
        self.params = np.zeros((n, width), dtype=np.float64)
        for j, t in enumerate(terms):
            vec = t.param_vector()
            self.params[j, : len(vec)] = vec
        self.weights = np.asarray(weights, dtype=np.float64)
        self.cols = np.arange(n, dtype=np.int64) if cols is None else np.asarray(cols, dtype=np.int64)
        f_sizes = [len(t.FSTATE_INIT) for t in terms]
        i_sizes = [t.istate_size(batch.n_steps) for t in terms]
        self.f_off = np.concatenate([[0], np.cumsum(f_sizes)]).astype(np.int64)
        self.i_off = np.concatenate([[0], np.cumsum(i_sizes)]).astype(np.int64)
        self.f_init = np.array([v for t in terms for v in t.FSTATE_INIT], dtype=np.float64)
        self.i_init = np.concatenate([np.full(s, t.ISTATE_FILL, dtype=np.int64) for t, s in zip(terms, i_sizes)]
                                     + [np.zeros(0, dtype=np.int64)])
        B = batch.batch_size
        self.fstate = np.tile(self.f_init, (B, 1)) if len(self.f_init) else np.zeros((B, 0))
        self.istate = np.tile(self.i_init, (B, 1)) if len(self.i_init) else np.zeros((B, 0), dtype=np.int64)

    def reset(self, mask: np.ndarray) -> None:
        if self.fstate.shape[1]:
            self.fstate[mask] = self.f_init
        if self.istate.shape[1]:
            self.istate[mask] = self.i_init

    def step(self, actions: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        """Write the weighted scores of ``actions`` into ``out[:, cols]`` and absorb them
        (compositions where ``active`` is false are skipped and get 0)."""
        b = self.batch
        step_terms_kernel(actions, active, b.tokens, b.key, b.chords, b.core, b.consts, b.beat_level, b.pitch_of,
                          self.term_ids, self.params, self.weights, self.f_off, self.fstate, self.i_off,
                          self.istate, self.cols, out)
