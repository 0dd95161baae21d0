"""Guards for the local-only and nothing-modified promises, shared by the tests that run commands.

``run_locally`` runs facecls commands through ``facecls.cli.main`` with every socket call
disabled and checks that the data folder's sha256 is the same afterwards. When a command that
works on user data is added (``predict``, ``report``), add it to the lists in
``tests/test_local_only.py`` and ``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from facecls.cli import main


class NetworkUsed(AssertionError):
    """Raised by the socket guard; an ``AssertionError`` so no ``except OSError`` swallows it."""


def tree_sha256(root: Path) -> str:
    """sha256 over every entry's relative path, type, bytes and mode below ``root``."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(b"d" if path.is_dir() else b"f")
        h.update(oct(path.stat().st_mode).encode())
        if path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@contextmanager
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make every connection attempt and name lookup fail; yields the list of attempts."""
    attempts: list[str] = []

    def refuse(what: str):
        def blocked(*args: object, **kwargs: object) -> None:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise NetworkUsed(f"network use in a local-only command: {what} {args!r}")

        return blocked

    with monkeypatch.context() as m:
        m.setattr(socket.socket, "connect", refuse("socket.connect"))
        m.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        m.setattr(socket.socket, "sendto", refuse("socket.sendto"))
        m.setattr(socket, "create_connection", refuse("create_connection"))
        m.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        m.setattr(socket, "gethostbyname", refuse("gethostbyname"))
        yield attempts


def run_locally(
    commands: Sequence[Sequence[str]],
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    quiet: bool = True,
) -> list[int]:
    """Run each command (``facecls`` arguments) offline; assert ``data`` was not modified.

    Returns:
        The exit code of each command.
    """
    before = tree_sha256(data)
    codes = []
    with no_network(monkeypatch) as attempts:
        for args in commands:
            codes.append(main(["--quiet", *args] if quiet else list(args)))
    assert attempts == [], f"network used: {attempts}"
    assert tree_sha256(data) == before, f"{data} was modified"
    return codes
