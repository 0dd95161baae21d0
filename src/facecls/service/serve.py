"""``facecls serve``: check where it may listen, then run the service with uvicorn.

Bound to a loopback address (127.0.0.1, the default) only this machine can reach it. Any other
address exposes face recognition to the network, so it refuses to start without a token, and
every request must then carry ``Authorization: Bearer <token>``; the web page gets it from the
URL fragment printed at start-up (see :mod:`facecls.service.page`).
"""

from __future__ import annotations

import importlib
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from facecls.bundle import META_NAME
from facecls.bundle_meta import refuse_unverified
from facecls.data.library_tables import is_server_url
from facecls.data.sources import DataError, default_cache_dir
from facecls.inference.model import read_meta

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (only this machine can connect)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def resolve_token(token: str | None) -> str | None:
    """``token``, else ``$FACECLS_TOKEN`` (a token on the command line shows in ``ps``)."""
    return token if token is not None else os.environ.get("FACECLS_TOKEN") or None


def check_bind(host: str, token: str | None, port: int = 8000) -> None:
    """Refuse a port no socket can have, and to listen beyond this machine without a token.

    Raises:
        ValueError: ``port`` is not 1-65535; ``host`` is not loopback and no (non-empty) token
            is given.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be a TCP port, 1-65535, not {port}")
    if token is not None and not token.strip():
        raise ValueError("--token must not be empty")
    if not is_loopback(host) and not token:
        raise ValueError(
            f"--host {host} would let other machines send faces to this service; give --token "
            "(every request must then send 'Authorization: Bearer TOKEN') or bind 127.0.0.1"
        )


def page_url(host: str, port: int, token: str | None = None) -> str:
    """The page's address; with ``token``, in the fragment (``/#token=...``), which a browser
    keeps to itself: the page's script reads it, and it never reaches the server or its logs.

    A wildcard host (``0.0.0.0``, ``::``) is not an address to open: the page is shown at
    127.0.0.1, as this machine reaches it.
    """
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    fragment = f"#token={quote(token, safe='')}" if token else ""
    return f"http://{shown}:{port}/{fragment}"


def require_serve() -> tuple[Any, Any]:
    """Import FastAPI and uvicorn, or explain how to install the extra."""
    try:
        return importlib.import_module("fastapi"), importlib.import_module("uvicorn")
    except ImportError as error:
        raise ImportError(
            f"facecls serve needs FastAPI and uvicorn ({error.name} is missing): "
            "pip install 'facecls[serve]'"
        ) from error


def build_app(
    model: str | Path | None, token: str | None = None, store: str | Path | None = None,
    gallery: str | Path | None = None, detect: bool = False, device: str = "auto",
    log: Callable[[str], None] = print, console_log: bool = False, require_digest: bool = True,
    library: str | None = None,
) -> Any:  # fmt: skip
    """The FastAPI app serving ``model`` (see :mod:`facecls.service.app`); ``console_log``
    prints each access-log line (it always goes to ``serve.log`` in the store). With
    ``library``, its People page (:mod:`facecls.service.people_app`) too: at ``/`` without a
    model, else at ``/people/``.

    Raises:
        DataError: ``gallery`` is neither a folder of photos nor a ``facecls embed`` file.
        BundleError: ``require_digest`` (the default) and ``model.json`` records no weights
            digest: a service does not answer with weights nobody can verify.
    """
    if model is not None and require_digest:
        folder, meta = read_meta(model)
        refuse_unverified(meta, folder / META_NAME)
    if gallery is not None and not Path(gallery).exists():
        raise DataError(
            f"--gallery {gallery}: not found; give a folder of photos or a facecls embed file"
        )
    require_serve()
    if model is None and library is None:
        raise ValueError(
            "facecls serve needs a model (run folder or bundle), --library LIB, or both"
        )
    if model is None:  # the People page alone: the model's options would do nothing
        for flag, value in (("--store", store), ("--gallery", gallery), ("--detect", detect)):
            if value:
                raise ValueError(f"{flag} is for the model's service: serve --library without "
                                 "a model serves the People page only")  # fmt: skip
    people_app = None
    if library is not None:
        people_app = importlib.import_module("facecls.service.people_app")
        if model is None:  # the page alone: its access log in the library folder
            if is_server_url(library):
                folder = default_cache_dir() / "people"
                folder.mkdir(parents=True, exist_ok=True)
            elif not (folder := Path(library).expanduser()).is_dir():
                raise DataError(f"--library {library}: no face library there; make one with "
                                f"facecls index PHOTOS --library {library}")  # fmt: skip
            access = importlib.import_module("facecls.service.access_log")
            return people_app.create_people_app(
                library, token, access.AccessLog(folder, console_log)
            )
    service = importlib.import_module("facecls.service.app")  # needs the extra
    models = importlib.import_module("facecls.service.model_store")
    model_store = models.ModelStore(model, store, device, log)
    settings = service.Settings(token=token, gallery=None if gallery is None else Path(gallery),
                                detect=detect, console_log=console_log)  # fmt: skip
    app = service.create_app(model_store, settings)
    if people_app is not None:
        app.mount("/people", people_app.create_people_app(library, token))
    return app


def default_threads() -> int:
    """Threads for the network in a service: half the cores (at least one).

    The requests in flight already run as one batch, and decoding, HTTP and the event loop need
    cores too. Measured on a loaded 2-core CPU (``benchmarks/serve_load.py``): 2 intra-op
    threads spin against those and /predict ran at 20-50 requests/s with 1 s stalls; 1 thread,
    about 200 requests/s.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def serve(
    model: str | Path | None, host: str = "127.0.0.1", port: int = 8000,
    token: str | None = None, store: str | Path | None = None,
    gallery: str | Path | None = None, detect: bool = False, device: str = "auto",
    log: Callable[[str], None] = print, threads: int | None = None, quiet: bool = False,
    require_digest: bool = True, library: str | None = None,
) -> None:  # fmt: skip
    """``facecls serve``: run the service until stopped (Ctrl-C).

    Args:
        host: the address to listen on; anything but loopback requires ``token``.
        token: bearer token every request must carry (default ``$FACECLS_TOKEN``); the page's
            address with it in the fragment is printed once to stdout, never logged.
        store: folder of enrolled versions (default ``<bundle>.served`` beside the bundle).
        gallery: folder of photos (or ``facecls embed`` file) ``/search`` looks in.
        detect: find faces in uploads with OpenCV (``facecls[detect]``); otherwise each upload
            is one face, cut as training cut its photos.
        threads: PyTorch threads for the network (default :func:`default_threads`); this sets
            the process-wide ``torch.set_num_threads``, as a server owns its process.
        quiet: keep the access log off the console (it still goes to the store's
            ``serve.log``).
        require_digest: refuse a bundle whose ``model.json`` records no weights digest (the
            default; ``--no-require-digest`` serves it after a warning).
        library: a face library whose People page is served too (alone without ``model``).

    Raises:
        ValueError: a port outside 1-65535; a non-loopback ``host`` without ``token``; a port
            the service cannot listen on.
        ImportError: the ``serve`` extra is not installed.
    """
    token = resolve_token(token)
    check_bind(host, token, port)  # before anything is loaded
    _, uvicorn = require_serve()
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads or default_threads())
    app = build_app(model, token, store, gallery, detect, device, log, console_log=not quiet,
                    require_digest=require_digest, library=library)  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    needs = ", with the token" if token else ""
    if model is None:  # the People page alone
        log(f"Serving the People page of {library} on http://{shown}:{port}/; Ctrl-C stops")
    else:
        people = "; the People page at /people/" if library is not None else ""
        log(
            f"Serving on http://{shown}:{port}/ (OpenAPI: /openapi.json{needs}; access log: "
            f"{app.state.access_log.path}{people}); Ctrl-C stops"
        )
    if token:
        # The token is the caller's own (argument or $FACECLS_TOKEN). Shown once, on the console
        # only: print, not ``log``, which reaches the facecls logger and whatever files it feeds.
        print(f"Open the page with its token: {page_url(host, port, token)}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="critical", access_log=False)
    except SystemExit as stopped:  # uvicorn exits when it cannot listen (and logs nothing now)
        raise ValueError(
            f"--host {host} --port {port}: cannot listen there (in use by another program, or "
            "an address this machine does not have); choose another --port"
        ) from stopped
