"""The only training and evaluation loops, shared by every model, fold and command.

Neither loop synchronises with the host per step: losses and counts are summed on the device and
read once at the end of the epoch (DESIGN.md: no ``.item()`` in the hot path).

Under several processes the batches are sharded (``IndexBatches.shard``): the model is then a
DistributedDataParallel replica, each epoch ends with one sum of the losses over the ranks, and
evaluation gathers every rank's logits before anything is computed from them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from facecls.config import AugmentConfig
from facecls.data.augment import augment, normalize
from facecls.data.batches import IndexBatches
from facecls.metrics import EvalResult
from facecls.models.embedding import logits_and_features
from facecls.runtime import Runtime
from facecls.training.distributed import average_buffers, gather_rows


@dataclass
class EpochStats:
    """What one training epoch measured (over all ranks when sharded).

    Attributes:
        loss: mean training loss over the images of the steps taken (non-finite if any was).
        nonfinite_step: 1-based number of the first step whose loss was NaN or infinite.
        skipped: steps skipped for a non-finite loss (only with ``skip_nonfinite``).
    """

    loss: float
    images: int
    seconds: float
    nonfinite_step: int | None = None
    skipped: int = 0


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
    skip_nonfinite: bool = False,
    inputs_of: Callable[[torch.Tensor, torch.Generator, tuple[int, int]], torch.Tensor]
    | None = None,
    on_loss: Callable[[torch.Tensor], None] | None = None,
) -> EpochStats:
    """One pass over ``batches``; the permutation and augmentation depend only on ``epoch_seed``.

    A non-finite loss is found without a per-step sync: each step's loss goes into a device
    tensor that is read at the end of the epoch only when the epoch's sum is not finite.

    Args:
        on_batch: called with the (global) batch size after each step (progress bars); must
            not sync.
        skip_nonfinite: skip (no update) a batch whose loss is NaN or infinite; this checks the
            loss on the host at every step, which costs a sync per step.
        inputs_of: the model's inputs from a batch, the epoch's generator and ``rows``; default
            :func:`augment` (a head trained on cached embeddings passes its own, ``probe.py``).
        on_loss: called with each step's (detached) loss after the update, before the scheduler
            steps, so the optimiser still holds that step's lr; reading it syncs (the lr range
            test, ``lr_find.py``, does so by design; training never passes it).
    """
    model.train()
    device = runtime.device
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    generator = torch.Generator(device=device).manual_seed(epoch_seed)
    loss_sum = torch.zeros((), device=device)
    step_losses = torch.zeros(len(batches), device=device)  # (steps,)
    seen = skipped = 0
    start = time.perf_counter()
    for step, (images, targets) in enumerate(batches.epoch(epoch_seed)):
        rows = batches.rows(step)  # (first row of this rank, global batch size)
        if inputs_of is None:
            inputs = augment(images, mean, std, augment_config, generator, rows)
            inputs = inputs.contiguous(memory_format=memory_format)
        else:
            inputs = inputs_of(images, generator, rows)
        with runtime.autocast():
            logits = model(inputs)
            loss = loss_fn(logits.float(), targets)
        if skip_nonfinite and not bool(torch.isfinite(loss)):
            skipped += 1
        else:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step_losses[step] = loss.detach()
            loss_sum += loss.detach() * targets.shape[0]
            seen += targets.shape[0]
        if on_loss is not None:
            on_loss(loss.detach())
        if scheduler is not None:  # stepped for skipped batches too: the schedule follows steps
            scheduler.step()
        if on_batch is not None:
            on_batch(rows[1])
    if batches.sharded:
        # One collective per epoch: the loss over all ranks, and BatchNorm statistics made
        # equal again so every replica evaluates (and rank 0 saves) the same model.
        totals = torch.stack(
            [loss_sum.double(), torch.tensor(seen, dtype=torch.float64, device=device)]
        )
        dist.all_reduce(totals)
        average_buffers(model, batches.shard.world_size)
        total, seen_all = totals.tolist()  # the epoch's single host sync
        seen = int(seen_all)
    else:
        total = float(loss_sum)  # the epoch's single host sync
    first_bad = None
    if not math.isfinite(total):
        bad = torch.nonzero(~torch.isfinite(step_losses))
        first_bad = int(bad[0, 0]) + 1 if len(bad) else len(batches)  # else: the sum overflowed
    return EpochStats(total / max(seen, 1), seen, time.perf_counter() - start, first_bad, skipped)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: IndexBatches,
    mean: list[float],
    std: list[float],
    loss_fn: nn.Module | None = None,
    flip_tta: bool = False,
    runtime: Runtime | None = None,
    features: bool = False,
    views: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
) -> EvalResult:
    """Logits for every image of ``batches`` in order, with no augmentation.

    With sharded batches each rank evaluates its block and every rank returns the logits,
    targets and loss of all of them (gathered in order).

    Args:
        flip_tta: average the logits of each image and its mirror image.
        features: also keep the embeddings (the input of the final Linear layer, averaged over
            the views), so calibration needs no second pass; ``model`` must then be the
            bare module (a forward hook finds its head).
        views: the model's inputs of a batch, whose logits are averaged (one or two); default
            the normalised images, and their mirror images under ``flip_tta``.
    """
    model.eval()
    runtime = runtime or Runtime(batches.device)
    device = runtime.device
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    all_logits, all_targets, all_features = [], [], []
    loss_sum = torch.zeros((), device=device)
    for images, targets in batches.epoch():
        if views is None:
            inputs = normalize(images, mean, std).contiguous(memory_format=memory_format)
            seen = [inputs, inputs.flip(3)] if flip_tta else [inputs]
        else:
            seen = views(images)
        with runtime.autocast():
            if features:  # the input of the final Linear layer too, averaged like the logits
                logits, embedded = logits_and_features(model, seen[0])
                logits, embedded = logits.float(), embedded.float()
                if len(seen) > 1:  # averaged in float32, as the logits-only pass below does
                    second, embedded2 = logits_and_features(model, seen[1])
                    logits = (logits + second.float()) / 2
                    embedded = (embedded + embedded2.float()) / 2
                all_features.append(embedded.float())
            else:
                logits = model(seen[0]).float()
                if len(seen) > 1:
                    logits = (logits + model(seen[1]).float()) / 2
        if loss_fn is not None:
            loss_sum += loss_fn(logits, targets) * targets.shape[0]
        all_logits.append(logits)
        all_targets.append(targets)
    logits_t, targets_t = torch.cat(all_logits), torch.cat(all_targets)
    features_t = torch.cat(all_features) if features else None
    if batches.sharded:
        logits_t = gather_rows(logits_t, batches.global_count, batches.shard)
        targets_t = gather_rows(targets_t, batches.global_count, batches.shard)
        if features_t is not None:
            features_t = gather_rows(features_t, batches.global_count, batches.shard)
        dist.all_reduce(loss_sum)
    logits, targets_np = logits_t.cpu().numpy(), targets_t.cpu().numpy()
    embedded_np = None if features_t is None else features_t.cpu().numpy()
    return EvalResult(logits, targets_np, float(loss_sum) / max(len(targets_np), 1), embedded_np)
