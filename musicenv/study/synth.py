"""Sound for every study: FluidSynth where it is installed, else a small numpy synthesiser.

:func:`render_wav` writes a composition as WAV. With FluidSynth and a General MIDI
soundfont (:mod:`musicenv.audio`) the melody plays on a piano over a string pad; without
them :func:`synthesise` renders the same notes itself, so a study always has sound:

* melody: each note a sum of four harmonics (amplitudes 1, 1/2, 1/4, 1/8) with a 5 ms
  attack and an exponential decay (time constant 0.6 s, a plucked/piano-like sound),
  released over 40 ms at the note's end;
* chords: the composition's chord voicing (:meth:`Composition.chord_voicing`) as soft
  sine tones (a quarter of the melody's level) held for each chord's duration, with
  20 ms fades so changes do not click;
* mono, 16-bit, 22,050 Hz by default, peak normalised to -3 dBFS, plus a 0.3 s tail.

Both paths write atomically (:func:`musicenv.render.write_atomically`).
"""

from __future__ import annotations

import os
import pathlib
import wave
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from musicenv.composition import Composition

__all__ = ["render_wav", "synthesise", "audio_backend", "SYNTH_SAMPLE_RATE"]

SYNTH_SAMPLE_RATE = 22050  # Hz
_HARMONICS = (1.0, 0.5, 0.25, 0.125)
_DECAY_SECONDS = 0.6
_ATTACK_SECONDS = 0.005
_RELEASE_SECONDS = 0.04
_CHORD_LEVEL = 0.25
_CHORD_FADE_SECONDS = 0.02
_TAIL_SECONDS = 0.3
_PEAK = 10 ** (-3 / 20)


def audio_backend(soundfont: str | os.PathLike | None = None, backend: str = "auto") -> str:
    """``"fluidsynth"`` or ``"numpy"``: what :func:`render_wav` will use for ``backend``
    ``"auto"`` (FluidSynth when :func:`musicenv.audio.audio_unavailable_reason` finds it),
    ``"fluidsynth"`` (required: :class:`~musicenv.audio.AudioUnavailable` if missing) or ``"numpy"``."""
    from musicenv.audio import audio_unavailable_reason, find_fluidsynth, find_soundfont

    if backend == "numpy":
        return "numpy"
    if backend == "fluidsynth":
        find_fluidsynth()
        find_soundfont(soundfont)
        return "fluidsynth"
    if backend != "auto":
        raise ValueError(f"audio backend must be 'auto', 'fluidsynth' or 'numpy', got {backend!r}")
    return "fluidsynth" if audio_unavailable_reason(soundfont) is None else "numpy"


def _midi_hz(pitch: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


def synthesise(comp: Composition, sample_rate: int = SYNTH_SAMPLE_RATE) -> np.ndarray:
    """``comp`` (melody and chord track) as float64 mono samples in [-1, 1] (see module doc)."""
    from musicenv.audio import piece_seconds
    from musicenv.theory import NO_CHORD

    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sample_rate must be an int number of Hz in 8000..192000, got {sample_rate!r}")
    step_seconds = piece_seconds(comp) / max(comp.n_steps, 1)
    n = int(round((piece_seconds(comp) + _TAIL_SECONDS) * sample_rate))
    out = np.zeros(n, dtype=np.float64)
    release = int(_RELEASE_SECONDS * sample_rate)
    attack = max(1, int(_ATTACK_SECONDS * sample_rate))
    for pitch, onset, dur in comp.notes():
        start = int(round(onset * step_seconds * sample_rate))
        length = int(round(dur * step_seconds * sample_rate))
        total = min(length + release, n - start)
        if total <= 0:
            continue
        t = np.arange(total) / sample_rate
        env = np.exp(-t / _DECAY_SECONDS)
        env[:attack] *= np.linspace(0.0, 1.0, attack)[: min(attack, total)]
        tail = np.arange(total) - length
        env *= np.clip(1.0 - tail / max(release, 1), 0.0, 1.0)
        f = _midi_hz(pitch)
        tone = sum(a * np.sin(2 * np.pi * f * (h + 1) * t) for h, a in enumerate(_HARMONICS))
        out[start:start + total] += env * tone / sum(_HARMONICS)
    fade = max(1, int(_CHORD_FADE_SECONDS * sample_rate))
    for code, onset, dur in comp.chord_segments():
        if code == NO_CHORD:
            continue
        start = int(round(onset * step_seconds * sample_rate))
        length = min(int(round(dur * step_seconds * sample_rate)), n - start)
        if length <= 0:
            continue
        t = np.arange(length) / sample_rate
        env = np.ones(length)
        k = min(fade, length // 2)
        if k:
            env[:k] = np.linspace(0.0, 1.0, k)
            env[length - k:] = np.linspace(1.0, 0.0, k)
        voicing = comp.chord_voicing(code)
        pad = sum(np.sin(2 * np.pi * _midi_hz(p) * t) for p in voicing) / len(voicing)
        out[start:start + length] += _CHORD_LEVEL * env * pad
    peak = float(np.abs(out).max(initial=0.0))
    if peak > 0:
        out *= _PEAK / peak
    return out


def _write_samples(path: pathlib.Path, samples: np.ndarray, sample_rate: int) -> None:
    data = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(data.tobytes())


def render_wav(comp: Composition, path: str | os.PathLike, *, backend: str = "auto",
               soundfont: str | os.PathLike | None = None) -> tuple[pathlib.Path, str]:
    """Write ``comp`` as a WAV file; returns ``(path, backend used)`` (see :func:`audio_backend`)."""
    from musicenv.render import write_atomically

    used = audio_backend(soundfont, backend)
    if used == "fluidsynth":
        from musicenv.audio import to_wav

        return to_wav(comp, path, soundfont=soundfont), used
    samples = synthesise(comp)
    return write_atomically(path, lambda tmp: _write_samples(tmp, samples, SYNTH_SAMPLE_RATE), what="WAV file"), used
