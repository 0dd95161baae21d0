"""``facecls index PHOTOS… --library LIB``: every face of a photo collection, embedded once.

The inputs (folders walked recursively, photo files, tar/zip archives, also inside folders) are
scanned; a file the library knows with the same size and mtime is not opened again. The others
are read by the shared reader (:mod:`facecls.data.photo_faces`): hashed, and when the library
already holds that content (a copy, a moved or touched photo) only the path is added; otherwise
their faces are detected, cut and embedded. Every ``commit_every`` photos (or few seconds) one
transaction stores them, so a killed index keeps all but the last few photos and the next run
picks up the rest. Files the library knew under the inputs that are gone lose their paths, and
a photo left with none its faces. Unreadable files are listed and recorded, never fatal.

Under ``torchrun`` each rank takes the files whose name hashes to it (``shard``) and writes to
the one library (PostgreSQL across machines, or SQLite on one); rank 0 drops deleted files.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facecls.data.archive import ArchiveError, extract_archive, is_archive
from facecls.data.images import IMAGE_EXTENSIONS, is_junk, printable
from facecls.data.photo_faces import FaceReader, ReadPhoto
from facecls.data.sources import DataError, default_cache_dir
from facecls.library.embedder import (
    Embedder,
    backbone_embedder,
    check_choice,
    library_backbone,
    model_embedder,
)
from facecls.library.reembed import reembed_library
from facecls.library.store import FileStamp, Library, NewFace, NewPhoto, open_library
from facecls.progress import bar

COMMIT_EVERY = 32  # photos per transaction: a kill loses at most these
COMMIT_SECONDS = 5.0


@dataclass(frozen=True)
class Entry:
    """A photo file found by the scan: the library's name for it and where to read it."""

    name: str
    path: Path


@dataclass
class Scan:
    """What the inputs hold: photo files, the name prefixes they cover, files set aside."""

    entries: list[Entry] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # archives that failed
    other_files: int = 0


@dataclass
class IndexReport:
    """What one ``facecls index`` run did (this rank's share under torchrun)."""

    library: str
    photos: int = 0  # photo files under the inputs (this rank's share)
    unchanged: int = 0
    read: int = 0
    new_photos: int = 0
    known_content: int = 0  # copies, moved or touched photos: no detection needed
    faces: int = 0
    removed_files: int = 0
    removed_faces: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    other_files: int = 0
    reembedded: int = 0  # faces re-embedded with this run's model (--reembed)
    seconds: float = 0.0
    read_seconds: float = 0.0  # reading, detecting, embedding and storing the photos read

    def summary(self) -> str:
        """One paragraph for the log."""
        rate = self.read / self.read_seconds if self.read_seconds > 0 else 0.0
        return (
            f"Indexed {self.photos} photo file(s) into {self.library}: {self.unchanged} "
            f"unchanged, {self.new_photos} new photo(s) with {self.faces} face(s), "
            f"{self.known_content} already known by content (copies, moves), "
            f"{len(self.unreadable)} unreadable, {self.removed_files} gone "
            f"({self.removed_faces} face(s) dropped); {self.read} read at {rate:.1f} photos/s, "
            f"{self.seconds:.1f} s in all"
            + (f"; {self.reembedded} face(s) re-embedded first" if self.reembedded else "")
        )


def _name(path: Path) -> str:
    return os.path.abspath(path)


def _walk(folder: Path, prefix: str, scan: Scan, cache_dir: Path) -> None:
    """Photo files under ``folder`` (sorted, junk skipped), named ``prefix/relative path``."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(Path(d)))
        for name in sorted(filenames):
            file = Path(dirpath) / name
            if is_junk(file):
                continue
            shown = prefix + "/" + file.relative_to(folder).as_posix()
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                scan.entries.append(Entry(shown, file))
            elif is_archive(file):
                _archive(file, shown, scan, cache_dir)
            else:
                scan.other_files += 1


def _archive(archive: Path, shown: str, scan: Scan, cache_dir: Path) -> None:
    try:
        folder = extract_archive(archive, cache_dir)
    except (ArchiveError, OSError) as error:
        scan.unreadable.append((printable(shown), str(error)))
        return
    _walk(folder, shown, scan, cache_dir)


def scan_inputs(inputs: Sequence[str | Path], cache_dir: Path | None = None) -> Scan:
    """The photo files of ``inputs``, each under the name the library keeps for it: its
    absolute path, or ``ARCHIVE/member`` for a file in a tar or zip archive.

    Raises:
        DataError: an input does not exist.
    """
    cache = cache_dir or default_cache_dir()
    scan = Scan()
    for item in inputs:
        path = Path(item).expanduser()
        name = _name(path)
        if not path.exists():
            raise DataError(f"{item}: no such file or folder")
        if path.is_dir():
            scan.roots.append(name + "/")
            _walk(path, name, scan, cache)
        elif is_archive(path):
            scan.roots.append(name + "/")
            _archive(path, name, scan, cache)
        else:
            scan.roots.append(name)
            scan.entries.append(Entry(name, path))
    unique = {e.name: e for e in scan.entries}  # an input given twice, or inside another
    scan.entries = [unique[n] for n in sorted(unique)]
    return scan


def rank_of(name: str, world_size: int) -> int:
    """The rank that indexes the file ``name`` (a stable hash: every rank agrees)."""
    return int.from_bytes(hashlib.blake2b(name.encode(errors="surrogateescape"),
                                          digest_size=8).digest(), "big") % world_size  # fmt: skip


def _under(name: str, roots: Sequence[str]) -> bool:
    return any(name == r or (r.endswith("/") and name.startswith(r)) for r in roots)


def index_photos(
    inputs: Sequence[str | Path], library: str | Path, model: str | Path | None = None,
    weights: str | Path | None = None, device: str = "auto", min_face: int = 40,
    workers: int | None = None, shard: tuple[int, int] = (0, 1),
    commit_every: int = COMMIT_EVERY, log: Callable[[str], None] = print,
    show_progress: bool = False, embedder: Embedder | None = None,
    cache_dir: Path | None = None, reembed: bool = False, backbone: str | None = None,
) -> IndexReport:  # fmt: skip
    """Index the photos of ``inputs`` into the face library ``library`` (see the module notes).

    Args:
        library: a folder (made if new) or a ``postgresql://`` URL.
        model: a trained model's run folder or bundle (``--model RUN``), else FaceNet.
        weights: the backbone's weights file (default: the weights cache's).
        backbone: ``facenet`` or ``sface`` without a ``model`` (default: the library's own,
            FaceNet for a new one).
        min_face: smallest face searched for, in pixels of the full photo.
        shard: ``(rank, world_size)`` under torchrun.
        embedder: a ready :class:`Embedder` (tests, benchmarks), instead of model/weights.
        reembed: a library indexed with another model is re-embedded with this one first
            (:func:`facecls.library.reembed.reembed_library`) instead of refused.

    Raises:
        LibraryError: the library refuses (another model's, a newer facecls's, read-only).
        DataError: an input does not exist.
        ValueError: both ``model`` and ``weights``.
    """
    check_choice(model, weights, backbone)
    start = time.perf_counter()
    rank, world = shard
    with open_library(library, create=True) as lib:
        scan = scan_inputs(inputs, cache_dir)
        report = IndexReport(lib.location, other_files=scan.other_files)
        report.unreadable = list(scan.unreadable) if rank == 0 else []
        mine = [e for e in scan.entries if world == 1 or rank_of(e.name, world) == rank]
        report.photos = len(mine)
        known = lib.files()
        todo = []
        for entry in mine:
            if printable(entry.name) != entry.name:  # a name no database can hold as text
                report.unreadable.append((printable(entry.name), "file name is not valid "
                                          "UTF-8 (rename the file)"))  # fmt: skip
                continue
            record = known.get(entry.name)
            stat = _stat(entry.path)
            if record is not None and stat == (record.size, record.mtime_ns):
                report.unchanged += 1
                if record.error:
                    report.unreadable.append((printable(entry.name), record.error))
            else:
                todo.append(entry)
        if todo or reembed:  # the backbone loads only when there is something to embed
            if embedder is None:
                embedder = (model_embedder(model, device) if model else backbone_embedder(
                    backbone or library_backbone(lib.model_key()), weights, device))  # fmt: skip
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the workers run photos in parallel, one thread each
            try:
                own = lib.model_key()
                if reembed and rank == 0 and own is not None and own != embedder.key:
                    report.reembedded = reembed_library(lib, embedder, workers, log,
                                                        show_progress, cache_dir)  # fmt: skip
                lib.claim_model(embedder.key)
                if todo:
                    _read_and_store(lib, embedder, todo, report, min_face, workers,
                                    commit_every, show_progress)  # fmt: skip
            finally:
                torch.set_num_threads(threads)
        if rank == 0:
            names = {e.name for e in scan.entries}
            gone = [n for n in known if _under(n, scan.roots) and n not in names]
            report.removed_files = len(gone)
            report.removed_faces = lib.drop_files(gone)
    report.seconds = time.perf_counter() - start
    for name, reason in report.unreadable[:20]:
        log(f"  unreadable: {name}: {reason}")
    if len(report.unreadable) > 20:
        log(f"  ... and {len(report.unreadable) - 20} more unreadable file(s)")
    log(report.summary())
    return report


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _vectors(photo: ReadPhoto) -> list[np.ndarray]:
    return [] if photo.embeddings is None else list(photo.embeddings)


class _Batch:
    """Photos waiting for their transaction, and the contents known to the library."""

    def __init__(self, lib: Library, report: IndexReport) -> None:
        self.lib, self.report = lib, report
        self.stored = lib.contents()
        self.claimed: set[str] = set(self.stored)
        self.photos: list[tuple[ReadPhoto, FileStamp]] = []
        self.links: list[tuple[FileStamp, str]] = []
        self.errors: list[tuple[FileStamp, str]] = []
        self.last = time.monotonic()

    def claim(self, sha256: str) -> bool:
        """Whether a content is the library's or another file's of this run (skip it)."""
        if sha256 in self.claimed:
            return True
        self.claimed.add(sha256)  # set.add is atomic under the GIL: one reader thread wins
        return False

    def add(self, photo: ReadPhoto, name: str) -> None:
        stamp = FileStamp(name, photo.size, photo.mtime_ns)
        if photo.error:
            self.errors.append((stamp, photo.error))
            self.report.unreadable.append((printable(name), photo.error))
        elif photo.known:
            self.links.append((stamp, photo.sha256))
            self.report.known_content += 1
        else:
            self.photos.append((photo, stamp))

    def due(self, commit_every: int) -> bool:
        waiting = len(self.photos) + len(self.links) + len(self.errors)
        return waiting >= commit_every or (
            waiting > 0 and time.monotonic() - self.last > COMMIT_SECONDS
        )

    def commit(self) -> None:
        """Store the waiting photos, faces and files in one transaction."""
        rows, k = [], 0
        for photo, stamp in self.photos:
            faces = [NewFace(face.box, face.landmarks, face.score, vector)
                     for face, vector in zip(photo.faces, _vectors(photo), strict=True)]  # fmt: skip
            k += len(faces)
            rows.append(NewPhoto(photo.sha256, photo.width, photo.height, faces, [stamp]))
        coming = {p.sha256 for p, _ in self.photos}
        # A copy whose original is still being read waits for it (or, last, for the next run).
        ready = [(s, sha) for s, sha in self.links if sha in self.stored or sha in coming]
        self.links = [(s, sha) for s, sha in self.links if not (sha in self.stored or
                                                                 sha in coming)]  # fmt: skip
        self.lib.add_photos(rows, self.errors, ready)
        self.stored |= coming
        self.report.new_photos += len(rows)
        self.report.faces += k
        self.photos, self.errors, self.last = [], [], time.monotonic()
        # Left at the end: copies of a content that could not be read; the next run reads them.


def _read_and_store(
    lib: Library, embedder: Embedder, todo: list[Entry], report: IndexReport, min_face: int,
    workers: int | None, commit_every: int, show_progress: bool,
) -> None:  # fmt: skip
    reader = FaceReader(embedder.cut, embedder.face_px, embedder.detector, min_face=min_face,
                        workers=workers or os.cpu_count() or 1, embed=embedder.embed)  # fmt: skip
    names = {e.path: e.name for e in todo}
    start = time.perf_counter()
    pending = _Batch(lib, report)
    counter = bar(len(todo), "index", show_progress, unit="photo")
    try:
        for photo in reader.read((e.path for e in todo), skip=pending.claim):
            pending.add(photo, names[photo.path])
            report.read += 1
            counter.update(1)
            if pending.due(commit_every):
                pending.commit()
        pending.commit()
    finally:
        counter.close()
        report.read_seconds = time.perf_counter() - start
