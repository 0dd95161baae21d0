"""The People page in a real headless Chromium: name a cluster (markup in the name stays text),
merge two, move a face, undo — and the library's database says so after each. Plus its API's
token rule and the model service with the page under /people/."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.library import people as people_actions
from facecls.library.store import FileStamp, ModelKey, NewFace, NewPhoto, open_library
from facecls.service.people_app import create_people_app
from tests import serve_fixtures

# The tiny trained run's session-scoped fixtures (the model service under the page).
people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run

DIM = 16
COLOURS = [(200, 40, 40), (40, 160, 40), (40, 40, 200)]


def pile_library(tmp_path: Path, sizes: tuple[int, ...] = (5, 4, 3)) -> str:
    """Photos with one coloured face each, in a library clustered into ``len(sizes)`` people."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    found = []
    for person, count in enumerate(sizes):
        for k in range(count):
            n = len(found)
            pixels = np.full((80, 120, 3), 90, np.uint8)
            pixels[20:60, 30 + k : 70 + k] = COLOURS[person]
            path = photos / f"p{n:03d}.png"
            Image.fromarray(pixels).save(path)
            v = np.eye(DIM)[person] + rng.normal(scale=0.05, size=DIM)
            face = NewFace((30.0 + k, 20.0, 70.0 + k, 60.0), None, 0.99,
                           (v / np.linalg.norm(v)).astype(np.float32))  # fmt: skip
            found.append(NewPhoto(f"{n:064x}", 120, 80, [face],
                                  [FileStamp(str(path), path.stat().st_size, 1)]))  # fmt: skip
    location = str(tmp_path / "library")
    with open_library(location, create=True) as lib:
        lib.claim_model(ModelKey("test-net", "aa" * 32, "box", 160, DIM))
        lib.add_photos(found)
        people_actions.cluster(lib, log=lambda _m: None)
    return location


@pytest.fixture
def page_server(tmp_path: Path, request: pytest.FixtureRequest):
    import uvicorn

    location = pile_library(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_people_app(location, token=getattr(request, "param", None))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/", location
    server.should_exit = True
    thread.join(timeout=10)


def _chromium() -> str:
    from tests.browser import find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed: `make test` installs Debian's chromium package "
                    "with apt-get when it can; install it to run the browser checks")  # fmt: skip
    return binary


def _settled(browser, before: str) -> None:  # noqa: ANN001 - tests.browser.Chromium
    """Wait until the page has reloaded its sheets after ``before`` (body[data-ready])."""
    for _ in range(200):
        ready = browser.evaluate("document.body.dataset.ready || ''")
        if ready and ready != before:
            images = browser.evaluate(
                "[...document.querySelectorAll('.faces img')].every(i => i.complete && i.src)"
            )
            if images:
                return
        browser.settle(0.05)
    raise AssertionError("the page did not reload")


def _do(browser, script: str) -> str:  # noqa: ANN001 - tests.browser.Chromium
    """Run ``script`` (it clicks something), wait for the reload, answer the status line."""
    before = browser.evaluate("document.body.dataset.ready || ''")
    browser.evaluate(script)
    _settled(browser, before)
    return browser.evaluate("document.getElementById('status').textContent")


def _groups(location: str) -> dict[int | None, set[int]]:
    with open_library(location) as lib:
        found: dict[int | None, set[int]] = {}
        for face in lib.faces():
            found.setdefault(face.person_id, set()).add(face.id)
        return found


def test_name_merge_move_undo_in_chromium(page_server, tmp_path: Path) -> None:
    from tests.browser import Chromium

    url, location = page_server
    with open_library(location) as lib:
        big, middle, small = [p.id for p in lib.people()]
    before = _groups(location)
    browser = Chromium(_chromium(), tmp_path / "profile")
    try:
        browser.events.clear()
        browser.send("Page.navigate", {"url": url}, session=True)
        browser.wait_for("Page.loadEventFired")
        _settled(browser, "")
        assert browser.evaluate("document.querySelectorAll('section[data-person]').length") == 3
        assert browser.evaluate("document.querySelectorAll('.faces img').length") == 12

        sheet = f"document.querySelector('section[data-person=\"{big}\"]')"
        name = "Ada <b>Lovelace</b> & co"
        said = _do(browser, f"{sheet}.querySelector('.name').value = {name!r}; "
                            f"[...{sheet}.querySelectorAll('button')][0].click()")  # fmt: skip
        assert "is now" in said
        with open_library(location) as lib:
            assert lib.person(big).name == name
        assert browser.evaluate(f"{sheet}.querySelector('h2').textContent").startswith(name)
        assert browser.evaluate(f"{sheet}.querySelector('h2 b')") is None  # text, not markup

        other = f"document.querySelector('section[data-person=\"{small}\"]')"
        _do(browser, f"{other}.querySelector('.into').value = '{big}'; "
                     f"[...{other}.querySelectorAll('button')][1].click()")  # fmt: skip
        groups = _groups(location)
        assert small not in groups and groups[big] == before[big] | before[small]

        face = min(before[middle])
        _do(browser, f"document.querySelector('img[data-face=\"{face}\"]').click(); "
                     f"document.getElementById('move-to').value = '{big}'; "
                     "document.getElementById('move').click()")  # fmt: skip
        assert face in _groups(location)[big]

        said = _do(browser, "document.getElementById('undo').click()")
        assert said.startswith("undone")
        assert face in _groups(location)[middle] and face not in _groups(location)[big]
        assert browser.problems() == []  # no console error, CSP violation or exception
        assert all(u.startswith((url, "blob:")) for u in browser.requests())
    finally:
        browser.close()


@pytest.mark.parametrize("page_server", ["s3cret"], indirect=True)
def test_the_api_needs_the_token_the_page_does_not(page_server) -> None:
    import httpx

    url, location = page_server
    assert httpx.get(url).status_code == 200  # the page: it holds no data
    assert httpx.get(url + "api/people").status_code == 401
    assert httpx.post(url + "api/undo", json={}).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    listed = httpx.get(url + "api/people", headers=good).json()
    assert len(listed) == 3
    bad = httpx.post(url + f"api/people/{listed[0]['id']}/name", json={"name": " "}, headers=good)
    assert bad.status_code == 422 and "empty" in bad.json()["detail"]
    face = httpx.get(url + f"api/people/{listed[0]['id']}/faces", headers=good).json()[0]
    thumb = httpx.get(url + f"api/faces/{face['id']}/thumb", headers=good)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (112, 112)


def test_a_model_service_serves_the_page_under_people(tiny_run: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from facecls.service.serve import build_app

    location = pile_library(tmp_path)
    app = build_app(tiny_run, token="t0k", store=tmp_path / "store", device="cpu",
                    library=location)  # fmt: skip
    good = {"Authorization": "Bearer t0k"}
    with TestClient(app) as client:
        page = client.get("/people/")
        assert page.status_code == 200 and "<title>People" in page.text
        assert "script-src 'sha256-" in page.headers["content-security-policy"]
        assert client.get("/people/api/people").status_code == 401
        assert len(client.get("/people/api/people", headers=good).json()) == 3
        assert client.get("/identities").status_code == 401  # the model's API: as before
        assert client.get("/identities", headers=good).status_code == 200
    with pytest.raises(ValueError, match="needs a model"):
        build_app(None)
