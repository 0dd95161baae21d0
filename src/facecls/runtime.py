"""Where and how models run: device resolution, autocast precision and memory format.

Shared by training and inference, so both pick the same bf16/channels-last settings for a model
on a given machine.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from facecls.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use cpu")
    return device


# Model families whose convolutions run faster in NHWC on these CPUs (measured with
# benchmarks/throughput.py); the small seed CNNs are faster in NCHW there.
_CHANNELS_LAST_CPU = (
    "resnet",
    "mobilenet",
    "efficientnet",
    "regnet",
    "convnext",
    "facenet",
    "sface",
)


# Images per forward pass of an inference network on the CPU. Small batches stay in the caches:
# FaceNet at 160 px embedded 40 images/s per core in batches of 16, 38 in 32, 34 in 64 and 28 in
# 256 (the dev VM, fp32, channels-last); the seed CNNs at 64 px are faster in 16s too (TronNet
# about 2x), ResNet-18 at 112 px about 10 % slower (a loaded machine). On a GPU the caller's
# batch size stands.
CPU_BATCH = 16


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

    def batch(self, requested: int) -> int:
        """Images per forward pass: ``requested``, at most :data:`CPU_BATCH` on the CPU."""
        return min(requested, CPU_BATCH) if self.device.type == "cpu" else requested

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
