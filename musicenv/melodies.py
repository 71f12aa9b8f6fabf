"""The general melody prior's training data: three music21 collections, shipped as token arrays.

:func:`load` returns the melodies of Bach's chorales (soprano), the Essen folk-song
collection and O'Neill's *Music of Ireland* on the env's default grid, each with its key,
meter, chord track, collection (style) label and its side of a fixed train/valid/test
split, read from a small compressed file shipped in the package
(:data:`SHIPPED`, ``musicenv/data/melodies_v1.npz``): no music21 parse at run time.
``musicenv melody-corpus --out FILE`` rebuilds that file from music21's bundled corpus
(:func:`build`: :func:`musicenv.corpus.load` of each collection, parsed in parallel and
cached, then the rules below); the test suite re-parses a few pieces and checks they
give the same arrays.

Collections (styles)
--------------------
:data:`STYLES` = ``("bach", "essen", "oneills")``, in that order; the index is the style
id the prior is conditioned on. No other music21 collection is used, so the rest of the
corpus stays unseen test data.

Split
-----
Per collection, each melody goes to train (80 %), valid (10 %) or test (10 %) by a
stable hash of the split seed and its *group*: melodies whose token sequences are
identical (the same tune entered twice, in one file or two) form one group, named by
the first id in corpus order, so exact duplicates always fall on the same side. The
assignment does not depend on the order of the corpus.

Chord track
-----------
Bach chorales keep the chords :mod:`musicenv.corpus` reads from all four voices (one
per beat). A piece with chord symbols keeps them. Every other piece gets a chord track
derived from its melody by :func:`derive_chords`: one chord per *harmonic segment*
(half a bar in 4/4, a whole bar in 2/4, 3/4 and 6/8), the diatonic chord of the
piece's key that best covers the melody's weighted pitch classes in that segment
(rules in :func:`derive_chords`). The counts per collection are in
``load().report`` (``chord_source``).

Piece records
-------------
:class:`MelodySet` holds the melodies as :class:`musicenv.corpus.Melody` objects
(tokens, key, meter, chords, id) grouped by collection and split; ``style`` and
``split`` are per-melody arrays beside them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicenv.corpus import CorpusReport, CorpusSplit, Melody, MelodyCorpus, _unit_hash
from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, HOLD, TokenGrid
from musicenv.theory import (
    CHORD_PC_MASK,
    KEY_IS_MINOR,
    KEY_TONIC,
    N_QUALITIES,
    NO_CHORD,
    QUALITIES,
    Meter,
)

__all__ = ["STYLES", "SPLITS", "SHIPPED", "FORMAT_VERSION", "MelodySet", "MelodyDataError", "load", "build",
           "derive_chords", "diatonic_chords", "segment_steps", "style_index", "next_chord_track"]

#: The collections, in style-id order.
STYLES: tuple[str, ...] = ("bach", "essen", "oneills")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Version of the shipped file's layout and of the rules that make it.
FORMAT_VERSION = 1
SHIPPED = Path(__file__).resolve().parent / "data" / f"melodies_v{FORMAT_VERSION}.npz"
#: Split fractions (valid, test) and seed of the shipped split.
SPLIT_SEED, VALID_FRACTION, TEST_FRACTION = 0, 0.1, 0.1
#: chord_source codes stored per piece.
CHORD_SOURCES: tuple[str, ...] = ("parts", "symbols", "derived")


class MelodyDataError(ValueError):
    """The shipped melody file is missing or unreadable, or a name or option is not known."""


def style_index(style: str | int | None) -> int:
    """Style id of a collection name (``"bach"`` -> 0), -1 for None (no style)."""
    if style is None:
        return -1
    if isinstance(style, (int, np.integer)) and not isinstance(style, bool) and -1 <= int(style) < len(STYLES):
        return int(style)
    if isinstance(style, str) and style in STYLES:
        return STYLES.index(style)
    raise MelodyDataError(f"unknown style {style!r}; accepted: {', '.join(STYLES)} (or None for no style)")


# ---------------------------------------------------------------------------- chords
def _code(root: int, quality: str) -> int:
    return (root % 12) * N_QUALITIES + QUALITIES.index(quality)


def diatonic_chords(key: int) -> list[int]:
    """The candidate chords of a key, in order of preference on a tie.

    Major: I, V, IV, vi, ii, iii, V7. Minor: i, V (harmonic minor), iv, VI, III,
    VII, v, ii°, V7. The order encodes how common each chord is in tonal melody
    harmonisation, and breaks ties between chords that cover a segment's notes equally
    well. The diminished triad on the leading tone is left out: in a melody it is the
    dominant seventh without its root, and V7 covers it.
    """
    t = int(KEY_TONIC[key])
    if KEY_IS_MINOR[key]:
        spec = [(0, "min"), (7, "maj"), (5, "min"), (8, "maj"), (3, "maj"), (10, "maj"), (7, "min"),
                (2, "dim"), (7, "dom7")]
    else:
        spec = [(0, "maj"), (7, "maj"), (5, "maj"), (9, "min"), (2, "min"), (4, "min"), (7, "dom7")]
    return [_code(t + i, q) for i, q in spec]


def segment_steps(meter: str | Meter, steps_per_quarter: int) -> int:
    """Length of a harmonic segment in steps: half a bar in 4/4, a bar otherwise."""
    m = Meter.parse(meter)
    bar = m.steps_per_bar(steps_per_quarter)
    return bar // 2 if m.beats_per_bar == 4 else bar


_MISSING_TONE_PENALTY = 0.1
_SEVENTH_PENALTY = 0.15
_CONTINUITY_BONUS = 0.02
_RANK_STEP = 0.001


def derive_chords(tokens: Sequence[int] | np.ndarray, key: int, meter: str | Meter,
                  grid: TokenGrid = DEFAULT_GRID) -> np.ndarray:
    """A chord per step derived from a melody alone (see module doc).

    The melody is cut into harmonic segments (:func:`segment_steps`). In each, every
    pitch class weighs the steps it sounds, plus one beat for every beat start it sounds
    on (notes on the beat carry the harmony, passing notes between beats do not). Each
    candidate of :func:`diatonic_chords` scores ``2 * covered - 1`` (``covered``: the
    share of the weight on its chord tones) minus 0.1 per chord tone not sounding minus
    0.15 for a seventh chord (so V7 needs its 7th), plus 0.02 for the chord of the
    previous segment (harmony changes only when the notes ask for it), minus 0.001 per
    place in the preference order (tonic, dominant, subdominant first). The best
    candidate wins. Segments without any note keep the previous segment's chord (the
    first chord for leading rests).

    Returns an int64 array of chord codes, one per step (all ``NO_CHORD`` for a
    melody without notes).

    >>> from musicenv.theory import chord_name, parse_key
    >>> c, e, f, g, a, b, d = (DEFAULT_GRID.token(p) for p in (60, 64, 65, 67, 69, 71, 62))
    >>> H = HOLD
    >>> chords = derive_chords([c, H, e, H, g, H, e, H, f, H, a, H, b, H, d, H], parse_key("C"), "4/4")
    >>> [chord_name(int(x)) for x in chords[::8]]
    ['C', 'G7']
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    out = np.full(n, NO_CHORD, dtype=np.int64)
    if n == 0:
        return out
    m = Meter.parse(meter)
    spq = grid.steps_per_quarter
    seg = segment_steps(m, spq)
    beat = m.steps_per_beat(spq)
    # pitch class sounding at each step (-1: silence)
    pc = np.full(n, -1, dtype=np.int64)
    cur = -1
    for i, tok in enumerate(tokens):
        if tok >= FIRST_PITCH_TOKEN:
            cur = (int(tok) - FIRST_PITCH_TOKEN + grid.min_pitch) % 12
        elif tok != HOLD:
            cur = -1
        pc[i] = cur
    weight = np.ones(n)
    weight[np.arange(0, n, beat)] += beat
    n_seg = -(-n // seg)
    profile = np.zeros((n_seg, 12))
    sounding = pc >= 0
    np.add.at(profile, (np.arange(n)[sounding] // seg, pc[sounding]), weight[sounding])
    cands = np.array(diatonic_chords(key))
    masks = CHORD_PC_MASK[cands].astype(np.float64)  # (C, 12)
    total = profile.sum(axis=1, keepdims=True)
    share = np.divide(profile, total, out=np.zeros_like(profile), where=total > 0)
    covered = share @ masks.T  # (S, C)
    missing = (share <= 1e-9).astype(np.float64) @ masks.T
    base = (2 * covered - 1 - _MISSING_TONE_PENALTY * missing - _SEVENTH_PENALTY * (masks.sum(1) > 3)
            - _RANK_STEP * np.arange(len(cands)))
    codes = np.full(n_seg, NO_CHORD, dtype=np.int64)
    prev = -1
    for s in range(n_seg):
        if total[s, 0] <= 0:
            continue
        score = base[s] + (_CONTINUITY_BONUS * (np.arange(len(cands)) == prev) if prev >= 0 else 0.0)
        prev = int(np.argmax(score))
        codes[s] = cands[prev]
    known = np.flatnonzero(codes != NO_CHORD)
    if known.size == 0:
        return out
    # empty segments: the chord before them, or the first chord for leading ones
    filled = codes[known[np.maximum(np.searchsorted(known, np.arange(n_seg), side="right") - 1, 0)]]
    return np.repeat(filled, seg)[:n]


def next_chord_track(chords: np.ndarray) -> np.ndarray:
    """``next[t]``: the first chord after step t that differs from ``chords[t]``
    (``NO_CHORD`` if the chord never changes again). Same rule as the envs' ``chords``
    observation."""
    chords = np.asarray(chords, dtype=np.int64)
    out = np.full_like(chords, NO_CHORD)
    if chords.size < 2:
        return out
    change = np.flatnonzero(chords[1:] != chords[:-1]) + 1  # steps where a new chord starts
    idx = np.searchsorted(change, np.arange(len(chords)), side="right")
    has = idx < len(change)
    out[has] = chords[change[idx[has]]]
    return out


# ---------------------------------------------------------------------------- the set
@dataclass
class MelodySet:
    """The prior's melodies, by collection and split.

    Attributes:
        collections: style name -> :class:`~musicenv.corpus.CorpusSplit` (train, valid, test).
        report: counts (``chord_source`` per collection, duplicate groups, parse times).
        grid: the token grid.
    """

    collections: dict[str, CorpusSplit]
    report: dict[str, Any] = field(default_factory=dict)
    grid: TokenGrid = DEFAULT_GRID

    def split(self, part: str, styles: Sequence[str] | None = None) -> list[tuple[str, Melody]]:
        """(style, melody) pairs of one split (``"train"``, ``"valid"``, ``"test"``) over
        ``styles`` (default all)."""
        if part not in SPLITS:
            raise MelodyDataError(f"unknown split {part!r}; accepted: {', '.join(SPLITS)}")
        out = []
        for style in styles or STYLES:
            if style not in self.collections:
                raise MelodyDataError(f"unknown collection {style!r}; accepted: {', '.join(self.collections)}")
            out.extend((style, m) for m in getattr(self.collections[style], part))
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}: " + "/".join(str(len(getattr(c, p))) for p in SPLITS)
                          for s, c in self.collections.items())
        return f"MelodySet({parts} train/valid/test melodies)"


def _groups(melodies: Sequence[Melody]) -> list[str]:
    """The group name of each melody: the first id with the same tokens (exact duplicates)."""
    first: dict[bytes, str] = {}
    out = []
    for m in melodies:
        digest = hashlib.sha256(np.asarray(m.tokens, np.int16).tobytes() + m.meter.encode()).digest()
        out.append(first.setdefault(digest, m.id))
    return out


def _split_codes(groups: Sequence[str], seed: int = SPLIT_SEED, valid: float = VALID_FRACTION,
                 test: float = TEST_FRACTION) -> np.ndarray:
    codes = np.empty(len(groups), dtype=np.int8)
    for i, g in enumerate(groups):
        u = _unit_hash(f"{seed}:{g}")
        codes[i] = 2 if u < test else 1 if u < test + valid else 0
    return codes


def build(out: str | Path | None = None, *, jobs: int | None = None, cache_dir: str | Path | None = None,
          progress: bool = True, limit: int | None = None,
          styles: Sequence[str] = STYLES) -> dict[str, Any]:
    """Parse the three collections (:func:`musicenv.corpus.load`, cached), derive chord
    tracks, split, and write the melody file (default :data:`SHIPPED`). Returns the report.

    ``limit`` keeps the first melodies of each collection (for tests); ``styles`` builds a
    file with only some collections (their melodies and splits are the same as in the
    full file: each collection is split on its own).
    """
    from musicenv import corpus

    out = SHIPPED if out is None else Path(out)
    tokens, chords, offsets, keys, meters, style_ids, splits, pickups, sources, ids = [], [], [0], [], [], [], [], [], [], []
    report: dict[str, Any] = {"format": FORMAT_VERSION, "split": {"seed": SPLIT_SEED, "valid": VALID_FRACTION,
                                                                 "test": TEST_FRACTION}, "collections": {}}
    t_all = time.perf_counter()
    for s, name in enumerate(STYLES):
        if name not in styles:
            continue
        t0 = time.perf_counter()
        data = corpus.load(name, jobs=jobs, cache_dir=cache_dir, progress=progress, limit=limit)
        parse_s = data.report.parse_seconds
        mels = list(data)
        groups = _groups(mels)
        codes = _split_codes(groups)
        source_count: Counter[str] = Counter()
        for m, sp in zip(mels, codes):
            if np.any(m.chords != NO_CHORD):
                src = 0 if data.report.counts.get("chords_from_parts") and name == "bach" else 1
                track = np.asarray(m.chords, np.int64)
            else:
                src, track = 2, derive_chords(m.tokens, m.key, m.meter, data.grid)
            source_count[CHORD_SOURCES[src]] += 1
            tokens.append(np.asarray(m.tokens, np.int8))
            chords.append(track.astype(np.int16))
            offsets.append(offsets[-1] + m.n_steps)
            keys.append(m.key)
            meters.append(Meter.SUPPORTED.index(m.meter))
            style_ids.append(s)
            splits.append(sp)
            pickups.append(m.pickup_steps)
            sources.append(src)
            ids.append(m.id)
        n_dupe = len(groups) - len(set(groups))
        report["collections"][name] = {
            "melodies": len(mels), "steps": int(sum(m.n_steps for m in mels)),
            "split": {p: int(np.sum(codes == i)) for i, p in enumerate(SPLITS)},
            "exact_duplicates": n_dupe, "chord_source": dict(source_count),
            "parse_seconds": round(parse_s, 1), "seconds": round(time.perf_counter() - t0, 1),
            "skipped": {r: n for r, n in data.report.counts.items() if r.startswith("skipped_")},
            "music21_report": data.report.counts,
        }
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    report["grid"] = [DEFAULT_GRID.min_pitch, DEFAULT_GRID.max_pitch, DEFAULT_GRID.steps_per_quarter]
    arrays = {
        "tokens": np.concatenate(tokens), "chords": np.concatenate(chords),
        "offsets": np.asarray(offsets, np.int64), "keys": np.asarray(keys, np.int8),
        "meters": np.asarray(meters, np.int8), "styles": np.asarray(style_ids, np.int8),
        "splits": np.asarray(splits, np.int8), "pickups": np.asarray(pickups, np.int16),
        "chord_sources": np.asarray(sources, np.int8), "ids": np.asarray(ids, dtype=str),
        "report": np.asarray(json.dumps(report)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    return report


_CACHE: dict[Path, MelodySet] = {}


def load(path: str | Path | None = None) -> MelodySet:
    """The shipped melodies (or a file written by :func:`build`), loaded once per file.

    Raises :class:`MelodyDataError` when the file is missing or unreadable."""
    p = SHIPPED if path is None else Path(path).expanduser()
    if p in _CACHE:
        return _CACHE[p]
    if not p.is_file():
        raise MelodyDataError(f"melody file {p} does not exist; rebuild it with `musicenv melody-corpus --out {p}`")
    try:
        with np.load(p, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        report = json.loads(str(a["report"]))
        if report.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {report.get('format')} (expected {FORMAT_VERSION})")
        grid = TokenGrid(*report["grid"])
        tokens = a["tokens"].astype(np.int64)
        chords = a["chords"].astype(np.int64)
        off = a["offsets"]
        if len(off) != len(a["ids"]) + 1 or off[-1] != len(tokens) or len(chords) != len(tokens):
            raise ValueError("array lengths disagree")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MelodyDataError(f"cannot read melody file {p}: {exc}") from exc
    tokens.setflags(write=False)
    chords.setflags(write=False)
    parts: dict[str, dict[str, list[Melody]]] = {s: {sp: [] for sp in SPLITS} for s in STYLES}
    for i, pid in enumerate(a["ids"].tolist()):
        m = Melody(tokens[off[i]:off[i + 1]], int(a["keys"][i]), Meter.SUPPORTED[int(a["meters"][i])],
                   chords[off[i]:off[i + 1]], pid, pid, "", int(a["pickups"][i]), grid)
        parts[STYLES[int(a["styles"][i])]][SPLITS[int(a["splits"][i])]].append(m)
    collections = {}
    for s in STYLES:
        rep = CorpusReport(source=s, n_melodies=sum(len(v) for v in parts[s].values()), from_cache=True)
        collections[s] = CorpusSplit(*(MelodyCorpus(parts[s][sp], rep, grid, f"{s}[{sp}]") for sp in SPLITS))
    result = MelodySet(collections, report, grid)
    _CACHE[p] = result
    return result
