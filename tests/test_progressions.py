"""Progression banks of MusicComposition-v0 (``progression="cadential"``): every drawn
context closes with a cadence onto the tonic chord, and ``theory`` then pays a melody
that ends on the tonic more than one that ends elsewhere."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from reward_helpers import tok

import musicenv  # noqa: F401  (registers the environments)
import rewards
from musicenv.composition import Composition
from musicenv.encoding import HOLD
from musicenv.theory import (
    CADENTIAL_PROGRESSIONS,
    CHORD_PC_MASK,
    CHORD_ROOT,
    COMMON_PROGRESSIONS,
    KEY_TONIC,
    PROGRESSION_BANKS,
    Key,
    MusicTheoryError,
    chord_name,
    resolve_progression,
)


@pytest.mark.parametrize("mode, tonic_name", [("major", "C"), ("minor", "Cm")])
def test_every_cadential_progression_closes_on_the_tonic_chord_from_v_or_iv(mode, tonic_name):
    key = Key.parse(f"C {mode}")
    for prog in CADENTIAL_PROGRESSIONS[mode]:
        names = [chord_name(c) for c in resolve_progression(list(prog), key)]
        assert names[-1] == tonic_name, prog
        # the chord before the final tonic (the last different one) is V, V7, IV or iv
        before = next(n for n in reversed(names[:-1]) if n != tonic_name)
        assert before in ({"G", "G7", "F"} if mode == "major" else {"G", "G7", "Fm"}), (prog, names)


def test_only_four_common_progressions_end_on_the_tonic_chord():
    ends = [p[-1] for mode in ("major", "minor") for p in COMMON_PROGRESSIONS[mode]]
    assert sum(e in ("I", "i") for e in ends) == 4
    assert set(PROGRESSION_BANKS) == {"common", "cadential"}


def _final_chords(env, seeds, **options):
    out = []
    for s in seeds:
        env.reset(seed=s, options=options or None)
        c = env.unwrapped.composition
        out.append((int(c.key.index), int(c.chords[-1])))
    return out


def test_cadential_env_draws_only_closing_contexts_in_every_key():
    env = gym.make("MusicComposition-v0", progression="Cadential")  # the bank name is case-blind
    finals = _final_chords(env, range(200))
    assert len({k for k, _ in finals}) > 12  # keys still drawn from all 24
    for key, chord in finals:
        assert chord == resolve_progression(["I" if key < 12 else "i"], key)[0]
    # a fixed key keeps the bank; the default bank ends elsewhere more often than not
    for _key, chord in _final_chords(env, range(20), key="D minor"):
        assert chord_name(chord) == "Dm"
    common = _final_chords(gym.make("MusicComposition-v0"), range(200))
    assert np.mean([CHORD_PC_MASK[c, KEY_TONIC[k]] for k, c in common]) < 0.6


def test_cadential_env_passes_the_checker_and_rejects_unknown_bank_names():
    check_env(gym.make("MusicComposition-v0", progression="cadential").unwrapped, skip_render_check=True)
    with pytest.raises(MusicTheoryError):
        gym.make("MusicComposition-v0", progression="cadenza")


def _line_ending_on(final_pitch: int, prog, key="C major") -> Composition:
    """Half notes on the chord roots (around C4), then a whole-bar final note."""
    k = Key.parse(key)
    codes = resolve_progression(list(prog), k)
    tokens = []
    for code in codes[:-1]:
        root = int(CHORD_ROOT[code])
        p1, p2 = 60 + root, 60 + (root + 4 if CHORD_PC_MASK[code, (root + 4) % 12] else root + 3)
        tokens += [tok(p1)] + [HOLD] * 7 + [tok(p2)] + [HOLD] * 7
    tokens += [tok(final_pitch)] + [HOLD] * 15
    return Composition.from_progression(np.array(tokens), list(prog), key=key)


def test_theory_pays_the_tonic_close_over_a_cadential_progression():
    for prog in CADENTIAL_PROGRESSIONS["major"]:
        on_tonic = rewards.score_steps("theory", _line_ending_on(72, prog))[1].sum()
        on_fifth = rewards.score_steps("theory", _line_ending_on(67, prog))[1].sum()  # a chord tone too
        assert on_tonic > on_fifth + 3, prog  # phrase_endings' tonic, cadence, period_form
    # over a loop ending on V (the common bank's I-vi-IV-V) the tonic is charged instead
    loop = ("I", "vi", "IV", "V")
    assert (rewards.score_steps("theory", _line_ending_on(72, loop))[1].sum()
            < rewards.score_steps("theory", _line_ending_on(67, loop))[1].sum())
