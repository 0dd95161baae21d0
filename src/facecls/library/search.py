"""``facecls search PHOTO --library LIB``: the library's faces nearest a photo's main face.

The photo is read as ``facecls index`` reads photos (the library's own detector, face pipeline
and backbone: FaceNet by default, ``--model RUN`` for a library indexed with a trained model;
another model than the library's is refused), and its main face is searched for among every
face of the library through the library's vector index (:mod:`facecls.library.vectors`), saved
beside the library when it is large.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecls.data.photo_faces import FaceReader
from facecls.data.sources import DataError
from facecls.library.embedder import (
    Embedder,
    backbone_embedder,
    check_choice,
    library_backbone,
    model_embedder,
)
from facecls.library.store import Library, LibraryError, open_library
from facecls.library.vectors import LibraryVectors
from facecls.vector_index import IndexSettings


@dataclass
class LibraryMatch:
    """A library face: its id, similarity, photo (first path), box and person (if named)."""

    face: int
    similarity: float
    path: str
    box: tuple[float, float, float, float]
    person: str | None


@dataclass
class LibrarySearchResult:
    """The query's main face box, the nearest library faces (most similar first), the count."""

    box: tuple[float, float, float, float]
    matches: list[LibraryMatch]
    library_faces: int


def library_embedder(
    lib: Library, model: str | Path | None, weights: str | Path | None, device: str,
    require_digest: bool = False,
) -> Embedder:  # fmt: skip
    """The embedder the library's faces were made with (refusing any other)."""
    key = lib.model_key()
    if key is None:
        raise LibraryError(f"{lib.location}: the library has no faces yet; facecls index first")
    embedder = (model_embedder(model, device, require_digest) if model
                else backbone_embedder(library_backbone(key), weights, device))  # fmt: skip
    if embedder.key != key:
        raise LibraryError(
            f"{lib.location}: its faces were embedded by {key.describe()}, not by "
            f"{embedder.key.describe()}; search with the same model (--model RUN) or weights"
        )
    return embedder


def library_matches(lib: Library, scores: np.ndarray, ids: np.ndarray) -> list[LibraryMatch]:
    """:class:`LibraryMatch` rows for one query's answer (empty slots left out)."""
    found = {f.id: f for f in lib.faces(ids=[int(i) for i in ids if i >= 0])}
    names = {p.id: p.name for p in lib.people()}
    out = []
    for score, face_id in zip(scores, ids, strict=True):
        face = found.get(int(face_id))
        if face is None:  # removed since the index was refreshed
            continue
        paths = lib.photo(face.photo_id)["paths"]
        out.append(LibraryMatch(int(face_id), float(score), paths[0] if paths else "",
                                face.box, names.get(face.person_id)))  # fmt: skip
    return out


def search_library(
    photo: str | Path, library: str | Path, top_k: int = 5, model: str | Path | None = None,
    weights: str | Path | None = None, device: str = "auto", min_face: int = 40,
    settings: IndexSettings | None = None, log: Callable[[str], None] = print,
    require_digest: bool = False,
) -> LibrarySearchResult:  # fmt: skip
    """The ``top_k`` faces of the library nearest the main face of ``photo``.

    ``min_face`` (pixels) is the smallest face looked for, as in ``facecls index``: a photo of
    the library read the same way gives its own faces' embeddings back. ``require_digest``
    refuses a ``model`` bundle that records no weights digest (it needs ``model``).

    Raises:
        LibraryError: no library there, no faces yet, or another model than the library's.
        DataError: the photo cannot be read or has no face.
    """
    check_choice(model, weights)
    if require_digest and model is None:
        raise ValueError(
            "--require-digest checks a trained model's bundle: with --library it needs --model "
            "RUN (FaceNet's weights file is checked against its sha256 when facecls gets it)"
        )
    with open_library(library, writable=False) as lib:
        embedder = library_embedder(lib, model, weights, device, require_digest)
        reader = FaceReader(embedder.cut, embedder.face_px, embedder.detector, min_face=min_face,
                            workers=1)  # fmt: skip
        read = next(iter(reader.read([Path(photo)])))
        if read.error:
            raise DataError(f"{photo}: {read.error}")
        if not read.faces:
            raise DataError(f"{photo}: no face found")
        main = read.faces[0]
        vector = embedder.embed(main.pixels.transpose(2, 0, 1)[None])
        vectors = LibraryVectors(lib, settings, log=log).refresh()
        scores, ids = vectors.search(vector, top_k)
        try:
            vectors.save()  # a large index is read next time instead of built
        except OSError as error:  # a read-only library folder: searched all the same
            log(f"{vectors.path}: the vector index could not be saved ({error})")
        assert vectors.index is not None
        return LibrarySearchResult(tuple(main.box), library_matches(lib, scores[0], ids[0]),
                                   len(vectors.index))  # fmt: skip
