"""Face library fixtures: a real PostgreSQL server for the session, and ``library_location``,
which runs a test once on each engine (a fresh SQLite folder; a fresh PostgreSQL database).

The server is the one ``.ci/run`` started (``FACECLS_TEST_POSTGRES``, an URL whose user may
create databases), or else one this session starts with ``initdb`` in a temporary folder. If
neither works the PostgreSQL tests fail, saying why: they never skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg_server

ENV = "FACECLS_TEST_POSTGRES"
ENGINES = ("sqlite", "postgresql")
_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The admin URL of a running PostgreSQL server (see the module notes)."""
    given = os.environ.get(ENV)
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="facecls-pg-"))
    try:
        url = pg_server.start(folder)
    except Exception as error:  # noqa: BLE001 - any failure is reported as the test's failure
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"no PostgreSQL for the library tests: set {ENV} or install postgresql "
                    f"({type(error).__name__}: {error})")  # fmt: skip
    try:
        yield url
    finally:
        pg_server.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


def fresh_database(admin_url: str) -> str:
    """A new, empty database on the server; answers its URL."""
    import psycopg

    name = f"facecls_test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = url.partition("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=ENGINES)
def library_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a new library goes: a folder (SQLite) or a fresh database's URL (PostgreSQL)."""
    if request.param == "sqlite":
        yield str(tmp_path / "library")
        return
    admin = request.getfixturevalue("postgres_url")
    url = fresh_database(admin)
    try:
        yield url
    finally:
        drop_database(admin, url)
