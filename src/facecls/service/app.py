"""The local HTTP service: a FastAPI app with JSON endpoints, its OpenAPI document and a web page.

Endpoints (``routes.py``): ``GET /health``, ``GET /identities``, ``POST /predict`` (one photo →
its faces with names or ``unknown``), ``POST /verify`` (two photos), ``POST /search`` (a photo
against the gallery), ``POST /enroll`` (a name and a few photos, kept as a new bundle version);
``GET /`` (the page) and ``GET /openapi.json`` (the contract: every answer, refusals included,
is described there and sent as described). There is no ``/docs``: Swagger UI would load its
script from a CDN, and the page is the service's own interface. The network runs in
:class:`~facecls.service.batching.Batcher`'s worker thread, the face detector in
``PhotoBatcher``'s, decoding in the thread pool: the event loop only moves bytes. Needs the
``facecls[serve]`` extra.

With a token every request but ``GET /`` (the page, which holds no data and asks for the token)
must carry ``Authorization: Bearer <token>``; /health and /openapi.json included. Every request
leaves one line in the access log (``access_log.py``).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from facecls.logs import logger
from facecls.service.access_log import AccessLog, AccessLogMiddleware
from facecls.service.errors import STATUS_TEXT, CatchAll, Scrubber, error_response, install_handlers
from facecls.service.model_store import ModelStore
from facecls.service.page import CSP, PAGE
from facecls.service.routes import add_routes
from facecls.service.state import Service, Settings
from facecls.service.uploads import BodyLimit

__all__ = ["Service", "Settings", "create_app"]

FORM = "multipart/form-data"
_ERROR_SCHEMA = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def create_app(store: ModelStore, settings: Settings | None = None) -> FastAPI:
    """The FastAPI application serving ``store``'s model (see the module docstring)."""
    settings = settings or Settings()
    service = Service(store, settings)
    access = AccessLog(store.root, settings.console_log)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()
        access.close()

    app = FastAPI(
        title="facecls", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Name, compare and enroll faces, locally. Every refusal answers "
        '`{"error": {"code", "message"}}`.',
    )  # fmt: skip
    app.state.service = service
    app.state.access_log = access
    add_routes(app, service)
    posted = {r.path for r in app.routes if "POST" in (getattr(r, "methods", None) or ())}

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        # the page itself holds no data and must load to ask for the token; all else needs it
        is_page = request.method == "GET" and request.url.path in ("/", "/people/")
        if settings.token is not None and not is_page:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return error_response(401, "unauthorized", "missing or wrong bearer token",
                                      headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = request.headers.get("content-length")
        # an enrollment carries several photos; anything bigger is refused before it is read
        if length and length.isdigit() and int(length) > settings.max_request:
            return error_response(413, "too_large", "request too large")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and request.url.path in posted and media != FORM:
            return error_response(415, "unsupported_media_type",
                                  "send the fields as multipart/form-data")  # fmt: skip
        return await call_next(request)

    # a body that does not say its length is cut off as it streams in
    app.add_middleware(BodyLimit, limit=settings.max_request)
    app.add_middleware(CatchAll, log=logger())
    app.add_middleware(AccessLogMiddleware, log=access)  # outermost: sees every answer
    base = store.source
    install_handlers(app, Scrubber({
        "store": store.root, "model": base, "run": base.parent, "gallery": settings.gallery,
        "home": Path.home(),
    }))  # fmt: skip

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": CSP,
                                           "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})  # fmt: skip

    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_document(generate(), settings.token is not None)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    return app


def finish_document(schema: dict[str, Any], token: bool) -> dict[str, Any]:
    """What FastAPI cannot say by itself: the 500 any operation may answer and, with a token,
    the bearer scheme and the 401 of every operation."""
    operations = [op for path in schema["paths"].values() for op in path.values()]
    for operation in operations:
        operation["responses"]["500"] = {"description": STATUS_TEXT[500], "content": _ERROR_SCHEMA}
    if token:
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        schema["security"] = [{"bearer": []}]
        for operation in operations:
            operation["responses"]["401"] = {
                "description": STATUS_TEXT[401], "content": _ERROR_SCHEMA,
                "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
            }  # fmt: skip
    return schema
