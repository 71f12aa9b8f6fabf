"""Counterpoint-v0: write a line above or below a cantus firmus, species by species."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from musicenv.composition import Composition
from musicenv.core import (
    C_END,
    C_LAST_PITCH,
    C_T,
    LEVEL_DOWNBEAT,
    LEVEL_OFFBEAT,
    CompositionBatch,
    commit_kernel,
)
from musicenv.encoding import FIRST_PITCH_TOKEN, HOLD, TokenGrid
from musicenv.envs.batched import (
    BatchedComposer,
    EpisodeContext,
    SingleComposerEnv,
    VectorComposerEnv,
    write_steps_left,
)
from musicenv.theory import (
    N_PITCH_CLASSES,
    PITCH_CLASS_NAMES,
    Key,
    Meter,
    MusicTheoryError,
    parse_pitch_class,
)

__all__ = ["CounterpointEnv", "CounterpointVectorEnv", "CounterpointComposer", "CounterpointComposition",
           "FUX_CANTUS", "MODES", "random_cantus", "counterpoint_report", "format_report", "parse_pitches"]

# ------------------------------------------------------------------------------ modes and cantus
#: The six modes Fux teaches, in the order of the ``mode`` observation.
MODES = ("ionian", "dorian", "phrygian", "lydian", "mixolydian", "aeolian")
N_MODES = len(MODES)
#: Pitch classes of each mode above its final.
MODE_SCALES = {
    "ionian": (0, 2, 4, 5, 7, 9, 11), "dorian": (0, 2, 3, 5, 7, 9, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11), "mixolydian": (0, 2, 4, 5, 7, 9, 10), "aeolian": (0, 2, 3, 5, 7, 8, 10),
}
#: Musica ficta allowed by the "diatonic" constraint: the raised leading tone (Dorian,
#: Mixolydian, Aeolian) and Lydian's flattened fourth (B-flat in F), which avoids the tritone.
MODE_FICTA = {"ionian": (), "dorian": (11,), "phrygian": (), "lydian": (5,), "mixolydian": (11,), "aeolian": (11,)}
_MINOR_MODES = ("dorian", "phrygian", "aeolian")  # minor third above the final
_MAJOR_MODES = ("ionian", "lydian", "mixolydian")

#: Fux's cantus firmi, one per mode, from *Gradus ad Parnassum* (1725), book 1, as given
#: in A. Mann's translation *The Study of Counterpoint* (figures 5, 11-15 and the
#: corresponding examples), written at Fux's pitch in the alto/tenor register.
FUX_CANTUS: dict[str, tuple[str, str]] = {
    "fux_dorian": ("dorian", "D4 F4 E4 D4 G4 F4 A4 G4 F4 E4 D4"),
    "fux_phrygian": ("phrygian", "E4 C4 D4 C4 A3 A4 G4 E4 F4 E4"),
    "fux_lydian": ("lydian", "F4 G4 A4 F4 D4 E4 F4 C5 A4 F4 G4 F4"),
    "fux_mixolydian": ("mixolydian", "G4 C5 B4 G4 C5 E5 D5 G5 E5 C5 D5 B4 A4 G4"),
    "fux_aeolian": ("aeolian", "A3 C4 B3 D4 C4 E4 F4 E4 D4 C4 B3 A3"),
    "fux_ionian": ("ionian", "C4 E4 F4 G4 E4 A4 G4 E4 F4 E4 D4 C4"),
}
MIN_CANTUS, MAX_CANTUS = 3, 16  # notes in a cantus firmus, inclusive
SPECIES = (1, 2)
#: Pitch window of the ``cantus`` observation, MIDI, inclusive.
CANTUS_LOW, CANTUS_HIGH = 36, 95
_CANTUS_W = CANTUS_HIGH - CANTUS_LOW + 2  # + "none" column
_LOOKAHEAD = np.array([-1, 0, 1, 2])  # cantus steps shown, relative to the step being decided
_DEFAULT_RANGE = {"above": (55, 86), "below": (36, 67)}
_NOTE_RE = re.compile(r"^([A-Ga-g][#b]*)(-?\d+)$")

INTERVAL_NAMES = ("P1/P8", "m2", "M2", "m3", "M3", "P4", "TT", "P5", "m6", "M6", "m7", "M7")


def parse_pitches(cantus: str | Sequence[int | str]) -> list[int]:
    """MIDI pitches from ``"D4 F4 E4"`` or a list of ints/names (C4 = 60)."""
    items = cantus.split() if isinstance(cantus, str) else list(cantus)
    out = []
    for x in items:
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            p = int(x)
        else:
            m = _NOTE_RE.match(str(x).strip())
            if not m:
                raise MusicTheoryError(f"cannot read note {x!r}; accepted: MIDI numbers or names like 'D4', 'Bb3', 'F#5'")
            p = parse_pitch_class(m.group(1)) + 12 * (int(m.group(2)) + 1)
            p += 12 * (m.group(1)[0].upper() == "C" and "b" in m.group(1)[1:])  # Cb4 is B3
            p -= 12 * (m.group(1)[0].upper() == "B" and "#" in m.group(1)[1:])  # B#3 is C4
        if not 0 <= p <= 127:
            raise MusicTheoryError(f"pitch {x!r} outside MIDI 0..127")
        out.append(p)
    return out


def _parse_mode_key(key: Any) -> tuple[int | None, tuple[str, ...]]:
    """(final pitch class or None, allowed modes) from 'random', 'D dorian', 'D minor', 'G major', 'D'."""
    if key is None or (isinstance(key, str) and key.strip().lower() in ("random", "all")):
        return None, MODES
    text = str(key).strip()
    parts = text.split()
    try:
        final = parse_pitch_class(parts[0])
    except MusicTheoryError:
        raise MusicTheoryError(f"unknown key {key!r}; accepted: 'random' or '<final> <mode>' such as 'D dorian', "
                               f"'E phrygian', 'D minor', 'G major' (modes: {', '.join(MODES)})") from None
    mode = " ".join(parts[1:]).lower()
    if mode == "":
        return final, MODES
    if mode in MODES:
        return final, (mode,)
    if mode in ("minor", "min", "m"):
        return final, _MINOR_MODES
    if mode in ("major", "maj"):
        return final, _MAJOR_MODES
    raise MusicTheoryError(f"unknown mode {mode!r} in key {key!r}; accepted: {', '.join(MODES)}, major, minor")


def _infer_mode(pitches: Sequence[int]) -> str:
    """The mode on the cantus's last note whose scale holds most of its notes."""
    final = pitches[-1] % 12
    rel = [(p - final) % 12 for p in pitches]
    return max(MODES, key=lambda m: sum(r in MODE_SCALES[m] for r in rel))


def _transpose_to(pitches: list[int], final: int) -> list[int]:
    shift = ((final - pitches[-1]) % 12 + 6) % 12 - 6  # -6..5: stay near the original register
    return [p + shift for p in pitches]


def _degree_pitch(final_pitch: int, scale: Sequence[int], degree: int) -> int:
    return final_pitch + 12 * (degree // 7) + scale[degree % 7]


def random_cantus(rng: np.random.Generator, mode: str, final_pitch: int, length: int) -> list[int]:
    """A cantus firmus obeying the usual rules, drawn with ``rng``.

    It starts and ends on the final, approaches the final from the step above, moves
    mostly by step (leaps of a third to a fifth, each turned back by the next note),
    never repeats a note (at least 60% of its moves are steps), avoids melodic tritones, spans at most an octave and has a
    single highest note (its climax), not at either end. Rejection sampling.
    """
    if not MIN_CANTUS + 2 <= length <= MAX_CANTUS:
        raise ValueError(f"cantus length {length} unsupported; accepted: {MIN_CANTUS + 2}..{MAX_CANTUS}")
    scale = MODE_SCALES[mode]
    moves = np.array([1, -1, 2, -2, 3, -3, 4, -4])
    probs = np.array([0.35, 0.35, 0.08, 0.08, 0.05, 0.05, 0.02, 0.02])
    for _ in range(2000):
        deg = [0]
        for _i in range(length - 3):
            m = int(rng.choice(moves, p=probs))
            if len(deg) >= 2 and abs(deg[-1] - deg[-2]) >= 2:  # after a leap, step back
                m = -1 if deg[-1] > deg[-2] else 1
            deg.append(deg[-1] + m)
        deg += [1, 0]
        pitches = [_degree_pitch(final_pitch, scale, d) for d in deg]
        steps = np.diff(pitches)
        top = max(pitches)
        if (min(deg) < -3 or max(pitches) - min(pitches) > 12 or np.any(steps == 0) or np.any(np.abs(steps) == 6)
                or np.any(np.abs(steps) > 7) or pitches.count(top) != 1 or pitches[0] == top
                or abs(deg[-3] - 1) > 3 or np.mean(np.abs(steps) <= 2) < 0.6):
            continue
        return pitches
    raise RuntimeError(f"no {mode} cantus of length {length} found")  # pragma: no cover - never seen


# ------------------------------------------------------------------------------ export
@dataclass
class CounterpointComposition:
    """The written line and its cantus firmus, on a whole-note grid (1 step = a quarter).

    ``line`` and ``cantus`` are :class:`~musicenv.composition.Composition` objects in 4/4
    with one cantus note per bar; ``tokens`` are the line's. Export both voices with
    :meth:`to_midi` / :meth:`to_musicxml` / :meth:`to_music21`.
    """

    line: Composition
    cantus: Composition
    mode: str
    species: int
    voice: str
    title: str = "musicenv counterpoint"

    @property
    def tokens(self) -> np.ndarray:
        return self.line.tokens

    def to_music21(self):
        from music21 import metadata, stream

        score = stream.Score(id="musicenv-counterpoint")
        score.metadata = metadata.Metadata(title=self.title, composer="musicenv")
        parts = []
        for name, comp in (("Counterpoint", self.line), ("Cantus firmus", self.cantus)):
            part = comp.to_music21().parts[0]
            part.id = part.partName = name
            parts.append(part)
        if self.voice == "below":
            parts.reverse()
        for part in parts:
            score.insert(0, part)
        return score

    def to_musicxml(self, path):
        from music21.musicxml.m21ToXml import GeneralObjectExporter

        from musicenv.render import write_atomically

        data: bytes = GeneralObjectExporter(self.to_music21()).parse()
        return write_atomically(path, lambda tmp: tmp.write_bytes(data), what="MusicXML file")

    def to_midi(self, path):
        from music21.midi.translate import streamToMidiFile

        from musicenv.render import write_atomically

        mf = streamToMidiFile(self.to_music21())

        def write(tmp):
            mf.open(str(tmp), "wb")
            try:
                mf.write()
            finally:
                mf.close()

        return write_atomically(path, write, what="MIDI file")


# ------------------------------------------------------------------------------ observation
#: Width of the ``interval`` block: interval class of the last written pair, plus "none yet".
_INTERVAL_W = N_PITCH_CLASSES + 1
#: Width of the ``notes_left`` block: 1, 2, 3, or 4 and more.
_LEFT_W = 4


@njit(cache=True)
def observe_counterpoint_kernel(tokens, core, pitch_of, voice, mode, final, min_pitch, n_pitches, species,
                                history_len, out):  # pragma: no cover - compiled
    """Flat observation of composition b into ``out[b]``. Layout: history (H x (P+1)) |
    cantus (len(_LOOKAHEAD) x _CANTUS_W) | last interval class (_INTERVAL_W) | position
    (species) | notes left (_LEFT_W) | mode (N_MODES) | final (N_PITCH_CLASSES) | progress (1)."""
    for b in range(tokens.shape[0]):
        out[b, :] = 0.0
        t = core[b, C_T]
        end = core[b, C_END]
        o = 0
        for i in range(history_len):
            s = t - history_len + i
            col = pitch_of[tokens[b, s]] - min_pitch if s >= 0 else n_pitches
            out[b, o + i * (n_pitches + 1) + col] = 1.0
        o += history_len * (n_pitches + 1)
        for i in range(len(_LOOKAHEAD)):
            s = t + _LOOKAHEAD[i]
            cf = voice[b, s] if 0 <= s < end else -1
            if cf < 0:
                col = _CANTUS_W - 1
            else:
                col = min(max(cf, CANTUS_LOW), CANTUS_HIGH) - CANTUS_LOW
            out[b, o + i * _CANTUS_W + col] = 1.0
        o += len(_LOOKAHEAD) * _CANTUS_W
        lp = core[b, C_LAST_PITCH]
        if t >= 1 and lp >= 0 and voice[b, t - 1] >= 0:
            out[b, o + abs(lp - voice[b, t - 1]) % N_PITCH_CLASSES] = 1.0
        else:
            out[b, o + _INTERVAL_W - 1] = 1.0
        o += _INTERVAL_W
        out[b, o + t % species] = 1.0
        o += species
        write_steps_left(out, b, o, end - t, _LEFT_W)
        o += _LEFT_W
        out[b, o + mode[b]] = 1.0
        o += N_MODES
        out[b, o + final[b]] = 1.0
        o += N_PITCH_CLASSES
        out[b, o] = t / end


@njit(cache=True)
def commit_observe_counterpoint_kernel(actions, active, tokens, core, pitch_of, voice, mode, final, min_pitch,
                                       n_pitches, species, history_len, out):  # pragma: no cover - compiled
    commit_kernel(actions, active, tokens, core, pitch_of)
    observe_counterpoint_kernel(tokens, core, pitch_of, voice, mode, final, min_pitch, n_pitches, species,
                                history_len, out)


# ------------------------------------------------------------------------------ the task
class CounterpointComposer(BatchedComposer):
    """B counterpoint exercises (Counterpoint-v0's task; the manual is
    :class:`CounterpointEnv`): the given cantus is the batch's ``voice`` track, one step
    per note of the line, episodes as long as their cantus. For the reward terms a "bar"
    is one cantus note (``species`` steps) and each step a beat, the first of a bar a
    downbeat."""

    RESET_OPTIONS = ("key", "cantus")

    def __init__(self, batch_size: int, *, reward: Any = "counterpoint", cantus: Any = "fux", key: Any = "random",
                 species: int = 1, voice: str = "above", cantus_length: tuple[int, int] = (8, 12),
                 min_pitch: int | None = None, max_pitch: int | None = None, history_length: int = 4,
                 constraint: str | None = None, tempo: float = 120.0) -> None:
        if species not in SPECIES:
            raise ValueError(f"species={species!r} not supported; accepted: 1 (note against note), 2 (two against one)")
        if voice not in ("above", "below"):
            raise ValueError(f"voice={voice!r}; accepted: 'above' or 'below' (where the line goes)")
        if constraint not in (None, "diatonic"):
            raise ValueError(f"unknown constraint {constraint!r}; accepted: None, 'diatonic'")
        if not isinstance(history_length, (int, np.integer)) or history_length < 1:
            raise ValueError(f"history_length must be a positive integer, got {history_length!r}")
        lo, hi = (int(v) for v in cantus_length)
        if not MIN_CANTUS + 2 <= lo <= hi <= MAX_CANTUS:
            raise ValueError(f"cantus_length={cantus_length!r}; accepted: (lo, hi) within {MIN_CANTUS + 2}..{MAX_CANTUS}")
        d_lo, d_hi = _DEFAULT_RANGE[voice]
        grid = TokenGrid(d_lo if min_pitch is None else min_pitch, d_hi if max_pitch is None else max_pitch, 1)
        self.species, self.voice, self.constraint = int(species), voice, constraint
        self.history_length, self.cantus_length = int(history_length), (lo, hi)
        self.n_pitches = grid.n_pitches
        self.defaults = {"cantus": cantus, "key": key}
        self._check_context(self.defaults)
        capacity = self._steps_for(MAX_CANTUS)
        level = np.full(capacity, LEVEL_DOWNBEAT, dtype=np.int64)
        if self.species == 2:
            level[1::2] = LEVEL_OFFBEAT
        self.mode = np.zeros(batch_size, dtype=np.int64)
        self.final = np.zeros(batch_size, dtype=np.int64)
        self.cantus: list[list[int]] = [[] for _ in range(batch_size)]
        pcs = np.arange(grid.min_pitch, grid.max_pitch + 1) % N_PITCH_CLASSES
        self._mode_masks = np.zeros((N_MODES, N_PITCH_CLASSES, self.n_pitches), dtype=bool)
        for m, name in enumerate(MODES):
            allowed = set(MODE_SCALES[name]) | set(MODE_FICTA[name])
            for f in range(N_PITCH_CLASSES):
                self._mode_masks[m, f] = np.isin((pcs - f) % N_PITCH_CLASSES, sorted(allowed))
        batch = CompositionBatch(batch_size, capacity, grid, Meter.parse("4/4"), beat_level=level,
                                 steps_per_bar=self.species, steps_per_beat=1, voice_above=voice == "below")
        super().__init__(batch, reward=reward, tempo=tempo, n_actions=self.n_pitches)
        self._observe_args = (self.batch.voice, self.mode, self.final, grid.min_pitch, self.n_pitches, self.species,
                              self.history_length)

    def _steps_for(self, n_notes: int) -> int:
        return n_notes if self.species == 1 else 2 * n_notes - 1

    # -- context ------------------------------------------------------------------------
    def _check_context(self, ctx: dict) -> None:
        _parse_mode_key(ctx.get("key"))
        c = ctx.get("cantus")
        if isinstance(c, str) and (c in ("fux", "random") or c in FUX_CANTUS):
            return
        if isinstance(c, str) and len(c.split()) == 1:
            raise ValueError(f"unknown cantus {c!r}; accepted: 'fux', 'random', one of {sorted(FUX_CANTUS)}, "
                             "or a list of pitches ('D4 F4 E4 D4' or MIDI numbers)")
        pitches = parse_pitches(c)
        if not MIN_CANTUS <= len(pitches) <= MAX_CANTUS:
            raise ValueError(f"a cantus firmus of {len(pitches)} notes; accepted: {MIN_CANTUS}..{MAX_CANTUS} notes")

    def draw_cantus(self, rng: np.random.Generator, ctx: dict) -> tuple[list[int], str]:
        """One episode's cantus (MIDI pitches) and mode."""
        final, modes = _parse_mode_key(ctx.get("key"))
        c = ctx.get("cantus")
        if c == "random":
            mode = modes[int(rng.integers(len(modes)))] if len(modes) > 1 else modes[0]
            f = int(rng.integers(12)) if final is None else final
            length = int(rng.integers(self.cantus_length[0], self.cantus_length[1] + 1))
            return random_cantus(rng, mode, 60 + f, length), mode
        if c == "fux":
            names = [n for n, (m, _) in FUX_CANTUS.items() if m in modes] or list(FUX_CANTUS)
            c = names[int(rng.integers(len(names)))] if len(names) > 1 else names[0]
        if isinstance(c, str) and c in FUX_CANTUS:
            mode, text = FUX_CANTUS[c]
            pitches = parse_pitches(text)
        else:
            pitches = parse_pitches(c)
            mode = modes[0] if len(modes) == 1 else _infer_mode(pitches)
        if final is not None:
            pitches = _transpose_to(pitches, final)
        return pitches, mode

    def draw_context(self, index: np.ndarray, rng: np.random.Generator, options: dict) -> EpisodeContext:
        ctx = dict(self.defaults)
        if options:
            ctx.update({k: v for k, v in options.items() if v is not None})
            self._check_context(ctx)
        voice = np.full((len(index), self.capacity), -1, dtype=np.int64)
        length = np.zeros(len(index), dtype=np.int64)
        keys = np.zeros(len(index), dtype=np.int64)
        for j, b in enumerate(index):
            pitches, mode = self.draw_cantus(rng, ctx)
            self.cantus[b] = pitches
            self.mode[b], self.final[b] = MODES.index(mode), pitches[-1] % 12
            keys[j] = self.final[b] + 12 * (mode in _MINOR_MODES)
            length[j] = self._steps_for(len(pitches))
            voice[j, : length[j]] = np.repeat(pitches, self.species)[: length[j]]
        return EpisodeContext(keys, voice=voice, length=length)

    def reset_info(self, index: int) -> dict[str, Any]:
        return {"key": self.mode_name(index), "cantus": list(self.cantus[index])}

    def mode_name(self, index: int) -> str:
        return f"{PITCH_CLASS_NAMES[int(self.final[index])]} {MODES[int(self.mode[index])]}"

    # -- observation, actions ------------------------------------------------------------
    def observation_layout(self) -> dict[str, tuple[int, ...]]:
        return {
            "history": (self.history_length, self.n_pitches + 1),
            "cantus": (len(_LOOKAHEAD), _CANTUS_W),
            "interval": (_INTERVAL_W,),
            "position": (self.species,),
            "notes_left": (_LEFT_W,),
            "mode": (N_MODES,),
            "final": (N_PITCH_CLASSES,),
            "progress": (1,),
        }

    def observe(self, out: np.ndarray) -> None:
        b = self.batch
        observe_counterpoint_kernel(b.tokens, b.core, b.pitch_of, *self._observe_args, out)

    def commit_observe(self, tokens: np.ndarray, active: np.ndarray, out: np.ndarray) -> None:
        b = self.batch
        commit_observe_counterpoint_kernel(tokens, active, b.tokens, b.core, b.pitch_of, *self._observe_args, out)

    def action_tokens(self, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Action a is the NOTE_ON token of MIDI pitch ``min_pitch + a``."""
        return actions + FIRST_PITCH_TOKEN

    def action_masks(self) -> np.ndarray:
        """(B, n_pitches) bool; with ``constraint="diatonic"`` only the mode's pitches
        (plus its musica ficta, ``MODE_FICTA``)."""
        if self.constraint == "diatonic":
            return self._mode_masks[self.mode, self.final].copy()
        return np.ones((self.batch.batch_size, self.n_pitches), dtype=bool)

    def describe_actions(self) -> str:
        return f"MIDI pitch {self.grid.min_pitch} + action"

    # -- views --------------------------------------------------------------------------
    def composition(self, index: int) -> CounterpointComposition:
        b = self.batch
        t = int(b.core[index, C_T])
        key = Key.from_index(int(b.key[index]))
        note_len = 4 // self.species
        line = []
        for s in range(t):
            last = s == int(b.core[index, C_END]) - 1
            line += [int(b.tokens[index, s])] + [HOLD] * ((4 if last else note_len) - 1)
        cf = self.cantus[index] or [60]
        cgrid = TokenGrid(min(cf), max(cf), 1)
        ctoks = [tok for p in cf for tok in (cgrid.token(p), HOLD, HOLD, HOLD)]
        title = f"musicenv counterpoint: {self.mode_name(index)}, species {self.species}, line {self.voice}"
        return CounterpointComposition(
            Composition(np.array(line, dtype=np.int64), key, self.meter, None, self.grid, self.tempo, title=title),
            Composition(np.array(ctoks, dtype=np.int64), key, self.meter, None, cgrid, self.tempo, title=title),
            MODES[int(self.mode[index])], self.species, self.voice, title)

    def render(self, index: int, mode: str):
        """Piano rolls of the line and the cantus, the upper voice on top."""
        from musicenv.render import render_ansi, render_rgb

        comp = self.composition(index)
        total = 4 * len(self.cantus[index] or [60])
        if mode == "ansi":
            return (f"{comp.title}\n-- line ({self.voice}) --\n{render_ansi(comp.line, n_steps=total)}\n"
                    f"-- cantus firmus --\n{render_ansi(comp.cantus, n_steps=total)}")
        parts = [render_rgb(comp.line, n_steps=total), render_rgb(comp.cantus, n_steps=total)]
        if self.voice == "below":
            parts.reverse()
        return np.ascontiguousarray(np.concatenate(parts, axis=0))


# ------------------------------------------------------------------------------ front ends
class CounterpointEnv(SingleComposerEnv):
    """
    ## Description

    Species counterpoint as taught since Fux (1725): the agent writes a line above
    (default) or below a given cantus firmus, one note per cantus note (first species,
    default) or two (second species, `species=2`; the last note is a whole note). The
    cantus comes from Fux's six cantus firmi (one per mode, `FUX_CANTUS`), from a random
    generator that obeys the cantus rules (`random_cantus`), or from the user. Each
    episode is one exercise; rewards are the classical rules (`rewards.counterpoint`) and
    `counterpoint_report` says which rule each note broke.

    ## Action Space

    `Discrete(P)`, P = `max_pitch - min_pitch + 1` (32 by default):

    | Num       | Name  | Meaning                                            |
    |-----------|-------|----------------------------------------------------|
    | 0 .. P-1  | pitch | the next note of the line, MIDI `min_pitch + a`    |

    Default ranges: G3..D6 (55..86) above the cantus, C2..G4 (36..67) below it.
    `action_masks()` allows every pitch; with `constraint="diatonic"` only the mode's
    pitches plus its musica ficta (raised leading tone in Dorian, Mixolydian and
    Aeolian, B-flat in Lydian).

    ## Observation Space

    A `Dict` of `Box(0, 1, float32)` entries (one-hot or scaled; SB3's `MultiInputPolicy`
    takes it unchanged, `FlattenObservation` gives one vector):

    | Key          | Shape             | Meaning                                                        |
    |--------------|-------------------|----------------------------------------------------------------|
    | `history`    | (H, P + 1)        | the line's last H notes (default H = 4); column P marks BEGIN  |
    | `cantus`     | (4, 61)           | cantus pitch at the previous, current and next two steps, MIDI 36..95 (clipped); column 60 = none |
    | `interval`   | (13,)             | interval class (semitones mod 12) of the last written pair; 12 = none yet |
    | `position`   | (species,)        | which note against the current cantus note                     |
    | `notes_left` | (4,)              | steps left including this one: 1, 2, 3, 4 or more              |
    | `mode`       | (6,)              | the mode, `MODES` order (ionian, dorian, phrygian, lydian, mixolydian, aeolian) |
    | `final`      | (12,)             | pitch class of the final                                       |
    | `progress`   | (1,)              | steps written / episode length                                 |

    ## Rewards

    Default: the `"counterpoint"` preset of `rewards.counterpoint`'s terms —
    `vertical_consonance` (x2), `parallel_perfects` (x3), `direct_perfects`,
    `contrary_motion`, `voice_crossing` (x2), `melodic_leaps`, `single_climax` (x2,
    terminal), `proper_cadence` (x4, terminal; the clausula vera). Any reward spec works;
    `info["reward_terms"]` gives each term's contribution.

    ## Starting State

    An empty line. The cantus is drawn from `cantus` (default: one of Fux's six, at his
    pitch), transposed to the final of `key` when one is given.
    `reset(options={"key": ..., "cantus": ...})` fixes either for one episode.
    `info` holds `"key"` (final and mode, e.g. `"D dorian"`) and `"cantus"` (MIDI pitches).

    ## Episode End

    Terminates when the line has as many notes as the exercise needs: the cantus's
    length (first species) or twice it minus one (second species). Episodes therefore
    vary in length (10-14 steps with Fux's cantus, 8-12 with random ones); no truncation.

    ## Arguments

    ```python
    gym.make("Counterpoint-v0", reward="counterpoint", cantus="fux", key="random", species=1,
             voice="above", cantus_length=(8, 12), min_pitch=None, max_pitch=None,
             history_length=4, constraint=None, tempo=120, render_mode=None)
    ```

    * `cantus`: `"fux"` (one of `FUX_CANTUS`), a name in `FUX_CANTUS` (`"fux_dorian"`),
      `"random"` (generated, `cantus_length` notes) or pitches (`"D4 F4 E4 D4"`, MIDI ints).
    * `key`: `"random"`, or `"<final> <mode>"` (`"D dorian"`), `"<final> minor|major"` (a
      mode of that family), or a bare final. A named or given cantus keeps its own mode and
      is transposed to the final; random cantus use the mode.
    * `species`: 1 or 2; `voice`: `"above"` or `"below"` (where the line goes).
    * `render_mode`: `"ansi"` or `"rgb_array"` (piano rolls of both voices).

    `env.unwrapped.composition` is a `CounterpointComposition` (line + cantus, whole-note
    bars) with `to_midi`, `to_musicxml`, `to_music21` writing both voices.

    ## Vector version

    `gym.make_vec("Counterpoint-v0", num_envs=N, vectorization_mode="vector_entry_point")`.

    ## Version History

    * v0: initial version (first and second species, two voices).
    """

    core_class = CounterpointComposer
    #: Reset options that fully fix an episode's context (used by the suite's tests).
    EXAMPLE_RESET_OPTIONS = {"key": "D dorian", "cantus": "fux_dorian"}


class CounterpointVectorEnv(VectorComposerEnv):
    """Vectorised Counterpoint-v0 (same arguments plus `num_envs`); see :class:`CounterpointEnv`."""

    core_class = CounterpointComposer


# ------------------------------------------------------------------------------ report
#: What a negative value of each counterpoint term means, for the report.
RULE_TEXT = {
    "vertical_consonance": "dissonance (or a unison inside the piece, a non-perfect interval at the start or end, "
                           "or a weak-beat dissonance not passing by step)",
    "parallel_perfects": "parallel fifths or octaves",
    "direct_perfects": "direct (hidden) fifth or octave: similar motion into a perfect interval, upper voice leaping",
    "contrary_motion": "",
    "voice_crossing": "voice crossing or overlap",
    "melodic_leaps": "forbidden leap, or a large leap not turned back",
    "single_climax": "the highest note occurs more than once",
    "proper_cadence": "no clausula vera: end on the final by step, in contrary motion, with a semitone in one voice",
}


def counterpoint_report(cantus: str | Sequence[int | str], line: str | Sequence[int | str], *, species: int = 1,
                        voice: str = "above", reward: Any = None) -> list[dict[str, Any]]:
    """Score ``line`` against ``cantus`` term by term and say which rule each note broke.

    Returns one dict per note of the line: ``step``, ``pitch``, ``cantus`` (the cantus
    pitch sounding), ``interval`` (name of the vertical interval class), ``terms``
    (each term's raw value, unweighted unless ``reward`` gives weights) and ``broken``
    (descriptions of the rules whose value is negative). Uses the environment's own core,
    so the values are exactly what the agent is paid.
    """
    from rewards.counterpoint import COUNTERPOINT_TERMS

    cf, notes = parse_pitches(cantus), parse_pitches(line)
    core = CounterpointComposer(1, reward=reward or list(COUNTERPOINT_TERMS), cantus=cf, species=species, voice=voice,
                                min_pitch=min(notes), max_pitch=max(notes))
    core.reset(np.ones(1, dtype=bool), np.random.default_rng(0), None)
    if len(notes) != core.n_steps:
        raise ValueError(f"the line has {len(notes)} notes; species {species} against a {len(cf)}-note cantus "
                         f"needs {core.n_steps}")
    rows = []
    for s, p in enumerate(notes):
        cfp = int(core.batch.voice[0, s])
        values, _ = core.step(np.array([p - core.grid.min_pitch], dtype=np.int64))
        terms = dict(zip(core.reward.names, values[0].tolist()))
        rows.append({"step": s, "pitch": p, "cantus": cfp, "interval": INTERVAL_NAMES[abs(p - cfp) % 12],
                     "terms": terms, "broken": [RULE_TEXT.get(n, n) for n, v in terms.items() if v < 0]})
    return rows


def format_report(rows: list[dict[str, Any]]) -> str:
    """The report as text, one line per note."""
    lines = []
    for r in rows:
        broken = "; ".join(r["broken"]) or "ok"
        lines.append(f"{r['step']:3d}  {r['pitch']:3d} vs {r['cantus']:3d}  {r['interval']:5s}  {broken}")
    return "\n".join(lines)
