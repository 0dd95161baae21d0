"""Grad-CAM against a model whose gradients are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from facecls.models import create_model
from facecls.report.saliency import grad_cam, last_conv, overlay


class ConvPoolLinear(nn.Module):
    """conv -> in-place ReLU -> global mean -> linear: dS_c/dA_k = W[c, k] / (h w) everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_grad_cam_matches_closed_form() -> None:
    torch.manual_seed(0)
    model = ConvPoolLinear().eval()
    x = torch.randn(3, 3, 8, 8)
    classes = [0, 1, 1]
    cams = grad_cam(model, x, classes)
    with torch.no_grad():
        a = model.conv(x)  # (B, 4, 8, 8), before the ReLU
        # The ReLU passes gradient only where the activation is positive.
        grads = model.fc.weight[classes][:, :, None, None] * (a > 0) / 64
        expected = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * a).sum(1))
        expected = expected / expected.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    assert cams.shape == (3, 8, 8)
    np.testing.assert_allclose(cams, expected.numpy(), atol=1e-5)


def test_grad_cam_on_registered_model_and_overlay() -> None:
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=5, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    cams = grad_cam(model, x, torch.tensor([1, 3]))
    assert cams.shape == (2, 32, 32) and np.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert last_conv(model) is model.features[8]
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated in the model
    picture = overlay(np.full((32, 32, 3), 128, np.uint8), cams[0])
    assert picture.dtype == np.uint8 and picture.shape == (32, 32, 3)


def test_no_conv_layer() -> None:
    with pytest.raises(ValueError, match="no Conv2d"):
        last_conv(nn.Linear(2, 2))


def test_explained_layer_skips_one_pixel_maps() -> None:
    from facecls.report.saliency import explained_layer

    model = create_model("baseline", num_classes=5, image_size=32).eval()
    # At 32 px the baseline's last convolution is 1×1; the one before it is 4×4.
    assert explained_layer(model, 32)[0] == "features.5"
    big = create_model("baseline", num_classes=5, image_size=96).eval()
    assert explained_layer(big, 96)[0] == "features.8"
