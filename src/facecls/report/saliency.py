"""Grad-CAM saliency maps: which part of a face pushed the network towards a class.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps ``A_k`` of the last convolution by the
mean gradient of the class score over each map, ``w_k = mean_xy dS/dA_k``, and keeps the positive
part of ``sum_k w_k A_k``, upsampled to the image. Works for every registered model: the layer is
the last ``nn.Conv2d`` in module order unless one is given (the report uses
:func:`explained_layer`, the deepest one whose map is still at least 4×4).
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


def explained_layer(model: nn.Module, image_size: int, min_side: int = 4) -> tuple[str, nn.Conv2d]:
    """The deepest convolution whose output is at least ``min_side`` pixels on a side.

    The last convolution of a small network at a small input can be 1×1 (the baseline at 32 px),
    where Grad-CAM is one number spread over the image; a slightly earlier layer still has a map.
    Falls back to the last convolution when none is that large.

    Returns:
        The layer's module path and the layer.
    """
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    sides: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _a, out: sides.__setitem__(mod, min(out.shape[-2:])))
        for _, m in convs
    ]
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    large = [(name, m) for name, m in convs if sides.get(m, 0) >= min_side]
    return large[-1] if large else convs[-1]


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
