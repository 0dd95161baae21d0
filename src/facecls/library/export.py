"""``facecls export-folders``: the named faces as the classic one-folder-per-person layout.

``OUT/<person>/<photo>-<face>.jpg``: each face cut LFW-style from the original photo (a square
:data:`facecls.data.faces.LFW_ENLARGE` times the face's box, centred on it, at ``size`` pixels),
so other tools — and ``facecls train --data OUT`` with the default centre crop — see faces framed
as in LFW. ``OUT/people.csv`` maps each folder to the person's name as typed (folder names are
made safe for every file system), ``OUT/faces.csv`` each file to its face and photo.

The folder is written whole beside ``OUT`` and renamed into place: a run that stops leaves the
previous export (or nothing). ``OUT`` is replaced only when it is empty or an earlier export.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from facecls.atomic import csv_text, write_text
from facecls.data.images import ImageError, load_rgb
from facecls.inference.detect import Box, crop_face

MARKER = ".facecls-export"
DEFAULT_SIZE = 250  # LFW's photos
# Longest folder name in UTF-8 bytes (file systems allow 255; room for " (n)").
_MAX_BYTES = 120
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
             *(f"lpt{i}" for i in range(1, 10))}  # fmt: skip


@dataclass(frozen=True)
class ExportFace:
    """A named face to export: its id, person's name, photo file and box (photo pixels)."""

    face_id: int
    name: str
    photo: Path
    box: tuple[float, float, float, float]


def safe_folder(name: str) -> str:
    """``name`` as a folder name every common file system takes (not yet unique)."""
    text = unicodedata.normalize("NFC", name)
    text = "".join("_" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    text = _UNSAFE.sub("_", text).strip(" .")
    if text.split(".")[0].lower() in _RESERVED:
        text = f"{text}_"
    encoded = text.encode("utf-8")[:_MAX_BYTES]
    text = encoded.decode("utf-8", "ignore").rstrip(" .")
    return text or "_"


def folder_names(names: Iterable[str]) -> dict[str, str]:
    """Each distinct name's folder: safe, and unique even on case-insensitive file systems
    (``Ada`` and ``ada`` become ``Ada`` and ``ada (2)``, in sorted order of the names)."""
    taken: set[str] = set()
    folders: dict[str, str] = {}
    for name in sorted(set(names)):
        base = safe_folder(name)
        folder, n = base, 1
        while folder.casefold() in taken:
            n += 1
            folder = f"{base} ({n})"
        taken.add(folder.casefold())
        folders[name] = folder
    return folders


def _replaceable(out: Path) -> bool:
    return not out.exists() or (
        out.is_dir() and (not any(out.iterdir()) or (out / MARKER).exists())
    )


def export_folders(
    faces: Sequence[ExportFace],
    out: Path,
    size: int = DEFAULT_SIZE,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Write ``faces`` as ``out/<person>/<photo>-<face>.jpg``; answers counts of ``people``,
    ``faces`` written and ``skipped`` (photos that could not be read, listed in the log).

    Raises:
        ValueError: ``out`` holds something that is not an earlier export.
    """
    out = Path(out)
    if not _replaceable(out):
        raise ValueError(f"{out}: not empty and not an earlier facecls export; choose a new folder")
    folders = folder_names(f.name for f in faces)
    work = out.with_name(f".{out.name}.partial{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    by_photo: dict[Path, list[ExportFace]] = defaultdict(list)
    for face in faces:
        by_photo[face.photo].append(face)
    rows, skipped = [], 0
    try:
        for photo in sorted(by_photo):
            try:
                pixels = load_rgb(photo)
            except (ImageError, OSError) as error:
                log(f"  skipped {photo}: {error}")
                skipped += len(by_photo[photo])
                continue
            for face in by_photo[photo]:
                folder = work / folders[face.name]
                folder.mkdir(exist_ok=True)
                file = f"{photo.stem}-{face.face_id}.jpg"
                cut = crop_face(pixels, Box.from_corners(face.box), size)
                Image.fromarray(cut).save(folder / file, quality=95)
                rows.append([f"{folders[face.name]}/{file}", face.face_id, face.name, str(photo),
                             " ".join(f"{v:.1f}" for v in face.box)])  # fmt: skip
        counts = defaultdict(int)
        for row in rows:
            counts[row[2]] += 1
        write_text(work / "people.csv", csv_text(
            ["folder", "name", "faces"], [[folders[n], n, counts[n]] for n in sorted(counts)]
        ))  # fmt: skip
        write_text(work / "faces.csv", csv_text(["file", "face_id", "name", "photo", "box"], rows))
        write_text(work / MARKER, "written by facecls export-folders\n")
        _swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"people": len(counts), "faces": len(rows), "skipped": skipped}


def _swap_in(work: Path, out: Path) -> None:
    """Put the finished ``work`` folder at ``out``, removing an earlier export after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
