"""1:N search: the gallery faces closest to a photo's face, by cosine similarity.

The gallery's embeddings are computed once and cached in one safetensors file under the facecls
cache (``$FACECLS_CACHE/gallery/``), keyed by the gallery folder and the model. Each cached face
remembers its file's stamp (size, modification and change time, inode) and the sha256 of its
bytes; on the next search only files whose bytes are new or changed are embedded again, files
that are gone are dropped, and a cached vector that is not a finite unit vector is redone.

Scale: the search is numpy brute force, one matrix-vector product over ``(N, D)`` float32. At
N = 100,000 faces and D = 512 that is 200 MB of embeddings and a few tens of milliseconds per
query on a laptop CPU; beyond ~10^5 faces (or for many queries per second) use an approximate
nearest-neighbour index (FAISS, hnswlib) over the embeddings ``facecls embed`` writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors import numpy as safetensors_numpy

from facecls.atomic import atomic_path
from facecls.bundle import WEIGHTS_NAME, BundleError
from facecls.data.images import printable
from facecls.data.sources import DataError, default_cache_dir
from facecls.inference.faces import Prediction, check_top_k, expand_paths
from facecls.inference.model import FaceModel, load_model
from facecls.inference.verify import (
    FaceEmbeddings,
    check_photo,
    embed_photos,
    photo_face,
    stored_threshold,
)

CACHE_FORMAT = "facecls-gallery-2"  # 2: rows carry a content digest


@dataclass
class Match:
    """One gallery face: its photo, face index and box (``--detect``), its similarity, and
    whether that reaches the verify threshold (``same``; ``None`` when there is none)."""

    path: str
    similarity: float
    face: int | None = None
    box: tuple[int, int, int, int] | None = None
    same: bool | None = None


@dataclass
class SearchResult:
    """The query's face, the closest gallery faces (most similar first), the gallery files
    that were skipped (``(path, reason)``), and the verify threshold the matches were marked
    against with its false-accept rate (``None``: the model has none; nothing is marked)."""

    query: Prediction
    matches: list[Match]
    gallery_faces: int
    skipped: list[tuple[str, str]]
    threshold: float | None = None
    far: float | None = None


def verify_threshold(model: FaceModel) -> tuple[float | None, float | None]:
    """The model's calibrated verify threshold and its false-accept rate, ``(None, None)``
    when it has none (bundles from before ``facecls verify``).

    Raises:
        facecls.numbers.NumberError: the stored threshold is not a finite number.
    """
    try:
        return stored_threshold(model, None)
    except BundleError:
        return None, None


# model.json entries that change embeddings (enrolling people or recalibrating does not)
EMBEDDING_KEYS = ("architecture", "image_size", "crop", "mean", "std", "flip_tta")


def model_key(model: FaceModel) -> str:
    """What embeddings depend on: the weights file (inode, size, mtime; the service's enrolled
    versions share it as a hard link) and the preprocessing in ``model.json``."""
    digest = hashlib.sha256()
    digest.update(json.dumps([model.meta.get(k) for k in EMBEDDING_KEYS]).encode())
    weights = model.folder / WEIGHTS_NAME
    if weights.exists():
        stat = weights.stat()
        digest.update(f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(model.backend.encode())
    return digest.hexdigest()


def _stamp(path: Path) -> list[int] | None:
    """Size, modification and change time, inode: a photo replaced or rewritten, even with its
    modification time set back, gets a new change time (which no user call can set back)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _digest(path: Path) -> str | None:
    """sha256 of the bytes of ``path`` (what is read to embed it); ``None`` when unreadable."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


# A cached embedding is trusted only when it is a finite unit vector (embeddings are
# L2-normalised; float32 rounding stays far inside this).
UNIT_TOLERANCE = 1e-3
Entry = tuple[dict[str, Any], np.ndarray | None]  # a cache row and its vector (None: skipped)


def _usable(vectors: np.ndarray) -> np.ndarray:
    """``(N,)`` whether each row of ``vectors`` is a finite unit vector."""
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    return np.isfinite(vectors).all(axis=1) & (np.abs(norms - 1.0) <= UNIT_TOLERANCE)


class Gallery:
    """A folder of photos with its cached embeddings for one model.

    Each cached face keeps its file's stamp (size, modification and change time, inode) and the
    sha256 of its bytes: a file whose stamp changed is hashed again and embedded again only when
    its bytes changed. A cached vector that is not a finite unit vector is discarded (counted in
    ``discarded``) and its photo embedded again.

    Args:
        folder: the gallery (searched recursively; junk and non-image files skipped).
        detect: one entry per face MTCNN finds instead of per photo.
        cache_dir: where the cache lives (default the facecls cache).
    """

    def __init__(
        self, model: FaceModel, folder: str | Path, detect: bool = False,
        cache_dir: Path | None = None,
    ) -> None:  # fmt: skip
        self.model, self.folder, self.detect = model, Path(folder), detect
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: the gallery must be a folder of photos")
        self.model_key = model_key(model)
        key = hashlib.sha256(
            f"{self.folder.resolve()}|{detect}|{self.model_key}".encode()
        ).hexdigest()[:24]
        self.cache = (cache_dir or default_cache_dir()) / "gallery" / f"{key}.safetensors"
        self.faces: list[Prediction] = []
        self.vectors = np.zeros((0, 0), np.float32)
        self.skipped: list[tuple[str, str]] = []
        self.embedded = 0  # photos embedded by the last refresh (0: all from the cache)
        self.discarded = 0  # cached faces found damaged (not finite unit vectors) and redone
        self._entries: list[Entry] | None = None  # after a refresh: the cache, in memory

    def _read_cache(self) -> list[Entry]:
        """The cached rows with their vectors; damaged vectors are left out (and counted)."""
        try:
            with safetensors_numpy.safe_open(str(self.cache), framework="np") as f:
                meta = f.metadata() or {}
                if meta.get("format") != CACHE_FORMAT:
                    return []
                rows = json.loads(meta["rows"])
                vectors = f.get_tensor("embeddings")
        except (OSError, SafetensorError, KeyError, ValueError):
            return []  # missing or unreadable: rebuild
        faces = [row for row in rows if isinstance(row, dict) and not row.get("reason")]
        whole = (
            isinstance(rows, list) and all(isinstance(row, dict) for row in rows)
            and vectors.ndim == 2 and vectors.dtype == np.float32
            and (len(faces) == vectors.shape[0] or (not faces and vectors.shape[0] == 0))
        )  # fmt: skip
        if not whole:
            self.discarded = len(faces)
            return []
        usable = _usable(vectors) if faces else np.zeros(0, bool)
        self.discarded = int((~usable).sum())
        entries: list[Entry] = [(row, None) for row in rows if row.get("reason")]
        entries += [(row, vectors[n]) for n, row in enumerate(faces) if usable[n]]
        return entries

    def refresh(self, show_progress: bool = False) -> Gallery:
        """Bring the embeddings up to date with the folder; re-embed only changed files
        (``show_progress``: a bar over them, a line every 10 % off a terminal)."""
        self.discarded = 0
        entries = self._read_cache() if self._entries is None else self._entries
        changed = self.discarded > 0
        old: dict[str, list[Entry]] = {}
        for row, vector in entries:
            old.setdefault(row["path"], []).append((row, vector))
        keep: list[Entry] = []
        todo: list[Path] = []
        known: dict[str, dict[str, Any]] = {}  # stamp and digest of each file embedded now
        for path in expand_paths([self.folder], images_only=False):
            shown, stamp = printable(str(path)), _stamp(path)
            seen = old.pop(shown, [])
            if seen and all(row.get("stamp") == stamp for row, _ in seen):
                keep += seen
                continue
            changed = True
            digest = _digest(path)
            if seen and digest is not None and all(row.get("sha256") == digest for row, _ in seen):
                keep += [({**row, "stamp": stamp}, vector) for row, vector in seen]  # touched
                continue
            todo.append(path)
            known[shown] = {"stamp": stamp, "sha256": digest}
        changed = changed or bool(old)  # files that are gone
        found = (
            embed_photos(self.model, todo, self.detect, images_only=False,
                         show_progress=show_progress, desc="gallery")
            if todo else FaceEmbeddings([], np.zeros((0, 0), np.float32), [])
        )  # fmt: skip
        self.embedded = len(todo)
        usable = _usable(found.vectors) if found.faces else np.zeros(0, bool)
        for face, vector, ok in zip(found.faces, found.vectors, usable, strict=True):
            row = {"path": face.path, "face": face.face, "box": face.box,
                   **known.get(face.path or "", {})}  # fmt: skip
            if ok:
                keep.append((row, vector))
            else:  # a model that gives NaN for this photo: listed, never cached as a face
                keep.append(({**row, "reason": "the model gave a non-finite embedding"}, None))
        keep += [
            ({"path": s.path, "reason": s.reason, **known.get(s.path or "", {})}, None)
            for s in found.skipped
        ]  # fmt: skip
        faces = [(row, vector) for row, vector in keep if vector is not None]
        self.vectors = (
            np.stack([vector for _, vector in faces]).astype(np.float32)
            if faces else np.zeros((0, 0), np.float32)
        )  # fmt: skip
        self.faces = [
            Prediction("", path=row["path"], face=row["face"],
                       box=None if row["box"] is None else tuple(row["box"]))
            for row, _ in faces
        ]  # fmt: skip
        self.skipped = [(row["path"], row["reason"]) for row, vector in keep if vector is None]
        ordered = faces + [(row, None) for row, vector in keep if vector is None]
        if changed:
            self._write_cache([row for row, _ in ordered])
        self._entries = ordered
        return self

    def _write_cache(self, rows: list[dict[str, Any]]) -> None:
        vectors = self.vectors if self.vectors.size else np.zeros((0, 1), np.float32)
        with atomic_path(self.cache, vectors.nbytes) as tmp:
            safetensors_numpy.save_file(
                {"embeddings": np.ascontiguousarray(vectors, dtype=np.float32)}, str(tmp),
                metadata={"format": CACHE_FORMAT, "rows": json.dumps(rows),
                          "gallery": str(self.folder.resolve())},
            )  # fmt: skip
        os.chmod(self.cache, 0o600)  # embeddings of people's faces: the user's own

    def nearest(
        self, vector: np.ndarray, top_k: int = 5, threshold: float | None = None
    ) -> list[Match]:
        """The ``top_k`` gallery faces most similar to a unit embedding, most similar first;
        with a ``threshold``, each marked ``same`` when its similarity is at or above it.

        Raises:
            ValueError: ``top_k`` below 1.
        """
        check_top_k(top_k)
        if not self.faces:
            return []
        similarity = self.vectors @ np.asarray(vector, dtype=np.float32)
        k = min(top_k, len(similarity))
        best = np.argpartition(-similarity, k - 1)[:k]
        best = best[np.argsort(-similarity[best], kind="stable")]
        return [
            Match(self.faces[i].path or "", float(similarity[i]), self.faces[i].face,
                  self.faces[i].box,
                  None if threshold is None else bool(similarity[i] >= threshold))
            for i in best
        ]  # fmt: skip


def search(
    model: str | Path | FaceModel,
    photo: str | Path,
    gallery: str | Path | Gallery,
    top_k: int = 5,
    detect: bool = False,
    device: str = "auto",
    log: Callable[[str], None] = print,
    require_digest: bool = False,
    show_progress: bool = False,
) -> SearchResult:
    """``facecls search``: the ``top_k`` gallery faces closest to the (main) face of ``photo``,
    each marked ``same`` when its similarity reaches the model's verify threshold (the one
    ``facecls verify`` decides with).

    ``show_progress``: a bar over the gallery photos embedded (all of them the first time).

    Raises:
        DataError: the photo cannot be read or has no face; the gallery is not a folder.
        ValueError: ``top_k`` below 1.
    """
    check_top_k(top_k)
    check_photo(photo)
    if not isinstance(model, FaceModel):
        model = load_model(model, device=device, require_digest=require_digest)
    if not isinstance(gallery, Gallery):
        gallery = Gallery(model, gallery, detect)
    gallery.refresh(show_progress)  # the first search embeds the whole gallery: minutes
    if gallery.discarded:
        log(f"Gallery cache {gallery.cache}: {gallery.discarded} damaged embedding(s) discarded "
            "and embedded again")  # fmt: skip
    for path, reason in gallery.skipped:
        log(f"  skipped {path}: {reason}")
    if not gallery.faces:
        raise DataError(f"{gallery.folder}: no usable face photo in the gallery")
    query, vector, _ = photo_face(model, photo, detect)
    threshold, far = verify_threshold(model)
    matches = gallery.nearest(vector, top_k, threshold)
    return SearchResult(query, matches, len(gallery.faces), gallery.skipped, threshold, far)
