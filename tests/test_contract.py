"""The service keeps its word: Schemathesis finds nothing against it (with and without a token),
every answer it gives, refusals included, is what ``/openapi.json`` says (checked with
openapi-core), and no answer names a folder of the server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from facecls.service.app import Settings, create_app
from facecls.service.model_store import CURRENT, ModelStore
from facecls.service.schemas import (
    ERROR_CODES,
    Enrollment,
    ErrorBody,
    Health,
    Identities,
    Prediction,
    SearchAnswer,
    Verification,
)
from facecls.service.serve import build_app
from tests import serve_fixtures

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
TOKEN = "c0ntract-t0ken"
ANSWERS = {
    "/health": Health, "/identities": Identities, "/predict": Prediction,
    "/verify": Verification, "/search": SearchAnswer, "/enroll": Enrollment,
}  # fmt: skip
DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


def gallery_of(people: dict[str, Path], folder: Path) -> Path:
    """A gallery of three photos of one trained person, one of them in a subfolder."""
    photos = sorted((people["train"] / "person_03").iterdir())[:3]
    (folder / "trip").mkdir(parents=True)
    for photo in photos[:2]:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(photos[2], folder / "trip" / photos[2].name)
    return folder


@pytest.mark.parametrize("token", [None, TOKEN], ids=["loopback", "token"])
def test_schemathesis_finds_nothing(tiny_run, people, tmp_path: Path, token: str | None) -> None:
    """Every check Schemathesis has, on every operation (a fixed seed, 40 examples each):
    answers match the document, valid requests are accepted, invalid ones refused, no 5xx, and
    with a token no operation answers without it."""
    gallery = gallery_of(people, tmp_path / "gallery")
    app = build_app(tiny_run, token=token, store=tmp_path / "store", gallery=gallery, device="cpu")
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    with serve_fixtures.serving(app) as url:
        done = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{url}openapi.json",
             "--checks", "all", "--seed", "1", "--max-examples", "40", "--no-color",
             "--generation-database", "none", "--request-timeout", "60", *auth],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        )  # fmt: skip
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    assert "No issues found" in report and "6 selected" in report, report[-3000:]
    log = (tmp_path / "store" / "serve.log").read_text().splitlines()
    assert len(log) > 200  # Schemathesis's requests, one line each
    if token:
        assert not any(TOKEN in line for line in log)


def photo_bytes(people: dict[str, Path], person: str = "person_01", index: int = 0) -> bytes:
    return sorted((people["train"] / person).iterdir())[index].read_bytes()


@pytest.fixture()
def tour(tiny_run, people, tmp_path: Path) -> dict[str, object]:
    """Every operation answering each status it declares that a test can bring about, through
    the real app (the token on): ``answers`` (method, path, response), ``spec``, the folders."""
    gallery = gallery_of(people, tmp_path / "gallery")
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    settings = Settings(token=TOKEN, gallery=gallery, max_bytes=100_000, max_pixels=500_000)
    ok = {"Authorization": f"Bearer {TOKEN}"}
    photo, other = photo_bytes(people), photo_bytes(people, "person_03", 1)
    answers: list[tuple[str, str, object]] = []
    with TestClient(create_app(store, settings), raise_server_exceptions=False) as client:

        def call(method: str, path: str, headers: dict | None = None, **kw: object) -> None:
            sent = ok if headers is None else headers
            answers.append((method, path, client.request(method, path, headers=sent, **kw)))

        spec = client.get("/openapi.json", headers=ok).json()
        call("GET", "/health")
        call("GET", "/health", {})  # 401
        call("GET", "/identities", {"Authorization": "Bearer wrong"})  # 401
        call("GET", "/identities")
        call("POST", "/predict", files={"file": ("p.png", photo)}, data={"top_k": "2"})
        call("POST", "/predict", files={"file": ("notes.jpg", b"plain text")})  # 422
        call("POST", "/predict", files={"file": ("p.png", photo)}, data={"top_k": "0"})  # 422
        call("POST", "/predict", files={"file": ("big.png", b"\0" * 100_001)})  # 413
        call("POST", "/predict", json={"file": "p.png"})  # 415
        call(
            "POST",
            "/predict",
            content=b"--x\r\nbroken",
            headers={**ok, "content-type": "multipart/form-data"},
        )  # 400: no boundary
        call("POST", "/verify", files={"a": ("a", photo), "b": ("b", other)})
        call("POST", "/verify", files={"a": ("a", photo), "b": ("b", other)},
             data={"threshold": "0.3"})  # fmt: skip
        call("POST", "/verify", files={"a": ("a", photo), "b": ("b", other)},
             data={"threshold": "nan"})  # 422  # fmt: skip
        call("POST", "/verify", files={"a": ("a", photo)})  # 422: b is missing
        call("POST", "/verify", files={"a": ("a", photo), "b": ("b", other)},
             data={"face_a": "0", "face_b": "0"})  # fmt: skip
        call("POST", "/verify", files={"a": ("a", photo), "b": ("b", other)},
             data={"face_b": "1"})  # 422: photo b holds one face  # fmt: skip
        call("POST", "/search", files={"file": ("q.png", other)}, data={"top_k": "3"})
        call("POST", "/search", files={"file": ("q.png", other)}, data={"top_k": "101"})
        name_taken = {"name": "person_00"}
        call("POST", "/enroll", data={"name": "Ada"}, files=[("files", ("a.png", photo))])
        call("POST", "/enroll", data=name_taken, files=[("files", ("a.png", photo))])  # 409
        call("POST", "/enroll", data={"name": "../etc"}, files=[("files", ("a.png", photo))])
        call("POST", "/enroll", data={"name": "Bo"}, files=[("files", ("a.png", photo))] * 21)
        # the store taken away under the running service: 503, not a bare 500
        shutil.rmtree(store.root)
        store.root.write_text("not a folder any more")
        call("POST", "/enroll", data={"name": "Di"}, files=[("files", ("d.png", photo))])
        store.root.unlink()
    # a model without a verify threshold (one trained before facecls verify), no gallery
    old = ModelStore(tiny_run, tmp_path / "old", device="cpu")
    version = (old.root / CURRENT).read_text().strip()
    meta_path = old.root / version / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("verify")
    meta_path.write_text(json.dumps(meta))
    old = ModelStore(tiny_run, tmp_path / "old", device="cpu")
    with TestClient(create_app(old, Settings())) as client:
        for method, path, kw in (
            ("POST", "/verify", {"files": {"a": ("a", photo), "b": ("b", other)}}),  # 409
            ("POST", "/search", {"files": {"file": ("q.png", other)}}),  # 404: no gallery
        ):
            answers.append((method, path, client.request(method, path, **kw)))
    return {"answers": answers, "spec": spec, "folders": [tmp_path, tiny_run, gallery]}


def test_every_answer_is_what_the_document_says(tour) -> None:
    """openapi-core reads each answer as a client generated from /openapi.json would: the
    status is declared for the operation, and the body has the declared schema."""
    openapi = OpenAPI.from_dict(tour["spec"])
    statuses: dict[str, set[int]] = {}
    for method, path, response in tour["answers"]:
        request = MockRequest("http://testserver", method.lower(), path)
        result = MockResponse(response.content, response.status_code,
                              dict(response.headers), response.headers["content-type"])  # fmt: skip
        openapi.validate_response(request, result)  # raises on any difference
        statuses.setdefault(path, set()).add(response.status_code)
        # and as the Python client of docs/serve.md reads it (the models forbid extra fields)
        model = ANSWERS[path] if response.status_code == 200 else ErrorBody
        model.model_validate_json(response.content)
        if response.status_code >= 400:
            assert response.json()["error"]["code"] in ERROR_CODES
    assert statuses == {
        "/health": {200, 401}, "/identities": {200, 401},
        "/predict": {200, 400, 413, 415, 422}, "/verify": {200, 409, 422},
        "/search": {200, 404, 422}, "/enroll": {200, 409, 422, 503},
    }  # fmt: skip
    declared = {
        path: {int(code) for op in ops.values() for code in op["responses"]}
        for path, ops in tour["spec"]["paths"].items()
    }
    for path, seen in statuses.items():
        assert seen <= declared[path]


def test_no_answer_names_a_folder_of_the_server(tour) -> None:
    """Search names photos relative to the gallery; no answer (refusals included) carries the
    absolute path of the gallery, the store, the run or the user's home."""
    texts = [response.text for _, _, response in tour["answers"]]
    for folder in tour["folders"]:
        for form in {str(folder), str(Path(folder).resolve())}:
            assert not [t for t in texts if form in t], form
    assert not [t for t in texts if str(Path.home()) + os.sep in t]
    search = next(
        r.json() for m, p, r in tour["answers"] if p == "/search" and r.status_code == 200
    )
    assert sorted(m["photo"] for m in search["matches"]) == sorted(
        p.relative_to(tour["folders"][2]).as_posix()
        for p in tour["folders"][2].rglob("*.png")
    )  # fmt: skip


def test_the_document_is_served_and_no_page_loads_from_elsewhere(tiny_run, tmp_path) -> None:
    """No /docs or /redoc (Swagger UI and ReDoc load their scripts from a CDN); /openapi.json
    describes every operation with its limits."""
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    settings = Settings(max_bytes=123_456, max_pixels=654_321)
    with TestClient(create_app(store, settings)) as client:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            gone = client.get(path)
            assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
            assert "cdn" not in gone.text
        spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/identities", "/predict", "/verify", "/search",
                                  "/enroll"}  # fmt: skip
    forms = {name: spec["components"]["schemas"][name]["properties"]
             for name in spec["components"]["schemas"] if name.startswith("Body_")}  # fmt: skip
    predict = forms["Body_predict_predict_post"]
    assert predict["file"]["x-max-bytes"] == 123_456 and predict["file"]["x-max-pixels"] == 654_321
    assert (predict["top_k"]["minimum"], predict["top_k"]["maximum"]) == (1, 20)
    assert forms["Body_search_search_post"]["top_k"]["maximum"] == 100
    enroll = forms["Body_enroll_enroll_post"]
    assert enroll["name"]["maxLength"] == 64 and "pattern" in enroll["name"]
    assert (enroll["files"]["minItems"], enroll["files"]["maxItems"]) == (1, 20)
    threshold = forms["Body_verify_verify_post"]["threshold"]
    assert threshold == {**threshold, "type": "number", "minimum": -1, "maximum": 1}
    for photo in ("a", "b"):  # which photo's faces it indexes (their count is the photo's)
        face = forms["Body_verify_verify_post"][f"face_{photo}"]
        assert face == {**face, "type": "integer", "minimum": 0, "default": 0, "x-face-of": photo}
    answer = spec["components"]["schemas"]["Verification"]
    assert {"a", "b", "message"} <= set(answer["required"])
    encoding = spec["paths"]["/enroll"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "image/jpeg" in encoding["encoding"]["files"]["contentType"]
    for ops in spec["paths"].values():
        for op in ops.values():
            ok = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert ok["$ref"].startswith("#/components/schemas/")  # a model, not "object"
            for code, answer in op["responses"].items():
                if code != "200":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}


def test_the_python_client_of_the_docs_runs(tiny_run, people, tmp_path, monkeypatch) -> None:
    """docs/serve.md's Python example, as written, against a live service."""
    text = DOCS.read_text()
    start = text.index("```python", text.index("The same models in Python"))
    example = text[start + len("```python") : text.index("```", start + 3)]
    gallery = gallery_of(people, tmp_path / "gallery")
    (tmp_path / "party.jpg").write_bytes(photo_bytes(people))
    shutil.copy(sorted(gallery.glob("*.png"))[0], tmp_path / "who.jpg")
    app = build_app(tiny_run, store=tmp_path / "store", gallery=gallery, device="cpu")
    printed: list[str] = []
    monkeypatch.chdir(tmp_path)
    with serve_fixtures.serving(app) as url:
        code = example.replace("http://127.0.0.1:8000", url.rstrip("/"))
        exec(compile(code, str(DOCS), "exec"), {"print": lambda *a: printed.append(repr(a))})
    assert len(printed) == 2 and "'trip/" in printed[1]
