"""Atomic file writes: write a temporary sibling, flush, fsync, rename.

A crash at any point leaves either the previous file or the new one, never a torn file; a full
disk raises an error that names the directory and leaves the previous file intact. Every CSV
cell that a spreadsheet would run as a formula is quoted on the way out (:func:`safe_cell`).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class WriteError(OSError):
    """A result file could not be written; the message names the directory and the cause."""

    def __str__(self) -> str:  # the sentence alone, without OSError's "[Errno 28]"
        return str(self.strerror)


# How a full disk reaches Python, measured on a full tmpfs: OSError ENOSPC (or EDQUOT, a full
# quota) from Python's own writes; safetensors' SafetensorError "… No space left on device (os
# error 28)"; numpy's ``np.save`` OSError "1000000 requested and 131056 written" without errno.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = re.compile(r"No space left on device|os error 28|Disk quota exceeded|os error 122")
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full, however it is worded."""
    if getattr(error, "errno", None) in _FULL_ERRNOS:
        return True
    text = str(error)
    return bool(_FULL_TEXT.search(text) or _SHORT_WRITE.search(text))


def _free_mib(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:,.1f} MiB"
    except OSError:
        return "unknown"


@contextmanager
def atomic_path(path: Path, size: int | None = None, hint: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto ``path``.

    Args:
        size: bytes, when known, so a full disk is reported with the free space needed.
        hint: what to do after freeing space (e.g. the ``--resume`` command), appended to the
            full-disk message.

    Raises:
        WriteError: the disk is full (whatever library wrote: numpy, safetensors, Pillow); the
            message names the folder, the file, the space needed and free, and the hint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except WriteError:  # from a nested write (an annotated photo inside a CSV): already named
        tmp.unlink(missing_ok=True)
        raise
    except Exception as error:
        if not disk_full(error):
            tmp.unlink(missing_ok=True)
            raise
        free = _free_mib(path.parent)  # before the partial file is removed: what the write saw
        tmp.unlink(missing_ok=True)
        needed = f"; about {size / 2**20:,.1f} MiB of free space is needed" if size else ""
        raise WriteError(
            errno.ENOSPC,
            f"no space left on the disk of {path.parent} while writing {path.name}{needed} "
            f"({free} free); the previous file (if any) is unchanged"
            + (f". Free some space, then {hint}" if hint else ""),
        ) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file (not folder) at ``folder`` or at one of its parents, which would stop a folder
    from being made there; ``None`` when there is none."""
    path = Path(folder)
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path, len(text.encode("utf-8"))) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (NaN is refused: metrics must be finite)."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


# A cell a spreadsheet reads as a formula starts with one of these (OWASP "CSV Injection"); a
# leading quote is escaped too, so that unquoting (``read_cell``) gives back the exact text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet runs: text starting with ``= + - @``, a tab or
    carriage return gets a leading ``'`` (OWASP's advice); numbers, also as text, stay as
    they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def read_cell(text: str) -> str:
    """The text :func:`safe_cell` was given (reading a CSV facecls wrote)."""
    return text[1:] if text.startswith("'") else text


def write_csv_stream(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a CSV atomically, row by row as ``rows`` yields them (memory stays flat).

    Returns:
        The number of data rows written.
    """
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([safe_cell(h) for h in header])
        for row in rows:
            writer.writerow([safe_cell(cell) for cell in row])
            count += 1
    return count


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A whole CSV as text, every cell through :func:`safe_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([safe_cell(h) for h in header])
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()
