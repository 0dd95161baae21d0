"""The service's access log: one line per request, to ``serve.log`` in the store folder (rotated
by size) and to the console unless ``--quiet``.

A line is ``TIME CLIENT METHOD PATH STATUS LATENCYms BYTESB``, for example
``2026-11-30T10:00:00.123+00:00 127.0.0.1 POST /predict 200 12.3ms 345B``: the UTC time the
request arrived, the client's address, the path without its query string (percent-encoded as it
came, so a line cannot be split or forged), the status sent, the time to the last byte and the
bytes of the response body. Never a header (so never the token), a form field, photo bytes or an
embedding.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOG_NAME = "serve.log"
MAX_BYTES = 5 * 1024 * 1024  # a file this big is rotated: serve.log.1 ... serve.log.3
BACKUPS = 3
_PATH_CHARS = 200  # longer paths are cut: a log line stays a line


class AccessLog:
    """Where access lines go: the rotating file and, optionally, the console (stdout).

    Args:
        folder: the folder of ``serve.log`` (the store).
        console: also print each line.
        max_bytes: the size at which ``serve.log`` is rotated (``serve.log.1``, ...).
        backups: rotated files kept.
    """

    def __init__(
        self, folder: Path, console: bool = False, max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
    ) -> None:  # fmt: skip
        self.path = Path(folder) / LOG_NAME
        self.console = console
        self._file = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._file.setFormatter(logging.Formatter("%(message)s"))
        os.chmod(self.path, 0o600)  # who called the service, and when: the user's own

    def write(self, line: str) -> None:
        """Write one line to the file (and the console)."""
        self._file.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        if self.console:
            print(line, flush=True)  # the current stdout, wherever it was redirected

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def request_line(
    scope: dict[str, Any], status: int, seconds: float, sent: int, arrived: datetime
) -> str:
    """The access line of one request (see the module docstring)."""
    client = scope.get("client")
    address = client[0] if client else "-"
    raw = scope.get("raw_path")
    path = raw.decode("ascii", "backslashreplace") if raw else scope.get("path", "")
    path = path.split("?", 1)[0]
    path = "".join(c if c.isprintable() and c != " " else f"%{ord(c):02X}" for c in path)
    if len(path) > _PATH_CHARS:
        path = path[:_PATH_CHARS] + "..."
    stamp = arrived.isoformat(timespec="milliseconds")
    return f"{stamp} {address} {scope.get('method', '-')} {path} {status} {seconds * 1000:.1f}ms {sent}B"


class AccessLogMiddleware:
    """ASGI middleware writing :func:`request_line` for every HTTP request to ``log``; status 0
    means the connection ended before a response began."""

    def __init__(self, app: Any, log: AccessLog) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived, start = datetime.now(timezone.utc), time.perf_counter()
        status, sent = 0, 0

        async def counted(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self.log.write(request_line(scope, status, time.perf_counter() - start, sent, arrived))
