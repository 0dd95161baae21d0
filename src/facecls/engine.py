"""The only training and evaluation loops, shared by every model, fold and command.

Neither loop synchronises with the host per step: losses and counts are summed on the device and
read once at the end of the epoch (DESIGN.md: no ``.item()`` in the hot path).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from facecls.config import AugmentConfig
from facecls.data.augment import augment, normalize
from facecls.data.batches import IndexBatches
from facecls.optimization import Runtime


@dataclass
class EpochStats:
    """What one training epoch measured."""

    loss: float
    images: int
    seconds: float


@dataclass
class EvalResult:
    """Predictions of one evaluation pass, on the CPU.

    Attributes:
        logits: float32 ``(N, C)``.
        targets: int64 ``(N,)``.
        loss: mean loss over the images (with the training loss's class weights).
    """

    logits: np.ndarray
    targets: np.ndarray
    loss: float

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


def train_one_epoch(
    model: nn.Module,
    batches: IndexBatches,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    mean: list[float],
    std: list[float],
    augment_config: AugmentConfig,
    epoch_seed: int,
    runtime: Runtime,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> EpochStats:
    """One pass over ``batches``; the permutation and augmentation depend only on ``epoch_seed``.

    Args:
        on_batch: called with the batch size after each step (progress bars); must not sync.
    """
    model.train()
    device = runtime.device
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    generator = torch.Generator(device=device).manual_seed(epoch_seed)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    for images, targets in batches.epoch(epoch_seed):
        inputs = augment(images, mean, std, augment_config, generator)
        inputs = inputs.contiguous(memory_format=memory_format)
        with runtime.autocast():
            logits = model(inputs)
            loss = loss_fn(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * targets.shape[0]
        seen += targets.shape[0]
        if on_batch is not None:
            on_batch(targets.shape[0])
    total = float(loss_sum)  # the epoch's single host sync
    return EpochStats(total / max(seen, 1), seen, time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: IndexBatches,
    mean: list[float],
    std: list[float],
    loss_fn: nn.Module | None = None,
    flip_tta: bool = False,
    runtime: Runtime | None = None,
) -> EvalResult:
    """Logits for every image of ``batches`` in order, with no augmentation.

    Args:
        flip_tta: average the logits of each image and its mirror image.
    """
    model.eval()
    runtime = runtime or Runtime(batches.device)
    device = runtime.device
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    all_logits, all_targets = [], []
    loss_sum = torch.zeros((), device=device)
    for images, targets in batches.epoch():
        inputs = normalize(images, mean, std).contiguous(memory_format=memory_format)
        with runtime.autocast():
            logits = model(inputs).float()
            if flip_tta:
                logits = (logits + model(inputs.flip(3)).float()) / 2
        if loss_fn is not None:
            loss_sum += loss_fn(logits, targets) * targets.shape[0]
        all_logits.append(logits)
        all_targets.append(targets)
    logits = torch.cat(all_logits).cpu().numpy()
    targets_np = torch.cat(all_targets).cpu().numpy()
    return EvalResult(logits, targets_np, float(loss_sum) / max(len(targets_np), 1))
