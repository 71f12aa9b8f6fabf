"""Jam: a melody agent and a chords agent playing together, online, on one batched core.

:class:`Duet` holds B duets: each agent's own :class:`~musicenv.core.CompositionBatch`
(so each agent's reward spec is made and bound as in every other env), the shared
state the pair terms read (``batch.jam``, see :mod:`rewards.jam`) and both agents'
observations. The PettingZoo env (:mod:`musicenv.jam_v0`) drives a Duet of one; the
single-agent views ``JamChords-v0`` and ``JamMelody-v0`` drive it at batch size 1 or N
with the other agent played by a partner (a corpus melody, a user's MIDI file, a
rule-based or random accompanist, or a trained run).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np
from gymnasium import spaces

from musicenv.composition import Composition
from musicenv.core import C_END, C_EVENT_START, C_LAST_PITCH, C_T, CompositionBatch
from musicenv.encoding import FIRST_PITCH_TOKEN, HOLD, REST, TokenGrid
from musicenv.envs.batched import (
    BatchedComposer,
    EpisodeContext,
    SingleComposerEnv,
    VectorComposerEnv,
)
from musicenv.envs.music_composition import _resolve_keys
from musicenv.jam import (
    CHORD_HOLD,
    N_CHORD_TOKENS,
    NO_CHORD_TOKEN,
    JamError,
    RandomAccompanist,
    RuleAccompanist,
    chord_token_name,
    transpose_melody,
)
from musicenv.theory import (
    CHORD_FEATURES,
    CHORD_PC_MASK,
    CHORD_QUALITY,
    CHORD_ROOT,
    KEY_TONIC,
    N_CHORDS,
    N_KEYS,
    N_PITCH_CLASSES,
    N_QUALITIES,
    NO_CHORD,
    Key,
    Meter,
)

__all__ = ["Duet", "JamChordsEnv", "JamChordsVectorEnv", "JamMelodyEnv", "JamMelodyVectorEnv",
           "CHORD_TOKEN_FEATURES", "held_out_melodies"]

#: Width of one chord token in the observation: root (12), quality (N_QUALITIES),
#: N.C., HOLD, BEGIN (padding before the first step).
CHORD_TOKEN_FEATURES = N_PITCH_CLASSES + N_QUALITIES + 3
_NC_COL, _HOLD_COL, _BEGIN_COL = CHORD_TOKEN_FEATURES - 3, CHORD_TOKEN_FEATURES - 2, CHORD_TOKEN_FEATURES - 1


def _chord_token_table() -> np.ndarray:
    table = np.zeros((N_CHORD_TOKENS + 1, CHORD_TOKEN_FEATURES), dtype=np.float32)
    table[NO_CHORD_TOKEN, _NC_COL] = 1
    table[CHORD_HOLD, _HOLD_COL] = 1
    for code in range(N_CHORDS):
        table[FIRST_PITCH_TOKEN + code, CHORD_ROOT[code]] = 1
        table[FIRST_PITCH_TOKEN + code, N_PITCH_CLASSES + CHORD_QUALITY[code]] = 1
    table[N_CHORD_TOKENS, _BEGIN_COL] = 1
    return table


_CHORD_TOKEN_TABLE = _chord_token_table()
_CHORD_TABLE = np.zeros((NO_CHORD + 1, CHORD_FEATURES), dtype=np.float32)  # a sounding chord code
for _c in range(N_CHORDS):
    _CHORD_TABLE[_c, CHORD_ROOT[_c]] = 1
    _CHORD_TABLE[_c, N_PITCH_CLASSES + CHORD_QUALITY[_c]] = 1
_CHORD_TABLE[NO_CHORD, CHORD_FEATURES - 1] = 1


def rotate_chord_codes(codes: np.ndarray, semitones: np.ndarray) -> np.ndarray:
    """Chord codes with their roots moved down by ``semitones`` (per row; ``NO_CHORD``
    stays): absolute chords to chords relative to a tonic, and back with ``-semitones``."""
    codes = np.asarray(codes, dtype=np.int64)
    shift = np.asarray(semitones, dtype=np.int64).reshape((-1,) + (1,) * (codes.ndim - 1)) if codes.ndim else semitones
    moved = ((codes // N_QUALITIES - shift) % 12) * N_QUALITIES + codes % N_QUALITIES
    return np.where(codes < NO_CHORD, moved, codes)


def rotate_chord_tokens(tokens: np.ndarray, semitones: np.ndarray) -> np.ndarray:
    """Chord tokens with the roots of struck chords moved down by ``semitones`` (per row);
    N.C., HOLD and the before-start padding (``N_CHORD_TOKENS``) stay."""
    tokens = np.asarray(tokens, dtype=np.int64)
    chord = (tokens >= FIRST_PITCH_TOKEN) & (tokens < N_CHORD_TOKENS)
    moved = FIRST_PITCH_TOKEN + rotate_chord_codes(np.where(chord, tokens - FIRST_PITCH_TOKEN, 0), semitones)
    return np.where(chord, moved, tokens)


def _rotate_pcs(profile: np.ndarray, tonic: np.ndarray) -> np.ndarray:
    """(B, 12) pitch-class columns re-indexed relative to each row's tonic (column 0 =
    the tonic)."""
    idx = (np.arange(12)[None, :] + np.asarray(tonic)[:, None]) % 12
    return np.take_along_axis(profile, idx, axis=1)


class JamState:
    """The duet's shared (B, T) arrays; see :mod:`rewards.jam`."""

    def __init__(self, batch_size: int, n_steps: int) -> None:
        shape = (batch_size, n_steps)
        self.melody_tokens = np.zeros(shape, dtype=np.int64)
        self.chord_tokens = np.zeros(shape, dtype=np.int64)
        self.pitch = np.full(shape, -2, dtype=np.int64)
        self.chord = np.full(shape, NO_CHORD, dtype=np.int64)
        self.chord_start = np.full(shape, -1, dtype=np.int64)

    def reset(self, mask: np.ndarray) -> None:
        self.melody_tokens[mask] = 0
        self.chord_tokens[mask] = 0
        self.pitch[mask] = -2
        self.chord[mask] = NO_CHORD
        self.chord_start[mask] = -1


class Duet:
    """B duets of a melody and chords on one grid, scored by two reward specs.

    Both agents act at every step at once; :meth:`play` scores and commits a step of
    both. Observations show each agent only the past (both parts up to step t - 1).
    """

    def __init__(self, batch_size: int, *, melody_reward: Any = "jam_melody", chords_reward: Any = "jam_chords",
                 n_bars: int = 8, meter: Any = "4/4", steps_per_quarter: int = 4, min_pitch: int = 48,
                 max_pitch: int = 83, history_length: int = 8, key_relative: bool = False) -> None:
        import rewards

        if not isinstance(n_bars, (int, np.integer)) or n_bars < 1:
            raise ValueError(f"n_bars must be a positive integer, got {n_bars!r}")
        if not isinstance(history_length, (int, np.integer)) or history_length < 1:
            raise ValueError(f"history_length must be a positive integer, got {history_length!r}")
        self.grid = TokenGrid(min_pitch, max_pitch, steps_per_quarter)
        self.meter = Meter.parse(meter)
        self.steps_per_bar = self.meter.steps_per_bar(steps_per_quarter)
        self.steps_per_beat = self.meter.steps_per_beat(steps_per_quarter)
        self.n_bars, self.history_length = int(n_bars), int(history_length)
        self.n_steps = self.n_bars * self.steps_per_bar
        B, T = batch_size, self.n_steps
        self.batch_size = B
        self.melody = CompositionBatch(B, T, self.grid, self.meter)
        # the chords part: tokens 0 N.C., 1 HOLD, 2 + chord code; the "pitch" of a token is its chord code
        self.chords = CompositionBatch(B, T, self.grid, self.meter,
                                       token_pitch=np.concatenate([[-1, -1], np.arange(N_CHORDS)]))
        self.jam = JamState(B, T)
        self.melody.jam = self.chords.jam = self.jam
        self.rewards = {"melody": rewards.make(melody_reward), "chords": rewards.make(chords_reward)}
        self.rewards["melody"].bind(self.melody)
        self.rewards["chords"].bind(self.chords)
        self._rows = np.arange(B)
        V = self.grid.vocab_size
        H = self.history_length
        self.obs_shapes = {
            "melody": {
                "history": (H, V + 1),
                "chords": (H, CHORD_TOKEN_FEATURES),
                "sounding_chord": (CHORD_FEATURES,),
                "pitch_class": (12,),
                "note_duration": (1,),
                "position": (self.steps_per_bar,),
                "key": (N_KEYS,),
                "progress": (1,),
            },
            "chords": self.chords_obs_shapes(key_relative),
        }
        self.key_relative = bool(key_relative)

    def chords_obs_shapes(self, key_relative: bool) -> dict[str, tuple[int, ...]]:
        """The chords agent's observation layout, absolute or relative to the key (see
        :meth:`observe`)."""
        H, V = self.history_length, self.grid.vocab_size
        if key_relative:
            return {
                "melody": (H, 15),
                "history": (H, CHORD_TOKEN_FEATURES),
                "sounding_note": (13,),
                "beat_pitch_classes": (12,),
                "bar_pitch_classes": (12,),
                "previous_bar_pitch_classes": (12,),
                "sounding_chord": (CHORD_FEATURES,),
                "chord_tones": (12,),
                "chord_age": (1,),
                "can_change": (1,),
                "position": (self.steps_per_bar,),
                "mode": (2,),
                "progress": (1,),
            }
        return {
                "melody": (H, V + 1),
                "history": (H, CHORD_TOKEN_FEATURES),
                "sounding_note": (13,),
                "bar_pitch_classes": (12,),
                "previous_bar_pitch_classes": (12,),
                "sounding_chord": (CHORD_FEATURES,),
                "chord_age": (1,),
                "can_change": (1,),
                "position": (self.steps_per_bar,),
                "key": (N_KEYS,),
                "progress": (1,),
        }

    # -- life cycle ---------------------------------------------------------------------
    def reset(self, mask: np.ndarray, keys: np.ndarray, length: np.ndarray | None = None) -> None:
        self.melody.reset(mask, keys, np.full((int(mask.sum()), self.n_steps), NO_CHORD, dtype=np.int64), None, length)
        self.chords.reset(mask, keys, np.full((int(mask.sum()), self.n_steps), NO_CHORD, dtype=np.int64),
                          np.full((int(mask.sum()), self.n_steps), -2, dtype=np.int64), length)
        self.jam.reset(mask)
        self.rewards["melody"].reset(self.melody, mask)
        self.rewards["chords"].reset(self.chords, mask)

    @property
    def t(self) -> np.ndarray:
        return self.melody.core[:, C_T]

    def finished(self) -> np.ndarray:
        return self.melody.core[:, C_T] >= self.melody.core[:, C_END]

    def chord_masks(self) -> np.ndarray:
        """(B, N_CHORD_TOKENS) bool: at most one change of harmony per beat (then only
        HOLD), no HOLD at step 0."""
        B = self.batch_size
        t = np.minimum(self.t, self.n_steps - 1)
        masks = np.ones((B, N_CHORD_TOKENS), dtype=bool)
        masks[t == 0, CHORD_HOLD] = False
        last_change = self.jam.chord_start[self._rows, np.maximum(t - 1, 0)]
        locked = (t > 0) & (last_change >= t - t % self.steps_per_beat)
        masks[locked] = False
        masks[locked, CHORD_HOLD] = True
        return masks

    def melody_masks(self) -> np.ndarray:
        """(B, V) bool: every token, but no HOLD at step 0."""
        masks = np.ones((self.batch_size, self.grid.vocab_size), dtype=bool)
        masks[self.t == 0, HOLD] = False
        return masks

    def legal_chords(self, chord_tokens: np.ndarray) -> np.ndarray:
        """``chord_tokens`` with each change the mask forbids replaced by HOLD (and HOLD at
        step 0 by N.C.): how an unmasked policy's actions are played."""
        masks = self.chord_masks()
        ok = masks[self._rows, chord_tokens]
        out = np.where(ok, chord_tokens, CHORD_HOLD)
        return np.where(~masks[:, CHORD_HOLD] & (out == CHORD_HOLD), NO_CHORD_TOKEN, out)

    def play(self, melody_tokens: np.ndarray, chord_tokens: np.ndarray, active: np.ndarray | None = None
             ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """:meth:`score`, then :meth:`commit`: one step of both parts."""
        out = self.score(melody_tokens, chord_tokens, active)
        self.commit(melody_tokens, chord_tokens, active)
        return out

    def commit(self, melody_tokens: np.ndarray, chord_tokens: np.ndarray, active: np.ndarray | None = None) -> None:
        """Append step t of both parts where ``active`` (after :meth:`score`)."""
        if active is None:
            active = self.melody.all_active
        self.melody.commit(melody_tokens, active)
        self.chords.commit(chord_tokens, active)

    def score(self, melody_tokens: np.ndarray, chord_tokens: np.ndarray, active: np.ndarray | None = None
              ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Write step t of both parts into the shared state and score it for both agents
        where ``active`` (default all), before either is committed; chord tokens must be
        legal (see :meth:`legal_chords`). Returns {agent: (term values (B, n_terms),
        reward (B,))}."""
        if active is None:
            active = self.melody.all_active
        j, rows = self.jam, self._rows[active]
        t = self.t[active]
        m, c = melody_tokens[active], chord_tokens[active]
        prev_pitch = np.where(t > 0, j.pitch[rows, np.maximum(t - 1, 0)], -2)
        prev_chord = np.where(t > 0, j.chord[rows, np.maximum(t - 1, 0)], NO_CHORD)
        prev_start = np.where(t > 0, j.chord_start[rows, np.maximum(t - 1, 0)], 0)
        pitch = np.where(m >= FIRST_PITCH_TOKEN, self.melody.pitch_of[m], np.where(m == REST, -2, prev_pitch))
        chord = np.where(c >= FIRST_PITCH_TOKEN, c - FIRST_PITCH_TOKEN, np.where(c == NO_CHORD_TOKEN, NO_CHORD, prev_chord))
        j.melody_tokens[rows, t], j.chord_tokens[rows, t] = m, c
        j.pitch[rows, t], j.chord[rows, t] = pitch, chord
        # the harmony changes when the sounding chord does (striking it again continues it)
        j.chord_start[rows, t] = np.where((t == 0) | (chord != prev_chord), t, prev_start)
        self.melody.chords[rows, t] = chord
        self.chords.chords[rows, t] = chord
        self.chords.voice[rows, t] = pitch
        return {"melody": self.rewards["melody"].step(self.melody, melody_tokens, active),
                "chords": self.rewards["chords"].step(self.chords, chord_tokens, active)}

    # -- observations -------------------------------------------------------------------
    def _window(self, tokens: np.ndarray, begin: int) -> np.ndarray:
        H = self.history_length
        t = self.t
        idx = t[:, None] - H + np.arange(H)[None, :]
        vals = tokens[self._rows[:, None], np.maximum(idx, 0)]
        return np.where(idx >= 0, vals, begin)

    def _common(self, agent: str) -> dict[str, np.ndarray]:
        B, t = self.batch_size, self.t
        pos = np.zeros((B, self.steps_per_bar), dtype=np.float32)
        pos[self._rows, t % self.steps_per_bar] = 1
        key = np.zeros((B, N_KEYS), dtype=np.float32)
        key[self._rows, self.melody.key] = 1
        prev = np.maximum(t - 1, 0)
        chord_now = np.where(t > 0, self.jam.chord[self._rows, prev], NO_CHORD)
        return {"position": pos, "key": key, "progress": (t / self.melody.core[:, C_END]).astype(np.float32)[:, None],
                "sounding_chord": _CHORD_TABLE[chord_now]}

    def tonic(self) -> np.ndarray:
        """(B,) pitch class of each duet's key tonic."""
        return KEY_TONIC[self.melody.key].astype(np.int64)

    def chords_from_relative(self, tokens: np.ndarray) -> np.ndarray:
        """Absolute chord tokens of key-relative ones (root 0 = the key's tonic)."""
        return rotate_chord_tokens(tokens, -self.tonic())

    def observe(self, agent: str, key_relative: bool | None = None) -> dict[str, np.ndarray]:
        """Batched Dict observation of ``agent`` ("melody" or "chords"): fresh arrays.

        With ``key_relative`` (default: the Duet's), the chords agent sees everything
        transposed to the key's tonic: pitch classes and chord roots count semitones
        above the tonic, the key is reduced to its mode, and the melody's past is its
        sounding pitch classes (no octave) with note onsets. A policy trained so plays
        in every key alike; its actions are key-relative too (:meth:`chords_from_relative`).
        """
        V = self.grid.vocab_size
        B, t = self.batch_size, self.t
        obs = self._common(agent)
        mel_hist = np.eye(V + 1, dtype=np.float32)[self._window(self.jam.melody_tokens, V)]
        chord_hist = _CHORD_TOKEN_TABLE[self._window(self.jam.chord_tokens, N_CHORD_TOKENS)]
        if agent == "melody":
            obs["history"], obs["chords"] = mel_hist, chord_hist
            pc = np.zeros((B, 12), dtype=np.float32)
            lp = self.melody.core[:, C_LAST_PITCH]
            pc[self._rows[lp >= 0], lp[lp >= 0] % 12] = 1
            obs["pitch_class"] = pc
            dur = np.where(t > 0, (t - self.melody.core[:, C_EVENT_START]) / (2.0 * self.steps_per_bar), 0.0)
            obs["note_duration"] = np.minimum(dur, 1.0).astype(np.float32)[:, None]
        elif agent == "chords":
            obs["melody"], obs["history"] = mel_hist, chord_hist
            prev = np.maximum(t - 1, 0)
            p = np.where(t > 0, self.jam.pitch[self._rows, prev], -2)
            note = np.zeros((B, 13), dtype=np.float32)
            note[self._rows, np.where(p >= 0, p % 12, 12)] = 1
            obs["sounding_note"] = note
            bar0 = t - t % self.steps_per_bar
            obs["bar_pitch_classes"] = self._profile(bar0, t)
            obs["previous_bar_pitch_classes"] = self._profile(bar0 - self.steps_per_bar, bar0)
            start = np.where(t > 0, self.jam.chord_start[self._rows, prev], t)
            obs["chord_age"] = np.minimum((t - start) / (2.0 * self.steps_per_bar), 1.0).astype(np.float32)[:, None]
            obs["can_change"] = self.chord_masks()[:, FIRST_PITCH_TOKEN:].any(axis=1).astype(np.float32)[:, None]
        else:
            raise JamError(f"unknown agent {agent!r}; accepted: 'melody', 'chords'")
        if agent == "chords" and (self.key_relative if key_relative is None else key_relative):
            return self._relative_chords_obs(obs)
        return {k: np.ascontiguousarray(obs[k], dtype=np.float32) for k in self.obs_shapes[agent]}

    def _relative_chords_obs(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        B, t, H = self.batch_size, self.t, self.history_length
        tonic = self.tonic()
        idx = t[:, None] - H + np.arange(H)[None, :]
        before = idx < 0
        pitch = np.where(before, -2, self.jam.pitch[self._rows[:, None], np.maximum(idx, 0)])
        onset = ~before & (self.jam.melody_tokens[self._rows[:, None], np.maximum(idx, 0)] >= FIRST_PITCH_TOKEN)
        mel = np.zeros((B, H, 15), dtype=np.float32)
        col = np.where(pitch >= 0, (pitch - tonic[:, None]) % 12, 12)
        mel[self._rows[:, None], np.arange(H)[None, :], col] = 1
        mel[..., 12] *= ~before
        mel[..., 13] = onset
        mel[..., 14] = before
        obs["melody"] = mel
        obs["history"] = _CHORD_TOKEN_TABLE[rotate_chord_tokens(self._window(self.jam.chord_tokens, N_CHORD_TOKENS),
                                                                tonic)]
        note = obs["sounding_note"]
        obs["sounding_note"] = np.concatenate([_rotate_pcs(note[:, :12], tonic), note[:, 12:]], axis=1)
        beat0 = t - t % self.steps_per_beat
        obs["beat_pitch_classes"] = _rotate_pcs(self._profile(beat0, t), tonic)
        obs["bar_pitch_classes"] = _rotate_pcs(obs["bar_pitch_classes"], tonic)
        obs["previous_bar_pitch_classes"] = _rotate_pcs(obs["previous_bar_pitch_classes"], tonic)
        chord_now = np.where(t > 0, self.jam.chord[self._rows, np.maximum(t - 1, 0)], NO_CHORD)
        rel = rotate_chord_codes(chord_now, tonic)
        obs["sounding_chord"] = _CHORD_TABLE[rel]
        tones = np.zeros((B, 12), dtype=np.float32)
        tones[chord_now < NO_CHORD] = CHORD_PC_MASK[rel[chord_now < NO_CHORD]]
        obs["chord_tones"] = tones
        mode = np.zeros((B, 2), dtype=np.float32)
        mode[self._rows, (self.melody.key >= 12).astype(np.int64)] = 1
        obs["mode"] = mode
        return {k: np.ascontiguousarray(obs[k], dtype=np.float32) for k in self.chords_obs_shapes(True)}

    def _profile(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Share of the steps lo..hi-1 (clipped at 0) on which each pitch class sounded."""
        B, T = self.batch_size, self.n_steps
        s = np.arange(T)[None, :]
        inside = (s >= np.maximum(lo, 0)[:, None]) & (s < hi[:, None])
        p = self.jam.pitch
        w = inside & (p >= 0)
        out = np.zeros((B, 12), dtype=np.float32)
        for pc in range(12):
            out[:, pc] = (w & (p % 12 == pc)).sum(axis=1)
        tot = out.sum(axis=1, keepdims=True)
        return np.where(tot > 0, out / np.maximum(tot, 1), 0).astype(np.float32)

    def observation_space(self, agent: str) -> spaces.Dict:
        return spaces.Dict({k: spaces.Box(0.0, 1.0, shape, dtype=np.float32)
                            for k, shape in self.obs_shapes[agent].items()})

    # -- views --------------------------------------------------------------------------
    def composition(self, index: int, tempo: float = 100.0, title: str = "") -> Composition:
        """Both parts so far: the melody, with the chords as its chord track (the
        chords after step t are N.C.)."""
        t = int(self.t[index])
        key = Key.from_index(int(self.melody.key[index]))
        track = np.full(self.n_steps, NO_CHORD, dtype=np.int64)
        track[:t] = self.jam.chord[index, :t]
        return Composition(self.jam.melody_tokens[index, :t].copy(), key, self.meter, track, self.grid, tempo,
                           title=title or f"musicenv jam: {key.name}, {self.meter}")

    def chord_symbols(self, index: int) -> list[str]:
        """The chord tokens played so far by composition ``index``, as symbols ('-' HOLD)."""
        return [chord_token_name(int(x)) for x in self.jam.chord_tokens[index, :int(self.t[index])]]


# ------------------------------------------------------------------------------ partners
_HELD_OUT: dict[tuple, list] = {}


def held_out_melodies(source: Any, grid: TokenGrid, meter: Meter, min_steps: int, split: str = "test") -> list:
    """Melodies of one part (``split``: "train", "valid" or "test") of a corpus's split
    (``corpus.split(seed=0)``) in ``meter`` and at least ``min_steps`` long; ``source``:
    "bach", "essen", "oneills", a list of them, or a MIDI/MusicXML/ABC file or folder
    (all its melodies: a user's file is not split)."""
    if split not in ("train", "valid", "test"):
        raise JamError(f"unknown split {split!r}; accepted: 'train', 'valid', 'test'")
    from musicenv.corpus import load

    names = ("bach", "essen", "oneills")
    items = source if isinstance(source, (list, tuple)) else [source]
    key = (tuple(os.fspath(i) for i in items), grid, str(meter), min_steps, split)
    if key not in _HELD_OUT:
        pool = []
        for item in items:
            if isinstance(item, str) and item in names:
                melodies = list(getattr(load(item, grid, progress=False).split(seed=0), split))
            else:
                if not os.path.exists(os.fspath(item)):
                    raise JamError(f"unknown melody partner {item!r}; accepted: 'bach', 'essen', 'oneills', a list "
                                   "of them, a MIDI/MusicXML/ABC file or folder, 'rule'/'random' (JamMelody-v0), "
                                   "or a run directory")
                melodies = list(load(os.fspath(item), grid, progress=False, cache=False))
            pool += [m for m in melodies if m.meter == str(meter) and m.n_steps >= min_steps]
        if not pool:
            raise JamError(f"no melody of {source!r} is in {meter} and at least {min_steps} steps long "
                           f"({min_steps // meter.steps_per_bar(grid.steps_per_quarter)} bars); pass fewer n_bars "
                           "or another meter")
        _HELD_OUT[key] = pool
    return _HELD_OUT[key]


def _is_run_dir(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike)) and os.path.isdir(x) and os.path.isfile(os.path.join(x, "config.yml"))


#: Entry point of the loader of a ``musicenv train`` run directory (training: torch and
#: SB3), imported the first time a run plays a partner; envs never import training code.
RUN_LOADER = "agents.train.restore:load_run"


class _RunPolicy:
    """A trained run (``musicenv train`` directory) acting greedily on the other
    agent's observation; loaded lazily (needs torch) and not pickled."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._model = None

    def _load(self):
        if self._model is None:
            module, _, name = RUN_LOADER.partition(":")
            self._model, _ = getattr(importlib.import_module(module), name)(self.path)
        return self._model

    def key_relative(self) -> bool:
        """Whether the run is a chords agent trained on key-relative observations."""
        return "mode" in getattr(self._load().observation_space, "spaces", {})

    def predict(self, obs: dict[str, np.ndarray], masks: np.ndarray | None) -> np.ndarray:
        self._load()
        kwargs = {"action_masks": masks} if masks is not None and "Maskable" in type(self._model).__name__ else {}
        actions, _ = self._model.predict(obs, deterministic=True, **kwargs)
        return np.asarray(actions, dtype=np.int64).reshape(-1)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_model": None}


# ------------------------------------------------------------------------------ single-agent cores
class _JamView(BatchedComposer):
    """One agent of a :class:`Duet` as a task on the env core's hooks; the other agent is
    played by a partner. The driver's batch and reward are this agent's; the hooks
    reset, score and commit the whole duet (both parts, both rewards)."""

    agent = ""

    def __init__(self, batch_size: int, *, reward: Any = None, partner_reward: Any = None, key: Any = "random",
                 n_bars: int = 8, meter: Any = "4/4", steps_per_quarter: int = 4, min_pitch: int = 48,
                 max_pitch: int = 83, history_length: int = 8, tempo: float = 100.0, key_relative: bool = True
                 ) -> None:
        if not isinstance(key_relative, (bool, np.bool_)):
            raise JamError(f"key_relative must be True or False, got {key_relative!r}")
        own = reward if reward is not None else f"jam_{self.agent}"
        other = "melody" if self.agent == "chords" else "chords"
        rw = {f"{self.agent}_reward": own, f"{other}_reward": partner_reward or f"jam_{other}"}
        self.duet = Duet(batch_size, n_bars=n_bars, meter=meter, steps_per_quarter=steps_per_quarter,
                         min_pitch=min_pitch, max_pitch=max_pitch, history_length=history_length,
                         key_relative=bool(key_relative) and self.agent == "chords", **rw)
        d = self.duet
        self.steps_per_bar, self.n_bars = d.steps_per_bar, d.n_bars
        self.keys = np.array(_resolve_keys(key), dtype=np.int64)
        self.info: list[dict[str, Any]] = [{} for _ in range(batch_size)]
        self._partner = np.zeros(batch_size, dtype=np.int64)  # the partner's token at this step
        batch = d.melody if self.agent == "melody" else d.chords
        super().__init__(batch, reward=d.rewards[self.agent], tempo=tempo,
                         n_actions=N_CHORD_TOKENS if self.agent == "chords" else d.grid.vocab_size)
        self.grid = d.grid  # the melody's grid (the chords batch shares it)

    # -- hooks ----------------------------------------------------------------------------
    def observation_layout(self) -> dict[str, tuple[int, ...]]:
        return self.duet.obs_shapes[self.agent]

    def observe(self, out: np.ndarray) -> None:
        obs = self.duet.observe(self.agent)
        o = 0
        for k in self.obs_shapes:
            block = obs[k].reshape(self.duet.batch_size, -1)
            out[:, o:o + block.shape[1]] = block
            o += block.shape[1]

    def _reset_duet(self, index: np.ndarray, keys: np.ndarray) -> EpisodeContext:
        mask = np.zeros(self.duet.batch_size, dtype=bool)
        mask[index] = True
        self.duet.reset(mask, keys)
        b = self.batch
        return EpisodeContext(keys, chords=b.chords[index].copy(), voice=b.voice[index].copy())

    def score(self, tokens: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mel, chd = (tokens, self._partner) if self.agent == "melody" else (self._partner, tokens)
        self._step = (mel, chd)
        return self.duet.score(mel, chd, active)[self.agent]

    def commit_observe(self, tokens: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        self.duet.commit(*self._step, active)
        self.observe(out)

    def reset_info(self, index: int) -> dict[str, Any]:
        return dict(self.info[index])

    def action_masks(self) -> np.ndarray:
        return self.duet.chord_masks() if self.agent == "chords" else self.duet.melody_masks()

    def describe_actions(self) -> str:
        return ("chord tokens: 0 N.C., 1 HOLD, 2 + root * 11 + quality" if self.agent == "chords"
                else "melody tokens: 0 REST, 1 HOLD, 2.. NOTE_ON")

    def composition(self, index: int) -> Composition:
        return self.duet.composition(index, self.tempo)


class _PriorMelody:
    """The melody partner ``"prior"``: the default conditioned note-RNN prior
    (:func:`agents.models.note_rnn.load_prior`) samples a whole melody at reset, given what the
    env knows before the chords are played: the episode's key, the meter and the
    position in the bar (the chords are the agent's, online, so the prior gets them as
    "not given"). Temperature ``temperature``; seeded from the episode's generator, so
    deterministic under ``reset(seed=...)``. Loaded lazily (needs torch), not pickled."""

    def __init__(self, grid: TokenGrid, meter: Meter, n_steps: int, temperature: float = 1.0) -> None:
        if not (isinstance(temperature, (int, float)) and 0 <= temperature < float("inf")):
            raise JamError(f"prior_temperature must be a finite number >= 0, got {temperature!r}")
        self.grid, self.meter, self.n_steps, self.temperature = grid, meter, int(n_steps), float(temperature)
        self._model = None

    def _load(self):
        if self._model is None:
            from agents.models.note_rnn import load_prior

            model = load_prior("default")
            if model.grid != self.grid:
                raise JamError(f"partner='prior': the default prior plays on {model.grid}, this env on {self.grid}; "
                               "use the default min_pitch/max_pitch/steps_per_quarter")
            self._model = model
        return self._model

    def sample(self, key: int, rng: np.random.Generator) -> np.ndarray:
        model = self._load()
        T, bar = self.n_steps, self.meter.steps_per_bar(self.grid.steps_per_quarter)
        cond = {"key": np.array(key), "meter": np.array(Meter.SUPPORTED.index(str(self.meter))),
                "position": np.arange(T) % bar, "chord": np.full(T, -1), "next_chord": np.full(T, -1),
                "style": np.array(-1)}
        cond = {k: v for k, v in cond.items() if k in model.config.conditioning}
        toks = model.sample(1, T, self.temperature, seed=int(rng.integers(2**62)), cond=cond or None)[0]
        if toks[0] == HOLD:
            toks[0] = REST
        return toks.astype(np.int64)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}


class JamChordsComposer(_JamView):
    """The chords agent over a melody partner: corpus melodies (held-out test split), a
    user's MIDI/MusicXML/ABC file, the default prior, or a trained melody run."""

    agent = "chords"
    RESET_OPTIONS = ("melody", "key", "transpose", "transpose_bar", "start_bar")

    def __init__(self, batch_size: int, *, partner: Any = "bach", split: str = "test", prior_temperature: float = 1.0,
                 push_prob: float = 0.0, **kwargs: Any) -> None:
        super().__init__(batch_size, **kwargs)
        if not (isinstance(push_prob, (int, float)) and 0 <= push_prob <= 1):
            raise JamError(f"push_prob must be a probability in [0, 1], got {push_prob!r}")
        self.push_prob = float(push_prob)
        d = self.duet
        self.partner_spec = partner
        self.partner_run = _RunPolicy(partner) if _is_run_dir(partner) else None
        self.partner_prior = _PriorMelody(d.grid, d.meter, d.n_steps, prior_temperature) if partner == "prior" else None
        self.pool = [] if self.partner_run or self.partner_prior else held_out_melodies(partner, d.grid, d.meter,
                                                                                        d.n_steps, split)
        self.given = np.zeros((batch_size, d.n_steps), dtype=np.int64)  # the partner's melody per composition

    def draw_context(self, index: np.ndarray, rng: np.random.Generator, options: dict) -> EpisodeContext:
        keys = np.zeros(len(index), dtype=np.int64)
        for j, b in enumerate(index):
            if self.partner_run is not None:
                k = int(self.keys[rng.integers(len(self.keys))]) if options.get("key") is None \
                    else _parse_key(options["key"])
                keys[j] = k
                self.info[b] = {"key": Key.from_index(k).name, "melody": "run"}
                continue
            if self.partner_prior is not None:
                keys[j], self.given[b], self.info[b] = self._prior_melody(rng, options)
                continue
            keys[j], self.given[b], self.info[b] = self._melody(rng, options)
        return self._reset_duet(index, keys)

    def _prior_melody(self, rng: np.random.Generator, opts: dict) -> tuple[int, np.ndarray, dict]:
        for name in ("melody", "start_bar"):
            if opts.get(name) is not None:
                raise JamError(f"reset option {name!r} picks a corpus melody; partner='prior' samples one (accepted "
                               "options: key, transpose, transpose_bar)")
        key = int(self.keys[rng.integers(len(self.keys))]) if opts.get("key") is None else _parse_key(opts["key"])
        toks = self.partner_prior.sample(key, rng)
        return key, self._pushed(toks, opts, rng), {"key": Key.from_index(key).name, "melody": "prior"}

    def _pushed(self, toks: np.ndarray, opts: dict, rng: np.random.Generator | None = None) -> np.ndarray:
        """The melody with the push test's transposition (``transpose`` from ``transpose_bar``);
        without one, with probability ``push_prob`` a random push (1..11 semitones from a
        random bar after the first: training augmentation that makes listening pay)."""
        if not opts.get("transpose") and self.push_prob > 0 and rng is not None and rng.random() < self.push_prob:
            opts = {**opts, "transpose": int(rng.integers(1, 12)),
                    "transpose_bar": int(rng.integers(1, max(self.duet.n_bars, 2)))}
        if opts.get("transpose"):
            at = int(opts.get("transpose_bar", 4)) * self.duet.steps_per_bar
            toks = transpose_melody(toks, self.duet.grid, int(opts["transpose"]), at)
        return toks

    def _melody(self, rng: np.random.Generator, opts: dict) -> tuple[int, np.ndarray, dict]:
        d = self.duet
        which = opts.get("melody")
        if which is None:
            m = self.pool[int(rng.integers(len(self.pool)))]
        elif isinstance(which, (int, np.integer)):
            if not 0 <= int(which) < len(self.pool):
                raise JamError(f"melody index {which} out of range; accepted: 0..{len(self.pool) - 1}")
            m = self.pool[int(which)]
        else:
            found = [x for x in self.pool if x.id == which]
            if not found:
                raise JamError(f"unknown melody {which!r}; accepted: an index 0..{len(self.pool) - 1} or an id such "
                               f"as {self.pool[0].id!r}")
            m = found[0]
        start_bar = int(opts.get("start_bar") or 0)
        bars = m.n_steps // d.steps_per_bar
        if not 0 <= start_bar <= bars - d.n_bars:
            raise JamError(f"start_bar {start_bar} out of range for {m.id} ({bars} bars, {d.n_bars} played); "
                           f"accepted: 0..{bars - d.n_bars}")
        s0 = start_bar * d.steps_per_bar
        toks = np.array(m.tokens[s0:s0 + d.n_steps], dtype=np.int64)
        if toks[0] == HOLD:  # a cold start inside a note: the partner strikes it anew
            toks[0] = next((int(x) for x in m.tokens[s0::-1] if x != HOLD), REST)
        key = m.key
        if opts.get("key") is not None:
            k = _parse_key(opts["key"])
            if (k >= 12) != (m.key >= 12):
                raise JamError(f"{m.id} is in {Key.from_index(m.key).name}; it can be transposed to a "
                               f"{'minor' if m.key >= 12 else 'major'} key only")
            shift = ((k % 12 - m.key % 12) + 6) % 12 - 6
            toks, key = transpose_melody(toks, d.grid, shift), k
        return key, self._pushed(toks, opts, rng), {"key": Key.from_index(key).name, "melody": m.id}

    def action_tokens(self, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        d = self.duet
        if self.partner_run is not None:
            self._partner = self.partner_run.predict(d.observe("melody"), d.melody_masks())
        else:
            self._partner = self.given[d._rows, np.minimum(d.t, d.n_steps - 1)]
        return d.legal_chords(d.chords_from_relative(actions) if d.key_relative else actions)


class JamMelodyComposer(_JamView):
    """The melody agent over an online chord partner: ``"rule"`` (:class:`RuleAccompanist`),
    ``"random"`` (:class:`RandomAccompanist`) or a trained chords run."""

    agent = "melody"
    RESET_OPTIONS = ("key",)

    def __init__(self, batch_size: int, *, partner: Any = "rule", **kwargs: Any) -> None:
        super().__init__(batch_size, **kwargs)
        d = self.duet
        self.partner_spec = partner
        self.partner_run = None
        if partner == "rule":
            self.accompanist = RuleAccompanist(d.grid, d.steps_per_beat, d.steps_per_bar)
        elif partner == "random":
            self.accompanist = RandomAccompanist(d.steps_per_beat)
        elif _is_run_dir(partner):
            self.accompanist, self.partner_run = None, _RunPolicy(partner)
        else:
            raise JamError(f"unknown chord partner {partner!r}; accepted: 'rule', 'random' or a run directory of a "
                           "JamChords-v0 agent")

    def draw_context(self, index: np.ndarray, rng: np.random.Generator, options: dict) -> EpisodeContext:
        keys = self.keys[rng.integers(0, len(self.keys), size=len(index))]
        if options.get("key") is not None:
            keys[:] = _parse_key(options["key"])
        for j, b in enumerate(index):
            self.info[b] = {"key": Key.from_index(int(keys[j])).name}
        if isinstance(self.accompanist, RandomAccompanist):
            self.accompanist.rng = np.random.default_rng(rng.integers(2**63))
        return self._reset_duet(index, keys)

    def action_tokens(self, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        d = self.duet
        if self.partner_run is not None:
            rel = self.partner_run.key_relative()
            chords = self.partner_run.predict(d.observe("chords", key_relative=rel), d.chord_masks())
            if rel:
                chords = d.chords_from_relative(chords)
        else:
            chords = np.zeros(d.batch_size, dtype=np.int64)
            for b in range(d.batch_size):
                t = min(int(d.t[b]), d.n_steps - 1)
                chords[b] = self.accompanist.act(d.jam.melody_tokens[b, :t], d.jam.chord_tokens[b, :t],
                                                 int(d.melody.key[b]))
        self._partner = d.legal_chords(chords)
        return actions


def _parse_key(key: Any) -> int:
    from musicenv.theory import parse_key

    return parse_key(key)


_COMMON_ARGS = """
    * `n_bars` (default 8), `meter` ("4/4", "3/4", "2/4", "6/8"), `steps_per_quarter` (4),
      `min_pitch`/`max_pitch` (48..83), `history_length` (8 steps of each part), `tempo`.
    * `reward`: this agent's reward spec (as `rewards.make`); `partner_reward`: the other's
      (computed, reported nowhere here, but it keeps the duet identical to `jam_v0`).
"""


class JamChordsEnv(SingleComposerEnv):
    """
    ## Description

    Online accompaniment (ReaLchords' task): the agent plays chords *at the same time*
    as a melody, one grid step (16th note) at a time, hearing only the melody's past.
    The melody comes from the `partner`: by default held-out Bach chorale melodies
    (the test split of `musicenv.corpus.load("bach").split(seed=0)`, 4/4, at least
    `n_bars` long, in their own keys; train agents with `split="train"` and evaluate
    them on the default `split="test"`); also `"essen"`, `"oneills"` (parsed once and
    cached), a list of these, a user's MIDI/MusicXML/ABC file or folder, `"prior"`
    (the default conditioned note-RNN prior samples a melody in the episode's key,
    meter and bar positions, at `prior_temperature`, seeded by the episode), or the run
    directory of a trained `JamMelody-v0` agent. The chords agent of `musicenv.jam_v0`
    seen as one Gymnasium env.

    ## Action Space

    `Discrete(134)`: 0 N.C. (stop the chord), 1 HOLD (let it ring), 2 + code for the
    132 chords of `musicenv.theory` (code = root * 11 + quality, qualities
    `QUALITIES`). With `key_relative=True` (default) the root counts semitones above
    the key's tonic (so 2 + 7 * 11 is the dominant triad V in every key); with
    `key_relative=False` it is the absolute pitch class. At most one change per beat:
    `action_masks()` allows only HOLD once the chord changed in the current beat, and
    no HOLD at the first step. An action the mask forbids is played as HOLD (N.C. at
    step 0), so unmasked PPO works too.

    ## Observation Space

    `Dict` of `Box(0, 1, float32)`. With `key_relative=True` (default) every pitch
    class and chord root is counted from the key's tonic, so one policy serves all
    24 keys:

    | Key | Shape | Meaning |
    |-----|-------|---------|
    | `melody` | (H, 15) | the melody's last H steps: sounding pitch class (12), rest, note onset, before the start |
    | `history` | (H, 26) | own last H chord tokens: root, quality, N.C., HOLD, before-start |
    | `sounding_note` | (13,) | pitch class the melody sounded at the previous step (12: rest) |
    | `beat_pitch_classes` | (12,) | share of this beat's steps so far on which each pitch class sounded |
    | `bar_pitch_classes` | (12,) | the same for this bar so far |
    | `previous_bar_pitch_classes` | (12,) | the same for the previous bar |
    | `sounding_chord` | (24,) | the chord sounding now: root, quality, N.C. |
    | `chord_tones` | (12,) | its pitch classes |
    | `chord_age` | (1,) | steps since it was struck / two bars (clipped at 1) |
    | `can_change` | (1,) | 1 when a chord may be struck at this step |
    | `position` | (steps per bar,) | step in the bar |
    | `mode` | (2,) | major, minor |
    | `progress` | (1,) | steps done / episode length |

    With `key_relative=False` (the view of `jam_v0`'s chords agent): `melody` is
    (H, 39), the melody's tokens one-hot (column 38 = before the start), pitch classes
    and roots are absolute, `key` (24,) replaces `mode`, and `beat_pitch_classes`
    and `chord_tones` are absent.

    ## Rewards

    Default `"jam_chords"` (`rewards.jam`): `jam_note_in_chord` (+1 / -1 per sounding
    16th: what the note-in-chord metric counts), `jam_chord_lengths` (x2: -N x KL of
    the episode's chord lengths to Bach's), `jam_harmonic_rhythm` (frantic and frozen
    harmony), `jam_cadence_together` (x4), `jam_onset_alignment` (x0.1, penalty only:
    a change off the melody's onsets), `jam_diatonic_chord` (x0.5, penalty only: a
    key-foreign chord), `jam_chord_vocabulary` (x0.5: log share of the chord in Bach's
    chorales of the mode) and `jam_functional_progression` (x0.25).
    `info["reward_terms"]` has each term's contribution.

    ## Starting State

    No chord; a melody drawn uniformly from the partner's pool. `reset(options=...)`:
    `melody` (index or id), `key` (transpose the melody to a key of its mode),
    `transpose` (semitones) with `transpose_bar` (default 4, i.e. from bar 5: the
    push test), `start_bar` (begin the melody mid-piece: the cold start). `info`:
    `"key"`, `"melody"`.

    ## Episode End

    After `n_bars` bars (default 8: 128 steps in 4/4). No truncation.

    ## Arguments

    ```python
    gym.make("JamChords-v0", partner="bach", split="test", reward="jam_chords", key_relative=True,
             prior_temperature=1.0, n_bars=8, meter="4/4")
    ```
    """ + _COMMON_ARGS + """
    * `push_prob` (default 0): training augmentation, the probability that an episode's
      melody is pushed (moved 1..11 semitones from a random bar after the first) when
      `reset` asks for no push; the reward keeps the episode's key.
    * `key`: the keys `partner="prior"` (or a run) plays in (default any of 24); corpus
      melodies keep their own keys (`reset(options={"key": ...})` transposes one).

    ## Version History

    * v0: initial version. Since session 2 (same id, a deliberate change): the
      key-relative view is the default and `jam_chords` pays the data's chord-length
      distribution and chord vocabulary; `partner="prior"`.
    """

    core_class = JamChordsComposer
    EXAMPLE_RESET_OPTIONS = {"melody": 0}


class JamChordsVectorEnv(VectorComposerEnv):
    """Vectorised JamChords-v0 (same arguments plus `num_envs`); see :class:`JamChordsEnv`."""

    core_class = JamChordsComposer


class JamMelodyEnv(SingleComposerEnv):
    """
    ## Description

    The melody half of a jam: the agent writes a melody one grid step at a time
    while an online chord `partner` accompanies it, hearing only the melody's past:
    `"rule"` (default; `musicenv.jam.RuleAccompanist`: on each beat the chord that
    best fits the melody heard so far in the bar), `"random"`, or the run directory of
    a trained `JamChords-v0` agent. The melody agent of `musicenv.jam_v0` seen as one
    Gymnasium env.

    ## Action Space

    `Discrete(38)`: the melody vocabulary of `MusicComposition-v0` (0 REST, 1 HOLD,
    2.. NOTE_ON 48..83). `action_masks()`: no HOLD at the first step.

    ## Observation Space

    `Dict` of `Box(0, 1, float32)`: `history` (H, 39) own last H tokens, `chords`
    (H, 26) the partner's last H chord tokens, `sounding_chord` (24,), `pitch_class`
    (12,) of the last note, `note_duration` (1,), `position`, `key` (24,), `progress`.

    ## Rewards

    Default `"jam_melody"`: the melody's `theory` preset (against the chords actually
    played) plus the pair terms `jam_note_in_chord` (x2), `jam_onset_alignment` (x0.5),
    `jam_cadence_together` (x4).

    ## Starting State

    A key drawn from `key` (default any of 24); `reset(options={"key": ...})`.

    ## Episode End

    After `n_bars` bars. No truncation.

    ## Arguments

    ```python
    gym.make("JamMelody-v0", partner="rule", reward="jam_melody", key="random", n_bars=8)
    ```
    """ + _COMMON_ARGS + """
    ## Version History

    * v0: initial version.
    """

    core_class = JamMelodyComposer
    EXAMPLE_RESET_OPTIONS = {"key": "G major"}


class JamMelodyVectorEnv(VectorComposerEnv):
    """Vectorised JamMelody-v0 (same arguments plus `num_envs`); see :class:`JamMelodyEnv`."""

    core_class = JamMelodyComposer
