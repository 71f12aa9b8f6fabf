"""MusicComposition-v0: write a melody over a chord progression, one token per step."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from musicenv.core import (
    C_EVENT_START,
    C_LAST_PITCH,
    C_T,
    K_N_STEPS,
    K_STEPS_PER_BAR,
    K_VOCAB,
    CompositionBatch,
    commit_kernel,
)
from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, HOLD, TokenGrid
from musicenv.envs.batched import (
    BatchedComposer,
    EpisodeContext,
    SingleComposerEnv,
    VectorComposerEnv,
    write_chord_features,
)
from musicenv.theory import (
    CHORD_FEATURES,
    CHORD_QUALITY,
    CHORD_ROOT,
    COMMON_PROGRESSIONS,
    PROGRESSION_BANKS,
    KEY_SCALE_MASK,
    N_KEYS,
    N_PITCH_CLASSES,
    N_QUALITIES,
    NO_CHORD,
    Meter,
    MusicTheoryError,
    parse_key,
    resolve_progression,
)

__all__ = ["MusicCompositionEnv", "MusicCompositionVectorEnv", "MusicCompositionComposer", "ContextSampler"]


# ------------------------------------------------------------------------------ context
_MODE_KEYS = {
    "all": tuple(range(N_KEYS)),
    "major": tuple(range(12)),
    "minor": tuple(range(12, 24)),
}


def _resolve_keys(key: Any) -> tuple[int, ...]:
    """Keys an episode may draw from: 'random'/'all', 'major', 'minor', one key or a list."""
    if key is None:
        return _MODE_KEYS["all"]
    if isinstance(key, str) and key.lower() in ("random", "all", "major", "minor"):
        return _MODE_KEYS["all" if key.lower() == "random" else key.lower()]
    if isinstance(key, (list, tuple)):
        if not key:
            raise MusicTheoryError("empty list of keys; give at least one key name or index")
        return tuple(parse_key(k) for k in key)
    return (parse_key(key),)


class ContextSampler:
    """Draws (key, chord track) per episode from the env's ``np_random``.

    ``progression`` is None or ``"common"`` (draw one of ``COMMON_PROGRESSIONS`` for
    the key's mode), the name of another bank of :data:`musicenv.theory.PROGRESSION_BANKS`
    (``"cadential"``: every progression ends with a cadence onto the tonic chord), a
    roman-numeral/chord-symbol string or list (fixed; numerals read in the episode's
    key), or a list of such progressions to draw from.
    """

    def __init__(self, key: Any, progression: Any, n_steps: int, steps_per_chord: int) -> None:
        self.keys = np.array(_resolve_keys(key), dtype=np.int64)
        self.n_steps, self.steps_per_chord = n_steps, steps_per_chord
        #: the name of the bank drawn from (None: the user's own progressions)
        self.bank_name = "common" if progression is None else _bank_name(progression)
        if self.bank_name is not None:
            bank = PROGRESSION_BANKS[self.bank_name]
            self.banks = {m: [list(p) for p in bank[m]] for m in ("major", "minor")}
        else:
            progs = progression if _is_progression_list(progression) else [progression]
            self.banks = {"major": list(progs), "minor": list(progs)}
        # chord track (and its next-chord track) of every (key, progression) pair,
        # precomputed so that drawing a batch of contexts is a vectorised lookup
        n_prog = max(len(v) for v in self.banks.values())
        self.n_prog = np.zeros(N_KEYS, dtype=np.int64)
        self.tracks = np.full((N_KEYS, n_prog, n_steps), NO_CHORD, dtype=np.int64)
        for k in np.unique(self.keys):
            bank = self.banks["minor" if k >= 12 else "major"]
            self.n_prog[k] = len(bank)
            for i, prog in enumerate(bank):
                self.tracks[k, i] = self.chord_track(resolve_progression(prog, int(k)))
        self.next_tracks = next_chord_track(self.tracks.reshape(-1, n_steps)).reshape(self.tracks.shape)

    def chord_track(self, codes: Sequence[int]) -> np.ndarray:
        idx = (np.arange(self.n_steps) // self.steps_per_chord) % len(codes)
        return np.asarray(codes, dtype=np.int64)[idx]

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` contexts: keys (n,), chord tracks and next-chord tracks (n, n_steps)."""
        keys = self.keys[rng.integers(0, len(self.keys), size=n)]
        prog = (rng.random(n) * self.n_prog[keys]).astype(np.int64)
        return keys, self.tracks[keys, prog], self.next_tracks[keys, prog]

    def from_options(self, options: dict, rng: np.random.Generator, n: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`draw`, with ``options["key"]`` and/or ``options["progression"]`` fixed."""
        keys, tracks, next_tracks = self.draw(rng, n)
        if options.get("key") is not None:
            keys = np.full(n, parse_key(options["key"]), dtype=np.int64)
            if options.get("progression") is None:
                bank = self.banks["major"]
                # one progression is passed as itself: a bank of one string progression
                # would otherwise read as a single progression of one (unknown) numeral
                own = bank[0] if len(bank) == 1 else bank
                sub = ContextSampler(int(keys[0]), self.bank_name if self.bank_name is not None else own,
                                     self.n_steps, self.steps_per_chord)
                _, tracks, next_tracks = sub.draw(rng, n)
        if options.get("progression") is not None:
            tracks = np.stack([self.chord_track(resolve_progression(options["progression"], int(k))) for k in keys])
            next_tracks = next_chord_track(tracks)
        return keys, tracks, next_tracks



def _bank_name(progression: Any) -> str | None:
    """The bank ``progression`` names (a key of PROGRESSION_BANKS, any case), else None."""
    if isinstance(progression, str) and progression.strip().lower() in PROGRESSION_BANKS:
        return progression.strip().lower()
    return None


def _is_progression_list(p: Any) -> bool:
    return isinstance(p, (list, tuple)) and len(p) > 0 and all(isinstance(x, (list, tuple)) for x in p)


@njit(cache=True)
def next_chord_track(chords):  # pragma: no cover - compiled
    """``next[b, s]`` = the first chord after step s that differs from ``chords[b, s]``
    (NO_CHORD if the chord never changes again); ``chords`` has shape (B, T)."""
    nxt = np.full_like(chords, NO_CHORD)
    B, T = chords.shape
    for b in range(B):
        cur = NO_CHORD
        for s in range(T - 2, -1, -1):
            if chords[b, s + 1] != chords[b, s]:
                cur = chords[b, s + 1]
            nxt[b, s] = cur
    return nxt


# ------------------------------------------------------------------------------ observation
@njit(cache=True)
def observe_kernel(tokens, core, key, chords, next_chords, consts, history_len, out):  # pragma: no cover
    """Write the flat observation of composition b into ``out[b]`` (any content on entry).

    Layout: history (H x (V+1)) | pitch class (12) | position in bar (steps_per_bar) |
    note duration (1) | current chord, next chord (2 x CHORD_FEATURES) | key (N_KEYS) |
    progress (1). Every entry reads a constant number of steps, so the cost does not
    grow with the episode's length.
    """
    consts_n_steps = consts[K_N_STEPS]
    steps_per_bar = consts[K_STEPS_PER_BAR]
    vocab = consts[K_VOCAB]
    for b in range(tokens.shape[0]):
        out[b, :] = 0.0
        t = core[b, C_T]
        o = 0
        for i in range(history_len):
            s = t - history_len + i
            tok = tokens[b, s] if s >= 0 else vocab  # vocab = BEGIN padding
            out[b, o + i * (vocab + 1) + tok] = 1.0
        o += history_len * (vocab + 1)
        lp = core[b, C_LAST_PITCH]
        if lp >= 0:
            out[b, o + lp % N_PITCH_CLASSES] = 1.0
        o += N_PITCH_CLASSES
        out[b, o + t % steps_per_bar] = 1.0
        o += steps_per_bar
        dur = (t - core[b, C_EVENT_START]) / (2.0 * steps_per_bar) if t > 0 else 0.0
        out[b, o] = dur if dur < 1.0 else 1.0
        o += 1
        tc = t if t < consts_n_steps else consts_n_steps - 1
        write_chord_features(out, b, o, chords[b, tc])
        o += CHORD_FEATURES
        write_chord_features(out, b, o, next_chords[b, tc])
        o += CHORD_FEATURES
        out[b, o + key[b]] = 1.0
        o += N_KEYS
        out[b, o] = t / consts_n_steps


#: Root and quality codes of every chord code and of NO_CHORD (last entry: root 12,
#: quality N_QUALITIES), for the tokens observation.
CHORD_ROOT_CODE = np.append(CHORD_ROOT[:NO_CHORD], N_PITCH_CLASSES).astype(np.int64)
CHORD_QUALITY_CODE = np.append(CHORD_QUALITY[:NO_CHORD], N_QUALITIES).astype(np.int64)


@njit(cache=True)
def observe_tokens_kernel(tokens, core, key, chords, next_chords, consts, history_len, out):  # pragma: no cover
    """Write the tokens observation of composition b into ``out[b]`` (int64, any content
    on entry). Layout: history (H tokens, V = BEGIN) | pitch class (12 = none yet) |
    position in bar | steps since the current event began (capped at 2 bars) | current
    and next chord as (root, quality) (12 / N_QUALITIES = no chord) | key | step t."""
    consts_n_steps = consts[K_N_STEPS]
    steps_per_bar = consts[K_STEPS_PER_BAR]
    vocab = consts[K_VOCAB]
    for b in range(tokens.shape[0]):
        t = core[b, C_T]
        for i in range(history_len):
            s = t - history_len + i
            out[b, i] = tokens[b, s] if s >= 0 else vocab
        o = history_len
        lp = core[b, C_LAST_PITCH]
        out[b, o] = lp % N_PITCH_CLASSES if lp >= 0 else N_PITCH_CLASSES
        out[b, o + 1] = t % steps_per_bar
        dur = t - core[b, C_EVENT_START] if t > 0 else 0
        out[b, o + 2] = dur if dur < 2 * steps_per_bar else 2 * steps_per_bar
        tc = t if t < consts_n_steps else consts_n_steps - 1
        c = chords[b, tc]
        c = c if c < NO_CHORD else NO_CHORD
        out[b, o + 3] = CHORD_ROOT_CODE[c]
        out[b, o + 4] = CHORD_QUALITY_CODE[c]
        c = next_chords[b, tc]
        c = c if c < NO_CHORD else NO_CHORD
        out[b, o + 5] = CHORD_ROOT_CODE[c]
        out[b, o + 6] = CHORD_QUALITY_CODE[c]
        out[b, o + 7] = key[b]
        out[b, o + 8] = t


@njit(cache=True)
def commit_observe_tokens_kernel(actions, active, tokens, core, pitch_of, key, chords, next_chords, consts,
                                 history_len, out):  # pragma: no cover
    """:func:`~musicenv.core.commit_kernel` then :func:`observe_tokens_kernel`."""
    commit_kernel(actions, active, tokens, core, pitch_of)
    observe_tokens_kernel(tokens, core, key, chords, next_chords, consts, history_len, out)


@njit(cache=True)
def commit_observe_kernel(actions, active, tokens, core, pitch_of, key, chords, next_chords, consts, history_len,
                          out):  # pragma: no cover
    """:func:`~musicenv.core.commit_kernel` then :func:`observe_kernel`: one compiled call
    per environment step after the reward's."""
    commit_kernel(actions, active, tokens, core, pitch_of)
    observe_kernel(tokens, core, key, chords, next_chords, consts, history_len, out)


# ------------------------------------------------------------------------------ the task
class MusicCompositionComposer(BatchedComposer):
    """B melodies over chord progressions (MusicComposition-v0's task; the manual is
    :class:`MusicCompositionEnv`): the action is the token, the context a key and a
    chord track drawn by :class:`ContextSampler`."""

    RESET_OPTIONS = ("key", "progression")
    OBSERVATION_MODES = ("dict", "tokens")

    def __init__(self, batch_size: int, *, reward: Any = "theory", key: Any = "random", progression: Any = None,
                 n_bars: int = 4, meter: Any = "4/4", steps_per_quarter: int = DEFAULT_GRID.steps_per_quarter,
                 min_pitch: int = DEFAULT_GRID.min_pitch, max_pitch: int = DEFAULT_GRID.max_pitch,
                 chords_per_bar: int = 1, tempo: float = 100.0, history_length: int = 8,
                 constraint: str | None = None, observe_prior: bool | str | os.PathLike = False,
                 observation: str = "dict") -> None:
        if not isinstance(n_bars, (int, np.integer)) or n_bars < 1:
            raise ValueError(f"n_bars must be a positive integer, got {n_bars!r}")
        if not isinstance(history_length, (int, np.integer)) or history_length < 1:
            raise ValueError(f"history_length must be a positive integer, got {history_length!r}")
        if constraint not in (None, "in_key"):
            raise ValueError(f"unknown constraint {constraint!r}; accepted: None, 'in_key'")
        grid = TokenGrid(min_pitch, max_pitch, steps_per_quarter)
        meter = Meter.parse(meter)
        self.steps_per_bar = meter.steps_per_bar(steps_per_quarter)
        if not isinstance(chords_per_bar, (int, np.integer)) or chords_per_bar < 1 or self.steps_per_bar % chords_per_bar:
            raise ValueError(f"chords_per_bar={chords_per_bar!r} must be a positive divisor of the "
                             f"{self.steps_per_bar} steps of a {meter} bar")
        n_steps = int(n_bars) * self.steps_per_bar
        self.n_bars, self.history_length, self.constraint = int(n_bars), int(history_length), constraint
        self.sampler = ContextSampler(key, progression, n_steps, self.steps_per_bar // chords_per_bar)
        self.next_chords = np.full((batch_size, n_steps), NO_CHORD, dtype=np.int64)
        self.key_masks = np.ascontiguousarray(KEY_SCALE_MASK)
        super().__init__(CompositionBatch(batch_size, n_steps, grid, meter), reward=reward, tempo=tempo,
                         observe_prior=observe_prior, observation=observation)
        b = self.batch
        # everything the compiled commit-and-observe step reads besides the tokens, bound
        # once (the arrays are updated in place, never replaced)
        self._observe_args = (b.key, b.chords, self.next_chords, b.consts, self.history_length)

    def draw_context(self, index: np.ndarray, rng: np.random.Generator, options: dict) -> EpisodeContext:
        if options:
            keys, tracks, next_tracks = self.sampler.from_options(options, rng, len(index))
        else:
            keys, tracks, next_tracks = self.sampler.draw(rng, len(index))
        self.next_chords[index] = next_tracks
        return EpisodeContext(keys, chords=tracks)

    def observation_layout(self) -> dict[str, tuple[int, ...]]:
        return {
            "history": (self.history_length, self.grid.vocab_size + 1),
            "pitch_class": (N_PITCH_CLASSES,),
            "position": (self.steps_per_bar,),
            "note_duration": (1,),
            "chords": (2, CHORD_FEATURES),
            "key": (N_KEYS,),
            "progress": (1,),
        }

    def observe(self, out: np.ndarray) -> None:
        b = self.batch
        observe_kernel(b.tokens, b.core, *self._observe_args, out)

    def commit_observe(self, tokens: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        b = self.batch
        commit_observe_kernel(tokens, active, b.tokens, b.core, b.pitch_of, *self._observe_args, out)

    def token_observation_layout(self) -> dict[str, Any]:
        V, bar = self.grid.vocab_size, self.steps_per_bar
        chord = [N_PITCH_CLASSES + 1, N_QUALITIES + 1]
        return {
            "history": np.full(self.history_length, V + 1),
            "pitch_class": [N_PITCH_CLASSES + 1],
            "position": [bar],
            "note_duration": [2 * bar + 1],
            "chords": [chord, chord],
            "key": [N_KEYS],
            "step": [self.capacity + 1],
        }

    def observe_tokens(self, out: np.ndarray) -> None:
        b = self.batch
        observe_tokens_kernel(b.tokens, b.core, *self._observe_args, out)

    def commit_observe_tokens(self, tokens: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        b = self.batch
        commit_observe_tokens_kernel(tokens, active, b.tokens, b.core, b.pitch_of, *self._observe_args, out)

    def action_masks(self) -> np.ndarray:
        """(B, V) bool: no HOLD at the first step; with ``constraint="in_key"`` no pitch
        outside the episode's key."""
        B, V = self.batch.batch_size, self.grid.vocab_size
        masks = np.ones((B, V), dtype=bool)
        masks[self.batch.core[:, C_T] == 0, HOLD] = False
        if self.constraint == "in_key":
            pcs = self.batch.pitch_of[FIRST_PITCH_TOKEN:] % N_PITCH_CLASSES
            masks[:, FIRST_PITCH_TOKEN:] = self.key_masks[self.batch.key][:, pcs]
        return masks

    def describe_actions(self) -> str:
        V = self.grid.vocab_size
        return f"0 REST, 1 HOLD, 2..{V - 1} NOTE_ON {self.grid.min_pitch}..{self.grid.max_pitch}"


# ------------------------------------------------------------------------------ front ends
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
    | `chords`        | (2, 24)               | current chord and next different chord: root one-hot (12), quality one-hot (11, `musicenv.theory.QUALITIES`), "no chord" flag; width `musicenv.theory.CHORD_FEATURES` |
    | `key`           | (24,)                 | one-hot key (0..11 major on C..B, 12..23 minor)           |
    | `progress`      | (1,)                  | steps written / episode length                            |
    | `prior`         | (V,)                  | only with `observe_prior`: the prior's log p(next token), Box(-100, 0) |

    With `observation="tokens"` the same facts come as small integers instead, a `Dict`
    of `MultiDiscrete` int64 entries (17 numbers, 136 bytes, where the one-hot Dict is
    414 floats, 1.7 KB): what agents that embed tokens themselves want (RNNs,
    Transformers, CleanRL/RLlib/JAX code). SB3's `MultiInputPolicy` accepts it too (it
    one-hot encodes `MultiDiscrete` entries itself).

    | Key             | Shape  | Values                                                      |
    |-----------------|--------|-------------------------------------------------------------|
    | `history`       | (H,)   | the last H tokens, 0..V-1; V marks padding before the start |
    | `pitch_class`   | (1,)   | pitch class of the latest note, 0..11; 12 before the first  |
    | `position`      | (1,)   | position of the next step in its bar, 0..steps_per_bar-1    |
    | `note_duration` | (1,)   | steps since the current note or rest began, capped at 2 bars (0..2 x steps_per_bar) |
    | `chords`        | (2, 2) | current and next different chord as (root 0..11, quality 0..10, `musicenv.theory.QUALITIES`); (12, 11) is "no chord" |
    | `key`           | (1,)   | key index 0..23                                             |
    | `step`          | (1,)   | steps written, 0..n_steps                                   |
    | `prior`         | (V,)   | only with `observe_prior`: as above, float32                |

    Cost (vector env, 1024 envs, `theory` reward; `musicenv bench --profile`): writing
    the one-hot Dict takes OBS_DICT_NS ns per env-step, the tokens Dict OBS_TOKENS_NS ns, of a whole
    step of STEP_DICT_NS and STEP_TOKENS_NS ns (README, Speed).

    ## Rewards

    Any reward spec accepted by `rewards.make` (default: the `"theory"` preset: time-weighted
    harmony, interval rates, rhythm, phrase and form terms, `rewards.MELODY_TERMS`). `info["reward_terms"]` maps each term's name
    to its weighted contribution at this step; they sum to the reward.
    `rewards.available()` lists the catalogue.

    ## Starting State

    An empty composition; the key and progression are drawn uniformly (key from `key`'s
    choices, progression from `progression` or, by default, the bank
    `musicenv.theory.COMMON_PROGRESSIONS` for the key's mode) unless fixed via the
    constructor or `reset(options={"key": ..., "progression": ...})`.

    ## Episode End

    The episode terminates after `n_bars` bars (64 steps by default). There is no
    truncation.

    ## Arguments

    ```python
    gym.make("MusicComposition-v0", reward="theory", key="random", progression=None,
             n_bars=4, meter="4/4", steps_per_quarter=4, min_pitch=48, max_pitch=83,
             chords_per_bar=1, tempo=100, history_length=8, constraint=None,
             observe_prior=False, observation="dict", render_mode=None)
    ```

    * `reward`: reward spec: a term/preset name, a list, a `{name: weight}` or
      `{name: {weight, **kwargs}}` mapping, a YAML path or a `CompositeReward`.
    * `key`: `"random"` (all 24), `"major"`, `"minor"`, a key name (`"D minor"`), an index
      0..23, or a list of them to draw from.
    * `progression`: `None` or `"common"` (draw from `COMMON_PROGRESSIONS`: 14 pop and
      common-practice loops, 4 of which end on the tonic chord), `"cadential"` (draw from
      `musicenv.theory.CADENTIAL_PROGRESSIONS`: 8 major and 6 minor progressions, every one
      closing V-I, V7-I or IV-I onto the tonic chord, so the piece can end as real pieces
      do), a progression (`"I-vi-IV-V"`, `["ii", "V7", "I", "I"]`, `"C Am F G7"`), or a
      list of progressions to draw from.
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
    * `observation`: `"dict"` (default: the one-hot Dict above, for SB3's
      `MultiInputPolicy`) or `"tokens"` (the integer Dict above).
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

    core_class = MusicCompositionComposer
    #: Reset options that fully fix an episode's context (used by the suite's tests).
    EXAMPLE_RESET_OPTIONS = {"key": "D minor", "progression": "i-iv-V-i"}


class MusicCompositionVectorEnv(VectorComposerEnv):
    """Vectorised MusicComposition-v0 (same arguments plus `num_envs`); see
    :class:`MusicCompositionEnv`."""

    core_class = MusicCompositionComposer
