"""WAV rendering with FluidSynth: duration at the tempo, audible notes, clear errors when it cannot run."""

from __future__ import annotations

import os
import stat
import sys
import wave

import numpy as np
import pytest

from musicenv import audio
from musicenv.audio import (
    MAX_RELEASE_TAIL,
    AudioRenderError,
    AudioUnavailable,
    audio_unavailable_reason,
    find_fluidsynth,
    find_soundfont,
    piece_seconds,
    to_wav,
)
from musicenv.composition import Composition
from musicenv.encoding import notes_to_tokens

C_MAJOR_SCALE = [(60, 0, 4), (62, 4, 4), (64, 8, 4), (65, 12, 4), (67, 16, 4), (69, 20, 4), (71, 24, 4), (72, 28, 4)]
#: RMS (fraction of full scale) above which a stretch of audio counts as sounding. The
#: file is normalised to a -3 dBFS peak; a quarter-note piano melody then measures
#: about 0.1-0.2, a melody over string chords about 0.15, trailing silence below 0.001.
AUDIBLE_RMS = 0.02

REASON = audio_unavailable_reason()
needs_fluidsynth = pytest.mark.skipif(
    REASON is not None, reason=f"WAV rendering unavailable here ({REASON}); .ci/run installs fluidsynth"
)


def scale(tempo: float = 120.0) -> Composition:
    """C4..C5 in quarter notes over I-IV-V-I, 32 steps: 4.0 s at 120 quarter notes per minute."""
    return Composition.from_progression(notes_to_tokens(C_MAJOR_SCALE, n_steps=32), "I-IV-V-I", tempo=tempo)


def read_wav(path) -> tuple[np.ndarray, int]:
    """Samples as floats in [-1, 1], shape (frames, channels), and the sample rate."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
        return data.astype(np.float64) / 32768.0, w.getframerate()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def fake_soundfont(path) -> str:
    path.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    return str(path)


# ---- rendering (needs fluidsynth and a soundfont) --------------------------------------
def test_piece_seconds_follows_the_tempo():
    assert piece_seconds(scale(120)) == pytest.approx(4.0)
    assert piece_seconds(scale(60)) == pytest.approx(8.0)
    six_eight = Composition(notes_to_tokens([(60, 0, 6)], n_steps=12), meter="6/8", tempo=90)
    assert piece_seconds(six_eight) == pytest.approx(3 * 60 / 90)  # 12 sixteenths = 3 quarters


@needs_fluidsynth
@pytest.mark.parametrize("tempo", [120.0, 75.0])
def test_wav_lasts_the_piece_and_sounds(tmp_path, tempo):
    comp = scale(tempo)
    path = to_wav(comp, tmp_path / "scale.wav")
    assert path == tmp_path / "scale.wav"
    samples, rate = read_wav(path)
    assert rate == 44100 and samples.shape[1] == 2
    seconds = len(samples) / rate
    expected = piece_seconds(comp)
    # The piece itself, plus at most the synth's release tail.
    assert expected <= seconds <= expected + MAX_RELEASE_TAIL
    assert rms(samples[: round(expected * rate)]) > AUDIBLE_RMS
    assert np.abs(samples).max() == pytest.approx(audio.NORMALISED_PEAK, abs=1e-3)
    # Every quarter note of the scale sounds.
    quarter = 60.0 / tempo
    for i in range(8):
        beat = samples[round(i * quarter * rate): round((i + 1) * quarter * rate)]
        assert rms(beat) > AUDIBLE_RMS, f"beat {i + 1} is silent"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scale.wav"]  # temporary MIDI and WAV removed


@needs_fluidsynth
def test_trailing_rests_are_silent_and_kept(tmp_path):
    # One bar of notes then a bar of rest, no chords: 4.0 s at 120, the second half quiet.
    comp = Composition(notes_to_tokens([(67, 0, 4), (64, 4, 4), (60, 8, 8)], n_steps=32), tempo=120)
    samples, rate = read_wav(to_wav(comp, tmp_path / "rest.wav", sample_rate=22050))
    assert rate == 22050
    assert 4.0 <= len(samples) / rate <= 4.0 + MAX_RELEASE_TAIL
    sounding, resting = samples[: 2 * rate], samples[round(3.0 * rate): 4 * rate]
    assert rms(sounding) > AUDIBLE_RMS
    assert rms(resting) < rms(sounding) / 20  # the last second of the rest bar is (nearly) silent


@needs_fluidsynth
def test_wav_from_an_existing_midi_file(tmp_path):
    comp = scale()
    midi = comp.to_midi(tmp_path / "scale.mid")
    samples, rate = read_wav(to_wav(comp, tmp_path / "scale.wav", midi_path=midi))
    assert 4.0 <= len(samples) / rate <= 4.0 + MAX_RELEASE_TAIL and rms(samples) > AUDIBLE_RMS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scale.mid", "scale.wav"]


@needs_fluidsynth
def test_compose_writes_a_wav_per_piece(tmp_path):
    from musicenv.compose import compose

    records = compose("rule", 2, tmp_path, n_bars=2, tempo=150, wav=True)
    for r in records:
        samples, rate = read_wav(r.files["wav"])
        expected = 2 * 4 * 60 / 150  # two 4/4 bars at 150 quarter notes per minute
        assert expected <= len(samples) / rate <= expected + MAX_RELEASE_TAIL
        assert rms(samples) > AUDIBLE_RMS
        assert f"]({r.files['wav'].name})" in (tmp_path / "index.md").read_text()


@needs_fluidsynth
def test_wav_onto_a_directory_fails_and_leaves_nothing(tmp_path):
    (tmp_path / "taken.wav").mkdir()
    with pytest.raises(IsADirectoryError):
        to_wav(scale(), tmp_path / "taken.wav")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.wav"]


# ---- finding fluidsynth and a soundfont (no fluidsynth needed) --------------------------
def test_missing_fluidsynth_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(AudioUnavailable, match="fluidsynth program, which is not on PATH; install it"):
        find_fluidsynth()
    with pytest.raises(AudioUnavailable):
        to_wav(scale(), tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []
    assert "fluidsynth" in audio_unavailable_reason()


def test_no_soundfont_anywhere_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(audio.SOUNDFONT_ENV_VAR, raising=False)
    monkeypatch.setattr(audio, "SOUNDFONT_SEARCH_PATHS", ("/nonexistent/FluidR3_GM.sf2",))
    with pytest.raises(AudioUnavailable, match=r"General MIDI soundfont and none was found.*MUSICENV_SOUNDFONT"):
        find_soundfont()


def test_soundfont_from_argument_then_environment_then_search(tmp_path, monkeypatch):
    searched, from_env, given = (fake_soundfont(tmp_path / n) for n in ("s.sf2", "e.sf2", "g.sf2"))
    monkeypatch.setattr(audio, "SOUNDFONT_SEARCH_PATHS", (str(tmp_path / "missing.sf2"), searched))
    monkeypatch.delenv(audio.SOUNDFONT_ENV_VAR, raising=False)
    assert str(find_soundfont()) == searched
    monkeypatch.setenv(audio.SOUNDFONT_ENV_VAR, from_env)
    assert str(find_soundfont()) == from_env
    assert str(find_soundfont(given)) == given


def test_a_bad_soundfont_is_refused_before_fluidsynth_renders_silence(tmp_path, monkeypatch):
    not_a_font = tmp_path / "notes.sf2"
    not_a_font.write_text("hello")
    with pytest.raises(AudioUnavailable, match="is not a SoundFont file"):
        find_soundfont(not_a_font)
    monkeypatch.setenv(audio.SOUNDFONT_ENV_VAR, str(tmp_path / "gone.sf2"))
    with pytest.raises(AudioUnavailable, match=r"\$MUSICENV_SOUNDFONT .*gone.sf2' does not exist"):
        find_soundfont()


def test_bad_sample_rate_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        to_wav(scale(), tmp_path / "x.wav", sample_rate=1000)


# ---- fluidsynth misbehaving (a stand-in script plays fluidsynth) -------------------------
def fake_fluidsynth(tmp_path, monkeypatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fluidsynth"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(audio.SOUNDFONT_ENV_VAR, fake_soundfont(tmp_path / "font.sf2"))


def test_fluidsynth_failure_is_reported_and_writes_nothing(tmp_path, monkeypatch):
    fake_fluidsynth(tmp_path, monkeypatch, 'echo "fluidsynth: error: cannot open audio" >&2\nexit 3\n')
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AudioRenderError, match="exit code 3.*cannot open audio"):
        to_wav(scale(), out / "x.wav")
    assert list(out.iterdir()) == []


def test_silence_from_fluidsynth_is_an_error(tmp_path, monkeypatch):
    # Writes one second of digital silence wherever -F points, as fluidsynth does with a useless soundfont.
    python = os.path.realpath(sys.executable)
    fake_fluidsynth(tmp_path, monkeypatch, f'''while [ "$1" != "-F" ]; do shift; done
"{python}" -c "import wave,sys; w=wave.open(sys.argv[1],'wb'); w.setnchannels(2); w.setsampwidth(2); \\
w.setframerate(44100); w.writeframes(bytes(4*44100)); w.close()" "$2"
''')
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AudioRenderError, match="rendered silence"):
        to_wav(scale(), out / "x.wav")
    assert list(out.iterdir()) == []
