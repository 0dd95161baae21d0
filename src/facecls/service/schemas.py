"""The service's answers as pydantic models: the OpenAPI document, the routes, the page and the
Python client examples of ``docs/serve.md`` all use these, so what is published is what is sent.

Every refusal has the one body :class:`ErrorBody` (``{"error": {"code", "message"}}``); the codes
are listed in :data:`ERROR_CODES`. Success bodies name photos only by what the client sent or by
their path relative to the gallery, never by a path on the server.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# What each error code means; an answer's ``error.code`` is always one of these.
ERROR_CODES: dict[str, str] = {
    "bad_request": "the request could not be parsed (a broken multipart body)",
    "unauthorized": "the bearer token is missing or wrong",
    "not_found": "no such path, or no gallery for /search",
    "method_not_allowed": "the path does not take this method (the Allow header lists those it does)",
    "conflict": "the name is a trained identity's",
    "not_calibrated": "the served model lacks what the operation needs (a verify threshold, centroids)",
    "too_large": "the request or an upload is over the size limit",
    "unsupported_media_type": "a POST body that is not multipart/form-data",
    "invalid_request": "a field is missing or out of its declared range",
    "not_an_image": "an upload is not an image the service reads (the content decides, not the name)",
    "too_many_pixels": "an upload is over the pixel limit",
    "no_face": "no face found in an upload",
    "internal": "an unexpected error (the service's log has the detail)",
    "store_unavailable": "the enrollment store cannot be written (the service's log has the detail)",
}

# Photo formats an upload may be in (what facecls.data.images decodes; the content is sniffed).
IMAGE_TYPES = (
    "image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff",
    "image/x-portable-pixmap",
)  # fmt: skip


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Answer):
    """What went wrong: a stable code for programs, a sentence for people."""

    code: Annotated[str, Field(json_schema_extra={"enum": list(ERROR_CODES)})]
    message: str


class ErrorBody(_Answer):
    """The body of every refusal (4xx and 5xx)."""

    error: ErrorDetail


class Health(_Answer):
    """Is the service up, and with which model version."""

    status: Literal["ok"]
    architecture: str | None
    version: str = Field(description="`original`, or the enrolled version (`v000002`, ...)")
    identities: int = Field(ge=0, description="people the model names: trained and enrolled")


class Identities(_Answer):
    """The people the model names."""

    trained: list[str]
    enrolled: list[str]


Box = Annotated[
    list[Annotated[int, Field(ge=0)]],
    Field(min_length=4, max_length=4, description="x, y, width, height in the photo's pixels"),
]


class Candidate(_Answer):
    """One of a face's most likely identities."""

    identity: str
    probability: float = Field(ge=0, le=1)


class Face(_Answer):
    """One face of the photo and who it is."""

    box: Box
    identity: str = Field(description="the name, or `unknown`")
    decision: Literal["known", "unknown"]
    score: float = Field(description="the open-set score the decision compared with its threshold")
    top_k: list[Candidate] = Field(description="the most likely identities, most likely first")
    closest: str = Field(
        description="the identity the model found closest: the name, or for `unknown` its best "
        "guess"
    )
    threshold: float | None = Field(
        description="the open-set threshold `score` was compared with (null: none, every face "
        "is named)"
    )
    label: str = Field(
        description="what to show beside the face: the name, or `unknown — closest: NAME SCORE "
        "< THRESHOLD`"
    )


class Prediction(_Answer):
    """The faces of one photo."""

    width: int = Field(ge=1)
    height: int = Field(ge=1)
    faces: list[Face]
    message: str | None = Field(description="`no face found` when `faces` is empty, else null")


class ComparedFace(_Answer):
    """Which face of one photo `/verify` compared."""

    face: int = Field(
        ge=0, description="the face's index in the photo: 0 is the main face, in `/predict`'s "
        "order (the form's `face_a` / `face_b`)"
    )  # fmt: skip
    faces: int = Field(ge=1, description="faces the photo holds (1 without face detection)")
    box: Box | None = Field(
        description="the compared face's box, x, y, width, height as `/predict` gives it (null "
        "without face detection: the photo is one face, cut as training cut it)"
    )


class Verification(_Answer):
    """Are two photos' faces the same person."""

    similarity: float = Field(ge=-1, le=1, description="cosine of the two embeddings")
    threshold: float
    far: float | None = Field(
        description="false-accept rate the stored threshold was calibrated at; null when the "
        "request gave its own threshold"
    )
    same: bool = Field(description="similarity >= threshold")
    a: ComparedFace = Field(description="the face of photo `a` compared")
    b: ComparedFace = Field(description="the face of photo `b` compared")
    message: str | None = Field(
        description="for each photo holding several faces, which one was compared and how to "
        "choose another (`a: 2 faces; compared face 0 (box 212 96 170 190); another one: "
        "face_a=N (0 = the main face)`), one line each; null when both hold one face"
    )


class Match(_Answer):
    """A gallery face close to the query's."""

    photo: str = Field(
        description="the photo's path relative to the gallery folder ('/'-separated)"
    )
    face: int | None = Field(description="the face's index in its photo (with face detection)")
    box: Box | None
    similarity: float = Field(ge=-1, le=1, description="cosine with the query's embedding")
    same: bool | None = Field(
        description="similarity >= threshold: the same person as `facecls verify` decides "
        "(null when the model has no verify threshold)"
    )


class SearchAnswer(_Answer):
    """The gallery faces closest to the photo's face, most similar first."""

    gallery_faces: int = Field(ge=0)
    skipped: int = Field(ge=0, description="gallery files that are not usable photos")
    threshold: float | None = Field(
        description="the model's calibrated verify threshold the matches are marked against "
        "(null: none)"
    )
    matches: list[Match]


class Enrollment(_Answer):
    """A person enrolled into a new version of the served model."""

    name: str
    photos: int = Field(ge=1)
    version: str
    enrolled: list[str]
    # set when the person was enrolled from fewer photos than name people reliably
    advice: str | None = None
