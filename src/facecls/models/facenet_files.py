"""FaceNet's weights file: its name, checksum and place in the cache, readable without PyTorch.

The weights store (``facecls weights list``/``get``) and the messages that point to it need these
and nothing of the network, so they live apart from :mod:`facecls.models.facenet`. Its file
checksum, :func:`sha256_of`, is also the one model bundles record
(:func:`facecls.bundle_meta.weights_digest`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from facecls.data.sources import default_cache_dir

WEIGHTS_FILE = "facenet-inception-resnet-v1-casia-webface.safetensors"
# sha256 of the CASIA-WebFace file facecls was tested with (model 20180408-102900, BN folded).
WEIGHTS_SHA256 = "ecda480cbb9a9a09805520e8d771f542699c5ef01050d7eab1f2b5af0170923f"


def default_weights_path() -> Path:
    """Where ``pretrained=True`` looks: ``$FACECLS_CACHE/weights/`` or ``~/.cache/facecls/weights/``."""
    return default_cache_dir() / "weights" / WEIGHTS_FILE


def missing_weights_message(path: Path | None = None) -> str:
    """One line: the default weights are not at ``path``, and how to get them (also offline)."""
    path = path or default_weights_path()
    return (
        f"FaceNet weights not found at {path}: run `facecls weights get facenet` (offline: copy "
        f"{WEIGHTS_FILE}, sha256 {WEIGHTS_SHA256}, into {path.parent}/), or pass --weights PATH"
    )


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
