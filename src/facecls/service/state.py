"""What the service holds between requests: its settings, the model store, the batching workers
and the gallery; and how an upload becomes faces (off the event loop)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import UploadFile
from fastapi.concurrency import run_in_threadpool

from facecls.inference.photos import Photo, finds_faces, photo_faces, photo_of
from facecls.inference.search import Gallery, Match, model_key, open_gallery
from facecls.openset import l2_normalize
from facecls.service.batching import Batcher, PhotoBatcher
from facecls.service.errors import ApiError
from facecls.service.model_store import ModelStore
from facecls.service.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, decode_upload

MAX_ENROLL_PHOTOS = 20


@dataclass
class Settings:
    """What the app serves and its limits.

    Attributes:
        token: bearer token every request but the page must carry (``None``: loopback only).
        gallery: folder of photos (or ``facecls embed`` file) ``/search`` looks in.
        detect: find every face in uploads (MTCNN); otherwise each upload is one face.
        max_bytes: the most bytes of one uploaded photo.
        max_pixels: the most pixels of one uploaded photo.
        console_log: print each access-log line (it always goes to the store's ``serve.log``).
    """

    token: str | None = field(default=None, repr=False)  # never in a printed or logged repr
    gallery: Path | None = None
    detect: bool = False
    max_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_UPLOAD_PIXELS
    console_log: bool = False

    @property
    def max_request(self) -> int:
        """The most bytes of a request body: an enrollment's photos and its form's overhead."""
        return self.max_bytes * MAX_ENROLL_PHOTOS + 65536


@dataclass
class Chosen:
    """One face of an upload: its pixels, uint8 ``(3, S, S)``, its index in the photo (main
    face first), how many faces the photo holds, and its box (``None`` without detection)."""

    pixels: np.ndarray
    face: int
    faces: int
    box: tuple[int, int, int, int] | None


class Service:
    """The state behind the endpoints: the model store, the batchers, the gallery."""

    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.batcher = Batcher(lambda faces: self.store.model.outputs(faces))
        # uploads arriving together share a run of the face detector, as faces share a pass
        self.detector = PhotoBatcher(lambda photos: self.store.model.faces_in_photos(photos))
        self.detect = settings.detect
        self._gallery: Gallery | None = None
        self._gallery_lock = threading.Lock()  # a refresh adds to the index: never mid-search

    async def read(self, upload: UploadFile) -> Photo:
        """Bytes (size-limited), pixels (sniffed, pixel-limited) and faces of one upload."""
        data = await upload.read(self.settings.max_bytes + 1)
        name = upload.filename or "upload"
        if len(data) > self.settings.max_bytes:
            raise ApiError(
                413, "too_large", f"{name}: over the {self.settings.max_bytes:,}-byte upload limit"
            )
        model = self.store.model
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
        """Logits ``(N, C)`` and embeddings ``(N, D)`` of uint8 faces, batched with others."""
        return await asyncio.wrap_future(self.batcher.submit(faces))

    async def found(self, upload: UploadFile) -> Photo:
        """The upload read and its faces found, main face first; 422 ``no_face`` without one."""
        photo = await self.read(upload)
        if len(photo.faces) == 0:
            raise ApiError(422, "no_face", f"{upload.filename or 'upload'}: no face found")
        return photo

    async def faces(self, upload: UploadFile) -> np.ndarray:
        """The upload's faces, uint8 ``(N, 3, S, S)``, main face first; 422 ``no_face`` without
        one."""
        return (await self.found(upload)).faces

    async def chosen_face(self, upload: UploadFile, index: int = 0, field: str = "") -> Chosen:
        """Face ``index`` of the upload (0: the main face; ``/predict``'s order), how many faces
        it holds and its box; 422 ``no_face`` without one, and 422 naming the form ``field``
        when the photo holds no face ``index``."""
        photo = await self.found(upload)
        count = len(photo.faces)
        if not 0 <= index < count:
            raise ApiError(
                422, "invalid_request",
                f"{field or 'face'}: the photo holds {count} face(s), numbered 0 to {count - 1} "
                "(0 = the main face)",
            )  # fmt: skip
        # without detection the photo is one face, cut as training cut it: no box to report
        detected = finds_faces(self.store.model, self.detect)
        return Chosen(photo.faces[index], index, count, photo.boxes[index] if detected else None)

    async def embeddings(self, faces: np.ndarray) -> np.ndarray:
        """Unit embeddings ``(N, D)`` (float64) of uint8 faces ``(N, 3, S, S)``."""
        _, features = await self.outputs(faces)
        return l2_normalize(features.astype(np.float64))

    async def first_embedding(self, upload: UploadFile) -> np.ndarray:
        """The unit embedding of the upload's main face."""
        face = await self.chosen_face(upload)
        return (await self.embeddings(face.pixels[None]))[0]

    def gallery(self) -> Gallery:
        """The gallery (a folder, or a ``facecls embed`` file), brought up to date, with its
        vector index built or read here, in a worker thread, not on the event loop."""
        if self.settings.gallery is None:
            raise ApiError(404, "not_found", "no gallery: start the service with --gallery DIR")
        with self._gallery_lock:
            model = self.store.model
            # a new enrolled version shares the network: the same gallery, nothing re-embedded
            if self._gallery is None or self._gallery.model_key != model_key(model):
                self._gallery = open_gallery(model, self.settings.gallery, self.settings.detect)
            # the first search embeds the whole gallery: shown on the console unless --quiet
            gallery = self._gallery.refresh(show_progress=self.settings.console_log)
            if gallery.faces:
                gallery.index()
            return gallery

    def nearest(self, gallery: Gallery, vector: np.ndarray, top_k: int) -> list[Match]:
        """The gallery faces nearest ``vector``, searched under the gallery's lock."""
        with self._gallery_lock:
            return gallery.nearest(vector, top_k)

    def close(self) -> None:
        """Stop the workers (the detector first: its faces go to the batcher)."""
        self.detector.close()
        self.batcher.close()
