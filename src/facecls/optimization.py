"""Optimiser, learning-rate schedule and execution settings of a training run (its recipe)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from facecls.config import TrainConfig

# Model families whose convolutions run faster in NHWC on these CPUs (measured with
# benchmarks/throughput.py); the small seed CNNs are faster in NCHW there.
_CHANNELS_LAST_CPU = ("resnet", "mobilenet", "efficientnet", "regnet", "convnext", "facenet")


@dataclass(frozen=True)
class Runtime:
    """Where and how the loops run: device, autocast dtype (``None`` = fp32), memory format."""

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def default(cls, device: torch.device, architecture: str = "") -> Runtime:
        """Inference settings: bf16 autocast on CUDA, fp32 on the CPU; channels-last on CUDA
        and for ``architecture``s that are faster so on the CPU (as in training)."""
        channels_last = device.type == "cuda" or architecture.startswith(_CHANNELS_LAST_CPU)
        return cls(device, torch.bfloat16 if device.type == "cuda" else None, channels_last)

    def autocast(self) -> torch.autocast:
        """The autocast context of this runtime (disabled for fp32)."""
        return torch.autocast(
            self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None
        )


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX-512 BF16 or AMX-BF16 flags).

    There bf16 autocast trained TronNet 1.8x and ResNet-18 1.3x faster at 64 px with the same
    test accuracy (README, Performance); elsewhere bf16 is emulated and slower than fp32.
    Machines without ``/proc/cpuinfo`` (macOS, Windows) answer ``False``.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", text) is not None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training ``precision`` on ``device`` (``None`` = fp32).

    ``auto`` is bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere.
    """
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and (
        device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    ):
        return torch.bfloat16
    return None


def runtime_for(config: TrainConfig, device: torch.device) -> Runtime:
    """The training runtime: autocast dtype (:func:`autocast_dtype`), channels-last where faster."""
    dtype = autocast_dtype(config.precision, device)
    channels_last = config.channels_last
    if channels_last is None:
        channels_last = device.type == "cuda" or config.model.startswith(_CHANNELS_LAST_CPU)
    return Runtime(device, dtype, channels_last)


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
