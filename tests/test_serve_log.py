"""The service's access log and its start-up: one log line per request (never the token, a
form field or a photo), rotated by size, on the console unless --quiet; a port no socket can have
is one line; serving a run never writes into it; an unusable store or an unexpected error is an
answer in the documented error body, not a console traceback."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from facecls.bundle import read_centroids
from facecls.cli import main
from facecls.logs import logger
from facecls.service.access_log import AccessLog, AccessLogMiddleware
from facecls.service.app import Settings, create_app
from facecls.service.errors import CatchAll
from facecls.service.model_store import ModelStore
from facecls.service.serve import build_app
from tests import serve_fixtures
from tests.offline import tree_sha256

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures
TOKEN = "l0g-t0ken-never-written"
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 (\S+) ([A-Z]+) (\S+) (\d{3}) "
    r"\d+\.\dms (\d+)B$"
)


def photo_of(people: dict[str, Path], index: int = 0) -> tuple[str, bytes]:
    path = sorted((people["train"] / "person_02").iterdir())[index]
    return path.name, path.read_bytes()


def test_every_request_leaves_one_line(tiny_run, people, tmp_path: Path) -> None:
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    settings = Settings(token=TOKEN, max_bytes=50_000)
    ok = {"Authorization": f"Bearer {TOKEN}"}
    name, photo = photo_of(people)
    with TestClient(create_app(store, settings)) as client:
        answers = [
            client.get("/health", headers=ok),
            client.get("/health"),  # 401
            client.get("/", headers=ok),  # the page
            client.get("/nowhere?secret=1", headers=ok),  # 404; the query is not written
            client.post("/predict", headers=ok, files={"file": (name, photo)}),
            client.post("/predict", headers=ok, files={"file": ("x.png", b"\0" * 50_001)}),
            client.post(
                "/enroll",
                headers=ok,
                data={"name": "Ada Secretname"},
                files=[("files", (name, photo))],
            ),  # fmt: skip
        ]
    log = (store.root / "serve.log").read_text()
    lines = log.splitlines()
    assert len(lines) == len(answers)
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m[2], m[3], int(m[4])) for m in parsed] == [
        ("GET", "/health", 200), ("GET", "/health", 401), ("GET", "/", 200),
        ("GET", "/nowhere", 404), ("POST", "/predict", 200), ("POST", "/predict", 413),
        ("POST", "/enroll", 200),
    ]  # fmt: skip
    assert [int(m[5]) for m in parsed] == [len(a.content) for a in answers]
    assert {m[1] for m in parsed} == {"testclient"}  # the client's address as the server saw it
    for secret in (TOKEN, "Bearer", "secret=1", "Secretname", name, "embedding"):
        assert secret not in log
    assert (store.root / "serve.log").stat().st_mode & 0o077 == 0  # the user's own


def test_the_log_rotates_by_size(tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "x" * 100}

    log = AccessLog(tmp_path, max_bytes=2_000, backups=2)
    app.add_middleware(AccessLogMiddleware, log=log)
    with TestClient(app) as client:
        for _ in range(200):
            client.get("/ping")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["serve.log", "serve.log.1", "serve.log.2"]
    assert all((tmp_path / f).stat().st_size <= 2_000 for f in files)
    assert all(LINE.match(line) for f in files for line in (tmp_path / f).read_text().splitlines())


@pytest.mark.parametrize("quiet", [False, True])
def test_the_console_shows_the_log_unless_quiet(tiny_run, tmp_path, capsys, monkeypatch, quiet):
    """``facecls serve`` prints each access line; ``facecls --quiet serve`` does not (the file
    still gets it). uvicorn is replaced by a client making one request to the app it is given."""
    import uvicorn

    def one_request(app, **_kw) -> None:  # noqa: ANN001 - the app uvicorn.run would serve
        with TestClient(app) as client:
            assert client.get("/identities").status_code == 200

    monkeypatch.setattr(uvicorn, "run", one_request)
    flags = ["--quiet"] if quiet else []
    assert main([*flags, "serve", str(tiny_run), "--store", str(tmp_path / "store")]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if LINE.match(line)]
    assert len(shown) == (0 if quiet else 1)
    assert len((tmp_path / "store" / "serve.log").read_text().splitlines()) == 1


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_a_port_no_socket_can_have_is_one_line(tiny_run, capsys, port: str) -> None:
    assert main(["serve", str(tiny_run), "--port", port]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"facecls: error: --port must be a TCP port, 1-65535, not {port}"]


def test_a_port_in_use_is_one_line(tiny_run, tmp_path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", str(tiny_run), "--port", str(port), "--store", str(tmp_path / "s")])
    assert code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"facecls: error: --host 127.0.0.1 --port {port}: cannot listen")
    assert "Traceback" not in captured.out + captured.err


def test_serving_a_run_never_writes_into_it(tiny_run, people, tmp_path: Path) -> None:
    """A run as ``train`` leaves it (no class centroids yet) is calibrated into the store at
    start-up, not in place: its bundle is byte for byte what it was, enrollment works, and a
    restart reuses the store's calibrated version."""
    bundle = tiny_run / "model"
    assert "trained" not in read_centroids(bundle)  # as train left it
    before = tree_sha256(bundle)
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    assert tree_sha256(bundle) == before
    assert "trained" in read_centroids(store.model.folder) and store.version == "v000001"
    name, photo = photo_of(people)
    with TestClient(create_app(store)) as client:
        answer = client.post("/enroll", data={"name": "Ada"}, files=[("files", (name, photo))])
    assert answer.status_code == 200 and answer.json()["version"] == "v000002"
    again = build_app(tiny_run, store=tmp_path / "store", device="cpu")  # a restart
    assert again.state.service.store.version == "v000002"
    assert tree_sha256(bundle) == before


def test_an_unusable_store_is_a_declared_answer(tiny_run, people, tmp_path, capsys) -> None:
    """The store taken away while the service runs: /enroll answers 503 with the error body and
    leaves one line on the console, not a traceback; the service goes on."""
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    name, photo = photo_of(people)
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        capsys.readouterr()
        shutil.rmtree(store.root)
        store.root.write_text("a file where the store was")
        answer = client.post("/enroll", data={"name": "Ada"}, files=[("files", (name, photo))])
        assert answer.status_code == 503
        assert answer.json() == {"error": {
            "code": "store_unavailable",
            "message": "the enrollment store cannot be written; the service's log has the detail",
        }}  # fmt: skip
        assert client.get("/health").status_code == 200
    shown = "".join(capsys.readouterr())
    assert "Traceback" not in shown
    assert len([line for line in shown.splitlines() if "/enroll could not write" in line]) == 1


def test_an_unexpected_error_is_a_500_in_the_error_body(capsys) -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(CatchAll, log=logger())
    with TestClient(app) as client:
        answer = client.get("/boom")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal" and "a bug" not in answer.text
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err


def test_a_store_that_cannot_be_a_folder_is_one_line(tiny_run, tmp_path, capsys) -> None:
    (tmp_path / "store").write_text("a file")
    assert main(["serve", str(tiny_run), "--store", str(tmp_path / "store" / "inner")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("facecls: error: ") and "give --store DIR" in line
