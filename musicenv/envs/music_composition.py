"""MusicComposition-v0: write a melody over a chord progression, one token per step."""

from __future__ import annotations

from typing import Any

from musicenv.envs.batched import SingleComposerEnv, VectorComposerEnv

__all__ = ["MusicCompositionEnv", "MusicCompositionVectorEnv"]


class MusicCompositionEnv(SingleComposerEnv):
    """
    ## Description

    The agent writes a monophonic melody over a chord progression, one grid step (a 16th
    note by default) at a time. Each episode has a key (one of 24) and a progression
    (one chord per bar by default), drawn from the env's random generator or fixed by
    the caller. Rewards come from pluggable music-theory terms (`rewards` package), so
    the same task serves to compare reward designs.

    ## Action Space

    `Discrete(V)` with V = 2 + number of pitches (38 with the default range 48..83):

    | Num        | Name            | Meaning                                         |
    |------------|-----------------|-------------------------------------------------|
    | 0          | REST            | silence starts (or goes on)                     |
    | 1          | HOLD            | the sounding note (or rest) continues           |
    | 2 .. V-1   | NOTE_ON(pitch)  | a new note of MIDI pitch `min_pitch + (a - 2)`  |

    Rhythm is part of the action: a quarter note is NOTE_ON then three HOLDs.
    `action_masks()` (for sb3-contrib's MaskablePPO) forbids HOLD at the first step and,
    with `constraint="in_key"`, every pitch outside the episode's key.

    ## Observation Space

    A `Dict` of `Box(0, 1, float32)` entries, usable unchanged by SB3's
    `MultiInputPolicy` (every entry is already one-hot or scaled, so SB3 adds no
    preprocessing cost); `FlattenObservation` gives one flat vector.

    | Key             | Shape                 | Meaning                                                   |
    |-----------------|-----------------------|-----------------------------------------------------------|
    | `history`       | (H, V + 1)            | one-hot of the last H tokens (default H = 8); column V marks padding before the start (BEGIN) |
    | `pitch_class`   | (12,)                 | one-hot pitch class of the latest note (zeros before the first) |
    | `position`      | (steps_per_bar,)      | one-hot position of the next step in its bar              |
    | `note_duration` | (1,)                  | steps since the current note or rest began / (2 bars), capped at 1 |
    | `chords`        | (2, 12 + 11 + 1)      | current chord and next different chord: root one-hot, quality one-hot (`musicenv.theory.QUALITIES`), "no chord" flag |
    | `key`           | (24,)                 | one-hot key (0..11 major on C..B, 12..23 minor)           |
    | `progress`      | (1,)                  | steps written / episode length                            |
    | `prior`         | (V,)                  | only with `observe_prior`: the prior's log p(next token), Box(-100, 0) |

    ## Rewards

    Any reward spec accepted by `rewards.make` (default: the `"theory"` preset, the nine
    RL Tuner rules plus chord-aware terms). `info["reward_terms"]` maps each term's name
    to its weighted contribution at this step; they sum to the reward.
    `rewards.available()` lists the catalogue.

    ## Starting State

    An empty composition; the key and progression are drawn uniformly (key from `key`'s
    choices, progression from `progression` or the bank `musicenv.theory.COMMON_PROGRESSIONS`
    for the key's mode) unless fixed via the constructor or `reset(options={"key": ...,
    "progression": ...})`.

    ## Episode End

    The episode terminates after `n_bars` bars (64 steps by default). There is no
    truncation.

    ## Arguments

    ```python
    gym.make("MusicComposition-v0", reward="theory", key="random", progression=None,
             n_bars=4, meter="4/4", steps_per_quarter=4, min_pitch=48, max_pitch=83,
             chords_per_bar=1, tempo=100, history_length=8, constraint=None,
             observe_prior=False, render_mode=None)
    ```

    * `reward`: reward spec: a term/preset name, a list, a `{name: weight}` or
      `{name: {weight, **kwargs}}` mapping, a YAML path or a `CompositeReward`.
    * `key`: `"random"` (all 24), `"major"`, `"minor"`, a key name (`"D minor"`), an index
      0..23, or a list of them to draw from.
    * `progression`: `None` (draw from the bank), a progression (`"I-vi-IV-V"`,
      `["ii", "V7", "I", "I"]`, `"C Am F G7"`), or a list of progressions to draw from.
      Roman numerals are read in the episode's key; chords cycle if shorter than the piece.
    * `meter`: `"4/4"`, `"3/4"`, `"2/4"` or `"6/8"`; `steps_per_quarter`: grid resolution.
    * `min_pitch`, `max_pitch`: MIDI range of NOTE_ON actions, inclusive.
    * `chords_per_bar`: harmonic rhythm (a divisor of the steps in a bar).
    * `tempo`: quarter notes per minute, for export only.
    * `history_length`: how many past tokens the `history` block shows (default 8, half a
      bar of 4/4). Every entry widens the first layer of an MLP policy by V + 1 inputs:
      with 8, SB3's PPO trains at ≈ 0.82x its CartPole-v1 speed, with 16 at ≈ 0.78x,
      and PPO with the `theory` reward reached the same score at 100k steps with 8 as
      with 16 (README, Training). Recurrent policies and
      `agents.policies.NoteRNNExtractor` (which needs the whole piece: 64) see further.
    * `constraint`: `None`, or `"in_key"` to mask out-of-key pitches in `action_masks()`.
    * `observe_prior`: `False`, `True` / `"default"` (the general melody prior,
      conditioned on the episode's key, meter, chords and position in the bar), `"bach"`
      (the token-only Bach chorale prior), `"small"` (its 1 x 64 sibling), a note-RNN
      checkpoint path, or `{"checkpoint": ..., "style": "essen"}` to condition the
      default prior on a style (bach, essen, oneills): adds the observation block `prior`, (V,) float32 in
      [-100, 0], the frozen prior's log p(next token | every token so far), computed
      incrementally (one batched recurrent step per env step; needs torch). The
      policies of `agents.policies` and the KL-control agents of `agents.kl_control`
      read it.
    * `render_mode`: `"ansi"` (text piano roll) or `"rgb_array"` (piano-roll picture).

    `env.unwrapped.composition` returns the `Composition` written so far (export with
    `to_midi`, `to_musicxml`, `to_music21`).

    ## Vector version

    `gym.make_vec("MusicComposition-v0", num_envs=N, vectorization_mode="vector_entry_point")`
    runs the same batched core for N compositions at once (`MusicCompositionVectorEnv`,
    next-step autoreset, one random generator for the batch).

    ## Version History

    * v0: initial version.
    """

    #: Reset options that fully fix an episode's context (used by the suite's tests).
    EXAMPLE_RESET_OPTIONS = {"key": "D minor", "progression": "i-iv-V-i"}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        super().__init__(render_mode=render_mode, **kwargs)


class MusicCompositionVectorEnv(VectorComposerEnv):
    """Vectorised MusicComposition-v0 (same arguments plus `num_envs`); see
    :class:`MusicCompositionEnv`."""
