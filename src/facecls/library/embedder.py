"""What turns a photo's faces into the library's embeddings: a backbone and its face pipeline.

By default the FaceNet backbone (CASIA-WebFace weights from the weights cache, or ``--weights``)
with the ``box`` pipeline that ``--faces detect`` gives FaceNet; with ``--model RUN`` a trained
model's backbone and pipeline (its flip averaging included). The :class:`ModelKey` names the
embeddings: the backbone, a digest of its weights tensors (the head excluded, so a linear probe
on frozen FaceNet keeps FaceNet's key unless its embeddings differ by flip averaging), the
pipeline, the face size and the dimension.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecls.config_rules import DETECT_PIPELINES
from facecls.data.faces import FaceCutter
from facecls.data.mtcnn import MTCNN
from facecls.data.photo_faces import Cut
from facecls.inference.faces import model_cut
from facecls.inference.model import FaceModel, load_model
from facecls.library.store_types import ModelKey
from facecls.models import create_model
from facecls.models.cpu_pass import onnx_pass
from facecls.models.embedding import head_name, logits_and_features
from facecls.models.facenet import NORMALIZATION, default_weights_path
from facecls.models.weights_store import find_weights, offline_hint
from facecls.openset import l2_normalize
from facecls.runtime import resolve_device

FACENET_SIZE = 160


@dataclass
class Embedder:
    """A backbone with its face pipeline, as the index uses them.

    Attributes:
        key: what the embeddings are (stored in the library, compared on every run).
        cut: cuts a photo's faces from its detections (main face first).
        face_px: side of the faces ``cut`` makes.
        embed: uint8 faces ``(N, 3, S, S)`` -> unit embeddings ``(N, D)`` float32.
        detector: the MTCNN, on the backbone's device.
    """

    key: ModelKey
    cut: Cut
    face_px: int
    embed: Callable[[np.ndarray], np.ndarray]
    detector: MTCNN


def backbone_digest(model: nn.Module) -> str:
    """sha256 over the backbone's tensors (names, shapes and bytes; the head left out)."""
    head = head_name(model) + "."
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(head) or not tensor.is_floating_point():
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def find_facenet_weights(weights: str | Path | None) -> Path:
    """The FaceNet weights file: ``weights`` if given, else the one ``facecls weights get
    facenet`` stored (or, before that command existed, the one in the old cache place).

    Raises:
        FileNotFoundError: neither is there (the message says how to get them).
    """
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--weights {path}: no such file")
        return path
    found = find_weights("facenet") or next(
        (p for p in (default_weights_path(),) if p.is_file()), None
    )
    if found is None:
        raise FileNotFoundError(
            "facecls index embeds faces with FaceNet, and its weights are not here yet: run "
            f"facecls weights get facenet ({offline_hint('facenet')}), or pass --weights PATH "
            "or --model RUN"
        )
    return found


def check_choice(model: str | Path | None, weights: str | Path | None) -> None:
    """Refuse ``--model`` and ``--weights`` together: one embedder, so one would be ignored.

    Raises:
        ValueError: naming both options.
    """
    if model is not None and weights is not None:
        raise ValueError(
            f"--weights {weights} is FaceNet's weights file and --model {model} embeds with the "
            "run's own backbone: give one of them"
        )


def facenet_embedder(weights: str | Path | None = None, device: str = "auto") -> Embedder:
    """FaceNet's 512-d embeddings of faces cut by the ``box`` pipeline (no trained model)."""
    where = resolve_device(device)
    model = create_model("facenet", num_classes=1, image_size=FACENET_SIZE,
                         weights=str(find_facenet_weights(weights)))  # fmt: skip
    model.eval().to(where)
    pipeline = DETECT_PIPELINES["facenet"]
    cutter = FaceCutter(pipeline, FACENET_SIZE, device=str(where))
    mean = torch.tensor(NORMALIZATION[0]).view(1, 3, 1, 1) * 255
    std = torch.tensor(NORMALIZATION[1]).view(1, 3, 1, 1) * 255
    # ONNX Runtime runs FaceNet 1.5x faster than PyTorch on the CPU (models/cpu_pass.py); one
    # thread per call, as the index embeds several photos' faces at once in its workers.
    fast = (
        onnx_pass(model, FACENET_SIZE, images=1 << 30, threads=1) if where.type == "cpu" else None
    )

    @torch.inference_mode()
    def embed(faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, 512), np.float32)
        pixels = (torch.from_numpy(np.ascontiguousarray(faces)).float() - mean) / std
        if fast is not None:
            features = fast(pixels.numpy())[1]
        else:
            features = logits_and_features(model, pixels.to(where))[1].float().cpu().numpy()
        return l2_normalize(features).astype(np.float32)

    key = ModelKey("facenet", backbone_digest(model), pipeline, FACENET_SIZE, 512)
    return Embedder(
        key,
        lambda photo, found: cutter.faces_of(photo, found, every_face=True),
        FACENET_SIZE,
        embed,
        MTCNN(where, fast=True),
    )


def model_embedder(run: str | Path, device: str = "auto", require_digest: bool = False) -> Embedder:
    """A trained model's embeddings (the input of its classifier) and face pipeline;
    ``require_digest`` refuses a bundle that records no weights digest."""
    model = load_model(run, device, require_digest=require_digest)
    return Embedder(
        _model_key(model), model_cut(model), model.image_size,
        lambda faces: l2_normalize(model.outputs(faces)[1]).astype(np.float32),
        MTCNN(model.cutter.device, fast=True),
    )  # fmt: skip


def _model_key(model: FaceModel) -> ModelKey:
    runner = model._runner
    network = getattr(runner, "model", None)
    if network is None:  # the ONNX backend: the exported file stands for the weights
        raise ValueError("index with the model's PyTorch weights (--backend torch)")
    name = str(model.meta["architecture"]) + ("+flip" if getattr(runner, "flip_tta", False) else "")
    dim = int(l2_normalize(model.outputs(np.zeros((1, 3, model.image_size, model.image_size),
                                                  np.uint8))[1]).shape[1])  # fmt: skip
    return ModelKey(name, backbone_digest(network), model.faces, model.image_size, dim)
