"""Messages through the standard ``logging`` module: the ``facecls`` logger, its console, run.log.

The library keeps taking a plain ``log: Callable[[str], None]`` (``print`` works in a
notebook); the command line builds that callable with :func:`log_to` so every message is an
INFO record of the ``facecls`` logger. A run folder gains ``run.log`` through
:class:`RunLog`: a file handler with timestamps that receives everything the console shows plus
DEBUG detail (the resolved config, the environment) for as long as the run lasts.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

NAME = "facecls"
Log = Callable[[str], None]
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def logger() -> logging.Logger:
    """The package's logger (``logging.getLogger("facecls")``)."""
    return logging.getLogger(NAME)


class _Console(logging.StreamHandler):
    """Writes bare messages to the *current* ``sys.stdout`` (as ``print`` did), so output that
    pytest or a notebook redirects after set-up still lands where the caller looks."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - a text stream
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001 - StreamHandler.__init__ assigns it
        pass

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """A reader that went away (``facecls predict … | head -1``) is no error: the rest of
        the console output goes nowhere and the command finishes its work (its files)."""
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            silence_stdout()
            return
        super().handleError(record)


def silence_stdout() -> None:
    """Point standard output at the null device once its reader has gone (a closed pipe), so
    neither later messages nor the flush at exit raise ``BrokenPipeError``."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError):  # no real descriptor (a notebook, a test's capture)
        pass
    finally:
        os.close(null)


def configure_console(quiet: bool = False, verbose: bool = False) -> logging.Logger:
    """Show the ``facecls`` logger on the console: INFO by default, WARNING with ``quiet``,
    DEBUG with ``verbose``. Calling it again replaces the console handler (never two)."""
    log = logger()
    for handler in [h for h in log.handlers if isinstance(h, _Console)]:
        log.removeHandler(handler)
    console = _Console()
    console.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    log.addHandler(console)
    log.setLevel(logging.DEBUG)  # the handlers choose what they show
    log.propagate = False  # the console handler is the one place messages are shown
    return log


class LoggerLog:
    """A ``log`` callable that writes each message as a record of the ``facecls`` logger."""

    def __init__(self, level: int = logging.INFO) -> None:
        self.level = level

    def __call__(self, message: str) -> None:
        logger().log(self.level, message)


def log_to(level: int = logging.INFO) -> Log:
    """The ``log`` callable the command line hands to the library (INFO records)."""
    return LoggerLog(level)


class RunLog:
    """Every message of a run, kept for ``run_dir/run.log`` (use as a context manager).

    Messages before the run folder exists (decoding, the data checks) are held in memory and
    written first when :meth:`open` names the folder; from then on a file handler with
    timestamps receives every record of the ``facecls`` logger, DEBUG included, until the block
    ends (an error that ends it is written too).

    Args:
        log: the caller's callable. A :class:`LoggerLog` reaches the file through the logger;
            any other (``print``) is wrapped so its messages are kept as well.
    """

    def __init__(self, log: Log) -> None:
        self._given = log
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None
        self._level = logging.NOTSET
        self._hold = _Holder(self._held)

    def __enter__(self) -> RunLog:
        package = logger()
        self._level = package.level
        package.setLevel(logging.DEBUG)  # records below the logger's level reach no handler
        package.addHandler(self._hold)
        return self

    def log(self, message: str) -> None:
        """The callable to log with during the run."""
        self._given(message)
        if not isinstance(self._given, LoggerLog):  # otherwise the logger delivered it
            record = logger().makeRecord(NAME, logging.INFO, "", 0, message, None, None)
            (self._file or self._hold).handle(record)

    def open(self, run_dir: Path) -> None:
        """Start ``run_dir/run.log`` (appended to when a run resumes) with the held messages."""
        handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        handler.setLevel(logging.DEBUG)
        for record in self._held:
            handler.handle(record)
        self.discard()
        logger().addHandler(handler)
        self._file = handler

    def discard(self) -> None:
        """Keep nothing (ranks other than 0 write no run files)."""
        logger().removeHandler(self._hold)
        self._held.clear()

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> None:
        package = logger()
        if self._file is not None:
            if error is not None:
                package.removeHandler(self._file)  # the caller reports it to the console
                self._file.handle(
                    package.makeRecord(
                        NAME, logging.ERROR, "", 0, f"stopped: {error!r}", None, None
                    )
                )
            package.removeHandler(self._file)
            self._file.close()
        self.discard()
        package.setLevel(self._level)


class _Holder(logging.Handler):
    """Keeps records in a list until the run folder exists."""

    def __init__(self, held: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.held = held

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record)


def debug(message: str) -> None:
    """Detail for run.log (and the console under ``--verbose``)."""
    logger().debug(message)
