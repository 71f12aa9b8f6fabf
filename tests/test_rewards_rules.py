"""The nine RL Tuner rules (rewards.rl_tuner): exact values on hand-made melodies, a
naive oracle per rule checked by hypothesis, and batch properties of the composite.

Token convention: REST=0, HOLD=1, NOTE_ON token = MIDI - 46 (C4 = 60 -> 14).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from reward_helpers import (
    ALL_TERMS,
    GIVEN_VOICE_TERMS,
    METERS,
    ORACLES,
    RAW_SPEC,
    OnsetsAbove,
    autocorrelation,
    comp,
    compositions,
    nonzero,
    raw,
    tok,
)

import rewards
from musicenv.composition import Composition
from musicenv.core import CompositionBatch
from musicenv.encoding import DEFAULT_GRID, HOLD, REST, notes_to_tokens
from musicenv.theory import NO_CHORD, Meter
from rewards import kernels

C3, C4, D4, E4, F4, G4, A4, B4, C5 = 48, 60, 62, 64, 65, 67, 69, 71, 72
C_MAJOR_SCALE = (60, 62, 64, 65, 67, 69, 71, 72)
HYPOTHESIS = settings(max_examples=100, deadline=None, derandomize=True)


def quarters(midis, n_steps=None):
    """Tokens of consecutive quarter notes (4 steps each)."""
    return notes_to_tokens([(p, 4 * i, 4) for i, p in enumerate(midis)], n_steps)


def sixteenths(*items):
    """Tokens of a line written one step per item: MIDI numbers, or 'R' / 'H'."""
    return [REST if x == "R" else HOLD if x == "H" else tok(x) for x in items]


# ---------------------------------------------------------------------------- in_key
@pytest.mark.parametrize("key", ["C major", "A minor"])
def test_c_major_scale_is_in_key_in_c_major_and_a_minor(key):
    assert nonzero(raw("in_key", comp(quarters(C_MAJOR_SCALE), key=key))) == {}


def test_c_major_scale_in_f_sharp_major_penalises_every_foreign_note():
    # F# major: F# G# A# B C# D# E#; of C D E F G A B C only F (= E#) and B belong.
    values = raw("in_key", comp(quarters(C_MAJOR_SCALE), key="F# major"))
    assert nonzero(values) == {0: -1.0, 4: -1.0, 8: -1.0, 16: -1.0, 20: -1.0, 28: -1.0}


def test_minor_keys_include_the_raised_sixth_and_seventh():
    a_minor_melodic = quarters([69, 71, 72, 74, 76, 78, 80, 81])  # A B C D E F# G# A
    assert nonzero(raw("in_key", comp(a_minor_melodic, key="A minor"))) == {}
    # Chromatic octave from C: C minor admits all but C#, E and F#; C major rejects 5.
    chromatic = sixteenths(*range(60, 72))
    assert nonzero(raw("in_key", comp(chromatic, key="C minor"))) == {1: -1.0, 4: -1.0, 6: -1.0}
    assert nonzero(raw("in_key", comp(chromatic, key="C major"))) == {1: -1.0, 3: -1.0, 6: -1.0, 8: -1.0, 10: -1.0}


def test_in_key_follows_the_key_and_ignores_rests_holds_and_octaves():
    line = sixteenths(65, 66, "R", "H", 53, 78)  # F4, F#4, rest, hold, F3, F#5
    assert nonzero(raw("in_key", comp(line, key="G major"))) == {0: -1.0, 4: -1.0}
    assert nonzero(raw("in_key", comp(line, key="C major"))) == {1: -1.0, 5: -1.0}
    assert nonzero(raw("in_key", comp(line, key="C major"), penalty=2.5)) == {1: -2.5, 5: -2.5}


# ---------------------------------------------------------------------------- tonic
def test_tonic_gives_exactly_15_for_c_to_held_c_in_c_major():
    line = quarters([C4, D4, E4, F4, G4, A4, B4, C4])
    values = raw("tonic", comp(line))
    assert nonzero(values) == {0: 3.0, 28: 3.0, 29: 3.0, 30: 3.0, 31: 3.0}
    assert values.sum() == 15.0


def test_tonic_counts_any_octave_and_follows_the_key():
    assert raw("tonic", comp(quarters([C5, D4, E4, F4, G4, A4, B4, C3]))).sum() == 15.0
    g_line = quarters([G4, A4, B4, C5, D4, E4, 66, G4])
    assert raw("tonic", comp(g_line, key="G major")).sum() == 15.0
    # In G major a C-to-C line earns nothing: the final beat's holds hold no tonic.
    assert nonzero(raw("tonic", comp(quarters([C4, D4, E4, F4, G4, A4, B4, C4]), key="G major"))) == {}


def test_tonic_final_beat_rests_and_holds():
    head = list(quarters([C4, D4, E4, F4, G4, A4, B4]))
    assert raw("tonic", comp(head + [tok(C4), HOLD, REST, HOLD])).sum() == 15.0
    # The step after the final tonic must be a HOLD; a REST there earns nothing.
    assert nonzero(raw("tonic", comp(head + [tok(C4), REST, HOLD, REST]))) == {0: 3.0, 28: 3.0, 30: 3.0, 31: 3.0}
    # A new note in the final beat earns nothing at that step.
    assert nonzero(raw("tonic", comp(head + [tok(C4), HOLD, tok(D4), HOLD]))) == {0: 3.0, 28: 3.0, 29: 3.0, 31: 3.0}


def test_tonic_uses_the_meters_final_beat():
    # 3/4 at 16ths: the beat is 4 steps, so 15 again.
    assert nonzero(raw("tonic", comp(quarters([C4, E4, G4, D4, B4, C4]), meter="3/4"))) == {
        0: 3.0, 20: 3.0, 21: 3.0, 22: 3.0, 23: 3.0}
    # 6/8: the beat is a dotted quarter (6 steps): bonus * (6 + 1) = 21.
    line = notes_to_tokens([(C4, 0, 6), (E4, 6, 6), (D4, 12, 6), (C4, 18, 6)])
    values = raw("tonic", comp(line, meter="6/8"))
    assert nonzero(values) == {0: 3.0, 18: 3.0, 19: 3.0, 20: 3.0, 21: 3.0, 22: 3.0, 23: 3.0}
    assert values.sum() == 21.0


# ---------------------------------------------------------------------------- no_repetition
def test_five_equal_onsets_are_fine_the_sixth_is_penalised():
    assert nonzero(raw("no_repetition", comp(sixteenths(*[C4] * 5, D4)))) == {}
    assert nonzero(raw("no_repetition", comp(sixteenths(*[C4] * 7)))) == {5: -100.0, 6: -100.0}


@pytest.mark.parametrize("sep", ["R", "H"])
def test_with_rests_or_holds_between_the_eighth_onset_is_penalised(sep):
    line = sixteenths(*[x for _ in range(9) for x in (C4, sep)])
    assert nonzero(raw("no_repetition", comp(line))) == {14: -100.0, 16: -100.0}


def test_third_rest_in_a_row_is_penalised_holds_between_allowed():
    assert nonzero(raw("no_repetition", comp(sixteenths("R", "R", "R", "R")))) == {2: -100.0, 3: -100.0}
    assert nonzero(raw("no_repetition", comp(sixteenths("R", "H", "R", "H", "R")))) == {4: -100.0}
    assert nonzero(raw("no_repetition", comp(sixteenths("R", "R", C4, "R", "R")))) == {}


def test_holds_are_never_penalised():
    assert nonzero(raw("no_repetition", comp([tok(C4)] + [HOLD] * 15))) == {}  # a whole note
    assert nonzero(raw("no_repetition", comp([HOLD] * 12))) == {}
    assert nonzero(raw("no_repetition", comp([tok(C4)] + [HOLD] * 31 + [tok(C4)] * 5))) == {}


def test_a_different_pitch_ends_the_run():
    assert nonzero(raw("no_repetition", comp(sixteenths(*[C4] * 5, D4, *[C4] * 5)))) == {}


def test_rests_before_a_run_do_not_separate_its_repeats():
    assert nonzero(raw("no_repetition", comp(sixteenths("R", *[C4] * 6)))) == {6: -100.0}
    assert nonzero(raw("no_repetition", comp(sixteenths(D4, "H", "H", *[C4] * 6)))) == {8: -100.0}
    # ...but a rest after the first onset does: the 8th onset is the first penalised.
    assert nonzero(raw("no_repetition", comp(sixteenths(C4, "R", *[C4] * 7)))) == {8: -100.0}


def test_no_repetition_parameters():
    values = raw("no_repetition", comp(sixteenths(C4, C4, C4, "R", "R")), max_repeats=2, penalty=10.0, max_rests=1)
    assert nonzero(values) == {2: -10.0, 4: -10.0}


# ---------------------------------------------------------------------------- low_autocorrelation
@pytest.mark.parametrize("line", [[tok(C4)] * 32, [REST] * 32, [HOLD] * 20, [tok(C4)]])
def test_constant_line_scores_zero(line):
    values = raw("low_autocorrelation", comp(line))
    assert np.all(values == 0.0)


def test_alternating_line_exact_penalty_and_min_length():
    line = sixteenths(*[C4, D4] * 5)
    values = raw("low_autocorrelation", comp(line))
    # n = 8: rho_1 = -7/8, rho_2 = 6/8, rho_3 = -5/8, all above 0.15: 3 * 18/8 = 6.75.
    assert [autocorrelation(line[:8], k) for k in (1, 2, 3)] == [Fraction(-7, 8), Fraction(6, 8), Fraction(-5, 8)]
    assert np.all(values[:7] == 0.0)
    assert values[7] == pytest.approx(-6.75, abs=1e-12)
    # The paper's -1.5 for any two different first notes is back with min_length=2.
    assert raw("low_autocorrelation", comp(sixteenths(C4, D4)))[1] == 0.0
    assert raw("low_autocorrelation", comp(sixteenths(C4, D4)), min_length=2)[1] == pytest.approx(-1.5, abs=1e-12)


def test_autocorrelation_tie_at_the_threshold_is_not_penalised():
    # Only rho_1 = -3/20 exactly crosses nothing: no penalty at all.
    tie_only = [14, 19, 18, 18, 19, 18, 19, 19]
    assert [autocorrelation(tie_only, k) for k in (1, 2, 3)] == [Fraction(-3, 20), Fraction(1, 20), Fraction(1, 10)]
    assert raw("low_autocorrelation", comp(tie_only))[7] == 0.0
    # rho = (3/20, -1/4, -3/5): lags 2 and 3 cost 3 * (1/4 + 3/5) = 2.55; the tie costs nothing.
    tie_and_more = [16, 19, 18, 18, 15, 15, 16, 19]
    assert [autocorrelation(tie_and_more, k) for k in (1, 2, 3)] == [Fraction(3, 20), Fraction(-1, 4), Fraction(-3, 5)]
    assert raw("low_autocorrelation", comp(tie_and_more))[7] == pytest.approx(-2.55, abs=1e-12)
    # With a threshold of 1/10 the lag-1 coefficient counts too: 3 * (0.15 + 0.25 + 0.6).
    lower = raw("low_autocorrelation", comp(tie_and_more), threshold_num=1, threshold_den=10)
    assert lower[7] == pytest.approx(-3.0, abs=1e-12)
    assert raw("low_autocorrelation", comp(tie_and_more), scale=1.0)[7] == pytest.approx(-0.85, abs=1e-12)


def test_autocorrelation_reads_onset_pitches_not_holds_and_rests():
    # The same eight pitches as quarter notes with rests between score as sixteenths do,
    # and only at their onsets: holds and rests are not values of the signal.
    line = [14, 16] * 4
    spread = [x for tok_ in line for x in (tok_, HOLD, REST, HOLD)]
    dense = raw("low_autocorrelation", comp(line))
    sparse = raw("low_autocorrelation", comp(spread))
    assert sparse[28] == dense[7] == pytest.approx(-6.75, abs=1e-12)
    assert np.count_nonzero(sparse) == 1


# ---------------------------------------------------------------------------- motif
def test_motif_first_possible_at_step_7():
    values = raw("motif", comp(sixteenths(C4, D4, E4, "H", "H", "H", "H", "H", "H")))
    # At step 8 the window D E H... holds only two pitches.
    assert nonzero(values) == {7: 3.0}


def test_motif_bonus_grows_with_distinct_pitches_and_ignores_rests_holds():
    assert raw("motif", comp(sixteenths(*C_MAJOR_SCALE)))[7] == pytest.approx(4.5)
    assert raw("motif", comp(sixteenths(C4, D4, E4, F4, "R", "H", C4, D4)))[7] == pytest.approx(3.3)
    assert nonzero(raw("motif", comp(sixteenths(C4, "R", D4, "H", C4, "R", D4, "H")))) == {}


# ---------------------------------------------------------------------------- repeated_motif
def test_repeated_motif_first_possible_at_15_and_overlap_does_not_count():
    line = sixteenths(*[C4, D4, E4, "H"] * 4)
    assert nonzero(raw("motif", comp(line))) == {t: 3.0 for t in range(7, 16)}
    # The window at step 11 equals the one at 7, but they overlap: only step 15 repeats 0..7.
    assert nonzero(raw("repeated_motif", comp(line))) == {15: 4.0}


def test_repeated_motif_exact_window_match():
    m = [C4, D4, E4, F4, "H", "H", "R", "H"]  # 4 distinct pitches: 4 + 1 = 5
    other = [G4, A4, B4, C5, G4, A4, B4, C5]
    assert nonzero(raw("repeated_motif", comp(sixteenths(*m, *m)))) == {15: 5.0}
    assert nonzero(raw("repeated_motif", comp(sixteenths(*m, *other, *m)))) == {23: 5.0}
    # REST and HOLD are part of the window: swapping one breaks the match.
    near = [C4, D4, E4, F4, "H", "H", "H", "H"]
    assert nonzero(raw("repeated_motif", comp(sixteenths(*m, *near)))) == {}
    # A repeated window of two pitches is no motif.
    assert nonzero(raw("repeated_motif", comp(sixteenths(*[C4, D4, "H", "H", "H", "H", "H", "H"] * 2)))) == {}


# ---------------------------------------------------------------------------- preferred_intervals
@pytest.mark.parametrize(
    ("semitones", "expected"),
    [(0, 0.0), (1, 0.4), (2, 0.4), (3, 0.45), (4, 0.75), (5, 0.35), (6, 0.0), (7, 0.5), (8, 0.25), (9, 0.25),
     (10, -1.5), (11, -1.5), (12, 0.0), (13, -5.0), (19, -5.0)],
)
def test_preferred_interval_table_up_from_c(semitones, expected):
    values = raw("preferred_intervals", comp(sixteenths(C4, C4 + semitones)))
    assert values[0] == 0.0
    assert values[1] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("key", "a", "b", "expected"),
    [
        ("C major", C4, 51, 0.25),  # C down to Eb: a sixth, direction ignored
        ("C major", C4, 55, 0.35),  # C down to G: a fourth
        ("C major", G4, C4, 0.5),  # G down to C: the tonic-dominant fifth
        ("C major", C4, 57, 0.45),  # C down to A: a minor third outside the triad
        ("C major", C4, 56, 0.45),  # C down to Ab: a third, Ab is not in the tonic triad
        ("C major", E4, G4, 0.75),  # minor third inside the tonic triad
        ("C major", E4, C4, 0.75),
        ("C major", D4, F4, 0.45),  # minor third outside it
        ("C major", D4, A4, 0.1),  # a fifth that is not tonic-dominant
        ("C major", G4, C5, 0.35),  # a fourth
        ("A minor", 69, 72, 0.75),  # A-C: the tonic triad of A minor
        ("A minor", 72, 76, 0.75),  # C-E
        ("A minor", 69, 76, 0.5),  # A-E
        ("A minor", C4, G4, 0.1),
        ("G major", G4, 71, 0.75),  # G-B
        ("G major", C4, E4, 0.45),
    ],
)
def test_preferred_intervals_are_key_general(key, a, b, expected):
    assert raw("preferred_intervals", comp(sixteenths(a, b), key=key))[1] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("key", "line", "expected"),
    [
        ("C major", (C4, "H"), [0, 1.5]),
        ("C major", (G4, "H"), [0, 1.5]),
        ("C major", (E4, "H"), [0, 0.375]),
        ("C major", (C4, "R"), [0, 0.75]),
        ("C major", (D4, "R"), [0, 0.25]),
        ("C major", (C4, "R", "H"), [0, 0.75, 1.5]),  # rests and holds are skipped
        ("C major", (C4, "R", E4), [0, 0.75, 0.75]),
        ("C major", ("R", "H", C4, "H"), [0, 0, 0, 1.5]),  # nothing before the first pitch
        ("G major", (G4, "H", C4, "H"), [0, 1.5, 0.1, 0.375]),  # G down to C: not tonic-dominant
    ],
)
def test_hold_and_rest_after_tonic_or_dominant(key, line, expected):
    values = raw("preferred_intervals", comp(sixteenths(*line), key=key))
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- resolve_leaps
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ((C4, C5, B4), [0, 0, 5]),  # octave leap up, step back: resolved
        ((C4, C5, 79), [0, 0, -5]),  # octave up then a fifth up
        ((C4, C5, 79, 77), [0, 0, -5, 5]),  # still open after the second leap
        ((C4, C5, 74, C5), [0, 0, 0, 5]),  # a step onward leaves it open
        ((C4, C5, C5, B4), [0, 0, 0, 5]),  # a repeated note too
        ((C4, "R", C5, "H", B4), [0, 0, 0, 0, 5]),  # rests and holds are skipped
        ((C4, C5, C4, D4), [0, 0, 0, 0]),  # leaping straight back closes it with 0
        ((C5, C4, D4), [0, 0, 5]),  # leap down, step up
        ((C4, G4, F4), [0, 0, 5]),  # a fifth is a leap
        ((C4, 66, E4), [0, 0, 0]),  # a tritone is not
        ((C4, C5, B4, A4), [0, 0, 5, 0]),  # resolved once
    ],
)
def test_resolve_leaps(line, expected):
    np.testing.assert_array_equal(raw("resolve_leaps", comp(sixteenths(*line))), expected)


def test_resolve_leaps_parameters():
    assert nonzero(raw("resolve_leaps", comp(sixteenths(C4, G4, F4)), leap=12)) == {}
    assert nonzero(raw("resolve_leaps", comp(sixteenths(C4, C5, B4)), leap=12, bonus=2.0)) == {2: 2.0}


# ---------------------------------------------------------------------------- unique_extrema
def test_unique_extrema_at_the_last_step_only():
    assert nonzero(raw("unique_extrema", comp(quarters([C4, E4, G4, C5])))) == {15: 6.0}
    assert nonzero(raw("unique_extrema", comp(quarters([C4, G4, E4, G4])))) == {15: 3.0}  # lowest only
    assert nonzero(raw("unique_extrema", comp(quarters([G4, C4, E4, C4])))) == {15: 3.0}  # highest only
    assert nonzero(raw("unique_extrema", comp(quarters([C4, G4, C4, G4])))) == {}
    assert nonzero(raw("unique_extrema", comp(sixteenths(C4)))) == {0: 6.0}


def test_unique_extrema_counts_onsets_and_ignores_rests_and_holds():
    held_top = notes_to_tokens([(C4, 0, 4), (G4, 4, 8), (E4, 12, 4), (C4, 16, 4)], n_steps=24)
    assert nonzero(raw("unique_extrema", comp(held_top))) == {23: 3.0}
    # Pitchless melodies score 0 (the reference code gave +3 for a single HOLD).
    assert nonzero(raw("unique_extrema", comp(sixteenths("R", "H", "R", "R")))) == {}
    assert nonzero(raw("unique_extrema", comp([HOLD] * 8))) == {}


# ---------------------------------------------------------------------------- oracles
@HYPOTHESIS
@given(compositions())
def test_rl_tuner_rules_match_naive_oracles(c):
    names, values = rewards.score_steps(list(rewards.RL_TUNER_RULES), c)
    for j, name in enumerate(names):
        np.testing.assert_allclose(values[:, j], ORACLES[name](c), rtol=0, atol=1e-9, err_msg=name)


# ---------------------------------------------------------------------------- every term, batches
RANGES = {  # (low, high) per step, default parameters
    "in_key": (-1, 0), "tonic": (0, 3), "no_repetition": (-100, 0), "low_autocorrelation": (-9, 0),
    "motif": (0, 4.5), "repeated_motif": (0, 9), "preferred_intervals": (-5, 1.5), "resolve_leaps": (-5, 5),
    "unique_extrema": (0, 6), "chord_tone_on_strong_beat": (-1, 1), "consonance": (-1, 1), "cadence": (0, 1.5),
    "stepwise_motion": (-0.5, 1), "leading_tone_resolution": (-1, 1), "range": (-1, 0), "rhythmic_variety": (0, 1),
    "rest_ratio": (-5, 0),
    "in_key_time": (-0.25, 0), "chord_tone_time": (-0.25, 0.25), "stepwise_share": (-1, 1), "leap_rate": (-1, 1),
    "repeat_rate": (-1, 1),
    "leap_resolution": (-1, 0), "bar_motif": (0, 1), "note_length_profile": (-1, 1), "phrase_endings": (0, 2),
    "period_form": (0, 1),
    **{name: (0, 0) for name in GIVEN_VOICE_TERMS},  # no given voice in these melodies
}


def test_ranges_and_oracles_cover_every_built_in_term():
    assert set(RANGES) == set(ORACLES) == set(ALL_TERMS + GIVEN_VOICE_TERMS) == set(kernels.KERNEL_NAMES)


# ---------------------------------------------------------------------------- the registry -> the fused dispatch
def test_generated_dispatch_is_up_to_date():
    """rewards/kernel_dispatch.py is what the registered built-in terms generate; when a
    term is added, renamed or removed, run ``python -m rewards.kernels --write``."""
    assert kernels.DISPATCH_PATH.read_text(encoding="utf-8") == kernels.dispatch_source(), \
        "rewards/kernel_dispatch.py is stale: run python -m rewards.kernels --write"
    assert kernels.main(["--check"]) == 0


def test_dispatch_is_derived_from_the_registry():
    from rewards.registry import _REGISTRY

    registered = {cls.kernel: cls for cls in _REGISTRY.values()
                  if issubclass(cls, rewards.KernelTerm) and cls.__module__.startswith("rewards.")}
    assert set(kernels.KERNEL_NAMES) == set(registered) and len(kernels.KERNEL_NAMES) == len(set(kernels.KERNEL_NAMES))
    for name, cls in registered.items():
        fn = kernels.kernel_function(cls)
        assert fn.__name__ == f"{name}_kernel" and fn.__module__ == cls.__module__


def test_a_new_built_in_term_is_one_class_and_one_kernel(monkeypatch):
    """A term written in a rewards module (kernel function + class) appears in the
    generated dispatch with its own branch; until the dispatch is regenerated, using it
    fails with an error that says how to regenerate."""
    import sys
    import types

    from numba import njit

    from rewards.registry import _REGISTRY

    module = types.ModuleType("rewards.zz_extra")

    @njit(cache=False)
    def zz_onsets_kernel(a, t, key, tokens, chords, voice, core, consts, beat_level, pitch_of, p, fs, ist):
        return p[0] if pitch_of[a] >= 0 else 0.0

    module.zz_onsets_kernel = zz_onsets_kernel

    class ZzOnsets(rewards.KernelTerm):
        """Reward every onset: +bonus per NOTE_ON. Range [0, bonus]. Source: a test."""

        kernel = "zz_onsets"
        PARAMS = {"bonus": 1.0}

    ZzOnsets.__module__, ZzOnsets.__qualname__ = module.__name__, "ZzOnsets"
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(_REGISTRY, "zz_onsets", ZzOnsets)
    ZzOnsets.name = "zz_onsets"
    text = kernels.dispatch_source()
    assert '"zz_onsets",  # rewards.zz_extra.ZzOnsets' in text
    assert "_zz_onsets = inlined(zz_extra.zz_onsets_kernel)" in text
    assert f"elif tid == {len(kernels.KERNEL_NAMES)}:\n            score_batch(_zz_onsets, j, batch, terms, out)" in text
    assert kernels.main(["--check"]) == 1  # the checked-in dispatch is now stale
    with pytest.raises(rewards.RewardSpecError, match="python -m rewards.kernels --write"):
        rewards.score("zz_onsets", Composition(np.array([14, 1], dtype=np.int64), key=0))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(compositions())
def test_every_term_is_finite_and_within_its_documented_range(c):
    names, values = rewards.score_steps({**RAW_SPEC, **{n: 1.0 for n in GIVEN_VOICE_TERMS}}, c)
    assert values.shape == (c.n_steps, len(ALL_TERMS + GIVEN_VOICE_TERMS))
    assert np.all(np.isfinite(values))
    for j, name in enumerate(names):
        low, high = RANGES[name]
        assert np.all(values[:, j] >= low - 1e-9) and np.all(values[:, j] <= high + 1e-9), name


def _random_batch(rng, batch_size, n_steps):
    """Tokens drawn from a small per-composition palette (so rules fire), keys, chords."""
    tokens = np.empty((batch_size, n_steps), dtype=np.int64)
    for b in range(batch_size):
        palette = np.concatenate([[REST, HOLD, HOLD], rng.choice(np.arange(2, 38), size=4, replace=False)])
        tokens[b] = rng.choice(palette, size=n_steps)
        tokens[b, n_steps // 2: n_steps // 2 + 8] = tokens[b, :8]  # a repeated motif candidate
    keys = rng.integers(0, 24, batch_size)
    chords = np.repeat(rng.integers(0, NO_CHORD + 1, (batch_size, n_steps // 4 + 1)), 4, axis=1)[:, :n_steps]
    return tokens, keys, chords


def _spec():
    return [OnsetsAbove(ceiling=70), "theory"]


@pytest.mark.parametrize("meter", METERS)
def test_batch_equals_one_by_one(meter):
    rng = np.random.default_rng(sum(map(ord, meter)))
    B, n = 5, 40
    tokens, keys, chords = _random_batch(rng, B, n)
    batch = CompositionBatch(B, n, DEFAULT_GRID, Meter.parse(meter))
    mask = np.ones(B, dtype=bool)
    batch.reset(mask, key=keys, chords=chords)
    reward = rewards.make(_spec())
    reward.reset(batch, mask)
    got = np.empty((B, n, len(reward.names)))
    totals = np.empty((B, n))
    for t in range(n):
        values, total = reward.step(batch, tokens[:, t].copy())
        got[:, t], totals[:, t] = values, total
        batch.commit(tokens[:, t].copy())
    np.testing.assert_array_equal(batch.tokens, tokens)
    np.testing.assert_allclose(totals, got.sum(axis=2), rtol=0, atol=1e-9)
    for b in range(B):
        c = Composition(tokens[b], key=int(keys[b]), meter=meter, chords=chords[b])
        names, expected = rewards.score_steps(_spec(), c)
        assert names == reward.names
        np.testing.assert_array_equal(got[b], expected, err_msg=f"composition {b}")
    assert np.any(got != 0.0, axis=(0, 1)).sum() >= 12  # most terms fired somewhere


def test_resetting_a_subset_resets_only_those():
    rng = np.random.default_rng(11)
    B, n, first = 5, 32, 12
    old_tokens, old_keys, old_chords = _random_batch(rng, B, n)
    new_tokens, new_keys, new_chords = _random_batch(rng, B, n)
    mask = np.array([True, False, True, False, False])
    batch = CompositionBatch(B, n, DEFAULT_GRID, Meter())
    batch.reset(np.ones(B, dtype=bool), key=old_keys, chords=old_chords)
    reward = rewards.make(_spec())
    reward.reset(batch, np.ones(B, dtype=bool))
    got = np.zeros((B, n, len(reward.names)))
    for t in range(first):
        got[:, t] = reward.step(batch, old_tokens[:, t].copy())[0]
        batch.commit(old_tokens[:, t].copy())
    batch.reset(mask, key=new_keys[mask], chords=new_chords[mask])
    reward.reset(batch, mask)
    np.testing.assert_array_equal(batch.t, np.where(mask, 0, first))
    new_got = np.zeros_like(got)
    for s in range(n - first):
        actions = np.where(mask, new_tokens[:, s], old_tokens[:, first + s])
        values = reward.step(batch, actions)[0]
        got[~mask, first + s] = values[~mask]
        new_got[mask, s] = values[mask]
        batch.commit(actions)
    for b in range(B):
        if mask[b]:
            c = Composition(new_tokens[b], key=int(new_keys[b]), chords=new_chords[b])
            expected = rewards.score_steps(_spec(), c)[1][: n - first]
            np.testing.assert_array_equal(new_got[b, : n - first], expected, err_msg=f"reset composition {b}")
        else:
            c = Composition(old_tokens[b], key=int(old_keys[b]), chords=old_chords[b])
            np.testing.assert_array_equal(got[b], rewards.score_steps(_spec(), c)[1], err_msg=f"kept composition {b}")


def test_inactive_compositions_are_left_alone():
    rng = np.random.default_rng(5)
    B, n = 3, 24
    tokens, keys, chords = _random_batch(rng, B, n)
    batch = CompositionBatch(B, n, DEFAULT_GRID, Meter())
    mask = np.ones(B, dtype=bool)
    batch.reset(mask, key=keys, chords=chords)
    reward = rewards.make(_spec())
    reward.reset(batch, mask)
    got = [[] for _ in range(B)]
    pos = np.zeros(B, dtype=int)
    for step in range(n + 4):
        # Composition 1 sits out steps 3..6 (its actions then are junk and must be ignored).
        active = np.array([True, not 3 <= step < 7, True]) & (pos < n)
        actions = np.where(active, tokens[np.arange(B), np.minimum(pos, n - 1)], 5)
        values, total = reward.step(batch, actions, active)
        assert np.all(values[~active] == 0.0) and np.all(total[~active] == 0.0)
        for b in np.flatnonzero(active):
            got[b].append(values[b])
        batch.commit(actions, active)
        pos += active
    for b in range(B):
        c = Composition(tokens[b], key=int(keys[b]), chords=chords[b])
        np.testing.assert_array_equal(np.array(got[b]), rewards.score_steps(_spec(), c)[1], err_msg=f"composition {b}")
