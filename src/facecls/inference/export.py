"""Export a model bundle to ONNX, check it against PyTorch, and run it with onnxruntime.

The ONNX graph takes what the bundle's own preprocessing produces before normalisation, float32
RGB pixels in 0..255 ``(N, 3, S, S)``, and includes the normalisation (and the mirror-image
average when the bundle uses it), so another runtime needs only the pixels. It returns
``logits`` ``(N, C)`` and ``embedding`` ``(N, D)`` (the final Linear layer's input, not
normalised), so the open-set score and enrolled identities work on ONNX as on PyTorch. The bundle
(safetensors + JSON) stays the native format; ``model.onnx`` is written beside it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facecls.atomic import atomic_path
from facecls.bundle import WEIGHTS_NAME, load_bundle
from facecls.data.images import ImageError
from facecls.data.sources import DataError
from facecls.data.synthetic import SyntheticSpec, render_synthetic
from facecls.inference.backends import require_onnx
from facecls.inference.faces import expand_paths
from facecls.inference.model import ONNX_NAME, load_model, read_meta
from facecls.inference.outputs import check_output
from facecls.models.embedding import forward_tta
from facecls.progress import bar

OPSET = 17
_CHECK_CHUNK = 32  # check images per comparison: the bar moves, and memory stays small


class _Exportable(nn.Module):
    """Pixels 0..255 → normalise → model (→ mirror average) → (logits, embedding)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], flip: bool):
        super().__init__()
        self.model, self.flip = model, flip
        self.register_buffer("scale", torch.tensor([1 / (255 * s) for s in std]).view(1, 3, 1, 1))
        shift = [-m / s for m, s in zip(mean, std, strict=True)]
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_tta(self.model, images * self.scale + self.shift, self.flip)


@dataclass
class ExportResult:
    """The exported file and how closely it matches PyTorch on the check images.

    Attributes:
        max_abs_diff: largest absolute difference of logits and embeddings.
        top1_agreement: share of check images with the same top-1 identity.
        images: check images used; ``checked_on`` says what they were.
    """

    path: Path
    max_abs_diff: float
    top1_agreement: float
    images: int
    checked_on: str


def _check_images(model: Any, images: Sequence[str | Path] | None) -> tuple[np.ndarray, str]:
    """uint8 batch for the parity check: the given photos, else synthetic faces."""
    if images:
        paths = list(expand_paths(images))[:256]
        if not paths:
            raise DataError(f"--check {' '.join(map(str, images))}: no photo found there")
        try:
            return model.to_batch(paths), f"{len(paths)} given image(s)"
        except ImageError as error:
            raise DataError(
                f"--check {error.path}: {error}; give photos the model can read"
            ) from error

    spec = SyntheticSpec(
        num_classes=8, max_per_class=4, min_per_class=4, image_size=model.image_size
    )
    rendered, _, _ = render_synthetic(spec)
    return np.ascontiguousarray(rendered.transpose(0, 3, 1, 2)), "32 synthetic faces"


def _is_onnx(onnx: Any) -> Any:
    """Recognises an ONNX model file (an earlier export, which may be replaced)."""

    def recognise(path: Path) -> bool:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # protobuf's DecodeError, OSError, ...
            return False
        # protobuf parses many short byte strings without complaint: a graph must be there too
        return model.ir_version > 0 and len(model.graph.node) > 0

    return recognise


def export_onnx(
    model_path: str | Path,
    out: str | Path | None = None,
    check_images: Sequence[str | Path] | None = None,
    opset: int = OPSET,
    show_progress: bool = False,
) -> ExportResult:
    """Write ``model.onnx`` (or ``out``) and compare it with PyTorch on real or synthetic images.

    Args:
        model_path: a run folder or bundle.
        out: where to write; default ``model.onnx`` in the bundle folder (where
            ``predict --backend onnx`` looks for it).
        check_images: photos (files or folders) for the parity check; default synthetic faces.
        opset: ONNX opset version.
        show_progress: a bar over the check images compared.
    """

    onnx, onnxruntime = require_onnx()
    folder, meta = read_meta(model_path)
    target = Path(out) if out is not None else folder / ONNX_NAME
    check_output(target, "--out", "ONNX model", _is_onnx(onnx), [folder / WEIGHTS_NAME])
    bundle = load_bundle(folder, "cpu")
    reference = load_model(folder, device="cpu")
    batch, checked_on = _check_images(reference, check_images)  # a bad photo: before writing
    target.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Exportable(bundle.model, bundle.mean, bundle.std, bundle.flip_tta).eval()
    size = bundle.image_size
    example = torch.full((2, 3, size, size), 128.0)
    # Written, checked, fsynced and renamed: a failed export leaves no partial file behind.
    with atomic_path(target) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter needs no extra package (the dynamo one needs onnxscript).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
            input_names=["images"], output_names=["logits", "embedding"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
        )  # fmt: skip
        onnx.checker.check_model(str(tmp))

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    diff, same = 0.0, 0
    with bar(len(batch), "ONNX parity check", show_progress) as checked:
        for start in range(0, len(batch), _CHECK_CHUNK):
            part = batch[start : start + _CHECK_CHUNK]
            torch_logits, torch_features = reference.outputs(part)
            onnx_logits, onnx_features = session.run(None, {"images": part.astype(np.float32)})
            diff = max(
                diff,
                float(np.abs(onnx_logits - torch_logits).max()),
                float(np.abs(onnx_features - torch_features).max()),
            )
            same += int(np.sum(onnx_logits.argmax(1) == torch_logits.argmax(1)))
            checked.update(len(part))
    return ExportResult(target, diff, same / len(batch), len(batch), checked_on)
