"""Baseline policies that need no training: uniform random and a rule-based composer.

Both act from the environment's observation (plus its static settings) and work
with any musicenv composition env, so they give every reward design a floor to
compare agents against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from musicenv.encoding import FIRST_PITCH_TOKEN, HOLD
from musicenv.theory import KEY_SCALE_MASK, KEY_TONIC, QUALITIES, QUALITY_INTERVALS

__all__ = ["RandomPolicy", "RuleBasedPolicy", "run_episode"]


class RandomPolicy:
    """Uniformly random tokens (respecting ``action_masks()`` if ``masked``)."""

    def __init__(self, env, seed: int | None = None, masked: bool = False) -> None:
        self.env = env
        self.masked = masked
        self.rng = np.random.default_rng(seed)
        self.n = int(env.action_space.n)

    def __call__(self, obs: dict[str, np.ndarray]) -> int:
        if self.masked:
            allowed = np.flatnonzero(self.env.unwrapped.action_masks())
            return int(self.rng.choice(allowed))
        return int(self.rng.integers(self.n))


class RuleBasedPolicy:
    """A simple composer that follows textbook habits.

    A note on every beat (sometimes two eighths, sometimes a half note at a bar's
    end); chord tones on strong beats, chosen nearest to the previous note; other notes
    move by scale step towards the next chord tone; the melody stays in a singable
    range (``low``..``high``), starts on the tonic and ends on a held tonic.
    """

    def __init__(self, env, seed: int | None = None, low: int = 60, high: int = 77) -> None:
        core = env.unwrapped.core
        self.grid, self.meter = core.grid, core.meter
        self.steps_per_bar = core.steps_per_bar
        self.beat = self.meter.steps_per_beat(self.grid.steps_per_quarter)
        self.n_steps = core.n_steps
        self.low, self.high = max(low, self.grid.min_pitch), min(high, self.grid.max_pitch)
        self.rng = np.random.default_rng(seed)
        self._split_beat = False

    # -- reading the observation ----------------------------------------------------------
    def _last_pitch(self, obs: dict[str, np.ndarray]) -> int | None:
        tokens = obs["history"].argmax(axis=1)
        for tok in tokens[::-1]:
            if FIRST_PITCH_TOKEN <= tok < self.grid.vocab_size:
                return self.grid.pitch(int(tok))
        return None

    @staticmethod
    def _chord_pcs(chord_row: np.ndarray) -> set[int]:
        if chord_row[-1] > 0.5:  # no chord
            return set()
        root = int(chord_row[:12].argmax())
        quality = QUALITIES[int(chord_row[12:-1].argmax())]
        return {(root + i) % 12 for i in QUALITY_INTERVALS[quality]}

    def _candidates(self, pcs) -> list[int]:
        return [p for p in range(self.low, self.high + 1) if p % 12 in pcs]

    def _nearest(self, pcs, prev: int | None) -> int:
        cands = self._candidates(pcs)
        target = prev if prev is not None else (self.low + self.high) // 2
        return min(cands, key=lambda p: (abs(p - target), p))

    def __call__(self, obs: dict[str, np.ndarray]) -> int:
        t = int(round(float(obs["progress"][0]) * self.n_steps))
        key = int(obs["key"].argmax())
        tonic = int(KEY_TONIC[key])
        scale = {pc for pc in range(12) if KEY_SCALE_MASK[key, pc]}
        pos = t % self.steps_per_bar
        prev = self._last_pitch(obs)
        final_beat = t >= self.n_steps - self.beat
        if t == 0:
            return self.grid.token(self._nearest({tonic}, 67))
        if final_beat:
            if t == self.n_steps - self.beat:
                return self.grid.token(self._nearest({tonic}, prev))
            return HOLD
        on_beat = pos % self.beat == 0
        half_beat = pos % self.beat == self.beat // 2 and self.beat % 2 == 0
        if on_beat:
            self._split_beat = bool(self.rng.random() < 0.35)
            # a longer note to close each bar's phrase: hold through the last beat
            if pos == self.steps_per_bar - self.beat and self.rng.random() < 0.5:
                return HOLD
            strong = pos == 0 or (self.meter.beats_per_bar == 4 and pos == 2 * self.beat)
            chord = self._chord_pcs(obs["chords"][0]) or {tonic}
            if strong or prev is None:
                return self.grid.token(self._nearest(chord, prev))
            return self.grid.token(self._step_towards(prev, chord, scale))
        if half_beat and self._split_beat and prev is not None:
            nxt = self._chord_pcs(obs["chords"][1]) or {tonic}
            return self.grid.token(self._step_towards(prev, nxt, scale))
        return HOLD

    def _step_towards(self, prev: int, target_pcs, scale) -> int:
        target = self._nearest(target_pcs, prev)
        direction = 1 if target > prev else -1 if target < prev else int(self.rng.choice([-1, 1]))
        p = prev + direction
        while p % 12 not in scale:
            p += direction
        return int(np.clip(p, self.low, self.high))


def run_episode(env, policy, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict[str, float]]:
    """Play one episode; return the finished composition and per-term reward totals."""
    obs, _ = env.reset(seed=seed, options=options)
    totals: dict[str, float] = {}
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        for name, v in info["reward_terms"].items():
            totals[name] = totals.get(name, 0.0) + v
        done = terminated or truncated
    totals["total"] = sum(v for k, v in totals.items())
    return env.unwrapped.composition, totals
