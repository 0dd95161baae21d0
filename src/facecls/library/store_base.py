"""The library's SQL, shared by both engines (:mod:`facecls.library.store` has the tables)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from facecls.library.store_labels import Labels
from facecls.library.store_schema import (
    FACE_COLUMNS,
    NEW_FACE_COLUMNS,
    face_filter,
    face_record,
    face_row,
    tables,
)
from facecls.library.store_types import (
    SCHEMA_VERSION,
    Changes,
    Face,
    FileRecord,
    FileStamp,
    LibraryError,
    ModelKey,
    NewPhoto,
    facecls_version,
)


class Library(Labels):
    """The face library (both engines). Use :func:`open_library`; close it, or use ``with``.

    Engines provide the connection primitives (``_rows``, ``_run``, ``_run_many``,
    ``_insert_ids``, ``_transaction``) and the embedding storage (``_stash_vectors``,
    ``_vectors``); the rest is here, in SQL both engines speak (``?`` placeholders).
    """

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({self.engine}: {self.location})"

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

    def replace_embeddings(self, key: ModelKey, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Every face's embedding from another model, and that model's key, in one transaction
        (re-embedding: :func:`facecls.library.reembed.reembed_library`). Each face is marked
        changed, so vector indexes rebuild.

        Raises:
            ValueError: ``ids`` are not exactly the library's faces, or the shapes disagree.
        """
        ids = np.asarray(ids, np.int64)
        if vectors.shape != (len(ids), key.dim):
            raise ValueError(f"{len(ids)} ids and vectors of shape {vectors.shape} for {key.dim}-d")
        with self.writing() as seq:
            have = {int(r[0]) for r in self._rows("SELECT id FROM faces")}
            if have != set(ids.tolist()):
                raise ValueError("re-embedding must give every face of the library, once")
            self._set_meta("model", json.dumps(asdict(key)))
            self._replace_vectors(ids, np.ascontiguousarray(vectors, np.float32), key.dim)
            self._run("UPDATE faces SET seq = ?", (seq,))

    def _replace_vectors(self, ids: np.ndarray, vectors: np.ndarray, dim: int) -> None:
        """Engine hook: store ``vectors`` as the faces' ``ids``' embeddings (inside a write)."""
        raise NotImplementedError

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

    def _photo_ids(self, shas: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(shas), 500):
            part = shas[start : start + 500]
            marks = ", ".join("?" * len(part))
            found.update({sha: int(pid) for sha, pid in self._rows(
                f"SELECT sha256, id FROM photos WHERE sha256 IN ({marks})", part)})  # fmt: skip
        return found

    def photo_paths(self) -> dict[int, tuple[str, list[str]]]:
        """Every photo's sha256 and paths, by photo id."""
        out: dict[int, tuple[str, list[str]]] = {
            int(pid): (sha, []) for pid, sha in self._rows("SELECT id, sha256 FROM photos")
        }
        for path, pid in self._rows(
            "SELECT path, photo_id FROM files WHERE photo_id IS NOT NULL ORDER BY path"
        ):
            out[int(pid)][1].append(path)
        return out

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
            shas = {p.sha256 for p in photos} | {sha for _, sha in known}
            stored = self._photo_ids(sorted(shas))
            new = list({p.sha256: p for p in photos if p.sha256 not in stored}.values())
            ids = self._insert_ids(
                "photos", ("sha256", "width", "height", "faces", "seq"),
                [(p.sha256, p.width, p.height, len(p.faces), seq) for p in new],
            )  # fmt: skip
            stored.update({p.sha256: pid for p, pid in zip(new, ids, strict=True)})
            faces = [(pid, rank, f) for pid, p in zip(ids, new, strict=True)
                     for rank, f in enumerate(p.faces)]  # fmt: skip
            if faces:
                vectors = np.stack([f.embedding for _, _, f in faces]).astype(np.float32)
                kept = self._stash_vectors(vectors)
                self._insert_ids("faces", NEW_FACE_COLUMNS, [
                    face_row(pid, rank, face, vec, seq)
                    for (pid, rank, face), vec in zip(faces, kept, strict=True)
                ])  # fmt: skip
            links = [(f, stored[p.sha256]) for p in photos for f in p.files]
            links += [(f, stored[sha]) for f, sha in known if sha in stored]
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
        where, params = face_filter(photo_id, person_id, ids)
        rows = self._rows(f"SELECT {FACE_COLUMNS} FROM faces{where} ORDER BY id", params)
        return [face_record(r) for r in rows]

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
        where, params = face_filter(None, None, ids)
        with self.reading():
            rows = self._rows(f"SELECT id, embedding_row, embedding FROM faces{where} "
                              "ORDER BY id", params)  # fmt: skip
            vectors = self._vectors([(r[1], r[2]) for r in rows])
        return np.asarray([r[0] for r in rows], np.int64), vectors

    def changes_since(self, seq: int) -> Changes:
        """Faces added and removed after ``seq`` (0: everything), for a vector index."""
        with self.reading():
            now = self.seq()
            # No ORDER BY: SQLite would walk every face in id order rather than use the seq
            # index (0.4 s at a million faces); the few new rows are sorted here instead.
            rows = sorted(self._rows(
                "SELECT id, embedding_row, embedding FROM faces WHERE seq > ?", (seq,)))  # fmt: skip
            vectors = self._vectors([(r[1], r[2]) for r in rows])
            removed = sorted(self._rows("SELECT face_id FROM removed_faces WHERE seq > ?", (seq,)))
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
