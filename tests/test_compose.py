"""`musicenv compose`: files that read back as the piece, index.md, sources, safe output paths."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from fractions import Fraction

import gymnasium as gym
import mido
import numpy as np
import pytest
from PIL import Image

import musicenv  # noqa: F401  (registers the envs)
from musicenv import compose as compose_module
from musicenv.baselines import RuleBasedPolicy, run_episode
from musicenv.cli import main
from musicenv.compose import (
    OutputPathError,
    UnknownSourceError,
    available_sources,
    compose,
    get_source,
    register_source,
)
from musicenv.encoding import FIRST_PITCH_TOKEN, HOLD
from musicenv.render import rgb_layout


@pytest.fixture
def source_registry(monkeypatch):
    """A private copy of the source registry, so tests can register sources freely."""
    monkeypatch.setattr(compose_module, "_SOURCES", dict(compose_module._SOURCES))
    return compose_module._SOURCES


def listing(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ---- reading the files back ------------------------------------------------------------
def midi_melody(path) -> tuple[list[tuple[int, int, int]], mido.MidiFile]:
    """(pitch, onset tick, duration ticks) of the melody channel, by onset."""
    midi = mido.MidiFile(path)
    out, sounding = [], {}
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off") and msg.channel == 0:
                if msg.type == "note_on" and msg.velocity > 0:
                    sounding[msg.note] = tick
                else:
                    start = sounding.pop(msg.note)
                    out.append((msg.note, start, tick - start))
    return sorted(out, key=lambda n: n[1]), midi


def musicxml_melody(path, steps_per_quarter: int):
    """(pitch, onset step, duration steps) of the melody part, ties merged; and the part."""
    import music21

    score = music21.converter.parse(str(path))
    part = score.parts[0]
    notes = [n for n in part.stripTies().flatten().notes if not isinstance(n, music21.harmony.ChordSymbol)]
    to_steps = lambda q: Fraction(q) * steps_per_quarter  # noqa: E731
    return [(n.pitch.midi, to_steps(n.offset), to_steps(n.quarterLength)) for n in notes], part


@pytest.mark.parametrize("source, meter, key", [("rule", "4/4", "D minor"), ("random", "3/4", "Ab major"),
                                                ("rule", "6/8", "F# minor")])
def test_files_read_back_as_the_piece(tmp_path, source, meter, key):
    import music21

    records = compose(source, 2, tmp_path, key=key, meter=meter, n_bars=2, tempo=132, seed=5, wav=False)
    assert [r.name for r in records] == [f"{source}_01", f"{source}_02"]
    for r in records:
        comp = r.composition
        notes = [tuple(n) for n in comp.notes()]
        assert notes, "a piece without notes proves nothing"
        assert comp.key.name == key and str(comp.meter) == meter
        assert set(r.files) == {"midi", "musicxml", "png"}
        assert all(p.parent == tmp_path for p in r.files.values())

        melody, midi = midi_melody(r.files["midi"])
        tps = comp.ticks_per_step
        assert [(p, on // tps, d // tps) for p, on, d in melody] == notes
        assert all(on % tps == 0 and d % tps == 0 for _, on, d in melody)
        (tempo,) = [m for t in midi.tracks for m in t if m.type == "set_tempo"]
        assert mido.tempo2bpm(tempo.tempo) == pytest.approx(132, rel=1e-5)  # whole microseconds per beat
        (ts,) = [m for t in midi.tracks for m in t if m.type == "time_signature"]
        assert f"{ts.numerator}/{ts.denominator}" == meter
        (ks,) = [m for t in midi.tracks for m in t if m.type == "key_signature"]
        assert ks.key.rstrip("m") in ("Ab", "D", "F#") and ks.key.endswith("m") == comp.key.minor

        from_xml, part = musicxml_melody(r.files["musicxml"], comp.grid.steps_per_quarter)
        assert from_xml == notes
        (xml_key,) = part.recurse().getElementsByClass(music21.key.Key)[:1]
        assert xml_key.tonic.pitchClass == comp.key.tonic and (xml_key.mode == "minor") == comp.key.minor
        assert part.recurse().getElementsByClass(music21.meter.TimeSignature)[0].ratioString == meter

        layout = rgb_layout(comp, crop=True)  # the piece's PNG is cropped to its range
        with Image.open(r.files["png"]) as png:
            assert png.size == (layout["width"], layout["height"])


def test_index_lists_every_piece_with_its_reward_terms(tmp_path):
    records = compose("rule", 3, tmp_path, key="C major", progression="I-IV-V-I", wav=False)
    index = (tmp_path / "index.md").read_text()
    assert "source: `rule`" in index and "progression: `I-IV-V-I`" in index
    assert "C F G C" in index  # the chord track, spelled
    for r in records:
        assert r.composition.title in index
        for path in r.files.values():
            assert f"]({path.name})" in index
        assert r.reward_terms["total"] == pytest.approx(sum(v for k, v in r.reward_terms.items() if k != "total"))
        assert f"| {r.index} | {r.composition.title} |" in index
    for term in ("in_key_time", "chord_tone_time", "cadence", "total"):
        assert f" {term} |" in index
    assert "**mean**" in index


def test_pieces_are_the_seeded_episodes_and_reproducible(tmp_path):
    first = compose("rule", 2, tmp_path / "a", seed=7, wav=False)
    again = compose("rule", 2, tmp_path / "b", seed=7, wav=False)
    assert [r.seed for r in first] == [7, 8]
    assert all(a.composition == b.composition and a.reward_terms == b.reward_terms for a, b in zip(first, again))
    # Piece i is the rule-based policy's episode at seed + i - 1, with run_episode's reward totals.
    env = gym.make("MusicComposition-v0", reward="theory")
    comp, totals = run_episode(env, RuleBasedPolicy(env, seed=8), seed=8)
    assert np.array_equal(comp.tokens, first[1].composition.tokens)
    assert first[1].reward_terms == pytest.approx(totals)


def test_random_source_respects_the_action_masks(tmp_path):
    for r in compose("random", 3, tmp_path, wav=False, seed=1):
        assert r.composition.tokens[0] != HOLD  # the only mask of the default env


def test_settings_reach_the_env(tmp_path):
    (r,) = compose("rule", 1, tmp_path, key="E minor", meter="3/4", n_bars=3, tempo=72, wav=False)
    c = r.composition
    assert (c.key.name, str(c.meter), c.tempo, c.n_steps) == ("E minor", "3/4", 72.0, 3 * 12)


def test_progress_bar_for_longer_batches(tmp_path, capsys):
    compose("random", 4, tmp_path, wav=False, n_bars=1)
    shown = capsys.readouterr()  # a tqdm bar on a terminal (stderr), plain lines in a pipe (stdout)
    assert "composing (random)" in shown.err + shown.out
    compose("random", 2, tmp_path / "few", wav=False, n_bars=1)
    shown = capsys.readouterr()
    assert "composing" not in shown.err + shown.out


# ---- sources -----------------------------------------------------------------------------
def test_unknown_source_lists_the_available_ones(tmp_path):
    with pytest.raises(UnknownSourceError) as err:
        compose("mozart", 1, tmp_path / "out")
    message = str(err.value)
    assert "unknown source 'mozart'" in message
    for name in ("random", "rule"):
        assert f"  {name}: " in message
    for planned in ("prior", "run", "gan"):
        assert planned in message
    assert not (tmp_path / "out").exists()


def test_a_source_whose_entry_point_cannot_be_imported_says_why(source_registry, tmp_path):
    register_source("future", "agents.not_written_yet:source", summary="a future model")
    register_source("typo", "json:no_such_factory", summary="a misspelt factory")
    assert available_sources()["future"] == "a future model"  # listing imports nothing
    with pytest.raises(UnknownSourceError) as err:
        compose("future", 1, tmp_path)
    message = str(err.value)
    assert message.startswith("source 'future' (a future model) is not available: agents.not_written_yet cannot "
                              "be imported (No module named 'agents.not_written_yet')")
    assert "  rule: " in message
    with pytest.raises(UnknownSourceError, match="'json:no_such_factory' does not exist"):
        get_source("typo")
    assert listing(tmp_path) == set()


def test_an_entry_point_is_imported_once_on_first_use(source_registry, monkeypatch):
    calls = []
    real_import = compose_module.importlib.import_module

    def counting_import(name):
        calls.append(name)
        return real_import(name)

    monkeypatch.setattr(compose_module.importlib, "import_module", counting_import)
    register_source("baseline", "musicenv.baselines:RuleBasedPolicy", summary="x", env_kwargs="json:loads")
    assert calls == []
    info, _ = get_source("baseline")
    assert info.factory.__name__ == "RuleBasedPolicy" and info.env_kwargs.__name__ == "loads"
    get_source("baseline")
    assert calls == ["musicenv.baselines", "json"]
    with pytest.raises(ValueError, match="not an entry point"):
        register_source("bad", "musicenv.baselines", summary="x")
    with pytest.raises(ValueError, match="give a summary"):
        register_source("nosummary", "musicenv.baselines:RuleBasedPolicy")


def test_learned_and_trained_sources_name_no_training_module_for_models():
    """prior and gan come from the model layer; only trained agents come from training."""
    entries = {name: info.factory for name, info in compose_module._SOURCES.items() if isinstance(info.factory, str)}
    assert entries["prior"].startswith("agents.models.") and entries["gan"].startswith("agents.models.")
    assert {n for n, e in entries.items() if e.startswith("agents.train.")} == {"run", "run-greedy",
                                                                             "run-unsafe-sb3-zip"}


def test_source_arguments_are_checked(source_registry, tmp_path):
    with pytest.raises(UnknownSourceError, match="takes no argument"):
        get_source("rule:fast")
    register_source("replay", lambda env, *, argument, temperature: None, summary="x", argument="RUN_DIR")
    with pytest.raises(UnknownSourceError, match="needs an argument: replay:RUN_DIR"):
        get_source("replay")
    assert get_source("replay:runs/ppo_1")[1] == "runs/ppo_1"


def test_registered_source_composes_with_its_argument_and_temperature(source_registry, tmp_path):
    seen = {}

    def scale_source(env, *, argument, temperature):
        seen.update(argument=argument, temperature=temperature, n_steps=env.unwrapped.core.n_steps)
        grid = env.unwrapped.core.grid

        def make_policy(seed):
            step = iter(range(10_000))

            def policy(obs):  # C major scale upward in quarter notes
                t = next(step)
                return grid.token(60 + [0, 2, 4, 5, 7, 9, 11, 12][t // 4 % 8]) if t % 4 == 0 else HOLD
            return policy
        return make_policy

    register_source("scale", scale_source, summary="a C major scale", argument="DIR", uses_temperature=True)
    assert "scale:DIR" in available_sources()
    (r,) = compose("scale:some/run_dir", 1, tmp_path, n_bars=2, temperature=0.5, wav=False)
    assert seen == {"argument": "some/run_dir", "temperature": 0.5, "n_steps": 32}
    assert r.name == "scale_run_dir_01" and r.composition.title.startswith("scale run_dir #1")
    assert [n.pitch for n in r.composition.notes()] == [60, 62, 64, 65, 67, 69, 71, 72]
    assert r.composition.tokens[1] == HOLD and r.composition.tokens[0] >= FIRST_PITCH_TOKEN


def test_register_source_refuses_a_taken_or_bad_name(source_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_source("rule", lambda env, *, argument, temperature: None, summary="x")
    with pytest.raises(ValueError, match="lower-case"):
        register_source("Bad Name", lambda env, *, argument, temperature: None, summary="x")


def test_a_source_summary_defaults_to_its_docstring(source_registry):
    def replay(env, *, argument, temperature):
        """Replays a recorded episode.

        More text."""

    register_source("replay", replay)
    assert available_sources()["replay"] == "Replays a recorded episode."


def test_a_broken_provider_module_is_reported_not_raised(source_registry, monkeypatch):
    def broken(name, *args, **kwargs):
        if name == "agents.broken_provider":
            raise TypeError("bad registration")
        return real_import(name, *args, **kwargs)

    real_import = compose_module.importlib.import_module
    monkeypatch.setattr(compose_module.importlib, "import_module", broken)
    register_source("broken", "agents.broken_provider:source", summary="a provider with a bug")
    with pytest.raises(UnknownSourceError, match=r"agents.broken_provider failed to import \(TypeError: bad "
                                                 r"registration\)"):
        get_source("broken")
    assert get_source("rule")[0].name == "rule"  # the other sources still work


def test_temperature_for_a_source_that_does_not_sample_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not sample"):
        compose("rule", 1, tmp_path, temperature=0.7)
    with pytest.raises(ValueError, match="positive"):
        compose("rule", 1, tmp_path, temperature=0)
    assert listing(tmp_path) == set()


# ---- metrics -----------------------------------------------------------------------------
def test_index_shows_metrics_when_musicenv_metrics_exists(tmp_path, monkeypatch):
    fake = types.ModuleType("musicenv.metrics")
    fake.__spec__ = importlib.machinery.ModuleSpec("musicenv.metrics", loader=None)
    fake.muspy_statistics = lambda comp: {"pitch_range": float(np.ptp([n.pitch for n in comp.notes()])),
                                          "not_shown": 1.0}
    fake.harmony_statistics = lambda comp: {"cadence_rate": float("nan"), "key_consistency": "n/a"}
    monkeypatch.setitem(sys.modules, "musicenv.metrics", fake)
    records = compose("rule", 2, tmp_path, wav=False)
    index = (tmp_path / "index.md").read_text()
    assert "## Metrics" in index and "| pitch_range | cadence_rate |" in index and "not_shown" not in index
    assert all(set(r.metrics) == {"pitch_range", "cadence_rate"} for r in records)
    assert "| **mean** | " in index and "**n/a**" in index  # NaN rates stay visible as n/a


def test_index_shows_the_real_metrics(tmp_path):
    pytest.importorskip("musicenv.metrics")
    (r,) = compose("rule", 1, tmp_path, key="C major", wav=False)
    assert {"pitch_range", "key_consistency"} <= set(r.metrics)
    assert r.metrics["key_consistency"] == 1.0  # the rule-based composer stays in key
    assert "## Metrics" in (tmp_path / "index.md").read_text()


def test_a_broken_metrics_module_does_not_stop_composing(tmp_path, monkeypatch):
    monkeypatch.setattr(compose_module, "_metrics_module",
                        lambda: (None, "musicenv.metrics failed to import (ImportError: boom)"))
    records = compose("rule", 1, tmp_path, wav=False)
    assert records[0].metrics == {}
    assert "failed to import (ImportError: boom)" in (tmp_path / "index.md").read_text()


# ---- output paths ------------------------------------------------------------------------
def test_an_output_path_that_is_a_file_fails_and_writes_nothing(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        compose("rule", 1, target)
    with pytest.raises(NotADirectoryError, match="is a file"):
        compose("rule", 1, target / "sub")
    assert target.read_text() == "keep me" and listing(tmp_path) == {"taken"}


def test_a_read_only_output_folder_fails_and_writes_nothing(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Root may write anywhere, so the test denies write access through os.access, which the checks use.
    monkeypatch.setattr(os, "access", lambda p, mode: False if (mode & os.W_OK and os.fspath(p) == str(locked))
                        else real_access(p, mode))
    with pytest.raises(PermissionError, match="not writable"):
        compose("rule", 1, locked)
    with pytest.raises(PermissionError, match="not writable"):
        compose("rule", 1, locked / "new" / "deeper")
    assert listing(locked) == set()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_output_folder_fails_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            compose("rule", 1, locked)
    finally:
        locked.chmod(0o755)
    assert listing(locked) == set()


@pytest.mark.parametrize("name", ["../escape", "a/b", "/tmp/abs", ".hidden", "..", "x/../../y", ""])
def test_names_that_would_escape_the_folder_are_refused(tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(OutputPathError, match="not a plain file name"):
        compose("rule", 1, out, name=name)
    assert listing(tmp_path) == set()


def test_a_directory_in_the_way_of_a_piece_fails_before_writing(tmp_path):
    (tmp_path / "rule_02.png").mkdir()
    with pytest.raises(IsADirectoryError, match="rule_02.png"):
        compose("rule", 2, tmp_path, wav=False)
    assert listing(tmp_path) == {"rule_02.png"}


def test_a_symlink_leading_outside_the_folder_is_refused(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "elsewhere.mid"
    out.mkdir()
    outside.write_text("not yours")
    (out / "rule_01.mid").symlink_to(outside)
    with pytest.raises(OutputPathError, match="outside the output folder"):
        compose("rule", 1, out, wav=False)
    assert outside.read_text() == "not yours" and listing(out) == {"rule_01.mid"}


def test_nested_output_folder_is_created(tmp_path):
    records = compose("rule", 1, tmp_path / "a" / "b", wav=False)
    assert records[0].files["midi"].parent == tmp_path / "a" / "b"
    assert listing(tmp_path / "a" / "b") == {"rule_01.mid", "rule_01.musicxml", "rule_01.png", "index.md"}


# ---- WAV when audio is missing -----------------------------------------------------------
def test_missing_fluidsynth_is_one_notice_not_a_crash(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("musicenv.audio.shutil.which", lambda name: None)
    records = compose("rule", 2, tmp_path)
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("notice: no WAV")]
    assert len(notices) == 1 and "fluidsynth" in notices[0]
    assert all("wav" not in r.files for r in records)
    assert not any(name.endswith(".wav") for name in listing(tmp_path))
    assert "no WAV files" in (tmp_path / "index.md").read_text()


def test_required_wav_without_fluidsynth_fails_and_writes_nothing(tmp_path, monkeypatch):
    from musicenv.audio import AudioUnavailable

    monkeypatch.setattr("musicenv.audio.shutil.which", lambda name: None)
    with pytest.raises(AudioUnavailable, match="apt-get install fluidsynth"):
        compose("rule", 1, tmp_path / "out", wav=True)
    assert not (tmp_path / "out").exists()


# ---- command line ------------------------------------------------------------------------
def test_cli_compose_writes_the_folder(tmp_path, capsys):
    out = tmp_path / "pieces"
    assert main(["compose", "rule", "-n", "2", "--out", str(out), "--key", "G major", "--bars", "2",
                 "--no-wav"]) == 0
    printed = capsys.readouterr().out
    assert "rule #1 (G major, 4/4)" in printed and "|1...2...3...4...|" in printed and "index.md" in printed
    assert listing(out) == {"index.md"} | {f"rule_0{i}{ext}" for i in (1, 2) for ext in (".mid", ".musicxml", ".png")}


def test_cli_compose_errors_are_clear(tmp_path, capsys):
    assert main(["compose", "bach", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown source 'bach'" in err and "random:" in err and "rule:" in err
    taken = tmp_path / "file"
    taken.write_text("")
    assert main(["compose", "rule", "--out", str(taken)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["compose", "rule", "-n", "0", "--out", str(tmp_path / "y")]) == 2
    assert listing(tmp_path) == {"file"}


def test_cli_compose_model_flag_needs_exactly_one_source(tmp_path, capsys):
    assert main(["compose", "--out", str(tmp_path / "a")]) == 2
    assert "give a source" in capsys.readouterr().err
    assert main(["compose", "rule", "--model", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "either a source or --model, not both" in capsys.readouterr().err
    assert main(["compose", "rule", "--greedy", "--out", str(tmp_path / "c")]) == 2
    assert "--greedy goes with --model" in capsys.readouterr().err
    assert main(["compose", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()
