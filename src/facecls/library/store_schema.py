"""The library's tables and how its face rows are written and read, in the SQL both
engines speak (:mod:`facecls.library.store` describes the tables)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from facecls.library.store_types import Face, NewFace

FACE_COLUMNS = (
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


NEW_FACE_COLUMNS = ("photo_id", "rank", "x1", "y1", "x2", "y2", "landmarks", "score", "size",
                     "embedding_row", "embedding", "ignored", "seq")  # fmt: skip


def face_row(
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


def face_record(row: tuple) -> Face:
    fid, pid, rank, x1, y1, x2, y2, marks, score, size, person, source, ignored = row
    points = None if marks is None else np.frombuffer(bytes(marks), "<f4").reshape(5, 2).copy()
    return Face(int(fid), int(pid), int(rank), (x1, y1, x2, y2), points, float(score), int(size),
                None if person is None else int(person), source, bool(ignored))  # fmt: skip


def face_filter(
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
