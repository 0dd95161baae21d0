"""A tiny trained run shared by the verify, search and service tests (session-scoped fixtures).

Six synthetic people are trained on (32 px, a few epochs); three more are never trained on: they
are enrolled through the service or used as strangers. Import the fixtures into a test module.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from facecls.cli import main

TRAINED, NEW = 6, 3


@pytest.fixture(scope="session")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``train/`` (6 people), ``new/`` (3 people never trained on), and ``base`` (their parent)."""
    from facecls.data.synthetic import SyntheticSpec, write_synthetic_folder

    base = tmp_path_factory.mktemp("serve-people")
    spec = SyntheticSpec(
        num_classes=TRAINED + NEW, max_per_class=24, min_per_class=20, image_size=40, seed=5
    )
    root = write_synthetic_folder(base / "all", spec)
    names = sorted(p.name for p in root.iterdir())
    for name in names[:TRAINED]:
        shutil.copytree(root / name, base / "train" / name)
    for name in names[TRAINED:]:
        shutil.copytree(root / name, base / "new" / name)
    return {"train": base / "train", "new": base / "new", "base": base}


@pytest.fixture(scope="session")
def tiny_run(people: dict[str, Path]) -> Path:
    """The run folder of a small baseline trained on ``people['train']`` (one thread: faster on
    a busy 2-core machine for a model this small)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main([
            "--quiet", "train", "--data", str(people["train"]), "--image-size", "32",
            "--epochs", "20", "--batch-size", "16", "--lr", "1e-3", "--recipe", "report",
            # the fast recipe's augmentation, which this model was always trained with (the
            # report's recipe rotates only)
            "--hflip", "--scale", "0.1", "--translate", "0.06",
            "--runs-dir", str(people["base"] / "runs"), "--name", "serve",
        ])  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return people["base"] / "runs" / "serve"


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
