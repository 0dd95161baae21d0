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
from facecls.service.serve import build_app
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
    app = build_app(None, token=getattr(request, "param", None), library=location)
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


def _sheet(person: int) -> str:
    return f"document.querySelector('section[data-person=\"{person}\"]')"


def _press(sheet: str, label: str) -> str:
    """A script that clicks the button labelled ``label`` in ``sheet`` (as a user would)."""
    return (f"[...{sheet}.querySelectorAll('button')].find(b => b.textContent === {label!r})"
            ".click()")  # fmt: skip


def test_name_merge_move_undo_in_chromium(page_server, tmp_path: Path) -> None:
    from tests.browser import Chromium, require_chromium

    url, location = page_server
    with open_library(location) as lib:
        big, middle, small = [p.id for p in lib.people()]
    before = _groups(location)
    assert [len(before[p]) for p in (big, middle, small)] == [5, 4, 3]
    browser = Chromium(require_chromium(), tmp_path / "profile")
    try:
        browser.events.clear()
        browser.send("Page.navigate", {"url": url}, session=True)
        browser.wait_for("Page.loadEventFired")
        _settled(browser, "")
        order = "[...document.querySelectorAll('section[data-person]')].map(s => +s.dataset.person)"
        assert browser.evaluate(order) == [big, middle, small]  # largest first
        assert browser.evaluate("document.querySelectorAll('.faces img').length") == 12

        # Name the largest cluster; markup in the name is stored as is and shown as text.
        name = "Ada <b>Lovelace</b> & co"
        said = _do(browser, f"{_sheet(big)}.querySelector('.name').value = {name!r}; "
                            + _press(_sheet(big), "Name"))  # fmt: skip
        assert "is now" in said
        with open_library(location) as lib:
            assert lib.person(big).name == name
            assert {f.source for f in lib.faces(person_id=big)} == {"human"}
        assert browser.evaluate(f"{_sheet(big)}.querySelector('h2').textContent").startswith(name)
        assert browser.evaluate(f"{_sheet(big)}.querySelector('h2 b')") is None  # not markup

        # Merge the smallest into the named one.
        _do(browser, f"{_sheet(small)}.querySelector('.into').value = '{big}'; "
                     + _press(_sheet(small), "Merge into"))  # fmt: skip
        merged = _groups(location)
        assert small not in merged and merged[big] == before[big] | before[small]
        assert merged[middle] == before[middle]
        assert browser.evaluate("document.querySelectorAll('section[data-person]').length") == 2

        # Select one face of the middle cluster by clicking it, and move it to Ada.
        face = min(before[middle])
        browser.evaluate(f"document.querySelector('img[data-face=\"{face}\"]').click()")
        assert browser.evaluate("document.getElementById('chosen').textContent") == "1 selected"
        _do(browser, f"document.getElementById('move-to').value = '{big}'; "
                     "document.getElementById('move').click()")  # fmt: skip
        moved = _groups(location)
        assert moved[big] == merged[big] | {face} and moved[middle] == merged[middle] - {face}
        with open_library(location) as lib:
            assert next(f for f in lib.faces(person_id=big) if f.id == face).source == "human"
        assert browser.evaluate(
            f"{_sheet(big)}.querySelector('img[data-face=\"{face}\"]') !== null"
        )

        # Undo takes back the move only; a second undo takes back the merge, the name stays.
        said = _do(browser, "document.getElementById('undo').click()")
        assert said.startswith("undone")
        assert _groups(location) == merged
        assert browser.evaluate(
            f"{_sheet(middle)}.querySelector('img[data-face=\"{face}\"]') !== null"
        )
        _do(browser, "document.getElementById('undo').click()")
        assert _groups(location) == before
        with open_library(location) as lib:
            assert lib.person(big).name == name and lib.person(small).name is None
        assert browser.evaluate("document.querySelectorAll('section[data-person]').length") == 3
        assert browser.problems() == []  # no console error, CSP violation or exception
        assert all(u.startswith((url, "blob:")) for u in browser.requests())
    finally:
        browser.close()


@pytest.mark.parametrize("page_server", ["s3cret"], indirect=True)
def test_the_api_needs_the_token_the_page_does_not(page_server) -> None:
    import httpx

    url, location = page_server
    assert httpx.get(url).status_code == 200  # the page: it holds no data
    refused = httpx.get(url + "api/people")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert httpx.post(url + "api/undo", json={}).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    listed = httpx.get(url + "api/people", headers=good).json()
    assert len(listed) == 3
    bad = httpx.post(url + f"api/people/{listed[0]['id']}/name", json={"name": " "}, headers=good)
    assert bad.status_code == 422 and "empty" in bad.json()["error"]["message"]
    face = httpx.get(url + f"api/people/{listed[0]['id']}/faces", headers=good).json()[0]
    thumb = httpx.get(url + f"api/faces/{face['id']}/thumb", headers=good)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (112, 112)
    # the page served alone logs every request beside the library, never the token
    logged = (Path(location) / "serve.log").read_text().splitlines()
    assert sum("/api/people" in line for line in logged) >= 3
    assert not any("s3cret" in line for line in logged)


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
