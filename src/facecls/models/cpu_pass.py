"""A frozen network's forward pass on the CPU through ONNX Runtime.

Passes that only read a network (the frozen backbone's embedding pass of a linear probe, the
calibration pass over a run's training part) run about 1.5x faster on ONNX Runtime's CPU kernels
than on PyTorch's: FaceNet at 160 px embedded 107.8 against 71.2 images/s (channels-last) on the
2-core dev VM (fp32, batches of 16, both on 2 threads; ``benchmarks/frozen_pass_speed.py``), with
the same embeddings to 1.9e-6. The network is exported in
memory (TorchScript-based exporter, about 1.5 s for FaceNet); nothing is written to disk.

When ``onnx``/``onnxruntime`` are not installed, or the export fails, :func:`onnx_pass` answers
``None``; :class:`FrozenPass`, what the passes call, then runs PyTorch as before.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from facecls.models.embedding import logits_and_features
from facecls.runtime import Runtime

# (normalised float32 images (N, 3, S, S)) -> (logits (N, C), embeddings (N, D)), float32
Pass = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

# Passes over fewer images stay on PyTorch: the export costs more than it saves there.
MIN_IMAGES = 512


class _Outputs(nn.Module):
    """Logits and embeddings of ``model`` as two outputs (what :func:`logits_and_features` gives)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_and_features(self.model, images)


def onnx_pass(
    model: nn.Module, image_size: int, images: int, threads: int | None = None
) -> Pass | None:
    """``model`` (eval mode, CPU, fp32) as an ONNX Runtime session on ``threads`` threads
    (PyTorch's thread count by default) for a pass over ``images`` images, or ``None`` when
    ONNX Runtime cannot run it or the pass is shorter than :data:`MIN_IMAGES`."""
    if images < MIN_IMAGES:
        return None
    try:
        import onnxruntime
    except ImportError:
        return None
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    example = torch.zeros(1, 3, image_size, image_size)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on its own deprecation
            torch.onnx.export(
                _Outputs(model).cpu(), (example,), buffer, dynamo=False, opset_version=17,
                input_names=["images"], output_names=["logits", "embedding"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"},
                              "embedding": {0: "batch"}},
            )  # fmt: skip
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )
    except Exception:  # noqa: BLE001 - any exporter/runtime gap: PyTorch runs it instead
        return None
    finally:
        model.train(was_training)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = session.run(
            None, {"images": np.ascontiguousarray(images, dtype=np.float32)}
        )
        return logits, embedding

    return run


class FrozenPass:
    """A frozen network's forward pass over many batches, on the faster engine: ONNX Runtime for
    an fp32 pass of at least :data:`MIN_IMAGES` images on the CPU (:func:`onnx_pass`), else
    PyTorch with the runtime's memory format and autocast.

    Args:
        images: how many images the whole pass will run (views included).
    """

    def __init__(self, model: nn.Module, runtime: Runtime, image_size: int, images: int) -> None:
        self.runtime = runtime
        self.memory_format = (
            torch.channels_last if runtime.channels_last else torch.contiguous_format
        )
        model.eval()
        self._onnx = None
        if runtime.device.type == "cpu" and runtime.dtype is None:
            self._onnx = onnx_pass(model, image_size, images)
        self.model = model if self._onnx else model.to(memory_format=self.memory_format)

    @property
    def on_onnx(self) -> bool:
        """Whether ONNX Runtime runs this pass."""
        return self._onnx is not None

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, C)`` and embeddings ``(N, D)``, float32 on ``pixels``' device, of
        normalised images ``(N, 3, S, S)``."""
        if self._onnx is not None:
            logits, features = self._onnx(pixels.contiguous().cpu().numpy())
            return torch.from_numpy(logits), torch.from_numpy(features)
        with self.runtime.autocast():
            logits, features = logits_and_features(
                self.model, pixels.contiguous(memory_format=self.memory_format)
            )
        return logits.float(), features.float()
