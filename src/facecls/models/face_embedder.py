"""A face embedding network to compare the faces of training photos with (``data/face_choice.py``).

Choosing, in a photo with several faces, the one of the person its folder names needs faces
compared by identity: FaceNet's CASIA-WebFace weights do that. A run that starts from them uses
its own weights file; any other run uses them when they sit in the weights cache
(:func:`facecls.models.facenet.default_weights_path`), and else keeps the main face.
The network loads only when faces must be compared (a cached choice needs no pass).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from facecls.config import TrainConfig
from facecls.data.face_choice import FaceEmbedder
from facecls.models.cpu_pass import FrozenPass
from facecls.models.facenet import NORMALIZATION, default_weights_path, facenet
from facecls.runtime import Runtime


def weights_for_choice(train: TrainConfig) -> Path | None:
    """The FaceNet weights file the faces of a run are compared with, if there is one."""
    if train.model == "facenet" and train.weights:
        path = Path(train.weights).expanduser()
        return path if path.is_file() else None
    cached = default_weights_path()
    return cached if cached.is_file() else None


def facenet_embedder(weights: Path, image_size: int, device: str = "cpu") -> FaceEmbedder:
    """FaceNet with ``weights`` as a :class:`FaceEmbedder` of uint8 faces ``(N, 3, S, S)``."""
    stat = weights.stat()
    tag = f"facenet:{weights.name}:{stat.st_size}:{stat.st_mtime_ns}:{image_size}"
    key = hashlib.sha256(tag.encode()).hexdigest()[:16]
    mean, std = NORMALIZATION

    def embed(images: np.ndarray) -> np.ndarray:
        model = facenet(num_classes=1, image_size=image_size, weights=weights).eval()
        runtime = Runtime(torch.device(device))
        forward = FrozenPass(model.to(runtime.device), runtime, image_size, len(images))
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
        parts = []
        for start in range(0, len(images), 64):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + 64]))
            pixels = (batch.float() * scale + shift).to(runtime.device)
            parts.append(forward(pixels)[1].float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 512), np.float32)

    return FaceEmbedder(embed, key, f"FaceNet CASIA-WebFace, {weights.name}")


def choice_embedder(train: TrainConfig, image_size: int, device: str = "cpu"):
    """A function that makes the :class:`FaceEmbedder` of a run (``None`` without weights);
    what :func:`facecls.data.dataset.load_dataset` takes as ``embedder``."""

    def make() -> FaceEmbedder | None:
        weights = weights_for_choice(train)
        # FaceNet needs at least 75 px; the faces are compared at the run's image size
        if weights is None or image_size < 75:
            return None
        return facenet_embedder(weights, image_size, device)

    return make
