"""Data sources: turn what the user passed as ``--data`` into a list of image files with identities.

A source is a class-per-folder tree (``root/<identity>/<image>``), the same tree already split
(``root/train/<identity>/…``, ``root/test/…``, optional ``root/val/…``), an archive of either, or
``lfw`` (LFW deep-funneled, downloaded once into the cache or read from a local archive). Sources
are only ever read: nothing is written next to the user's files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecls.data.archive import ArchiveError, extract_archive, is_archive
from facecls.data.images import IMAGE_EXTENSIONS, file_problem, is_junk, printable

SPLIT_NAMES = ("train", "val", "test")

# LFW deep-funneled. The official archive (torchvision's LFWPeople lists the same md5) and the
# packing shipped to this project's machines are both accepted.
LFW_URL = "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz"
LFW_ARCHIVE_NAME = "lfw-deepfunneled.tgz"
LFW_MD5 = {"68331da3eb755a505a502b5aacb3c201"}
LFW_SHA256 = {"9bee1f913cb653549d8316be46c4b10c67e63f1a328cf7277c6d39a1ea221b00"}


class DataError(ValueError):
    """The data cannot be used as given; the message names the file or class and what to do."""


@dataclass(frozen=True)
class ImageRef:
    """One image file of a source.

    Attributes:
        path: absolute path to read.
        relpath: ``identity/file`` relative to the identity root (what reports and split files use).
        identity: the identity (folder) name.
        split: ``train``/``val``/``test`` for a pre-split source, else ``None``.
        face: a face found earlier in the photo (a face library's): ``x1, y1, x2, y2`` and,
            when known, the ten landmark coordinates; ``None``: find the photo's main face.
    """

    path: Path
    relpath: str
    identity: str
    split: str | None = None
    face: tuple[float, ...] | None = None

    def known_face(self) -> tuple[tuple[float, ...], np.ndarray | None]:
        """``face`` as its box ``(x1, y1, x2, y2)`` and ``(5, 2)`` landmarks (``None`` when
        not stored)."""
        if self.face is None:
            raise ValueError(f"{self.relpath}: no face was given for this image")
        points = (
            np.asarray(self.face[4:14], np.float32).reshape(5, 2) if len(self.face) >= 14 else None
        )
        return self.face[:4], points


@dataclass
class Scan:
    """The files of a source, before decoding."""

    kind: str
    location: str
    root: Path
    refs: list[ImageRef] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def log_skipped(skipped: list[dict[str, str]], log: Callable[[str], None], limit: int = 20) -> None:
    """List the files that could not be used, with why (the first ``limit`` of them)."""
    if not skipped:
        return
    log(f"Skipped {len(skipped)} file(s) that could not be used:")
    for item in skipped[:limit]:
        log(f"  {item['path']}: {item['reason']}")
    if len(skipped) > limit:
        log(f"  … and {len(skipped) - limit} more (all listed in data_report.json)")


def default_cache_dir() -> Path:
    """``$FACECLS_CACHE`` if set, else ``~/.cache/facecls`` (decoded images, extracted archives)."""
    env = os.environ.get("FACECLS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "facecls"


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not is_junk(p))


def _scan_identities(identity_root: Path, split: str | None, scan: Scan) -> None:
    """Add every image under ``identity_root/<identity>/`` (recursively) to ``scan``."""
    prefix = f"{split}/" if split else ""
    for child in _visible_children(identity_root):
        if printable(child.name) != child.name and child.is_dir():
            reason = "folder name is not valid UTF-8, so its files are skipped (rename it)"
            scan.skipped.append({"path": prefix + printable(child.name) + "/", "reason": reason})
            continue
        if child.is_file():
            scan.skipped.append(
                {
                    "path": prefix + printable(child.name),
                    "reason": "not inside an identity folder; ignored",
                }
            )
            continue
        if not child.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(child):
            # Prune junk folders such as .ipynb_checkpoints in place so os.walk skips them.
            dirnames[:] = sorted(d for d in dirnames if not is_junk(Path(d)))
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if is_junk(file):
                    continue
                rel = printable(file.relative_to(identity_root).as_posix())
                problem = file_problem(file)  # one bad file is listed, never fatal
                if problem is not None:
                    scan.skipped.append({"path": prefix + rel, "reason": problem})
                    continue
                if file.suffix.lower() not in IMAGE_EXTENSIONS:
                    reason = f"unsupported file type: {file.suffix or '(no extension)'}"
                    scan.skipped.append({"path": prefix + rel, "reason": reason})
                    continue
                scan.refs.append(ImageRef(file, prefix + rel, child.name, split))


def scan_folder(root: Path, kind: str = "folder", location: str | None = None) -> Scan:
    """List the images of a class-per-folder or pre-split tree.

    A tree whose visible top-level folders are all among ``train``/``val``/``test`` (with at
    least ``train`` and ``test``) is pre-split; otherwise each top-level folder is an identity.

    Raises:
        DataError: when the folder does not exist or is not a folder.
    """
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder or a supported archive ({', '.join(_SUFFIXES)})")
    scan = Scan(kind, location or str(root), root)
    dirs = {p.name for p in _visible_children(root) if p.is_dir()}
    if dirs and dirs <= set(SPLIT_NAMES) and {"train", "test"} <= dirs:
        for split in SPLIT_NAMES:
            if split in dirs:
                _scan_identities(root / split, split, scan)
    else:
        _scan_identities(root, None, scan)
    return scan


_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".zip")


def _archive_root(extracted: Path) -> Path:
    """Descend through a single wrapping folder (``lfw-deepfunneled/…``) inside an archive."""
    root = extracted
    while True:
        children = _visible_children(root)
        if len(children) == 1 and children[0].is_dir() and children[0].name not in SPLIT_NAMES:
            grandchildren = _visible_children(children[0])
            # Stop if the only child is itself an identity folder full of images.
            if grandchildren and all(p.is_dir() for p in grandchildren):
                root = children[0]
                continue
        return root


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, streamed in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lfw_archive(cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Path of the LFW deep-funneled archive in the cache, downloading it once if missing.

    The download is verified against known checksums before it is kept.

    Raises:
        DataError: offline or on a checksum mismatch, saying where to put a local copy.
    """
    target = cache_dir / LFW_ARCHIVE_NAME
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    log(f"Downloading LFW deep-funneled (about 110 MB) from {LFW_URL} into {cache_dir} ...")
    try:
        with urllib.request.urlopen(LFW_URL, timeout=30) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"LFW is not in the cache ({target}) and could not be downloaded ({error}). "
            f"Offline, pass a local copy with --data path/to/{LFW_ARCHIVE_NAME}, or copy it to "
            f"{target}."
        ) from error
    if file_digest(partial, "md5") not in LFW_MD5 and file_digest(partial) not in LFW_SHA256:
        partial.unlink(missing_ok=True)
        raise DataError(f"the LFW download from {LFW_URL} failed its checksum; nothing was kept")
    os.replace(partial, target)
    return target


def scan_source(source: str, cache_dir: Path, log: Callable[[str], None] = print) -> Scan:
    """Resolve ``--data`` (folder, archive or ``lfw``) into a :class:`Scan` (a face library:
    :func:`facecls.data.library_source.scan_data`).

    Raises:
        DataError: when the source is missing, unreadable or unsafe.
    """
    if source == "lfw":
        archive = lfw_archive(cache_dir, log)
        kind, location = "lfw", str(archive)
    else:
        archive = Path(source).expanduser()
        kind, location = "archive", source
    if archive.is_file() and is_archive(archive):
        try:
            extracted = extract_archive(archive, cache_dir)
        except ArchiveError as error:
            raise DataError(str(error)) from error
        return scan_folder(_archive_root(extracted), kind, location)
    return scan_folder(archive, "folder", source)
