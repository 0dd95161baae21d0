"""Optimiser, learning-rate schedule and execution settings of a training run (its recipe)."""

from __future__ import annotations

import torch
import torch.nn as nn

from facecls.config import TrainConfig


def build_optimizer(
    model: nn.Module, config: TrainConfig, device: torch.device,
    groups: list[dict] | None = None,
) -> torch.optim.Optimizer:  # fmt: skip
    """Adam (the report's, L2 penalty) or AdamW (decoupled decay), fused on CUDA, foreach on CPU.

    Args:
        groups: parameter groups with their own ``lr`` (fine-tuning: head and backbone, see
            ``finetune.param_groups``); default one group of the trainable parameters.
    """
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    speed = {"fused": True} if device.type == "cuda" else {"foreach": True}
    params = groups if groups is not None else [p for p in model.parameters() if p.requires_grad]
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, **speed)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """One-cycle (stepped per batch) for ``onecycle``; ``None`` for a constant rate."""
    total = max(1, steps_per_epoch) * config.epochs
    if config.schedule != "onecycle" or total < 2:
        return None
    # A quarter of the steps warm up; very short runs need at least 1.5 steps of warm-up or
    # OneCycleLR's phases collapse to zero length.
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total,
        pct_start=max(0.25, 1.5 / total),
    )
