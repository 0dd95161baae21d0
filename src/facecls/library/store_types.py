"""The face library's vocabulary: its errors, the model key and the records both engines
read and write (:mod:`facecls.library.store` has the tables)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np

# Shared with data/library_source.py, which reads the library for training.
from facecls.data.library_tables import SCHEMA_VERSION as SCHEMA_VERSION
from facecls.data.library_tables import SOURCES as SOURCES


def facecls_version() -> str:
    """The installed facecls's version (what a library records as its writer)."""
    try:
        return version("facecls")
    except PackageNotFoundError:
        return "unknown"


class LibraryError(ValueError):
    """A library that cannot be used as asked; the message names it and says what to do."""


@dataclass(frozen=True)
class ModelKey:
    """What made a library's embeddings; two different keys never share one library.

    Attributes:
        backbone: the network (``facenet``, or a trained model's architecture).
        weights_sha256: digest of its weights file.
        pipeline: the face pipeline faces are cut with (``box``, ``align``, ``centre``).
        image_size: side of the face the network sees, in pixels.
        dim: embedding dimension.
    """

    backbone: str
    weights_sha256: str
    pipeline: str
    image_size: int
    dim: int

    def describe(self) -> str:
        """One line for messages."""
        return (
            f"{self.backbone} (weights {self.weights_sha256[:12]}), {self.pipeline} faces at "
            f"{self.image_size} px, {self.dim}-d"
        )


@dataclass(frozen=True)
class FileStamp:
    """A file as the scan saw it: its path (the library's name for it), size and mtime."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileRecord:
    """A path the library knows: the photo it holds, or why it could not be read."""

    path: str
    size: int
    mtime_ns: int
    photo_id: int | None
    error: str | None


@dataclass(frozen=True)
class NewFace:
    """A detected face to store.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in full-resolution photo pixels (EXIF orientation applied).
        landmarks: ``(5, 2)`` eyes, nose, mouth corners, or ``None``.
        score: the detector's face probability.
        embedding: ``(D,)`` float32, L2-normalised.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    score: float
    embedding: np.ndarray


@dataclass(frozen=True)
class NewPhoto:
    """A photo's content and faces (main face first) and the files that hold it."""

    sha256: str
    width: int
    height: int
    faces: list[NewFace]
    files: list[FileStamp]


@dataclass(frozen=True)
class Face:
    """A stored face (see the module notes for the fields)."""

    id: int
    photo_id: int
    rank: int
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    score: float
    size: int
    person_id: int | None
    source: str | None
    ignored: bool


@dataclass(frozen=True)
class Person:
    """A person: a named one, or an unnamed cluster (``name`` None); ``faces`` counts theirs."""

    id: int
    name: str | None
    hidden: bool
    faces: int


@dataclass(frozen=True)
class Changes:
    """What changed after a ``seq``: faces added (ids and vectors) and removed, up to ``seq``.

    ``model`` is the library's :class:`ModelKey` now: an index built for another one is rebuilt.
    """

    seq: int
    model: ModelKey | None
    added: np.ndarray  # int64 (n,)
    vectors: np.ndarray  # float32 (n, D)
    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
