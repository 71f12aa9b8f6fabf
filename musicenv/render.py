"""Pictures of a composition: a text piano roll, an RGB piano roll and PNG files.

* :func:`render_ansi` — the env's ``"ansi"`` render mode: plain text, one row per
  pitch, bar numbers, chord symbols and a beat ruler on top.
* :func:`render_rgb` — the env's ``"rgb_array"`` render mode: a ``uint8`` array
  of shape ``(H, W, 3)`` that depends only on the grid and the planned length,
  so all frames of an episode (and of every episode of an env) share one shape.
* :func:`save_png` — that picture as a PNG file.
* :func:`write_atomically` — the one safe file writer that every export
  (MIDI, MusicXML, PNG) goes through (defined in :mod:`musicenv.files`).

numpy is the only import at module level; PIL is imported when a picture gets
text or is saved, so an env that never renders never pays for it.
"""

from __future__ import annotations

import colorsys
import functools
import os
import pathlib
from typing import TYPE_CHECKING

import numpy as np

from musicenv.composition import spell_pitch_class, spelled_chord_name
from musicenv.files import check_writable, write_atomically  # re-exported: the one atomic writer
from musicenv.theory import CHORD_PC_MASK, CHORD_ROOT, KEY_SCALE_MASK, NO_CHORD, Key

if TYPE_CHECKING:
    from musicenv.composition import Composition

__all__ = ["render_ansi", "render_rgb", "rgb_layout", "save_png", "write_atomically", "check_writable"]


# ---- shared helpers --------------------------------------------------------------------
def _planned_length(comp: Composition, n_steps: int | None) -> int:
    """Steps to draw: ``n_steps`` (the planned length) or the composition's length."""
    if n_steps is None:
        return comp.n_steps
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise TypeError(f"n_steps must be an int number of grid steps or None, got {n_steps!r}")
    if n_steps < comp.n_steps:
        raise ValueError(
            f"n_steps={n_steps} is shorter than the composition ({comp.n_steps} steps written); "
            f"accepted: None or an int >= {comp.n_steps}"
        )
    return int(n_steps)


def _note_name(pitch: int, key: Key) -> str:
    """Name with octave as spelled in ``key`` (G#4 in A minor, Ab4 in C minor); the
    octave number follows the letter, so MIDI 60 is B#3 in C# minor."""
    name = spell_pitch_class(pitch, key)
    alteration = name.count("#") - name.count("b")
    return f"{name}{(pitch - alteration) // 12 - 1}"


# ---- text piano roll -------------------------------------------------------------------
ANSI_ONSET = "#"  # a note starts in this step
ANSI_HOLD = "="  # the note goes on
ANSI_EMPTY_IN_KEY = "·"  # nothing sounds; the row's pitch is in the key
ANSI_EMPTY_OUT_OF_KEY = " "  # nothing sounds; the row's pitch is outside the key
ANSI_UNWRITTEN = " "  # step not composed yet
ANSI_BAR = "|"
ANSI_MARGIN = 2  # semitones shown above the highest and below the lowest note


def _ansi_pitch_span(comp: Composition, pitches: list[int]) -> tuple[int, int]:
    """Lowest and highest pitch row: the notes' span plus a margin, at least an octave."""
    g = comp.grid
    lo, hi = (min(pitches) - ANSI_MARGIN, max(pitches) + ANSI_MARGIN) if pitches else (60, 60)
    if hi - lo < 12:
        lo = (lo + hi) // 2 - 6
        hi = lo + 12
    if lo < g.min_pitch:
        lo, hi = g.min_pitch, hi + g.min_pitch - lo
    if hi > g.max_pitch:
        lo, hi = lo - (hi - g.max_pitch), g.max_pitch
    return max(lo, g.min_pitch), min(hi, g.max_pitch)


def render_ansi(comp: Composition, n_steps: int | None = None) -> str:
    """A text piano roll of ``comp``, one character per grid step.

    From the top: bar numbers, chord symbols (spelled for the key) at their onsets, a beat ruler
    (beat numbers, ``.`` between beats, ``|`` at bar lines), then one row per
    pitch, highest first, labelled with its name as spelled in the key (``F#4``,
    ``Bb3``; middle C is ``C4``).
    In a row ``#`` starts a note, ``=`` holds it, ``·`` is silence on a pitch of
    the key and a blank silence on a pitch outside it. ``n_steps`` is the planned
    length in steps: steps not written yet are left blank (the chord symbols of
    the plan still show). The last line names key, meter, tempo and progress.
    Works for an empty composition.
    """
    total = _planned_length(comp, n_steps)
    spb = comp.steps_per_bar
    steps_per_beat = comp.meter.steps_per_beat(comp.grid.steps_per_quarter)
    notes = comp.notes()
    lo, hi = _ansi_pitch_span(comp, [n.pitch for n in notes])
    label_w = max(len(_note_name(p, comp.key)) for p in range(lo, hi + 1)) + 1
    n_bars = -(-total // spb)
    width = label_w + total + n_bars + 1

    def col(step: int) -> int:
        # One bar-line character precedes every bar.
        return label_w + 1 + step + step // spb

    bar_cols = [label_w + b * (spb + 1) for b in range(n_bars + 1) if b * spb <= total]

    def blank_line() -> list[str]:
        return [" "] * width

    def place(lanes: list[list[str]], ends: list[int], text: str, at: int) -> None:
        # Greedy lanes: a label goes on the first line where it does not touch the previous one.
        lane = next((i for i, end in enumerate(ends) if at > end), None)
        if lane is None:
            lanes.append(blank_line())
            ends.append(-1)
            lane = len(lanes) - 1
        room = width - at
        lanes[lane][at:at + min(len(text), room)] = text[:room]
        ends[lane] = at + len(text)

    header: list[str] = []
    bars, bar_ends = [blank_line()], [-1]
    for b, c in enumerate(bar_cols[:n_bars]):
        text = str(b + 1)
        if c > bar_ends[0]:
            bars[0][c:c + len(text)] = text[: width - c]
            bar_ends[0] = c + len(text)
    header.append("".join(bars[0]).rstrip())
    chord_lanes: list[list[str]] = []
    chord_ends: list[int] = []
    prev_code = NO_CHORD
    for code, onset, _ in comp.chord_segments(total):
        if code != NO_CHORD or prev_code != NO_CHORD:  # "N.C." only where a chord stops
            place(chord_lanes, chord_ends, spelled_chord_name(code, comp.key), col(onset))
        prev_code = code
    header.extend("".join(lane).rstrip() for lane in chord_lanes)

    ruler = blank_line()
    for t in range(total):
        beat, within = divmod(t % spb, steps_per_beat)
        ruler[col(t)] = str((beat + 1) % 10) if within == 0 else "."
    for c in bar_cols:
        ruler[c] = ANSI_BAR
    header.append("".join(ruler))

    written = comp.n_steps
    rows = []
    in_key = KEY_SCALE_MASK[comp.key.index]
    for pitch in range(hi, lo - 1, -1):
        empty = ANSI_EMPTY_IN_KEY if in_key[pitch % 12] else ANSI_EMPTY_OUT_OF_KEY
        row = blank_line()
        row[:label_w] = _note_name(pitch, comp.key).ljust(label_w)
        for t in range(total):
            row[col(t)] = empty if t < written else ANSI_UNWRITTEN
        for c in bar_cols:
            row[c] = ANSI_BAR
        rows.append(row)
    for n in notes:
        row = rows[hi - n.pitch]
        row[col(n.onset)] = ANSI_ONSET
        for t in range(n.onset + 1, n.onset + n.duration):
            row[col(t)] = ANSI_HOLD
    footer = (
        f"{comp.key.name}, {comp.meter}, {comp.tempo:g} quarter notes/min, "
        f"{comp.grid.steps_per_quarter} steps per quarter; {written}/{total} steps written"
    )
    return "\n".join([*header, *("".join(r) for r in rows), footer])


# ---- RGB piano roll --------------------------------------------------------------------
RGB_KEYBOARD_W = 14  # px, keyboard strip on the left
RGB_PITCH_LABEL_W = 30  # px, pitch names left of the keyboard (cropped pictures, save_png)
RGB_TITLE_H = 14  # px, title line
RGB_LABEL_H = 14  # px, chord-symbol line
RGB_BAND_H = 8  # px, coloured chord band
RGB_HEADER_H = RGB_TITLE_H + RGB_LABEL_H + RGB_BAND_H

_WHITE = (255, 255, 255)
_ROW_IN_KEY = (251, 251, 248)
_ROW_OUT_OF_KEY = (232, 232, 232)
_OCTAVE_LINE = (212, 212, 212)
_BEAT_LINE = (200, 200, 200)
_BAR_LINE = (60, 60, 60)
_NOTE_IN_KEY = (30, 70, 160)
_NOTE_OUT_OF_KEY = (196, 48, 40)
_NOTE_ONSET_EDGE = (10, 22, 70)
_NO_CHORD_BAND = (200, 200, 200)
_TEXT = (20, 20, 20)
_BLACK_KEY = (40, 40, 40)
_WHITE_KEY = (246, 246, 246)
_C_KEY = (205, 218, 245)
_BLACK_KEY_PCS = (1, 3, 6, 8, 10)
_CHORD_SHADE_ALPHA = 0.3  # chord-tone rows under a segment
_UNWRITTEN_FADE = 0.55  # steps not composed yet fade towards white


def _chord_colour(code: int) -> tuple[int, int, int]:
    """Colour of a chord by the root's place on the circle of fifths, so related
    chords (C, G, F) get neighbouring hues."""
    if code == NO_CHORD:
        return _NO_CHORD_BAND
    fifths = (int(CHORD_ROOT[code]) * 7) % 12
    r, g, b = colorsys.hsv_to_rgb(fifths / 12, 0.55, 0.92)
    return round(r * 255), round(g * 255), round(b * 255)


def pitch_span(comp: Composition) -> tuple[int, int]:
    """The rows a cropped picture shows: the notes' span with a margin of 2 semitones,
    at least an octave, inside the grid (as the text piano roll)."""
    return _ansi_pitch_span(comp, [n.pitch for n in comp.notes()])


def rgb_layout(comp: Composition, n_steps: int | None = None, crop: bool = False) -> dict[str, int]:
    """Pixel geometry of :func:`render_rgb`: ``px_per_step``, ``px_per_pitch``,
    ``height``, ``width``, ``left`` (grid's left edge), ``low`` and ``high`` (pitch rows).
    Without ``crop`` it depends only on ``comp.grid`` and the planned length
    (``n_steps``, or ``comp.n_steps`` if None), never on the notes (the env's
    ``rgb_array`` frames keep one shape); with ``crop`` the rows are
    :func:`pitch_span` and pitch names take a strip on the left."""
    total = _planned_length(comp, n_steps)
    low, high = pitch_span(comp) if crop else (comp.grid.min_pitch, comp.grid.max_pitch)
    n_pitches = high - low + 1
    left = RGB_KEYBOARD_W + (RGB_PITCH_LABEL_W if crop else 0)
    # About 960 x 360 px of grid whatever the length and range, within readable bounds.
    px_step = int(np.clip(960 // max(total, 1), 2, 16))
    px_pitch = int(np.clip(360 // n_pitches, 2, 12))
    return {
        "px_per_step": px_step,
        "px_per_pitch": px_pitch,
        "height": RGB_HEADER_H + n_pitches * px_pitch,
        "width": left + total * px_step + 1,  # +1: closing bar line
        "left": left,
        "low": low,
        "high": high,
    }


@functools.lru_cache(maxsize=1)
def _font():
    """PIL's built-in default font (no download), or None without PIL."""
    try:
        from PIL import ImageFont
    except ImportError:
        return None
    return ImageFont.load_default()


def render_rgb(comp: Composition, n_steps: int | None = None, title: str | None = None,
               crop: bool = False) -> np.ndarray:
    """A piano-roll picture of ``comp`` as a ``uint8`` array of shape ``(H, W, 3)``.

    Rows are every pitch of the grid (highest on top, ``px_per_pitch`` px each,
    a keyboard strip on the left with C keys tinted), columns are grid steps
    (``px_per_step`` px each), so the shape (:func:`rgb_layout`) depends only on
    the grid and the planned length ``n_steps`` (default: the steps written).
    Header: ``title`` (if given), chord symbols, a band coloured per chord root.
    Under each chord its chord-tone rows are shaded in its colour; pitches
    outside the key have grey rows. Bar lines are dark, beat lines light. Notes
    are filled rectangles (blue in key, red outside it) with a dark edge at the
    onset and a one-pixel gap before it, so repeated notes stay apart. Steps not
    written yet are faded. Text needs PIL; without it the picture has none.
    With ``crop`` (what :func:`save_png` draws) only the rows of :func:`pitch_span`
    are drawn and each C and each tonic row is named (``C4``, ``F#4``) on the left, as
    the key spells it.
    """
    layout = rgb_layout(comp, n_steps, crop)
    total = _planned_length(comp, n_steps)
    px_step, px_pitch = layout["px_per_step"], layout["px_per_pitch"]
    height, width = layout["height"], layout["width"]
    g = comp.grid
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = _WHITE
    top, left = RGB_HEADER_H, layout["left"]
    low, high = layout["low"], layout["high"]
    grid_w = total * px_step

    def row_y(pitch: int) -> int:
        return top + (high - pitch) * px_pitch

    def step_x(step: int) -> int:
        return left + step * px_step

    pitches = np.arange(low, high + 1)
    in_key = KEY_SCALE_MASK[comp.key.index][pitches % 12]
    for pitch, ok in zip(pitches.tolist(), in_key.tolist(), strict=True):
        y = row_y(pitch)
        img[y:y + px_pitch, left:left + grid_w] = _ROW_IN_KEY if ok else _ROW_OUT_OF_KEY
        key_colour = _C_KEY if pitch % 12 == 0 else _BLACK_KEY if pitch % 12 in _BLACK_KEY_PCS else _WHITE_KEY
        img[y:y + px_pitch, left - RGB_KEYBOARD_W + 1:left - 2] = key_colour
        if pitch % 12 == 0 and px_pitch >= 3:
            img[y + px_pitch - 1, left:left + grid_w] = _OCTAVE_LINE  # below each C: the octave's floor

    segments = comp.chord_segments(total)
    for code, onset, dur in segments:
        colour = np.array(_chord_colour(code), dtype=np.float64)
        x0, x1 = step_x(onset), step_x(onset + dur)
        img[RGB_TITLE_H + RGB_LABEL_H:top - 1, x0:x1] = colour.astype(np.uint8)
        for pitch in pitches[CHORD_PC_MASK[code][pitches % 12]].tolist():
            y = row_y(pitch)
            cells = img[y:y + px_pitch, x0:x1].astype(np.float64)
            img[y:y + px_pitch, x0:x1] = (cells * (1 - _CHORD_SHADE_ALPHA) + colour * _CHORD_SHADE_ALPHA).astype(np.uint8)

    if comp.n_steps < total:
        x0 = step_x(comp.n_steps)
        rest = img[top:, x0:left + grid_w].astype(np.float64)
        img[top:, x0:left + grid_w] = (rest + (255 - rest) * _UNWRITTEN_FADE).astype(np.uint8)

    spb = comp.steps_per_bar
    steps_per_beat = comp.meter.steps_per_beat(g.steps_per_quarter)
    for t in range(0, total + 1, steps_per_beat):
        img[top:, step_x(t)] = _BEAT_LINE
    for t in range(0, total + 1, spb):
        img[RGB_TITLE_H + RGB_LABEL_H:, step_x(t)] = _BAR_LINE
    img[top:, step_x(total)] = _BAR_LINE  # close an unfinished last bar too

    scale = KEY_SCALE_MASK[comp.key.index]
    pad = 1 if px_pitch >= 4 else 0  # keep neighbouring rows' notes apart
    for n in comp.notes():
        y, x0, x1 = row_y(n.pitch), step_x(n.onset), step_x(n.onset + n.duration)
        # Column x0 stays unpainted: the gap that separates a note from the one before.
        img[y + pad:y + px_pitch - pad, x0 + 1:x1] = _NOTE_IN_KEY if scale[n.pitch % 12] else _NOTE_OUT_OF_KEY
        if px_step >= 3:
            img[y + pad:y + px_pitch - pad, x0 + 1] = _NOTE_ONSET_EDGE

    font = _font()
    if font is None:
        return img
    from PIL import Image, ImageDraw

    pic = Image.fromarray(img)
    draw = ImageDraw.Draw(pic)
    if title:
        draw.text((left, 1), title, fill=_TEXT, font=font)
    if crop:  # name the C rows and the tonic rows, spelled for the key
        for pitch in pitches.tolist():
            if pitch % 12 == 0 or pitch % 12 == comp.key.tonic:
                y = row_y(pitch) + px_pitch // 2 - 5
                draw.text((1, y), _note_name(pitch, comp.key), fill=_TEXT, font=font)
    label_end = -1
    prev_code = NO_CHORD
    for code, onset, _ in segments:
        x = step_x(onset) + 2
        text = spelled_chord_name(code, comp.key)
        if (code != NO_CHORD or prev_code != NO_CHORD) and x > label_end and x < width:
            draw.text((x, RGB_TITLE_H + 1), text, fill=_TEXT, font=font)
            label_end = x + int(draw.textlength(text, font=font)) + 2
        prev_code = code
    return np.array(pic, dtype=np.uint8)


def save_png(comp: Composition, path: str | os.PathLike, n_steps: int | None = None,
             title: str | None = None) -> pathlib.Path:
    """Write :func:`render_rgb` of ``comp`` (``crop=True``) as a PNG and return its path.

    The picture is cropped to the pitches used (:func:`pitch_span`), with the C and
    tonic rows named. ``title`` defaults to ``comp.title``; pass ``""`` for none. Written
    atomically; see :func:`write_atomically` for the errors raised on a bad path.
    """
    from PIL import Image

    rgb = render_rgb(comp, n_steps, title=comp.title if title is None else title, crop=True)
    return write_atomically(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"), what="PNG image")
