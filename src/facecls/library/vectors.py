"""The face library's vector index: every face's embedding, searched by face id.

One :class:`facecls.vector_index.VectorIndex` over the library's faces (ids: face ids), kept up
to date through the library's change counter: :meth:`LibraryVectors.refresh` reads the faces
added and removed since the index's ``seq`` (``Library.changes_since``), so a process searching
a library that another process or machine writes (PostgreSQL) sees new faces at its next
refresh, and removed ones never again. Both engines search with FAISS in-process over the rows
they have read (Debian 12's PostgreSQL has no ``pgvector``; a server with it could search in the
database instead, which facecls does not do yet).

A large index (past ``exact_up_to`` faces: approximate, minutes to build) is saved: as
``LIB/vectors.index`` beside an embedded library, under the facecls cache for a server one. The
file carries the library's model key, its ``seq`` and a checksum of every face's id and
embedding (BLAKE2b). On open, the faces it holds that the library still has must match their
checksums, and those it lacks must have been removed since its ``seq``; then it catches up from
the change counter. A damaged file, another model's or another library's is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from facecls.data.sources import default_cache_dir
from facecls.library.store import Library, ModelKey
from facecls.vector_file import IndexFileError, Saved, read_saved, save_index
from facecls.vector_index import IndexSettings, VectorIndex, size_note

INDEX_NAME = "vectors.index"


def key_text(key: ModelKey | None) -> str:
    """The library's model key as the index file's model key."""
    return "" if key is None else json.dumps(asdict(key), sort_keys=True)


def face_checksums(ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """BLAKE2b (8 bytes) of each face's id and float32 embedding, as uint64 ``(N,)``."""
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    out = np.empty(len(ids), np.uint64)
    for n, (face, row) in enumerate(zip(np.asarray(ids, "<i8"), rows, strict=True)):
        digest = hashlib.blake2b(face.tobytes(), digest_size=8)
        digest.update(row.data)
        out[n] = int.from_bytes(digest.digest(), "little")
    return out


def default_path(library: Library) -> Path:
    """Where a library's index is saved (see the module notes)."""
    folder = getattr(library, "folder", None)
    if folder is not None:
        return Path(folder) / INDEX_NAME
    where = hashlib.sha256(library.location.encode()).hexdigest()[:24]
    return default_cache_dir() / "library-vectors" / f"{where}.index"


class LibraryVectors:
    """The vector index of one open library (see the module notes).

    Args:
        library: an open :class:`Library` (either engine).
        settings: the index's engine and limits.
        path: where the index is saved (default :func:`default_path`).
        log: where a rebuild is reported.
    """

    def __init__(
        self, library: Library, settings: IndexSettings | None = None, path: Path | None = None,
        log: Callable[[str], None] = print,
    ) -> None:  # fmt: skip
        self.library, self.settings, self.log = library, settings or IndexSettings(), log
        self.path = Path(path) if path is not None else default_path(library)
        self.index: VectorIndex | None = None
        self.seq = 0  # the library's change counter the index has caught up to
        self.model: ModelKey | None = None
        self.saved_seq = -1  # the seq of the file on disk (-1: none)
        self._lock = threading.RLock()  # a service's threads refresh and search one index
        self._noted = False  # past the largest size measured: said once

    def refresh(self) -> LibraryVectors:
        """Catch up with the library's writes since the last refresh."""
        with self._lock:
            if self.index is None:
                self._open()
            changes = self.library.changes_since(self.seq)
            if changes.model != self.model and self.model is not None:
                self.log(f"{self.library.location}: its embedding model changed; rebuilding "
                         "the vector index")  # fmt: skip
                self._build()
            else:
                self._apply(changes)
            note = size_note(len(self.index), self.settings) if self.index is not None else None
            if note and not self._noted:
                self.log(f"{self.library.location}: {note}")
                self._noted = True
        return self

    def _open(self) -> None:
        model = self.library.model_key()
        try:
            saved = read_saved(self.path, key_text(model), settings=self.settings)
            self._trust(saved, model)
        except IndexFileError as error:
            if self.path.exists():
                self.log(f"{self.path}: {error}; rebuilding the vector index")
            self._build()

    def _trust(self, saved: Saved, model: ModelKey | None) -> None:
        """Use a saved index once its faces check out against the library (module notes)."""
        seq = int(saved.header["extra"].get("seq", -1))
        if not 0 <= seq <= self.library.seq():
            raise IndexFileError("it belongs to another library (its change counter is ahead)")
        held, sums = saved.arrays.get("faces"), saved.arrays.get("checksums")
        if held is None or sums is None or not np.array_equal(held, np.sort(saved.index.ids)):
            raise IndexFileError("its face checksums are missing")
        changes = self.library.changes_since(seq)
        present = held[~np.isin(held, changes.removed)]
        ids, vectors = self._embeddings_of(present)
        if len(ids) != len(present):
            raise IndexFileError("faces it holds are gone from the library without a trace")
        if not np.array_equal(face_checksums(ids, vectors), sums[np.isin(held, present)]):
            raise IndexFileError("it was built from other embeddings (face checksums differ)")
        self.index, self.seq, self.model, self.saved_seq = saved.index, seq, model, seq

    def _embeddings_of(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The library's ids and embeddings of the faces ``wanted`` it has (read whole: a
        million ids do not fit in one SQL statement)."""
        ids, vectors = self.library.embeddings()
        keep = np.isin(ids, wanted)
        return ids[keep], vectors[keep]

    def _build(self) -> None:
        changes = self.library.changes_since(0)
        dim = changes.vectors.shape[1] if changes.vectors.ndim == 2 and len(changes.added) else 1
        self.index = VectorIndex(dim if changes.model is None else changes.model.dim,
                                 self.settings)  # fmt: skip
        self.seq, self.model = 0, changes.model
        self._apply(changes)

    def _apply(self, changes) -> None:  # noqa: ANN001 (store_types.Changes)
        assert self.index is not None
        if len(changes.removed):
            self.index.remove(changes.removed)
        fresh = ~np.isin(changes.added, self.index.ids)  # relabelled faces come again: skip
        if fresh.any():
            self.index.add(changes.vectors[fresh], changes.added[fresh])
        self.seq, self.model = changes.seq, changes.model

    def save(self, force: bool = False) -> bool:
        """Save the index (atomically) when it is approximate (or ``force``) and has changed
        since it was last saved; returns whether it was written."""
        with self._lock:
            if self.index is None or self.saved_seq == self.seq:
                return False
            if not force and self.index.engine == "exact":
                return False  # rebuilt from the embeddings in moments: not worth the disk
            held = np.sort(self.index.ids)
            ids, vectors = self._embeddings_of(held)
            if len(ids) != len(held):  # faces removed meanwhile: the next refresh saves
                return False
            save_index(self.index, self.path, key_text(self.model), "", extra={"seq": self.seq},
                       arrays={"faces": ids, "checksums": face_checksums(ids, vectors)})  # fmt: skip
            self.saved_seq = self.seq
            return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and face ids of the ``k`` faces nearest each unit query (best first)."""
        with self._lock:
            if self.index is None:
                self.refresh()
            assert self.index is not None
            return self.index.search(queries, k)

    def knn_graph(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each face's ``k`` nearest other faces: face ids, neighbour ids, scores."""
        with self._lock:
            if self.index is None:
                self.refresh()
            assert self.index is not None
            return self.index.knn_graph(k)
