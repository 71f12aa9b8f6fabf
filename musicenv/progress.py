"""Progress for people and for pipes.

On a terminal a tqdm bar is the right thing; in a log file or a pipe (``musicenv train
... | tee log``, a batch job) a bar's carriage returns make one unreadable line.
:func:`progress_bar` gives a tqdm bar when stdout is a terminal and a
:class:`ProgressPrinter` otherwise, which prints a plain line at least every 10 s or
every 5 % of the work (and at the end). Torch-free.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

__all__ = ["ProgressPrinter", "progress_bar", "is_terminal"]


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: stdout) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressPrinter:
    """Progress as plain lines: ``label: done/total unit (pct%), extra, elapsed``.

    :meth:`update` (absolute) and :meth:`advance` (relative) print a line when at least
    ``every_s`` seconds or ``every_frac`` of the total have passed since the last one,
    and always when the total is reached; :meth:`note` prints a line of its own. It
    also offers tqdm's ``update(n)``/``set_postfix``/``close`` through :meth:`advance`
    aliases, so it can stand in for a bar.
    """

    def __init__(self, label: str, total: int, *, unit: str = "", stream: Any = None, every_s: float = 10.0,
                 every_frac: float = 0.05) -> None:
        self.label, self.total, self.unit = label, max(1, int(total)), f" {unit}" if unit else ""
        self.stream = stream if stream is not None else sys.stdout
        self.every_s, self.step = float(every_s), max(1, int(math.ceil(self.total * every_frac)))
        self.done, self._t0 = 0, time.monotonic()
        self._last_t, self._last_done = self._t0, 0
        self._postfix = ""

    def due(self, done: int) -> bool:
        """Whether :meth:`update` with ``done`` would print (cheap: for hot loops)."""
        return (done >= self.total or done - self._last_done >= self.step
                or time.monotonic() - self._last_t >= self.every_s)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update_to(self, done: int) -> None:
        self.update(done)

    def update(self, done: int) -> None:
        self.done = int(done)
        if self.due(self.done) and (self.done != self._last_done or self.done == 0):
            self._last_t, self._last_done = time.monotonic(), self.done
            pct = 100.0 * min(self.done, self.total) / self.total
            self.note(f"{self.done}/{self.total}{self.unit} ({pct:.0f}%){self._postfix}")

    def set_postfix(self, **values: Any) -> None:
        self._postfix = "".join(f", {k}={v}" for k, v in values.items())

    def note(self, text: str) -> None:
        print(f"{self.label}: {text}, {time.monotonic() - self._t0:.0f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.done != self._last_done:
            self._last_t = -math.inf
            self.update(self.done)


class _LineBar(ProgressPrinter):
    """A :class:`ProgressPrinter` with tqdm's relative ``update(n)``."""

    def update(self, n: int = 1) -> None:  # type: ignore[override]
        super().update(self.done + n)

    def advance(self, n: int = 1) -> None:
        self.update(n)


def progress_bar(total: int, desc: str, unit: str = "it", disable: bool = False, **tqdm_kwargs: Any) -> Any:
    """A tqdm bar on a terminal, plain progress lines otherwise (``update(n)``,
    ``set_postfix(**kw)``, ``close()`` work on both); ``disable`` turns both off."""
    from tqdm.auto import tqdm

    if disable or is_terminal():
        return tqdm(total=total, desc=desc, unit=unit, disable=disable, **tqdm_kwargs)
    return _LineBar(desc, total, unit=unit)
