"""What turns a photo's faces into the library's embeddings: a backbone and its face pipeline.

By default the FaceNet backbone (CASIA-WebFace weights from the weights cache, or ``--weights``)
with the ``box`` pipeline that ``--faces detect`` gives FaceNet; ``--backbone sface`` OpenCV Zoo's
SFace with its ``arcface`` pipeline (112 px); with ``--model RUN`` a trained model's backbone and
pipeline (its flip averaging included). The :class:`ModelKey` names the embeddings: the
backbone, a digest of its weights tensors (the head excluded, so a linear probe on frozen FaceNet
keeps FaceNet's key unless its embeddings differ by flip averaging), the pipeline, the face size
and the dimension. A library remembers its backbone by that key, so ``search`` and a later
``index`` take the one it was made with.
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
from facecls.models import create_model, model_info
from facecls.models.cpu_pass import onnx_pass
from facecls.models.embedding import head_name, logits_and_features
from facecls.models.facenet import default_weights_path
from facecls.models.weights_store import find_weights, missing_message, offline_hint
from facecls.openset import FACE_BACKBONES, l2_normalize
from facecls.runtime import resolve_device

# The backbones a library can be made with alone (face embeddings; each brings its own face
# size, normalisation and pipeline).
BACKBONES: tuple[str, ...] = FACE_BACKBONES


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
        return given_weights(weights)
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


def check_choice(
    model: str | Path | None, weights: str | Path | None, backbone: str | None = None
) -> None:
    """Refuse ``--model`` with ``--weights`` or ``--backbone``: one embedder, so one would be
    ignored; and a backbone facecls does not have.

    Raises:
        ValueError: naming the options.
    """
    if backbone is not None and backbone not in BACKBONES:
        raise ValueError(f"--backbone {backbone}: choose one of {', '.join(BACKBONES)}")
    for option, value in (("--weights", weights), ("--backbone", backbone)):
        if model is not None and value is not None:
            raise ValueError(
                f"{option} {value} is for a library made by a backbone alone, and --model "
                f"{model} embeds with the run's own: give one of them"
            )


def library_backbone(key: ModelKey | None) -> str:
    """The backbone a library's faces were embedded by when it was one of :data:`BACKBONES`
    (a trained model's key names an architecture with a ``@`` or ``+flip``), else FaceNet."""
    return key.backbone if key is not None and key.backbone in BACKBONES else "facenet"


def given_weights(weights: str | Path) -> Path:
    """The ``--weights`` file given, once it is there (:class:`FileNotFoundError` if not)."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    return path


def find_backbone_weights(backbone: str, weights: str | Path | None) -> Path:
    """The weights file of ``backbone``: ``weights`` if given, else the stored one.

    Raises:
        FileNotFoundError: it is not there (the message says how to get it).
    """
    if backbone == "facenet":
        return find_facenet_weights(weights)
    if weights:
        return given_weights(weights)
    found = find_weights(backbone)
    if found is None:
        raise FileNotFoundError(missing_message(backbone))
    return found


def facenet_embedder(weights: str | Path | None = None, device: str = "auto") -> Embedder:
    """FaceNet's 512-d embeddings of faces cut by the ``box`` pipeline (no trained model)."""
    return backbone_embedder("facenet", weights, device)


def backbone_embedder(
    backbone: str = "facenet", weights: str | Path | None = None, device: str = "auto"
) -> Embedder:
    """A face backbone's unit embeddings of faces cut by its own pipeline (no trained model):
    ``facenet`` (512-d, 160 px, ``box``) or ``sface`` (128-d, 112 px, ``arcface``).

    Raises:
        ValueError: another backbone; FileNotFoundError: its weights are missing.
    """
    check_choice(None, weights, backbone)
    info = model_info(backbone)
    assert info is not None and info.normalization is not None  # both backbones fix theirs
    size, normalization = info.default_size, info.normalization
    where = resolve_device(device)
    model = create_model(backbone, num_classes=1, image_size=size,
                         weights=str(find_backbone_weights(backbone, weights)))  # fmt: skip
    model.eval().to(where)
    dim = int(model.get_submodule(head_name(model)).in_features)  # the embedding's
    pipeline = DETECT_PIPELINES[backbone]
    cutter = FaceCutter(pipeline, size, device=str(where))
    mean = torch.tensor(normalization[0]).view(1, 3, 1, 1) * 255
    std = torch.tensor(normalization[1]).view(1, 3, 1, 1) * 255
    # ONNX Runtime runs FaceNet 1.5x faster than PyTorch on the CPU (models/cpu_pass.py); one
    # thread per call, as the index embeds several photos' faces at once in its workers.
    fast = onnx_pass(model, size, images=1 << 30, threads=1) if where.type == "cpu" else None

    @torch.inference_mode()
    def embed(faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, dim), np.float32)
        pixels = (torch.from_numpy(np.ascontiguousarray(faces)).float() - mean) / std
        if fast is not None:
            features = fast(pixels.numpy())[1]
        else:
            features = logits_and_features(model, pixels.to(where))[1].float().cpu().numpy()
        return l2_normalize(features).astype(np.float32)

    key = ModelKey(backbone, backbone_digest(model), pipeline, size, dim)
    return Embedder(
        key,
        lambda photo, found: cutter.faces_of(photo, found, every_face=True),
        size,
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
