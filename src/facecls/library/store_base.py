"""The library's SQL, shared by both engines (:mod:`facecls.library.store` has the tables)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np

from facecls.library.store_labels import Labels
from facecls.library.store_types import (
    SCHEMA_VERSION,
    Changes,
    Face,
    FileRecord,
    FileStamp,
    LibraryError,
    ModelKey,
    NewFace,
    NewPhoto,
    facecls_version,
)

_FACE_COLUMNS = (
    "id, photo_id, rank, x1, y1, x2, y2, landmarks, score, size, person_id, source, ignored"
)


def tables(ids: str, blob: str) -> list[str]:
    """The library's tables in the SQL both engines speak; ``ids`` is the engine's
    auto-numbered primary key and ``blob`` its bytes type."""
    real = "DOUBLE PRECISION NOT NULL"
    return [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS photos (id {ids}, sha256 TEXT NOT NULL UNIQUE, "
        "width INTEGER NOT NULL, height INTEGER NOT NULL, faces INTEGER NOT NULL, "
        "seq BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, "
        "photo_id BIGINT REFERENCES photos (id), size BIGINT NOT NULL, "
        "mtime_ns BIGINT NOT NULL, error TEXT, seq BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS files_photo ON files (photo_id)",
        f"CREATE TABLE IF NOT EXISTS people (id {ids}, name TEXT, "
        "hidden SMALLINT NOT NULL DEFAULT 0, seq BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS faces (id {ids}, "
        "photo_id BIGINT NOT NULL REFERENCES photos (id), rank INTEGER NOT NULL, "
        f"x1 {real}, y1 {real}, x2 {real}, y2 {real}, landmarks {blob}, score {real}, "
        f"size INTEGER NOT NULL, embedding_row BIGINT, embedding {blob}, "
        "person_id BIGINT REFERENCES people (id), source TEXT, "
        "ignored SMALLINT NOT NULL DEFAULT 0, seq BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS faces_photo ON faces (photo_id)",
        "CREATE INDEX IF NOT EXISTS faces_person ON faces (person_id)",
        "CREATE INDEX IF NOT EXISTS faces_seq ON faces (seq)",
        "CREATE TABLE IF NOT EXISTS removed_faces (face_id BIGINT PRIMARY KEY, "
        "seq BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS removed_faces_seq ON removed_faces (seq)",
        f"CREATE TABLE IF NOT EXISTS actions (id {ids}, seq BIGINT NOT NULL, "
        "made_at TEXT NOT NULL, kind TEXT NOT NULL, description TEXT NOT NULL, "
        "undo TEXT NOT NULL, undone SMALLINT NOT NULL DEFAULT 0)",
    ]


class Library(Labels):
    """The face library (both engines). Use :func:`open_library`; close it, or use ``with``.

    Engines provide the connection primitives (``_rows``, ``_run``, ``_run_many``,
    ``_insert_ids``, ``_transaction``) and the embedding storage (``_stash_vectors``,
    ``_vectors``); the rest is here, in SQL both engines speak (``?`` placeholders).
    """

    engine = "abstract"
    location = ""

    # ---- engine primitives ---------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _insert_ids(self, table: str, columns: Sequence[str], rows: list[tuple]) -> list[int]:
        """Insert ``rows`` and answer their new ids, in order (inside a write)."""
        raise NotImplementedError

    def _begin(self, write: bool) -> None:
        raise NotImplementedError

    def _end(self, commit: bool) -> None:
        raise NotImplementedError

    def _translate(self, error: Exception) -> Exception | None:
        """The one-line error a database error means to a user, or ``None`` to let it be."""
        return None

    _guard: threading.RLock
    _depth = 0
    _writing = False

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[None]:
        """A transaction (nested calls join the outer one); one thread at a time."""
        with self._guard:
            if self._depth:
                if write and not self._writing:
                    raise RuntimeError("a library write cannot start inside a read snapshot")
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                self._begin(write)
            except Exception as error:
                raise self._translate(error) or error from error
            self._depth, self._writing = 1, write
            try:
                yield
            except BaseException as error:
                self._depth = 0
                self._end(commit=False)
                found = self._translate(error) if isinstance(error, Exception) else None
                if found is not None:
                    raise found from error
                raise
            self._depth = 0
            try:
                self._end(commit=True)
            except Exception as error:
                raise self._translate(error) or error from error

    def _stash_vectors(self, vectors: np.ndarray) -> list[tuple[int | None, bytes | None]]:
        """Store ``(n, D)`` vectors for faces being inserted in this write: the
        ``(embedding_row, embedding)`` values of each."""
        raise NotImplementedError

    def _vectors(self, rows: list[tuple[Any, Any]]) -> np.ndarray:
        """``(n, D)`` float32 from ``(embedding_row, embedding)`` column pairs."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection (and the embeddings map)."""

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({self.engine}: {self.location})"

    # ---- transactions and meta ------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[int]:
        """One write transaction (serialised with every other writer); yields its ``seq``."""
        with self._transaction(write=True):
            seq = int(self._rows("SELECT value FROM meta WHERE key = 'seq'")[0][0]) + 1
            self._run("UPDATE meta SET value = ? WHERE key = 'seq'", (str(seq),))
            yield seq

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A consistent snapshot for several reads (nested inside a write it is that write)."""
        with self._transaction(write=False):
            yield

    def _meta(self, key: str) -> str | None:
        found = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return found[0][0] if found else None

    def _set_meta(self, key: str, value: str) -> None:
        self._run("DELETE FROM meta WHERE key = ?", (key,))
        self._run("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))

    def seq(self) -> int:
        """The change counter: it grows with every committed write."""
        return int(self._meta("seq") or 0)

    def _check_schema(self) -> None:
        """Refuse a library written by a newer facecls (one line, with its version)."""
        found = int(self._meta("schema_version") or 0)
        if found > SCHEMA_VERSION:
            raise LibraryError(
                f"{self.location}: this library was written by facecls "
                f"{self._meta('facecls_version') or '?'} (library schema {found}); this facecls "
                f"({facecls_version()}) reads schema {SCHEMA_VERSION} and older: upgrade facecls"
            )

    def _setup(self, create: bool, ids: str, blob: str) -> None:
        """Make the tables of a new library (``create``), then check the schema's version.

        Raises:
            LibraryError: no library there and not ``create``; a newer facecls's library.
        """
        with self._transaction(write=create):
            exists = self._has_meta()
            if not exists and not create:
                raise LibraryError(
                    f"{self.location}: no face library there; make one with facecls index "
                    f"PHOTOS --library {self.location}"
                )
            if not exists:
                for statement in tables(ids, blob):
                    self._run(statement)
                self._run_many("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("facecls_version", facecls_version()),
                    ("seq", "0"), ("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
                ])  # fmt: skip
            self._check_schema()

    def _has_meta(self) -> bool:
        """Whether the library's tables exist."""
        raise NotImplementedError

    def model_key(self) -> ModelKey | None:
        """The model the library's embeddings come from; ``None`` before the first face."""
        text = self._meta("model")
        return None if not text else ModelKey(**json.loads(text))

    def claim_model(self, key: ModelKey) -> None:
        """Make ``key`` the library's model, or refuse one that differs from its own.

        Raises:
            LibraryError: the library holds embeddings of another model.
        """
        with self.writing():
            own = self.model_key()
            if own is None:
                self._set_meta("model", json.dumps(asdict(key)))
                self._model_claimed(key)
            elif own != key:
                raise LibraryError(
                    f"{self.location}: the library was indexed with {own.describe()}, not "
                    f"{key.describe()}; index with that model, or re-embed the library with "
                    "--reembed (its embeddings are never mixed)"
                )

    def _model_claimed(self, key: ModelKey) -> None:
        """Engine hook: the first model was set (the SQLite engine sizes its file)."""

    # ---- files and photos -----------------------------------------------------------------
    def files(self, under: Sequence[str] | None = None) -> dict[str, FileRecord]:
        """Every path the library knows (those starting with one of ``under``), by path."""
        rows = self._rows("SELECT path, size, mtime_ns, photo_id, error FROM files")
        records = {r[0]: FileRecord(r[0], int(r[1]), int(r[2]), r[3], r[4]) for r in rows}
        if under is not None:
            prefixes = tuple(under)
            records = {p: r for p, r in records.items() if p.startswith(prefixes)}
        return records

    def contents(self) -> set[str]:
        """The sha256 of every photo the library holds."""
        return {r[0] for r in self._rows("SELECT sha256 FROM photos")}

    def photo_of(self, sha256: str) -> int | None:
        """The photo with this content, if the library has it."""
        found = self._rows("SELECT id FROM photos WHERE sha256 = ?", (sha256,))
        return int(found[0][0]) if found else None

    def photo(self, photo_id: int) -> dict[str, Any]:
        """A photo's ``sha256``, ``width``, ``height``, ``faces`` and its ``paths``."""
        found = self._rows(
            "SELECT sha256, width, height, faces FROM photos WHERE id = ?", (photo_id,)
        )
        if not found:
            raise KeyError(f"no photo {photo_id} in {self.location}")
        paths = self._rows("SELECT path FROM files WHERE photo_id = ? ORDER BY path", (photo_id,))
        sha, width, height, faces = found[0]
        return {"sha256": sha, "width": int(width), "height": int(height), "faces": int(faces),
                "paths": [p[0] for p in paths]}  # fmt: skip

    def add_photos(self, photos: Sequence[NewPhoto], errors: Sequence[tuple[FileStamp, str]] = (),
                   known: Sequence[tuple[FileStamp, str]] = ()) -> int:  # fmt: skip
        """Store photos with their faces and files, in one transaction.

        Args:
            photos: new contents; one whose sha256 the library already has (another process
                stored it meanwhile) only gains its files.
            errors: files that could not be read, with the reason.
            known: files whose content (sha256) the library already has.

        Returns:
            The transaction's ``seq``.
        """
        with self.writing() as seq:
            new = [p for p in photos if self.photo_of(p.sha256) is None]
            ids = self._insert_ids(
                "photos", ("sha256", "width", "height", "faces", "seq"),
                [(p.sha256, p.width, p.height, len(p.faces), seq) for p in new],
            )  # fmt: skip
            faces = [(pid, rank, f) for pid, p in zip(ids, new, strict=True)
                     for rank, f in enumerate(p.faces)]  # fmt: skip
            if faces:
                vectors = np.stack([f.embedding for _, _, f in faces]).astype(np.float32)
                stored = self._stash_vectors(vectors)
                self._insert_ids("faces", _NEW_FACE_COLUMNS, [
                    _face_row(pid, rank, face, vec, seq)
                    for (pid, rank, face), vec in zip(faces, stored, strict=True)
                ])  # fmt: skip
            links = [(f, self.photo_of(p.sha256)) for p in photos for f in p.files]
            links += [(f, self.photo_of(sha)) for f, sha in known]
            self._put_files([(f, pid, None) for f, pid in links], seq)
            self._put_files([(f, None, reason) for f, reason in errors], seq)
            return seq

    def _put_files(self, rows: list[tuple[FileStamp, int | None, str | None]], seq: int) -> None:
        if not rows:
            return
        paths = [(f.path,) for f, _, _ in rows]
        before = self._photos_of_paths([p for (p,) in paths])
        self._run_many("DELETE FROM files WHERE path = ?", paths)
        self._run_many(
            "INSERT INTO files (path, photo_id, size, mtime_ns, error, seq) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(f.path, pid, f.size, f.mtime_ns, error, seq) for f, pid, error in rows],
        )
        self._drop_orphans(before, seq)  # a path that now holds other content

    def _photos_of_paths(self, paths: list[str]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(paths), 500):
            part = paths[start : start + 500]
            marks = ", ".join("?" * len(part))
            found |= {
                int(r[0]) for r in self._rows(
                    f"SELECT photo_id FROM files WHERE path IN ({marks}) AND photo_id IS NOT NULL",
                    part,
                )
            }  # fmt: skip
        return found

    def drop_files(self, paths: Sequence[str]) -> int:
        """Forget paths (deleted files); a photo left with no path loses its faces.

        Returns:
            The number of faces dropped.
        """
        if not paths:
            return 0
        with self.writing() as seq:
            before = self._photos_of_paths(list(paths))
            self._run_many("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
            return self._drop_orphans(before, seq)

    def _drop_orphans(self, photo_ids: set[int], seq: int) -> int:
        """Delete those of ``photo_ids`` no file holds any more, with their faces."""
        orphans = [
            pid for pid in sorted(photo_ids)
            if not self._rows("SELECT 1 FROM files WHERE photo_id = ? LIMIT 1", (pid,))
        ]  # fmt: skip
        dropped = 0
        for pid in orphans:
            faces = [int(r[0]) for r in self._rows("SELECT id FROM faces WHERE photo_id = ?",
                                                   (pid,))]  # fmt: skip
            self._run_many("INSERT INTO removed_faces (face_id, seq) VALUES (?, ?)",
                           [(f, seq) for f in faces])  # fmt: skip
            self._run("DELETE FROM faces WHERE photo_id = ?", (pid,))
            self._run("DELETE FROM photos WHERE id = ?", (pid,))
            dropped += len(faces)
        return dropped

    # ---- faces and embeddings ---------------------------------------------------------------
    def faces(
        self, photo_id: int | None = None, person_id: int | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[Face]:  # fmt: skip
        """Stored faces (all, or of one photo, one person, or the given ids), by id."""
        where, params = _face_filter(photo_id, person_id, ids)
        rows = self._rows(f"SELECT {_FACE_COLUMNS} FROM faces{where} ORDER BY id", params)
        return [_face(r) for r in rows]

    def face_count(self) -> int:
        """Faces in the library."""
        return int(self._rows("SELECT COUNT(*) FROM faces")[0][0])

    def face_table(self) -> dict[str, np.ndarray]:
        """Every face as columns (for clustering a large library): ``id``, ``photo_id``,
        ``rank``, ``score``, ``size``, ``person_id`` (-1 for none), ``ignored``, ``human`` (the
        label is a person's), by id."""
        rows = self._rows(
            "SELECT id, photo_id, rank, score, size, person_id, ignored, source FROM faces "
            "ORDER BY id"
        )
        columns = list(zip(*rows, strict=True)) if rows else [()] * 8
        ints = {"id": 0, "photo_id": 1, "rank": 2, "size": 4}
        table = {name: np.asarray(columns[i], np.int64) for name, i in ints.items()}
        table["score"] = np.asarray(columns[3], np.float64)
        table["person_id"] = np.asarray([-1 if p is None else p for p in columns[5]], np.int64)
        table["ignored"] = np.asarray(columns[6], bool)
        table["human"] = np.asarray([s == "human" for s in columns[7]], bool)
        return table

    def embeddings(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Face ids ``(n,)`` int64 and their unit embeddings ``(n, D)`` float32, by id (all
        faces, or those of ``ids`` that exist)."""
        where, params = _face_filter(None, None, ids)
        with self.reading():
            rows = self._rows(f"SELECT id, embedding_row, embedding FROM faces{where} "
                              "ORDER BY id", params)  # fmt: skip
            vectors = self._vectors([(r[1], r[2]) for r in rows])
        return np.asarray([r[0] for r in rows], np.int64), vectors

    def changes_since(self, seq: int) -> Changes:
        """Faces added and removed after ``seq`` (0: everything), for a vector index."""
        with self.reading():
            now = self.seq()
            rows = self._rows("SELECT id, embedding_row, embedding FROM faces WHERE seq > ? "
                              "ORDER BY id", (seq,))  # fmt: skip
            vectors = self._vectors([(r[1], r[2]) for r in rows])
            removed = self._rows(
                "SELECT face_id FROM removed_faces WHERE seq > ? ORDER BY face_id", (seq,)
            )
            return Changes(
                now, self.model_key(), np.asarray([r[0] for r in rows], np.int64), vectors,
                np.asarray([r[0] for r in removed], np.int64),
            )  # fmt: skip

    def wait_for_change(self, seq: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a write after ``seq``; answers the ``seq`` now."""
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """Photos, files, unreadable files, faces and people (named and not)."""
        one = {
            "photos": "SELECT COUNT(*) FROM photos",
            "files": "SELECT COUNT(*) FROM files WHERE error IS NULL",
            "unreadable": "SELECT COUNT(*) FROM files WHERE error IS NOT NULL",
            "faces": "SELECT COUNT(*) FROM faces",
            "people": "SELECT COUNT(*) FROM people WHERE name IS NOT NULL",
            "clusters": "SELECT COUNT(*) FROM people WHERE name IS NULL",
        }
        with self.reading():
            return {name: int(self._rows(sql)[0][0]) for name, sql in one.items()}


_NEW_FACE_COLUMNS = ("photo_id", "rank", "x1", "y1", "x2", "y2", "landmarks", "score", "size",
                     "embedding_row", "embedding", "ignored", "seq")  # fmt: skip


def _face_row(
    photo_id: int, rank: int, face: NewFace, stored: tuple[int | None, bytes | None], seq: int
) -> tuple:
    x1, y1, x2, y2 = (float(v) for v in face.box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, face.score)):
        raise ValueError(f"a face box or score is not finite: {face.box}, {face.score}")
    marks = None
    if face.landmarks is not None:
        marks = np.asarray(face.landmarks, "<f4").reshape(5, 2).tobytes()
    size = max(1, round(max(x2 - x1, y2 - y1)))
    return (photo_id, rank, x1, y1, x2, y2, marks, float(face.score), size, *stored, 0, seq)


def _face(row: tuple) -> Face:
    fid, pid, rank, x1, y1, x2, y2, marks, score, size, person, source, ignored = row
    points = None if marks is None else np.frombuffer(bytes(marks), "<f4").reshape(5, 2).copy()
    return Face(int(fid), int(pid), int(rank), (x1, y1, x2, y2), points, float(score), int(size),
                None if person is None else int(person), source, bool(ignored))  # fmt: skip


def _face_filter(
    photo_id: int | None, person_id: int | None, ids: Sequence[int] | None
) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if photo_id is not None:
        clauses.append("photo_id = ?")
        params.append(int(photo_id))
    if person_id is not None:
        clauses.append("person_id = ?")
        params.append(int(person_id))
    if ids is not None:
        wanted = sorted({int(i) for i in ids}) or [-1]
        clauses.append(f"id IN ({', '.join('?' * len(wanted))})")
        params.extend(wanted)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
