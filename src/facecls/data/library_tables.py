"""What the face library's readers on every floor share: where its database lives, the schema
version they read, the label sources, and how a server library is named.

``library/store*`` writes the library and :mod:`facecls.data.library_source` reads it for
training; ``data/`` may not import ``library/``, so these constants live here, low, and both
import them.
"""

from __future__ import annotations

import re
from pathlib import Path

DB_NAME = "library.sqlite"  # in the library folder
SCHEMA_VERSION = 1
SOURCES = ("human", "cluster", "suggestion")  # who gave a face its person


def is_server_url(location: str | Path) -> bool:
    """Whether ``location`` names a PostgreSQL server rather than a library folder."""
    return str(location).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
