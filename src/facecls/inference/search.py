"""1:N search: the gallery faces closest to a photo's face, by cosine similarity.

The gallery's embeddings are computed once and cached in one safetensors file under the facecls
cache (``$FACECLS_CACHE/gallery/``), keyed by the gallery folder and the model. Each cached face
remembers its file's size and modification time; on the next search only files that are new or
changed are embedded again, and files that are gone are dropped.

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
from facecls.bundle import WEIGHTS_NAME
from facecls.data.sources import DataError, default_cache_dir
from facecls.inference.faces import Prediction, expand_paths
from facecls.inference.model import FaceModel, load_model
from facecls.inference.verify import FaceEmbeddings, embed_photos, photo_face

CACHE_FORMAT = "facecls-gallery-1"


@dataclass
class Match:
    """One gallery face: its photo, face index and box (``--detect``) and its similarity."""

    path: str
    similarity: float
    face: int | None = None
    box: tuple[int, int, int, int] | None = None


@dataclass
class SearchResult:
    """The query's face, the closest gallery faces (most similar first) and the gallery files
    that were skipped (``(path, reason)``)."""

    query: Prediction
    matches: list[Match]
    gallery_faces: int
    skipped: list[tuple[str, str]]


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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class Gallery:
    """A folder of photos with its cached embeddings for one model.

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
        self._rows: list[dict[str, Any]] | None = None  # after a refresh: the cache, in memory

    def _read_cache(self) -> tuple[list[dict[str, Any]], np.ndarray]:
        try:
            with safetensors_numpy.safe_open(str(self.cache), framework="np") as f:
                meta = f.metadata() or {}
                if meta.get("format") != CACHE_FORMAT:
                    return [], np.zeros((0, 0), np.float32)
                rows = json.loads(meta["rows"])
                return rows, f.get_tensor("embeddings")
        except (OSError, SafetensorError, KeyError, ValueError):
            return [], np.zeros((0, 0), np.float32)  # missing or unreadable: rebuild

    def refresh(self) -> Gallery:
        """Bring the embeddings up to date with the folder; re-embed only changed files."""
        if self._rows is None:
            rows, vectors = self._read_cache()
        else:  # refreshed before: only the folder is looked at again
            rows, vectors = self._rows, self.vectors
        files = [p for p in expand_paths([self.folder], images_only=False)]
        stamps = {str(p): _stamp(p) for p in files}
        keep = [
            i for i, row in enumerate(rows)
            if row["path"] in stamps and stamps[row["path"]] == tuple(row["stamp"])
        ]  # fmt: skip
        fresh = {rows[i]["path"] for i in keep}
        # files seen before that gave no face and are unchanged stay skipped without re-reading
        known_bad = {
            row["path"]: row["reason"] for row in rows
            if row.get("reason") and stamps.get(row["path"]) == tuple(row["stamp"])
        }  # fmt: skip
        todo = [p for p in files if str(p) not in fresh and str(p) not in known_bad]
        found = (
            embed_photos(self.model, todo, self.detect, images_only=False)
            if todo else FaceEmbeddings([], np.zeros((0, 0), np.float32), [])
        )  # fmt: skip
        self.embedded = len(todo)
        # rows of faces (not of skipped files) index the cached tensor in order
        face_rows = [i for i, r in enumerate(rows) if not r.get("reason")]
        position = {row: n for n, row in enumerate(face_rows)}
        kept = [i for i in keep if i in position]
        good = [rows[i] for i in kept]
        kept_vectors = vectors[[position[i] for i in kept]] if kept else None
        new_rows = [
            {"path": f.path, "face": f.face, "box": f.box, "stamp": stamps[f.path]}
            for f in found.faces
        ]
        bad_rows = [
            {"path": p, "reason": r, "stamp": stamps[p]} for p, r in known_bad.items()
        ] + [
            {"path": s.path, "reason": s.reason, "stamp": stamps.get(s.path) or (0, 0)}
            for s in found.skipped
        ]  # fmt: skip
        parts = [v for v in (kept_vectors, found.vectors) if v is not None and v.size]
        self.vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        all_rows = good + new_rows
        self.faces = [
            Prediction("", path=r["path"], face=r["face"],
                       box=None if r["box"] is None else tuple(r["box"]))
            for r in all_rows
        ]  # fmt: skip
        self.skipped = [(r["path"], r["reason"]) for r in bad_rows]
        if todo or len(keep) != len(rows):
            self._write_cache(all_rows + bad_rows)
        self._rows = all_rows + bad_rows
        return self

    def _write_cache(self, rows: list[dict[str, Any]]) -> None:
        vectors = self.vectors if self.vectors.size else np.zeros((0, 1), np.float32)
        with atomic_path(self.cache) as tmp:
            safetensors_numpy.save_file(
                {"embeddings": np.ascontiguousarray(vectors, dtype=np.float32)}, str(tmp),
                metadata={"format": CACHE_FORMAT, "rows": json.dumps(rows),
                          "gallery": str(self.folder.resolve())},
            )  # fmt: skip
        os.chmod(self.cache, 0o600)  # embeddings of people's faces: the user's own

    def nearest(self, vector: np.ndarray, top_k: int = 5) -> list[Match]:
        """The ``top_k`` gallery faces most similar to a unit embedding, most similar first."""
        if not self.faces:
            return []
        similarity = self.vectors @ np.asarray(vector, dtype=np.float32)
        k = min(top_k, len(similarity))
        best = np.argpartition(-similarity, k - 1)[:k]
        best = best[np.argsort(-similarity[best], kind="stable")]
        return [
            Match(self.faces[i].path or "", float(similarity[i]), self.faces[i].face,
                  self.faces[i].box)
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
) -> SearchResult:
    """``facecls search``: the ``top_k`` gallery faces closest to the (main) face of ``photo``.

    Raises:
        DataError: the photo cannot be read or has no face; the gallery is not a folder.
    """
    model = model if isinstance(model, FaceModel) else load_model(model, device=device)
    if not isinstance(gallery, Gallery):
        gallery = Gallery(model, gallery, detect)
    gallery.refresh()
    for path, reason in gallery.skipped:
        log(f"  skipped {path}: {reason}")
    if not gallery.faces:
        raise DataError(f"{gallery.folder}: no usable face photo in the gallery")
    query, vector, _ = photo_face(model, photo, detect)
    return SearchResult(query, gallery.nearest(vector, top_k), len(gallery.faces), gallery.skipped)
