"""A ``facecls embed`` file searched as a gallery: a collection embedded once (on several
machines if need be), a million faces searched in milliseconds, for the model that embedded it
only."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors import numpy as safetensors_numpy

from facecls.data.sources import DataError, default_cache_dir
from facecls.inference.faces import Prediction
from facecls.inference.gallery import Gallery
from facecls.inference.model import FaceModel
from facecls.inference.verify import (
    model_key,
)
from facecls.vector_index import IndexSettings


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
        self.discarded = 0  # the file is read whole, as embed wrote it
        self._index = None
        self._stamp: tuple[int, int] | None = None

    def refresh(self, show_progress: bool = False) -> GalleryFile:
        """Read the file again if it changed since it was last read (quick: no bar shown)."""
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
