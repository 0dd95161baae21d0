"""The local service: every endpoint through FastAPI's TestClient on a tiny trained model, the
token rule, upload limits, persistent and concurrent enrollment; the page in a real Chromium."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import facecls
from facecls.cli import main
from facecls.openset_thresholds import enrolled_table, shot_threshold
from facecls.service.app import Settings, create_app
from facecls.service.model_store import CURRENT, ModelStore
from facecls.service.serve import (
    build_app,
    check_bind,
    is_loopback,
    page_url,
    resolve_token,
)
from tests import serve_fixtures

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures


def png(path: Path) -> bytes:
    return path.read_bytes()


def photos_of(folder: Path, n: int) -> list[Path]:
    return sorted(folder.iterdir())[:n]


@pytest.fixture()
def client(tiny_run: Path, people: dict[str, Path], tmp_path: Path) -> TestClient:
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for photo in photos_of(people["train"] / "person_03", 3):
        (gallery / photo.name).write_bytes(photo.read_bytes())
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    settings = Settings(gallery=gallery, max_bytes=200_000, max_pixels=500_000)
    with TestClient(create_app(store, settings)) as test_client:
        yield test_client


def test_loopback_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    with pytest.raises(ValueError, match="--token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="empty"):
        check_bind("0.0.0.0", " ")


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACECLS_TOKEN", raising=False)
    assert resolve_token(None) is None and resolve_token("given") == "given"
    monkeypatch.setenv("FACECLS_TOKEN", "from-env")
    assert resolve_token(None) == "from-env" and resolve_token("given") == "given"


def test_serve_refuses_other_hosts_without_token(tiny_run: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FACECLS_TOKEN", raising=False)
    assert main(["serve", str(tiny_run), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--token" in err[0]


def test_health_identities_and_page(client: TestClient, tiny_run: Path) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["identities"] == serve_fixtures.TRAINED
    names = client.get("/identities").json()
    assert names == {"trained": facecls.load_model(tiny_run).trained_names, "enrolled": []}
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "<script>" in page.text and "http" not in page.text.split("<body>")[1]
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/predict", "/verify", "/search", "/enroll", "/health", "/identities"
    }  # fmt: skip


def test_predict_names_a_trained_person(client: TestClient, people, tiny_run: Path) -> None:
    """The service answers as the library does for the same photo and model (a contract, not
    what a tiny model happens to learn on one CPU's kernels)."""
    model = client.app.state.service.store.model  # the run, calibrated into the store
    photos = photos_of(people["train"] / "person_02", 6)
    expected = model.predict(photos)
    for photo, library in zip(photos, expected, strict=True):
        answer = client.post("/predict", files={"file": ("x.bin", png(photo))}).json()
        (face,) = answer["faces"]
        assert face["box"] == [0, 0, answer["width"], answer["height"]]  # the whole 40 px photo
        assert face["identity"] == library.identity and face["decision"] == library.decision
        assert face["score"] == pytest.approx(library.score, abs=1e-3)
        assert face["identity"] in [*model.trained_names, "unknown"]
        # the best guess, also of a rejected face, and what the page shows beside the face
        assert face["closest"] == library.closest and face["threshold"] == library.threshold
        assert face["label"] == library.label()
        if face["decision"] == "unknown":
            assert face["label"].startswith(f"unknown — closest: {face['closest']} ")


def test_verify_and_search(client: TestClient, people, tiny_run: Path) -> None:
    a, b = photos_of(people["train"] / "person_01", 2)
    other = photos_of(people["train"] / "person_05", 1)[0]
    same = client.post("/verify", files={"a": ("a", png(a)), "b": ("b", png(b))}).json()
    diff = client.post("/verify", files={"a": ("a", png(a)), "b": ("b", png(other))}).json()
    assert same["similarity"] > diff["similarity"]
    expected = facecls.verify(tiny_run, a, b)
    assert same["similarity"] == pytest.approx(expected.similarity, abs=1e-3)
    assert same["same"] == (same["similarity"] >= same["threshold"]) and same["far"] == 0.01
    # each upload is one face without detection: face 0, no box, nothing to say
    one = {"face": 0, "faces": 1, "box": None}
    assert same["a"] == same["b"] == one and same["message"] is None
    files = {"a": ("a", png(a)), "b": ("b", png(b))}
    chosen = client.post("/verify", files=files, data={"face_a": "0", "face_b": "0"}).json()
    assert chosen == same
    for field, value, says in (("face_a", "1", "face_a: the photo holds 1 face(s), numbered 0 "
                                "to 0 (0 = the main face)"),
                               ("face_b", "-1", "face_b: Input should be greater than or equal "
                                "to 0")):  # fmt: skip
        refused = client.post("/verify", files=files, data={field: value})
        assert refused.status_code == 422
        assert refused.json()["error"] == {"code": "invalid_request", "message": says}
    query = photos_of(people["train"] / "person_03", 2)[1]  # in the gallery
    found = client.post("/search", files={"file": ("q", png(query))}, data={"top_k": "2"})
    matches = found.json()["matches"]
    assert len(matches) == 2 and matches[0]["photo"] == query.name  # relative to the gallery
    assert matches[0]["similarity"] > 0.999
    # marked against the verify threshold, as facecls verify decides
    threshold = found.json()["threshold"]
    assert threshold == client.app.state.service.store.model.meta["verify"]["threshold"]
    assert [m["same"] for m in matches] == [m["similarity"] >= threshold for m in matches]


def test_upload_limits_and_bad_uploads(client: TestClient, people, tmp_path: Path) -> None:
    good = photos_of(people["train"] / "person_00", 1)[0]
    big = client.post("/predict", files={"file": ("big.png", b"\0" * 200_001)})
    assert big.status_code == 413 and "limit" in big.json()["error"]["message"]
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 1000)).save(buffer, "PNG")  # small file, too many pixels
    many = client.post("/predict", files={"file": ("wide.png", buffer.getvalue())})
    assert many.status_code == 422 and "pixel" in many.json()["error"]["message"]
    text = client.post("/predict", files={"file": ("face.jpg", b"hello, not an image")})
    assert text.json()["error"] == {
        "code": "not_an_image",
        "message": "face.jpg: not an image Pillow can read",
    }
    empty = client.post("/predict", files={"file": ("e.png", b"")})
    assert empty.status_code == 422
    truncated = client.post("/predict", files={"file": ("t.png", png(good)[:60])})
    assert truncated.status_code == 422
    # a PNG named .txt is judged by its content
    named = client.post("/predict", files={"file": ("notes.txt", png(good))})
    assert named.status_code == 200 and len(named.json()["faces"]) == 1

    # a body that does not declare its length is cut off as it streams in
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        for _ in range(50):
            yield b"\0" * 100_000

    streamed = client.post(
        "/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert streamed.status_code == 413
    assert client.get("/health").status_code == 200  # the service lives on


def test_token_required_when_given(tiny_run: Path, tmp_path: Path, people) -> None:
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    photo_path = photos_of(people["train"] / "person_00", 1)[0]
    (gallery / photo_path.name).write_bytes(photo_path.read_bytes())
    app = build_app(tiny_run, token="s3cret", store=tmp_path / "store", gallery=gallery,
                    device="cpu")  # fmt: skip
    photo = png(photo_path)
    ok = {"Authorization": "Bearer s3cret"}
    calls = {  # every endpoint: (method, path, form fields, files)
        "health": ("GET", "/health", None, None),
        "identities": ("GET", "/identities", None, None),
        "openapi": ("GET", "/openapi.json", None, None),
        "predict": ("POST", "/predict", None, {"file": ("p", photo)}),
        "verify": ("POST", "/verify", {"threshold": "0.5"}, {"a": ("a", photo), "b": ("b", photo)}),
        "search": ("POST", "/search", None, {"file": ("p", photo)}),
        "enroll": ("POST", "/enroll", {"name": "Ada"}, [("files", ("p", photo))]),
    }
    with TestClient(app) as c:
        # the page holds no data: it loads without the token (and asks for it after a 401)
        page = c.get("/")
        assert page.status_code == 200 and 'id="token-box"' in page.text
        assert (
            "s3cret" not in page.text
            and "default-src 'none'" in page.headers["content-security-policy"]
        )
        for name, (method, path, data, files) in calls.items():
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                denied = c.request(method, path, data=data, files=files, headers=headers)
                assert denied.status_code == 401, (name, headers)
                assert denied.headers["www-authenticate"] == "Bearer"
        assert c.request("POST", "/", headers={}).status_code == 401  # only GET / is open
        for name, (method, path, data, files) in calls.items():
            allowed = c.request(method, path, data=data, files=files, headers=ok)
            assert allowed.status_code == 200, (name, allowed.text)
        assert c.get("/identities", headers=ok).json()["enrolled"] == ["Ada"]
    assert "s3cret" not in repr(app.state.service.settings)


def test_serve_prints_the_page_url_with_the_token_once(tiny_run, tmp_path, capsys, monkeypatch):
    """The page's address carries the token in its fragment, on the console only: no record of
    the facecls logger (the one run logs are written from) holds it."""
    import logging

    import torch
    import uvicorn

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    ran: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(kw))
    keep = Keep(logging.DEBUG)
    logging.getLogger("facecls").addHandler(keep)
    threads = torch.get_num_threads()  # serve sets the process's threads
    try:
        monkeypatch.setenv("FACECLS_TOKEN", "from env/+ä")
        assert main(["serve", str(tiny_run), "--host", "0.0.0.0", "--port", "8123",
                     "--store", str(tmp_path / "store")]) == 0  # fmt: skip
        out = capsys.readouterr().out
        monkeypatch.delenv("FACECLS_TOKEN")
        assert main(["serve", str(tiny_run), "--token", "s3cret", "--port", "8124",
                     "--store", str(tmp_path / "store")]) == 0  # fmt: skip
        given = capsys.readouterr().out
        assert main(["serve", str(tiny_run), "--port", "8125",
                     "--store", str(tmp_path / "store")]) == 0  # fmt: skip
        without = capsys.readouterr().out
    finally:
        logging.getLogger("facecls").removeHandler(keep)
        torch.set_num_threads(threads)
    assert [r["port"] for r in ran] == [8123, 8124, 8125]
    assert [line for line in out.splitlines() if "token=" in line] == [
        "Open the page with its token: http://127.0.0.1:8123/#token=from%20env%2F%2B%C3%A4"
    ]
    assert [line for line in given.splitlines() if "s3cret" in line] == [
        "Open the page with its token: http://127.0.0.1:8124/#token=s3cret"
    ]
    assert "token=" not in without and "Serving on http://127.0.0.1:8125/" in without
    assert any("Serving on" in r for r in records)  # the logger did see the start-up
    assert not any("s3cret" in r or "token=" in r or "from env" in r for r in records)


def test_page_url() -> None:
    assert page_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert page_url("0.0.0.0", 80, "a b") == "http://127.0.0.1:80/#token=a%20b"
    assert page_url("::1", 8000, "t") == "http://[::1]:8000/#token=t"
    assert page_url("192.168.1.5", 8000, "t#&=") == "http://192.168.1.5:8000/#token=t%23%26%3D"


def enroll_files(folder: Path, n: int = 4) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (p.name, p.read_bytes())) for p in photos_of(folder, n)]


def test_enrollment_persists_and_names_the_person(client: TestClient, people, tiny_run) -> None:
    new = sorted(people["new"].iterdir())[0]
    answer = client.post("/enroll", data={"name": "Ada"}, files=enroll_files(new))
    assert answer.status_code == 200, answer.text
    # v000001: the run calibrated into the store at start-up; Ada's is the next
    assert answer.json()["photos"] == 4 and answer.json()["version"] == "v000002"
    assert "enrolled from 4 photos" in answer.json()["advice"]  # fewer than 5: says so
    assert client.get("/identities").json()["enrolled"] == ["Ada"]
    # Ada (4 photos) is judged against the threshold calibrated for few-photo centroids
    model = client.app.state.service.store.model
    assert model.method == "margin"  # the enrolled bundle's score
    table = enrolled_table(model.meta["openset"], "margin")
    assert model.threshold_of(len(model.trained_names)) == shot_threshold(table, 4)
    assert model.threshold_of(0) == model.threshold
    assert model.class_names[-1] == "Ada"
    # Ada's later photos are answered as the enrolled model answers them in the library (how
    # many a 20-epoch model names right is what it learned on one CPU's kernels)
    later = photos_of(new, 12)[6:]
    for photo in later:
        (face,) = client.post("/predict", files={"file": ("p", png(photo))}).json()["faces"]
        (answer,) = model.predict([str(photo)])
        limit = model.threshold_of(model.class_names.index(answer.top_k[0][0]))
        assert face["score"] == pytest.approx(answer.score, abs=1e-3)
        if abs(answer.score - limit) > 1e-3:  # bf16 batches may move a face that close
            assert (face["identity"], face["decision"]) == (answer.identity, answer.decision)
    # a restart (a new store on the same folder) still knows Ada; the original bundle does not
    root = client.app.state.service.store.root
    assert ModelStore(tiny_run, root, device="cpu").model.enrolled_names == ["Ada"]
    assert facecls.load_model(tiny_run).enrolled_names == []
    bad = client.post("/enroll", data={"name": "../etc"}, files=enroll_files(new, 1))
    assert bad.status_code == 422
    trained = client.post("/enroll", data={"name": "person_00"}, files=enroll_files(new, 1))
    assert trained.status_code == 409 and trained.json()["error"]["code"] == "conflict"
    again = client.post("/enroll", data={"name": "Ada"}, files=enroll_files(new, 5))
    assert again.status_code == 200 and again.json()["advice"] is None  # 5 photos: nothing to add


def test_two_concurrent_enrollments_both_land(client: TestClient, people) -> None:
    first, second = sorted(people["new"].iterdir())[1:3]
    answers: list[int] = []

    def enroll(name: str, folder: Path) -> None:
        reply = client.post("/enroll", data={"name": name}, files=enroll_files(folder, 3))
        answers.append(reply.status_code)

    threads = [threading.Thread(target=enroll, args=a) for a in (("Bo", first), ("Cy", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200, 200]
    assert sorted(client.get("/identities").json()["enrolled"]) == ["Bo", "Cy"]
    root = client.app.state.service.store.root
    assert (root / CURRENT).read_text().strip() == "v000003"  # after the calibrated v000001
    meta = json.loads((root / "v000003" / "model.json").read_text())
    assert sorted(meta["enrolled"]["names"]) == ["Bo", "Cy"]


def test_crash_mid_enrollment_loses_nothing(tiny_run, people, tmp_path, monkeypatch) -> None:
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    folders = sorted(people["new"].iterdir())
    model = store.model
    faces = lambda folder: model.to_batch([str(p) for p in photos_of(folder, 3)])  # noqa: E731
    store.enroll("Ada", faces(folders[0]))

    def crash(*_args, **_kwargs):
        raise OSError("power cut")

    monkeypatch.setattr("facecls.inference.enroll.write_json", crash)
    with pytest.raises(OSError):
        store.enroll("Bo", faces(folders[1]))
    monkeypatch.undo()
    assert store.model.enrolled_names == ["Ada"]
    again = ModelStore(tiny_run, tmp_path / "store", device="cpu")  # a restart after the crash
    assert again.model.enrolled_names == ["Ada"]
    again.enroll("Bo", faces(folders[1]))  # the half-written version does not get in the way
    assert again.model.enrolled_names == ["Ada", "Bo"]


# ---- in a real browser ---------------------------------------------------------------------


@pytest.fixture()
def live_server(tiny_run: Path, tmp_path: Path, request: pytest.FixtureRequest):
    """The service on a free loopback port, run by uvicorn in a thread (with the token given by
    indirect parametrisation, if any)."""
    token = getattr(request, "param", None)
    app = build_app(tiny_run, token=token, store=tmp_path / "store", device="cpu")
    with serve_fixtures.serving(app) as url:
        yield url


def named_photo(tiny_run: Path, people: dict[str, Path]) -> tuple[Path, str]:
    """A photo of person_02 and what the library names it (a name or "unknown"): the page must
    show the same (whether a 20-epoch model names it right depends on one CPU's kernels)."""
    model = facecls.load_model(tiny_run)
    photo = photos_of(people["train"] / "person_02", 1)[0]
    return photo, model.predict([str(photo)])[0].identity


def visit(browser, url: str) -> None:  # noqa: ANN001 - tests.browser.Chromium
    """Navigate and wait for the page's load and its first requests (events of this visit only)."""
    browser.events.clear()
    browser.send("Page.navigate", {"url": url}, session=True)
    browser.wait_for("Page.loadEventFired")
    browser.settle(0.5)


def wait_text(browser, element: str) -> str:  # noqa: ANN001 - tests.browser.Chromium
    found = ""
    for _ in range(100):
        found = browser.evaluate(f"document.getElementById('{element}').textContent")
        if found:
            break
        browser.settle(0.1)
    return found


def pick(browser, field: str, photo: Path) -> None:  # noqa: ANN001 - tests.browser.Chromium
    """Pick ``photo`` in the page's file field ``field``."""
    node = browser.send("Runtime.evaluate", {"expression": f"document.getElementById('{field}')"},
                        session=True)["result"]["objectId"]  # fmt: skip
    browser.send("DOM.setFileInputFiles", {"files": [str(photo)], "objectId": node},
                 session=True)  # fmt: skip


def upload(browser, photo: Path) -> str:  # noqa: ANN001 - tests.browser.Chromium
    """Pick ``photo`` in the page's photo field; the names the page then shows."""
    pick(browser, "photo", photo)
    return wait_text(browser, "names-found")


def test_page_names_an_uploaded_photo_in_chromium(live_server, tiny_run, people, tmp_path):
    from tests.browser import Chromium, require_chromium

    binary = require_chromium()
    photo, name = named_photo(tiny_run, people)
    browser = Chromium(binary, tmp_path / "profile")
    try:
        visit(browser, live_server)
        listed = browser.evaluate("document.getElementById('names').children.length")
        assert listed == serve_fixtures.TRAINED
        assert browser.evaluate("document.getElementById('token-box').hidden") is True
        assert upload(browser, photo) == name
        assert browser.evaluate("document.getElementById('canvas').width") == 40
        assert browser.problems() == []  # no console error, CSP violation or exception
        # labels of faces side by side: the page places them by the annotated photos' rule
        from facecls.inference.annotate import place_labels

        boxes = [[100, 200, 120, 140], [300, 198, 120, 140], [520, 205, 100, 120]]
        sizes = [[520, 24], [200, 24], [180, 24]]
        spots = browser.evaluate(f"placeLabels({boxes}, {sizes}, 900, 700)")
        assert spots == [list(s) for s in place_labels(boxes, sizes, (900, 700))]
        assert spots[0] != [100, 176]  # not above its face, where it would cover the next label
        # and on crowded photos with fractional label widths (as measureText gives them)
        rng = np.random.default_rng(3)
        cases = [
            (np.round(rng.uniform(0, 300, (6, 4)) * [1, 1, 0.3, 0.3], 1).tolist(),
             np.round(rng.uniform(10, 120, (6, 2)) * [1, 0.25], 3).tolist())
            for _ in range(200)
        ]  # fmt: skip
        got = browser.evaluate(
            f"JSON.stringify({json.dumps(cases)}.map(([b, s]) => placeLabels(b, s, 320, 240)))"
        )
        want = [[list(p) for p in place_labels(b, s, (320, 240))] for b, s in cases]
        assert json.loads(got) == want
        assert all(u.startswith((live_server, "blob:")) for u in browser.requests())
        browser.screenshot(tmp_path / "page.png")
        # compare: one photo twice is the same person (one face each: no word on faces)
        pick(browser, "a", photo)
        pick(browser, "b", photo)
        browser.evaluate("document.getElementById('compare').click()")
        said = wait_text(browser, "verify-status")
        assert said.startswith("same person (similarity 1.000, threshold ") and said.endswith(")")
        assert browser.problems() == []
        # the face fields reach the API: a second face of a one-face photo is refused, saying so
        browser.evaluate("document.getElementById('face-b').value = '1'")
        browser.evaluate("document.getElementById('verify-status').textContent = ''")
        browser.evaluate("document.getElementById('compare').click()")
        assert wait_text(browser, "verify-status").startswith("face_b: the photo holds 1 face(s)")
        browser.evaluate("document.getElementById('face-b').value = '0'")
        # a refusal shows its message: the page reads the error body the API documents
        (tmp_path / "notes.jpg").write_text("not a photo")
        browser.evaluate("document.getElementById('predict-status').textContent = ''")
        upload(browser, tmp_path / "notes.jpg")
        assert "notes.jpg: not an image" in wait_text(browser, "predict-status")
    finally:
        browser.close()


TOKEN = "page-t0ken/+="


@pytest.mark.parametrize("live_server", [TOKEN], indirect=True)
def test_page_with_a_token_in_chromium(live_server, tiny_run, people, tmp_path):
    """With --token: the page takes the token from the URL fragment (which the server never
    sees), sends it with every request, and asks for it in a field after a 401."""
    from urllib.parse import quote

    from tests.browser import Chromium, require_chromium

    binary = require_chromium()
    photo, name = named_photo(tiny_run, people)
    browser = Chromium(binary, tmp_path / "profile")
    try:
        visit(browser, f"{live_server}#token={quote(TOKEN, safe='')}")
        assert browser.evaluate("location.href") == live_server  # gone from the address bar
        assert browser.evaluate("sessionStorage.getItem('facecls-token')") == TOKEN
        assert browser.evaluate("document.getElementById('names').children.length") == (
            serve_fixtures.TRAINED
        )
        assert browser.evaluate("document.getElementById('token-box').hidden") is True
        assert upload(browser, photo) == name
        assert browser.problems() == []
        sent = [e["params"]["request"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"]  # fmt: skip
        assert {r["url"] for r in sent} >= {live_server, live_server + "identities",
                                            live_server + "predict"}  # fmt: skip
        for r in sent:  # the token is in no URL; every data request carries it as the header
            assert "token" not in r["url"] and quote(TOKEN, safe="") not in r["url"]
            if r["url"].startswith(live_server) and r["url"] != live_server:
                assert r["headers"].get("Authorization") == f"Bearer {TOKEN}", r["url"]

        # a new tab's session without the token: the page loads, the 401 brings up the field
        browser.evaluate("sessionStorage.clear()")
        visit(browser, live_server)
        assert browser.evaluate("document.getElementById('token-box').hidden") is False
        assert browser.evaluate("document.getElementById('count').textContent") == (
            "This service needs its token"
        )
        assert browser.evaluate("document.getElementById('names').children.length") == 0
        # the only complaint is the refused request itself (Chromium logs every 401)
        assert all("401" in problem for problem in browser.problems()), browser.problems()
        browser.evaluate(
            f"document.getElementById('token').value = {json.dumps(TOKEN)};"
            "document.getElementById('token-form').requestSubmit()"
        )
        for _ in range(100):
            if browser.evaluate("document.getElementById('names').children.length"):
                break
            browser.settle(0.1)
        assert browser.evaluate("document.getElementById('names').children.length") == (
            serve_fixtures.TRAINED
        )
        assert browser.evaluate("document.getElementById('token-box').hidden") is True
        assert browser.evaluate("location.href") == live_server  # the form went nowhere
        assert browser.evaluate("sessionStorage.getItem('facecls-token')") == TOKEN
        browser.screenshot(tmp_path / "page-token.png")
    finally:
        browser.close()


def test_batcher_groups_requests_that_arrive_together() -> None:
    from facecls.service.batching import Batcher

    gate = threading.Event()
    sizes: list[int] = []

    def run(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gate.wait(5)  # the first batch waits until every request is queued
        sizes.append(len(faces))
        flat = faces.reshape(len(faces), -1).astype(np.float32)
        return flat[:, :1], flat * 2

    batcher = Batcher(run, max_faces=32)
    requests = [np.full((n, 3, 2, 2), i, np.uint8) for i, n in enumerate((1, 2, 1, 3, 1))]
    futures = [batcher.submit(r) for r in requests]
    gate.set()
    for request, future in zip(requests, futures, strict=True):
        logits, features = future.result(5)
        assert len(logits) == len(request) and np.all(features == 2 * request[0, 0, 0, 0])
    assert sum(sizes) == 8 and len(sizes) < len(requests)  # fewer passes than requests
    failing = Batcher(lambda faces: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.submit(requests[0]).result(5)
    batcher.close()
    failing.close()


def test_photo_batcher_detects_uploads_that_arrive_together() -> None:
    from facecls.service.batching import PhotoBatcher

    gate = threading.Event()
    batches: list[int] = []

    def detect(photos: list[np.ndarray]) -> list[list[int]]:
        gate.wait(5)  # the first batch waits until every upload is queued
        batches.append(len(photos))
        return [[int(p[0, 0, 0])] * int(p[0, 0, 1]) for p in photos]  # "faces" per photo

    detector = PhotoBatcher(detect, max_photos=4)
    photos = [np.full((3, 3, 3), 0, np.uint8) for _ in range(6)]
    for i, photo in enumerate(photos):
        photo[0, 0] = (i, i % 3, 0)  # photo i has i % 3 faces
    futures = [detector.submit(p) for p in photos]
    gate.set()
    for i, future in enumerate(futures):
        assert future.result(5) == [i] * (i % 3)  # each upload gets its own faces
    assert sum(batches) == 6 and max(batches) <= 4 and len(batches) < 6
    detector.close()


def test_a_bad_or_abandoned_submission_spoils_nothing_else() -> None:
    """One photo the detector fails on fails alone (its error to its caller only); a caller
    that gave up is skipped; the worker goes on."""
    from facecls.service.batching import PhotoBatcher

    gate = threading.Event()

    def detect(photos: list[np.ndarray]) -> list[str]:
        gate.wait(5)
        if any(p.sum() == 0 for p in photos):
            raise ValueError("photo 0 is black")
        return [f"faces of {int(p[0, 0, 0])}" for p in photos]

    detector = PhotoBatcher(detect, max_photos=8)
    blocker = detector.submit(np.full((2, 2, 3), 9, np.uint8))  # holds the worker at the gate
    photos = [np.full((2, 2, 3), i, np.uint8) for i in range(4)]
    futures = [detector.submit(p) for p in photos]
    futures[2].cancel()  # its caller gave up while it waited
    gate.set()
    assert blocker.result(5) == "faces of 9"
    with pytest.raises(ValueError, match="black"):
        futures[0].result(5)
    assert [futures[i].result(5) for i in (1, 3)] == ["faces of 1", "faces of 3"]
    assert detector.submit(photos[1]).result(5) == "faces of 1"  # the worker lives on
    detector.close()
