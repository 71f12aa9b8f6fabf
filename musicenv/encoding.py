"""The token grid: a monophonic line as one token per time step.

Each step of the grid (``steps_per_quarter`` steps per quarter note, default 4,
i.e. 16th notes) holds one token:

=========  =====================  ==========================================
token      name                   meaning
=========  =====================  ==========================================
0          ``REST``               silence starts (or goes on) at this step
1          ``HOLD``               the sounding note (or rest) continues
2 + i      ``NOTE_ON(min+i)``     a new note of MIDI pitch ``min_pitch + i``
=========  =====================  ==========================================

With the default range 48..83 (C3..B5, both inclusive) there are 36 pitches and
38 tokens, the RL Tuner's vocabulary (token = MIDI - 46), so results stay
comparable. A ``HOLD`` at the very start of a line continues nothing and reads
as a rest.

Conversions are pure functions with round-trip tests: :func:`tokens_to_notes`
and :func:`notes_to_tokens`, plus the other representations models use
(:func:`pitch_class_octave`, :func:`durations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["REST", "HOLD", "FIRST_PITCH_TOKEN", "MIN_MIDI_PITCH", "MAX_MIDI_PITCH", "TokenGrid",
           "Note", "EncodingError", "tokens_to_notes", "notes_to_tokens", "transpose_tokens", "DEFAULT_GRID"]

REST = 0  # silence starts
HOLD = 1  # previous event continues
FIRST_PITCH_TOKEN = 2  # token of min_pitch
MIN_MIDI_PITCH = 0  # inclusive
MAX_MIDI_PITCH = 127  # inclusive


class EncodingError(ValueError):
    """A token, pitch or note does not fit the grid."""


class Note(NamedTuple):
    """A note on the grid: MIDI ``pitch`` (or ``None`` for a rest), ``onset`` and
    ``duration`` in grid steps."""

    pitch: int | None
    onset: int
    duration: int


@dataclass(frozen=True)
class TokenGrid:
    """Pitch range and time resolution of the token vocabulary.

    ``min_pitch`` and ``max_pitch`` are MIDI numbers, both inclusive.
    """

    min_pitch: int = 48
    max_pitch: int = 83
    steps_per_quarter: int = 4

    def __post_init__(self) -> None:
        if not (MIN_MIDI_PITCH <= self.min_pitch <= self.max_pitch <= MAX_MIDI_PITCH):
            raise EncodingError(
                f"pitch range {self.min_pitch}..{self.max_pitch} is invalid; need "
                f"{MIN_MIDI_PITCH} <= min_pitch <= max_pitch <= {MAX_MIDI_PITCH}"
            )
        if self.steps_per_quarter not in (1, 2, 3, 4, 6, 8, 12, 16, 24):
            raise EncodingError(
                f"steps_per_quarter={self.steps_per_quarter} not supported; accepted: 1, 2, 3, 4, 6, 8, 12, 16, 24"
            )

    @property
    def n_pitches(self) -> int:
        return self.max_pitch - self.min_pitch + 1

    @property
    def vocab_size(self) -> int:
        return FIRST_PITCH_TOKEN + self.n_pitches

    def token(self, pitch: int) -> int:
        """NOTE_ON token of a MIDI pitch."""
        if not self.min_pitch <= pitch <= self.max_pitch:
            raise EncodingError(f"pitch {pitch} outside the grid's range {self.min_pitch}..{self.max_pitch}")
        return FIRST_PITCH_TOKEN + int(pitch) - self.min_pitch

    def pitch(self, token: int) -> int:
        """MIDI pitch of a NOTE_ON token."""
        if not FIRST_PITCH_TOKEN <= token < self.vocab_size:
            raise EncodingError(f"token {token} is not a NOTE_ON token; accepted: {FIRST_PITCH_TOKEN}..{self.vocab_size - 1}")
        return self.min_pitch + int(token) - FIRST_PITCH_TOKEN

    def token_name(self, token: int) -> str:
        if token == REST:
            return "REST"
        if token == HOLD:
            return "HOLD"
        from musicenv.theory import PITCH_CLASS_NAMES

        p = self.pitch(token)
        return f"{PITCH_CLASS_NAMES[p % 12]}{p // 12 - 1}"

    def check_tokens(self, tokens) -> np.ndarray:
        """Return ``tokens`` as a 1-D int64 array, or raise if any is outside the vocabulary."""
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise EncodingError(f"expected a 1-D token sequence, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise EncodingError(f"tokens must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if bad.size:
            raise EncodingError(
                f"token {arr[bad[0]]} at step {bad[0]} outside the vocabulary 0..{self.vocab_size - 1} "
                f"(REST=0, HOLD=1, NOTE_ON {self.min_pitch}..{self.max_pitch} = 2..{self.vocab_size - 1})"
            )
        return arr

    def pitch_table(self) -> np.ndarray:
        """``table[token]`` = MIDI pitch of the token, -1 for REST and HOLD."""
        table = np.full(self.vocab_size, -1, dtype=np.int64)
        table[FIRST_PITCH_TOKEN:] = np.arange(self.min_pitch, self.max_pitch + 1)
        return table


DEFAULT_GRID = TokenGrid()


def tokens_to_notes(tokens, grid: TokenGrid = DEFAULT_GRID, *, include_rests: bool = False) -> list[Note]:
    """Notes (pitch, onset, duration in steps) of a token sequence.

    A NOTE_ON starts a note, a REST starts a rest, HOLD extends whatever sounds;
    a leading HOLD is part of an initial rest. With ``include_rests`` rests come
    back as ``Note(None, onset, duration)``.
    """
    arr = grid.check_tokens(tokens)
    notes: list[Note] = []
    cur_pitch: int | None = None
    cur_onset = 0
    for t, tok in enumerate(arr.tolist()):
        if tok == HOLD:
            continue
        if t > cur_onset and (cur_pitch is not None or include_rests):
            notes.append(Note(cur_pitch, cur_onset, t - cur_onset))
        cur_pitch = None if tok == REST else grid.pitch(tok)
        cur_onset = t
    if arr.size > cur_onset and (cur_pitch is not None or include_rests):
        notes.append(Note(cur_pitch, cur_onset, arr.size - cur_onset))
    return notes


def notes_to_tokens(notes, n_steps: int | None = None, grid: TokenGrid = DEFAULT_GRID) -> np.ndarray:
    """Token array of a list of notes ``(pitch, onset, duration)`` in steps.

    Gaps between notes become rests; ``pitch=None`` notes are rests. Notes must
    not overlap (the line is monophonic), durations must be >= 1 and pitches in the
    grid's range. ``n_steps`` defaults to the end of the last note; notes running
    past it raise.
    """
    notes = [Note(*n) for n in notes]
    end = max((n.onset + n.duration for n in notes), default=0)
    if n_steps is None:
        n_steps = end
    if end > n_steps:
        raise EncodingError(f"notes end at step {end}, after n_steps={n_steps}")
    out = np.full(n_steps, HOLD, dtype=np.int64)
    if n_steps:
        out[0] = REST
    covered_until = 0
    for n in sorted(notes, key=lambda n: n.onset):
        if n.duration < 1 or n.onset < 0:
            raise EncodingError(f"note {n} has a negative onset or a duration below 1 step")
        if n.onset < covered_until:
            raise EncodingError(f"note {n} overlaps the previous note (which lasts until step {covered_until}); lines are monophonic")
        if n.onset > covered_until:
            out[covered_until] = REST
        out[n.onset] = REST if n.pitch is None else grid.token(n.pitch)
        covered_until = n.onset + n.duration
    if covered_until < n_steps:
        out[covered_until] = REST
    return out


def pitch_class_octave(tokens, grid: TokenGrid = DEFAULT_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Per step: pitch class (0..11, -1 for REST/HOLD) and octave (MIDI // 12, -1)."""
    arr = grid.check_tokens(tokens)
    pitch = grid.pitch_table()[arr]
    return np.where(pitch >= 0, pitch % 12, -1), np.where(pitch >= 0, pitch // 12, -1)


def durations(tokens, grid: TokenGrid = DEFAULT_GRID) -> np.ndarray:
    """Duration (steps) of each note in order: the rhythm as a duration sequence."""
    return np.array([n.duration for n in tokens_to_notes(tokens, grid)], dtype=np.int64)


def transpose_tokens(tokens, shift: int, grid: TokenGrid = DEFAULT_GRID, *,
                     from_step: int = 0) -> tuple[np.ndarray, int]:
    """The tokens with every NOTE_ON from step ``from_step`` on moved by ``shift``
    semitones; a pitch that leaves the grid's range is folded back by octaves into it
    (REST and HOLD stay). Returns ``(tokens, notes folded)``: a new int64 array and how
    many notes had to be folded. The one token transposition of the project (the
    n-gram and note-RNN data augmentation, the jam's push test); chords and keys move
    with :func:`musicenv.theory.transpose_chords` and :func:`~musicenv.theory.transpose_key`.
    Raises ``ValueError`` if a note must be folded into a range narrower than an octave.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    out = tokens.copy()
    on = tokens >= FIRST_PITCH_TOKEN
    on[:max(int(from_step), 0)] = False
    pitch = tokens[on] - FIRST_PITCH_TOKEN + grid.min_pitch + int(shift)
    low, high = grid.min_pitch, grid.max_pitch
    outside = (pitch < low) | (pitch > high)
    if outside.any():
        if high - low < 11:
            raise ValueError(f"cannot fold pitches into the range {low}..{high}: it is narrower than an octave")
        pitch = np.where(pitch < low, pitch + 12 * ((low - pitch + 11) // 12), pitch)
        pitch = np.where(pitch > high, pitch - 12 * ((pitch - high + 11) // 12), pitch)
    out[on] = pitch - grid.min_pitch + FIRST_PITCH_TOKEN
    return out, int(outside.sum())
