"""The leaner term kernels (issue 21) give exactly the values of the ones they replaced.

The kernels below are the pre-issue-21 implementations, copied verbatim from
rewards/melody.py (only renamed ``old_*`` and compiled without the disk cache): the
oracle. For random action sequences (hypothesis) over several meters and lengths, the
new kernels, run through the fused batch dispatch, must give bit-identical per-step
values, and a batch must give what each composition gives alone."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

import rewards
from musicenv.composition import Composition
from musicenv.core import (
    C_LAST_PITCH,
    K_N_STEPS,
    K_STEPS_PER_BAR,
    K_STEPS_PER_QUARTER,
    CompositionBatch,
)
from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, REST
from musicenv.theory import N_CHORDS, Meter
from rewards.melody import _BIN_EDGES, _N_BINS, _TONIC, _is_move, _is_tied


# ---------------------------------------------------------------------------- the old kernels (verbatim)
@njit(cache=False)
def _length_bin(length, spq):  # pragma: no cover
    q = length / spq
    b = 0
    for i in range(1, _BIN_EDGES.shape[0]):
        if q >= _BIN_EDGES[i]:
            b = i
    return b



@njit(cache=False)
def old_stepwise_share_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if not _is_move(a, core, pitch_of):
        return 0.0
    before = fs[0] / fs[1] if fs[1] > 0 else 0.0
    fs[1] += 1.0
    if abs(pitch_of[a] - core[C_LAST_PITCH]) <= 2:
        fs[0] += 1.0
    return p[0] * (fs[0] / fs[1] - before)



@njit(cache=False)
def _excess_share(hits, total, scale, allowed):  # pragma: no cover
    """-scale * max(0, hits / total - allowed) / (1 - allowed); 0 without a total. The old
    leap_rate (as ``_leap_rate_value``) and repeat_rate kernels both computed this."""
    if total == 0:
        return 0.0
    excess = hits / total - allowed
    return -scale * excess / (1.0 - allowed) if excess > 0 else 0.0


@njit(cache=False)
def old_leap_rate_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    if not _is_move(a, core, pitch_of):
        return 0.0
    before = _excess_share(fs[0], fs[1], p[0], p[2])
    fs[1] += 1.0
    if abs(pitch_of[a] - core[C_LAST_PITCH]) >= p[1]:
        fs[0] += 1.0
    return _excess_share(fs[0], fs[1], p[0], p[2]) - before



@njit(cache=False)
def _profile_value(fs, p):  # pragma: no cover
    """-scale * total-variation distance of the counted lengths to the profile."""
    total_w = 0.0
    for i in range(_N_BINS):
        total_w += p[1 + i]
    tv = 0.0
    for i in range(_N_BINS):
        tv += abs(fs[3 + i] / fs[1] - p[1 + i] / total_w)
    return -p[0] * 0.5 * tv


@njit(cache=False)
def old_note_length_profile_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    spq = consts[K_STEPS_PER_QUARTER]
    changed = False
    if a == REST or (a >= FIRST_PITCH_TOKEN and not _is_tied(a, core)):
        if fs[0] >= 0:
            fs[3 + _length_bin(t - fs[0], spq)] += 1.0
            fs[1] += 1.0
            changed = True
        fs[0] = t if a >= FIRST_PITCH_TOKEN else -1.0
    if t == consts[K_N_STEPS] - 1 and fs[0] >= 0:
        fs[3 + _length_bin(t + 1 - fs[0], spq)] += 1.0
        fs[1] += 1.0
        fs[0] = -1.0
        changed = True
    if not changed:
        return 0.0
    value = _profile_value(fs, p)
    r = value - fs[2]
    fs[2] = value
    return r



@njit(cache=False)
def _dominant_tone(pc, key):  # pragma: no cover
    rel = (pc - _TONIC[key]) % 12
    return rel == 7 or rel == 11 or rel == 2


@njit(cache=False)
def old_period_form_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    bar = consts[K_STEPS_PER_BAR]
    n = consts[K_N_STEPS]
    n_bars = n // bar
    if n_bars < 4 or n_bars % 2 != 0 or n % bar != 0 or bar > 64:
        return 0.0
    half = n_bars // 2
    pitch = pitch_of[a]
    onset = pitch >= 0 and not _is_tied(a, core)
    if onset:
        fs[2] = fs[1]
        fs[1] = pitch
        fs[0] = t
        b = t // bar
        if b == 0:
            ist[t % bar] = pitch
        elif b == half:
            ist[bar + t % bar] = pitch
    r = 0.0
    if t == half * bar - 1 and fs[1] >= 0 and _dominant_tone(int(fs[1]) % 12, key):
        r += p[0]  # half cadence: the first half closes on a tone of V
    if t == (half + 1) * bar - 1:
        ref = -1
        ret = -1
        matched = 0
        count0 = 0
        count1 = 0
        for o in range(bar):
            x = ist[o]
            y = ist[bar + o]
            if x >= 0:
                count0 += 1
            if y >= 0:
                count1 += 1
            if x >= 0 and y >= 0:
                if ref < 0:
                    ref = x
                    ret = y
                if x - ref == y - ret:
                    matched += 1
        most = count0 if count0 > count1 else count1
        if most > 0:
            r += p[2] * matched / most  # the opening bar returns (possibly transposed)
    if t == n - 1 and fs[1] >= 0 and int(fs[1]) % 12 == _TONIC[key] and fs[2] >= 0:
        rel = (int(fs[2]) - _TONIC[key]) % 12
        if rel == 2 or rel == 11 or rel == 10 or rel == 7:
            r += p[1]  # authentic close: 2-1, 7-1 or 5-1 onto the tonic
    return r




# repeat_rate (added by issue 18's follow-up, made lean here): verbatim as merged
@njit(cache=False)
def old_repeat_rate_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):  # pragma: no cover
    pitch = pitch_of[a]
    if pitch < 0 or core[C_LAST_PITCH] < 0:
        return 0.0
    before = _excess_share(fs[0], fs[1], p[0], p[1])
    fs[1] += 1.0
    if pitch == core[C_LAST_PITCH]:
        fs[0] += 1.0
    return _excess_share(fs[0], fs[1], p[0], p[1]) - before



# ---------------------------------------------------------------------------- replay
#: term -> (old kernel, its float state at reset, its int state size and fill for n steps)
OLD = {
    "stepwise_share": (old_stepwise_share_kernel, (0.0, 0.0), lambda n: (0, 0)),
    "leap_rate": (old_leap_rate_kernel, (0.0, 0.0), lambda n: (0, 0)),
    "note_length_profile": (old_note_length_profile_kernel, (-1.0, 0.0, 0.0) + (0.0,) * _N_BINS, lambda n: (0, 0)),
    "period_form": (old_period_form_kernel, (-1.0, -1.0, -1.0), lambda n: (128, -1)),
    "repeat_rate": (old_repeat_rate_kernel, (0.0, 0.0), lambda n: (0, 0)),
}


def _old_values(name, params, comps):
    """Per-step raw values of the old kernel of ``name`` for each composition, replayed alone."""
    kernel, f_init, i_spec = OLD[name]
    term = rewards.get(name)(**params)
    p = term.param_vector() if name != "note_length_profile" else np.array(
        [float(v) for v in term.params.values()], dtype=np.float64)
    out = []
    for c in comps:
        n = c.n_steps
        batch = CompositionBatch(1, n, c.grid, c.meter)
        batch.reset(np.ones(1, dtype=bool), key=np.array([c.key.index]), chords=c.chords[None, :n].copy())
        size, fill = i_spec(n)
        fs = np.array(f_init, dtype=np.float64)
        ist = np.full(size, fill, dtype=np.int64)
        vals = np.empty(n)
        for t in range(n):
            a = int(c.tokens[t])
            vals[t] = kernel(a, t, batch.key[0], batch.tokens[0], batch.chords[0], batch.voice[0], batch.core[0],
                             batch.consts, batch.beat_level, batch.pitch_of, p, fs, ist)
            batch.commit(np.array([a], dtype=np.int64))
        out.append(vals)
    return out


@st.composite
def melodies(draw):
    meter = draw(st.sampled_from(["4/4", "3/4", "6/8", "2/4"]))
    m = Meter.parse(meter)
    bar = m.steps_per_bar(DEFAULT_GRID.steps_per_quarter)
    n_bars = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    n = bar * n_bars - draw(st.sampled_from([0, 0, 0, 1, 3]))  # mostly whole bars
    # a mix of notes, holds, rests and re-struck notes, like a policy's
    pool = st.one_of(st.integers(2, DEFAULT_GRID.vocab_size - 1), st.just(1), st.just(1), st.just(0))
    tokens = draw(st.lists(pool, min_size=n, max_size=n))
    if tokens and tokens[0] == 1:
        tokens[0] = 0
    key = draw(st.integers(0, 23))
    chords = np.array(draw(st.lists(st.integers(0, N_CHORDS), min_size=n, max_size=n)), dtype=np.int64)
    return Composition(np.array(tokens, dtype=np.int64), key=key, meter=meter, chords=chords)


PARAMS = {
    "stepwise_share": [{}, {"scale": 2.5}],
    "leap_rate": [{}, {"leap": 3, "allowed": 0.3, "scale": 0.7}],
    "note_length_profile": [{}, {"scale": 3.0, "w16": 0.0, "w8": 2.0, "w4": 5.0, "w1": 1.0}],
    "period_form": [{}, {"half_cadence": 2.0, "return_bonus": 0.5}],
    "repeat_rate": [{}, {"scale": 2.0, "allowed": 0.05}],
}


@settings(max_examples=40, deadline=None)
@given(comps=st.lists(melodies(), min_size=1, max_size=6), which=st.integers(0, 1))
def test_lean_kernels_equal_the_old_ones_exactly(comps, which):
    for name, variants in PARAMS.items():
        params = variants[which]
        spec = {name: {"weight": 1.0, **params}}
        old = _old_values(name, params, comps)
        for idx, _, values in rewards.score_steps_batch(spec, comps):  # new: the fused batch
            for row, i in enumerate(idx):
                np.testing.assert_array_equal(values[row, :, 0], old[i], err_msg=f"{name} {params}")
        for i, c in enumerate(comps):  # new, one composition alone (batch == single)
            _, alone = rewards.score_steps(spec, c)
            np.testing.assert_array_equal(alone[:, 0], old[i], err_msg=f"{name} alone")
