"""A minimal headless-Chromium driver over the DevTools protocol on a pipe (no extra package).

Chromium started with ``--remote-debugging-pipe`` reads JSON commands from fd 3 and writes
responses and events to fd 4, each message ending with a NUL byte. :class:`Chromium` opens one
page, records console messages, exceptions, dialogs and network requests, and evaluates scripts.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-pipe",
]  # fmt: skip


def _high(fd: int) -> int:
    """Move a descriptor to 10 or above (non-inheritable), so dup2 onto 3 and 4 clobbers nothing."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def find_chromium() -> str | None:
    """The Chromium binary on PATH (``$CHROMIUM`` wins), or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def require_chromium() -> str:
    """The Chromium binary; a browser test without one fails (never skips to pass)."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(
            "Chromium is not installed: the browser tests need it (`make test` and .ci/run install "
            "Debian's chromium with apt-get; elsewhere install Chromium or set CHROMIUM=/path)",
            pytrace=False,
        )
    return binary


class Chromium:
    """One headless Chromium with one page.

    Attributes:
        events: every protocol event received (``{"method", "params"}``), in order.
    """

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        cmd_read, self._cmd = (_high(fd) for fd in os.pipe())  # Chromium reads commands on fd 3
        self._out, out_write = (_high(fd) for fd in os.pipe())  # and writes answers on fd 4

        def wire() -> None:  # in the child before exec; the ends sit above 10, so 3 and 4 are free
            os.dup2(cmd_read, 3)
            os.dup2(out_write, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"],
            # close_fds=False keeps the dup2'ed fds 3 and 4; other fds are non-inheritable (PEP 446).
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(cmd_read)
        os.close(out_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                  session=True)  # fmt: skip

    def _read(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                return None
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        if message.get("method") == "Page.javascriptDialogOpening":
            # Dismiss it, or the page would hang; the event stays recorded for the test.
            self._post("Page.handleJavaScriptDialog", {"accept": False}, True)

    def _post(self, method: str, params: dict[str, Any] | None, session: bool) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        return self._next_id

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: bool = False,
        timeout: float = 30.0,
    ) -> dict[str, Any]:  # fmt: skip
        """Send one command and return its result; events that arrive meanwhile are recorded."""
        wanted = self._post(method, params, session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._read(deadline - time.monotonic())
            if message is None:
                break
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._dispatch(message)
        raise TimeoutError(f"{method}: no answer from Chromium in {timeout} s")

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for an event (or return it if it already came)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._read(deadline - time.monotonic())
            if message is None:
                break
            self._dispatch(message)
            if message.get("method") == method:
                return message
        raise TimeoutError(f"no {method} event in {timeout} s")

    def settle(self, seconds: float = 0.3) -> None:
        """Collect events for a short while (late console messages, image decoding)."""
        deadline = time.monotonic() + seconds
        while (message := self._read(max(deadline - time.monotonic(), 0))) is not None:
            self._dispatch(message)

    def open(self, path: Path) -> None:
        """Navigate to a local file and wait for its load event."""
        self.events.clear()
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=True)
        self.wait_for("Page.loadEventFired")
        self.settle()

    def evaluate(self, expression: str) -> Any:
        """Run a script in the page and return its (JSON) value; page exceptions raise."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page (not only the window)."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=True)["data"]  # fmt: skip
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors and warnings, page exceptions and dialogs since the last :meth:`open`."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "warning",
                "assert",
            ):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in (
                "error",
                "warning",
            ):
                found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog {params.get('type')}: {params.get('message')}")
        return found

    def requests(self) -> list[str]:
        """URLs of every network request the page made since the last :meth:`open`."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            self._post("Browser.close", None, False)
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._cmd)
            os.close(self._out)
