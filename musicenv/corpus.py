"""Melody corpora: music21's bundled corpus and user files as cached token arrays.

:func:`load` turns a collection of scores into monophonic melodies on the env's
token grid (:class:`~musicenv.encoding.TokenGrid`), each with its key, meter and a
chord track, and returns a :class:`MelodyCorpus` with a :class:`CorpusReport`
that counts every adjustment made on the way. Nothing is changed silently.

Sources
-------
``"bach"``
    The 371 four-part chorales in Riemenschneider's order
    (``music21.corpus.chorales.Iterator``). Riemenschneider prints 21 of them
    twice; each file is loaded once (the repeats are counted as
    ``skipped_duplicate``), which leaves 350 distinct chorales, of which 344
    have a supported, unchanging meter.
``"essen"``
    The Essen folk-song collection (music21 corpus folder ``essenFolksong``,
    31 ABC files holding about 8,500 songs).
``"oneills"``
    O'Neill's *Music of Ireland* (1850), corpus folder ``oneills1850`` (ABC).
    Some of its files overlap or are second transcriptions of the same tunes:
    each of O'Neill's numbers is loaded once, from the first file in name order.

A tune whose ABC text repeats one read before (in any source) is loaded once;
repeats count as ``skipped_duplicate``.
any music21 corpus work
    e.g. ``"bach/bwv66.6"`` or ``"essenFolksong/han1"``, as accepted by
    ``music21.corpus.getWork``.
user files
    A folder (searched recursively), a file, or a list of them: MIDI
    (``.mid``/``.midi``), MusicXML (``.xml``/``.musicxml``/``.mxl``) and ABC
    (``.abc``).

ABC files are split into tunes at their ``X:`` lines and each tune is parsed on
its own (with the fields of the file header before the first ``X:`` that the tune
does not set itself), so a broken tune costs only itself and ``limit`` need not
parse whole collections.

Piece ids
---------
Splits and reports name pieces by id: the corpus work path without extension
for corpus files (``"bach/bwv66.6"``), the path relative to the given folder
(or the file name, for files given directly; the full path if two inputs would
share a name) for user files, with ``#<X number>`` appended for a tune of a
multi-tune ABC file (``"essenFolksong/altdeu10#1"``).

Rules
-----
Melody
    The top part of a multi-part score: the part named "Soprano" if there is
    one (some chorales list trumpets, recorders or violins first), else the
    first part (the top staff in MusicXML, the first track with notes in MIDI);
    for a single-part file, that part. Ties are merged (``stripTies``). A
    chord, or several notes struck together in different voices of the part,
    gives its highest note
    (``chord_top_note`` counts the reductions). Grace notes are dropped
    (``grace_dropped``), unpitched (percussion) notes too (``unpitched_dropped``).
    Chord symbols are never melody notes.
Key
    The first :class:`music21.key.Key` in the score when it names a mode
    (``key_from_score``). Church modes map onto the major or minor key on the
    same tonic by their third (dorian, phrygian, aeolian, locrian -> minor;
    ionian, lydian, mixolydian -> major; ``key_mode_mapped``). A bare key
    signature picks the best-correlated key of ``analyze('key')`` that has that
    signature (``key_from_signature``). With neither, ``analyze('key')`` decides
    (``key_analyzed``).
Meter
    The first time signature of the top part (of the score if the part has
    none); without one, 4/4 (``meter_defaulted``). A piece whose meter is not a
    :class:`~musicenv.theory.Meter` (4/4, 3/4, 2/4, 6/8) is skipped
    (``skipped_unsupported_meter``); so is a piece whose time signature changes
    (``skipped_meter_change``), because a composition carries one meter and
    bar lines after the change would be misplaced. music21's ABC reader marks
    an incomplete bar inside a tune (a phrase-final bar, an upbeat after a
    double bar) with a time signature of its length, so about 10 % of the Essen
    songs and a few O'Neill tunes are skipped this way.
Pickup
    When the first bar of the top part is shorter than a full bar of the meter
    and another bar follows, it is an upbeat: the melody is padded at the start
    with a rest completing that bar, so step 0 is always a downbeat and every
    later bar line falls where the score has it (``pickup_padded``; the padding
    in steps is :attr:`Melody.pickup_steps`). The end is not padded: a melody
    lasts until the end of its last bar (its final rests included).
Grid
    Onsets and ends are rounded to the nearest step (halves round up); a note
    whose onset or end was off the grid (tuplets, very short values) counts as
    ``quantized``. A note that would vanish gets 1 step
    (``extended_to_one_step``). Where two notes land on the same step the later
    one in the score wins (``collision_replaced``); a note still sounding when
    the next one starts is cut short (``shortened_by_next``).
Range
    A pitch outside ``grid.min_pitch..grid.max_pitch`` is moved by octaves into
    the range (``pitch_folded``); if its pitch class does not occur in a range
    narrower than an octave, the note is dropped (``pitch_unfoldable_dropped``).
Chord track
    One chord code per grid step (:mod:`musicenv.theory` codes, ``NO_CHORD``
    where none is known). Chord symbols in the score
    (``music21.harmony.ChordSymbol``) hold from their offset to the next one,
    each read as the closest quality on its root (``chords_from_symbols``). Otherwise, when ``chords`` is on (the default
    for Bach chorales only) and the score has two or more parts, each beat of
    the meter gets the chord best matching the pitch classes of all parts
    sounding in that beat (only the voices when parts are named
    Soprano/Alto/Tenor/Bass, so that timpani and obbligato instruments stay
    out; :func:`match_chord`; ``chords_from_parts``, and
    ``chord_beats_unrecognised`` counts beats left ``NO_CHORD``). Each tone
    weighs how long it sounds within the beat, plus one beat if it sounds at the
    beat's start, so passing notes between beats do not outvote the harmony.
    These are the vertical slices of ``Score.chordify()`` weighted by duration
    and onset, computed directly from the parts because that is several times
    faster than chordifying. Otherwise the track is ``NO_CHORD``.
Skips and errors
    A file the parser rejects (or cannot read) is skipped and its name and the
    parser's message are recorded in :attr:`CorpusReport.errors`
    (``skipped_unreadable``); a piece without notes is skipped
    (``skipped_no_notes``). The rest loads; if nothing does, :class:`CorpusError`.

Parsing and caching
-------------------
Files are parsed once, in parallel (``jobs`` worker processes, default
``min(2, cpu_count)``), with a progress bar. The result is cached as one ``.npz``
(concatenated tokens and chords plus per-piece offsets, keys and pickups) and a
JSON file (piece metadata and the report) in ``cache_dir``, ``$MUSICENV_CACHE``
or ``~/.cache/musicenv``, written atomically. The cache key covers the source
(corpus name, or the user files' paths, sizes and modification times), the grid
(pitch range and steps per quarter), the chord option, ``limit``, the music21
version and :data:`FORMAT_VERSION`. Loading from the cache reads only these two
files (``np.load(allow_pickle=False)`` and JSON); nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from musicenv.composition import Composition
from musicenv.encoding import DEFAULT_GRID, TokenGrid, notes_to_tokens
from musicenv.theory import (
    CHORD_PC_MASK,
    CHORD_ROOT,
    KEY_NAMES,
    N_CHORDS,
    NO_CHORD,
    Key,
    Meter,
    MusicTheoryError,
)

if TYPE_CHECKING:  # music21 is imported lazily: it takes a while and the env never needs it
    import music21

__all__ = [
    "FORMAT_VERSION",
    "SOURCES",
    "SUPPORTED_EXTENSIONS",
    "CorpusError",
    "CorpusReport",
    "Melody",
    "MelodyCorpus",
    "CorpusSplit",
    "load",
    "extract_melody",
    "match_chord",
    "default_cache_dir",
]

#: Version of the cache layout and of the extraction rules; bump it when either changes.
FORMAT_VERSION = 1

#: Named sources: name -> music21 corpus folder (Bach is read through the chorale list).
SOURCES: dict[str, str] = {
    "bach": "bach",
    "essen": "essenFolksong",
    "oneills": "oneills1850",
}

#: File extensions read from user folders and file lists, by format.
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".mid": "midi", ".midi": "midi",
    ".xml": "musicxml", ".musicxml": "musicxml", ".mxl": "musicxml",
    ".abc": "abc",
}

#: Every counter name the report may use, with what it counts.
REASONS: dict[str, str] = {
    "quantized": "notes whose onset or end was off the grid, rounded to the nearest step",
    "extended_to_one_step": "notes shorter than half a step, given one step",
    "collision_replaced": "notes replaced by a later note starting on the same step",
    "shortened_by_next": "notes cut short because the next note starts before they end",
    "grace_dropped": "grace notes dropped",
    "unpitched_dropped": "unpitched (percussion) notes dropped",
    "chord_top_note": "chords or simultaneous notes in the top part reduced to the highest note",
    "pitch_folded": "notes moved by octaves into the grid's pitch range",
    "pitch_unfoldable_dropped": "notes whose pitch class does not occur in the grid's range, dropped",
    "pickup_padded": "pieces starting with an upbeat, padded with a rest to a full bar",
    "key_from_score": "pieces whose key is the score's own Key",
    "key_mode_mapped": "pieces in a church mode mapped to the major/minor key on the same tonic",
    "key_from_signature": "pieces whose mode was chosen by analysis among the keys of their signature",
    "key_analyzed": "pieces without a key signature, key found by analyze('key')",
    "meter_defaulted": "pieces without a time signature, read as 4/4",
    "chords_from_symbols": "pieces whose chord track comes from chord symbols",
    "chords_from_parts": "pieces whose chord track is derived per beat from all parts",
    "chord_beats_unrecognised": "beats of derived chord tracks left NO_CHORD",
    "skipped_unsupported_meter": "pieces skipped: meter not 4/4, 3/4, 2/4 or 6/8",
    "skipped_meter_change": "pieces skipped: time signature changes",
    "skipped_no_notes": "pieces skipped: no pitched notes",
    "skipped_unreadable": "files or tunes skipped: the parser failed",
    "skipped_duplicate": "files or ABC tunes listed twice, loaded once",
}

_SKIP_REASONS = tuple(r for r in REASONS if r.startswith("skipped_"))
_MAJOR_MODES = {"major", "ionian", "lydian", "mixolydian"}
_MINOR_MODES = {"minor", "dorian", "phrygian", "aeolian", "locrian"}
_EPS = 1e-6


class CorpusError(ValueError):
    """A corpus name, path or option is not usable, or a corpus yielded no melodies."""


class _SkipPiece(Exception):
    """Raised inside extraction when a piece is skipped for one of ``_SKIP_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---- records --------------------------------------------------------------------------------
@dataclass(eq=False)
class Melody:
    """One monophonic melody of a corpus.

    Attributes:
        tokens: 1-D int64 array, one token per grid step.
        key: key index 0..23 (see :data:`musicenv.theory.KEY_NAMES`).
        meter: time signature, one of ``Meter.SUPPORTED`` (``"4/4"``...).
        chords: 1-D int64 array of chord codes, same length as ``tokens``.
        id: the piece id (stable; splits hash it).
        title: the score's title, or the id.
        path: the file it came from.
        pickup_steps: rest steps added before an upbeat (0 without one).
        grid: pitch range and resolution of the tokens.
    """

    tokens: np.ndarray
    key: int
    meter: str
    chords: np.ndarray
    id: str
    title: str = ""
    path: str = ""
    pickup_steps: int = 0
    grid: TokenGrid = DEFAULT_GRID

    @property
    def n_steps(self) -> int:
        return len(self.tokens)

    @property
    def key_name(self) -> str:
        return KEY_NAMES[self.key]

    def to_composition(self, tempo: float = 100.0) -> Composition:
        """The melody as a :class:`~musicenv.composition.Composition` (copies the arrays)."""
        return Composition(np.array(self.tokens), Key.from_index(self.key), Meter.parse(self.meter),
                           np.array(self.chords), self.grid, tempo=tempo, title=self.title or self.id)

    def __repr__(self) -> str:
        return (f"Melody(id={self.id!r}, title={self.title!r}, key={self.key_name!r}, "
                f"meter={self.meter!r}, n_steps={self.n_steps})")


@dataclass
class CorpusReport:
    """What loading a corpus did: counts per reason and what happened to which piece.

    Attributes:
        source: the corpus name or a description of the user files.
        n_files: files (or corpus works) read.
        n_melodies: melodies loaded.
        counts: reason -> number of notes, beats or pieces (see :data:`REASONS`).
        problems: piece id -> reason -> count, for every piece something was done to.
        skipped: piece id -> why it was skipped.
        errors: file (or tune) -> the parser's message, for inputs that failed to parse.
        parse_seconds: wall time spent parsing (the original parse, when cached).
        from_cache: whether this load read the cache.
    """

    source: str = ""
    n_files: int = 0
    n_melodies: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    parse_seconds: float = 0.0
    from_cache: bool = False

    def count(self, reason: str, n: int = 1, piece: str | None = None) -> None:
        """Add ``n`` to ``reason`` (and to ``piece``'s problems when given)."""
        if n <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + n
        if piece is not None:
            per = self.problems.setdefault(piece, {})
            per[reason] = per.get(reason, 0) + n

    def merge(self, other: CorpusReport) -> None:
        """Add another report's counts, problems, skips and errors to this one."""
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        for piece, per in other.problems.items():
            mine = self.problems.setdefault(piece, {})
            for reason, n in per.items():
                mine[reason] = mine.get(reason, 0) + n
        self.skipped.update(other.skipped)
        self.errors.update(other.errors)
        self.n_files += other.n_files
        self.n_melodies += other.n_melodies

    @property
    def n_skipped(self) -> int:
        return sum(self.counts.get(r, 0) for r in _SKIP_REASONS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "n_files": self.n_files, "n_melodies": self.n_melodies,
            "counts": dict(sorted(self.counts.items())), "problems": self.problems,
            "skipped": self.skipped, "errors": self.errors,
            "parse_seconds": self.parse_seconds, "from_cache": self.from_cache,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusReport:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def summary(self) -> str:
        """A few lines for people: totals, then every counter with its meaning."""
        lines = [f"{self.source}: {self.n_melodies} melodies from {self.n_files} files"
                 f"{' (cached)' if self.from_cache else ''}, parsed in {self.parse_seconds:.1f} s"]
        for reason, n in sorted(self.counts.items()):
            lines.append(f"  {reason:<26} {n:>7}  {REASONS.get(reason, '')}")
        for name, msg in list(self.errors.items())[:10]:
            lines.append(f"  error: {name}: {msg}")
        if len(self.errors) > 10:
            lines.append(f"  ... and {len(self.errors) - 10} more errors")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class CorpusSplit(NamedTuple):
    """Train, validation and test corpora, disjoint by piece."""

    train: MelodyCorpus
    valid: MelodyCorpus
    test: MelodyCorpus


@dataclass
class MelodyCorpus:
    """A list of :class:`Melody` on one grid, with the report of how it was loaded."""

    melodies: list[Melody]
    report: CorpusReport
    grid: TokenGrid = DEFAULT_GRID
    name: str = ""

    def __len__(self) -> int:
        return len(self.melodies)

    def __iter__(self) -> Iterator[Melody]:
        return iter(self.melodies)

    def __getitem__(self, index: int) -> Melody:
        return self.melodies[index]

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.melodies]

    @property
    def n_steps(self) -> int:
        """Total number of grid steps (tokens) over all melodies."""
        return sum(m.n_steps for m in self.melodies)

    def token_arrays(self) -> list[np.ndarray]:
        """Each melody's tokens (read-only views; copy before changing them)."""
        return [m.tokens for m in self.melodies]

    def chord_arrays(self) -> list[np.ndarray]:
        """Each melody's chord codes per step."""
        return [m.chords for m in self.melodies]

    def compositions(self, tempo: float = 100.0) -> list[Composition]:
        """Each melody as a :class:`~musicenv.composition.Composition`."""
        return [m.to_composition(tempo) for m in self.melodies]

    def subset(self, ids: Iterable[str], name: str | None = None) -> MelodyCorpus:
        """The melodies whose id is in ``ids``, in corpus order (sharing this report)."""
        wanted = set(ids)
        return MelodyCorpus([m for m in self.melodies if m.id in wanted], self.report, self.grid,
                            self.name if name is None else name)

    def split(self, seed: int = 0, valid: float = 0.1, test: float = 0.1) -> CorpusSplit:
        """Deterministic train/valid/test split by piece.

        Each piece goes to a part by a hash of ``seed`` and its id alone, so the
        split does not depend on the order of the corpus and adding or removing
        pieces never moves the others. The fractions are expected values; small
        corpora deviate from them.
        """
        if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
            raise CorpusError(f"split fractions valid={valid}, test={test} must be >= 0 and sum to less than 1")
        parts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
        for m in self.melodies:
            u = _unit_hash(f"{seed}:{m.id}")
            parts["test" if u < test else "valid" if u < test + valid else "train"].append(m.id)
        return CorpusSplit(*(self.subset(parts[p], f"{self.name}[{p}]") for p in ("train", "valid", "test")))

    def __repr__(self) -> str:
        return f"MelodyCorpus(name={self.name!r}, melodies={len(self)}, steps={self.n_steps})"


def _unit_hash(text: str) -> float:
    """A number in [0, 1) from a stable hash of ``text`` (unlike ``hash``, not salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


# ---- chords ---------------------------------------------------------------------------------
_CHORD_MASKS = CHORD_PC_MASK[:N_CHORDS].astype(np.float64)  # (N_CHORDS, 12)
_MISSING_TONE_PENALTY = 0.1  # a triad beats a 7th chord whose 7th is absent
_BASS_ROOT_BONUS = 0.05  # breaks near-ties (open 3rds, symmetric chords) towards the bass
_FOUR_TONE_PENALTY = 0.15  # a passing note that happens to be a 7th does not make a 7th chord
_CHORD_SIZE = _CHORD_MASKS.sum(axis=1)


def match_chord(weights: Sequence[float] | np.ndarray, bass: int | None = None, *,
                root: int | None = None, min_fit: float = 0.6) -> int:
    """Chord code (root + quality of :data:`musicenv.theory.QUALITIES`) closest to a
    pitch-class profile, or ``NO_CHORD``.

    ``weights`` has 12 non-negative entries (how long each pitch class sounds; a
    0/1 vector works too). Each chord scores the weight of its tones minus the
    weight of the other pitch classes (both as fractions of the total), minus
    0.1 per chord tone that does not sound, minus 0.15 for a four-tone (7th)
    chord, plus 0.05 when its root is ``bass``;
    the highest score wins (the lowest code on an exact tie). ``NO_CHORD`` when
    fewer than two distinct chord tones sound or the chord tones hold less than
    ``min_fit`` of the weight. ``root`` restricts the choice to chords on that root
    (used for chord symbols, whose root is known).

    >>> from musicenv.theory import chord_name
    >>> chord_name(match_chord([1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]))   # C E G
    'C'
    >>> chord_name(match_chord([0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1]))   # G B D F
    'G7'
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (12,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be 12 non-negative numbers (one per pitch class), got {weights!r}")
    total = w.sum()
    if total <= 0:
        return NO_CHORD
    w = w / total
    inside = _CHORD_MASKS @ w
    missing = _CHORD_MASKS @ (w <= _EPS)
    score = 2 * inside - 1 - _MISSING_TONE_PENALTY * missing - _FOUR_TONE_PENALTY * (_CHORD_SIZE > 3)
    if bass is not None:
        score = score + _BASS_ROOT_BONUS * (CHORD_ROOT[:N_CHORDS] == bass % 12)
    if root is not None:
        score = np.where(CHORD_ROOT[:N_CHORDS] == root % 12, score, -np.inf)
    best = int(np.argmax(np.round(score, 9)))
    tones_present = int(np.sum(_CHORD_MASKS[best] * (w > _EPS)))
    if tones_present < 2 or inside[best] < min_fit - _EPS:
        return NO_CHORD
    return best


# ---- extraction -----------------------------------------------------------------------------
def _m21() -> Any:
    import music21

    return music21


def _first_key(score: music21.stream.Score, log: _Log) -> int:
    m21 = _m21()
    first = next(iter(score.recurse().getElementsByClass(m21.key.KeySignature)), None)
    if isinstance(first, m21.key.Key) and first.mode in _MAJOR_MODES | _MINOR_MODES:
        if first.mode not in ("major", "minor"):
            log.count("key_mode_mapped")
        else:
            log.count("key_from_score")
        return first.tonic.pitchClass + 12 * (first.mode in _MINOR_MODES)
    try:
        analysed = score.analyze("key")
    except Exception as exc:  # music21 raises assorted errors on degenerate input
        raise _SkipPiece("skipped_no_notes", f"key analysis failed: {exc}") from exc
    best = analysed
    if first is not None:
        # A signature fixes the pitch collection; analysis only chooses major or minor.
        candidates = [analysed, *getattr(analysed, "alternateInterpretations", [])]
        matching = [k for k in candidates if k.sharps == first.sharps and k.mode in ("major", "minor")]
        best = matching[0] if matching else first.asKey("major")
        log.count("key_from_signature")
    else:
        log.count("key_analyzed")
    return best.tonic.pitchClass + 12 * (best.mode == "minor")


def _meter_of(score: music21.stream.Score, top: music21.stream.Stream, log: _Log) -> Meter:
    m21 = _m21()
    sigs = list(top.recurse().getElementsByClass(m21.meter.TimeSignature))
    if not sigs:
        sigs = list(score.recurse().getElementsByClass(m21.meter.TimeSignature))
    if not sigs:
        log.count("meter_defaulted")
        return Meter(4, 4)
    ratios = [ts.ratioString for ts in sigs]
    changes = [r for r in dict.fromkeys(ratios) if r != ratios[0]]
    if changes:
        raise _SkipPiece("skipped_meter_change", f"time signature changes from {ratios[0]} to {', '.join(changes)}")
    try:
        return Meter.parse(ratios[0])
    except MusicTheoryError:
        raise _SkipPiece("skipped_unsupported_meter",
                         f"meter {ratios[0]} is not supported (accepted: {', '.join(Meter.SUPPORTED)})") from None


def _pickup_quarters(top: music21.stream.Stream, bar_quarters: float) -> float:
    """Rest (in quarter notes) to put before an upbeat so that bar lines stay right."""
    measures = list(top.getElementsByClass("Measure"))
    if len(measures) < 2:
        return 0.0
    first_length = float(measures[1].offset - measures[0].offset)
    if _EPS < first_length < bar_quarters - _EPS:
        return bar_quarters - first_length
    return 0.0


class _Log:
    """Counts for one piece, handed back to the report."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def count(self, reason: str, n: int = 1) -> None:
        if n > 0:
            self.counts[reason] += n


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


def _melody_notes(top: music21.stream.Stream, shift: float, grid: TokenGrid, log: _Log) -> list[tuple[int, int, int]]:
    """(pitch, onset, duration) in steps for the top part, following the module's rules."""
    m21 = _m21()
    spq = grid.steps_per_quarter
    events: list[tuple[float, float, int]] = []  # offset, quarter length, midi
    for el in top.stripTies().flatten().getElementsByClass(m21.note.GeneralNote):
        if isinstance(el, (m21.note.Rest, m21.harmony.Harmony)):
            continue
        if el.duration.isGrace:
            log.count("grace_dropped")
            continue
        if isinstance(el, m21.note.Note):
            midi = el.pitch.midi
        elif isinstance(el, m21.chord.Chord) and el.pitches:
            midi = max(p.midi for p in el.pitches)
            if len(el.pitches) > 1:
                log.count("chord_top_note")
        else:
            log.count("unpitched_dropped")
            continue
        events.append((float(el.offset) + shift, float(el.duration.quarterLength), midi))
    # Notes struck together: keep the highest (ordering puts it first), like a chord.
    events.sort(key=lambda e: (e[0], -e[2]))
    merged: list[tuple[float, float, int]] = []
    for ev in events:
        if merged and abs(ev[0] - merged[-1][0]) < _EPS:
            log.count("chord_top_note")
            continue
        merged.append(ev)

    notes: list[list[int]] = []  # [pitch, onset, end]
    for offset, length, midi in merged:
        start_f, end_f = offset * spq, (offset + length) * spq
        onset, end = _round_half_up(start_f), _round_half_up(end_f)
        if abs(start_f - onset) > _EPS or abs(end_f - end) > _EPS:
            log.count("quantized")
        if end <= onset:
            end = onset + 1
            log.count("extended_to_one_step")
        pitch = _fold_pitch(midi, grid, log)
        if pitch is None:
            continue
        if notes and notes[-1][1] == onset:
            notes.pop()
            log.count("collision_replaced")
        if notes and notes[-1][2] > onset:
            notes[-1][2] = onset
            log.count("shortened_by_next")
        notes.append([pitch, onset, end])
    return [(p, on, end - on) for p, on, end in notes]


def _fold_pitch(midi: int, grid: TokenGrid, log: _Log) -> int | None:
    if grid.min_pitch <= midi <= grid.max_pitch:
        return midi
    folded = midi
    while folded < grid.min_pitch:
        folded += 12
    while folded > grid.max_pitch:
        folded -= 12
    if not grid.min_pitch <= folded <= grid.max_pitch:
        log.count("pitch_unfoldable_dropped")
        return None
    log.count("pitch_folded")
    return folded


def _chords_from_symbols(score: music21.stream.Score, shift: float, n_steps: int, spq: int) -> np.ndarray | None:
    m21 = _m21()
    symbols = list(score.flatten().getElementsByClass(m21.harmony.Harmony))
    if not symbols:
        return None
    track = np.full(n_steps, NO_CHORD, dtype=np.int64)
    for sym in sorted(symbols, key=lambda s: float(s.offset)):
        start = min(max(_round_half_up((float(sym.offset) + shift) * spq), 0), n_steps)
        code = NO_CHORD
        if not isinstance(sym, m21.harmony.NoChord) and sym.pitches:
            weights = np.zeros(12)
            weights[[p.pitchClass for p in sym.pitches]] = 1.0
            root = sym.root()
            code = match_chord(weights, root=root.pitchClass if root is not None else None, min_fit=0.0)
        track[start:] = code
    return track


def _chords_from_parts(parts: list[Any], shift: float, n_steps: int, meter: Meter,
                       spq: int, log: _Log) -> np.ndarray:
    m21 = _m21()
    beat = meter.steps_per_beat(spq)
    n_beats = -(-n_steps // beat)
    weights = np.zeros((n_beats, 12))
    bass = np.full(n_beats, 10**6)
    for part in parts:
        for el in part.flatten().getElementsByClass(m21.note.NotRest):
            if isinstance(el, m21.harmony.Harmony) or el.duration.isGrace or not el.pitches:
                continue
            start = (float(el.offset) + shift) * spq
            end = start + float(el.duration.quarterLength) * spq
            for b in range(max(int(start // beat), 0), min(math.ceil(end / beat), n_beats)):
                overlap = min(end, (b + 1) * beat) - max(start, b * beat)
                if overlap <= _EPS:
                    continue
                # Tones sounding when the beat starts count double: passing and neighbour
                # notes fall between beats, the harmony is struck on them.
                if start <= b * beat + _EPS:
                    overlap += beat
                for p in el.pitches:
                    weights[b, p.pitchClass] += overlap
                    bass[b] = min(bass[b], p.midi)
    codes = np.array([match_chord(weights[b], int(bass[b]) if bass[b] < 10**6 else None)
                      for b in range(n_beats)], dtype=np.int64)
    log.count("chord_beats_unrecognised", int(np.sum(codes == NO_CHORD)))
    return np.repeat(codes, beat)[:n_steps]


_VOICE_NAMES = ("soprano", "alto", "tenor", "bass")


def _part_name(part: Any) -> str:
    return str(part.partName or part.id or "").strip().lower()


def _melody_part(parts: list[Any]) -> Any:
    """The part named Soprano if there is one (chorales with instrumental obbligato parts
    list those first), else the first part."""
    for part in parts:
        if _part_name(part).startswith("soprano"):
            return part
    return parts[0]


def extract_melody(score: music21.stream.Score | music21.stream.Part, grid: TokenGrid = DEFAULT_GRID, *,
                   derive_chords: bool = False, piece_id: str = "", title: str = "",
                   path: str = "") -> tuple[Melody, dict[str, int]]:
    """Melody, key, meter and chord track of one music21 score, by the module's rules.

    Returns the :class:`Melody` and the counts of what was adjusted (reason ->
    count). Raises :class:`CorpusError` naming the reason when the piece is
    skipped (unsupported or changing meter, no notes).
    """
    try:
        return _extract(score, grid, derive_chords=derive_chords, piece_id=piece_id, title=title, path=path)
    except _SkipPiece as skip:
        raise CorpusError(f"{piece_id or 'piece'} skipped ({skip.reason}): {skip}") from None


def _extract(score: Any, grid: TokenGrid, *, derive_chords: bool, piece_id: str, title: str,
             path: str) -> tuple[Melody, dict[str, int]]:
    m21 = _m21()
    log = _Log()
    parts = list(score.parts) if isinstance(score, m21.stream.Score) else []
    top = _melody_part(parts) if parts else score
    meter = _meter_of(score, top, log)
    spq = grid.steps_per_quarter
    shift = _pickup_quarters(top, meter.quarters_per_bar)
    notes = _melody_notes(top, shift, grid, log)
    if not notes:
        raise _SkipPiece("skipped_no_notes", "no pitched notes in the top part")
    key_index = _first_key(score, log)
    if shift:
        log.count("pickup_padded")
    n_steps = max(_round_half_up((float(top.highestTime) + shift) * spq), notes[-1][1] + notes[-1][2])
    tokens = notes_to_tokens(notes, n_steps, grid)
    chords = _chords_from_symbols(score, shift, n_steps, spq)
    if chords is not None:
        log.count("chords_from_symbols")
    elif derive_chords and len(parts) >= 2:
        voices = [p for p in parts if _part_name(p).startswith(_VOICE_NAMES)]
        chords = _chords_from_parts(voices if len(voices) >= 2 else parts, shift, n_steps, meter, spq, log)
        log.count("chords_from_parts")
    else:
        chords = np.full(n_steps, NO_CHORD, dtype=np.int64)
    if not title:
        md = score.metadata
        title = (md.title or md.movementName) if md is not None else None
        if not title or Path(str(title)).suffix.lower() in SUPPORTED_EXTENSIONS:
            title = piece_id  # music21 puts the file name there when the score has no title
    melody = Melody(tokens, key_index, str(meter), chords, piece_id, str(title), path,
                    _round_half_up(shift * spq), grid)
    return melody, dict(log.counts)


# ---- parsing tasks (run in worker processes) ------------------------------------------------
@dataclass
class _Task:
    """Work for one worker call: one file, or a batch of ABC tunes from one file."""

    path: str
    piece_id: str
    fmt: str | None  # music21 format name, or None to let music21 decide
    tunes: list[tuple[str, str]] | None = None  # (piece id, ABC text)
    corpus_work: bool = False


@dataclass
class _TaskResult:
    """Per piece, in source order: its payload (None when skipped) and what happened to it."""

    entries: list[tuple[dict[str, Any] | None, CorpusReport]]

    @property
    def n_melodies(self) -> int:
        return sum(payload is not None for payload, _ in self.entries)


def _parse_source(task: _Task) -> Iterator[tuple[str, Any]]:
    """(piece id, music21 score or the exception that stopped it) for each piece of a task."""
    m21 = _m21()
    if task.tunes is not None:
        for piece_id, text in task.tunes:
            skip = _abc_meter_skip(text)
            if skip is not None:
                yield piece_id, skip
                continue
            try:
                yield piece_id, m21.converter.parseData(text, format="abc")
            except Exception as exc:
                yield piece_id, exc
        return
    try:
        parsed = m21.converter.parse(task.path, format=task.fmt, forceSource=True, storePickle=False)
    except Exception as exc:  # the parsers raise many kinds of exceptions on bad input
        yield task.piece_id, exc
        return
    if isinstance(parsed, m21.stream.Opus):
        scores = list(parsed.scores)
        for i, score in enumerate(scores, 1):
            yield (f"{task.piece_id}#{i}" if len(scores) > 1 else task.piece_id), score
    else:
        yield task.piece_id, parsed


_ABC_METER = re.compile(r"(?:^M:|\[M:)\s*([^\]\n%]*)", re.MULTILINE)


def _abc_meter_skip(text: str) -> _SkipPiece | None:
    """The skip an ABC tune's meter fields already decide, without parsing it: several
    different ``M:`` fields (header, body or inline ``[M:...]``) -> ``skipped_meter_change``;
    one numeric meter (or ``C|``) outside ``Meter.SUPPORTED`` -> ``skipped_unsupported_meter``.
    Half of the Essen songs are skipped this way, and music21 takes most of the load
    time parsing them. ``None`` when music21 must decide (no field, or ``C``, or a
    field it might read otherwise)."""
    fields = [f.strip() for f in _ABC_METER.findall(text) if f.strip()]
    names = []
    for f in fields:
        m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", f)
        if m:
            names.append(f"{int(m.group(1))}/{int(m.group(2))}")
        elif f == "C":
            names.append("4/4")
        elif f == "C|":
            names.append("2/2")
        else:
            return None
    distinct = list(dict.fromkeys(names))
    if len(distinct) > 1:
        return _SkipPiece("skipped_meter_change", f"time signature changes from {distinct[0]} to {', '.join(distinct[1:])}")
    if distinct and distinct[0] not in Meter.SUPPORTED:
        return _SkipPiece("skipped_unsupported_meter",
                          f"meter {distinct[0]} is not supported (accepted: {', '.join(Meter.SUPPORTED)})")
    return None


def _parse_task(task: _Task, grid: TokenGrid, derive_chords: bool) -> _TaskResult:
    """Parse one task's file or tunes into melody payloads, each with its own report."""
    entries: list[tuple[dict[str, Any] | None, CorpusReport]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns freely on odd but readable input
        for piece_id, score in _parse_source(task):
            report = CorpusReport()
            entries.append((None, report))
            if isinstance(score, _SkipPiece):
                report.count(score.reason, piece=piece_id)
                report.skipped[piece_id] = f"{score.reason}: {score}"
                continue
            if isinstance(score, Exception):
                _report_error(report, piece_id, task.path if task.tunes is None else piece_id, score)
                continue
            try:
                melody, counts = _extract(score, grid, derive_chords=derive_chords, piece_id=piece_id,
                                          title="", path=task.path)
            except _SkipPiece as skip:
                report.count(skip.reason, piece=piece_id)
                report.skipped[piece_id] = f"{skip.reason}: {skip}"
                continue
            except Exception as exc:  # a music21 failure on one piece must not stop the corpus
                _report_error(report, piece_id, piece_id, exc)
                continue
            for reason, n in counts.items():
                # Per-piece tallies of routine facts (where the key came from) would bury the problems.
                report.count(reason, n, piece=None if reason.startswith(("key_from", "chords_from")) else piece_id)
            report.n_melodies = 1
            entries[-1] = ({
                "id": melody.id, "title": melody.title, "path": melody.path, "meter": melody.meter,
                "key": melody.key, "pickup": melody.pickup_steps,
                "tokens": melody.tokens.astype(np.int16), "chords": melody.chords.astype(np.int16),
            }, report)
    return _TaskResult(entries)


def _report_error(report: CorpusReport, piece_id: str, name: str, exc: BaseException) -> None:
    report.count("skipped_unreadable", piece=piece_id)
    report.errors[name] = f"{type(exc).__name__}: {exc}".strip()
    report.skipped[piece_id] = "skipped_unreadable: the parser failed (see errors)"


# ---- resolving names to tasks ---------------------------------------------------------------
def _corpus_root() -> Path:
    return Path(str(_m21().common.getCorpusFilePath()))


def _corpus_id(path: Path) -> str:
    """Work name of a corpus file: its path inside the corpus, without extension."""
    try:
        rel = path.relative_to(_corpus_root())
    except ValueError:
        return path.stem
    return rel.with_suffix("").as_posix()


_ABC_FIELD = re.compile(r"^([A-Za-z]):")


def _abc_tune_text(header: list[str], lines: list[str]) -> str:
    """A tune with the file header's fields it does not set itself (a tune's own fields
    override the file header's), placed after its ``X:`` line."""
    own: set[str] = set()
    for line in lines[1:]:
        m = _ABC_FIELD.match(line)
        if m:
            own.add(m.group(1))
        if line.startswith("K:"):  # the tune header ends with its key
            break
    inherited = [h for h in header if (m := _ABC_FIELD.match(h)) and m.group(1) not in own | {"X", "T"}]
    return "\n".join([lines[0], *inherited, *lines[1:]]) + "\n"


def _abc_tasks(path: Path, base_id: str, chunk: int) -> list[_Task]:
    """Split an ABC file into its tunes (with the file header's fields) and batch them into tasks."""
    text = path.read_text(encoding="utf-8", errors="replace")
    header: list[str] = []
    tunes: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = re.match(r"^\s*X:\s*(\S*)", line)
        if m:
            tunes.append((m.group(1) or str(len(tunes) + 1), [line]))
        elif tunes:
            tunes[-1][1].append(line)
        else:
            header.append(line)
    if not tunes:  # no reference numbers: the whole file is one tune
        return [_Task(str(path), base_id, "abc")]
    seen: Counter[str] = Counter()
    items: list[tuple[str, str]] = []
    for number, lines in tunes:
        seen[number] += 1
        suffix = number if seen[number] == 1 else f"{number}-{seen[number]}"
        piece_id = f"{base_id}#{suffix}" if len(tunes) > 1 else base_id
        items.append((piece_id, _abc_tune_text(header, lines)))
    return [_Task(str(path), base_id, "abc", items[i:i + chunk]) for i in range(0, len(items), chunk)]


def _file_tasks(path: Path, piece_id: str, chunk: int) -> list[_Task]:
    fmt = SUPPORTED_EXTENSIONS.get(path.suffix.lower())
    if fmt == "abc":
        try:
            return _abc_tasks(path, piece_id, chunk)
        except OSError:
            pass  # the worker reports the unreadable file by name
    return [_Task(str(path), piece_id, fmt)]


def _bach_paths() -> list[Path]:
    m21 = _m21()
    paths: list[Path] = []
    for name in m21.corpus.chorales.Iterator(returnType="filename"):
        found = m21.corpus.getWork(name, fileExtensions=("mxl", "xml", "musicxml"))
        candidates = found if isinstance(found, list) else [found]
        stem = name.split("/")[-1]
        # getWork matches prefixes (bwv244.3 also finds bwv244.32): take the exact name.
        exact = [Path(str(c)) for c in candidates if Path(str(c)).stem == stem]
        paths.append(exact[0] if exact else Path(str(candidates[0])))
    return paths


@dataclass
class _Plan:
    label: str  # short name for cache files and progress bars
    description: str
    tasks: list[_Task]
    fingerprint: list[Any]  # what the cache key needs to know about the inputs
    derive_chords_default: bool
    duplicates: list[str]  # ids of inputs listed more than once


def _dedupe(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    seen: set[Path] = set()
    unique, dupes = [], []
    for p in paths:
        key = p.resolve()
        if key in seen:
            dupes.append(p)
        else:
            seen.add(key)
            unique.append(p)
    return unique, dupes


def _plan(name_or_paths: str | os.PathLike | Sequence[str | os.PathLike], chunk: int) -> _Plan:
    if isinstance(name_or_paths, str) and name_or_paths in SOURCES:
        return _plan_named(name_or_paths, chunk)
    items = [name_or_paths] if isinstance(name_or_paths, (str, os.PathLike)) else list(name_or_paths)
    if not items:
        raise CorpusError(f"no corpus given; accepted: {_accepted()}")
    inputs: list[tuple[Path, str, bool]] = []  # path, piece id, is a corpus work
    for item in items:
        inputs.extend(_resolve_item(item))
    paths, dupes = _dedupe([p for p, _, _ in inputs])
    ids = {p: i for p, i, _ in inputs}
    corpus_work = {p: c for p, _, c in inputs}
    taken: Counter[str] = Counter(ids[p] for p in paths)
    tasks: list[_Task] = []
    fingerprint: list[Any] = []
    for p in paths:
        piece_id = ids[p] if taken[ids[p]] == 1 else str(p.resolve())
        for t in _file_tasks(p, piece_id, chunk):
            t.corpus_work = corpus_work[p]
            tasks.append(t)
        ids[p] = piece_id
        if corpus_work[p]:
            fingerprint.append(piece_id)
        else:
            try:
                st = p.stat()
                fingerprint.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
            except OSError as exc:
                fingerprint.append([str(p), str(exc)])
    tasks, tune_dupes = _dedupe_tunes(tasks, by_number=False)
    all_corpus = all(corpus_work[p] for p in paths)
    if len(items) == 1:
        label = _safe_label(items[0] if isinstance(items[0], str) and all_corpus else Path(items[0]).name)
    else:
        label = "files"
    description = str(items[0]) if len(items) == 1 else f"{len(paths)} files"
    bach_only = all_corpus and all(ids[p].startswith("bach/") for p in paths)
    return _Plan(label, description, tasks, fingerprint, bach_only, [ids[p] for p in dupes] + tune_dupes)


def _plan_named(name: str, chunk: int) -> _Plan:
    if name == "bach":
        paths, dupes = _dedupe(_bach_paths())
    else:
        folder = _corpus_root() / SOURCES[name]
        paths = sorted(p for p in _m21().corpus.getPaths() if Path(str(p)).parent == folder)
        paths, dupes = _dedupe([Path(str(p)) for p in paths])
    if not paths:
        raise CorpusError(f"music21's corpus has no files for {name!r} (looked in {SOURCES[name]!r})")
    tasks = [t for p in paths for t in _file_tasks(p, _corpus_id(p), chunk)]
    for t in tasks:
        t.corpus_work = True
    tasks, tune_dupes = _dedupe_tunes(tasks, by_number=name == "oneills")
    return _Plan(name, name, tasks, [name], name == "bach", [_corpus_id(p) for p in dupes] + tune_dupes)


def _dedupe_tunes(tasks: list[_Task], by_number: bool) -> tuple[list[_Task], list[str]]:
    """Drop ABC tunes seen before: the same text after the ``X:`` line (in any file) or,
    with ``by_number``, the same reference number (O'Neill's numbers are the book's, and
    some files of the collection are alternative transcriptions of the same tunes)."""
    seen_text: set[str] = set()
    seen_number: set[str] = set()
    kept_tasks: list[_Task] = []
    dupes: list[str] = []
    for task in tasks:
        if task.tunes is None:
            kept_tasks.append(task)
            continue
        kept = []
        for piece_id, text in task.tunes:
            body = "\n".join(line.strip() for line in text.splitlines()[1:] if line.strip())
            digest = hashlib.sha256(body.encode()).hexdigest()
            number = piece_id.rsplit("#", 1)[1].split("-")[0].lstrip("0") if by_number and "#" in piece_id else ""
            if digest in seen_text or (number and number in seen_number):
                dupes.append(piece_id)
                continue
            seen_text.add(digest)
            if number:
                seen_number.add(number)
            kept.append((piece_id, text))
        if kept:
            task.tunes = kept
            kept_tasks.append(task)
    return kept_tasks, dupes


def _accepted() -> str:
    return (f"one of {sorted(SOURCES)}, a music21 corpus work such as 'bach/bwv66.6', or user files "
            f"({', '.join(SUPPORTED_EXTENSIONS)}) / folders of them")


def _safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "corpus"


def _resolve_item(item: str | os.PathLike) -> list[tuple[Path, str, bool]]:
    path = Path(item).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
        if not found:
            raise CorpusError(f"folder {str(path)!r} holds no {', '.join(SUPPORTED_EXTENSIONS)} files")
        return [(p, p.relative_to(path).as_posix(), False) for p in found]
    if path.is_file() or path.suffix.lower() in SUPPORTED_EXTENSIONS and path.parent.is_dir():
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise CorpusError(f"cannot read {str(path)!r}: unknown file type {path.suffix!r}; "
                              f"accepted: {', '.join(SUPPORTED_EXTENSIONS)}")
        if not path.is_file():
            raise CorpusError(f"file {str(path)!r} does not exist")
        return [(path, path.name, False)]
    if isinstance(item, str):
        m21 = _m21()
        try:
            found = m21.corpus.getWork(item)
        except Exception:
            found = []
        candidates = [Path(str(c)) for c in (found if isinstance(found, list) else [found])]
        if candidates:
            stem = item.rstrip("/").split("/")[-1]
            exact = [c for c in candidates if c.stem == stem or c.name == stem]
            preferred = sorted(exact or candidates,
                               key=lambda c: c.suffix.lower() not in SUPPORTED_EXTENSIONS)
            chosen = preferred[0]
            return [(chosen, _corpus_id(chosen), True)]
    raise CorpusError(f"unknown corpus {str(item)!r}: not a named source, an existing file or folder, "
                      f"or a music21 corpus work; accepted: {_accepted()}")


# ---- cache ----------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$MUSICENV_CACHE`` if set, else ``~/.cache/musicenv``."""
    env = os.environ.get("MUSICENV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "musicenv"


def _music21_version() -> str:
    try:  # reading the installed version avoids importing music21 on a cache hit
        return importlib.metadata.version("music21")
    except importlib.metadata.PackageNotFoundError:
        return str(_m21().__version__)


def _cache_key(label: str, fingerprint: list[Any], grid: TokenGrid, derive_chords: bool,
               limit: int | None) -> str:
    spec = {
        "format": FORMAT_VERSION, "music21": _music21_version(), "source": label,
        "inputs": fingerprint,
        "grid": [grid.min_pitch, grid.max_pitch, grid.steps_per_quarter],
        "chords": derive_chords, "limit": limit,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _atomic_write(path: Path, write: Any) -> None:
    """``write(file handle)`` into ``path`` atomically (:func:`musicenv.files.write_atomically`)."""
    from musicenv.files import write_atomically

    def into(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    write_atomically(path, into, what="corpus cache")


def _write_cache(stem: Path, digest: str, corpus: MelodyCorpus) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    mels = corpus.melodies
    lengths = np.array([m.n_steps for m in mels], dtype=np.int64)
    arrays = {
        "digest": np.array(digest),
        "tokens": np.concatenate([m.tokens for m in mels]).astype(np.int16),
        "chords": np.concatenate([m.chords for m in mels]).astype(np.int16),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "keys": np.array([m.key for m in mels], dtype=np.int8),
        "pickups": np.array([m.pickup_steps for m in mels], dtype=np.int32),
    }
    meta = {
        "digest": digest, "format": FORMAT_VERSION, "name": corpus.name,
        "grid": [corpus.grid.min_pitch, corpus.grid.max_pitch, corpus.grid.steps_per_quarter],
        "pieces": [{"id": m.id, "title": m.title, "path": m.path, "meter": m.meter} for m in mels],
        "report": corpus.report.to_dict(),
    }
    _atomic_write(stem.with_suffix(".npz"), lambda fh: np.savez(fh, **arrays))
    _atomic_write(stem.with_suffix(".json"), lambda fh: fh.write(json.dumps(meta, indent=1).encode()))


def _read_cache(stem: Path, digest: str, grid: TokenGrid) -> MelodyCorpus | None:
    npz_path, json_path = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("digest", "tokens", "chords", "offsets", "keys", "pickups")}
        if meta.get("digest") != digest or str(arrays["digest"]) != digest:
            return None
        pieces = meta["pieces"]
        offsets = arrays["offsets"]
        if len(offsets) != len(pieces) + 1 or offsets[-1] != len(arrays["tokens"]) or \
                len(arrays["chords"]) != len(arrays["tokens"]):
            raise ValueError("array lengths disagree with the piece list")
        tokens = arrays["tokens"].astype(np.int64)
        chords = arrays["chords"].astype(np.int64)
        tokens.setflags(write=False)
        chords.setflags(write=False)
        keys, pickups = arrays["keys"].tolist(), arrays["pickups"].tolist()
        melodies = [
            Melody(tokens[offsets[i]:offsets[i + 1]], keys[i], p["meter"], chords[offsets[i]:offsets[i + 1]],
                   p["id"], p["title"], p["path"], pickups[i], grid)
            for i, p in enumerate(pieces)
        ]
        report = CorpusReport.from_dict(meta["report"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        warnings.warn(f"ignoring unreadable corpus cache {npz_path} ({exc}); parsing again", stacklevel=3)
        return None
    report.from_cache = True
    return MelodyCorpus(melodies, report, grid, meta.get("name", ""))


# ---- load -----------------------------------------------------------------------------------
def load(name_or_paths: str | os.PathLike | Sequence[str | os.PathLike], grid: TokenGrid = DEFAULT_GRID, *,
         cache_dir: str | os.PathLike | None = None, jobs: int | None = None, progress: bool = True,
         limit: int | None = None, chords: bool | None = None, cache: bool = True) -> MelodyCorpus:
    """Load a corpus of melodies, parsing it once and caching the result.

    Args:
        name_or_paths: ``"bach"``, ``"essen"``, ``"oneills"``, a music21 corpus
            work (``"bach/bwv66.6"``), a user file or folder, or a list of such.
        grid: pitch range and resolution of the tokens.
        cache_dir: where the cache lives (default :func:`default_cache_dir`).
        jobs: worker processes for parsing (default ``min(2, cpu_count)``; 1 parses
            in this process).
        progress: show a progress bar while parsing.
        limit: keep only the first ``limit`` melodies, in source order (fewer files
            are parsed).
        chords: derive a chord per beat from all parts of multi-part scores;
            ``None`` means yes for Bach chorales and no otherwise. Chord symbols
            in a score are used either way.
        cache: read and write the cache.

    Returns:
        A :class:`MelodyCorpus`; ``corpus.report`` says what was adjusted or skipped.

    Raises:
        CorpusError: unknown name, unusable path or option, or no melody at all.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise CorpusError(f"limit must be a positive integer or None, got {limit!r}")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise CorpusError(f"jobs must be a positive integer or None, got {jobs!r}")
    chunk = max(1, min(32, limit or 32))
    named = isinstance(name_or_paths, str) and name_or_paths in SOURCES
    # A named source's key needs no file listing, so a cache hit never imports music21.
    plan = None if named else _plan(name_or_paths, chunk)
    label = str(name_or_paths) if plan is None else plan.label
    fingerprint = [label] if plan is None else plan.fingerprint
    bach_default = label == "bach" if plan is None else plan.derive_chords_default
    derive_chords = bach_default if chords is None else bool(chords)
    digest = _cache_key(label, fingerprint, grid, derive_chords, limit)
    stem = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = stem / f"{label}-{digest}"
    if cache:
        cached = _read_cache(stem, digest, grid)
        if cached is not None:
            return cached
    if plan is None:
        plan = _plan_named(str(name_or_paths), chunk)

    t0 = time.perf_counter()
    done_tasks, results = _run_tasks(plan, grid, derive_chords, jobs, progress, limit)
    report = CorpusReport(source=plan.description)
    for dup in plan.duplicates:
        report.count("skipped_duplicate", piece=dup)  # the piece itself is loaded once
    melodies: list[Melody] = []
    files_read: set[str] = set()
    for i, res in zip(done_tasks, results):
        for payload, piece_report in res.entries:
            if limit is not None and len(melodies) >= limit:
                break  # pieces parsed past the limit are not part of the corpus, nor of its report
            files_read.add(plan.tasks[i].path)
            report.merge(piece_report)
            if payload is not None:
                p = payload
                tokens, chord_track = p["tokens"].astype(np.int64), p["chords"].astype(np.int64)
                tokens.setflags(write=False)  # as when loaded from the cache
                chord_track.setflags(write=False)
                melodies.append(Melody(tokens, p["key"], p["meter"], chord_track, p["id"], p["title"],
                                       p["path"], p["pickup"], grid))
    report.n_files = len(files_read)
    report.n_melodies = len(melodies)
    report.parse_seconds = time.perf_counter() - t0
    if not melodies:
        detail = "; ".join(f"{k}: {v}" for k, v in list(report.errors.items())[:3]) or ", ".join(
            f"{r}={n}" for r, n in report.counts.items() if r.startswith("skipped_"))
        raise CorpusError(f"no melodies could be loaded from {plan.description} ({detail or 'nothing to read'})")
    corpus = MelodyCorpus(melodies, report, grid, plan.label)
    if cache:
        try:
            _write_cache(stem, digest, corpus)
        except OSError as exc:
            warnings.warn(f"could not write the corpus cache at {stem} ({exc}); the corpus is not cached",
                          stacklevel=2)
    return corpus


def _run_tasks(plan: _Plan, grid: TokenGrid, derive_chords: bool, jobs: int | None, progress: bool,
               limit: int | None) -> tuple[list[int], list[_TaskResult]]:
    """Run the plan's tasks; return the indices of the tasks run and their results, in task
    order. With ``limit``, no new task starts once ``limit`` melodies are in hand."""
    from tqdm.auto import tqdm

    tasks = plan.tasks
    jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    results: dict[int, _TaskResult] = {}
    size = [len(t.tunes) if t.tunes is not None else 1 for t in tasks]  # pieces (files or tunes)
    bar = tqdm(total=sum(size), desc=f"parsing {plan.label}", unit="piece", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        if jobs == 1 or len(tasks) == 1:
            loaded = 0
            for i, task in enumerate(tasks):
                results[i] = _parse_task(task, grid, derive_chords)
                loaded += results[i].n_melodies
                bar.update(size[i])
                if limit is not None and loaded >= limit:
                    break
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                pending: dict[Future[_TaskResult], int] = {}
                next_task, loaded = 0, 0
                try:
                    while next_task < len(tasks) or pending:
                        while (next_task < len(tasks) and len(pending) < 2 * jobs
                               and (limit is None or loaded < limit)):
                            pending[pool.submit(_parse_task, tasks[next_task], grid, derive_chords)] = next_task
                            next_task += 1
                        if not pending:
                            break
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            i = pending.pop(fut)
                            results[i] = fut.result()
                            loaded += results[i].n_melodies
                            bar.update(size[i])
                except BaseException:  # Ctrl-C or a worker crash: do not wait for queued work
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
    order = sorted(results)
    return order, [results[i] for i in order]
