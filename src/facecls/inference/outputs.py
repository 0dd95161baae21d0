"""What facecls writes never replaces what the user gave.

An output path (``--out``, ``--annotate``) is checked before any work: it is refused in one line
when it is one of the inputs, or an existing file that is not a previous output of the same kind.
A previous output is recognised by its content (a CSV's header, a safetensors file's ``format``,
an annotated photo's JPEG comment) or, for an annotated video whose container carries no such
mark, by the record facecls keeps of the videos it wrote (``$FACECLS_CACHE/outputs/``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from safetensors import SafetensorError
from safetensors import numpy as safetensors_numpy

from facecls.atomic import file_in_the_way, write_json
from facecls.data.sources import default_cache_dir

Recognise = Callable[[Path], bool]


class OutputError(ValueError):
    """An output path would replace an input or a file facecls did not write."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (symbolic and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def csv_header(prefix: Sequence[str]) -> Recognise:
    """Recognises a CSV whose first row starts with ``prefix``."""

    def recognise(path: Path) -> bool:
        try:
            with path.open(newline="", encoding="utf-8") as f:
                first = next(csv.reader([f.readline(65536)]), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return False
        return first[: len(prefix)] == list(prefix)

    return recognise


def safetensors_format(name: str) -> Recognise:
    """Recognises a safetensors file whose metadata ``format`` is ``name``."""

    def recognise(path: Path) -> bool:
        try:
            with safetensors_numpy.safe_open(str(path), framework="np") as f:
                return (f.metadata() or {}).get("format") == name
        except (OSError, SafetensorError, ValueError):
            return False

    return recognise


def _record_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return default_cache_dir() / "outputs" / f"{key[:24]}.json"


def record_output(path: str | Path, kind: str) -> None:
    """Remember that facecls wrote ``path`` (a file whose format has no room for a mark)."""
    path = Path(path)
    stat = path.stat()
    entry = {"path": str(path.resolve()), "kind": kind, "size": stat.st_size,
             "mtime_ns": stat.st_mtime_ns}  # fmt: skip
    write_json(_record_path(path), entry)


def recorded_output(kind: str) -> Recognise:
    """Recognises a file :func:`record_output` recorded as ``kind`` and that is unchanged since."""

    def recognise(path: Path) -> bool:
        try:
            entry = json.loads(_record_path(path).read_text(encoding="utf-8"))
            stat = path.stat()
        except (OSError, ValueError):
            return False
        return entry.get("kind") == kind and (entry.get("size"), entry.get("mtime_ns")) == (
            stat.st_size, stat.st_mtime_ns,
        )  # fmt: skip

    return recognise


def check_output(
    path: str | Path,
    option: str,
    what: str,
    recognise: Recognise,
    inputs: Iterable[str | Path] = (),
) -> Path:
    """``path`` when writing it loses nothing the user gave.

    Args:
        option: the option that named it (``--out``), for the message.
        what: the kind of file written there (``predictions CSV``).
        recognise: whether an existing file is a previous output of that kind.
        inputs: the paths the command reads (files and folders as given).

    Raises:
        OutputError: ``path`` is a folder, one of ``inputs``, or an existing file that is not a
            previous output of this kind.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; {option} names the {what} file to write")
    blocking = file_in_the_way(path.parent)
    if blocking is not None:
        raise OutputError(f"{option} {path}: {blocking} is a file, not a folder; choose a path")
    if not path.exists():
        return path
    for item in inputs:
        if same_file(item, path):
            raise OutputError(
                f"{option} {path}: that is one of the inputs; choose another name (facecls "
                "never writes over a file you gave it)"
            )
    if not recognise(path):
        raise OutputError(
            f"{option} {path}: exists and is not a facecls {what}; choose another name or move "
            "that file away (facecls never writes over a file you gave it)"
        )
    return path


def check_distinct(named: dict[str, str | Path | None]) -> None:
    """Refuse two options that name the same output file (``{"--out": path, ...}``)."""
    seen: dict[str, str] = {}
    for option, path in named.items():
        if path is None:
            continue
        key = os.path.abspath(path)
        if key in seen:
            raise OutputError(
                f"{option} {path}: {seen[key]} names the same file; give each its own"
            )
        seen[key] = option
