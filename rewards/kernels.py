"""The fused numba kernel that runs every built-in reward term over a batch.

One compiled call per environment step scores all built-in terms of a
:class:`~rewards.base.CompositeReward` for all B compositions and sums each
composition's reward. The call's fixed cost is paid once, not once per term, which
keeps a single env fast; for each term, a loop over the batch with the term's code
inlined in it keeps the vector env fast.

Each term's kernel (defined next to its class in ``rl_tuner.py``, ``harmony.py``,
``counterpoint.py``, ...)
is compiled here a second time with ``inline="always"``, so numba places its code
inside the batch loop, and the fused kernel is compiled without numba's reference
counting (``_nrt=False``): the per-composition row views handed to a term (``tokens[b]``,
``fstate[b, lo:hi]``, ...) then cost nothing. Measured on the 17-term ``theory``
preset at B = 1024: a called, reference-counted kernel per term and composition took
about 2000 ns per composition; the inlined loops take 90-170 ns (the more random the
actions, the more the terms' branches mispredict). At B = 1 the call went from 3.4 to
1.1 us. The kernels therefore must not allocate arrays (none does; numba refuses to
compile one that does).

To add a built-in term: write its kernel function with the shared signature (see
:mod:`rewards.rl_tuner`), give its :class:`~rewards.base.KernelTerm` subclass
``kernel = "<name>"``, append the name to ``KERNEL_NAMES`` and add one branch to
:func:`step_terms_kernel`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rewards import counterpoint as CP
from rewards import harmonization as HZ
from rewards import harmony as H
from rewards import melody as M
from rewards import rl_tuner as R
from rewards.base import KernelTerm

#: Kernel ids, in dispatch order.
KERNEL_NAMES: tuple[str, ...] = (
    "in_key", "tonic", "no_repetition", "low_autocorrelation", "motif", "repeated_motif",
    "preferred_intervals", "resolve_leaps", "unique_extrema",
    "chord_tone_on_strong_beat", "consonance", "cadence", "stepwise_motion",
    "leading_tone_resolution", "range", "rhythmic_variety", "rest_ratio",
    "vertical_consonance", "parallel_perfects", "direct_perfects", "contrary_motion", "voice_crossing",
    "melodic_leaps", "single_climax", "proper_cadence",
    "melody_chord_tone", "functional_progression", "harmonic_cadence", "corpus_agreement",
    "in_key_time", "chord_tone_time", "stepwise_share", "leap_rate", "leap_resolution", "bar_motif",
    "note_length_profile", "phrase_endings", "period_form", "repeat_rate",
)
KERNEL_IDS: dict[str, int] = {n: i for i, n in enumerate(KERNEL_NAMES)}

#: Columns of ``KernelBatch.table``, one row per built-in term of the composite.
T_KERNEL = 0  # index in KERNEL_NAMES
T_COL = 1  # column of the term in the composite's values
T_F_LO, T_F_HI = 2, 3  # the term's slice of each composition's float state row
T_I_LO, T_I_HI = 4, 5  # ... and of its int state row
N_TABLE = 6


def _inlined(kernel):
    """``kernel`` compiled to be inlined into the fused loop (see module doc)."""
    return njit(inline="always")(kernel.py_func)


_in_key = _inlined(R.in_key_kernel)
_tonic = _inlined(R.tonic_kernel)
_no_repetition = _inlined(R.no_repetition_kernel)
_low_autocorrelation = _inlined(R.low_autocorrelation_kernel)
_motif = _inlined(R.motif_kernel)
_repeated_motif = _inlined(R.repeated_motif_kernel)
_preferred_intervals = _inlined(R.preferred_intervals_kernel)
_resolve_leaps = _inlined(R.resolve_leaps_kernel)
_unique_extrema = _inlined(R.unique_extrema_kernel)
_chord_tone_on_strong_beat = _inlined(H.chord_tone_on_strong_beat_kernel)
_consonance = _inlined(H.consonance_kernel)
_cadence = _inlined(H.cadence_kernel)
_stepwise_motion = _inlined(H.stepwise_motion_kernel)
_leading_tone_resolution = _inlined(H.leading_tone_resolution_kernel)
_range = _inlined(H.range_kernel)
_rhythmic_variety = _inlined(H.rhythmic_variety_kernel)
_rest_ratio = _inlined(H.rest_ratio_kernel)
_vertical_consonance = _inlined(CP.vertical_consonance_kernel)
_parallel_perfects = _inlined(CP.parallel_perfects_kernel)
_direct_perfects = _inlined(CP.direct_perfects_kernel)
_contrary_motion = _inlined(CP.contrary_motion_kernel)
_voice_crossing = _inlined(CP.voice_crossing_kernel)
_melodic_leaps = _inlined(CP.melodic_leaps_kernel)
_single_climax = _inlined(CP.single_climax_kernel)
_proper_cadence = _inlined(CP.proper_cadence_kernel)
_melody_chord_tone = _inlined(HZ.melody_chord_tone_kernel)
_functional_progression = _inlined(HZ.functional_progression_kernel)
_harmonic_cadence = _inlined(HZ.harmonic_cadence_kernel)
_corpus_agreement = _inlined(HZ.corpus_agreement_kernel)
_in_key_time = _inlined(M.in_key_time_kernel)
_chord_tone_time = _inlined(M.chord_tone_time_kernel)
_stepwise_share = _inlined(M.stepwise_share_kernel)
_leap_rate = _inlined(M.leap_rate_kernel)
_leap_resolution = _inlined(M.leap_resolution_kernel)
_bar_motif = _inlined(M.bar_motif_kernel)
_note_length_profile = _inlined(M.note_length_profile_kernel)
_phrase_endings = _inlined(M.phrase_endings_kernel)
_period_form = _inlined(M.period_form_kernel)
_repeat_rate = _inlined(M.repeat_rate_kernel)


@njit(inline="always")
def _score_batch(kernel, j, batch, terms, out):  # pragma: no cover - compiled
    """``out[b, col] = weight * kernel(...)`` of term j for every composition b (0 where
    b is inactive)."""
    actions, active, tokens, key, chords, voice, core, consts, beat_level, pitch_of = batch
    table, params, weights, fstate, istate = terms
    col = table[j, T_COL]
    f_lo, f_hi = table[j, T_F_LO], table[j, T_F_HI]
    i_lo, i_hi = table[j, T_I_LO], table[j, T_I_HI]
    p = params[j]
    w = weights[j]
    for b in range(actions.shape[0]):
        if active[b]:
            out[b, col] = w * kernel(actions[b], core[b, 0], key[b], tokens[b], chords[b], voice[b], core[b], consts,
                                     beat_level, pitch_of, p, fstate[b, f_lo:f_hi], istate[b, i_lo:i_hi])
        else:
            out[b, col] = 0.0


@njit(inline="always")
def _row_sum(row):  # pragma: no cover - compiled
    """``row.sum()`` in numpy's own order (pairwise, 8 accumulators), so that totals are
    bit-identical to ``values.sum(axis=1)``. Rows are short (one value per term): the
    recursive split numpy applies above 128 values is not needed here."""
    n = row.shape[0]
    if n < 8:
        s = 0.0
        for i in range(n):
            s += row[i]
        return 0.0 + s
    r0, r1, r2, r3 = row[0], row[1], row[2], row[3]
    r4, r5, r6, r7 = row[4], row[5], row[6], row[7]
    i = 8
    while i < n - n % 8:
        r0 += row[i]
        r1 += row[i + 1]
        r2 += row[i + 2]
        r3 += row[i + 3]
        r4 += row[i + 4]
        r5 += row[i + 5]
        r6 += row[i + 6]
        r7 += row[i + 7]
        i += 8
    s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        s += row[i]
        i += 1
    return 0.0 + s


#: Terms above this many values per row would need numpy's recursive pairwise split.
MAX_ROW_SUM = 128


@njit(cache=True, _nrt=False)
def step_terms_kernel(actions, active, tokens, key, chords, voice, core, consts, beat_level, pitch_of,
                      table, params, weights, fstate, istate, out, total):  # pragma: no cover - compiled
    """For every built-in term j and composition b: ``out[b, table[j, T_COL]] = weights[j] *
    score`` (0 where b is inactive); then ``total[b]`` = the sum of row ``out[b]``, which
    includes the columns of terms computed outside this kernel."""
    batch = (actions, active, tokens, key, chords, voice, core, consts, beat_level, pitch_of)
    terms = (table, params, weights, fstate, istate)
    for j in range(table.shape[0]):
        tid = table[j, T_KERNEL]
        if tid == 0:
            _score_batch(_in_key, j, batch, terms, out)
        elif tid == 1:
            _score_batch(_tonic, j, batch, terms, out)
        elif tid == 2:
            _score_batch(_no_repetition, j, batch, terms, out)
        elif tid == 3:
            _score_batch(_low_autocorrelation, j, batch, terms, out)
        elif tid == 4:
            _score_batch(_motif, j, batch, terms, out)
        elif tid == 5:
            _score_batch(_repeated_motif, j, batch, terms, out)
        elif tid == 6:
            _score_batch(_preferred_intervals, j, batch, terms, out)
        elif tid == 7:
            _score_batch(_resolve_leaps, j, batch, terms, out)
        elif tid == 8:
            _score_batch(_unique_extrema, j, batch, terms, out)
        elif tid == 9:
            _score_batch(_chord_tone_on_strong_beat, j, batch, terms, out)
        elif tid == 10:
            _score_batch(_consonance, j, batch, terms, out)
        elif tid == 11:
            _score_batch(_cadence, j, batch, terms, out)
        elif tid == 12:
            _score_batch(_stepwise_motion, j, batch, terms, out)
        elif tid == 13:
            _score_batch(_leading_tone_resolution, j, batch, terms, out)
        elif tid == 14:
            _score_batch(_range, j, batch, terms, out)
        elif tid == 15:
            _score_batch(_rhythmic_variety, j, batch, terms, out)
        elif tid == 16:
            _score_batch(_rest_ratio, j, batch, terms, out)
        elif tid == 17:
            _score_batch(_vertical_consonance, j, batch, terms, out)
        elif tid == 18:
            _score_batch(_parallel_perfects, j, batch, terms, out)
        elif tid == 19:
            _score_batch(_direct_perfects, j, batch, terms, out)
        elif tid == 20:
            _score_batch(_contrary_motion, j, batch, terms, out)
        elif tid == 21:
            _score_batch(_voice_crossing, j, batch, terms, out)
        elif tid == 22:
            _score_batch(_melodic_leaps, j, batch, terms, out)
        elif tid == 23:
            _score_batch(_single_climax, j, batch, terms, out)
        elif tid == 24:
            _score_batch(_proper_cadence, j, batch, terms, out)
        elif tid == 25:
            _score_batch(_melody_chord_tone, j, batch, terms, out)
        elif tid == 26:
            _score_batch(_functional_progression, j, batch, terms, out)
        elif tid == 27:
            _score_batch(_harmonic_cadence, j, batch, terms, out)
        elif tid == 28:
            _score_batch(_corpus_agreement, j, batch, terms, out)
        elif tid == 29:
            _score_batch(_in_key_time, j, batch, terms, out)
        elif tid == 30:
            _score_batch(_chord_tone_time, j, batch, terms, out)
        elif tid == 31:
            _score_batch(_stepwise_share, j, batch, terms, out)
        elif tid == 32:
            _score_batch(_leap_rate, j, batch, terms, out)
        elif tid == 33:
            _score_batch(_leap_resolution, j, batch, terms, out)
        elif tid == 34:
            _score_batch(_bar_motif, j, batch, terms, out)
        elif tid == 35:
            _score_batch(_note_length_profile, j, batch, terms, out)
        elif tid == 36:
            _score_batch(_phrase_endings, j, batch, terms, out)
        elif tid == 37:
            _score_batch(_period_form, j, batch, terms, out)
        elif tid == 38:
            _score_batch(_repeat_rate, j, batch, terms, out)
    for b in range(out.shape[0]):
        total[b] = _row_sum(out[b])


class KernelBatch:
    """The built-in terms of one composite, bound to one batch: parameters, state and
    the compiled step."""

    def __init__(self, terms: list[KernelTerm], batch, weights: np.ndarray, cols: np.ndarray | None = None) -> None:
        self.batch = batch
        n = len(terms)
        width = max([len(t.params) for t in terms] + [1])
        self.params = np.zeros((n, width), dtype=np.float64)
        for j, t in enumerate(terms):
            vec = t.param_vector()
            self.params[j, : len(vec)] = vec
        self.weights = np.asarray(weights, dtype=np.float64)
        f_sizes = [len(t.FSTATE_INIT) for t in terms]
        i_sizes = [t.istate_size(batch.n_steps) for t in terms]
        f_off = np.concatenate([[0], np.cumsum(f_sizes)]).astype(np.int64)
        i_off = np.concatenate([[0], np.cumsum(i_sizes)]).astype(np.int64)
        self.table = np.zeros((n, N_TABLE), dtype=np.int64)
        self.table[:, T_KERNEL] = [KERNEL_IDS[t.kernel] for t in terms]
        self.table[:, T_COL] = np.arange(n) if cols is None else cols
        self.table[:, T_F_LO], self.table[:, T_F_HI] = f_off[:-1], f_off[1:]
        self.table[:, T_I_LO], self.table[:, T_I_HI] = i_off[:-1], i_off[1:]
        self.f_init = np.array([v for t in terms for v in t.FSTATE_INIT], dtype=np.float64)
        self.i_init = np.concatenate([np.full(s, t.ISTATE_FILL, dtype=np.int64) for t, s in zip(terms, i_sizes)]
                                     + [np.zeros(0, dtype=np.int64)])
        B = batch.batch_size
        self.fstate = np.tile(self.f_init, (B, 1)) if len(self.f_init) else np.zeros((B, 0))
        self.istate = np.tile(self.i_init, (B, 1)) if len(self.i_init) else np.zeros((B, 0), dtype=np.int64)
        # everything the compiled step reads besides the actions, bound once (the arrays
        # are updated in place, never replaced)
        self._args = (batch.tokens, batch.key, batch.chords, batch.voice, batch.core, batch.consts, batch.beat_level,
                      batch.pitch_of, self.table, self.params, self.weights, self.fstate, self.istate)

    def reset(self, mask: np.ndarray) -> None:
        if self.fstate.shape[1]:
            self.fstate[mask] = self.f_init
        if self.istate.shape[1]:
            self.istate[mask] = self.i_init

    def step(self, actions: np.ndarray, active: np.ndarray, out: np.ndarray, total: np.ndarray) -> None:
        """Write the weighted scores of ``actions`` into ``out[:, cols]`` and absorb them
        (compositions where ``active`` is false are skipped and get 0); then write each
        row's sum, the reward, into ``total``."""
        step_terms_kernel(actions, active, *self._args, out, total)
