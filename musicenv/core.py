"""The batched composition state that every environment and reward term shares.

A :class:`CompositionBatch` holds B compositions being written, as plain arrays
that the numba kernels read directly:

* ``tokens[b, :t]`` the tokens written so far (``t = core[b, C_T]``),
* ``key[b]`` the key index (0..23) and ``chords[b, s]`` the chord code at step s,
* ``voice[b, s]`` the MIDI pitch a given second voice sounds at step s (a cantus
  firmus, a melody to harmonise), -2 where that voice rests, -1 where there is none
  (always, in MusicComposition-v0),
* ``core[b, :]`` a few running facts about the line, updated incrementally by
  :func:`commit_kernel` after each step (columns ``C_*`` below),
* batch-wide constants (``consts``, columns ``K_*``), the metrical weight of every
  step (``beat_level``) and the MIDI pitch of every token (``pitch_of``).

Reward terms score the token being placed *before* it is committed, so they see
the history ``tokens[b, :t]`` plus the action. Importing this module imports
numba (environments import it when first made, never on ``import musicenv``).
"""

from __future__ import annotations

import numpy as np

from musicenv._numba_cache import drop_stale_numba_cache

drop_stale_numba_cache()

from numba import njit  # noqa: E402

from musicenv.encoding import HOLD, REST, TokenGrid  # noqa: E402
from musicenv.theory import NO_CHORD, Meter  # noqa: E402

__all__ = ["CompositionBatch", "commit_kernel", "MOTIF_WINDOW", "beat_levels"]

# ---- columns of CompositionBatch.core (int64 per composition) ---------------------------
C_T = 0  # steps written so far = index of the step being decided
C_LAST_PITCH = 1  # MIDI pitch of the latest NOTE_ON, -1 if none yet
C_PREV_PITCH = 2  # MIDI pitch of the NOTE_ON before that, -1 if none
C_LAST_EVENT = 3  # latest token that is not HOLD (REST or NOTE_ON), -1 at the start
C_EVENT_START = 4  # step at which that event began (0 at the start)
C_WINDOW = 5  # the last MOTIF_WINDOW tokens packed a byte each, newest in the low byte
C_END = 6  # this episode's length in steps (n_steps unless the env plans shorter episodes)
N_CORE = 7

# ---- columns of CompositionBatch.consts (int64, batch-wide) ----------------------------
K_N_STEPS = 0  # episode length in steps
K_STEPS_PER_BAR = 1
K_STEPS_PER_BEAT = 2
K_STEPS_PER_QUARTER = 3
K_MIN_PITCH = 4
K_VOCAB = 5
K_VOICE_ABOVE = 6  # 1 if the given voice (``voice``) sounds above the line being written, else 0
N_CONSTS = 7

#: Length of the token window used for motifs: 8 steps, the RL Tuner's "bar". Eight
#: tokens (each < 256) pack exactly into one int64, so window equality is exact.
MOTIF_WINDOW = 8
MAX_VOCAB = 256

#: Metrical levels returned by :func:`beat_levels`.
LEVEL_OFFBEAT, LEVEL_BEAT, LEVEL_STRONG, LEVEL_DOWNBEAT = 0, 1, 2, 3


def beat_levels(meter: Meter, steps_per_quarter: int, n_steps: int) -> np.ndarray:
    """Metrical level of each step: 3 downbeat, 2 other strong beat (beat 3 of 4/4),
    1 other beat, 0 between beats."""
    spb = meter.steps_per_beat(steps_per_quarter)
    bar = meter.steps_per_bar(steps_per_quarter)
    pos = np.arange(n_steps) % bar
    level = np.where(pos % spb == 0, LEVEL_BEAT, LEVEL_OFFBEAT)
    for beat in meter.strong_beats:
        level[pos == beat * spb] = LEVEL_STRONG
    level[pos == 0] = LEVEL_DOWNBEAT
    return level.astype(np.int64)


@njit(cache=True)
def commit_kernel(actions, active, tokens, core, pitch_of):  # pragma: no cover - compiled
    """Write ``actions[b]`` at step ``core[b, C_T]`` where ``active[b]`` and update the
    running facts."""
    for b in range(actions.shape[0]):
        if not active[b]:
            continue
        a = actions[b]
        t = core[b, C_T]
        tokens[b, t] = a
        if a != HOLD:
            core[b, C_LAST_EVENT] = a
            core[b, C_EVENT_START] = t
            if a != REST:
                core[b, C_PREV_PITCH] = core[b, C_LAST_PITCH]
                core[b, C_LAST_PITCH] = pitch_of[a]
        core[b, C_WINDOW] = (core[b, C_WINDOW] << 8) | a
        core[b, C_T] = t + 1


class CompositionBatch:
    """State of ``batch_size`` compositions of ``n_steps`` steps each (see module doc).

    By default the batch-wide facts follow ``grid`` and ``meter``: steps per bar and per
    beat, the metrical level of every step (:func:`beat_levels`) and the MIDI pitch of
    every token (``grid.pitch_table()``). A task whose steps are not grid steps of a
    melody states its own, and the reward terms read those:

    * ``token_pitch``: (V,) int64, the value ``pitch_of`` gives each token (MIDI pitch,
      -1 for REST and HOLD; any int a task's terms read, e.g. a chord code); the
      vocabulary size V is its length (at most ``MAX_VOCAB``);
    * ``beat_level``: (n_steps,) int64 metrical level of each step (``LEVEL_*``);
    * ``steps_per_bar``, ``steps_per_beat``: what the terms take as a bar and a beat;
    * ``voice_above``: the given ``voice`` sounds above the line being written.
    """

    def __init__(self, batch_size: int, n_steps: int, grid: TokenGrid, meter: Meter, *,
                 token_pitch: np.ndarray | None = None, beat_level: np.ndarray | None = None,
                 steps_per_bar: int | None = None, steps_per_beat: int | None = None,
                 voice_above: bool = False) -> None:
        pitch_of = grid.pitch_table() if token_pitch is None else np.array(token_pitch, dtype=np.int64)
        if pitch_of.ndim != 1 or len(pitch_of) > MAX_VOCAB:
            raise ValueError(f"vocabulary of {len(pitch_of)} tokens exceeds the supported {MAX_VOCAB}")
        if batch_size < 1 or n_steps < 1:
            raise ValueError(f"batch_size and n_steps must be >= 1, got {batch_size}, {n_steps}")
        self.batch_size, self.n_steps, self.grid, self.meter = batch_size, n_steps, grid, meter
        self.tokens = np.zeros((batch_size, n_steps), dtype=np.int64)
        self.key = np.zeros(batch_size, dtype=np.int64)
        self.chords = np.full((batch_size, n_steps), NO_CHORD, dtype=np.int64)
        self.voice = np.full((batch_size, n_steps), -1, dtype=np.int64)
        self.core = np.zeros((batch_size, N_CORE), dtype=np.int64)
        self.consts = np.zeros(N_CONSTS, dtype=np.int64)
        self.consts[K_N_STEPS] = n_steps
        self.consts[K_STEPS_PER_BAR] = meter.steps_per_bar(grid.steps_per_quarter) if steps_per_bar is None \
            else steps_per_bar
        self.consts[K_STEPS_PER_BEAT] = meter.steps_per_beat(grid.steps_per_quarter) if steps_per_beat is None \
            else steps_per_beat
        self.consts[K_STEPS_PER_QUARTER] = grid.steps_per_quarter
        self.consts[K_MIN_PITCH] = grid.min_pitch
        self.consts[K_VOCAB] = len(pitch_of)
        self.consts[K_VOICE_ABOVE] = int(bool(voice_above))
        if beat_level is None:
            self.beat_level = beat_levels(meter, grid.steps_per_quarter, n_steps)
        else:
            self.beat_level = np.array(beat_level, dtype=np.int64)
            if self.beat_level.shape != (n_steps,):
                raise ValueError(f"beat_level has shape {self.beat_level.shape}; expected ({n_steps},), one per step")
        self.pitch_of = pitch_of
        self.all_active = np.ones(batch_size, dtype=np.bool_)
        self.reset(np.ones(batch_size, dtype=bool))

    @property
    def vocab_size(self) -> int:
        """Number of tokens (``len(pitch_of)``)."""
        return len(self.pitch_of)

    @property
    def t(self) -> np.ndarray:
        """Steps written so far, per composition (a view)."""
        return self.core[:, C_T]

    def reset(self, mask: np.ndarray, key: np.ndarray | None = None, chords: np.ndarray | None = None,
              voice: np.ndarray | None = None, length: np.ndarray | None = None) -> None:
        """Start new, empty compositions where ``mask`` is true, with the given
        per-composition ``key`` (shape (n,)), ``chords`` and given ``voice`` (shape
        (n, n_steps)) and episode ``length`` in steps (shape (n,), default n_steps)."""
        self.tokens[mask] = 0
        self.core[mask] = 0
        self.core[mask, C_LAST_PITCH] = -1
        self.core[mask, C_PREV_PITCH] = -1
        self.core[mask, C_LAST_EVENT] = -1
        self.core[mask, C_END] = self.n_steps if length is None else length
        if key is not None:
            self.key[mask] = key
        if chords is not None:
            self.chords[mask] = chords
        if voice is not None:
            self.voice[mask] = voice

    def commit(self, actions: np.ndarray, active: np.ndarray | None = None) -> None:
        """Append ``actions[b]`` (int64, shape (B,)) to composition b where ``active[b]``
        (default: all). Compositions already ``n_steps`` long must not be active."""
        commit_kernel(actions, self.all_active if active is None else active, self.tokens, self.core, self.pitch_of)
