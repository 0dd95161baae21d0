"""Losses: cross-entropy with optional class weights (softmax is folded into the loss)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def class_weights(train_counts: np.ndarray, scheme: str) -> torch.Tensor | None:
    """Per-class loss weights from training-part image counts.

    ``inverse`` is the report's: weight ∝ 1 / count, scaled so the weights average 1 over the
    classes present (so the loss stays on the scale of plain cross-entropy). ``none`` gives
    ``None``.
    """
    if scheme == "none":
        return None
    if scheme != "inverse":
        raise ValueError(f"unknown class-weight scheme {scheme!r}; choose 'none' or 'inverse'")
    counts = np.asarray(train_counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = 1.0 / counts[present]
    weights[present] *= present.sum() / weights[present].sum()
    return torch.tensor(weights, dtype=torch.float32)


def make_loss(
    weights: torch.Tensor | None, device: torch.device, label_smoothing: float = 0.0
) -> nn.Module:
    """Mean cross-entropy over logits, optionally class-weighted and label-smoothed."""
    return nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(device), label_smoothing=label_smoothing
    )
