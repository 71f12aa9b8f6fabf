"""Reward specs: every form rewards.make accepts, available(), specific errors for bad
input, presets merging, user-written terms next to built-in ones, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from reward_helpers import ALL_TERMS, OnsetsAbove, comp, tok

import rewards
from musicenv.core import CompositionBatch
from musicenv.encoding import DEFAULT_GRID, HOLD, notes_to_tokens
from musicenv.theory import Meter
from rewards import CompositeReward, RewardSpecError, RewardTerm

C4, D4, E4, F4, G4, A4, B4, C5 = 60, 62, 64, 65, 67, 69, 71, 72
USER_TERM_PATH = f"{OnsetsAbove.__module__}:OnsetsAbove"


def melody():
    """Two bars of C major over I-IV-V-I with a C# and two notes above the staff."""
    notes = [(C4, 0, 4), (E4, 4, 4), (G4, 8, 4), (C5, 12, 4), (B4, 16, 2), (A4, 18, 2), (61, 20, 4), (D4, 24, 4),
             (C4, 28, 4)]
    return comp(notes_to_tokens(notes, 32), progression="I-IV-V-I")


def terms_of(reward: CompositeReward) -> dict[str, tuple[RewardTerm, float]]:
    return {name: (term, w) for name, term, w in reward.terms}


# ---------------------------------------------------------------------------- spec forms
def test_make_a_term_by_name():
    reward = rewards.make("in_key")
    assert reward.names == ("in_key",)
    assert isinstance(reward.terms[0][1], rewards.get("in_key"))
    np.testing.assert_array_equal(reward.weights, [1.0])


def test_make_a_preset_by_name():
    reward = rewards.make("theory")
    preset = rewards.PRESETS["theory"]
    assert set(reward.names) == set(preset) and set(preset) <= set(ALL_TERMS)
    assert dict(zip(reward.names, reward.weights)) == {n: float(w) for n, w in preset.items()}
    old = rewards.make("theory_v0")  # the per-note preset before issue 18: every RL Tuner rule and chord term
    assert set(old.names) == set(rewards.RL_TUNER_RULES + rewards.CHORD_TERMS)
    assert rewards.make("rl_tuner_theory").names == rewards.RL_TUNER_RULES


def test_make_a_term_object_and_a_composite():
    term = rewards.get("range")(low=60, high=72)
    reward = rewards.make(term)
    assert reward.names == ("range",) and reward.terms[0][1] is term
    assert rewards.make(reward) is reward


def test_make_a_list():
    reward = rewards.make(["in_key", "motif", rewards.get("range")(low=50)])
    assert reward.names == ("in_key", "motif", "range")
    assert terms_of(reward)["range"][0].params["low"] == 50
    np.testing.assert_array_equal(reward.weights, [1.0, 1.0, 1.0])


def test_make_a_mapping_with_weights_and_kwargs():
    reward = rewards.make({"in_key": 2.0, "range": {"weight": 0.5, "low": 57, "high": 77}, "tonic": {"bonus": 1}})
    terms = terms_of(reward)
    assert terms["in_key"][1] == 2.0
    assert terms["range"][1] == 0.5 and terms["range"][0].params == {"penalty": 1.0, "low": 57, "high": 77}
    assert terms["tonic"][1] == 1.0 and terms["tonic"][0].params == {"bonus": 1}


def test_mapping_weights_and_kwargs_change_the_values():
    c = melody()
    base = rewards.score(["in_key", "range"], c)
    assert base["in_key"] == -1.0  # the C#
    assert base["range"] == 0.0
    tuned = rewards.score({"in_key": 2.5, "range": {"weight": 3.0, "high": 70}}, c)
    assert tuned["in_key"] == -2.5
    assert tuned["range"] == -6.0  # C5 and B4 lie above 70
    assert tuned["total"] == -8.5


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_make_from_a_yaml_file(tmp_path, suffix):
    path = tmp_path / f"reward{suffix}"
    path.write_text("in_key: 2\nrange:\n  weight: 0.5\n  high: 79\ntheory: 1.0\n", encoding="utf-8")
    for spec in (path, str(path)):
        reward = rewards.make(spec)
        terms = terms_of(reward)
        assert set(reward.names) == set(rewards.PRESETS["theory"]) | {"in_key"}
        assert terms["in_key"][1] == 2.0  # theory has no per-note in_key: only the file's 2
        assert terms["range"][1] == 0.5 + rewards.PRESETS["theory"]["range"]
        assert terms["note_length_profile"][1] == rewards.PRESETS["theory"]["note_length_profile"]


def test_yaml_with_a_list_or_a_name(tmp_path):
    (tmp_path / "list.yaml").write_text("- in_key\n- motif\n", encoding="utf-8")
    (tmp_path / "name.yml").write_text("rl_tuner_theory\n", encoding="utf-8")
    assert rewards.make(tmp_path / "list.yaml").names == ("in_key", "motif")
    assert rewards.make(tmp_path / "name.yml").names == rewards.RL_TUNER_RULES


def test_make_from_an_import_path():
    reward = rewards.make(USER_TERM_PATH)
    assert reward.names == (USER_TERM_PATH,)
    assert isinstance(reward.terms[0][1], OnsetsAbove)
    reward = rewards.make({USER_TERM_PATH: {"weight": 2.0, "ceiling": 64}, "in_key": 1.0})
    term, w = terms_of(reward)[USER_TERM_PATH]
    assert w == 2.0 and term.params["ceiling"] == 64
    assert rewards.get(USER_TERM_PATH) is OnsetsAbove


def test_available_lists_every_term_and_preset():
    listed = rewards.available()
    assert set(ALL_TERMS) | set(rewards.PRESETS) <= set(listed)
    for name in ALL_TERMS:
        assert listed[name] == rewards.get(name).summary() and listed[name].strip()
    for name in rewards.PRESETS:
        assert listed[name].startswith("preset: ")
        assert all(term in listed[name] for term in rewards.PRESETS[name])
    assert list(listed) == sorted(listed)


# ---------------------------------------------------------------------------- presets merge
def test_presets_merge_by_adding_weights():
    reward = rewards.make({"theory": 1.0, "rl_tuner_theory": 2.0})
    weights = dict(zip(reward.names, reward.weights))
    theory = rewards.PRESETS["theory"]
    assert set(weights) == set(theory) | set(rewards.RL_TUNER_RULES)
    for name in weights:
        assert weights[name] == theory.get(name, 0.0) + (2.0 if name in rewards.RL_TUNER_RULES else 0.0)
    listed = rewards.make(["rl_tuner_theory", "in_key"])
    assert listed.names == rewards.RL_TUNER_RULES
    assert dict(zip(listed.names, listed.weights))["in_key"] == 2.0


def test_preset_weight_scales_all_its_terms():
    reward = rewards.make({"theory": 2.0})
    assert dict(zip(reward.names, reward.weights)) == {n: 2.0 * w for n, w in rewards.PRESETS["theory"].items()}
    c = melody()
    single, double = rewards.score("theory", c), rewards.score({"theory": 2.0}, c)
    assert double == pytest.approx({k: 2 * v for k, v in single.items()})


def test_merging_terms_with_different_parameters_is_an_error():
    with pytest.raises(RewardSpecError, match=r"'range' appears twice with different parameters"):
        rewards.make({"theory": 1.0, "range": {"low": 50}})
    reward = rewards.make({"theory": 1.0, "range": {"weight": 2.0, "low": 55}})  # same parameters: merged
    assert terms_of(reward)["range"][1] == rewards.PRESETS["theory"]["range"] + 2.0


# ---------------------------------------------------------------------------- errors
def test_unknown_name_lists_the_available_ones():
    with pytest.raises(RewardSpecError) as err:
        rewards.make("in_kee")
    msg = str(err.value)
    assert "'in_kee'" in msg and "available:" in msg
    assert all(name in msg for name in (*ALL_TERMS, *rewards.PRESETS))
    with pytest.raises(RewardSpecError, match="in_kee"):
        rewards.make({"in_kee": 1.0})
    with pytest.raises(RewardSpecError, match="in_kee"):
        rewards.make(["motif", "in_kee"])


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf"), True, False, "2", [1.0]])
def test_bad_weights(weight):
    for spec in ({"in_key": weight}, {"in_key": {"weight": weight}}, {"theory": weight}):
        with pytest.raises(RewardSpecError, match=r"weight of reward term '(in_key|theory)' must be a finite number"):
            rewards.make(spec)
    with pytest.raises(RewardSpecError, match="must be a finite number, got None"):
        rewards.make({"in_key": {"weight": None}})


@pytest.mark.parametrize("weight", [np.int64(2), np.float32(0.5), np.float64(1.5), 3])
def test_numpy_and_int_weights_are_numbers(weight):
    np.testing.assert_array_equal(rewards.make({"in_key": weight}).weights, [float(weight)])
    np.testing.assert_array_equal(rewards.make({"in_key": {"weight": weight}}).weights, [float(weight)])


def test_bad_keyword_name_lists_the_accepted_ones():
    with pytest.raises(RewardSpecError) as err:
        rewards.make({"range": {"lowest": 50}})
    msg = str(err.value)
    assert "'range'" in msg and "lowest" in msg
    assert "accepted: penalty=1.0, low=55, high=79" in msg


@pytest.mark.parametrize("value", ["G3", None, [55], True, float("nan"), float("inf")])
def test_non_numeric_or_non_finite_keyword(value):
    with pytest.raises(RewardSpecError, match=r"range.*low must be (a number|finite)"):
        rewards.make({"range": {"low": value}})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"range": {"low": 80, "high": 60}}, "low .80. must not exceed high .60."),
        ({"rest_ratio": {"max_ratio": 1.0}}, r"max_ratio must be in \[0, 1\)"),
        ({"low_autocorrelation": {"threshold_den": 0}}, "threshold_den > 0"),
        ({"low_autocorrelation": {"min_length": 2.5}}, "min_length must be a whole number"),
        ({"resolve_leaps": {"leap": 0}}, "leap must be >= 1"),
        ({"no_repetition": {"max_repeats": 0}}, "max_repeats must be >= 1"),
        ({"rhythmic_variety": {"target_bits": 0}}, "target_bits must be > 0"),
        ({"theory": {"weight": 1.0, "low": 50}}, "preset 'theory' takes only a weight"),
        ({}, "empty reward mapping"),
        ([], "at least one term"),
        ({3: 1.0}, "names must be strings"),
        ([1.5], "items must be names or RewardTerm objects"),
        (3, "cannot build a reward from 3; accepted:"),
        (f"{__name__}:melody", "is not a RewardTerm subclass"),
        ("no_such_module_xyz:Term", "cannot import reward term"),
    ],
)
def test_specific_errors(spec, message):
    with pytest.raises(RewardSpecError, match=message):
        rewards.make(spec)


def test_duplicate_names_in_a_composite():
    term = rewards.get("in_key")()
    with pytest.raises(RewardSpecError, match=r"\['in_key'\] given more than once"):
        CompositeReward([("in_key", term, 1.0), ("in_key", term, 2.0)])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("in_key: [1, 2\n", "is not valid YAML"),
        ("in_key: 1\n  motif: 2\n", "is not valid YAML"),
        ("3\n", "must hold a mapping.*got int"),
        ("", "must hold a mapping.*got NoneType"),
        ("other.yaml\n", "points to another file"),
        ("{}\n", "empty reward mapping"),
        ("in_key: .nan\n", "must be a finite number"),
    ],
)
def test_bad_yaml_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RewardSpecError, match=message) as err:
        rewards.make(path)
    if "YAML" in message or "must hold" in message or "another file" in message:
        assert str(path) in str(err.value)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(RewardSpecError, match="cannot read reward spec file") as err:
        rewards.make(tmp_path / "missing.yml")
    assert "missing.yml" in str(err.value)


# ---------------------------------------------------------------------------- user terms
def test_user_term_plugs_in_next_to_kernel_terms():
    c = comp([tok(p) for p in (C4, 61, E4, F4, G4)] + [HOLD])  # C C# E F G (held)
    names, values = rewards.score_steps([OnsetsAbove(ceiling=E4), "in_key", "motif"], c)
    assert names == ("OnsetsAbove", "in_key", "motif")
    # F and G are above E; at the last step 0.5 per onset (5 onsets).
    np.testing.assert_array_equal(values[:, 0], [0, 0, 0, -1, -1, 2.5])
    np.testing.assert_array_equal(values[:, 1], [0, -1, 0, 0, 0, 0])
    np.testing.assert_array_equal(values[:, 2], 0)
    totals = rewards.score({"in_key": 2.0, USER_TERM_PATH: {"weight": 2.0, "ceiling": E4, "per_onset": 1.0}}, c)
    assert totals == {"in_key": -2.0, USER_TERM_PATH: -4.0 + 10.0, "total": 4.0}


def test_user_term_rejects_unknown_kwargs_with_its_own_list():
    with pytest.raises(RewardSpecError, match=r"'OnsetsAbove' got unknown keyword.*accepted: ceiling=72, penalty=1.0"):
        OnsetsAbove(floor=3)


def test_lone_kernel_term_steps_like_its_composite():
    c = melody()
    term = rewards.get("preferred_intervals")()
    batch = CompositionBatch(1, c.n_steps, DEFAULT_GRID, Meter())
    mask = np.ones(1, dtype=bool)
    batch.reset(mask, key=np.array([c.key.index]), chords=c.chords[None])
    term.bind(batch)
    term.reset(batch, mask)
    got = []
    for a in c.tokens:
        action = np.array([a])
        got.append(term.step(batch, action, mask)[0])
        batch.commit(action)
    np.testing.assert_array_equal(got, rewards.score_steps("preferred_intervals", c)[1][:, 0])


# ---------------------------------------------------------------------------- pickling
@pytest.mark.parametrize("name", ALL_TERMS)
def test_every_term_pickles(name):
    term = rewards.get(name)()
    clone = pickle.loads(pickle.dumps(term))
    assert clone == term and type(clone) is type(term) and clone.params == term.params
    c = melody()
    np.testing.assert_array_equal(rewards.score_steps(clone, c)[1], rewards.score_steps(term, c)[1])


def test_composites_pickle_before_and_after_use():
    c = melody()
    reward = rewards.make([OnsetsAbove(), "theory"])
    expected = rewards.score_steps(reward, c)[1]  # binds and steps the composite
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.names == reward.names
    np.testing.assert_array_equal(clone.weights, reward.weights)
    np.testing.assert_array_equal(rewards.score_steps(clone, c)[1], expected)
    fresh = pickle.loads(pickle.dumps(rewards.make({"theory": 1.0, "range": {"weight": 2.0, "low": 55}})))
    np.testing.assert_array_equal(
        rewards.score_steps(fresh, c)[1],
        rewards.score_steps({"theory": 1.0, "range": {"weight": 2.0, "low": 55}}, c)[1],
    )
