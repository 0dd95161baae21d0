"""Batch augmentation and normalisation on the training device.

One affine warp per image (rotation as in the report, horizontal flip, scale, translation) is
applied to the whole batch with a single ``affine_grid``/``grid_sample`` call, and normalisation
(the report's eq. 6 with training-part statistics) is fused into the same step. Random numbers come
from an explicit generator so an epoch's augmentation depends only on the seed and the epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facecls.config import AugmentConfig
from facecls.config_rules import augment_of


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of uint8 images ``(N, 3, H, W)``.

    Accumulated in float64 over chunks so memory stays small for large caches.
    """
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` → float32 normalised, as one multiply-add."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=images.device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=images.device)
    return torch.addcmul(shift.view(1, 3, 1, 1), images.float(), scale)


def augment(
    images: torch.Tensor,
    mean: list[float],
    std: list[float],
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Randomly warp and normalise a uint8 batch ``(B, 3, H, W)`` on its own device.

    Pixels the warp brings in from outside the image are filled with the training mean (zero
    after normalisation), so the network never sees an artificial black border statistic.

    Args:
        rows: ``(first, total)`` when ``images`` are rows ``first … first + B - 1`` of a global
            batch of ``total`` split over processes: random numbers are drawn for all
            ``total`` rows (the same stream as one process) and these rows' are used.
    """
    x = normalize(images, mean, std)
    if not config.enabled:
        return x
    config = augment_of(config)  # a run's config is resolved already; unset means fast's
    b, device = x.shape[0], x.device
    first, total = rows if rows is not None else (0, b)

    def uniform(low: float, high: float) -> torch.Tensor:
        drawn = torch.rand(total, device=device, generator=generator)[first : first + b]
        return drawn * (high - low) + low

    angle = uniform(-config.rotation, config.rotation) * (math.pi / 180.0)
    scale = uniform(1.0 - config.scale, 1.0 + config.scale)
    tx = uniform(-config.translate, config.translate) * 2.0  # grid units span [-1, 1]
    ty = uniform(-config.translate, config.translate) * 2.0
    flip = torch.ones(b, device=device)
    if config.hflip:
        coins = torch.rand(total, device=device, generator=generator)[first : first + b]
        flip = torch.where(coins < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output grid coordinates to input coordinates: (B, 2, 3).
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
