"""A composition: a token line on the grid, its key, meter and chord track.

Exports: :meth:`Composition.to_midi` (standard MIDI file, melody + chord track),
:meth:`Composition.to_music21` and :meth:`Composition.to_musicxml`. music21 and
mido are imported inside those methods only, so ``import musicenv`` stays fast.
Every writer goes through :func:`musicenv.render.write_atomically`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from musicenv.encoding import DEFAULT_GRID, EncodingError, Note, TokenGrid, tokens_to_notes
from musicenv.theory import (
    CHORD_QUALITY,
    CHORD_ROOT,
    MAJOR_KEY_TONIC_NAMES,
    MINOR_KEY_TONIC_NAMES,
    NO_CHORD,
    PITCH_CLASS_NAMES,
    QUALITIES,
    QUALITY_INTERVALS,
    Key,
    Meter,
    chord_name,
    parse_chord,
    resolve_progression,
)

if TYPE_CHECKING:
    import music21

__all__ = ["Composition", "as_composition", "spell_pitch_class", "spelled_chord_name", "MIDI_TICKS_PER_QUARTER", "MELODY_PROGRAM", "CHORD_PROGRAM"]

#: Resolution of exported MIDI files (ticks per quarter note); divisible by every
#: supported ``steps_per_quarter`` so each grid step is a whole number of ticks.
MIDI_TICKS_PER_QUARTER = 480
#: General MIDI programs (0-based) of the exported tracks.
MELODY_PROGRAM = 0  # Acoustic Grand Piano
CHORD_PROGRAM = 48  # String Ensemble 1: a sustained pad that stays behind the melody
MELODY_CHANNEL = 0
CHORD_CHANNEL = 1
MELODY_VELOCITY = 96  # 1..127
CHORD_VELOCITY = 56  # quieter than the melody
#: MIDI pitch of C3; chord roots are voiced in the octave C3..B3 (48..59), tones stacked above.
CHORD_ROOT_OCTAVE_BASE = 48

# Tonic spellings with the fewest accidentals in the key signature, shared by MIDI key
# signatures, music21 keys and key names (musicenv.theory.KEY_NAMES).
_MAJOR_TONIC_NAMES = MAJOR_KEY_TONIC_NAMES
_MINOR_TONIC_NAMES = MINOR_KEY_TONIC_NAMES
_LETTERS = "CDEFGAB"
_NATURAL_PC = (0, 2, 4, 5, 7, 9, 11)
# Chromatic notes as (scale degree 0..6, alteration in semitones), keyed by semitones
# above the tonic; degrees count along the major or natural minor scale.
_MAJOR_CHROMATIC = {1: (0, 1), 3: (2, -1), 6: (3, 1), 8: (5, -1), 10: (6, -1)}
_MINOR_CHROMATIC = {1: (1, -1), 4: (2, 1), 6: (3, 1), 9: (5, 1), 11: (6, 1)}

# music21 chord-symbol kinds of the quality codes in musicenv.theory.QUALITIES.
_M21_KIND = {
    "maj": "major", "min": "minor", "dim": "diminished", "aug": "augmented",
    "dom7": "dominant-seventh", "maj7": "major-seventh", "min7": "minor-seventh",
    "hdim7": "half-diminished-seventh", "dim7": "diminished-seventh",
    "sus4": "suspended-fourth", "sus2": "suspended-second",
}


def _tonic_name(key: Key) -> str:
    return (_MINOR_TONIC_NAMES if key.minor else _MAJOR_TONIC_NAMES)[key.tonic]


def _accidental(n: int) -> str:
    return "#" * n if n > 0 else "b" * -n


def spell_pitch_class(pc: int, key: Key) -> str:
    """Note name of pitch class ``pc`` (0..11) as a musician would spell it in ``key``.

    Scale tones take the key's letters (F# in D major, Cb in Gb major). Chromatic
    notes are spelled as the altered scale degree they most often are in tonal
    music: in major #1, b3, #4, b6, b7 (C#, Eb, F#, Ab, Bb in C); in minor b2,
    #3, #4 and the raised 6th and 7th (Bb, C#, D#, F#, G# in A minor). Returns
    names like ``'C'``, ``'F#'``, ``'Bb'``, ``'E#'``, ``'F##'``.
    """
    pc %= 12
    tonic_letter = _LETTERS.index(_tonic_name(key)[0])
    letters = [_LETTERS[(tonic_letter + d) % 7] for d in range(7)]
    # Signed offset of each scale degree from its natural letter, in -2..2.
    offsets = [((s - _NATURAL_PC[_LETTERS.index(letter)] + 6) % 12) - 6 for s, letter in zip(key.scale, letters, strict=True)]
    if pc in key.scale:
        d, alteration = key.scale.index(pc), 0
    else:
        d, alteration = (_MINOR_CHROMATIC if key.minor else _MAJOR_CHROMATIC)[(pc - key.tonic) % 12]
    return letters[d] + _accidental(offsets[d] + alteration)


def spelled_chord_name(code: int, key: Key) -> str:
    """Chord symbol of chord ``code`` with its root spelled for ``key`` (``'G#'`` in
    C# minor where :func:`~musicenv.theory.chord_name` says ``'Ab'``); ``'N.C.'``
    for ``NO_CHORD``."""
    name = chord_name(code)
    if code == NO_CHORD:
        return name
    root = int(CHORD_ROOT[code])
    return spell_pitch_class(root, key) + name[len(PITCH_CLASS_NAMES[root]):]


#: Staves with their first ledger lines (MIDI, inclusive): treble D4..G5, bass F2..C4.
TREBLE_STAFF = (62, 79)
BASS_STAFF = (41, 60)


def staff_clef(pitches: list[int] | np.ndarray) -> str:
    """``"treble"`` or ``"bass"``: the clef whose staff (with one ledger line each side)
    leaves the pitches fewest semitones outside it; treble on a tie and for no pitches."""
    def outside(staff: tuple[int, int]) -> int:
        return int(sum(max(0, staff[0] - p) + max(0, p - staff[1]) for p in pitches))

    return "bass" if outside(BASS_STAFF) < outside(TREBLE_STAFF) else "treble"


def _m21_name(name: str) -> str:
    """music21 spells flats with '-' ('B-'), sharps with '#'."""
    return name[0] + name[1:].replace("b", "-")


@dataclass
class Composition:
    """A monophonic melody over a chord track.

    Attributes:
        tokens: 1-D int array, one token per grid step (see :mod:`musicenv.encoding`).
        key: the :class:`~musicenv.theory.Key` of the piece.
        meter: the :class:`~musicenv.theory.Meter`.
        chords: 1-D int array of chord codes per step (``NO_CHORD`` where none
            sounds); at least as long as ``tokens``.
        grid: pitch range and resolution of the tokens.
        tempo: quarter notes per minute (used by exports only).
        title: shown in exports and pictures.
    """

    tokens: np.ndarray
    key: Key = field(default_factory=lambda: Key(0))
    meter: Meter = field(default_factory=Meter)
    chords: np.ndarray | None = None
    grid: TokenGrid = DEFAULT_GRID
    tempo: float = 100.0
    title: str = "musicenv composition"

    def __post_init__(self) -> None:
        self.key = Key.parse(self.key)
        self.meter = Meter.parse(self.meter)
        self.tokens = self.grid.check_tokens(self.tokens)
        if self.chords is None:
            self.chords = np.full(len(self.tokens), NO_CHORD, dtype=np.int64)
        else:
            self.chords = np.asarray([parse_chord(c) for c in self.chords] if np.asarray(self.chords).dtype == object
                                     else self.chords, dtype=np.int64)
            if self.chords.ndim != 1 or len(self.chords) < len(self.tokens):
                raise EncodingError(
                    f"chord track has {len(self.chords)} steps but the melody has {len(self.tokens)}; "
                    "give one chord code per step"
                )
        if not self.tempo > 0:
            raise ValueError(f"tempo must be a positive number of quarter notes per minute, got {self.tempo}")

    @classmethod
    def from_progression(cls, tokens, progression, key="C major", meter="4/4", chords_per_bar: int = 1,
                         grid: TokenGrid = DEFAULT_GRID, **kwargs) -> Composition:
        """Build a composition whose chord track plays ``progression`` (roman numerals
        or chord symbols, cycled) at ``chords_per_bar`` chords per bar."""
        key, meter = Key.parse(key), Meter.parse(meter)
        codes = resolve_progression(progression, key)
        tokens = grid.check_tokens(tokens)
        per_chord = meter.steps_per_bar(grid.steps_per_quarter) // chords_per_bar
        idx = (np.arange(len(tokens)) // per_chord) % len(codes)
        return cls(tokens, key, meter, np.asarray(codes, dtype=np.int64)[idx], grid, **kwargs)

    # ---- views -------------------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        return len(self.tokens)

    @property
    def steps_per_bar(self) -> int:
        return self.meter.steps_per_bar(self.grid.steps_per_quarter)

    def notes(self, include_rests: bool = False) -> list[Note]:
        """Notes as (MIDI pitch, onset step, duration in steps)."""
        return tokens_to_notes(self.tokens, self.grid, include_rests=include_rests)

    def chord_segments(self, n_steps: int | None = None) -> list[tuple[int, int, int]]:
        """The chord track as ``(code, onset step, duration in steps)`` runs.

        Covers the melody's length by default; ``n_steps`` covers that many steps
        of the chord track instead (at most its length), e.g. the planned length of
        an unfinished composition.
        """
        track = self.chords[: self.n_steps if n_steps is None else max(0, int(n_steps))]
        segs: list[tuple[int, int, int]] = []
        start = 0
        for t in range(1, len(track) + 1):
            if t == len(track) or track[t] != track[start]:
                segs.append((int(track[start]), start, t - start))
                start = t
        return segs

    def chord_symbols(self) -> list[str]:
        return [chord_name(c) for c, _, _ in self.chord_segments()]

    def __len__(self) -> int:
        return self.n_steps

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Composition):
            return NotImplemented
        return (np.array_equal(self.tokens, other.tokens) and self.key == other.key and self.meter == other.meter
                and np.array_equal(self.chords[: self.n_steps], other.chords[: other.n_steps])
                and self.grid == other.grid)

    # ---- exports -----------------------------------------------------------------------
    @property
    def ticks_per_step(self) -> int:
        """MIDI ticks per grid step in exported files (``MIDI_TICKS_PER_QUARTER`` per quarter)."""
        return MIDI_TICKS_PER_QUARTER // self.grid.steps_per_quarter

    def chord_voicing(self, code: int) -> list[int]:
        """MIDI pitches of the block chord exported for chord ``code``: the root in
        octave 3 (MIDI 48..59) with the other chord tones stacked above it."""
        if not 0 <= int(code) < NO_CHORD:
            raise ValueError(f"chord code {code} has no voicing; accepted: 0..{NO_CHORD - 1} (not N.C.)")
        root = CHORD_ROOT_OCTAVE_BASE + int(CHORD_ROOT[code])
        return [root + i for i in QUALITY_INTERVALS[QUALITIES[CHORD_QUALITY[code]]]]

    def to_midi(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write a standard MIDI file (type 1, 480 ticks per quarter) and return its path.

        Track 0 holds the title, tempo (``self.tempo`` quarter notes per minute),
        time signature and key signature. Track "Melody" (channel 0, piano) plays
        exactly ``self.notes()`` at their MIDI pitches (no transposition, unlike the
        RL Tuner reference code, which exported two semitones high). Track "Chords"
        (channel 1, string ensemble, quieter) plays each chord segment as a block
        chord (:meth:`chord_voicing`); N.C. segments are silent. The file lasts
        ``n_steps`` grid steps, trailing rests included.

        Raises ``IsADirectoryError``/``FileNotFoundError``/``NotADirectoryError``/
        ``PermissionError`` before writing anything if ``path`` cannot be written.
        """
        import mido

        from musicenv.files import write_atomically

        tempo_us = round(60_000_000 / self.tempo)  # microseconds per quarter note
        if not 0 < tempo_us < 2**24:
            raise ValueError(
                f"tempo {self.tempo} quarter notes per minute cannot be stored in a MIDI file; "
                "accepted: about 3.6 to 60,000,000"
            )
        tps = self.ticks_per_step
        end_tick = self.n_steps * tps
        k = self.key
        meter = self.meter
        conductor = mido.MidiTrack([
            mido.MetaMessage("track_name", name=self.title, time=0),
            mido.MetaMessage("set_tempo", tempo=tempo_us, time=0),
            mido.MetaMessage(
                "time_signature", numerator=meter.numerator, denominator=meter.denominator,
                # MIDI clocks (24 per quarter) per metronome click: the dotted quarter in 6/8.
                clocks_per_click=36 if meter.compound else 24 * 4 // meter.denominator,
                notated_32nd_notes_per_beat=8, time=0,
            ),
            mido.MetaMessage("key_signature", key=_tonic_name(k) + ("m" if k.minor else ""), time=0),
        ])
        melody_events = [(n.onset * tps, n.pitch, n.duration * tps) for n in self.notes()]
        chord_events = [
            (onset * tps, pitch, dur * tps)
            for code, onset, dur in self.chord_segments() if code != NO_CHORD
            for pitch in self.chord_voicing(code)
        ]
        tracks = [
            _midi_track(mido, melody_events, "Melody", MELODY_CHANNEL, MELODY_PROGRAM, MELODY_VELOCITY, end_tick),
            _midi_track(mido, chord_events, "Chords", CHORD_CHANNEL, CHORD_PROGRAM, CHORD_VELOCITY, end_tick),
        ]
        conductor.append(mido.MetaMessage("end_of_track", time=end_tick))
        midi = mido.MidiFile(type=1, ticks_per_beat=MIDI_TICKS_PER_QUARTER, tracks=[conductor, *tracks])
        return write_atomically(path, lambda tmp: midi.save(filename=str(tmp)), what="MIDI file")

    def to_music21(self) -> music21.stream.Score:
        """The composition as a music21 score.

        Part "Melody": clef by range (:func:`staff_clef`), key, time signature, notes and rests (offsets and lengths in
        quarter notes = steps / ``steps_per_quarter``), a ``ChordSymbol`` at each
        chord change, measures made and notes crossing a barline tied. Part
        "Chords": the chord track as block chords (:meth:`chord_voicing`), rests for
        N.C. Pitches are spelled for the key (Db in Ab major, G# in A minor).
        """
        from music21 import chord as m21chord
        from music21 import harmony, metadata, stream
        from music21 import key as m21key
        from music21 import meter as m21meter
        from music21 import note as m21note
        from music21 import pitch as m21pitch

        spq = self.grid.steps_per_quarter
        k = self.key

        def quarters(steps: int) -> Fraction:
            # Fractions keep triplet grids (3, 6, 12, 24 steps per quarter) exact.
            return Fraction(steps, spq)

        def pitch(name: str, midi: int) -> m21pitch.Pitch:
            """Pitch spelled ``name`` (music21 style, 'B-') sounding at MIDI ``midi``."""
            p = m21pitch.Pitch(name)
            p.octave = midi // 12 - 1
            p.octave += (midi - p.midi) // 12  # B#3 is MIDI 60, Cb4 is MIDI 59
            return p

        def part(name: str) -> stream.Part:
            p = stream.Part(id=name)
            p.partName = name
            p.insert(0, m21key.Key(_m21_name(_tonic_name(k)), "minor" if k.minor else "major"))
            p.insert(0, m21meter.TimeSignature(str(self.meter)))
            return p

        melody = part("Melody")
        for n in self.notes(include_rests=True):
            if n.pitch is None:
                el = m21note.Rest()
            else:
                el = m21note.Note(pitch(_m21_name(spell_pitch_class(n.pitch, k)), n.pitch))
            el.quarterLength = quarters(n.duration)
            melody.insert(quarters(n.onset), el)

        chords = part("Chords")
        symbols = []  # (offset in quarters, ChordSymbol or NoChord)
        previous = NO_CHORD
        for code, onset, dur in self.chord_segments():
            if code == NO_CHORD:
                if previous != NO_CHORD:  # mark where a chord stops, not a silent start
                    symbols.append((quarters(onset), harmony.NoChord()))
                chords.insert(quarters(onset), m21note.Rest(quarterLength=quarters(dur)))
            else:
                symbol = harmony.ChordSymbol(
                    root=_m21_name(spell_pitch_class(int(CHORD_ROOT[code]), k)),
                    kind=_M21_KIND[QUALITIES[CHORD_QUALITY[code]]],
                )
                symbols.append((quarters(onset), symbol))
                # Spell the block chord's tones as its chord symbol does (Db-Fb-Abb for Dbdim).
                names = {p.pitchClass: p.name for p in symbol.pitches}
                tones = [pitch(names[midi % 12], midi) for midi in self.chord_voicing(code)]
                chords.insert(quarters(onset), m21chord.Chord(tones, quarterLength=quarters(dur)))
            previous = code

        from music21 import clef as m21clef

        chord_pitches = [m for code, _, _ in self.chord_segments() if code != NO_CHORD for m in self.chord_voicing(code)]
        for p, used in ((melody, [n.pitch for n in self.notes()]), (chords, chord_pitches)):
            p.makeNotation(inPlace=True)
            # the clef follows the part's range (music21 would guess from its own statistics)
            first = p.getElementsByClass(stream.Measure).first()
            if first is not None:
                for old in list(first.getElementsByClass(m21clef.Clef)):
                    first.remove(old)
                first.insert(0, m21clef.BassClef() if staff_clef(used) == "bass" else m21clef.TrebleClef())
        # Chord symbols go into the finished measures: makeNotation would count their
        # (octave 3) pitches when choosing the clef and split the melody into voices.
        measures = list(melody.getElementsByClass(stream.Measure))
        for offset, symbol in symbols:
            bar = next(m for m in reversed(measures) if m.offset <= offset)
            bar.insert(offset - bar.offset, symbol)

        score = stream.Score(id="musicenv")
        # Without a composer music21 writes its own name as the composer.
        score.metadata = metadata.Metadata(title=self.title, composer="musicenv")
        score.insert(0, melody)
        score.insert(0, chords)
        return score

    def to_musicxml(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write :meth:`to_music21` as MusicXML and return the path.

        A ``.mxl`` suffix writes compressed MusicXML; any other suffix (``.musicxml``,
        ``.xml``) plain MusicXML. The file is written atomically (see :meth:`to_midi`).
        """
        from music21.musicxml.m21ToXml import GeneralObjectExporter

        from musicenv.files import write_atomically

        data: bytes = GeneralObjectExporter(self.to_music21()).parse()
        out = pathlib.Path(path)
        if out.suffix.lower() == ".mxl":
            return write_atomically(path, lambda tmp: _write_mxl(tmp, data), what="MusicXML file")
        return write_atomically(path, lambda tmp: tmp.write_bytes(data), what="MusicXML file")


def _midi_track(mido, events: list[tuple[int, int, int]], name: str, channel: int, program: int,
                velocity: int, end_tick: int):
    """A mido track playing ``events`` = ``(onset tick, MIDI pitch, duration ticks)``."""
    timed = []
    for onset, pitch, dur in events:
        # At equal ticks note-offs (0) sort before note-ons (1) so repeated pitches re-strike cleanly.
        timed.append((onset + dur, 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        timed.append((onset, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
    timed.sort(key=lambda e: (e[0], e[1], e[2].note))
    track = mido.MidiTrack([
        mido.MetaMessage("track_name", name=name, time=0),
        mido.Message("program_change", channel=channel, program=program, time=0),
    ])
    now = 0
    for tick, _, msg in timed:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - now)))
    return track


def _write_mxl(path: pathlib.Path, data: bytes) -> None:
    """Compressed MusicXML: a zip holding the score and the container file pointing to it."""
    import zipfile

    inner_name = "score.musicxml"

    container = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<container><rootfiles>'
        f'<rootfile full-path="{inner_name}" media-type="application/vnd.recordare.musicxml+xml"/>'
        "</rootfiles></container>\n"
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # The MusicXML spec asks for an uncompressed "mimetype" entry first.
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.recordare.musicxml")
        zf.writestr("META-INF/container.xml", container)
        zf.writestr(inner_name, data)


def as_composition(item: Composition | Sequence[int] | np.ndarray) -> Composition:
    """``item`` itself if it is a :class:`Composition`; otherwise a composition of the
    token sequence ``item`` on the default grid in C major, 4/4, without chords."""
    if isinstance(item, Composition):
        return item
    return Composition(np.asarray(item))
