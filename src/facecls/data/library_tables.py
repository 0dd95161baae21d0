"""What the face library's readers on every floor share: where its database lives, the schema
version they read, the label sources, and how a server library is named.

``library/store*`` writes the library and :mod:`facecls.data.library_source` reads it for
training; ``data/`` may not import ``library/``, so these constants live here, low, and both
import them.
"""

from __future__ import annotations

import re
from pathlib import Path

from facecls.data.archive import ArchiveError, extract_archive, is_archive

DB_NAME = "library.sqlite"  # in the library folder
SCHEMA_VERSION = 1
SOURCES = ("human", "cluster", "suggestion")  # who gave a face its person


def is_server_url(location: str | Path) -> bool:
    """Whether ``location`` names a PostgreSQL server rather than a library folder."""
    return str(location).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class PhotoFiles:
    """Where to read a photo the library names: the path itself, or for ``ARCHIVE/member`` (a
    photo inside a tar or zip archive, as ``facecls index`` names it) the member in the
    archive's extraction in the cache (made once; archives inside archives too)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self._archives: dict[Path, Path | None] = {}

    def __call__(self, name: str | Path) -> Path | None:
        """The file to read, or ``None`` when it is gone."""
        path = Path(name)
        if path.is_file():
            return path
        for parent in path.parents:
            if parent not in self._archives:
                if not (parent.is_file() and is_archive(parent)):
                    continue
                try:
                    self._archives[parent] = extract_archive(parent, self.cache_dir)
                except (ArchiveError, OSError):
                    self._archives[parent] = None
            folder = self._archives[parent]
            return None if folder is None else self(folder / path.relative_to(parent))
        return None

    def inside_archive(self, name: str | Path) -> bool:
        """Whether ``name`` is a member of an archive rather than a file of its own."""
        return not Path(name).is_file() and self(name) is not None
