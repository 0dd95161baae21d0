"""1:N search: the gallery faces closest to a photo's face, by cosine similarity.

A gallery is a folder of photos (:class:`Gallery`) or the file ``facecls embed`` wrote
(:class:`GalleryFile`: a collection embedded once, a million faces searched in milliseconds).

The gallery's embeddings are computed once and cached in one safetensors file under the facecls
cache (``$FACECLS_CACHE/gallery/``), keyed by the gallery folder and the model. Each cached face
remembers its file's size and modification time; on the next search only files that are new or
changed are embedded again, and files that are gone are dropped.

Scale: the faces are searched through :class:`facecls.vector_index.VectorIndex` (FAISS): every
face compared up to ``exact_up_to`` faces, an approximate index above, saved beside the cache
(``.vectors``) and trusted only for the same model and embeddings (``docs/library.md`` has the
figures). A gallery embedded beforehand (``facecls embed``'s safetensors file) is searched the
same way (:class:`GalleryFile`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors import numpy as safetensors_numpy

from facecls.atomic import atomic_path
from facecls.data.sources import DataError, default_cache_dir
from facecls.inference.faces import Prediction, expand_paths
from facecls.inference.model import FaceModel, load_model
from facecls.inference.verify import FaceEmbeddings, embed_photos, model_key, photo_face
from facecls.vector_file import embeddings_digest, load_or_build, save_index
from facecls.vector_index import IndexSettings, VectorIndex

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
        if kept != face_rows:  # faces left or moved: positions change, the index is rebuilt
            self._index = None
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
        (equal similarities: the face embedded first)."""
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


class FaceRows(Sequence[Prediction]):
    """The faces of an embeddings file as ``Prediction`` rows, made when asked for (a million
    dataclasses would cost more memory than the embeddings)."""

    def __init__(self, paths: list[str], faces: np.ndarray, boxes: np.ndarray) -> None:
        self._paths, self._faces, self._boxes = paths, faces, boxes

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i):  # noqa: ANN001, ANN204 (Sequence's int | slice protocol)
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        face = int(self._faces[i])
        box = self._boxes[i]
        return Prediction(
            "", path=self._paths[i], face=None if face < 0 else face,
            box=None if box[2] <= 0 else (int(box[0]), int(box[1]), int(box[2]), int(box[3])),
        )  # fmt: skip


def read_rows(index: Path, count: int) -> FaceRows:
    """The CSV index of an embeddings file (``row, photo, face, box``), checked against its
    ``count`` tensor rows."""
    paths: list[str] = []
    faces = np.full(count, -1, np.int32)
    boxes = np.zeros((count, 4), np.int32)
    try:
        with index.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for n, row in enumerate(reader):
                if n >= count or int(row["row"]) != n:
                    raise DataError(f"{index}: row {n} does not match the embeddings' rows")
                paths.append(row["photo"])
                if row.get("face"):
                    faces[n] = int(row["face"])
                if row.get("box"):
                    boxes[n] = [int(v) for v in row["box"].split()]
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"{index}: not a readable facecls embed index ({error})") from error
    if len(paths) != count:
        raise DataError(f"{index}: {len(paths)} rows for {count} embeddings")
    return FaceRows(paths, faces, boxes)


class GalleryFile(Gallery):
    """A ``facecls embed`` output searched as a gallery (the module docstring).

    Args:
        model: the model whose embeddings the file must hold.
        path: the safetensors file (its ``.csv`` index beside it).
        cache_dir: where a saved approximate index lives (default the facecls cache).
        index_settings: the vector index's engine and limits.
    """

    def __init__(
        self, model: FaceModel, path: str | Path, cache_dir: Path | None = None,
        index_settings: IndexSettings | None = None,
    ) -> None:  # fmt: skip
        self.model, self.folder, self.detect = model, Path(path), False
        if not self.folder.is_file():
            raise DataError(f"{self.folder}: the gallery must be a folder or an embeddings file")
        self.index_settings = index_settings or IndexSettings()
        self.model_key = model_key(model)
        key = hashlib.sha256(f"{self.folder.resolve()}|{self.model_key}".encode()).hexdigest()
        self.cache = (cache_dir or default_cache_dir()) / "gallery" / f"file-{key[:24]}.safetensors"
        self.faces = []  # type: ignore[assignment] (FaceRows once read)
        self.vectors = np.zeros((0, 0), np.float32)
        self.skipped: list[tuple[str, str]] = []
        self.embedded = 0
        self._index = None
        self._stamp: tuple[int, int] | None = None

    def refresh(self) -> GalleryFile:
        """Read the file again if it changed since it was last read."""
        stat = self.folder.stat()
        if self._stamp == (stat.st_size, stat.st_mtime_ns):
            return self
        try:
            with safetensors_numpy.safe_open(str(self.folder), framework="np") as f:
                meta = f.metadata() or {}
                names = set(f.keys())
                vectors = f.get_tensor("embeddings") if "embeddings" in names else None
        except (OSError, SafetensorError) as error:
            raise DataError(f"{self.folder}: not a readable safetensors file ({error})") from error
        if meta.get("format") != "facecls-embeddings" or vectors is None or vectors.ndim != 2:
            raise DataError(f"{self.folder}: not an embeddings file written by facecls embed")
        if meta.get("model") != self.model_key:
            raise DataError(
                f"{self.folder}: embedded by another model (or by a facecls that did not record "
                "the model); embed the photos again with this model (facecls embed)"
            )
        if not np.isfinite(vectors).all():
            raise DataError(f"{self.folder}: holds non-finite embeddings; embed the photos again")
        rows = read_rows(
            self.folder.with_name(meta.get("index") or self.folder.with_suffix(".csv").name),
            len(vectors),
        )
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.faces = rows  # type: ignore[assignment]
        self._index, self._stamp = None, (stat.st_size, stat.st_mtime_ns)
        return self


def open_gallery(
    model: FaceModel, gallery: str | Path, detect: bool = False,
    index_settings: IndexSettings | None = None,
) -> Gallery:  # fmt: skip
    """A folder of photos (:class:`Gallery`) or a ``facecls embed`` file (:class:`GalleryFile`)."""
    if Path(gallery).is_file():
        return GalleryFile(model, gallery, index_settings=index_settings)
    return Gallery(model, gallery, detect, index_settings=index_settings)


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
        gallery = open_gallery(model, gallery, detect)
    gallery.refresh()
    for path, reason in gallery.skipped:
        log(f"  skipped {path}: {reason}")
    if not gallery.faces:
        raise DataError(f"{gallery.folder}: no usable face photo in the gallery")
    query, vector, _ = photo_face(model, photo, detect)
    return SearchResult(query, gallery.nearest(vector, top_k), len(gallery.faces), gallery.skipped)
