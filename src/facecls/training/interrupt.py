"""Ctrl-C and SIGTERM during training: stop between steps, keep what is done, exit 130 / 143.

:func:`stop_signals` installs handlers (main thread only, restored afterwards) that only set a
flag; the training loop checks it after every step and at the end of every epoch. A stop in the
middle of an epoch keeps the checkpoint of the last completed epoch, and resuming replays the
partial epoch from its start, which gives exactly the result of an uninterrupted run because an
epoch depends only on the seed and the state at its start. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Test hook (tests/test_resume.py): "fold:epoch:step:SIGNAL", e.g. "2:2:1:KILL", makes the
# process send itself SIGNAL right after that step, so a kill lands at an exact place.
TEST_SIGNAL_ENV = "FACECLS_TEST_SIGNAL"


class Interrupted(Exception):
    """Training stopped on a signal; the last completed epoch is saved.

    Attributes:
        signum: the signal received (``signal.SIGINT`` or ``signal.SIGTERM``).
        exit_code: what a command line should exit with (128 + signal number: 130 / 143).
        run_dir: the run folder to resume, once known.
    """

    def __init__(self, signum: int, fold: int, epoch: int, step: int | None) -> None:
        self.signum, self.fold, self.epoch, self.step = signum, fold, epoch, step
        self.run_dir: Path | None = None
        self.command = "train"
        where = f"fold {fold}, epoch {epoch}" + (f", step {step}" if step else " (at its end)")
        super().__init__(f"{signal.Signals(signum).name} received during {where}")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def describe(self) -> dict[str, object]:
        """The ``checkpoints/interrupted.json`` marker."""
        kept = self.epoch if self.step is None else self.epoch - 1
        return {
            "signal": signal.Signals(self.signum).name,
            "fold": self.fold,
            "epoch": self.epoch,
            "step": self.step,
            "last_saved_epoch": kept,
            "resume": f"facecls {self.command} --resume {self.run_dir}",
        }


@dataclass
class StopRequest:
    """Set by a signal handler; read by the training loop between steps."""

    signum: int | None = None

    def check(self, fold: int, epoch: int, step: int | None) -> None:
        """Raise :class:`Interrupted` if a stop was asked for."""
        if self.signum is not None:
            raise Interrupted(self.signum, fold, epoch, step)


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """Turn SIGINT and SIGTERM into a :class:`StopRequest` for the duration of the block.

    Outside the main thread (where Python cannot install handlers) nothing is installed and the
    request is never set.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, _frame: object) -> None:
        if request.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def signal_hook_for_tests(fold: int, epoch: int) -> Callable[[int], None] | None:
    """The :data:`TEST_SIGNAL_ENV` hook for this fold and epoch: call it with each step number."""
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if not spec:
        return None
    at_fold, at_epoch, at_step, name = spec.split(":")
    if (int(at_fold), int(at_epoch)) != (fold, epoch):
        return None
    signum = signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]

    def hook(step: int) -> None:
        if step == int(at_step):
            os.kill(os.getpid(), signum)

    return hook
