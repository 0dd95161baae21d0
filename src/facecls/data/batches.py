"""Batches drawn by index from images that stay resident on the training device.

The decoded uint8 images are moved to the device once (or pinned in host memory when they do not
fit) and every epoch, fold and evaluation gathers its batches from there by index: no JPEG is
decoded and no DataLoader worker runs in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


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
    ) -> None:
        self.images, self.targets = images, targets
        self.indices = indices.to(images.device)
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        n = int(self.indices.numel())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch; ``seed`` fixes the permutation (same seed, same order)."""
        order = self.indices
        if self.shuffle:
            generator = torch.Generator(device="cpu").manual_seed(seed or 0)
            perm = torch.randperm(order.numel(), generator=generator).to(order.device)
            order = order[perm]
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            images, targets = self.images[idx], self.targets[idx]
            if images.device != self.device:
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
            yield images, targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
