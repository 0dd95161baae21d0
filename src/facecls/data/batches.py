"""Batches drawn by index from images that stay resident on the training device.

The decoded uint8 images are moved to the device once (or pinned in host memory when they do not
fit) and every epoch, fold and evaluation gathers its batches from there by index: no JPEG is
decoded and no DataLoader worker runs in the training loop.

Under several processes (``distributed.py``) every rank holds the whole cache and is given a
:class:`Shard`: shuffled (training) batches are drawn as one global batch, identical on every
rank, of which each rank keeps its own rows; unshuffled (evaluation) batches cover a contiguous
block of the indices per rank, so gathering the blocks in rank order restores the order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world_size`` processes; ``Shard()`` is a single process (all rows)."""

    rank: int = 0
    world_size: int = 1

    def bounds(self, rows: int) -> tuple[int, int]:
        """This rank's rows ``[start, stop)`` of ``rows``; ranks differ by one row at most."""
        base, extra = divmod(rows, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)


def resident(images: torch.Tensor, device: torch.device, fraction: float = 0.6) -> torch.Tensor:
    """``images`` on ``device`` when they fit in ``fraction`` of its free memory, else pinned on
    the host (batches are then copied over asynchronously)."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() < fraction * free:
        return images.to(device)
    return images.pin_memory()


class IndexBatches:
    """Iterate ``(images, targets)`` batches of given indices, shuffled by a seeded generator.

    Args:
        images: uint8 ``(N, 3, S, S)``, on the device or pinned on the host.
        targets: int64 ``(N,)`` on the same device as ``images``.
        indices: which images this loader serves.
        batch_size: images per batch.
        device: where the batches are delivered.
        shuffle: draw a new permutation each epoch.
        drop_last: drop a final partial batch (keeps BatchNorm away from batches of one).
        shard: this rank's share. Shuffled batches: ``batch_size`` is the global batch, the
            same ``len()`` on every rank, and each rank gets its ``shard.bounds`` rows of every
            global batch. Unshuffled: this rank serves its ``shard.bounds`` block of
            ``indices`` (the whole of them when there are fewer indices than ranks).

    Raises:
        ValueError: a shuffled sharded loader would leave a rank with an empty batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        drop_last: bool = False,
        shard: Shard | None = None,
    ) -> None:
        shard = shard or Shard()
        self.global_count = int(indices.numel())  # indices over all ranks
        if shard.world_size > 1 and not shuffle:
            if indices.numel() < shard.world_size:
                shard = Shard()  # too few to share: every rank serves all, nothing is gathered
            else:
                start, stop = shard.bounds(int(indices.numel()))
                indices = indices[start:stop]
        self.images, self.targets = images, targets
        self.indices = indices.to(images.device)
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.drop_last, self.shard = shuffle, drop_last, shard
        if shuffle and shard.world_size > 1 and self._global_rows(len(self) - 1) < shard.world_size:
            raise ValueError(
                f"{int(indices.numel())} training images cannot be shared by "
                f"{shard.world_size} processes (each needs at least one per batch)"
            )

    def __len__(self) -> int:
        n = int(self.indices.numel())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def sharded(self) -> bool:
        """Other ranks serve the rest of these batches (so results must be combined)."""
        return self.shard.world_size > 1

    def _global_rows(self, step: int) -> int:
        """Rows of global batch ``step`` (over all ranks for shuffled sharded batches)."""
        return max(0, min(self.batch_size, int(self.indices.numel()) - step * self.batch_size))

    def rows(self, step: int) -> tuple[int, int]:
        """``(first, total)``: where this rank's rows of batch ``step`` start within the global
        batch, and the global batch's size (``(0, size)`` in one process).

        Augmentation draws random numbers for ``total`` rows and keeps this rank's, so every
        image gets the same warp whatever the number of processes.
        """
        total = self._global_rows(step)
        if self.shuffle and self.sharded:
            return self.shard.bounds(total)[0], total
        return 0, total

    def _order(self, seed: int | None) -> torch.Tensor:
        """The epoch's global order of indices: identical on every rank for the same seed."""
        if not self.shuffle:
            return self.indices
        generator = torch.Generator(device="cpu").manual_seed(seed or 0)
        perm = torch.randperm(self.indices.numel(), generator=generator).to(self.indices.device)
        return self.indices[perm]

    def epoch(self, seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch; ``seed`` fixes the permutation (same seed, same order)."""
        order = self._order(seed)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.shuffle and self.sharded:
                start, stop = self.shard.bounds(int(idx.numel()))
                idx = idx[start:stop]  # this rank's rows of the global batch
            images, targets = self.images[idx], self.targets[idx]
            if images.device != self.device:
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
            yield images, targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
