"""The People page's service: a face library's clusters as sheets of faces, named and fixed in
the browser (``facecls serve --library LIB``; with a model too, under ``/people/``).

JSON endpoints (relative to the page): ``GET api/people`` (people and clusters, most faces
first), ``GET api/people/{id}/faces`` (largest face first), ``GET api/faces/{id}/thumb`` (a JPEG
of the face), ``GET api/photos/{id}`` (the photo, at most 1600 px), and the actions ``POST
api/people/{id}/name``, ``api/merge``, ``api/faces/move``, ``api/faces/remove``,
``api/people/{id}/forget``, ``api/undo`` — each one undoable action of
:mod:`facecls.library.people`, one transaction, so two tabs naming one cluster at once are
serialised. Names reach the page as JSON and are shown with ``textContent``: never parsed as
HTML. The same token rule as the model service: with a token every request but the page must
carry ``Authorization: Bearer``.
"""

from __future__ import annotations

import hmac
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, ImageOps
from pydantic import BaseModel

from facecls.data.faces import box_of, lfw_square
from facecls.data.library_tables import PhotoFiles, is_server_url
from facecls.data.sources import default_cache_dir
from facecls.library import people
from facecls.library.store import LibraryError, open_library
from facecls.logs import logger
from facecls.service.access_log import AccessLog, AccessLogMiddleware
from facecls.service.errors import CatchAll, Scrubber, error_response, install_handlers
from facecls.service.people_page import CSP, PAGE

THUMB = 112  # px, the side of a face on the sheets
PHOTO_MAX = 1600  # px, the longer side of a photo shown on click
SHEET_FACES = 60  # faces per person sent to the page (largest first)
_THUMBS_KEPT = 4096


class Named(BaseModel):
    name: str


class Merge(BaseModel):
    people: list[int]
    into: int


class Faces(BaseModel):
    faces: list[int]
    to: int | None = None


class Hidden(BaseModel):
    hidden: bool = True


def _decoded(path: Path, longest: int | None = None) -> Image.Image:
    """A photo as displayed (Exif orientation applied); JPEGs decoded at a reduced size when
    ``longest`` allows (Pillow's draft mode)."""
    image = Image.open(path)
    if longest is not None:
        image.draft("RGB", (longest, longest))
    return ImageOps.exif_transpose(image).convert("RGB")


class PeopleService:
    """The library behind the page; each call opens it (connections are per request)."""

    def __init__(self, location: str) -> None:
        self.location = location
        with open_library(location):  # refused now, in one line, if it is not a library
            pass
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._files = PhotoFiles(default_cache_dir())
        self._lock = threading.Lock()

    def listing(self) -> list[dict[str, Any]]:
        with open_library(self.location) as lib:
            return [{"id": p.id, "name": p.name, "faces": p.faces}
                    for p in lib.people(hidden=False)]  # fmt: skip

    def faces(self, person_id: int) -> list[dict[str, Any]]:
        with open_library(self.location) as lib:
            found = sorted(lib.faces(person_id=person_id), key=lambda f: (-f.size, f.id))
        return [{"id": f.id, "photo": f.photo_id, "size": f.size, "source": f.source}
                for f in found[:SHEET_FACES]]  # fmt: skip

    def _photo_path(self, lib: Any, photo_id: int) -> Path:
        for path in lib.photo(photo_id)["paths"]:
            file = self._files(path)
            if file is not None:
                return file
        raise LibraryError(f"photo {photo_id}: no readable file holds it any more")

    def thumb(self, face_id: int) -> bytes:
        with self._lock:
            if face_id in self._thumbs:
                self._thumbs.move_to_end(face_id)
                return self._thumbs[face_id]
        with open_library(self.location) as lib:
            found = lib.faces(ids=[face_id])
            if not found:
                raise LibraryError(f"no face {face_id}")
            face = found[0]
            path = self._photo_path(lib, face.photo_id)
            shown = lib.photo(face.photo_id)
        image = _decoded(path, max(THUMB * 8, int(max(shown["width"], shown["height"]) / 8)))
        scale = image.width / max(1, shown["width"])
        box = tuple(v * scale for v in face.box)
        pixels = lfw_square(np.asarray(image), box_of(box), THUMB, enlarge=1.4)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=88)
        with self._lock:
            self._thumbs[face_id] = out.getvalue()
            while len(self._thumbs) > _THUMBS_KEPT:
                self._thumbs.popitem(last=False)
        return out.getvalue()

    def photo(self, photo_id: int) -> bytes:
        with open_library(self.location) as lib:
            path = self._photo_path(lib, photo_id)
        image = _decoded(path, PHOTO_MAX)
        image.thumbnail((PHOTO_MAX, PHOTO_MAX))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        return out.getvalue()

    def act(self, action: str, *args: Any, **kwargs: Any) -> str:
        with open_library(self.location) as lib:
            if action == "undo":
                done = lib.undo()
                return "nothing to undo" if done is None else f"undone: {done}"
            return getattr(people, action)(lib, *args, **kwargs)


def create_people_app(
    location: str, token: str | None = None, access_log: AccessLog | None = None
) -> FastAPI:
    """The People page and its API for the library at ``location`` (see the module notes).

    Refusals answer the service's error body (``{"error": {"code", "message"}}``), with the
    library's folder and the home folder named by label, never by path. ``access_log``: where
    each request leaves a line when the page is served alone (mounted beside a model, the
    model service's log has them).
    """
    service = PeopleService(location)
    local = None if is_server_url(location) else Path(location).expanduser()
    scrub = Scrubber({"library": local, "home": Path.home()})
    app = FastAPI(title="facecls people", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        # the page holds no data and must load to ask for the token; the API needs it
        is_page = request.method == "GET" and "/api/" not in request.url.path
        if token is not None and not is_page:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error_response(401, "unauthorized", "missing or wrong bearer token",
                                      headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return await call_next(request)

    @app.exception_handler(LibraryError)
    async def library_error(_: Request, error: LibraryError) -> JSONResponse:
        return error_response(422, "invalid_request", scrub(str(error)))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": CSP,
                                           "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})  # fmt: skip

    @app.get("/api/people")
    async def listing() -> list[dict[str, Any]]:
        return await run_in_threadpool(service.listing)

    @app.get("/api/people/{person_id}/faces")
    async def faces(person_id: int) -> list[dict[str, Any]]:
        return await run_in_threadpool(service.faces, person_id)

    @app.get("/api/faces/{face_id}/thumb")
    async def thumb(face_id: int) -> Response:
        jpeg = await run_in_threadpool(service.thumb, face_id)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})

    @app.get("/api/photos/{photo_id}")
    async def photo(photo_id: int) -> Response:
        return Response(await run_in_threadpool(service.photo, photo_id), media_type="image/jpeg")

    async def act(action: str, *args: Any, **kwargs: Any) -> dict[str, str]:
        return {"done": await run_in_threadpool(service.act, action, *args, **kwargs)}

    @app.post("/api/people/{person_id}/name")
    async def name(person_id: int, body: Named) -> dict[str, str]:
        return await act("name", person_id, body.name)

    @app.post("/api/merge")
    async def merge(body: Merge) -> dict[str, str]:
        return await act("merge", body.people, body.into)

    @app.post("/api/faces/move")
    async def move(body: Faces) -> dict[str, str]:
        if body.to is None:
            raise LibraryError("move needs a person to move the faces to")
        return await act("move", body.faces, body.to)

    @app.post("/api/faces/remove")
    async def remove(body: Faces) -> dict[str, str]:
        return await act("remove", body.faces)

    @app.post("/api/people/{person_id}/forget")
    async def forget(person_id: int, body: Hidden) -> dict[str, str]:
        return await act("forget", person_id, body.hidden)

    @app.post("/api/undo")
    async def undo() -> dict[str, str]:
        return await act("undo")

    install_handlers(app, scrub)
    app.add_middleware(CatchAll, log=logger())
    if access_log is not None:
        app.add_middleware(AccessLogMiddleware, log=access_log)  # outermost: every answer
    return app
