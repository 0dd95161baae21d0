"""Runtime backends: the same call, ``uint8 (N, 3, S, S) → (logits, embeddings)``, run by
PyTorch on a bundle's weights or by ONNX Runtime on its ``model.onnx``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecls.bundle import (
    BundleError,
    load_bundle,
)
from facecls.data.augment import normalize
from facecls.models.embedding import forward_tta
from facecls.runtime import Runtime


class TorchRunner:
    def __init__(self, path: Path, device: torch.device, trust_pickle: bool = False) -> None:
        bundle = load_bundle(path, device, trust_pickle=trust_pickle)
        self.model, self.device = bundle.model, device
        self.mean, self.std, self.flip_tta = bundle.mean, bundle.std, bundle.flip_tta
        # Channels-last where training used it: FaceNet runs 1.35x faster so on these CPUs.
        self.runtime = Runtime.default(device, bundle.architecture)
        self.memory_format = (
            torch.channels_last if self.runtime.channels_last else torch.contiguous_format
        )
        self.model = self.model.to(memory_format=self.memory_format)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step = self.runtime.batch(len(images))
        if len(images) > step:  # CPU: small forward passes are faster (runtime.CPU_BATCH)
            parts = [self(images[s : s + step]) for s in range(0, len(images), step)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        batch = torch.from_numpy(images).to(self.device)
        with self.runtime.autocast():
            pixels = normalize(batch, self.mean, self.std).contiguous(
                memory_format=self.memory_format
            )
            logits, features = forward_tta(self.model, pixels, self.flip_tta)
        return logits.float().cpu().numpy(), features.float().cpu().numpy()


def require_onnx() -> tuple[Any, Any]:
    """Import onnx and onnxruntime or explain how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "ONNX export and the onnx backend need onnx and onnxruntime (facecls's own "
            "dependencies; this environment lacks them): pip install onnx onnxruntime"
        ) from error
    return onnx, onnxruntime


class OnnxRunner:
    """Runs ``model.onnx`` on uint8 batches; the counterpart of the PyTorch runner."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:

        _, onnxruntime = require_onnx()
        if not Path(path).is_file():
            raise BundleError(f"{path}: no ONNX file; make it with facecls export MODEL")
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if outputs.get("logits", [None, None])[-1] != len(meta["class_names"]):
            raise BundleError(f"{path}: its outputs do not match the bundle's identities")

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(
            ["logits", "embedding"], {"images": images.astype(np.float32)}
        )
        return logits, features
