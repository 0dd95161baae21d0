"""Progress of long steps: a tqdm bar (rate, ETA) on a terminal, a line every ~10 % elsewhere.

``show_progress`` in the library means "the user wants to see where a step is". On a terminal
that is tqdm's bar on stderr; when stderr is not a terminal (a log file, CI, a pipe) a bar
would fill it with carriage returns, so a :class:`_Lines` ticker logs one INFO line of the
``facecls`` logger per tenth done instead (and so also reaches run.log). Bars that repeat many
times (each epoch, whose end is logged anyway) pass ``lines=False`` and stay silent there.
A step whose length is not known (``total=0``: a webcam) counts on a terminal and logs a line
every :data:`UNKNOWN_EVERY_S` seconds elsewhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from facecls.logs import logger

UNKNOWN_EVERY_S = 30.0  # off a terminal, a step of unknown length says where it is this often


def _terminal() -> bool:
    return sys.stderr.isatty()


class _Lines:
    """The part of tqdm's interface facecls uses, reporting a line at each tenth done."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.n, self._tenth, self._start = 0, 0, time.perf_counter()
        self._due: float | None = None  # unknown length: when the next line is due (seconds)

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.total:
            self._unknown_length()
            return
        tenth = min(10, self.n * 10 // self.total)
        if tenth > self._tenth:
            self._tenth = tenth
            elapsed = time.perf_counter() - self._start
            rate = self.n / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            logger().info(
                f"{self.desc}: {tenth * 10}% ({self.n}/{self.total} {self.unit}, "
                f"{rate:.1f} {self.unit}/s, {_clock(elapsed)} elapsed, ETA {_clock(eta)})"
            )

    def _unknown_length(self) -> None:
        elapsed = time.perf_counter() - self._start
        if elapsed >= (UNKNOWN_EVERY_S if self._due is None else self._due):
            self._due = elapsed + UNKNOWN_EVERY_S
            rate = self.n / elapsed if elapsed > 0 else 0.0
            logger().info(
                f"{self.desc}: {self.n} {self.unit} ({rate:.1f} {self.unit}/s, "
                f"{_clock(elapsed)} elapsed)"
            )

    def set_postfix_str(self, _text: str) -> None:
        """Kept for tqdm compatibility; the lines carry no postfix."""

    def close(self) -> None:
        """Nothing to clear (lines are final)."""

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Off(_Lines):
    def update(self, n: int = 1) -> None:
        self.n += n


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def bar(
    total: int, desc: str, enabled: bool, unit: str = "img", lines: bool = True,
    leave: bool = False, terminal: bool | None = None,
) -> Any:  # fmt: skip
    """A progress counter to ``update(n)`` and ``close()``.

    Args:
        total: the count when done; 0 when not known (a webcam).
        enabled: ``False`` (``--quiet``, other ranks): nothing is shown.
        lines: off a terminal, log a line every ~10 % (``False``: stay silent there).
        terminal: whether stderr is a terminal (default: ask it); tests pass it.
    """
    terminal = _terminal() if terminal is None else terminal
    if enabled and terminal:
        return tqdm(total=total or None, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    if enabled and lines:
        return _Lines(total, desc, unit)
    return _Off(total, desc, unit)


def track(
    items: Iterable[Any], total: int, desc: str, enabled: bool, unit: str = "img",
    lines: bool = True,
) -> Iterator[Any]:  # fmt: skip
    """Iterate ``items`` with a :func:`bar` advanced by one per item."""
    counter = bar(total, desc, enabled, unit, lines)
    try:
        for item in items:
            yield item
            counter.update(1)
    finally:
        counter.close()
