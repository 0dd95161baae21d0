"""The embedded library engine: ``LIB/library.sqlite`` plus the embeddings beside it.

The embeddings are one float32 file (``LIB/embeddings.f32``, rows of the model's dimension,
little-endian, no header) read through a memory map. It is append-only: a write transaction,
holding SQLite's write lock, writes its rows after the committed ones, fsyncs them, and then
records the faces that point at them and the new committed row count in the same SQLite
transaction. A process killed at any point leaves the committed rows and count as they were;
rows past the count are ignored and overwritten by the next write.

The database runs in WAL mode: readers (the service, another index) go on while one process
writes, and a second writer waits for the first (up to ``timeout`` seconds, then one line).
WAL needs a local disk (not a network share). A library on a read-only disk opens for reading.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facecls.atomic import WriteError
from facecls.data.library_tables import DB_NAME
from facecls.library.store_base import Library
from facecls.library.store_types import LibraryError, ModelKey

EMBEDDINGS_NAME = "embeddings.f32"
# What may sit in a library folder (the database, SQLite's own files, the embeddings, the vector
# indexes): anything else in a folder without a database means it is someone's folder, not ours.
_OURS = ("library.", "embeddings", "vectors")


class SQLiteLibrary(Library):
    """A face library in a folder (see the module notes)."""

    engine = "sqlite"

    def __init__(self, folder: Path, create: bool, writable: bool, timeout: float) -> None:
        self.folder, self.location, self.timeout = folder, str(folder), timeout
        self._guard = threading.RLock()
        # The memory map, keyed by the file and its committed rows: a re-embedding in another
        # process swaps the file and may keep the row count.
        self._map: tuple[tuple[str, int], np.ndarray] | None = None
        db = folder / DB_NAME
        if not db.is_file():
            _make_folder(folder, create)
        self.writable = writable and os.access(folder, os.W_OK)
        if writable and not self.writable:
            raise LibraryError(
                f"{folder}: the library folder is read-only; facecls needs to write there "
                "(move the library to a writable disk, or open it only to read)"
            )
        mode = "rwc" if self.writable else "ro"
        if not os.access(folder, os.W_OK) and not (folder / f"{DB_NAME}-wal").exists():
            mode = "ro&immutable=1"  # read-only media: no lock files can be made there
        uri = f"file:{urllib.parse.quote(str(db))}?mode={mode}"
        try:
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                                       check_same_thread=False)  # fmt: skip
            if self.writable:
                self._db.execute("PRAGMA journal_mode = WAL")
                # WAL with synchronous NORMAL: a killed process loses nothing committed; a
                # power cut may lose the last commits but never leaves a torn library.
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as error:
            raise self._translate(error) or error from error
        self._setup(create and self.writable, "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB")
        if self.writable and len(list(folder.glob("embeddings*.f32"))) > 1:
            with self._transaction(write=True):  # no re-embedding between its file and commit
                self._forget_old_files()

    # ---- connection primitives ---------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._guard:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._guard:
            self._db.execute(sql, tuple(params))

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._guard:
            self._db.executemany(sql, [tuple(r) for r in rows])

    def _insert_ids(self, table: str, columns: Sequence[str], rows: list[tuple]) -> list[int]:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        with self._guard:
            return [int(self._db.execute(sql, row).lastrowid or 0) for row in rows]

    def _begin(self, write: bool) -> None:
        self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _end(self, commit: bool) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT" if commit else "ROLLBACK")

    def _has_meta(self) -> bool:
        return bool(
            self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        )

    def _translate(self, error: Exception) -> Exception | None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return _full(self.folder)
        if not isinstance(error, sqlite3.Error):
            return None
        text = str(error)
        if "locked" in text or "busy" in text:
            return LibraryError(
                f"{self.folder}: another process has been writing to this library for "
                f"{self.timeout:.0f} s; try again when it is done"
            )
        if "full" in text:
            return _full(self.folder)
        if "readonly" in text or "read-only" in text:
            return LibraryError(f"{self.folder}: the library is on a read-only disk; "
                                "facecls needs to write there")  # fmt: skip
        if "not a database" in text or "malformed" in text:
            return LibraryError(f"{self.folder / DB_NAME}: not a facecls library or damaged "
                                f"({text})")  # fmt: skip
        if "unable to open" in text:
            return LibraryError(f"{self.folder / DB_NAME}: cannot open the library ({text})")
        return None

    def close(self) -> None:
        with self._guard:
            self._map = None
            self._db.close()

    # ---- embeddings ---------------------------------------------------------------------------
    def _model_claimed(self, key: ModelKey) -> None:
        self._set_meta("embeddings_file", EMBEDDINGS_NAME)
        self._set_meta("embeddings_rows", "0")

    def _embedding_file(self) -> tuple[Path, int, int]:
        """The embeddings file, its committed rows and the dimension (inside a transaction)."""
        key = self.model_key()
        if key is None:
            return self.folder / EMBEDDINGS_NAME, 0, 0
        name = self._meta("embeddings_file") or EMBEDDINGS_NAME
        return self.folder / name, int(self._meta("embeddings_rows") or 0), key.dim

    def _stash_vectors(self, vectors: np.ndarray) -> list[tuple[int | None, bytes | None]]:
        path, committed, dim = self._embedding_file()
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise ValueError(f"embeddings of shape {vectors.shape} for a {dim}-d library")
        data = np.ascontiguousarray(vectors, "<f4").tobytes()
        try:
            with open(path, "r+b" if path.exists() else "w+b") as f:
                f.seek(committed * dim * 4)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the rows are on disk before the faces pointing at them
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise _full(self.folder) from error
            raise
        self._set_meta("embeddings_rows", str(committed + len(vectors)))
        return [(committed + i, None) for i in range(len(vectors))]

    def _replace_vectors(self, ids: np.ndarray, vectors: np.ndarray, dim: int) -> None:
        """A new embeddings file, named by this write's seq, made whole before the faces point
        at it; the old one is deleted once no committed write names it (the next open)."""
        name = f"embeddings-{self.seq()}.f32"
        try:
            with open(self.folder / name, "wb") as f:
                f.write(np.ascontiguousarray(vectors, "<f4").tobytes())
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:
            (self.folder / name).unlink(missing_ok=True)
            if error.errno == errno.ENOSPC:
                raise _full(self.folder) from error
            raise
        self._run_many("UPDATE faces SET embedding_row = ? WHERE id = ?",
                       [(row, int(i)) for row, i in enumerate(ids)])  # fmt: skip
        self._set_meta("embeddings_file", name)
        self._set_meta("embeddings_rows", str(len(ids)))
        self._map = None

    def _forget_old_files(self) -> None:
        """Delete embeddings files no committed write names (a re-embedding's old one, or the
        new one of a re-embedding killed before it committed)."""
        current = self._meta("embeddings_file") or EMBEDDINGS_NAME
        for path in self.folder.glob("embeddings*.f32"):
            if path.name != current:
                path.unlink(missing_ok=True)

    def _vectors(self, rows: list[tuple[Any, Any]]) -> np.ndarray:
        path, committed, dim = self._embedding_file()
        if not rows:
            return np.zeros((0, dim), np.float32)
        if self._map is None or self._map[0] != (path.name, committed):
            self._map = ((path.name, committed), np.memmap(path, "<f4", "r",
                                                           shape=(committed, dim)))  # fmt: skip
        index = np.asarray([r[0] for r in rows], np.int64)
        return np.asarray(self._map[1][index], np.float32)

    def wait_for_change(self, seq: int, timeout: float) -> int:
        end = time.monotonic() + timeout
        while True:
            now = self.seq()
            if now > seq or time.monotonic() >= end:
                return now
            time.sleep(0.02)


def _full(folder: Path) -> WriteError:
    return WriteError(
        errno.ENOSPC,
        f"no space left on the disk of {folder}; the library keeps everything committed before "
        "and nothing of the last write (free some space and run the command again)",
    )


def _make_folder(folder: Path, create: bool) -> None:
    """Make a new library folder (refusing someone's non-empty folder), or say there is none."""
    if not create:
        raise LibraryError(
            f"{folder}: no face library there; make one with facecls index PHOTOS --library "
            f"{folder}"
        )
    if folder.exists() and not folder.is_dir():
        raise LibraryError(f"{folder}: is a file; a library is a folder (give a new folder)")
    if folder.is_dir() and any(not p.name.startswith(_OURS) for p in folder.iterdir()):
        raise LibraryError(
            f"{folder}: this folder holds other files and no library; give a new or empty "
            "folder for the library (it is never the photos' folder)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _full(folder) from error
        raise LibraryError(
            f"{folder}: cannot make the library folder ({error.strerror or error})"
        ) from error
