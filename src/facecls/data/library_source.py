"""A face library as a training source: ``--data LIB`` trains on the faces people have named.

``LIB`` is a library folder (``LIB/library.sqlite``) or a ``postgresql://`` URL, as ``facecls
index`` made it. One read-only query takes every face of a named person who is not forgotten
(hidden), leaving out ignored faces and a model's suggestions: the labels people gave, and the
faces clustering put with a person they named. Each face becomes an :class:`ImageRef` of its
photo that carries the face's box and landmarks, so the decode cache cuts that face (not the
photo's main one) with the model's pipeline, once.

``data/`` does not import ``library/`` (the layout test guards it); the table names and the
schema version both read are in :mod:`facecls.data.library_tables`.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facecls.data.library_tables import (
    DB_NAME,
    SCHEMA_VERSION,
    PhotoFiles,
    is_server_url,
    redact,
)
from facecls.data.sources import DataError, ImageRef, Scan, scan_source

# The named faces, with the first readable path of their photo (two copies share a photo).
NAMED_FACES = (
    "SELECT f.id, f.x1, f.y1, f.x2, f.y2, f.landmarks, p.name, "
    "(SELECT MIN(path) FROM files WHERE files.photo_id = f.photo_id AND files.error IS NULL) "
    "FROM faces f JOIN people p ON p.id = f.person_id "
    "WHERE p.name IS NOT NULL AND p.hidden = 0 AND f.ignored = 0 "
    "AND (f.source IS NULL OR f.source <> 'suggestion') ORDER BY p.name, f.id"
)
# The faces of forgotten (hidden) people and clusters, for ``--strangers LIB``: people the user
# said are not ones they care about, each a stranger (a named one by name, a cluster by number).
FORGOTTEN_FACES = (
    "SELECT f.id, f.x1, f.y1, f.x2, f.y2, f.landmarks, "
    "COALESCE(p.name, 'cluster ' || CAST(p.id AS TEXT)), "
    "(SELECT MIN(path) FROM files WHERE files.photo_id = f.photo_id AND files.error IS NULL) "
    "FROM faces f JOIN people p ON p.id = f.person_id "
    "WHERE p.hidden = 1 AND f.ignored = 0 "
    "AND (f.source IS NULL OR f.source <> 'suggestion') ORDER BY p.id, f.id"
)
VERSION = "SELECT value FROM meta WHERE key = 'schema_version'"
# The sources that are names, not paths.
BUILT_IN = ("lfw", "synthetic")


def is_library(source: str) -> bool:
    """Whether ``--data`` names a face library (a folder holding one, or a server URL)."""
    return is_server_url(source) or (Path(source).expanduser() / DB_NAME).is_file()


def _sqlite_rows(folder: Path, query: str = NAMED_FACES) -> list[tuple]:
    uri = f"file:{urllib.parse.quote(str(folder / DB_NAME))}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True, timeout=60) as db:
            return _checked(db.execute(VERSION).fetchall(), str(folder), db.execute, query)
    except sqlite3.Error as error:
        raise DataError(f"{folder}: cannot read the face library ({error})") from error


def _server_rows(url: str, query: str = NAMED_FACES) -> list[tuple]:
    try:
        import psycopg
    except ImportError as error:
        raise DataError(
            "a postgresql:// library needs psycopg 3: pip install 'facecls[postgresql]'"
        ) from error
    shown = redact(url)
    try:
        with psycopg.connect(url, connect_timeout=10) as db:
            db.read_only = True

            def run(sql: str) -> object:
                return db.execute(sql)

            return _checked(db.execute(VERSION).fetchall(), shown, run, query)
    except psycopg.Error as error:
        raise DataError(f"{shown}: cannot read the face library ({error})") from error


def _checked(version: list[tuple], where: str, run, query: str) -> list[tuple]:
    found = int(version[0][0]) if version else 0
    if found > SCHEMA_VERSION:
        raise DataError(
            f"{where}: the library was written by a newer facecls (library schema {found}; "
            f"this facecls reads {SCHEMA_VERSION} and older): upgrade facecls"
        )
    return list(run(query).fetchall())


def scan_library(source: str, cache_dir: Path, forgotten: bool = False) -> Scan:
    """The named faces of the library ``source`` as image references (see the module notes);
    faces whose photo is no longer readable are listed as skipped. Photos inside archives are
    read from the archive's extraction in ``cache_dir``. With ``forgotten``: the faces of the
    people and clusters the user forgot instead (strangers, one identity each)."""
    files = PhotoFiles(cache_dir)
    query = FORGOTTEN_FACES if forgotten else NAMED_FACES
    if is_server_url(source):
        rows, root = _server_rows(source, query), Path()
    else:
        root = Path(source).expanduser()
        rows = _sqlite_rows(root, query)
    scan = Scan("library", redact(source), root)
    for face_id, x1, y1, x2, y2, marks, name, path in rows:
        where = (float(x1), float(y1), float(x2), float(y2))
        if marks is not None:
            where += tuple(float(v) for v in np.frombuffer(bytes(marks), "<f4"))
        relpath = f"{name}/{Path(path).name if path else '?'}#{face_id}"
        file = None if path is None else files(path)
        if file is None:
            reason = "its photo is gone" if path else "no readable file holds its photo"
            scan.skipped.append({"path": relpath, "reason": f"face {face_id}: {reason}"})
            continue
        scan.refs.append(ImageRef(file, relpath, name, face=where))
    if not scan.refs and forgotten and scan.skipped:
        raise DataError(
            f"{scan.location}: the {len(scan.skipped)} faces of the forgotten people are all in "
            "photos that can no longer be read"
        )
    if not scan.refs and forgotten:
        raise DataError(
            f"{scan.location}: no forgotten people in the library to play strangers; forget the "
            "people the model must not name first (facecls people LIB forget CLUSTER)"
        )
    if not scan.refs:
        raise DataError(
            f"{scan.location}: no named faces in the library; name people first (facecls "
            "cluster, then facecls people LIB name CLUSTER NAME)"
        )
    return scan


def check_data(source: str) -> None:
    """Refuse a ``--data`` that names nothing (no ``lfw``, ``synthetic``, server URL, file or
    folder), reading no file, so the command line can say so before PyTorch loads.

    Raises:
        DataError: ``SOURCE: no such file or folder``, the words :func:`scan_data` would use.
    """
    if source in BUILT_IN or is_server_url(source) or Path(source).expanduser().exists():
        return
    raise DataError(f"{source}: no such file or folder")


def scan_data(source: str, cache_dir: Path, log: Callable[[str], None] = print) -> Scan:
    """``--data`` as a :class:`Scan`: a face library's named faces, else
    :func:`facecls.data.sources.scan_source` (a folder, an archive or ``lfw``)."""
    if is_library(source):
        return scan_library(source, cache_dir)
    return scan_source(source, cache_dir, log)
