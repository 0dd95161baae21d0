"""The face library's database: one interface, two engines.

``open_library(LIB)`` answers a :class:`Library`. ``LIB`` is a folder (the embedded engine,
:mod:`facecls.library.store_sqlite`: ``LIB/library.sqlite`` and the embeddings in a
memory-mapped float32 file beside it) or a ``postgresql://`` URL (the server engine,
:mod:`facecls.library.store_pg`: the same tables, the embeddings in the faces table, so several
processes and machines share one library). Everything above this module talks to
:class:`Library` only.

Tables (the same in both engines; ``docs/library.md`` shows them with their types)::

    meta     key, value                 schema version, facecls version, the embedding model's
                                        key (:class:`ModelKey`), the change counter, and for
                                        SQLite the embeddings file and its committed row count
    photos   id, sha256 (unique), width, height, faces, seq
                                        one row per distinct content: two copies share it
    files    path (key), photo_id, size, mtime_ns, error, seq
                                        every path seen; photo_id NULL and error set when the
                                        file could not be read
    faces    id, photo_id, rank, x1 y1 x2 y2, landmarks, score, size, embedding_row,
             embedding, person_id, source, ignored, seq
                                        rank 0 is the photo's main face; size is the box's
                                        longer side in photo pixels; embedding_row (SQLite)
                                        or embedding (PostgreSQL, float32 bytes) holds the
                                        vector; source is human, cluster or suggestion
    people   id, name (NULL: an unnamed cluster), hidden, seq
    removed_faces  face_id, seq         faces dropped, so vector indexes can follow
    actions  id, seq, at, kind, description, undo, undone
                                        the label actions, each with what undoes it

Every write is one transaction that bumps the change counter ``seq``; rows carry the ``seq``
of the transaction that wrote them, so another process catches up with
:meth:`Library.changes_since`. Writers are serialised (SQLite's write lock, a row lock on the
counter in PostgreSQL): a second writer waits, nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

from facecls.data.library_tables import is_server_url
from facecls.library.store_base import Library
from facecls.library.store_pg import PostgresLibrary
from facecls.library.store_sqlite import SQLiteLibrary
from facecls.library.store_types import (
    SCHEMA_VERSION,
    SOURCES,
    Changes,
    Face,
    FileRecord,
    FileStamp,
    LibraryError,
    ModelKey,
    NewFace,
    NewPhoto,
    Person,
)

__all__ = [
    "SCHEMA_VERSION",
    "SOURCES",
    "Changes",
    "Face",
    "FileRecord",
    "FileStamp",
    "Library",
    "LibraryError",
    "ModelKey",
    "NewFace",
    "NewPhoto",
    "Person",
    "is_server_url",
    "open_library",
]


def open_library(
    location: str | Path, create: bool = False, writable: bool = True, timeout: float = 300.0
) -> Library:
    """Open (or with ``create`` make) the face library at a folder or ``postgresql://`` URL.

    Args:
        location: ``LIB`` as the user gave it.
        create: make the library when it does not exist yet.
        writable: refuse a library that cannot be written (a read-only disk) right away.
        timeout: seconds a writer waits for another process's write (SQLite's lock).

    Raises:
        LibraryError: no library there (without ``create``), a newer facecls's library, a
            read-only folder, a server that does not answer or refuses the login.
    """
    if is_server_url(location):
        return PostgresLibrary(str(location), create, timeout)
    return SQLiteLibrary(Path(location).expanduser(), create, writable, timeout)
