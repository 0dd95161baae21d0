"""Grad-CAM saliency maps: which part of a face pushed the network towards a class.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps ``A_k`` of the last convolution by the
mean gradient of the class score over each map, ``w_k = mean_xy dS/dA_k``, and keeps the positive
part of ``sum_k w_k A_k``, upsampled to the image. Works for every registered model: the layer is
the last ``nn.Conv2d`` in module order unless one is given.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import colormaps


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last 2-D convolution in module order (the one closest to the classifier)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1]


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    classes: torch.Tensor | list[int],
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM maps of ``classes`` for a batch of normalised images.

    Args:
        model: a classifier in eval mode (batch norm must not mix images of the batch).
        inputs: float ``(B, 3, H, W)``, normalised as the model expects.
        classes: ``(B,)`` the class whose score each map explains (e.g. the predicted one).
        layer: the convolution to explain; the last one when ``None``.

    Returns:
        float32 ``(B, H, W)`` maps, each scaled to [0, 1] (all zero when nothing is positive).
    """
    layer = layer if layer is not None else last_conv(model)
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        # Hand the next layer a copy: an in-place ReLU after the conv would otherwise modify the
        # tensor we differentiate against.
        return output.clone()

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(inputs)
            index = torch.as_tensor(classes, device=logits.device).view(-1, 1)
            score = logits.gather(1, index).sum()  # images are independent in eval mode
            (grads,) = torch.autograd.grad(score, captured[0])
    finally:
        handle.remove()
    activations = captured[0].detach()  # (B, C, h, w)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).float().cpu().numpy()


def overlay(image: np.ndarray, cam: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] map over a uint8 ``(H, W, 3)`` image with the ``jet`` colour map."""
    heat = colormaps["jet"](np.clip(cam, 0.0, 1.0))[..., :3]  # (H, W, 3) in [0, 1]
    mixed = (1.0 - strength) * image.astype(np.float32) / 255.0 + strength * heat
    return (np.clip(mixed, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
