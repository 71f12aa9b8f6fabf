"""``musicenv compose``: N pieces from a chosen source, written to an output folder.

Per piece the folder gets ``<name>_<i>.mid`` (melody and chord track on separate
instruments, tempo, key and time signatures), ``.musicxml`` (key, meter, chord
symbols), ``.png`` (piano roll with title, chords, bar lines) and ``.wav`` when
FluidSynth and a General MIDI soundfont are installed (:mod:`musicenv.audio`);
plus ``index.md`` listing every piece with its reward terms (episode totals of
``info["reward_terms"]``) and, when :mod:`musicenv.metrics` exists, a few metrics.

Sources
-------
A *source* is a factory called once per :func:`compose` call as
``factory(env, argument=..., temperature=...)`` with the env :func:`compose` made
from the user's settings. It returns ``make_policy(seed) -> policy``, a fresh
policy per piece, where ``policy(obs) -> action`` plays one episode (a source
that cannot play in that env, e.g. a trained agent whose observation space
differs, raises an error saying which settings to use). Built in: ``random``
(uniformly random legal tokens) and ``rule``
(:class:`~musicenv.baselines.RuleBasedPolicy`). Every other source is registered here
too, as Gymnasium registers envs: by an entry point ``"module:factory"`` that is
imported the first time the source is asked for (the learned ones need torch):
``prior`` and ``gan`` from the model layer (:mod:`agents.models`), ``run``,
``run-greedy`` and ``run-unsafe-sb3-zip`` from training (:mod:`agents.train.sources`).
Your own source is one call, with a factory or an entry point::

    from musicenv.compose import register_source

    def scale_source(env, *, argument, temperature):
        return lambda seed: ScalePolicy(env, seed=seed)

    register_source("scale", scale_source, summary="a C major scale, up and down")
    register_source("mine", "mypackage.sources:my_source", summary="my model", uses_temperature=True)

A source that needs an argument (``run:RUN_DIR``) registers with
``argument="RUN_DIR"`` and receives the text after the colon as ``argument``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import pathlib
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym

    from musicenv.composition import Composition

__all__ = [
    "PieceRecord",
    "SourceInfo",
    "UnknownSourceError",
    "OutputPathError",
    "register_source",
    "check_out_dir",
    "existing_pieces",
    "ExistingPiecesError",
    "available_sources",
    "get_source",
    "compose",
    "write_index",
    "add_commands",
]

Policy = Callable[[dict[str, np.ndarray]], int]
"""Plays one episode: observation -> action."""
PolicyMaker = Callable[[int], Policy]
"""Piece seed -> a fresh policy for that piece."""


class SourceFactory(Protocol):
    """Builds a source for ``env``; called once per :func:`compose` call.

    ``argument`` is the text after ``name:`` (None for sources without one);
    ``temperature`` (> 0) is 1 unless the source samples. Returns
    ``make_policy(seed)``, a fresh policy for each piece.
    """

    def __call__(self, env: gym.Env, *, argument: str | None, temperature: float) -> PolicyMaker: ...


class UnknownSourceError(ValueError):
    """A source name that is not registered (or whose provider is not available)."""


from musicenv.files import OutputPathError  # noqa: E402  (a piece name or path that would leave the folder)


class ExistingPiecesError(FileExistsError):
    """The output folder already holds pieces (and ``overwrite`` was not given)."""


@dataclass(frozen=True)
class SourceInfo:
    """A registered source.

    Attributes:
        name: what users type (``"rule"``; ``"run"`` for ``run:RUN_DIR``).
        factory: see :class:`SourceFactory`; or its entry point ``"module:name"`` until first used.
        summary: one line for listings and error messages.
        argument: metavar of the required ``name:ARGUMENT`` part, or None if it takes none.
        uses_temperature: whether ``temperature`` changes what it plays.
        env_kwargs: ``env_kwargs(argument) -> dict`` of env settings the source needs
            (e.g. the observation settings a trained run was trained with), or None.
        options: names of the extra keyword options the factory accepts (``"style"``
            and ``"prior"`` for the ``prior`` source); :func:`compose` passes them on.
    """

    name: str
    factory: SourceFactory | str
    summary: str
    argument: str | None = None
    uses_temperature: bool = False
    env_kwargs: Callable[[str | None], dict[str, Any]] | str | None = None
    options: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


_SOURCES: dict[str, SourceInfo] = {}

_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*")
_ENTRY_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def register_source(name: str, factory: SourceFactory | str, *, summary: str | None = None,
                    argument: str | None = None, uses_temperature: bool = False, replace: bool = False,
                    env_kwargs: Callable[[str | None], dict[str, Any]] | str | None = None,
                    options: tuple[str, ...] = ()) -> SourceFactory | str:
    """Make ``factory`` (see :class:`SourceFactory`) available to :func:`compose` and
    ``musicenv compose`` as ``name``.

    ``factory`` is the callable or its entry point ``"package.module:name"``, imported
    the first time the source is used (so listing sources imports nothing). ``name`` is
    lower-case letters, digits, ``_`` and ``-``. ``summary`` is one line for listings
    (default: the first line of the factory's docstring; required for an entry point).
    ``argument`` (e.g. ``"RUN_DIR"``) makes the source take a required ``name:ARGUMENT``.
    ``uses_temperature`` says the source samples at the ``temperature`` it is given.
    ``env_kwargs(argument)`` (a callable or an entry point) returns env settings the
    source needs on top of the user's (a run's ``observe_prior``, say); the user's own
    settings win on conflict. ``options`` names extra keyword options of the factory
    (``compose(..., options={"style": "essen"})``, ``musicenv compose prior --style essen``).
    Registering a taken name raises ``ValueError`` unless ``replace=True``.
    Returns ``factory``.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"source name {name!r} must be lower-case letters, digits, '_' or '-', starting with a letter")
    for what, value in (("factory", factory), ("env_kwargs", env_kwargs)):
        if isinstance(value, str):
            if not _ENTRY_RE.fullmatch(value):
                raise ValueError(f"source {name!r}: {what} {value!r} is not an entry point 'package.module:name'")
        elif value is not None and not callable(value):
            raise TypeError(f"source {name!r}: {what} must be callable or an entry point 'package.module:name', "
                            f"got {value!r}")
    if factory is None:
        raise TypeError(f"source {name!r}: factory must be callable, got None")
    if name in _SOURCES and not replace:
        raise ValueError(f"source {name!r} is already registered; pass replace=True to override it")
    if summary is None:
        if isinstance(factory, str):
            raise ValueError(f"source {name!r}: give a summary with an entry point (it is listed before import)")
        summary = (getattr(factory, "__doc__", None) or "").strip().split("\n")[0]
    _SOURCES[name] = SourceInfo(name, factory, summary, argument, uses_temperature, env_kwargs, tuple(options))
    return factory


def _resolve(entry: str) -> Any:
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


#: Registered source -> the same with its entry points imported (the registry keeps the names).
_RESOLVED: dict[SourceInfo, SourceInfo] = {}


def _load(info: SourceInfo) -> SourceInfo:
    """``info`` with its entry points imported (once: later calls import nothing);
    :class:`UnknownSourceError` saying why when one cannot be."""
    if not isinstance(info.factory, str) and not isinstance(info.env_kwargs, str):
        return info
    if info in _RESOLVED:
        return _RESOLVED[info]
    resolved = {}
    for what in ("factory", "env_kwargs"):
        entry = getattr(info, what)
        if not isinstance(entry, str):
            continue
        try:
            resolved[what] = _resolve(entry)
        except ImportError as e:
            why = f"{entry.partition(':')[0]} cannot be imported ({e})"
        except AttributeError as e:
            why = f"{entry!r} does not exist ({e})"
        except Exception as e:  # a provider's bug must not break the other sources; report it
            why = f"{entry.partition(':')[0]} failed to import ({type(e).__name__}: {e})"
        else:
            continue
        raise _unknown(info.name, f"source {info.name!r} ({info.summary}) is not available: {why}")
    _RESOLVED[info] = dataclasses.replace(info, **resolved)
    return _RESOLVED[info]


def available_sources() -> dict[str, str]:
    """Every registered source (``usage -> summary``); imports nothing (a source whose
    entry point cannot be imported says so when it is used)."""
    return {info.usage: info.summary for info in _SOURCES.values()}


def _unknown(spec: str, problem: str) -> UnknownSourceError:
    lines = [f"{problem}; available sources:"]
    lines += [f"  {usage}: {summary}" for usage, summary in available_sources().items()]
    return UnknownSourceError("\n".join(lines))


def get_source(spec: str) -> tuple[SourceInfo, str | None]:
    """Resolve ``"name"`` or ``"name:ARGUMENT"`` to its :class:`SourceInfo` (entry points
    imported) and argument.

    Raises :class:`UnknownSourceError` (listing what is registered) for an unknown
    name, a source whose entry point cannot be imported (saying why), or a
    missing/unexpected argument.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _unknown(repr(spec), f"source must be a name, got {spec!r}")
    name, sep, argument = spec.strip().partition(":")
    info = _SOURCES.get(name)
    if info is None:
        raise _unknown(spec, f"unknown source {spec!r}")
    if info.argument and not argument:
        raise _unknown(spec, f"source {name!r} needs an argument: {info.usage}")
    if not info.argument and sep:
        raise _unknown(spec, f"source {name!r} takes no argument, got {spec!r}")
    return _load(info), (argument or None)


# ---- built-in sources ------------------------------------------------------------------
def _random_source(env: gym.Env, *, argument: str | None, temperature: float) -> PolicyMaker:
    from musicenv.baselines import RandomPolicy

    masked = hasattr(env.unwrapped, "action_masks")
    return lambda seed: RandomPolicy(env, seed=seed, masked=masked)


def _rule_source(env: gym.Env, *, argument: str | None, temperature: float) -> PolicyMaker:
    from musicenv.baselines import RuleBasedPolicy

    return lambda seed: RuleBasedPolicy(env, seed=seed)


register_source("random", _random_source, summary="uniformly random tokens among those the env allows (action_masks)")
register_source("rule", _rule_source,
                summary="rule-based composer: chord tones on strong beats, scale steps between, tonic at both ends")

# The learned sources: the model layer (torch, no SB3), imported when first used.
register_source("prior", "agents.models.prior:prior_source", uses_temperature=True, options=("style", "prior"),
                summary="a pretrained note-RNN prior (--prior, default the general one) sampled at a temperature "
                        "in the env's key and chords (--style bach|essen|oneills)")
register_source("gan", "agents.models.discriminator:gan_source", uses_temperature=True,
                summary="the GAN's generator (agents.models.gan), one line per episode")
# Trained agents: a `musicenv train` run directory (training layer, SB3).
_RUN = "a trained agent (a `musicenv train` run directory)"
register_source("run", "agents.train.sources:run_source", argument="RUN_DIR",
                env_kwargs="agents.train.sources:observation_kwargs", summary=f"{_RUN}, sampling its policy")
register_source("run-greedy", "agents.train.sources:run_greedy_source", argument="RUN_DIR",
                env_kwargs="agents.train.sources:observation_kwargs", summary=f"{_RUN}, always its most likely token")
register_source("run-unsafe-sb3-zip", "agents.train.sources:run_unsafe_source", argument="RUN_DIR",
                env_kwargs="agents.train.sources:observation_kwargs",
                summary="UNSAFE: a run of an older musicenv that has only SB3 model.zip (a pickle, which can run "
                        "code): only for runs you trust")


# ---- output folder -----------------------------------------------------------------------
#: File kinds written per piece, in writing order: kind -> suffix.
PIECE_FILES: dict[str, str] = {"midi": ".mid", "musicxml": ".musicxml", "png": ".png", "wav": ".wav"}
INDEX_NAME = "index.md"
_FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_name(name: str) -> str:
    """A piece-name prefix that stays a plain file name inside the output folder."""
    if not isinstance(name, str) or not _FILE_NAME_RE.fullmatch(name) or ".." in name:
        raise OutputPathError(
            f"piece name {name!r} is not a plain file name (it could write outside the output folder); "
            "use letters, digits, '.', '_' and '-', starting with a letter or digit, e.g. 'rule'"
        )
    return name


def _default_name(info: SourceInfo, argument: str | None) -> str:
    if argument is None:
        return info.name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", pathlib.Path(argument).name or argument).strip("-.")
    return f"{info.name}_{slug}" if slug else info.name


def check_out_dir(out_dir: str | os.PathLike) -> pathlib.Path:
    """The output folder as a Path, if it is or can become a writable directory; else raise.

    Creates nothing. Raises ``NotADirectoryError`` if it (or an ancestor) exists as
    a file, ``PermissionError`` if it, or the nearest existing ancestor it would be
    created in, is not writable (:func:`musicenv.files.check_out_dir`).
    """
    from musicenv.files import check_out_dir as check

    return check(out_dir)


def existing_pieces(out: pathlib.Path) -> list[pathlib.Path]:
    """The piece files (MIDI, MusicXML, PNG, WAV) and ``index.md`` directly in ``out``."""
    if not out.is_dir():
        return []
    suffixes = set(PIECE_FILES.values())
    return sorted(p for p in out.iterdir()
                  if p.is_file() and (p.name == INDEX_NAME or p.suffix in suffixes) and not p.name.startswith("."))


def _target(out: pathlib.Path, file_name: str) -> pathlib.Path:
    """``out / file_name``, refusing anything that would land outside ``out``."""
    path = out / file_name
    if path.resolve().parent != out.resolve():
        raise OutputPathError(f"{str(path)!r} resolves outside the output folder {str(out)!r}; remove or rename it")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: a directory of that name exists in the output folder")
    return path


# ---- metrics -----------------------------------------------------------------------------
#: Per-piece statistics of ``musicenv.metrics`` shown in index.md: function -> the keys
#: kept from the mapping it returns for one Composition (all of them if none of these).
INDEX_METRICS: dict[str, tuple[str, ...]] = {
    "muspy_statistics": ("pitch_range", "n_pitch_classes_used", "pitch_class_entropy", "scale_consistency",
                         "empty_beat_rate", "groove_consistency"),
    "harmony_statistics": ("chord_tone_rate", "strong_beat_chord_tone_rate", "cadence_rate", "key_consistency"),
}


def _metrics_module() -> tuple[Any | None, str | None]:
    """``musicenv.metrics`` if it exists and imports, else (None, why not). Looked up
    at call time: the module is optional for composing."""
    from importlib.util import find_spec

    if find_spec("musicenv.metrics") is None:
        return None, "musicenv.metrics is not available"
    try:
        return importlib.import_module("musicenv.metrics"), None
    except Exception as e:  # another module's bug must not stop composing; say what happened
        return None, f"musicenv.metrics failed to import ({type(e).__name__}: {e})"


def _piece_metrics(module: Any, comp: Composition) -> dict[str, float]:
    """The :data:`INDEX_METRICS` of ``comp`` that ``module`` provides (numbers only)."""
    out: dict[str, float] = {}
    for fname, keys in INDEX_METRICS.items():
        fn = getattr(module, fname, None)
        if not callable(fn):
            continue
        try:
            values = fn(comp)
        except ValueError:  # e.g. a statistic undefined for this piece: show the others
            continue
        if not isinstance(values, Mapping):
            continue
        chosen = [k for k in keys if k in values] or list(values)
        for k in chosen:
            v = values[k]
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                out[str(k)] = float(v)
    return out


# ---- composing ---------------------------------------------------------------------------
@dataclass
class PieceRecord:
    """One composed piece.

    Attributes:
        index: 1-based number of the piece in its batch.
        name: file stem in the output folder (``rule_01``).
        seed: seed of the env reset and of the policy.
        composition: the finished :class:`~musicenv.composition.Composition`.
        reward_terms: episode total of each reward term, plus ``"total"``.
        metrics: statistics from :mod:`musicenv.metrics` (empty if it is not available).
        files: written files by kind (``"midi"``, ``"musicxml"``, ``"png"``, ``"wav"``).
    """

    index: int
    name: str
    seed: int
    composition: Composition
    reward_terms: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, pathlib.Path] = field(default_factory=dict)


def compose(source: str, n: int, out_dir: str | os.PathLike, *, env_id: str = "MusicComposition-v0",
            key: Any = None, progression: Any = None, meter: str | None = None, n_bars: int | None = None,
            tempo: float | None = None, seed: int = 0, temperature: float = 1.0, reward: Any = None,
            wav: bool | None = None, soundfont: str | os.PathLike | None = None, name: str | None = None,
            progress: bool | None = None, overwrite: bool = False,
            options: dict[str, Any] | None = None) -> list[PieceRecord]:
    """Compose ``n`` pieces with ``source`` and write them, with ``index.md``, into ``out_dir``.

    Args:
        source: ``"random"``, ``"rule"`` or another registered source
            (:func:`available_sources`); ``"name:ARGUMENT"`` for those taking one.
        n: number of pieces (>= 1). Piece ``i`` (1-based) uses seed ``seed + i - 1``
            for the env reset and the policy, so a batch is reproducible.
        out_dir: output folder, created if missing. Nothing is written outside it.
        env_id: a registered environment id.
        key, progression, meter, n_bars, tempo: env settings (``None``: the env's
            default, e.g. a random key and progression per piece).
        temperature: sampling temperature (> 0) of sources that sample; a value
            other than 1 for a source that does not is an error.
        reward: reward spec whose terms are reported (see ``rewards.make``); ``None``:
            the env's default (``"theory"`` for MusicComposition-v0).
        wav: ``None`` writes WAV files if FluidSynth and a soundfont are found,
            else prints one notice line; ``True`` requires them
            (:class:`~musicenv.audio.AudioUnavailable` otherwise); ``False`` skips WAV.
        soundfont: soundfont file for WAV (default: :func:`musicenv.audio.find_soundfont`).
        name: file-name prefix (default: the source's name), a plain file name.
        options: source options (``{"style": "essen", "prior": "default"}`` for the
            ``prior`` source); ``None`` values are left out, an option the source does
            not take is an error.
        progress: show a tqdm progress bar (default: when ``n > 3``).
        overwrite: if ``out_dir`` already holds pieces (MIDI, MusicXML, PNG, WAV files
            or ``index.md``), replace them all; without it such a folder is refused.
            The new pieces are written to a hidden staging folder inside ``out_dir``
            and moved in only when all are done, so the folder never holds a mix of
            old and new pieces, and a failed call leaves the old ones in place.

    Returns:
        One :class:`PieceRecord` per piece, in order.

    Raises:
        UnknownSourceError: unknown or unavailable ``source`` (the message lists the available ones).
        OutputPathError: ``name`` is not a plain file name.
        ExistingPiecesError: ``out_dir`` holds pieces and ``overwrite`` is False.
        NotADirectoryError, PermissionError, IsADirectoryError: ``out_dir`` is a
            file, is not writable, or a piece's file name is taken by a directory.
            All of these are raised before anything is written.
    """
    from musicenv.audio import audio_unavailable_reason, find_fluidsynth, find_soundfont

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of pieces, got {n!r}")
    n = int(n)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    info, argument = get_source(source)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ValueError(f"source {info.name!r} takes no option {', '.join(unknown)}; "
                         f"it takes: {', '.join(info.options) or 'none'}")
    if temperature != 1.0 and not info.uses_temperature:
        raise ValueError(f"source {info.name!r} does not sample, so temperature={temperature} would do nothing; "
                         "leave it at 1 or use a sampling source")
    prefix = _check_name(name if name is not None else _default_name(info, argument))
    out = check_out_dir(out_dir)
    width = max(2, len(str(n)))
    stems = [f"{prefix}_{i:0{width}d}" for i in range(1, n + 1)]
    wav_note: str | None = None  # why there are no WAV files
    if wav is None:
        reason = audio_unavailable_reason(soundfont)
        if reason is not None:
            wav_note = f"no WAV files: {reason}"
            print(f"notice: {wav_note}", file=sys.stderr)
    elif wav:
        find_fluidsynth()
        find_soundfont(soundfont)
    else:
        wav_note = "no WAV files: not requested"
    kinds = [k for k in PIECE_FILES if k != "wav" or wav_note is None]
    if out.is_dir():  # a new folder has no files yet to check
        for stem in stems:
            for kind in kinds:
                _target(out, stem + PIECE_FILES[kind])
        _target(out, INDEX_NAME)
    old = existing_pieces(out)
    if old and not overwrite:
        raise ExistingPiecesError(f"output folder {str(out)!r} already holds {len(old)} piece file(s) (e.g. "
                                  f"{old[0].name}); choose another --out, or pass --overwrite to replace them all")

    settings = dict(info.env_kwargs(argument)) if info.env_kwargs is not None else {}
    settings.update({k: v for k, v in dict(reward=reward, key=key, progression=progression, meter=meter,
                                           n_bars=n_bars, tempo=tempo).items() if v is not None})
    try:
        env = _make_env(env_id, **settings)
    except TypeError as e:  # a keyword this env does not take
        given = f"the settings of {source!r} and the options given" if info.env_kwargs is not None else "the options"
        raise ValueError(f"{env_id} rejects {given} ({', '.join(sorted(settings))}): {e}") from e
    try:
        make_policy = info.factory(env, argument=argument, temperature=float(temperature), **options)
        metrics_module, metrics_note = _metrics_module()
        out.mkdir(parents=True, exist_ok=True)
        staging = out / f".compose-{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            records = _compose_pieces(env, make_policy, info, argument, staging, stems, seed, kinds, soundfont,
                                      metrics_module, progress if progress is not None else n > 3)
            write_index(staging / INDEX_NAME, records, settings={
                "source": source, **options, "env": env_id, "reward": reward, "seed": seed,
                "temperature": temperature if info.uses_temperature else None,
                "key": key, "progression": progression, "meter": meter, "bars": n_bars, "tempo": tempo,
            }, notes=[note for note in (wav_note, metrics_note and f"no metrics: {metrics_note}") if note])
            for p in existing_pieces(out):  # all new pieces are ready: replace every old one
                p.unlink()
            for p in sorted(staging.iterdir()):
                os.replace(p, out / p.name)
            for r in records:
                r.files = {kind: out / p.name for kind, p in r.files.items()}
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        env.close()
    return records


def _make_env(env_id: str, **settings: Any) -> gym.Env:
    """``gym.make(env_id)`` with the settings that are not None; an unknown id raises
    ``ValueError`` naming musicenv's ids."""
    import gymnasium as gym

    import musicenv

    kwargs = {k: v for k, v in settings.items() if v is not None}
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise ValueError(f"cannot make env {env_id!r}: {e}; musicenv's ids: {', '.join(musicenv.ENV_IDS)}") from e


def _compose_pieces(env: gym.Env, make_policy: PolicyMaker, info: SourceInfo, argument: str | None,
                    out: pathlib.Path, stems: list[str], seed: int, kinds: list[str],
                    soundfont: str | os.PathLike | None, metrics_module: Any | None,
                    show_progress: bool) -> list[PieceRecord]:
    from musicenv.audio import to_wav
    from musicenv.baselines import run_episode
    from musicenv.progress import progress_bar
    from musicenv.render import save_png

    label = info.name if argument is None else f"{info.name} {pathlib.Path(argument).name or argument}"
    records: list[PieceRecord] = []
    bar = progress_bar(len(stems), desc=f"composing ({info.name})", unit="piece", disable=not show_progress)
    for i, stem in enumerate(stems, start=1):
        piece_seed = int(seed) + i - 1
        comp, totals = run_episode(env, make_policy(piece_seed), seed=piece_seed)
        comp.title = f"{label} #{i} ({comp.key.name}, {comp.meter})"
        paths = {kind: _target(out, stem + PIECE_FILES[kind]) for kind in kinds}
        comp.to_midi(paths["midi"])
        comp.to_musicxml(paths["musicxml"])
        save_png(comp, paths["png"], title=comp.title)
        if "wav" in paths:
            to_wav(comp, paths["wav"], soundfont=soundfont, midi_path=paths["midi"])
        metrics = _piece_metrics(metrics_module, comp) if metrics_module is not None else {}
        records.append(PieceRecord(i, stem, piece_seed, comp, {k: float(v) for k, v in totals.items()},
                                   metrics, paths))
        bar.update(1)
    bar.close()
    return records


# ---- index.md ----------------------------------------------------------------------------
def _fmt(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_index(path: str | os.PathLike, records: list[PieceRecord], settings: Mapping[str, Any] | None = None,
                notes: list[str] | None = None) -> pathlib.Path:
    """Write ``index.md``: the settings, a table of the pieces (key, meter, chords,
    total reward, links to their files), their reward terms (episode totals, with
    the mean over pieces), their metrics if any, and the piano rolls. Links are
    relative, so the folder can be moved. Written atomically."""
    from musicenv.render import write_atomically
    from musicenv.theory import NO_CHORD

    lines = ["# Compositions", ""]
    shown = {k: v for k, v in (settings or {}).items() if v is not None}
    if shown:
        lines += [", ".join(f"{k}: `{v}`" for k, v in shown.items()), ""]
    lines += [f"> {note}" for note in (notes or [])]
    if notes:
        lines.append("")
    lines += ["| # | piece | key | meter | chords | total reward | files |", "|---:|---|---|---|---|---:|---|"]
    for r in records:
        c = r.composition
        chords = " ".join(_spelled(code, c) for code, _, _ in c.chord_segments() if code != NO_CHORD) or "N.C."
        files = " · ".join(f"[{kind}]({p.name})" for kind, p in r.files.items())
        lines.append(f"| {r.index} | {_cell(c.title)} | {c.key.name} | {c.meter} | {_cell(chords)} | "
                     f"{_fmt(r.reward_terms.get('total', 0.0))} | {files} |")
    lines.append("")
    for heading, attr in (("Reward terms (episode totals)", "reward_terms"), ("Metrics", "metrics")):
        columns = list(dict.fromkeys(k for r in records for k in getattr(r, attr)))
        if not columns:
            continue
        lines += [f"## {heading}", "", f"| # | {' | '.join(columns)} |", f"|---:|{'---:|' * len(columns)}"]
        for r in records:
            values = getattr(r, attr)
            lines.append(f"| {r.index} | " + " | ".join(_fmt(values[k]) if k in values else "" for k in columns) + " |")
        # Rates with an empty denominator are NaN; the mean is over the pieces that have them.
        means = [_nanmean([getattr(r, attr)[k] for r in records if k in getattr(r, attr)]) for k in columns]
        lines += ["| **mean** | " + " | ".join(f"**{_fmt(float(m))}**" for m in means) + " |", ""]
    lines += ["## Piano rolls", ""]
    for r in records:
        if "png" in r.files:
            lines += [f"![{_cell(r.composition.title)}]({r.files['png'].name})", ""]
    text = "\n".join(lines)
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="index")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _spelled(code: int, comp: Composition) -> str:
    from musicenv.composition import spelled_chord_name

    return spelled_chord_name(code, comp.key)


# ---- command line ------------------------------------------------------------------------
def _cmd_compose(args: argparse.Namespace) -> int:
    from musicenv.audio import AudioRenderError, AudioUnavailable
    from musicenv.render import render_ansi

    source = args.source
    if args.model is not None:
        if source is not None:
            print(f"error: give either a source or --model, not both (got {source!r} and --model {args.model!r})",
                  file=sys.stderr)
            return 2
        source = f"{'run-greedy' if args.greedy else 'run'}:{args.model}"
    elif source is None:
        print("error: give a source (random, rule, prior, run:RUN_DIR, gan, ...) or --model RUN_DIR", file=sys.stderr)
        return 2
    elif args.greedy:
        print("error: --greedy goes with --model RUN_DIR (or use the source run-greedy:RUN_DIR)", file=sys.stderr)
        return 2
    try:
        records = compose(
            source, args.pieces, args.out, env_id=args.env, key=args.key, progression=args.progression,
            meter=args.meter, n_bars=args.bars, tempo=args.tempo, seed=args.seed, temperature=args.temperature,
            reward=args.reward, wav=args.wav, soundfont=args.soundfont, name=args.name, overwrite=args.overwrite,
            options={"style": args.style, "prior": args.prior},
        )
    except (AudioUnavailable, AudioRenderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first = records[0]
    print(f"== {first.composition.title}: total reward {first.reward_terms['total']:.1f}")
    print(render_ansi(first.composition))
    mean = np.mean([r.reward_terms["total"] for r in records])
    print(f"\nWrote {len(records)} piece(s) to {args.out}/ (mean total reward {mean:.1f}); "
          f"see {pathlib.Path(args.out) / INDEX_NAME}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``musicenv compose`` (see :mod:`musicenv.cli`)."""
    p = subparsers.add_parser(
        "compose", help="compose N pieces from a source; write MIDI, MusicXML, PNG, WAV and index.md",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", nargs="?", help="random, rule, or another registered source (prior, run:RUN_DIR, gan "
                                             "once their modules exist); an unknown name lists the available ones")
    p.add_argument("--model", metavar="RUN_DIR", help="play a trained run (a `musicenv train` directory), sampling "
                                                      "its policy: the same as the source run:RUN_DIR")
    p.add_argument("--greedy", action="store_true", help="with --model: always the policy's most likely token")
    p.add_argument("-n", "--pieces", type=int, default=4, help="number of pieces (default: 4)")
    p.add_argument("--out", default="out/compose", help="output folder, created if missing (default: out/compose)")
    p.add_argument("--env", default="MusicComposition-v0", help="environment id (default: MusicComposition-v0)")
    p.add_argument("--key", help="key, e.g. 'D minor', 'major', 'random' (default: the env's: random)")
    p.add_argument("--progression", help="e.g. 'I-vi-IV-V' or 'C Am F G7' (default: drawn from the env's bank)")
    p.add_argument("--meter", help="4/4, 3/4, 2/4 or 6/8 (default: the env's: 4/4)")
    p.add_argument("--bars", type=int, help="bars per piece (default: the env's: 4)")
    p.add_argument("--tempo", type=float, help="quarter notes per minute (default: the env's: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first piece; piece i uses seed+i-1 (default: 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of sampling sources (default: 1)")
    p.add_argument("--reward", help="reward spec whose terms are reported (default: the env's: theory)")
    p.add_argument("--prior", help="source prior: which prior, default (the general conditioned prior), bach, small "
                                   "or a checkpoint path (default: default)")
    p.add_argument("--style", help="source prior: the style to sample in, bach, essen or oneills (default: none)")
    wav = p.add_mutually_exclusive_group()
    wav.add_argument("--wav", dest="wav", action="store_const", const=True, default=None,
                     help="require WAV files (error if FluidSynth or a soundfont is missing)")
    wav.add_argument("--no-wav", dest="wav", action="store_const", const=False, help="write no WAV files")
    p.add_argument("--soundfont", help="General MIDI soundfont (.sf2) for WAV (default: $MUSICENV_SOUNDFONT "
                                       "or a system one)")
    p.add_argument("--name", help="file-name prefix of the pieces (default: the source's name)")
    p.add_argument("--overwrite", action="store_true",
                   help="if --out already holds pieces, replace them all (default: refuse)")
    p.set_defaults(func=_cmd_compose)
