"""The local HTTP service: FastAPI app with JSON endpoints, OpenAPI docs and a web page.

Endpoints: ``GET /health``, ``GET /identities``, ``POST /predict`` (one photo → its faces with
names or ``unknown``), ``POST /verify`` (two photos), ``POST /search`` (a photo against the
gallery), ``POST /enroll`` (a name and a few photos, kept as a new bundle version), ``GET /`` (the
page), ``GET /docs`` (OpenAPI). The network runs in :class:`~facecls.service.batching.Batcher`'s
worker thread, the face detector in ``PhotoBatcher``'s (uploads arriving together are detected as
one batch), decoding in the thread pool: the event loop only moves bytes. Needs the
``facecls[serve]`` extra.

With a token every request but ``GET /`` (the page, which holds no data and asks for the token)
must carry ``Authorization: Bearer <token>``; /health and the OpenAPI docs included.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from facecls.bundle import BundleError
from facecls.data.sources import DataError
from facecls.inference.photos import Photo, finds_faces, photo_faces, photo_of
from facecls.inference.search import Gallery, Match, model_key, open_gallery
from facecls.inference.verify import stored_threshold
from facecls.openset import l2_normalize
from facecls.service.batching import Batcher, PhotoBatcher
from facecls.service.model_store import ModelStore
from facecls.service.page import CSP, PAGE
from facecls.service.uploads import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    BodyLimit,
    UploadError,
    decode_upload,
)

MAX_ENROLL_PHOTOS = 20


@dataclass
class Settings:
    """What the app serves and its limits."""

    token: str | None = field(default=None, repr=False)  # never in a printed or logged repr
    gallery: Path | None = None
    detect: bool = False
    max_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_UPLOAD_PIXELS


class Service:
    """The state behind the endpoints: the model store, the batcher, the gallery."""

    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.batcher = Batcher(lambda faces: self.store.model.outputs(faces))
        # uploads arriving together share a run of the face detector, as faces share a pass
        self.detector = PhotoBatcher(lambda photos: self.store.model.faces_in_photos(photos))
        self.detect = settings.detect
        self._gallery: Gallery | None = None
        self._gallery_lock = threading.RLock()  # search() holds it around gallery()

    async def read(self, upload: UploadFile) -> Photo:
        """Bytes (size-limited), pixels (sniffed, pixel-limited) and faces of one upload."""
        data = await upload.read(self.settings.max_bytes + 1)
        if len(data) > self.settings.max_bytes:
            raise UploadError(
                413, f"{upload.filename}: over the {self.settings.max_bytes:,}-byte upload limit"
            )
        model = self.store.model
        name = upload.filename or "upload"
        if not finds_faces(model, self.detect):
            return await run_in_threadpool(
                lambda: photo_faces(
                    model, decode_upload(data, name, self.settings.max_pixels), False
                )
            )
        rgb = await run_in_threadpool(decode_upload, data, name, self.settings.max_pixels)
        found = await asyncio.wrap_future(self.detector.submit(rgb))
        return photo_of(model, rgb, found)

    async def outputs(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return await asyncio.wrap_future(self.batcher.submit(faces))

    async def first_embedding(self, upload: UploadFile) -> np.ndarray:
        photo = await self.read(upload)
        if len(photo.faces) == 0:
            raise UploadError(422, f"{upload.filename}: no face found")
        _, features = await self.outputs(photo.faces[:1])
        return l2_normalize(features.astype(np.float64))[0]

    def gallery(self) -> Gallery:
        if self.settings.gallery is None:
            raise UploadError(404, "no gallery: start the service with --gallery DIR")
        with self._gallery_lock:
            model = self.store.model
            # a new enrolled version shares the network: the same gallery, nothing re-embedded
            if self._gallery is None or self._gallery.model_key != model_key(model):
                self._gallery = open_gallery(model, self.settings.gallery, self.settings.detect)
            gallery = self._gallery.refresh()
            if gallery.faces:
                gallery.index()  # built (or read) here, in a worker thread, not on the event loop
            return gallery

    def search(self, vector: np.ndarray, top_k: int) -> tuple[Gallery, list[Match]]:
        """The gallery, brought up to date, and its faces nearest ``vector``. Under the gallery's
        lock: a refresh adds to the vector index, which must not be searched meanwhile."""
        with self._gallery_lock:
            gallery = self.gallery()
            return gallery, gallery.nearest(vector, top_k)


def create_app(store: ModelStore, settings: Settings | None = None) -> FastAPI:
    """The FastAPI application serving ``store``'s model (see the module docstring)."""
    settings = settings or Settings()
    service = Service(store, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.detector.close()  # first: a finishing detection's faces go to the batcher
        service.batcher.close()

    app = FastAPI(
        title="facecls", version="1", lifespan=lifespan,
        description="Name, compare and enroll faces, locally.",
    )  # fmt: skip
    app.state.service = service

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        # the page itself holds no data and must load to ask for the token; all else needs it
        is_page = request.method == "GET" and request.url.path in ("/", "/people/")
        if settings.token is not None and not is_page:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return JSONResponse({"detail": "missing or wrong bearer token"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = request.headers.get("content-length")
        # an enrollment carries several photos; anything bigger is refused before it is read
        if length and length.isdigit() and int(length) > settings.max_bytes * MAX_ENROLL_PHOTOS:
            return JSONResponse({"detail": "request too large"}, 413)
        return await call_next(request)

    # and a body that does not say its length is cut off as it streams in
    app.add_middleware(BodyLimit, limit=settings.max_bytes * MAX_ENROLL_PHOTOS + 65536)

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, error.status)

    @app.exception_handler(DataError)
    async def data_error(_: Request, error: DataError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, 422)

    @app.exception_handler(BundleError)
    async def bundle_error(_: Request, error: BundleError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, 409)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": CSP,
                                           "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})  # fmt: skip

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Is the service up, and with which model version."""
        model = store.model
        return {"status": "ok", "architecture": model.meta.get("architecture"),
                "version": store.version, "identities": len(model.class_names)}  # fmt: skip

    @app.get("/identities")
    async def identities() -> dict[str, list[str]]:
        """The people the model names: trained, then enrolled."""
        model = store.model
        return {"trained": model.trained_names, "enrolled": model.enrolled_names}

    @app.post("/predict")
    async def predict(
        file: Annotated[UploadFile, File()], top_k: Annotated[int, Form()] = 3
    ) -> dict[str, Any]:
        """The faces of one photo with their names (or ``unknown``) and boxes."""
        photo = await service.read(file)
        height, width = photo.rgb.shape[:2]
        if len(photo.faces) == 0:
            return {"width": width, "height": height, "faces": [], "message": "no face found"}
        logits, features = await service.outputs(photo.faces)
        answers = store.model.decide(logits, features, top_k=max(1, min(top_k, 20)))
        faces = [
            {"box": list(box), "identity": a.identity, "decision": a.decision,
             "score": a.score, "top_k": [[n, p] for n, p in a.top_k]}
            for box, a in zip(photo.boxes, answers, strict=True)
        ]  # fmt: skip
        return {"width": width, "height": height, "faces": faces}

    @app.post("/verify")
    async def verify(
        a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()],
        threshold: Annotated[float | None, Form()] = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Are the faces of two photos the same person (cosine similarity)?"""
        limit, far = stored_threshold(store.model, threshold)
        vec_a = await service.first_embedding(a)
        vec_b = await service.first_embedding(b)
        similarity = float(vec_a @ vec_b)
        return {"similarity": similarity, "threshold": limit, "far": far,
                "same": similarity >= limit}  # fmt: skip

    @app.post("/search")
    async def search(
        file: Annotated[UploadFile, File()], top_k: Annotated[int, Form()] = 5
    ) -> dict[str, Any]:
        """The gallery faces closest to the photo's face."""
        vector = await service.first_embedding(file)
        gallery, matches = await run_in_threadpool(service.search, vector, max(1, min(top_k, 100)))
        return {"gallery_faces": len(gallery.faces), "skipped": len(gallery.skipped),
                "matches": [{"path": m.path, "face": m.face, "box": m.box,
                             "similarity": m.similarity} for m in matches]}  # fmt: skip

    @app.post("/enroll")
    async def enroll(
        name: Annotated[str, Form()], files: Annotated[list[UploadFile], File()]
    ) -> dict[str, Any]:
        """Add a person from a few photos (the main face of each); kept on disk."""
        if len(files) > MAX_ENROLL_PHOTOS:
            raise UploadError(413, f"at most {MAX_ENROLL_PHOTOS} photos per enrollment")
        faces = []
        for upload in files:
            photo = await service.read(upload)
            if len(photo.faces) == 0:
                raise UploadError(422, f"{upload.filename}: no face found")
            faces.append(photo.faces[0])
        return await run_in_threadpool(store.enroll, name, np.stack(faces))

    return app
