"""The style yardstick (musicenv.style) and the benchmark's farming flag: exact features
of hand-made melodies, distances and the classifier two-sample test on sets whose
answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reward_helpers import tok

from experiments.aggregate import farming_flags
from musicenv.composition import Composition
from musicenv.encoding import HOLD, REST, notes_to_tokens
from musicenv.metrics import evaluate_set
from musicenv.style import (
    StyleError,
    classifier_two_sample_test,
    default_reference,
    piece_style,
    reference_melodies,
    style_distance,
    style_profile,
)


def melody(notes, n_steps=64, key="C major"):
    return Composition.from_progression(notes_to_tokens(notes, n_steps), "C G Am F", key=key)


def quarters(pitches, key="C major"):
    return melody([(p, 4 * i, 4) for i, p in enumerate(pitches)], 4 * len(pitches), key=key)


def test_piece_style_of_a_hand_made_melody():
    # C4 q, D4 q, D4 q, A4 q (a fifth up), G4 8th, B3 16th, B3 16th (rest) | C4 half + rest half
    c = melody([(60, 0, 4), (62, 4, 4), (62, 8, 4), (69, 12, 4), (67, 16, 2), (59, 18, 1), (59, 19, 1),
                (60, 32, 8)], n_steps=48)
    s = piece_style(c)
    assert s["notes"] == 8 and s["notes_per_bar"] == pytest.approx(8 / 3)
    assert s["length_counts"].tolist() == [2, 1, 0, 4, 0, 1, 0, 0]
    assert s["sixteenth_share"] == pytest.approx(2 / 8)
    # intervals: +2, 0, +7, -2, -8, 0, +1 -> unison x2, step x3, fifth, sixth
    assert s["interval_counts"].tolist() == [2, 3, 0, 0, 0, 1, 1, 0, 0, 0]
    assert s["leap_share"] == pytest.approx(2 / 7) and s["repeated_share"] == pytest.approx(2 / 7)
    assert s["final_quarters"] == 2.0 and s["final_long"] == 1.0 and s["final_tonic"] == 1.0
    assert s["range"] == 10.0 and s["in_key_share"] == 1.0
    # strong beats (1 and 3 of each bar) under C | G | Am: C4 on C, D4 on C (no), G4 on G, rest, C4 on Am
    assert s["strong_chord_tone_share"] == pytest.approx(3 / 4)


def test_piece_style_of_an_empty_melody_is_nan_not_an_error():
    s = piece_style(Composition(np.array([REST] + [HOLD] * 15)))
    assert s["notes"] == 0 and math.isnan(s["sixteenth_share"]) and math.isnan(s["final_tonic"])


def test_style_distance_is_zero_to_itself_and_grows_with_difference():
    a = [quarters([60, 62, 64, 65, 67, 65, 64, 62, 60, 62, 64, 62, 60, 59, 62, 60])] * 3
    assert style_distance(a, a)["distance"] == 0.0
    streams = [melody([(60 + (t % 5), t, 1) for t in range(64)])] * 3
    d = style_distance(streams, a)
    assert d["note_lengths"] == 1.0 and d["notes_per_bar"] == pytest.approx(1 - 4 / 16)
    assert 0.4 < d["distance"] <= 1.0
    with pytest.raises(StyleError, match="empty"):
        style_profile([])


def test_classifier_two_sample_test_tells_streams_from_real_melodies_but_not_real_from_real():
    real = reference_melodies(4, "4/4", ("bach",))
    rng = np.random.default_rng(0)
    noise = [Composition(rng.integers(2, 38, 64), key=int(rng.integers(24))) for _ in range(60)]
    assert classifier_two_sample_test(noise, real)["accuracy"] > 0.95
    halves = real[::2], real[1::2]
    assert classifier_two_sample_test(*halves)["accuracy"] < 0.65
    with pytest.raises(StyleError, match="at least folds=5"):
        classifier_two_sample_test(noise[:3], real)


def test_reference_melodies_are_whole_pieces_endings_in_their_own_keys():
    real = reference_melodies(4, "4/4")
    assert len(real) > 300 and all(c.n_steps == 64 and str(c.meter) == "4/4" for c in real)
    prof = style_profile([c for c in real if "bach" in c.title])
    assert prof["final_long"] > 0.95 and prof["final_tonic"] > 0.6 and prof["strong_chord_tone_share"] > 0.9
    assert default_reference([Composition(np.array([tok(60)] * 48), meter="3/4")]) is not None
    assert default_reference([Composition(np.array([tok(60)] * 50))]) is None  # not whole bars


def test_evaluate_set_reports_the_style_block():
    real = reference_melodies(4, "4/4", ("bach",))[:8]
    out = evaluate_set(real)
    assert out["style/distance"] < 0.3 and 0 <= out["style/c2st_accuracy"] <= 1
    assert out["style/final_long"] == 1.0
    assert "style/c2st_accuracy" not in evaluate_set(real[:3])  # too few pieces for 5 folds


def _cell(reward, objective, own_under_base, distance):
    metrics = {"objective": {"iqm": objective}, "style/distance": {"iqm": distance},
               f"reward/{reward}/total": {"iqm": own_under_base}}
    return {"info": {"env_id": "E", "algo": "ppo", "budget": 1, "reward": reward}, "metrics": metrics}


def test_farming_flag_needs_a_better_objective_and_a_style_past_halfway_to_random():
    base = _cell("theory", 40.0, 40.0, 0.5)  # the mark is random's half (0.3), whatever the baseline's distance
    base["metrics"]["reward/chords/total"] = {"iqm": 10.0}
    base["metrics"]["reward/polite/total"] = {"iqm": 10.0}
    base["metrics"]["reward/lost/total"] = {"iqm": 10.0}
    cells = {"theory": base,
             "chords": _cell("chords", 30.0, 0.0, 0.35),  # beats theory's 10 on its own reward, distance > 0.3
             "polite": _cell("polite", 30.0, 0.0, 0.25),  # beats it, but stays nearer to real melodies
             "lost": _cell("lost", 5.0, 0.0, 0.6)}        # far from real melodies, but did not learn its reward
    assert farming_flags(cells, random_distance=0.6) == {"theory": None, "chords": True, "polite": False,
                                                         "lost": False}
