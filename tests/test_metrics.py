"""musicenv.metrics: MusPy's own fixture, exact RL Tuner / harmony statistics on
hand-made melodies, agreement of statistics with the reward terms they count,
distances and diversity on small cases.

Token convention: REST=0, HOLD=1, NOTE_ON token = MIDI - 46 (C4 = 60 -> 14).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reward_helpers import autocorrelation, comp, compositions, tok

import rewards
from musicenv import metrics as M
from musicenv.composition import Composition
from musicenv.encoding import HOLD, REST, TokenGrid, notes_to_tokens

C3, B3, C4, D4, E4, F4, G4, A4, B4, C5, D5 = 48, 59, 60, 62, 64, 65, 67, 69, 71, 72, 74
HYPOTHESIS = settings(max_examples=40, deadline=None, derandomize=True)

# MusPy's test fixture: 24 ticks per beat, nine notes of 6 ticks each from tick 0.
MUSPY_PITCHES = (76, 75, 76, 75, 76, 71, 74, 72, 69)
MUSPY_NOTES = [(p, 6 * i, 6) for i, p in enumerate(MUSPY_PITCHES)]


def line(*events, key="C major", meter="4/4", progression=None, n_steps=None) -> Composition:
    """A melody from ``(midi or None, duration in 16ths)`` events played one after another."""
    notes, t = [], 0
    for pitch, dur in events:
        notes.append((pitch, t, dur))
        t += dur
    tokens = notes_to_tokens(notes, n_steps)
    return comp(tokens, key=key, meter=meter, progression=progression)


def quarters(*pitches, **kw) -> Composition:
    return line(*[(p, 4) for p in pitches], **kw)


C_MAJOR_SCALE = quarters(C4, D4, E4, F4, G4, A4, B4, C5)


# =========================================================================== MusPy
def test_muspy_fixture():
    assert M.n_pitches_used(MUSPY_NOTES) == 6
    assert M.n_pitch_classes_used(MUSPY_NOTES) == 6
    assert M.pitch_range(MUSPY_NOTES) == 7
    assert M.scale_consistency(MUSPY_NOTES) == 7 / 9  # E minor: all but the two D#s
    assert M.pitch_entropy(MUSPY_NOTES) == 2.4193819456463714
    assert M.pitch_class_entropy(MUSPY_NOTES) == 2.4193819456463714
    for compat in (False, True):
        assert M.groove_consistency(MUSPY_NOTES, 36, muspy_compat=compat) == pytest.approx(11 / 12, abs=1e-15)
        assert M.empty_beat_rate(MUSPY_NOTES, 24, muspy_compat=compat) == 0.0


def test_muspy_fixture_through_a_composition():
    # The same melody on a 24-steps-per-quarter grid: one tick per step.
    grid = TokenGrid(steps_per_quarter=24)
    tokens = notes_to_tokens(MUSPY_NOTES, 96, grid)
    stats = M.muspy_statistics(Composition(tokens, key="E minor", grid=grid))
    assert stats["n_pitches_used"] == 6 and stats["n_pitch_classes_used"] == 6
    assert stats["pitch_range"] == 7 and stats["scale_consistency"] == 7 / 9
    assert stats["pitch_entropy"] == stats["pitch_class_entropy"] == 2.4193819456463714
    assert stats["pitch_in_scale_rate"] == 7 / 9
    assert stats["empty_beat_rate"] == 0.25  # the melody ends at tick 54 of a 96-tick bar: beat 4 silent
    assert math.isnan(stats["groove_consistency"])  # a single measure


def test_pitch_in_scale_rate_and_scales():
    assert M.pitch_in_scale_rate(MUSPY_NOTES, 4, "minor") == 7 / 9
    assert M.pitch_in_scale_rate(MUSPY_NOTES, 7, "major") == 7 / 9  # G major = E minor's notes
    assert M.pitch_in_scale_rate([(61, 0, 1)], 0, "major") == 0.0
    with pytest.raises(M.MetricsError, match="mode"):
        M.pitch_in_scale_rate(MUSPY_NOTES, 0, "dorian")


def test_muspy_compat_differs_where_muspy_miscounts():
    # quarter note, quarter rest, quarter note: one of three beats is empty
    notes = [(C4, 0, 24), (D4, 48, 24)]
    assert M.empty_beat_rate(notes, 24) == pytest.approx(1 / 3)
    assert M.empty_beat_rate(notes, 24, muspy_compat=True) == 0.0  # MusPy marks beat 1 (the rest) full
    assert M.empty_beat_rate(notes, 24, length=144) == pytest.approx(4 / 6)  # trailing silence counted
    # two identical bars of four quarters: perfectly consistent groove
    two_bars = [(C4, 24 * i, 24) for i in range(8)]
    assert M.groove_consistency(two_bars, 96) == 1.0
    assert M.groove_consistency(two_bars, 96, muspy_compat=True) == 1 - 4 / (96 * 2)  # an empty 3rd bar


def test_muspy_statistics_without_notes():
    assert M.n_pitches_used([]) == 0 and M.pitch_range([]) == 0
    for fn in (M.pitch_entropy, M.pitch_class_entropy, M.scale_consistency):
        assert math.isnan(fn([]))
    assert math.isnan(M.empty_beat_rate([], 24))
    stats = M.muspy_statistics(np.array([REST] + [HOLD] * 31))
    assert stats["empty_beat_rate"] == 1.0 and stats["groove_consistency"] == 1.0
    assert math.isnan(stats["pitch_entropy"])


def test_bad_notes_raise():
    for bad in ([(128, 0, 1)], [(60, -1, 1)], [(60, 0, 0)], [(60, 0)]):
        with pytest.raises(M.MetricsError):
            M.pitch_range(bad)
    with pytest.raises(M.MetricsError, match="shorter"):
        M.empty_beat_rate(MUSPY_NOTES, 24, length=10)
    with pytest.raises(M.MetricsError, match="resolution"):
        M.groove_consistency(MUSPY_NOTES, 0)


def test_rests_in_note_lists_are_ignored():
    assert M.n_pitches_used([(None, 0, 4), (C4, 4, 4)]) == 1


# =========================================================================== RL Tuner
def test_c_major_scale_in_c_major():
    stats = M.rl_tuner_statistics([C_MAJOR_SCALE])
    assert stats["notes_not_in_key"] == 0.0
    assert stats["starts_with_tonic"] == 1.0
    assert stats["excessively_repeated"] == 0.0
    assert stats["unique_max"] == 1.0 and stats["unique_min"] == 1.0
    assert stats["n_compositions"] == 1 and stats["n_steps"] == 32


def test_not_in_key_and_tonic_in_other_keys():
    # the C major scale read in D major: C4, F4 and C5 are out of key, 3 onsets of 32 steps
    stats = M.rl_tuner_statistics([comp(C_MAJOR_SCALE.tokens, key="D major")])
    assert stats["notes_not_in_key"] == 3 / 32
    assert stats["starts_with_tonic"] == 0.0
    # any octave of the tonic counts (the paper's code knew only middle C)
    low_c = quarters(C3, D4, E4, C4)
    on_d = quarters(D4, E4, F4, G4)
    assert M.rl_tuner_statistics([low_c, on_d, C_MAJOR_SCALE])["starts_with_tonic"] == 2 / 3
    # a rest first does not start with the tonic
    assert M.rl_tuner_statistics([line((None, 4), (C4, 4))])["starts_with_tonic"] == 0.0


def test_excessively_repeated_counts_the_penalised_steps():
    six = comp([tok(C4)] * 6 + [tok(D4), tok(E4)])  # the 6th onset in a row is excessive
    assert M.rl_tuner_statistics([six])["excessively_repeated"] == 1 / 8
    seven = comp([tok(C4)] * 7 + [tok(D4)])  # the 6th and the 7th
    assert M.rl_tuner_statistics([seven])["excessively_repeated"] == 2 / 8
    # a whole note is not a repeated note (the paper's code counted its 6th..16th HOLD)
    whole = line((C4, 16))
    assert M.rl_tuner_statistics([whole])["excessively_repeated"] == 0.0
    # the denominator is every step of every composition
    assert M.rl_tuner_statistics([six, whole])["excessively_repeated"] == 1 / 24


def test_leaps_resolved_ratio():
    resolved = quarters(C4, G4, F4)  # leap up, step back: resolved
    doubled_then_resolved = quarters(C4, G4, D5, C5)  # leap, leap onward (doubled), step back
    leap_back = quarters(C4, G4, C4)  # closed by a leap back: in neither count
    stats = M.rl_tuner_statistics([resolved, doubled_then_resolved, leap_back])
    assert (stats["n_leaps_resolved"], stats["n_leaps_doubled"]) == (2, 1)
    assert stats["leaps_resolved"] == 2 / 3
    assert math.isnan(M.rl_tuner_statistics([leap_back])["leaps_resolved"])


def test_motif_and_repeated_motif():
    cell = [tok(C4), tok(D4), tok(E4), tok(C4), tok(D4), tok(E4), tok(C4), tok(D4)]
    once = M.rl_tuner_statistics([comp(cell)])
    assert once["notes_in_motif"] == 1 / 8 and once["notes_in_repeated_motif"] == 0.0
    twice = M.rl_tuner_statistics([comp(cell + cell)])
    assert twice["notes_in_motif"] == 9 / 16  # every window from step 7 holds C, D, E
    assert twice["notes_in_repeated_motif"] == 1 / 16  # step 15 repeats steps 0..7


def test_unique_extrema():
    stats = M.rl_tuner_statistics([quarters(C4, E4, G4, E4), quarters(C4, G4, C4, G4), line((None, 8))])
    assert stats["unique_max"] == 1 / 3 and stats["unique_min"] == 1 / 3
    held_top = line((C4, 4), (G4, 12))  # a held climax is one onset: unique
    assert M.rl_tuner_statistics([held_top])["unique_max"] == 1.0


def test_token_autocorrelation_exact_cases():
    assert M.token_autocorrelation([0, 1], 1) == -0.5  # two different tokens
    assert math.isnan(M.token_autocorrelation([14] * 8, 1))  # constant: 0/0
    assert math.isnan(M.token_autocorrelation([14, 15], 2))  # lag >= length
    assert M.token_autocorrelation([2, 9, 2, 9, 2, 9], 2) == pytest.approx(4 / 6)
    with pytest.raises(M.MetricsError):
        M.token_autocorrelation([1, 2, 3], 0)


@HYPOTHESIS
@given(st.lists(st.integers(0, 37), min_size=1, max_size=40), st.integers(1, 3))
def test_token_autocorrelation_matches_exact_fraction(values, lag):
    exact = autocorrelation(values, lag) if len(values) > lag else None
    got = M.token_autocorrelation(values, lag)
    if exact is None:
        assert math.isnan(got)
    else:
        assert got == float(Fraction(exact))


def test_autocorrelation_statistic_is_a_mean_over_compositions_skipping_constant_ones():
    alternating = comp([tok(C4), tok(G4)] * 4)
    constant = comp([tok(C4)] * 8)
    rest_hold = comp([REST, HOLD] * 4)  # REST=0 and HOLD=1 are values too
    stats = M.rl_tuner_statistics([alternating, constant, rest_hold])
    lag1 = (M.token_autocorrelation(alternating.tokens, 1) + M.token_autocorrelation(rest_hold.tokens, 1)) / 2
    assert stats["autocorrelation_lag1"] == lag1 == -7 / 8
    assert math.isnan(M.rl_tuner_statistics([constant])["autocorrelation_lag1"])
    # on onset pitches (the reward term's signal) a long note no longer looks periodic
    held = line((C4, 4), (G4, 4), (C4, 4), (G4, 4))
    assert M.rl_tuner_statistics([held], autocorrelation_signal="pitches")["autocorrelation_lag1"] == -0.75


@HYPOTHESIS
@given(st.lists(compositions(max_size=48), min_size=1, max_size=4))
def test_statistics_count_exactly_where_the_reward_terms_fire(comps):
    """The statistic and the reward cannot disagree: each count equals the steps where
    rewards.score_steps reports the term firing, composition by composition."""
    stats = M.rl_tuner_statistics(comps)
    n_steps = sum(c.n_steps for c in comps)
    counts = dict.fromkeys(("in_key", "no_repetition", "motif", "repeated_motif", "resolved", "doubled"), 0)
    tonic_starts = extrema = 0
    spec = ["in_key", "no_repetition", "motif", "repeated_motif", "resolve_leaps", "tonic", "unique_extrema"]
    for c in comps:
        names, values = rewards.score_steps(spec, c)
        col = dict(zip(names, values.T))
        counts["in_key"] += int((col["in_key"] < 0).sum())
        counts["no_repetition"] += int((col["no_repetition"] < 0).sum())
        counts["motif"] += int((col["motif"] > 0).sum())
        counts["repeated_motif"] += int((col["repeated_motif"] > 0).sum())
        counts["resolved"] += int((col["resolve_leaps"] > 0).sum())
        counts["doubled"] += int((col["resolve_leaps"] < 0).sum())
        tonic_starts += col["tonic"][0] > 0
        extrema += col["unique_extrema"][-1]
    assert stats["notes_not_in_key"] * n_steps == pytest.approx(counts["in_key"])
    assert stats["excessively_repeated"] * n_steps == pytest.approx(counts["no_repetition"])
    assert stats["notes_in_motif"] * n_steps == pytest.approx(counts["motif"])
    assert stats["notes_in_repeated_motif"] * n_steps == pytest.approx(counts["repeated_motif"])
    assert (stats["n_leaps_resolved"], stats["n_leaps_doubled"]) == (counts["resolved"], counts["doubled"])
    assert stats["starts_with_tonic"] * len(comps) == pytest.approx(tonic_starts)
    # unique_extrema pays 3 for a unique max and 3 for a unique min
    assert 3 * (stats["unique_max"] + stats["unique_min"]) * len(comps) == pytest.approx(extrema)


def test_batched_replay_equals_score_steps():
    rng = np.random.default_rng(7)
    comps = [comp(rng.integers(0, 38, n), key=k, meter=m, progression="I-vi-IV-V")
             for n, k, m in [(32, "C major", "4/4"), (32, "a minor", "4/4"), (24, "F major", "3/4"),
                             (32, "E major", "4/4"), (12, "C major", "6/8")]]
    spec = {name: 1.0 for name in rewards.RL_TUNER_RULES + rewards.CHORD_TERMS}
    seen = set()
    for idx, names, values in M._iter_scored(spec, comps, chunk=2):
        for b, i in enumerate(idx):
            ref_names, ref = rewards.score_steps(spec, comps[i])
            assert names == ref_names
            np.testing.assert_array_equal(values[b], ref)
            seen.add(i)
    assert seen == set(range(len(comps)))


def test_term_kwargs_reach_the_terms():
    wide = quarters(C4, F4, E4)  # a fourth up and a step back: a leap only if leap <= 5
    assert math.isnan(M.rl_tuner_statistics([wide])["leaps_resolved"])
    assert M.rl_tuner_statistics([wide], term_kwargs={"resolve_leaps": {"leap": 5}})["leaps_resolved"] == 1.0
    with pytest.raises(M.MetricsError, match="unknown term"):
        M.rl_tuner_statistics([wide], term_kwargs={"cadence": {}})


def test_bare_tokens_and_bad_sets():
    assert M.rl_tuner_statistics([C_MAJOR_SCALE.tokens]) == M.rl_tuner_statistics([C_MAJOR_SCALE])
    with pytest.raises(M.MetricsError, match="empty"):
        M.rl_tuner_statistics([])
    with pytest.raises(M.MetricsError, match="single"):
        M.rl_tuner_statistics(C_MAJOR_SCALE)
    with pytest.raises(M.MetricsError, match="one token sequence"):
        M.rl_tuner_statistics([14, 16, 18])


def test_rl_tuner_table_rows():
    ours = M.rl_tuner_statistics([C_MAJOR_SCALE])
    rows = M.rl_tuner_table({"Q": ours, "PPO": ours})
    assert [r["key"] for r in rows] == list(M.RL_TUNER_STATISTICS)
    first = rows[0]
    assert first["statistic"] == "Notes excessively repeated" and first["unit"] == "%"
    paper = tuple(first[f"{m} (paper)"] for m in M.PAPER_MODELS)
    assert paper == (63.3, 0.0, 0.02, 0.03)
    assert first["Q"] == 0.0 and first["PPO"] == 0.0 and "Note RNN" not in first
    tonic = next(r for r in rows if r["key"] == "starts_with_tonic")
    assert tonic["Q"] == 100.0  # percent
    lag3 = next(r for r in rows if r["key"] == "autocorrelation_lag3")
    assert lag3["unit"] == "" and lag3["G (paper)"] == 0.17
    table = M.format_table(rows)
    assert table.splitlines()[0].startswith("| statistic | unit | Note RNN (paper) | Q (paper) | Q |")
    assert len(table.splitlines()) == 2 + len(M.RL_TUNER_STATISTICS)


# =========================================================================== harmony
def test_harmony_of_a_scale_fragment_over_c():
    # C D E F quarters over a C major bar: C, E chord tones; D resolves by step to E; F
    # is the last note and unresolved; the phrase ends on F (not a chord tone of I).
    h = M.harmony_statistics(quarters(C4, D4, E4, F4, progression="I"))
    assert h["chord_tone_rate"] == 2 / 4
    assert h["strong_beat_chord_tone_rate"] == 1.0  # C on beat 1, E on beat 3
    assert h["nonchord_tone_resolution_rate"] == 1 / 2
    assert h["cadence_rate"] == 0.0
    assert h["key_consistency"] == 1.0


def test_strong_beats_count_notes_held_into_the_beat():
    held = line((C4, 4), (D4, 12), progression="I")  # D sounds on beat 3 over C
    h = M.harmony_statistics(held)
    assert h["strong_beat_chord_tone_rate"] == 1 / 2
    strong = rewards.score_steps("chord_tone_on_strong_beat", held)[1][:, 0]
    assert (strong > 0).sum() == 1 and (strong < 0).sum() == 1


def test_cadence_rate_phrase_ends():
    # bar 1 over I: C D E, rest -> E ends a phrase on a chord tone of I (cadential);
    # bar 2 over V: D F, then A half note -> A (long, not in G) is a non-cadential end.
    m = line((C4, 4), (D4, 4), (E4, 4), (None, 4), (D4, 4), (F4, 4), (A4, 8), progression="I-V")
    assert M.harmony_statistics(m)["cadence_rate"] == 1 / 2
    # ... ending instead on G over V (a half close) makes both ends cadential
    m2 = line((C4, 4), (D4, 4), (E4, 4), (None, 4), (D4, 4), (F4, 4), (G4, 8), progression="I-V")
    assert M.harmony_statistics(m2)["cadence_rate"] == 1.0
    # a long note over vi is a phrase end but no cadence
    m3 = line((C4, 4), (E4, 4), (A4, 8), progression="vi")
    assert M.harmony_statistics(m3)["cadence_rate"] == 0.0


def test_nonchord_tone_resolution_needs_a_step_to_a_chord_tone():
    # over C the non-chord tones are D, F, A, B: D -> C resolves by step to a chord tone,
    # F -> A leaps, A -> B steps to another non-chord tone, B -> C resolves
    m = line((D4, 2), (C4, 2), (F4, 2), (A4, 2), (B3, 2), (C4, 6), progression="I")
    # (A -> B is a step, but B is no chord tone): D and B resolve, F and A do not
    assert M.harmony_statistics(m)["nonchord_tone_resolution_rate"] == 2 / 4


def test_key_consistency_uses_the_key_mask():
    # in A minor the raised 7th G# is in key for our rules, not in MusPy's natural minor
    m = quarters(A4, B4, C5, 68 + 12, key="A minor")  # A B C G#5
    assert M.harmony_statistics(m)["key_consistency"] == 1.0
    assert M.muspy_statistics(m)["pitch_in_scale_rate"] == 3 / 4
    assert M.rl_tuner_statistics([m])["notes_not_in_key"] == 0.0


def test_harmony_without_chords_is_undefined():
    h = M.harmony_statistics(C_MAJOR_SCALE)  # no chord track: N.C. everywhere
    for k in ("chord_tone_rate", "strong_beat_chord_tone_rate", "nonchord_tone_resolution_rate",
              "cadence_rate"):
        assert math.isnan(h[k])
    assert h["key_consistency"] == 1.0


# =========================================================================== distances
def test_feature_histograms():
    m = line((C3, 20), (C5, 4), (D5, 2), (C5, 6))
    pc = M.feature_histogram(m, "pitch_class")
    assert pc[0] == 3 and pc[2] == 1 and pc.sum() == 4
    iv = dict(zip(M.feature_bins("interval").tolist(), M.feature_histogram(m, "interval")))
    assert iv[13] == 1 and iv[2] == 1 and iv[-2] == 1  # +24 clipped into "beyond an octave"
    ln = dict(zip(M.feature_bins("note_length").tolist(), M.feature_histogram(m, "note_length")))
    assert ln[16] == 1 and ln[4] == 1 and ln[2] == 1 and ln[6] == 1  # 20 steps pooled into 16+
    assert M.feature_histogram(m, "pitch")[C5] == 2
    with pytest.raises(M.MetricsError, match="unknown feature"):
        M.feature_histogram(m, "timbre")


def test_overlap_and_kl_small_cases():
    assert M.overlap_area([1, 0], [0, 1]) == 0.0
    assert M.overlap_area([2, 2], [1, 0]) == 0.5
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert M.kl_divergence([1, 1], [1, 3], epsilon=0) == pytest.approx(expected)
    assert M.kl_divergence([3, 1, 0], [6, 2, 0]) == 0.0
    assert math.isinf(M.kl_divergence([1, 1], [1, 0], epsilon=0))
    assert 0 < M.kl_divergence([1, 1], [1, 0]) < 20  # smoothed: large but finite
    with pytest.raises(M.MetricsError, match="different grids"):
        M.overlap_area([1, 2, 3], [1, 2])
    with pytest.raises(M.MetricsError, match="empty"):
        M.kl_divergence([0, 0], [1, 1])


def test_identical_sets_overlap_fully():
    rng = np.random.default_rng(3)
    gen = [comp(rng.integers(0, 38, 32)) for _ in range(6)]
    same = M.compare_sets(gen, list(gen))
    for feature, v in same.items():
        assert v["overlap"] == pytest.approx(1.0), feature
        assert v["kl"] == 0.0, feature
        assert v["intra_generated"] == v["intra_reference"]
    other = M.compare_sets(gen, [C_MAJOR_SCALE, quarters(C4, E4, G4, C5)])
    for feature, v in other.items():
        assert v["overlap"] < 1.0 and v["kl"] > 0.0, feature
        assert v["inter"] > 0.0


def test_compare_sets_rejects_mismatched_grids_and_empty_sets():
    fine = Composition(np.array([14] + [HOLD] * 7), grid=TokenGrid(steps_per_quarter=8))
    with pytest.raises(M.MetricsError, match="different grids"):
        M.compare_sets([C_MAJOR_SCALE], [fine])
    with pytest.raises(M.MetricsError, match="empty"):
        M.compare_sets([], [C_MAJOR_SCALE])


def test_intra_and_inter_set_distances():
    np.testing.assert_array_equal(M.intra_set_distances(np.array([[0, 0], [3, 4], [0, 0]])), [5, 0, 5])
    assert M.intra_set_distances(np.zeros((1, 3))).size == 0
    inter = M.inter_set_distances(np.array([[0, 0]]), np.array([[3, 4], [0, 1]]))
    np.testing.assert_array_equal(inter, [5, 1])
    with pytest.raises(M.MetricsError):
        M.inter_set_distances(np.zeros((2, 3)), np.zeros((2, 4)))


def test_mean_nll_is_token_weighted():
    short, long_ = comp([tok(C4)] * 2), comp([tok(C4)] * 6)
    assert M.mean_nll([short, long_], lambda tokens: float(len(tokens))) == (2 * 2 + 6 * 6) / 8
    with pytest.raises(M.MetricsError, match="NaN"):
        M.mean_nll([short], lambda tokens: math.nan)
    with pytest.raises(M.MetricsError, match="number"):
        M.mean_nll([short], lambda tokens: "low")


# =========================================================================== diversity
def test_distinct_n_of_a_constant_line():
    constant = comp([tok(C4)] * 32)
    d = M.distinct_ngrams([constant])
    assert d == {"distinct_1": 1 / 32, "distinct_2": 1 / 31, "distinct_3": 1 / 30, "distinct_4": 1 / 29}
    assert M.distinct_n([[1, 2, 3, 4]], 2) == 1.0
    assert M.distinct_n([[1, 2], [1, 2]], 2) == 1 / 2
    assert math.isnan(M.distinct_n([[1, 2]], 3))


def _naive_edit_distance(a, b) -> int:
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_edit_distance_small_cases():
    assert M.edit_distance("kitten", "sitting") == 3
    assert M.edit_distance("flaw", "lawn") == 2
    assert M.edit_distance("", "abc") == 3 and M.edit_distance("abc", "") == 3
    assert M.edit_distance([(60, 4), (None, 2)], [(60, 4), (None, 2)]) == 0
    assert M.edit_distance([(60, 4), (62, 4)], [(60, 4), (62, 2)]) == 1  # a changed rhythm


@HYPOTHESIS
@given(st.lists(st.integers(0, 3), max_size=12), st.lists(st.integers(0, 3), max_size=12))
def test_edit_distance_matches_the_textbook_recurrence(a, b):
    assert M.edit_distance(a, b) == _naive_edit_distance(a, b)


def test_mean_pairwise_edit_distance():
    a, b = quarters(C4, D4, E4, F4), quarters(C4, D4, E4, G4)
    assert M.note_sequence(a) == [(C4, 4), (D4, 4), (E4, 4), (F4, 4)]
    assert M.mean_pairwise_edit_distance([a, a, b]) == pytest.approx((0 + 1 + 1) / 3)
    assert M.mean_pairwise_edit_distance([a, b], normalize=True) == 1 / 4
    assert math.isnan(M.mean_pairwise_edit_distance([a]))


# =========================================================================== all together
def test_evaluate_set_gathers_every_family():
    gen = [quarters(C4, D4, E4, C4, progression="I"), quarters(E4, G4, F4, D4, progression="I")]
    out = M.evaluate_set(gen, reference=[C_MAJOR_SCALE], nll_fn=lambda tokens: 1.5)
    assert out["rl_tuner/notes_not_in_key"] == 0.0
    assert out["muspy/n_pitches_used"] == 3.5
    assert out["harmony/chord_tone_rate"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert out["nll"] == 1.5
    assert out["diversity/edit_distance"] == 1.0
    assert "reference/pitch_class/overlap" in out and "reference/note_length/kl" in out
    assert all(isinstance(v, float) for v in out.values())
