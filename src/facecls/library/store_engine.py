"""What each library engine provides (connection, transactions, embeddings storage) and the
transactions built on it; :class:`facecls.library.store_base.Library` is the rest."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np


class Engine:
    """The primitives an engine implements (SQL with ``?`` placeholders) and transactions."""

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
