"""The JSON endpoints: their fields with the limits the service enforces, their answers
(``schemas.py``) and every refusal they can give (``errors.py``), as the OpenAPI document says.

No ``from __future__ import annotations`` here: the fields' limits come from the settings, so
their ``Annotated`` types are made inside :func:`add_routes` and FastAPI must see them as objects.
"""

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from facecls.bundle import BundleError
from facecls.inference.search import marked, verify_threshold
from facecls.inference.verify import compared_text, stored_threshold
from facecls.logs import logger
from facecls.numbers import NumberError
from facecls.service.errors import ApiError, responses
from facecls.service.model_store import NAME_MAX, NAME_PATTERN
from facecls.service.schemas import (
    IMAGE_TYPES,
    Candidate,
    ComparedFace,
    Enrollment,
    Face,
    Health,
    Identities,
    Match,
    Prediction,
    SearchAnswer,
    Verification,
)
from facecls.service.state import MAX_ENROLL_PHOTOS, Chosen, Service

MAX_TOP_K = 20  # /predict: names per face
MAX_MATCHES = 100  # /search: gallery faces per answer
# a face index's upper limit is the photo's face count: not in the document, which says only
# which photo (``x-face-of``) it indexes
FACE_FIELD = (
    "which face of `{0}` to compare: its index in the photo, in /predict's order (0, the "
    "default: the main face); beyond the photo's faces: 422"
)
POSTED = (400, 413, 415, 422)  # what any upload can be refused with


def photo_parts(*names: str) -> dict[str, Any]:
    """The ``openapi_extra`` saying that the form parts ``names`` are photos."""
    encoding = {name: {"contentType": ", ".join(IMAGE_TYPES)} for name in names}
    return {"requestBody": {"content": {"multipart/form-data": {"encoding": encoding}}}}


def not_null(schema: dict[str, Any]) -> None:
    """An optional form field is left out, never sent as null (a form cannot say null): its
    schema is the value's alone, without pydantic's ``anyOf [..., null]`` and null default."""
    schema.pop("default", None)
    kinds = [kind for kind in schema.pop("anyOf", []) if kind.get("type") != "null"]
    if kinds:
        schema.update(kinds[0])


def unit(value: float, low: float = -1.0) -> float:
    """A cosine or probability within its range: float32 rounding can step past 1."""
    return float(min(max(float(value), low), 1.0))


def relative_name(path: str, folder: Path) -> str:
    """``path`` relative to the gallery ``folder`` ('/'-separated), never the server's path."""
    found = Path(path)
    for base in (folder, folder.resolve()):
        for candidate in (found, found.resolve()):
            try:
                return candidate.relative_to(base).as_posix()
            except ValueError:
                continue
    return found.name  # not below the gallery (cannot happen): the bare name, not the path


def compared_message(chosen: dict[str, Chosen]) -> str | None:
    """Which face of each photo with several was compared, and how to choose another: the line
    ``facecls verify`` prints, with the form's field in place of ``--face``; ``None`` when each
    photo holds one face."""
    lines = [
        f"{name}: {compared_text(c.faces, c.face, c.box, f'face_{name}=N')}"
        for name, c in chosen.items()
        if c.faces > 1
    ]
    return "\n".join(lines) or None


def add_routes(app: FastAPI, service: Service) -> None:
    """Add the endpoints serving ``service`` to ``app``."""
    settings, store = service.settings, service.store
    about = (
        f"a photo ({', '.join(t.split('/')[1] for t in IMAGE_TYPES)}; its content decides, "
        f"not its name) of at most {settings.max_bytes:,} bytes and {settings.max_pixels:,} pixels"
    )
    limits = {"x-max-bytes": settings.max_bytes, "x-max-pixels": settings.max_pixels}
    photo = Annotated[UploadFile, File(description=about, json_schema_extra=limits)]

    @app.get("/health")
    async def health() -> Health:
        """Is the service up, and with which model version."""
        model = store.model
        return Health(status="ok", architecture=model.meta.get("architecture"),
                      version=store.version, identities=len(model.class_names))  # fmt: skip

    @app.get("/identities")
    async def identities() -> Identities:
        """The people the model names: trained, then enrolled."""
        model = store.model
        return Identities(trained=model.trained_names, enrolled=model.enrolled_names)

    @app.post("/predict", responses=responses(*POSTED), openapi_extra=photo_parts("file"))
    async def predict(
        file: photo,
        top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K, description="names per face")] = 3,
    ) -> Prediction:
        """The faces of one photo with their names (or ``unknown``) and boxes."""
        found = await service.read(file)
        height, width = found.rgb.shape[:2]
        if len(found.faces) == 0:
            return Prediction(width=width, height=height, faces=[], message="no face found")
        logits, features = await service.outputs(found.faces)
        answers = store.model.decide(logits, features, top_k=top_k)
        faces = [
            Face(box=list(box), identity=a.identity, decision=a.decision, score=a.score,
                 top_k=[Candidate(identity=n, probability=unit(p, 0)) for n, p in a.top_k],
                 closest=a.closest, threshold=a.threshold, label=a.label())
            for box, a in zip(found.boxes, answers, strict=True)
        ]  # fmt: skip
        return Prediction(width=width, height=height, faces=faces, message=None)

    @app.post("/verify", responses=responses(*POSTED, 409), openapi_extra=photo_parts("a", "b"))
    async def verify(
        a: photo, b: photo,
        threshold: Annotated[float | None, Form(
            ge=-1, le=1, allow_inf_nan=False, json_schema_extra=not_null,
            description="cosine threshold (default: the one calibrated with the model)",
        )] = None,
        face_a: Annotated[int, Form(ge=0, description=FACE_FIELD.format("a"),
                                    json_schema_extra={"x-face-of": "a"})] = 0,
        face_b: Annotated[int, Form(ge=0, description=FACE_FIELD.format("b"),
                                    json_schema_extra={"x-face-of": "b"})] = 0,
    ) -> Verification:  # fmt: skip
        """Are the faces of two photos the same person (cosine similarity)? Of a photo with
        several faces, the main one unless ``face_a``/``face_b`` chooses; the answer says which."""
        try:
            limit, far = stored_threshold(store.model, threshold, "the threshold field")
        except (BundleError, NumberError) as error:  # none stored, or model.json's not finite
            raise ApiError(
                409, "not_calibrated",
                "the served model has no calibrated verification threshold: send a threshold",
            ) from error  # fmt: skip
        chosen = {"a": await service.chosen_face(a, face_a, "face_a"),
                  "b": await service.chosen_face(b, face_b, "face_b")}  # fmt: skip
        vectors = await service.embeddings(np.stack([c.pixels for c in chosen.values()]))
        similarity = unit(vectors[0] @ vectors[1])
        compared = {
            name: ComparedFace(face=c.face, faces=c.faces, box=None if c.box is None else list(c.box))
            for name, c in chosen.items()
        }  # fmt: skip
        return Verification(similarity=similarity, threshold=limit, far=far,
                            same=similarity >= limit, message=compared_message(chosen),
                            **compared)  # fmt: skip

    @app.post("/search", responses=responses(*POSTED, 404), openapi_extra=photo_parts("file"))
    async def search(
        file: photo,
        top_k: Annotated[int, Form(ge=1, le=MAX_MATCHES, description="faces listed")] = 5,
    ) -> SearchAnswer:
        """The gallery faces closest to the photo's face (needs ``--gallery``)."""
        gallery = await run_in_threadpool(service.gallery)
        vector = await service.first_embedding(file)
        try:
            threshold, _ = verify_threshold(store.model)
        except NumberError:  # a model.json whose verify threshold is not a number: unmarked
            threshold = None
        # a facecls embed file's photos are named relative to the file's folder
        root = gallery.folder if gallery.folder.is_dir() else gallery.folder.parent
        matches = [
            Match(photo=relative_name(m.path, root), face=m.face,
                  box=None if m.box is None else list(m.box), similarity=unit(m.similarity),
                  same=m.same)
            for m in marked(await run_in_threadpool(service.nearest, gallery, vector, top_k),
                            threshold)  # fmt: skip
        ]  # fmt: skip
        return SearchAnswer(gallery_faces=len(gallery.faces), skipped=len(gallery.skipped),
                            threshold=threshold, matches=matches)  # fmt: skip

    @app.post("/enroll", responses=responses(*POSTED, 409, 503), openapi_extra=photo_parts("files"))
    async def enroll(
        name: Annotated[str, Form(
            min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN,
            description="the person's name: letters, digits, spaces or . ' - _",
        )],
        files: Annotated[list[UploadFile], File(
            min_length=1, max_length=MAX_ENROLL_PHOTOS,
            description=f"1-{MAX_ENROLL_PHOTOS} photos of the person (of a photo with several "
            "faces, the one that agrees with the others): " + about.removeprefix("a photo "),
            json_schema_extra=limits,
        )],
    ) -> Enrollment:  # fmt: skip
        """Add a person from a few photos (of a photo with several faces, the one that agrees
        with the others); kept on disk."""
        faces = [await service.faces(upload) for upload in files]
        try:
            answer = await run_in_threadpool(store.enroll, name, faces)
        except OSError as error:  # the store folder went away, a full disk, a read-only mount
            logger().error(f"facecls serve: /enroll could not write {store.root}: {error}")
            raise ApiError(
                503, "store_unavailable",
                "the enrollment store cannot be written; the service's log has the detail",
            ) from error  # fmt: skip
        return Enrollment.model_validate(answer)
