"""A gallery folder's faces: embedded once, cached, searched through a vector index.

The gallery's embeddings are computed once and cached in one safetensors file under the facecls
cache (``$FACECLS_CACHE/gallery/``), keyed by the gallery folder and the model. Each cached face
remembers its file's stamp (size, modification and change time, inode) and the sha256 of its
bytes; on the next search only files whose bytes are new or changed are embedded again, files
that are gone are dropped, and a cached vector that is not a finite unit vector is redone.

Scale: the faces are searched through :class:`facecls.vector_index.VectorIndex` (FAISS): every
face compared up to ``exact_up_to`` faces, an approximate index above, saved beside the cache
(``.vectors``) and trusted only for the same model and embeddings (``docs/library.md`` has the
figures).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors import numpy as safetensors_numpy

from facecls.atomic import atomic_path
from facecls.data.images import printable
from facecls.data.sources import DataError, default_cache_dir
from facecls.inference.faces import Prediction, check_top_k, expand_paths
from facecls.inference.model import FaceModel
from facecls.inference.verify import (
    FaceEmbeddings,
    embed_photos,
    model_key,
)
from facecls.vector_file import embeddings_digest, load_or_build, save_index
from facecls.vector_index import IndexSettings, VectorIndex

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


def _stamp(path: Path) -> list[int] | None:
    """Size, modification and change time, inode: a photo replaced or rewritten, even with its
    modification time set back, gets a new change time (which no user call can set back)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _face_key(row: dict[str, Any]) -> str:
    """A face's place and version: the index is extended only while these stay in order."""
    return json.dumps([row["path"], row.get("face"), row.get("stamp"), row.get("sha256")])


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
        index_settings: the vector index's engine and limits (default: exact up to 50,000
            faces, approximate above).
    """

    def __init__(
        self, model: FaceModel, folder: str | Path, detect: bool = False,
        cache_dir: Path | None = None, index_settings: IndexSettings | None = None,
    ) -> None:  # fmt: skip
        self.model, self.folder, self.detect = model, Path(folder), detect
        self.index_settings = index_settings or IndexSettings()
        self._index: VectorIndex | None = None  # ids: positions in faces
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
        self._face_keys: list[str] = []  # what each position of the index holds

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
        if not isinstance(rows, list) or not all(
            isinstance(row, dict) and isinstance(row.get("path"), str) for row in rows
        ):
            return []  # not rows this version wrote: rebuild
        faces = [row for row in rows if not row.get("reason")]
        whole = (
            vectors.ndim == 2 and vectors.dtype == np.float32
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
        keys = [_face_key(row) for row, _ in faces]
        if keys[: len(self._face_keys)] != self._face_keys:
            self._index = None  # faces left, moved or changed: positions differ, rebuild
        self._face_keys = keys
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

    def index(self) -> VectorIndex:
        """The vector index of the faces (ids: positions in :attr:`faces`), brought up to date:
        new faces added, rebuilt after faces left; above ``exact_up_to`` faces it is saved
        beside the cache and reused while model and embeddings are the same."""
        count, saved = len(self.faces), self.cache.with_suffix(".vectors")
        approximate = count > self.index_settings.exact_up_to
        if self._index is None or len(self._index) > count:
            ids = np.arange(count)
            if approximate:
                self._index = load_or_build(saved, self.vectors, ids, self.model_key,
                                            self.index_settings)  # fmt: skip
            else:
                self._index = VectorIndex(self._dim(), self.index_settings)
                self._index.add(self.vectors, ids)
        elif len(self._index) < count:
            done = len(self._index)
            self._index.add(self.vectors[done:], np.arange(done, count))
            if approximate:
                save_index(self._index, saved, self.model_key,
                           embeddings_digest(self.vectors, np.arange(count)))  # fmt: skip
        return self._index

    def _dim(self) -> int:
        return self.vectors.shape[1] if self.vectors.size else 1

    def nearest(self, vector: np.ndarray, top_k: int = 5) -> list[Match]:
        """The ``top_k`` gallery faces most similar to a unit embedding, most similar first
        (equal similarities: the face embedded first).

        Raises:
            ValueError: ``top_k`` below 1.
        """
        check_top_k(top_k)
        if not self.faces:
            return []
        scores, ids = self.index().search(np.asarray(vector, dtype=np.float32), top_k)
        return matches_of(self.faces, scores[0], ids[0])


def matches_of(faces: list[Prediction], scores: np.ndarray, ids: np.ndarray) -> list[Match]:
    """:class:`Match` rows for one query's index answer (empty slots left out)."""
    return [
        Match(faces[i].path or "", float(score), faces[i].face, faces[i].box)
        for score, i in zip(scores, ids, strict=True)
        if i >= 0
    ]


def marked(matches: list[Match], threshold: float | None) -> list[Match]:
    """``matches`` each marked ``same`` when its similarity is at or above ``threshold`` (the
    verify threshold; ``None``: left unmarked)."""
    if threshold is None:
        return matches
    return [replace(m, same=bool(m.similarity >= threshold)) for m in matches]
