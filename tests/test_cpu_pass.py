"""The frozen pass on ONNX Runtime: the same outputs as PyTorch, and PyTorch when it cannot run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from facecls.inference.calibration import model_outputs
from facecls.models.cpu_pass import onnx_pass
from facecls.models.embedding import logits_and_features
from facecls.models.factory import create_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tronnet", num_classes=5, image_size=32).eval()


def test_onnx_pass_gives_pytorchs_outputs() -> None:
    model = _model()
    images = torch.randn(7, 3, 32, 32)
    run = onnx_pass(model, 32, images=10_000)
    assert run is not None
    logits, embedding = run(images.numpy())
    with torch.no_grad():
        expected_logits, expected = logits_and_features(model, images)
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embedding, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert not model.training  # left as it was


def test_short_passes_and_missing_onnxruntime_stay_on_pytorch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model()
    assert onnx_pass(model, 32, images=10) is None  # the export would cost more than it saves
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails: not installed
    assert onnx_pass(model, 32, images=10_000) is None


def test_calibration_pass_is_the_same_on_either_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    rows = np.arange(3, 40)
    args = (model, images, rows, [127.0] * 3, [64.0] * 3, torch.device("cpu"))
    torch_logits, torch_features = model_outputs(*args, flip_tta=True)
    monkeypatch.setattr("facecls.models.cpu_pass.MIN_IMAGES", 1)
    onnx_logits, onnx_features = model_outputs(*args, flip_tta=True)
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnx_features, torch_features, rtol=1e-4, atol=1e-5)
    assert onnx_features.shape == (37, torch_features.shape[1])
