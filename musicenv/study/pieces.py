"""Making a study: contexts, pieces from every source on each context, their sound and piano roll.

A *context* is what the pieces of a pair share: key, chord progression (one chord per
bar), meter and length in bars. :func:`create_study` draws ``contexts`` of them, has
every source write one piece on each, renders each piece's WAV (:mod:`musicenv.study.synth`)
and piano roll (:func:`musicenv.render.save_png`, without a title: the study is blind),
and pairs up the pieces of each context, all sources against each other.

Sources are those of ``musicenv compose`` (``random``, ``rule``, ``prior``, ``gan``,
``run:RUN_DIR``, ``run-greedy:RUN_DIR``, see :func:`musicenv.compose.available_sources`),
a run directory given as a bare path (the same as ``run:DIR``), and ``corpus:NAME`` for
real melodies (``corpus:bach``, ``corpus:essen``, a file or folder, as
:func:`musicenv.corpus.load` takes). With a corpus source the contexts *come from* the
corpus: each is an excerpt of ``n_bars`` bars of a held-out melody (test split of
``corpus.split(seed=0)``, then the valid and training splits if it has too few),
whose key it keeps and whose harmony is reduced to the chord on each bar's downbeat; the
other sources then write over that same progression, and the corpus piece plays over it
too. Without one, keys are drawn uniformly from the 24 and progressions from
:data:`musicenv.theory.COMMON_PROGRESSIONS`.

The study is built in a temporary folder beside ``folder`` and renamed into place when
complete, so a failed or interrupted creation leaves nothing behind.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicenv.files import staged_folder
from musicenv.study.db import DB_NAME, MEDIA_DIR, StudyDB, StudyDBError, file_sha256

__all__ = ["Context", "StudySpecError", "create_study", "parse_sources", "draw_contexts", "corpus_contexts",
           "compose_on_contexts", "DEFAULT_ENV"]

DEFAULT_ENV = "MusicComposition-v0"
CORPUS_PREFIX = "corpus:"


class StudySpecError(ValueError):
    """Study settings that cannot work: unknown source, bad counts, a folder in the way."""


@dataclass(frozen=True)
class Context:
    """What both pieces of a pair share."""

    index: int
    key: str
    progression: str  # chord symbols, one per bar, e.g. "Dm Gm A7 Dm"
    meter: str
    n_bars: int


def parse_sources(specs: Sequence[str]) -> list[str]:
    """Normalise source specs: a bare existing directory becomes ``run:DIR``; checks there
    are at least two distinct sources, at most one corpus, and that each compose source exists."""
    from musicenv.compose import get_source

    out = []
    for spec in specs:
        spec = str(spec).strip()
        if not spec.startswith(CORPUS_PREFIX) and ":" not in spec and Path(spec).is_dir():
            spec = f"run:{spec}"
        if spec.startswith(CORPUS_PREFIX):
            if not spec[len(CORPUS_PREFIX):]:
                raise StudySpecError("corpus source needs a name or path: corpus:bach, corpus:essen, corpus:DIR")
        else:
            try:
                get_source(spec)
            except ValueError as e:
                raise StudySpecError(f"{e}\n  corpus:NAME: real melodies (corpus:bach, corpus:essen, corpus:PATH)") from e
        if spec in out:
            raise StudySpecError(f"source {spec!r} given twice")
        out.append(spec)
    if len(out) < 2:
        raise StudySpecError(f"a listening study compares at least two sources; got {out or 'none'}")
    if sum(s.startswith(CORPUS_PREFIX) for s in out) > 1:
        raise StudySpecError("give at most one corpus:NAME source (its melodies set the contexts)")
    return out


def draw_contexts(n: int, *, n_bars: int, meter: str, seed: int) -> list[Context]:
    """``n`` contexts with a key drawn uniformly from the 24 and a progression from the bank."""
    from musicenv.theory import COMMON_PROGRESSIONS, KEY_NAMES, Key, chord_name, resolve_progression

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        key = Key.parse(KEY_NAMES[int(rng.integers(len(KEY_NAMES)))])
        bank = COMMON_PROGRESSIONS["minor" if key.minor else "major"]
        numerals = bank[int(rng.integers(len(bank)))]
        codes = resolve_progression(list(numerals), key)
        chords = [chord_name(codes[b % len(codes)]) for b in range(n_bars)]
        out.append(Context(i, key.name, " ".join(chords), meter, n_bars))
    return out


def _bar_chord(chords: np.ndarray, key_index: int) -> int:
    from musicenv.theory import NO_CHORD, Key, resolve_progression

    if chords[0] != NO_CHORD:
        return int(chords[0])
    known = chords[chords != NO_CHORD]
    if known.size:
        values, counts = np.unique(known, return_counts=True)
        return int(values[np.argmax(counts)])
    key = Key.from_index(key_index)
    return resolve_progression(["i" if key.minor else "I"], key)[0]


def corpus_contexts(name: str, n: int, *, n_bars: int, meter: str, seed: int,
                    ) -> tuple[list[Context], list[np.ndarray]]:
    """``n`` contexts from held-out melodies of corpus ``name`` and the excerpts' tokens
    (see the module doc). Raises :class:`StudySpecError` if fewer than ``n`` melodies fit."""
    from musicenv.corpus import CorpusError, load
    from musicenv.encoding import HOLD, REST
    from musicenv.theory import KEY_NAMES, Meter, chord_name

    try:
        corpus = load(name, progress=False)
    except CorpusError as e:
        raise StudySpecError(f"corpus source {name!r}: {e}") from e
    bar = Meter.parse(meter).steps_per_bar(corpus[0].grid.steps_per_quarter)
    split = corpus.split(seed=0)
    fits: list[tuple[Any, int]] = []
    # Held-out melodies first (the prior and n-gram models were fitted on the training split);
    # the valid and training splits only when the test split has too few that fit.
    for part in (split.test, split.valid, split.train):
        for m in part:
            start = bar if m.pickup_steps else 0
            if m.meter == meter and m.n_steps >= start + n_bars * bar:
                fits.append((m, start))
        if len(fits) >= n:
            break
    if len(fits) < n:
        raise StudySpecError(f"corpus {name!r} has {len(fits)} melodies in {meter} with {n_bars} full bars; "
                             f"{n} contexts were asked for")
    rng = np.random.default_rng(seed)
    chosen = [fits[i] for i in sorted(rng.choice(len(fits), size=n, replace=False))]
    contexts, excerpts = [], []
    for i, (m, start) in enumerate(chosen):
        tokens = np.array(m.tokens[start:start + n_bars * bar], dtype=np.int64)
        if tokens[0] == HOLD:
            tokens[0] = REST
        chords = [chord_name(_bar_chord(np.asarray(m.chords[start + b * bar:start + (b + 1) * bar]), m.key))
                  for b in range(n_bars)]
        contexts.append(Context(i, KEY_NAMES[m.key], " ".join(chords), meter, n_bars))
        excerpts.append(tokens)
    return contexts, excerpts


def compose_on_contexts(source: str, contexts: Sequence[Context], *, seed: int = 0, temperature: float = 1.0,
                        env_id: str = DEFAULT_ENV, env_kwargs: dict[str, Any] | None = None) -> list[Any]:
    """One :class:`~musicenv.composition.Composition` by compose source ``source`` per context
    (piece i uses seed ``seed + i``)."""
    from musicenv.baselines import run_episode
    from musicenv.compose import _make_env, get_source

    info, argument = get_source(source)
    if temperature != 1.0 and not info.uses_temperature:
        temperature = 1.0  # the study's temperature is for the sources that sample
    if not contexts:
        return []
    first = contexts[0]
    settings = dict(info.env_kwargs(argument)) if info.env_kwargs is not None else {}
    settings.update(env_kwargs or {})
    settings.update(n_bars=first.n_bars, meter=first.meter)
    env = _make_env(env_id, **settings)
    try:
        make_policy = info.factory(env, argument=argument, temperature=float(temperature))
        out = []
        for ctx in contexts:
            comp, _ = run_episode(env, make_policy(seed + ctx.index), seed=seed + ctx.index,
                                  options={"key": ctx.key, "progression": ctx.progression})
            out.append(comp)
    finally:
        env.close()
    return out


def _check_counts(contexts: int, n_bars: int) -> None:
    for name, v in (("contexts", contexts), ("n_bars", n_bars)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise StudySpecError(f"{name} must be a positive whole number, got {v!r}")


def create_study(folder: str | os.PathLike, sources: Sequence[str], *, contexts: int = 10, n_bars: int = 4,
                 meter: str = "4/4", seed: int = 0, temperature: float = 1.0, name: str | None = None,
                 audio: str = "auto", soundfont: str | os.PathLike | None = None, tempo: float = 100.0,
                 progress: bool = True) -> Path:
    """Create a study in ``folder`` (which must not exist, or be empty) and return the folder.

    Every source writes one piece per context; each context gives ``S (S - 1) / 2`` pairs
    for ``S`` sources. ``audio`` is ``"auto"``, ``"fluidsynth"`` or ``"numpy"`` (see
    :func:`musicenv.study.synth.audio_backend`). Raises :class:`StudySpecError` for bad
    settings before anything is written.
    """
    from tqdm import tqdm

    from musicenv.composition import Composition
    from musicenv.render import save_png
    from musicenv.study.synth import audio_backend, render_wav
    from musicenv.theory import Meter

    _check_counts(contexts, n_bars)
    try:
        meter = str(Meter.parse(meter))
    except ValueError as e:
        raise StudySpecError(f"meter: {e}") from e
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StudySpecError(f"{str(folder)!r} exists and is not an empty folder; give a new folder for the study")
    specs = parse_sources(sources)
    backend = audio_backend(soundfont, audio)
    corpus = [s for s in specs if s.startswith(CORPUS_PREFIX)]
    excerpts: list[np.ndarray] = []
    if corpus:
        ctxs, excerpts = corpus_contexts(corpus[0][len(CORPUS_PREFIX):], contexts, n_bars=n_bars, meter=meter,
                                         seed=seed)
    else:
        ctxs = draw_contexts(contexts, n_bars=n_bars, meter=meter, seed=seed)

    pieces: dict[str, list[Composition]] = {}
    for spec in tqdm(specs, desc="composing", unit="source", disable=not progress):
        if spec.startswith(CORPUS_PREFIX):
            pieces[spec] = [Composition.from_progression(tokens, ctx.progression, ctx.key, ctx.meter, tempo=tempo)
                            for ctx, tokens in zip(ctxs, excerpts)]
        else:
            pieces[spec] = compose_on_contexts(spec, ctxs, seed=seed, temperature=temperature,
                                               env_kwargs={"tempo": tempo})

    folder.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(folder, tmp_name=f".{folder.name}.{secrets.token_hex(4)}.creating") as tmp:
        (tmp / MEDIA_DIR).mkdir(parents=True)
        rows = []
        jobs = [(spec, ctx, comp) for spec in specs for ctx, comp in zip(ctxs, pieces[spec])]
        for spec, ctx, comp in tqdm(jobs, desc="rendering", unit="piece", disable=not progress):
            stem = secrets.token_hex(8)  # file names say nothing about the source: the study is blind
            comp.tempo = tempo
            wav, _ = render_wav(comp, tmp / MEDIA_DIR / f"{stem}.wav", backend=backend, soundfont=soundfont)
            png = save_png(comp, tmp / MEDIA_DIR / f"{stem}.png", title="")
            rows.append({"source": spec, "context": ctx.index, "key": ctx.key, "progression": ctx.progression,
                         "meter": ctx.meter, "n_bars": ctx.n_bars, "seed": seed + ctx.index,
                         "tokens": comp.tokens.tolist(), "chords": comp.chords[:comp.n_steps].tolist(),
                         "wav": wav.name, "png": png.name, "wav_sha256": file_sha256(wav),
                         "png_sha256": file_sha256(png)})
        settings = {"sources": specs, "contexts": [asdict(c) for c in ctxs], "n_bars": n_bars, "meter": meter,
                    "seed": seed, "temperature": temperature, "audio": backend, "tempo": tempo}
        with StudyDB(tmp / DB_NAME, create=True) as db:
            study_id = db.create_study(name or folder.name, settings)
            ids = db.add_pieces(study_id, rows)
            by_ctx: dict[int, list[int]] = {}
            for pid, row in zip(ids, rows):
                by_ctx.setdefault(row["context"], []).append(pid)
            db.add_pairs(study_id, [pair for members in by_ctx.values()
                                    for pair in itertools.combinations(members, 2)])
            db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if progress:
        n_pairs = sum(len(m) * (len(m) - 1) // 2 for m in by_ctx.values())
        print(f"study {folder}: {len(rows)} pieces, {n_pairs} pairs, audio by {backend}", file=sys.stderr)
    return folder


def check_media(db: StudyDB) -> None:
    """Raise :class:`StudyDBError` if a piece's WAV or PNG is missing or changed since the
    study was made (its SHA-256 differs)."""
    media = db.folder / MEDIA_DIR
    bad = []
    for name, digest in db.media_files().items():
        path = media / name
        if not path.is_file():
            bad.append(f"{name} is missing")
        elif file_sha256(path) != digest:
            bad.append(f"{name} has changed (SHA-256 differs)")
    if bad:
        raise StudyDBError(f"study {str(db.folder)!r} media do not match its database: " + "; ".join(bad[:5])
                           + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
