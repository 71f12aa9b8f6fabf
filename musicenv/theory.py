"""Music theory: pitch classes, scales, keys, chords, roman numerals and intervals.

Everything here is pure Python/numpy and cheap to import. Besides the readable
objects (:class:`Key`, :class:`Chord`, :class:`Meter`) the module exposes
precomputed lookup tables (``KEY_SCALE_MASK``, ``CHORD_PC_MASK``, ...) that the
numba reward kernels index directly, so every musical fact lives in one place.

Conventions
-----------
* Pitch classes are integers 0..11 with C = 0.
* A key is an index 0..23: ``0..11`` are the major keys on tonics C..B,
  ``12..23`` the minor keys on tonics C..B (``KEY_NAMES``).
* A chord is a code ``root * N_QUALITIES + quality`` (``0 .. N_CHORDS - 1``), or
  ``NO_CHORD`` (= ``N_CHORDS``) for "N.C.".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PITCH_CLASS_NAMES",
    "MAJOR_SCALE",
    "NATURAL_MINOR_SCALE",
    "MINOR_KEY_PITCH_CLASSES",
    "N_KEYS",
    "KEY_NAMES",
    "MAJOR_KEY_TONIC_NAMES",
    "MINOR_KEY_TONIC_NAMES",
    "QUALITIES",
    "QUALITY_INTERVALS",
    "N_QUALITIES",
    "N_CHORDS",
    "NO_CHORD",
    "N_PITCH_CLASSES",
    "CHORD_FEATURES",
    "KEY_SCALE_MASK",
    "KEY_TONIC",
    "KEY_IS_MINOR",
    "KEY_LEADING_TONE",
    "CHORD_PC_MASK",
    "CHORD_ROOT",
    "CHORD_QUALITY",
    "INTERVAL_CONSONANCE",
    "Key",
    "Chord",
    "Meter",
    "MusicTheoryError",
    "parse_pitch_class",
    "parse_key",
    "parse_chord",
    "parse_roman",
    "resolve_progression",
    "chord_name",
    "transpose_key",
    "COMMON_PROGRESSIONS",
    "CADENTIAL_PROGRESSIONS",
    "PROGRESSION_BANKS",
    "transpose_chords",
]


class MusicTheoryError(ValueError):
    """A key, chord, roman numeral, meter or pitch name could not be understood."""


PITCH_CLASS_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

#: Semitones above the tonic of each degree of the major scale.
MAJOR_SCALE: tuple[int, ...] = (0, 2, 4, 5, 7, 9, 11)
#: Semitones above the tonic of each degree of the natural minor scale.
NATURAL_MINOR_SCALE: tuple[int, ...] = (0, 2, 3, 5, 7, 8, 10)
#: Pitch classes counted as "in key" for a minor key: the natural minor scale plus
#: the raised 6th and 7th degrees of the melodic/harmonic minor, because tonal
#: minor-key melodies use the leading tone routinely (every V chord contains it).
MINOR_KEY_PITCH_CLASSES: tuple[int, ...] = (0, 2, 3, 5, 7, 8, 9, 10, 11)

N_KEYS = 24  # 12 major (0..11) then 12 minor (12..23)
#: Tonic spellings of the key signature with the fewest accidentals (Db major, not C#
#: major; G# minor, not Ab minor): how a score writes each key, so how we name it.
MAJOR_KEY_TONIC_NAMES: tuple[str, ...] = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_KEY_TONIC_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
#: Key names as their scores spell them: ``KEY_NAMES[k]`` for key index k.
KEY_NAMES: tuple[str, ...] = tuple(f"{n} major" for n in MAJOR_KEY_TONIC_NAMES) + tuple(
    f"{n} minor" for n in MINOR_KEY_TONIC_NAMES
)

#: Chord qualities, in code order, with their intervals above the root.
QUALITY_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "dom7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "hdim7": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9),
    "sus4": (0, 5, 7),
    "sus2": (0, 2, 7),
}
QUALITIES: tuple[str, ...] = tuple(QUALITY_INTERVALS)
N_QUALITIES = len(QUALITIES)
N_CHORDS = 12 * N_QUALITIES
NO_CHORD = N_CHORDS  # code for "no chord" (N.C.)

# ---- widths of the one-hot encodings in observations and model inputs (their one home)
#: Pitch classes in an octave: the width of every pitch-class one-hot.
N_PITCH_CLASSES = 12
#: Width of one chord's encoding: root one-hot (N_PITCH_CLASSES), quality one-hot
#: (N_QUALITIES, ``QUALITIES`` order), "no chord" flag (1). A key's one-hot is N_KEYS wide.
CHORD_FEATURES = N_PITCH_CLASSES + N_QUALITIES + 1

# Suffixes used when printing chord symbols, and every spelling accepted when parsing.
_QUALITY_SUFFIX = {
    "maj": "", "min": "m", "dim": "dim", "aug": "aug", "dom7": "7", "maj7": "maj7",
    "min7": "m7", "hdim7": "m7b5", "dim7": "dim7", "sus4": "sus4", "sus2": "sus2",
}
_SUFFIX_QUALITY = {
    "": "maj", "M": "maj", "maj": "maj", "major": "maj",
    "m": "min", "min": "min", "minor": "min", "-": "min",
    "dim": "dim", "o": "dim", "°": "dim",
    "aug": "aug", "+": "aug",
    "7": "dom7", "dom7": "dom7",
    "maj7": "maj7", "M7": "maj7", "Δ": "maj7", "Δ7": "maj7",
    "m7": "min7", "min7": "min7", "-7": "min7",
    "m7b5": "hdim7", "ø": "hdim7", "ø7": "hdim7", "hdim7": "hdim7",
    "dim7": "dim7", "o7": "dim7", "°7": "dim7",
    "sus4": "sus4", "sus": "sus4", "sus2": "sus2",
}


def _build_tables() -> dict[str, np.ndarray]:
    key_scale = np.zeros((N_KEYS, 12), dtype=np.bool_)
    key_tonic = np.zeros(N_KEYS, dtype=np.int64)
    key_minor = np.zeros(N_KEYS, dtype=np.bool_)
    key_leading = np.zeros(N_KEYS, dtype=np.int64)
    for k in range(N_KEYS):
        tonic, minor = k % 12, k >= 12
        pcs = MINOR_KEY_PITCH_CLASSES if minor else MAJOR_SCALE
        key_scale[k, [(tonic + i) % 12 for i in pcs]] = True
        key_tonic[k], key_minor[k], key_leading[k] = tonic, minor, (tonic + 11) % 12
    chord_pc = np.zeros((N_CHORDS + 1, 12), dtype=np.bool_)  # last row: N.C. holds nothing
    chord_root = np.full(N_CHORDS + 1, -1, dtype=np.int64)
    chord_quality = np.full(N_CHORDS + 1, -1, dtype=np.int64)
    for root in range(12):
        for q, name in enumerate(QUALITIES):
            code = root * N_QUALITIES + q
            chord_pc[code, [(root + i) % 12 for i in QUALITY_INTERVALS[name]]] = True
            chord_root[code], chord_quality[code] = root, q
    # Consonance of a harmonic interval reduced to within an octave (semitones 0..11):
    # 1 perfect consonance, 0.5 imperfect consonance, 0 mild dissonance (perfect 4th
    # against the bass is treated as mild), -1 sharp dissonance (m2, M7, tritone).
    consonance = np.array([1.0, -1.0, 0.0, 0.5, 0.5, 0.0, -1.0, 1.0, 0.5, 0.5, 0.0, -1.0])
    return {
        "KEY_SCALE_MASK": key_scale, "KEY_TONIC": key_tonic, "KEY_IS_MINOR": key_minor,
        "KEY_LEADING_TONE": key_leading, "CHORD_PC_MASK": chord_pc, "CHORD_ROOT": chord_root,
        "CHORD_QUALITY": chord_quality, "INTERVAL_CONSONANCE": consonance,
    }


_T = _build_tables()
#: ``KEY_SCALE_MASK[key, pc]``: pitch class ``pc`` belongs to key ``key``.
KEY_SCALE_MASK: np.ndarray = _T["KEY_SCALE_MASK"]
#: ``KEY_TONIC[key]``: tonic pitch class of the key.
KEY_TONIC: np.ndarray = _T["KEY_TONIC"]
#: ``KEY_IS_MINOR[key]``.
KEY_IS_MINOR: np.ndarray = _T["KEY_IS_MINOR"]
#: ``KEY_LEADING_TONE[key]``: pitch class a semitone below the tonic.
KEY_LEADING_TONE: np.ndarray = _T["KEY_LEADING_TONE"]
#: ``CHORD_PC_MASK[code, pc]``: pitch class ``pc`` is a chord tone (row ``NO_CHORD`` is empty).
CHORD_PC_MASK: np.ndarray = _T["CHORD_PC_MASK"]
#: ``CHORD_ROOT[code]`` root pitch class, -1 for N.C.
CHORD_ROOT: np.ndarray = _T["CHORD_ROOT"]
#: ``CHORD_QUALITY[code]`` index into ``QUALITIES``, -1 for N.C.
CHORD_QUALITY: np.ndarray = _T["CHORD_QUALITY"]
#: ``INTERVAL_CONSONANCE[semitones % 12]`` in {1, 0.5, 0, -1}.
INTERVAL_CONSONANCE: np.ndarray = _T["INTERVAL_CONSONANCE"]
for _a in _T.values():
    _a.setflags(write=False)
del _T, _a


def transpose_chords(codes, shift: int) -> np.ndarray:
    """Chord codes moved by ``shift`` semitones (roots mod 12, qualities kept); ``NO_CHORD``
    stays. Returns a new int64 array of ``codes``' shape."""
    codes = np.asarray(codes, dtype=np.int64)
    moved = ((CHORD_ROOT[codes] + shift) % N_PITCH_CLASSES) * N_QUALITIES + CHORD_QUALITY[codes]
    return np.where(codes == NO_CHORD, NO_CHORD, moved)


_PC_RE = re.compile(r"^([A-Ga-g])([#b♯♭]*)")


def _parse_pc_prefix(text: str) -> tuple[int, str]:
    m = _PC_RE.match(text)
    if not m:
        raise MusicTheoryError(
            f"cannot read a pitch name at the start of {text!r}; expected a letter A-G "
            "optionally followed by # or b (e.g. 'C', 'F#', 'Bb')"
        )
    pc = _LETTER_PC[m.group(1).upper()]
    for acc in m.group(2):
        pc += 1 if acc in "#♯" else -1
    return pc % 12, text[m.end():]


def parse_pitch_class(name: str | int) -> int:
    """Pitch class 0..11 of a note name such as ``'C'``, ``'F#'``, ``'Bb'`` (or an int)."""
    if isinstance(name, (int, np.integer)):
        if not 0 <= int(name) < 12:
            raise MusicTheoryError(f"pitch class {name} out of range; accepted: 0..11")
        return int(name)
    pc, rest = _parse_pc_prefix(str(name).strip())
    if rest:
        raise MusicTheoryError(f"unexpected {rest!r} after the pitch name in {name!r}")
    return pc


def parse_key(key: str | int | Key) -> int:
    """Key index 0..23 from an index, a :class:`Key`, or a name.

    Names: ``'C'``/``'C major'``/``'C maj'``/``'Cmaj'`` for major and
    ``'a'``/``'A minor'``/``'Am'``/``'A min'`` for minor (a lower-case bare
    letter means minor, as in music21).
    """
    if isinstance(key, Key):
        return key.index
    if isinstance(key, (int, np.integer)):
        if not 0 <= int(key) < N_KEYS:
            raise MusicTheoryError(f"key index {key} out of range; accepted: 0..23 ({KEY_NAMES[0]!r}..{KEY_NAMES[-1]!r})")
        return int(key)
    text = str(key).strip()
    try:
        pc, rest = _parse_pc_prefix(text)
    except MusicTheoryError:
        raise MusicTheoryError(
            f"unknown key {key!r}; accepted: a key index 0..23 or a name like 'C major', 'F# minor', 'Bb', 'a'"
        ) from None
    mode = rest.strip().lower().replace("-", " ")
    if mode in ("", "major", "maj", "ionian"):
        minor = mode == "" and text[0].islower()
    elif mode in ("minor", "min", "m", "aeolian"):
        minor = True
    else:
        raise MusicTheoryError(f"unknown mode {rest.strip()!r} in key {key!r}; accepted: major, minor")
    return pc + 12 * minor


@dataclass(frozen=True)
class Key:
    """A major or minor key. ``Key.parse('F# minor')``, ``Key(6, minor=True)``."""

    tonic: int
    minor: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.tonic < 12:
            raise MusicTheoryError(f"tonic pitch class {self.tonic} out of range; accepted: 0..11")

    @classmethod
    def parse(cls, key: str | int | Key) -> Key:
        return cls.from_index(parse_key(key))

    @classmethod
    def from_index(cls, index: int) -> Key:
        index = parse_key(int(index))
        return cls(index % 12, index >= 12)

    @property
    def index(self) -> int:
        return self.tonic + 12 * self.minor

    @property
    def name(self) -> str:
        return KEY_NAMES[self.index]

    @property
    def scale(self) -> tuple[int, ...]:
        """Pitch classes of the diatonic scale (natural minor for minor keys), tonic first."""
        steps = NATURAL_MINOR_SCALE if self.minor else MAJOR_SCALE
        return tuple((self.tonic + s) % 12 for s in steps)

    @property
    def pitch_classes(self) -> frozenset[int]:
        """Pitch classes counted as in key (see ``MINOR_KEY_PITCH_CLASSES`` for minor)."""
        return frozenset(np.flatnonzero(KEY_SCALE_MASK[self.index]).tolist())

    def contains(self, pitch: int) -> bool:
        return bool(KEY_SCALE_MASK[self.index, pitch % 12])

    def __str__(self) -> str:
        return self.name


def parse_chord(symbol: str | int | Chord) -> int:
    """Chord code from a symbol such as ``'C'``, ``'Am'``, ``'G7'``, ``'Bdim'``,
    ``'Fmaj7'``, ``'Dm7'``, ``'Bm7b5'``, ``'Caug'``, ``'Dsus4'`` or ``'N.C.'``."""
    if isinstance(symbol, Chord):
        return symbol.code
    if isinstance(symbol, (int, np.integer)):
        if not 0 <= int(symbol) <= NO_CHORD:
            raise MusicTheoryError(f"chord code {symbol} out of range; accepted: 0..{NO_CHORD} ({NO_CHORD} = N.C.)")
        return int(symbol)
    text = str(symbol).strip()
    if text.upper() in ("N.C.", "NC", "N.C", "-"):
        return NO_CHORD
    try:
        root, rest = _parse_pc_prefix(text)
    except MusicTheoryError:
        raise MusicTheoryError(
            f"unknown chord symbol {symbol!r}; expected a root A-G (with # or b) and a quality "
            f"suffix, one of {sorted(set(_SUFFIX_QUALITY) - {''})} or none for major"
        ) from None
    if rest not in _SUFFIX_QUALITY:
        raise MusicTheoryError(
            f"unknown chord quality {rest!r} in {symbol!r}; accepted suffixes: "
            f"{sorted(set(_SUFFIX_QUALITY) - {''})} or none for major"
        )
    return root * N_QUALITIES + QUALITIES.index(_SUFFIX_QUALITY[rest])


def chord_name(code: int) -> str:
    """Chord symbol of a chord code, e.g. ``'Am'``, ``'G7'``, ``'N.C.'``."""
    if code == NO_CHORD:
        return "N.C."
    root, q = divmod(int(code), N_QUALITIES)
    return PITCH_CLASS_NAMES[root] + _QUALITY_SUFFIX[QUALITIES[q]]


@dataclass(frozen=True)
class Chord:
    """A chord as root pitch class + quality. ``Chord.parse('G7')``."""

    root: int
    quality: str = "maj"

    def __post_init__(self) -> None:
        if not 0 <= self.root < 12:
            raise MusicTheoryError(f"chord root {self.root} out of range; accepted: 0..11")
        if self.quality not in QUALITY_INTERVALS:
            raise MusicTheoryError(f"unknown chord quality {self.quality!r}; accepted: {list(QUALITIES)}")

    @classmethod
    def parse(cls, symbol: str | int | Chord) -> Chord:
        code = parse_chord(symbol)
        if code == NO_CHORD:
            raise MusicTheoryError("'N.C.' is not a chord; use the code NO_CHORD where no chord sounds")
        return cls.from_code(code)

    @classmethod
    def from_code(cls, code: int) -> Chord:
        root, q = divmod(int(code), N_QUALITIES)
        return cls(root, QUALITIES[q])

    @property
    def code(self) -> int:
        return self.root * N_QUALITIES + QUALITIES.index(self.quality)

    @property
    def name(self) -> str:
        return chord_name(self.code)

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        return tuple((self.root + i) % 12 for i in QUALITY_INTERVALS[self.quality])

    def __str__(self) -> str:
        return self.name


_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7}
_ROMAN_RE = re.compile(r"^(?P<acc>[b#♭♯]*)(?P<num>VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(?P<suf>.*)$")


def parse_roman(numeral: str, key: str | int | Key) -> int:
    """Chord code of a roman numeral in a key.

    The numeral's case gives the triad (upper = major, lower = minor); suffixes
    ``°``/``o`` (diminished), ``+`` (augmented), ``7`` (dominant 7th on an upper-case
    numeral, minor 7th on a lower-case one), ``maj7``/``M7``, ``ø``/``ø7`` (half
    diminished), ``°7``/``o7`` (diminished 7th); a leading ``b`` or ``#`` alters the
    root. Degrees count along the major scale in major keys and the natural minor
    scale in minor keys, so in A minor ``V7`` is E7 and ``VII`` is G.
    """
    k = Key.from_index(parse_key(key))
    m = _ROMAN_RE.match(str(numeral).strip())
    if not m:
        raise MusicTheoryError(
            f"cannot read roman numeral {numeral!r}; expected I..VII or i..vii, optionally preceded by "
            "b/# and followed by one of °, o, +, 7, maj7, ø7, °7"
        )
    num, suf = m.group("num"), m.group("suf")
    upper = num.isupper()
    root = k.scale[_ROMAN[num.upper()] - 1]
    for acc in m.group("acc"):
        root += 1 if acc in "#♯" else -1
    table = {
        "": "maj" if upper else "min",
        "7": "dom7" if upper else "min7",
        "maj7": "maj7", "M7": "maj7",
        "°": "dim", "o": "dim", "dim": "dim",
        "+": "aug", "aug": "aug",
        "ø": "hdim7", "ø7": "hdim7", "/o7": "hdim7",
        "°7": "dim7", "o7": "dim7", "dim7": "dim7",
    }
    if suf not in table:
        raise MusicTheoryError(f"unknown suffix {suf!r} in roman numeral {numeral!r}; accepted: {sorted(table)}")
    return (root % 12) * N_QUALITIES + QUALITIES.index(table[suf])


def _looks_roman(token: str) -> bool:
    return bool(_ROMAN_RE.match(token)) and not _PC_RE.match(token)


def resolve_progression(progression, key: str | int | Key) -> list[int]:
    """Chord codes of a progression given as roman numerals, chord symbols or codes.

    ``progression`` is a sequence, or a string separated by spaces, ``-`` or ``|``
    (``'I-vi-IV-V'``, ``'C Am F G7'``). Roman numerals are read in ``key``.
    """
    if isinstance(progression, str):
        items = [p for p in re.split(r"[\s|,]+|(?<=[^\s])-(?=[^\s])", progression.strip()) if p]
    else:
        items = list(progression)
    if not items:
        raise MusicTheoryError("empty chord progression; give at least one chord (e.g. 'I-IV-V-I')")
    codes = []
    for item in items:
        if isinstance(item, (int, np.integer, Chord)):
            codes.append(parse_chord(item))
        elif _looks_roman(str(item).strip()):
            codes.append(parse_roman(item, key))
        else:
            try:
                codes.append(parse_chord(item))
            except MusicTheoryError as e:
                raise MusicTheoryError(
                    f"progression item {item!r} is neither a roman numeral (I..VII, i..vii) nor a chord symbol: {e}"
                ) from None
    return codes


def transpose_key(key: int, shift: int) -> int:
    """Key index moved by ``shift`` semitones (the mode stays): ``transpose_key(0, 7)`` is
    G major (7), ``transpose_key(21, 3)`` (A minor up 3) is C minor (12)."""
    key = int(key)
    if not 0 <= key < N_KEYS:
        raise MusicTheoryError(f"key index {key} outside 0..{N_KEYS - 1}")
    return (key % 12 + int(shift)) % 12 + 12 * (key >= 12)


#: Bank of common progressions (roman numerals, one chord per bar), per mode.
COMMON_PROGRESSIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "major": (
        ("I", "IV", "V", "I"),
        ("I", "vi", "IV", "V"),
        ("I", "V", "vi", "IV"),
        ("ii", "V7", "I", "I"),
        ("I", "vi", "ii", "V7"),
        ("I", "IV", "ii", "V"),
        ("vi", "IV", "I", "V"),
        ("I", "iii", "IV", "V"),
    ),
    "minor": (
        ("i", "iv", "V", "i"),
        ("i", "VI", "III", "VII"),
        ("i", "iv", "VII", "III"),
        ("ii°", "V7", "i", "i"),
        ("i", "VI", "iv", "V"),
        ("i", "VII", "VI", "V"),
    ),
}


#: Bank of closing progressions (roman numerals, one chord per bar), per mode: every one
#: ends on the tonic chord reached from the dominant (V-I, V7-I, V-i, V7-i: an authentic
#: cadence) or the subdominant (IV-I, iv-i: a plagal cadence), so a melody over it can
#: close the way real pieces do, on the tonic over a tonic chord. Of
#: :data:`COMMON_PROGRESSIONS`, only those ending on the tonic chord are in it (4 of 14),
#: with cadential formulas of the chorale and folk-song repertoire added (Caplin,
#: *Classical Form*, ch. 3: the cadential progression; Aldwell & Schachter, *Harmony and
#: Voice Leading*, ch. 6-10: I-IV-V-I, I-ii-V-I, I-vi-IV-V-I and their minor forms).
CADENTIAL_PROGRESSIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "major": (
        ("I", "IV", "V", "I"),
        ("ii", "V7", "I", "I"),
        ("I", "vi", "V7", "I"),
        ("I", "ii", "V7", "I"),
        ("vi", "IV", "V", "I"),
        ("I", "IV", "V7", "I"),
        ("I", "vi", "IV", "I"),
        ("I", "V", "IV", "I"),
    ),
    "minor": (
        ("i", "iv", "V", "i"),
        ("ii°", "V7", "i", "i"),
        ("i", "VI", "V7", "i"),
        ("i", "iv", "V7", "i"),
        ("VI", "iv", "V", "i"),
        ("i", "VI", "iv", "i"),
    ),
}

#: Named progression banks, as MusicComposition-v0's ``progression="<name>"`` takes them.
PROGRESSION_BANKS: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {
    "common": COMMON_PROGRESSIONS,
    "cadential": CADENTIAL_PROGRESSIONS,
}


@dataclass(frozen=True)
class Meter:
    """A time signature. ``Meter.parse('3/4')``.

    ``beats_per_bar`` counts the beats a listener taps: 4 in 4/4, 3 in 3/4 and 2
    (dotted quarters) in 6/8. ``steps_per_bar(steps_per_quarter)`` gives the grid.
    ``strong_beats`` are the beat indices carrying metrical accent (downbeat, and
    beat 3 in 4/4).
    """

    numerator: int = 4
    denominator: int = 4

    SUPPORTED = ("4/4", "3/4", "2/4", "6/8")

    def __post_init__(self) -> None:
        if f"{self.numerator}/{self.denominator}" not in self.SUPPORTED:
            raise MusicTheoryError(
                f"unsupported meter {self.numerator}/{self.denominator}; accepted: {', '.join(self.SUPPORTED)}"
            )

    @classmethod
    def parse(cls, meter: str | Meter | tuple[int, int]) -> Meter:
        if isinstance(meter, Meter):
            return meter
        if isinstance(meter, tuple):
            return cls(*meter)
        m = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*$", str(meter))
        if not m:
            raise MusicTheoryError(f"cannot read meter {meter!r}; accepted: {', '.join(cls.SUPPORTED)}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def compound(self) -> bool:
        return self.denominator == 8 and self.numerator % 3 == 0

    @property
    def beats_per_bar(self) -> int:
        return self.numerator // 3 if self.compound else self.numerator

    @property
    def quarters_per_bar(self) -> float:
        return self.numerator * 4 / self.denominator

    def steps_per_beat(self, steps_per_quarter: int) -> int:
        return steps_per_quarter * 3 // 2 if self.compound else steps_per_quarter * 4 // self.denominator

    def steps_per_bar(self, steps_per_quarter: int) -> int:
        return self.steps_per_beat(steps_per_quarter) * self.beats_per_bar

    @property
    def strong_beats(self) -> tuple[int, ...]:
        return (0, 2) if self.beats_per_bar == 4 else (0,)

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"
