"""Uploaded photos: size and pixel limits, content sniffed, faces cut as the model cuts them.

Uploads stay in memory and are dropped after the request; only an enrollment keeps anything,
and then only the person's embedding centroid, never the photo.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from facecls.data.images import ImageError, decode_bytes, image_formats
from facecls.service.errors import ApiError, error_bytes

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000


class _OverLimit(Exception):
    """Raised into the app when a body passes the limit (the app's answer is replaced)."""


def decode_upload(data: bytes, name: str, max_pixels: int = MAX_UPLOAD_PIXELS) -> np.ndarray:
    """RGB pixels of an upload; :class:`ApiError` 422 if it is no image or too many pixels."""
    label = name or "upload"
    try:
        with Image.open(io.BytesIO(data), formats=image_formats()) as probe:  # the header only
            width, height = probe.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ApiError(422, "not_an_image", f"{label}: not an image Pillow can read") from error
    if width * height > max_pixels:
        raise ApiError(
            422, "too_many_pixels",
            f"{label}: {width}x{height} pixels is over the {max_pixels:,}-pixel limit",
        )  # fmt: skip
    try:
        return decode_bytes(data, label)
    except ImageError as error:
        raise ApiError(422, "not_an_image", f"{label}: {error}") from error


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused (413) as it streams in,
    whether or not it declares its length, so an oversized upload is never read whole.

    Reading stops with an error at the limit; whatever the app then answers (the form parser
    turns errors into 400) is replaced by the 413.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen, over, answered = 0, False, False
        detail = error_bytes("too_large", f"request over the {self.limit:,}-byte limit")

        async def refuse() -> None:
            nonlocal answered
            if not answered:
                answered = True
                await send({"type": "http.response.start", "status": 413,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": detail})

        async def limited() -> dict[str, Any]:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _OverLimit
            return message

        async def guarded(message: dict[str, Any]) -> None:
            if over:
                await refuse()  # instead of the app's answer
            else:
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not over:
                raise
            await refuse()  # _OverLimit, or whatever the app made of it
