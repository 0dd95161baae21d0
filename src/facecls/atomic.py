"""Atomic file writes: write a temporary sibling, flush, fsync, rename.

A crash at any point leaves either the previous file or the new one, never a torn file; a full
disk raises an error that names the directory and leaves the previous file intact.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class WriteError(OSError):
    """A result file could not be written; the message names the directory and the cause."""


@contextmanager
def atomic_path(path: Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto ``path``.

    ``size`` (bytes, when known) lets a full disk be reported with the free space needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            needed = f"; about {size / 2**20:,.1f} MiB of free space is needed" if size else ""
            raise WriteError(
                errno.ENOSPC,
                f"no space left on the disk of {path.parent} while writing "
                f"{path.name}{needed}; the previous file (if any) is unchanged",
            ) from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (NaN is refused: metrics must be finite)."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_csv_stream(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a CSV atomically, row by row as ``rows`` yields them (memory stays flat).

    Returns:
        The number of data rows written.
    """
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
