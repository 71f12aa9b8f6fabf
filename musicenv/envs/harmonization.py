"""Harmonization-v0: choose one chord per beat under a given melody (Bach chorale sopranos)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from musicenv.composition import Composition
from musicenv.core import C_END, C_T, CompositionBatch, commit_kernel
from musicenv.encoding import FIRST_PITCH_TOKEN, HOLD, REST, TokenGrid
from musicenv.envs.batched import (
    BatchedComposer,
    EpisodeContext,
    SingleComposerEnv,
    VectorComposerEnv,
    write_chord_features,
    write_steps_left,
)
from musicenv.theory import (
    CHORD_FEATURES,
    N_CHORDS,
    N_KEYS,
    N_PITCH_CLASSES,
    NO_CHORD,
    Key,
    Meter,
    MusicTheoryError,
    chord_name,
    parse_key,
    parse_roman,
    transpose_chords,
)

__all__ = ["HarmonizationEnv", "HarmonizationVectorEnv", "HarmonizationComposer", "CHORD_VOCABULARY",
           "chorale_melodies", "melody_beats"]

#: The actions: roman numerals read in the episode's key (major / minor).
CHORD_VOCABULARY = {
    "major": ("I", "ii", "iii", "IV", "V", "vi", "vii°", "V7"),
    "minor": ("i", "ii°", "III", "iv", "V", "VI", "#vii°", "V7"),
}
N_ACTIONS = 8
BEATS_PER_BAR = 4  # Harmonization-v0 uses the 4/4 chorales (309 of Bach's 344 loadable ones)
_MELODY_W = N_PITCH_CLASSES + 1  # pitch class one-hot + rest
_LOOK = np.array([-1, 0, 1, 2])  # melody beats shown, relative to the beat being harmonised
_CACHE: dict[TokenGrid, list] = {}


def chorale_melodies(grid: TokenGrid | None = None) -> list:
    """Bach's 4/4 chorale melodies (soprano + per-beat chord track), loaded once per process
    from :func:`musicenv.corpus.load` (cached on disk after the first parse)."""
    from musicenv.corpus import DEFAULT_GRID, load

    grid = grid or DEFAULT_GRID
    if grid not in _CACHE:
        _CACHE[grid] = [m for m in load("bach", grid, progress=False) if m.meter == "4/4"]
    return _CACHE[grid]


def melody_beats(tokens: np.ndarray, chords: np.ndarray, grid: TokenGrid, steps_per_beat: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(melody pitch sounding at each beat's onset, -2 in a rest; chord at each onset)."""
    n = len(tokens) // steps_per_beat
    pitch = np.full(n, -2, dtype=np.int64)
    sounding = -2
    for s in range(n * steps_per_beat):
        tok = int(tokens[s])
        if tok == REST:
            sounding = -2
        elif tok != HOLD:
            sounding = grid.pitch(tok)
        if s % steps_per_beat == 0:
            pitch[s // steps_per_beat] = sounding
    return pitch, np.asarray(chords[: n * steps_per_beat: steps_per_beat], dtype=np.int64)


#: Width of the ``beats_left`` block: 1, 2, 3, or 4 and more.
_LEFT_W = 4


@njit(cache=True)
def observe_harmonization_kernel(tokens, core, voice, key, out):  # pragma: no cover - compiled
    """Layout: melody (len(_LOOK) x _MELODY_W) | previous two chords (2 x CHORD_FEATURES) |
    beat (BEATS_PER_BAR) | key (N_KEYS) | beats left (_LEFT_W) | progress (1)."""
    for b in range(tokens.shape[0]):
        out[b, :] = 0.0
        t = core[b, C_T]
        end = core[b, C_END]
        o = 0
        for i in range(len(_LOOK)):
            s = t + _LOOK[i]
            m = voice[b, s] if 0 <= s < end else -2
            out[b, o + i * _MELODY_W + (m % N_PITCH_CLASSES if m >= 0 else _MELODY_W - 1)] = 1.0
        o += len(_LOOK) * _MELODY_W
        for i in range(2):
            s = t - 2 + i
            write_chord_features(out, b, o, tokens[b, s] - FIRST_PITCH_TOKEN if s >= 0 else NO_CHORD)
            o += CHORD_FEATURES
        out[b, o + t % BEATS_PER_BAR] = 1.0
        o += BEATS_PER_BAR
        out[b, o + key[b]] = 1.0
        o += N_KEYS
        write_steps_left(out, b, o, end - t, _LEFT_W)
        o += _LEFT_W
        out[b, o] = t / end


@njit(cache=True)
def commit_observe_harmonization_kernel(actions, active, tokens, core, pitch_of, voice, key, out):  # pragma: no cover
    commit_kernel(actions, active, tokens, core, pitch_of)
    observe_harmonization_kernel(tokens, core, voice, key, out)


class HarmonizationComposer(BatchedComposer):
    """B harmonization exercises (Harmonization-v0's task; the manual is
    :class:`HarmonizationEnv`): the melody is the batch's ``voice`` track (one step per
    beat), the composer's chords its ``chords`` track, the tokens ``FIRST_PITCH_TOKEN +
    chord code`` (``pitch_of`` maps a token to its chord code)."""

    RESET_OPTIONS = ("key", "melody")

    def __init__(self, batch_size: int, *, reward: Any = "harmonization", melody: Any = "bach", key: Any = None,
                 n_bars: int | None = 4, tempo: float = 80.0) -> None:
        from musicenv.corpus import DEFAULT_GRID

        if n_bars is not None and (not isinstance(n_bars, (int, np.integer)) or n_bars < 1):
            raise ValueError(f"n_bars must be a positive integer or None (whole melody), got {n_bars!r}")
        self.n_bars = n_bars
        meter = Meter.parse("4/4")
        self.melody_grid = DEFAULT_GRID
        self.spb = meter.steps_per_beat(self.melody_grid.steps_per_quarter)
        self.defaults = {"melody": melody, "key": key}
        self.user = self._user_melody(melody, key) if not self._is_corpus(melody) else None
        capacity = self._capacity()
        self.vocab = np.array([[parse_roman(r, k) for r in CHORD_VOCABULARY["minor" if k >= 12 else "major"]]
                               for k in range(N_KEYS)], dtype=np.int64)
        self.melody_ids = ["" for _ in range(batch_size)]
        self.melody_tokens: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(batch_size)]
        # one step per beat, 4/4 (the default beat levels at one step per quarter); the
        # tokens' table maps them to the chord code (read by no term)
        token_chord = np.concatenate([[-1] * FIRST_PITCH_TOKEN, np.arange(N_CHORDS)])
        batch = CompositionBatch(batch_size, capacity, TokenGrid(0, 127, 1), meter, token_pitch=token_chord)
        super().__init__(batch, reward=reward, tempo=tempo, n_actions=N_ACTIONS)

    # -- context ------------------------------------------------------------------------
    @staticmethod
    def _is_corpus(melody: Any) -> bool:
        return isinstance(melody, (str, int, np.integer)) and not (isinstance(melody, str) and " " in melody.strip())

    def _user_melody(self, melody: Any, key: Any) -> tuple[np.ndarray, int]:
        from musicenv.envs.counterpoint import parse_pitches

        if key is None:
            raise ValueError("a user melody needs its key, e.g. key='G major'")
        items = melody.split() if isinstance(melody, str) else list(melody)
        pitches = [-2 if (x is None or (isinstance(x, str) and x.lower() == "r")) else parse_pitches([x])[0] for x in items]
        if not 2 <= len(pitches) <= 256:
            raise ValueError(f"a melody of {len(pitches)} beats; accepted: 2..256 (one pitch per beat, 'r' a rest)")
        return np.array(pitches, dtype=np.int64), parse_key(key)

    def _capacity(self) -> int:
        if self.n_bars is not None:
            cap = self.n_bars * BEATS_PER_BAR
        elif self.user is not None:
            cap = len(self.user[0])
        else:
            cap = max(m.n_steps for m in chorale_melodies(self.melody_grid)) // self.spb
        if self.user is not None:
            cap = max(cap, len(self.user[0]))
        return cap

    def _pick(self, rng: np.random.Generator, ctx: dict) -> tuple[str, np.ndarray, np.ndarray, int, np.ndarray]:
        """(id, melody pitch per beat, composer's chord per beat, key, melody tokens) of one episode."""
        melody = ctx.get("melody")
        if not self._is_corpus(melody):
            pitches, k = self._user_melody(melody, ctx.get("key"))
            pitches = pitches[: self.capacity]
            toks = np.array([t for p in pitches for t in ((REST if p < 0 else self.melody_grid.token(
                int(np.clip(p, self.melody_grid.min_pitch, self.melody_grid.max_pitch)))), HOLD, HOLD, HOLD)],
                dtype=np.int64)
            return "user", pitches, np.full(len(pitches), NO_CHORD, dtype=np.int64), k, toks
        pool = chorale_melodies(self.melody_grid)
        if melody == "bach":
            m = pool[int(rng.integers(len(pool)))]
        elif isinstance(melody, (int, np.integer)):
            if not 0 <= int(melody) < len(pool):
                raise ValueError(f"melody index {melody} out of range; accepted: 0..{len(pool) - 1}")
            m = pool[int(melody)]
        else:
            found = [x for x in pool if x.id == melody or x.id == f"bach/{melody}"]
            if not found:
                raise ValueError(f"unknown melody {melody!r}; accepted: 'bach', an index, a 4/4 chorale id such as "
                                 f"{pool[0].id!r}, or pitches one per beat ('G4 G4 A4 B4', 'r' a rest) with a key")
            m = found[0]
        pitch, chords = melody_beats(m.tokens, m.chords, m.grid, self.spb)
        n = len(pitch)
        start = 0
        if self.n_bars is not None:
            bars = -(-n // BEATS_PER_BAR)
            start = max(0, bars - self.n_bars) * BEATS_PER_BAR  # the last n_bars: the final cadence
        pitch, chords = pitch[start:], chords[start:]
        toks = np.array(m.tokens[start * self.spb: n * self.spb], dtype=np.int64)
        k = m.key if ctx.get("key") is None else parse_key(ctx["key"])
        if k != m.key:  # transpose to the requested key (same mode only)
            if (k >= 12) != (m.key >= 12):
                raise MusicTheoryError(f"{m.id} is in {Key.from_index(m.key).name}; it can be transposed to a "
                                       f"{'minor' if m.key >= 12 else 'major'} key only, not {Key.from_index(k).name}")
            shift = ((k - m.key) % 12 + 6) % 12 - 6
            pitch = np.where(pitch >= 0, pitch + shift, pitch)
            chords = transpose_chords(m.chords[start * self.spb: n * self.spb: self.spb], shift)
            g = self.melody_grid
            toks = np.array([t if t in (REST, HOLD) else g.token(int(np.clip(g.pitch(t) + shift, g.min_pitch,
                                                                               g.max_pitch))) for t in toks])
        return m.id, pitch, chords, k, toks

    def draw_context(self, index: np.ndarray, rng: np.random.Generator, options: dict) -> EpisodeContext:
        ctx = dict(self.defaults)
        ctx.update({k: v for k, v in options.items() if v is not None})
        voice = np.full((len(index), self.capacity), -1, dtype=np.int64)
        chords = np.full((len(index), self.capacity), NO_CHORD, dtype=np.int64)
        keys = np.zeros(len(index), dtype=np.int64)
        length = np.zeros(len(index), dtype=np.int64)
        for j, b in enumerate(index):
            mid, pitch, ch, k, toks = self._pick(rng, ctx)
            n = len(pitch)
            voice[j, :n], chords[j, :n], keys[j], length[j] = pitch, ch, k, n
            self.melody_ids[b], self.melody_tokens[b] = mid, toks
        return EpisodeContext(keys, chords=chords, voice=voice, length=length)

    def reset_info(self, index: int) -> dict[str, Any]:
        return {"key": Key.from_index(int(self.batch.key[index])).name, "melody": self.melody_ids[index]}

    # -- observation, actions ------------------------------------------------------------
    def observation_layout(self) -> dict[str, tuple[int, ...]]:
        return {
            "melody": (len(_LOOK), _MELODY_W),
            "chords": (2, CHORD_FEATURES),
            "beat": (BEATS_PER_BAR,),
            "key": (N_KEYS,),
            "beats_left": (_LEFT_W,),
            "progress": (1,),
        }

    def observe(self, out: np.ndarray) -> None:
        b = self.batch
        observe_harmonization_kernel(b.tokens, b.core, b.voice, b.key, out)

    def commit_observe(self, tokens: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        b = self.batch
        commit_observe_harmonization_kernel(tokens, active, b.tokens, b.core, b.pitch_of, b.voice, b.key, out)

    def chord_codes(self, actions: np.ndarray) -> np.ndarray:
        """Chord codes of ``actions`` in each composition's key."""
        return self.vocab[self.batch.key, actions]

    def action_tokens(self, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Action a is the a-th chord of ``CHORD_VOCABULARY`` in the episode's key."""
        return self.chord_codes(actions) + FIRST_PITCH_TOKEN

    def describe_actions(self) -> str:
        return (f"{', '.join(CHORD_VOCABULARY['major'])} in major; "
                f"{', '.join(CHORD_VOCABULARY['minor'])} in minor")

    # -- views --------------------------------------------------------------------------
    def chosen_chords(self, index: int) -> list[str]:
        t = int(self.batch.core[index, C_T])
        return [chord_name(int(c) - FIRST_PITCH_TOKEN) for c in self.batch.tokens[index, :t]]

    def composition(self, index: int) -> Composition:
        """The melody with the chords chosen so far as its chord track (N.C. after them)."""
        b = self.batch
        t = int(b.core[index, C_T])
        toks = self.melody_tokens[index]
        track = np.full(len(toks), NO_CHORD, dtype=np.int64)
        for s in range(min(t, len(toks) // self.spb + 1)):
            track[s * self.spb:(s + 1) * self.spb] = b.tokens[index, s] - FIRST_PITCH_TOKEN
        key = Key.from_index(int(b.key[index]))
        return Composition(toks.copy(), key, self.meter, track, self.melody_grid, self.tempo,
                           title=f"musicenv harmonization: {self.melody_ids[index]}, {key.name}")

    def render(self, index: int, mode: str):
        """The melody's piano roll with the chosen chords (its steps are 16ths, not beats)."""
        from musicenv.render import render_ansi, render_rgb

        comp = self.composition(index)
        if mode == "ansi":
            return render_ansi(comp)
        return render_rgb(comp)


class HarmonizationEnv(SingleComposerEnv):
    """
    ## Description

    Chorale harmonization: under a given melody the agent chooses one chord per beat
    from a vocabulary of chords in the key. By default the melody is the soprano of one
    of Bach's 4/4 chorales (`musicenv.corpus.load("bach")`), its last `n_bars` bars, so
    each episode ends on the chorale's final cadence; Bach's own chord per beat (derived
    from all four parts) is known and rewarded where matched. Users can give their own
    melody (one pitch per beat) and key.

    ## Action Space

    `Discrete(8)`, roman numerals read in the episode's key (`CHORD_VOCABULARY`):

    | Num | Major key | Minor key |
    |-----|-----------|-----------|
    | 0   | I         | i         |
    | 1   | ii        | ii°       |
    | 2   | iii       | III       |
    | 3   | IV        | iv        |
    | 4   | V         | V         |
    | 5   | vi        | VI        |
    | 6   | vii°      | #vii° (leading-tone diminished) |
    | 7   | V7        | V7        |

    `action_masks()` allows all eight.

    ## Observation Space

    A `Dict` of `Box(0, 1, float32)` entries (SB3's `MultiInputPolicy` takes it as is):

    | Key          | Shape      | Meaning                                                         |
    |--------------|------------|-----------------------------------------------------------------|
    | `melody`     | (4, 13)    | melody pitch class at the previous, current and next two beats; column 12 = rest or none |
    | `chords`     | (2, 24)    | the chords chosen at the two previous beats: root, quality (`musicenv.theory.QUALITIES`), "none" |
    | `beat`       | (4,)       | beat in the 4/4 bar                                             |
    | `key`        | (24,)      | one-hot key                                                     |
    | `beats_left` | (4,)       | beats left including this one: 1, 2, 3, 4 or more               |
    | `progress`   | (1,)       | beats done / episode length                                     |

    ## Rewards

    Default: the `"harmonization"` preset (`rewards.harmonization`): `melody_chord_tone`
    (x2), `functional_progression`, `harmonic_cadence` (x4, last beat) and
    `corpus_agreement` (Bach's chord: 1 for root and quality, 0.5 for the root).
    `info["reward_terms"]` gives each term's contribution.

    ## Starting State

    No chords; a chorale drawn uniformly from the 309 4/4 chorales (or the given
    melody). `reset(options={"key": ..., "melody": ...})`: `key` transposes the chorale
    (to a key of the same mode), `melody` picks one (`"bach"`, an index, an id such as
    `"bach/bwv347"`, or one pitch per beat with a key). `info`: `"key"`, `"melody"`.

    ## Episode End

    After the last beat of the excerpt (16 beats for a 4-bar excerpt; shorter chorales
    give shorter episodes). No truncation.

    ## Arguments

    ```python
    gym.make("Harmonization-v0", reward="harmonization", melody="bach", key=None, n_bars=4,
             tempo=80, render_mode=None)
    ```

    * `n_bars`: bars at the end of the chorale to harmonize; `None` for the whole melody.
    * `render_mode`: `"ansi"` or `"rgb_array"` (piano roll with the chord track).

    `env.unwrapped.composition` is the melody with the chosen chords as its chord track
    (`to_midi` writes melody and block chords, `to_musicxml` melody, chord symbols and chords).

    ## Vector version

    `gym.make_vec("Harmonization-v0", num_envs=N, vectorization_mode="vector_entry_point")`.

    ## Version History

    * v0: initial version.
    """

    core_class = HarmonizationComposer
    EXAMPLE_RESET_OPTIONS = {"key": "D major", "melody": "bach/bwv347"}


class HarmonizationVectorEnv(VectorComposerEnv):
    """Vectorised Harmonization-v0 (same arguments plus `num_envs`); see :class:`HarmonizationEnv`."""

    core_class = HarmonizationComposer

