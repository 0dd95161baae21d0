"""One error body for every refusal: ``{"error": {"code", "message"}}`` (see ``schemas.py``).

The app's own refusals raise :class:`ApiError`; the library's (:class:`DataError`,
:class:`BundleError`), FastAPI's validation errors and Starlette's 404/405/400 are turned into the
same body here, so a client generated from ``/openapi.json`` parses every answer. An unexpected
error answers 500 with that body and leaves one line in the log, not a traceback on the console.
No message carries a path on the server: the known folders are replaced by labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from facecls.bundle import BundleError
from facecls.data.sources import DataError
from facecls.service.model_store import NameTaken
from facecls.service.schemas import ErrorBody

# What a status means, for the OpenAPI document.
STATUS_TEXT: dict[int, str] = {
    400: "the request could not be parsed",
    401: "the bearer token is missing or wrong",
    404: "not found",
    409: "the served model cannot do this, or the name is taken",
    413: "the request or an upload is over the size limit",
    415: "the body is not multipart/form-data",
    422: "a field is missing or out of range, or an upload is no usable photo",
    500: "an unexpected error",
    503: "the enrollment store cannot be written",
}
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class ApiError(ValueError):
    """A refusal with its HTTP status and error code (see ``schemas.ERROR_CODES``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def error_body(code: str, message: str) -> dict[str, Any]:
    """The error body (checked against :class:`ErrorBody`)."""
    return ErrorBody.model_validate({"error": {"code": code, "message": message}}).model_dump()


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error body as a response."""
    return JSONResponse(error_body(code, message), status, headers=headers)


def error_bytes(code: str, message: str) -> bytes:
    """The error body, encoded (for the ASGI middlewares that answer by themselves)."""
    return JSONResponse(error_body(code, message)).body


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entry of a route: each status with the error body."""
    return {s: {"model": ErrorBody, "description": STATUS_TEXT[s]} for s in statuses}


class Scrubber:
    """Replaces the server's folders in a message by labels (``<gallery>/a.jpg``).

    Args:
        folders: label -> folder; each is matched as given and resolved.
    """

    def __init__(self, folders: dict[str, Path | None]) -> None:
        pairs: list[tuple[str, str]] = []
        for label, folder in folders.items():
            if folder is None:
                continue
            for form in {str(folder), str(Path(folder).resolve())}:
                if form not in (".", "", "/"):
                    pairs.append((form, f"<{label}>"))
        # longest first: a store inside the run folder is named as the store
        self.pairs = sorted(pairs, key=lambda pair: -len(pair[0]))

    def __call__(self, message: str) -> str:
        for path, label in self.pairs:
            message = message.replace(path, label)
        return message


def _validation_message(errors: Iterable[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")  # never the input itself
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI, scrub: Callable[[str], str]) -> None:
    """Answer every known refusal with the error body."""

    def answer(status: int, code: str, message: str, **kw: Any) -> JSONResponse:
        return error_response(status, code, scrub(message), **kw)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return answer(error.status, error.code, str(error))

    @app.exception_handler(NameTaken)
    async def name_taken(_: Request, error: NameTaken) -> JSONResponse:
        return answer(409, "conflict", str(error))

    @app.exception_handler(DataError)
    async def data_error(_: Request, error: DataError) -> JSONResponse:
        return answer(422, "invalid_request", str(error))

    @app.exception_handler(BundleError)
    async def bundle_error(_: Request, error: BundleError) -> JSONResponse:
        return answer(409, "not_calibrated", str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return answer(422, "invalid_request", _validation_message(error.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "bad_request")
        return answer(error.status_code, code, str(error.detail), headers=error.headers)


class CatchAll:
    """ASGI middleware: an unexpected error answers 500 with the error body and leaves one line
    in ``log`` (the traceback at DEBUG), instead of a bare 500 and a console traceback."""

    def __init__(self, app: Any, log: logging.Logger) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as error:  # the backstop: one line, the body a client can parse
            where = f"{scope.get('method')} {scope.get('path')}"
            self.log.error(f"facecls serve: {where} failed: {type(error).__name__}: {error}")
            self.log.debug("traceback", exc_info=error)
            if not started:
                body = error_bytes("internal", "unexpected error; the service's log has the detail")
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
