"""The hand-written parts of the fused reward loop: the per-term batch loop, the row
sum and the layout of the term table. :mod:`rewards.kernel_dispatch` (generated from
the registered built-in terms by ``python -m rewards.kernels --write``) strings them
together into ``step_terms_kernel``; :mod:`rewards.kernels` binds them to a batch."""

from __future__ import annotations

from numba import njit

__all__ = ["inlined", "score_batch", "row_sum", "T_KERNEL", "T_COL", "T_F_LO", "T_F_HI", "T_I_LO", "T_I_HI",
           "N_TABLE", "MAX_ROW_SUM"]

#: Columns of ``KernelBatch.table``, one row per built-in term of the composite.
T_KERNEL = 0  # index in KERNEL_NAMES
T_COL = 1  # column of the term in the composite's values
T_F_LO, T_F_HI = 2, 3  # the term's slice of each composition's float state row
T_I_LO, T_I_HI = 4, 5  # ... and of its int state row
N_TABLE = 6

#: Terms above this many values per row would need numpy's recursive pairwise split.
MAX_ROW_SUM = 128


def inlined(kernel):
    """``kernel`` (a term's ``@njit`` function) compiled again to be inlined into the
    fused loop (see :mod:`rewards.kernels`)."""
    return njit(inline="always")(kernel.py_func)


@njit(inline="always")
def score_batch(kernel, j, batch, terms, out):  # pragma: no cover - compiled
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
def row_sum(row):  # pragma: no cover - compiled
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
