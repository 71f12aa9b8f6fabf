"""Audio: a composition rendered to a WAV file with FluidSynth and a General MIDI soundfont.

* :func:`to_wav` — render a :class:`~musicenv.composition.Composition` (its MIDI
  export: melody on piano, chords on strings) to a 16-bit stereo WAV file.
* :func:`find_fluidsynth`, :func:`find_soundfont` — locate the ``fluidsynth``
  program and a soundfont; both raise :class:`AudioUnavailable` with what to
  install when they find nothing.
* :func:`audio_unavailable_reason` — ``None`` when WAV rendering will work, else
  the one-line reason (for a notice instead of a crash).

FluidSynth is an external program, not a Python dependency: on Debian/Ubuntu
``apt-get install fluidsynth`` brings it with the small TimGM6mb General MIDI
soundfont; ``fluid-soundfont-gm`` adds the larger FluidR3_GM. Set
``$MUSICENV_SOUNDFONT`` to use any other ``.sf2``/``.sf3`` file.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import wave
from typing import TYPE_CHECKING

import numpy as np

from musicenv.render import write_atomically
from musicenv.theory import NO_CHORD

if TYPE_CHECKING:
    from musicenv.composition import Composition

__all__ = [
    "AudioUnavailable",
    "AudioRenderError",
    "SOUNDFONT_ENV_VAR",
    "SOUNDFONT_SEARCH_PATHS",
    "find_fluidsynth",
    "find_soundfont",
    "audio_unavailable_reason",
    "piece_seconds",
    "to_wav",
]

#: Environment variable naming a soundfont file; it takes precedence over the search paths.
SOUNDFONT_ENV_VAR = "MUSICENV_SOUNDFONT"

#: Where Linux distributions and Homebrew put General MIDI soundfonts, best first.
SOUNDFONT_SEARCH_PATHS: tuple[str, ...] = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian/Ubuntu fluid-soundfont-gm
    "/usr/share/soundfonts/FluidR3_GM.sf2",  # Arch, Fedora
    "/usr/share/soundfonts/default.sf2",  # Fedora, Arch (symlink to the installed GM font)
    "/usr/share/sounds/sf2/default-GM.sf2",  # Debian alternatives link (FluidR3 or TimGM6mb)
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # Debian/Ubuntu timgm6mb-soundfont (fluidsynth's dependency)
    "/usr/share/sounds/sf3/default-GM.sf3",
    "/usr/share/sounds/sf3/FluidR3_GM.sf3",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)

#: Seconds of the synth's release and reverb tail kept after the piece's last step, at most.
MAX_RELEASE_TAIL = 2.0
#: The tail ends where it stays 60 dB below the file's loudest sample.
TAIL_SILENCE_RATIO = 1e-3
#: A render whose loudest sample is below this (fraction of full scale, -60 dBFS) is silent.
SILENCE_LEVEL = 1e-3
#: Peak level of the written file (fraction of full scale, -3 dBFS): soundfonts and
#: fluidsynth's default gain leave pieces at -15 to -30 dBFS, too quiet to judge by ear.
NORMALISED_PEAK = 10 ** (-3 / 20)
#: Fade-out applied where a still-audible tail is cut, so the file does not end in a click.
TAIL_FADE_SECONDS = 0.05
#: Longest a single fluidsynth run may take before it is stopped.
RENDER_TIMEOUT_SECONDS = 300


class AudioUnavailable(RuntimeError):
    """WAV rendering is not possible here: FluidSynth or a soundfont is missing."""


class AudioRenderError(RuntimeError):
    """FluidSynth ran but did not produce usable audio."""


def find_fluidsynth() -> str:
    """Path of the ``fluidsynth`` program; raises :class:`AudioUnavailable` if not on PATH."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise AudioUnavailable(
            "WAV needs the fluidsynth program, which is not on PATH; install it "
            "(Debian/Ubuntu: apt-get install fluidsynth; macOS: brew install fluid-synth)"
        )
    return exe


def _is_soundfont(path: pathlib.Path) -> bool:
    """True if ``path`` starts like a SoundFont 2/3 file (a RIFF ``sfbk`` chunk)."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"sfbk"


def find_soundfont(soundfont: str | os.PathLike | None = None) -> pathlib.Path:
    """The soundfont to render with: ``soundfont`` if given, else ``$MUSICENV_SOUNDFONT``,
    else the first of :data:`SOUNDFONT_SEARCH_PATHS` that exists.

    Raises :class:`AudioUnavailable` if none is found, or if the file given (argument
    or environment variable) does not exist or is not a SoundFont (.sf2/.sf3):
    fluidsynth would otherwise render silence without an error.
    """
    explicit = soundfont if soundfont is not None else os.environ.get(SOUNDFONT_ENV_VAR) or None
    if explicit is not None:
        origin = "soundfont" if soundfont is not None else f"${SOUNDFONT_ENV_VAR}"
        path = pathlib.Path(explicit).expanduser()
        if not path.is_file():
            raise AudioUnavailable(f"{origin} {str(path)!r} does not exist or is not a file")
        if not _is_soundfont(path):
            raise AudioUnavailable(f"{origin} {str(path)!r} is not a SoundFont file (.sf2/.sf3 starting with RIFF sfbk)")
        return path
    for candidate in SOUNDFONT_SEARCH_PATHS:
        path = pathlib.Path(candidate)
        if path.is_file() and _is_soundfont(path):
            return path
    raise AudioUnavailable(
        "WAV needs a General MIDI soundfont and none was found; install one "
        "(Debian/Ubuntu: apt-get install timgm6mb-soundfont or fluid-soundfont-gm) "
        f"or set ${SOUNDFONT_ENV_VAR} to an .sf2 file (searched: {', '.join(SOUNDFONT_SEARCH_PATHS)})"
    )


def audio_unavailable_reason(soundfont: str | os.PathLike | None = None) -> str | None:
    """``None`` if :func:`to_wav` can run here, else why not (one line)."""
    try:
        find_fluidsynth()
        find_soundfont(soundfont)
    except AudioUnavailable as e:
        return str(e)
    return None


def piece_seconds(comp: Composition) -> float:
    """Length of ``comp`` in seconds: its steps at ``comp.tempo`` quarter notes per minute."""
    return comp.n_steps / comp.grid.steps_per_quarter * 60.0 / comp.tempo


def to_wav(comp: Composition, path: str | os.PathLike, soundfont: str | os.PathLike | None = None,
           sample_rate: int = 44100, midi_path: str | os.PathLike | None = None) -> pathlib.Path:
    """Render ``comp`` to a 16-bit stereo WAV file at ``sample_rate`` Hz and return its path.

    Plays the composition's MIDI export (:meth:`~musicenv.composition.Composition.to_midi`:
    melody on piano, chord track on strings, at ``comp.tempo``) through
    ``fluidsynth -ni -F OUT -r RATE SOUNDFONT IN.mid``. The file lasts the piece
    (:func:`piece_seconds`, trailing rests included) plus the synth's release and
    reverb tail until it falls 60 dB below the peak, at most :data:`MAX_RELEASE_TAIL`
    seconds (faded out if cut), and is normalised to a peak of -3 dBFS
    (:data:`NORMALISED_PEAK`). ``midi_path`` renders an already written MIDI file
    of ``comp`` instead of writing a temporary one (which goes next to ``path``
    and is removed). Written atomically (see :func:`musicenv.render.write_atomically`).

    Raises :class:`AudioUnavailable` if fluidsynth or a soundfont is missing
    (:func:`find_soundfont`), :class:`AudioRenderError` if fluidsynth fails or
    renders silence for a piece that has notes, and the errors of
    :func:`~musicenv.render.check_writable` for a bad ``path``.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sample_rate must be an int number of Hz in 8000..192000, got {sample_rate!r}")
    exe = find_fluidsynth()
    font = find_soundfont(soundfont)
    seconds = piece_seconds(comp)
    audible = bool(comp.notes()) or any(code != NO_CHORD for code, _, _ in comp.chord_segments())

    def render(tmp: pathlib.Path) -> None:
        own_midi = midi_path is None
        midi = tmp.with_name(tmp.name + ".mid") if own_midi else pathlib.Path(midi_path)
        try:
            if own_midi:
                comp.to_midi(midi)
            _run_fluidsynth(exe, font, midi, tmp, sample_rate)
        finally:
            if own_midi:
                midi.unlink(missing_ok=True)
        _fit_to_piece(tmp, seconds, audible)

    return write_atomically(path, render, what="WAV file")


def _run_fluidsynth(exe: str, font: pathlib.Path, midi: pathlib.Path, out: pathlib.Path, sample_rate: int) -> None:
    cmd = [exe, "-ni", "-q", "-F", str(out), "-T", "wav", "-O", "s16", "-r", str(sample_rate), str(font), str(midi)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RENDER_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as e:
        raise AudioRenderError(f"fluidsynth took more than {RENDER_TIMEOUT_SECONDS} s rendering {midi.name}") from e
    if done.returncode != 0 or not out.is_file():
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise AudioRenderError(
            f"fluidsynth failed (exit code {done.returncode}) rendering {midi.name} with {font}: " + " | ".join(detail)
        )


def _fit_to_piece(wav_path: pathlib.Path, seconds: float, audible: bool) -> None:
    """Cut (or pad) the rendered file to the piece plus its audible tail and
    normalise its peak, in place."""
    with wave.open(str(wav_path), "rb") as w:
        channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if width != 2:
        raise AudioRenderError(f"fluidsynth wrote {8 * width}-bit samples; expected 16-bit")
    frames = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
    peak = np.abs(frames.astype(np.int32)).max(axis=1, initial=0)  # per frame; int32: abs(-32768) fits
    top = int(peak.max(initial=0))
    if audible and top < SILENCE_LEVEL * 32768:
        raise AudioRenderError("fluidsynth rendered silence for a piece with notes; is the soundfont a General MIDI one?")
    loud = peak > max(top * TAIL_SILENCE_RATIO, 1)
    end = round(seconds * rate)
    limit = end + round(MAX_RELEASE_TAIL * rate)
    loud_after = np.flatnonzero(loud[end:limit])
    keep = end + (int(loud_after[-1]) + 1 if len(loud_after) else 0)
    cut_while_audible = keep == limit and bool(loud[limit:].any())
    out = np.zeros((keep, channels), dtype=np.float64)
    out[: min(keep, len(frames))] = frames[:keep]  # fluidsynth may stop before trailing rests end: pad
    if top > 0:
        out *= NORMALISED_PEAK * 32767 / top
    if cut_while_audible:
        fade = min(round(TAIL_FADE_SECONDS * rate), keep)
        out[keep - fade:] *= np.linspace(1.0, 0.0, fade)[:, None]
    data = np.clip(np.round(out), -32768, 32767).astype("<i2")
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
