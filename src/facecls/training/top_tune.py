"""``--freeze top``: a linear probe, then FaceNet's last stage fine-tuned on its cached inputs.

The linear probe (``--freeze backbone``) keeps every embedding as CASIA-WebFace made it. Its
last stage (``repeat_3``, ``block8``, the 512-d ``last_linear`` and ``last_bn``: 15 % of the
weights, 3 % of the computation at 160 px) can learn what tells the user's people apart at a
cost close to the probe's: the layers below stay frozen, so their output (1792 x 3 x 3 at
160 px) is computed once per image and its mirror, and only the stage and the head run in
each step. A second term keeps each tuned embedding near the frozen one of the same photo, so
people the model never trained on (enrolled, clustered, strangers) are embedded as before.

Measured on LFW-8 against the linear probe (``--faces detect``, the 2-core AMD EPYC VM;
docs/training.md): known faces named in ``benchmarks/group_photos_wild.py``'s group photos
0.942 -> 0.952 at the same stranger rate, DIR at FPIR 1 % on LFW 0.980 -> 0.982, and in an ad
hoc script on cached activations the verification of people it never saw (LFW's people with
fewer than 8 photos, TAR at FAR 0.1 %) 0.930 -> 0.932.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecls.data.augment import normalize
from facecls.runtime import Runtime

# FaceNet's stages below the tuned part, in order (frozen, computed once).
LOWER = (
    "conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
    "repeat_1", "mixed_6a", "repeat_2", "mixed_7a",
)  # fmt: skip
# The tuned stage (the head, ``classifier``, trains with it).
TOP = ("repeat_3", "block8", "last_linear", "last_bn")
# Settings of the measurement above: the head continues from the probe at HEAD_LR.
EPOCHS = 3
LR = 1e-4
HEAD_LR = 1e-3
WEIGHT_DECAY = 0.05
BATCH = 64
# Weight of 1 - cosine(tuned embedding, frozen embedding of the same photo and view).
KEEP = 1.0

Log = Callable[[str], None]


def top_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for name in TOP for p in getattr(model, name).parameters()]


def embed_from_lower(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's input (normalised embedding x scale) from the lower stages' output."""
    x = model.avgpool_1a(model.block8(model.repeat_3(x))).flatten(1)
    return F.normalize(model.last_bn(model.last_linear(model.dropout(x))), dim=1) * float(
        model.embedding_scale
    )


@torch.no_grad()
def lower_outputs(
    model: nn.Module, images: torch.Tensor, rows: np.ndarray, mean: list[float],
    std: list[float], runtime: Runtime, views: int, batch: int = 64,
) -> torch.Tensor:  # fmt: skip
    """``(len(rows), views, C, H, W)`` float16 outputs of the frozen lower stages (view 1: the
    mirror image), on the CPU."""
    parts = []
    for start in range(0, len(rows), batch):
        index = torch.from_numpy(np.asarray(rows[start : start + batch], dtype=np.int64))
        x = normalize(images[index.to(images.device)].to(runtime.device), mean, std)
        seen = []
        for v in [x, x.flip(3)][:views]:
            with runtime.autocast():
                for name in LOWER:
                    v = getattr(model, name)(v)
            seen.append(v.float().half().cpu())
        parts.append(torch.stack(seen, 1))
    return torch.cat(parts)


@dataclass
class TopOnly:
    """The tuned model's outputs of the training and validation rows, computed once from the
    cached lower outputs (which are then freed): what calibration reads.

    Attributes:
        logits: ``(R, C)``; features: ``(R, D)`` classifier inputs (CPU), mirror-averaged under
            flip TTA as ``predict`` computes them; ``row_of[i]`` is dataset row ``i``'s row.
    """

    logits: np.ndarray
    features: torch.Tensor
    row_of: dict[int, int]

    def outputs(self, indices: np.ndarray, runtime: Runtime) -> tuple[np.ndarray, np.ndarray]:
        """Logits and classifier inputs of dataset rows ``indices`` (``runtime``: unused, the
        signature of ``probe.HeadOnly.outputs``)."""
        rows = np.array([self.row_of[int(i)] for i in indices], dtype=np.int64)
        return self.logits[rows], self.features.numpy()[rows]


@torch.no_grad()
def embed_views(model: nn.Module, lower: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """``(N, V, D)`` classifier inputs of every row and view of ``lower``, on the model's device."""
    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(lower), 256):
        x = lower[start : start + 256].to(device).float()
        with runtime.autocast():
            seen = [embed_from_lower(model, x[:, v]).float() for v in range(x.shape[1])]
        parts.append(torch.stack(seen, 1))
    return torch.cat(parts)


@torch.no_grad()
def tuned_outputs(
    model: nn.Module, lower: torch.Tensor, flip_tta: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and classifier inputs of every row of ``lower`` in fp32, mirror-averaged under
    flip TTA (as ``predict`` averages them)."""
    embedded = embed_views(model, lower, Runtime(next(model.parameters()).device))
    seen = embedded if flip_tta else embedded[:, :1]
    logits = torch.stack([model.classifier(seen[:, v]) for v in range(seen.shape[1])], 1)
    return logits.mean(1).cpu().numpy(), seen.mean(1).cpu().numpy()


def tune_top(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, train_idx: np.ndarray,
    val_idx: np.ndarray, mean: list[float], std: list[float], runtime: Runtime,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], views: int, flip: bool,
    flip_tta: bool, seed: int, log: Log = print,
) -> TopOnly:  # fmt: skip
    """Fine-tune ``model``'s last stage and head in place (the probe has trained the head).

    Args:
        views: 2 to keep the mirror images (flip augmentation or flip TTA), else 1.
        flip: draw the mirror image for half the rows of every batch (flip augmentation).
    """
    device = runtime.device
    model.eval()  # BatchNorm keeps its statistics, dropout stays off
    rows = np.concatenate([np.asarray(train_idx), np.asarray(val_idx)]).astype(np.int64)
    mirrors = " and their mirror images" if views == 2 else ""
    log(f"Top stage: the frozen lower stages run once on {len(rows)} images{mirrors}, then the "
        f"last stage and the head train for {EPOCHS} epochs")  # fmt: skip
    # fp32 on the CPU, as predict runs the network (and faster there than bf16 for FaceNet)
    exact = Runtime(device, None) if device.type == "cpu" else runtime
    lower = lower_outputs(model, images, rows, mean, std, exact, views)
    n_train = len(train_idx)
    y = targets.cpu()[torch.from_numpy(np.asarray(train_idx, dtype=np.int64))].to(device)
    # the frozen embeddings the tuned ones stay near
    frozen = F.normalize(embed_views(model, lower[:n_train], runtime), dim=2)
    tuned = top_parameters(model)
    head = list(model.classifier.parameters())
    for p in tuned + head:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": tuned, "lr": LR}, {"params": head, "lr": HEAD_LR}], weight_decay=WEIGHT_DECAY
    )
    steps = EPOCHS * max(1, n_train // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, [LR, HEAD_LR], total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, EPOCHS + 1):
        order = torch.randperm(n_train, generator=generator)
        mirror = torch.rand(n_train, generator=generator) < 0.5
        total, count = 0.0, 0
        for start in range(0, max(1, n_train // BATCH) * BATCH, BATCH):
            b = order[start : start + BATCH]
            view = (mirror[b] & flip & (lower.shape[1] > 1)).long()
            x = lower[b, view].to(device).float()
            with runtime.autocast():
                embedded = embed_from_lower(model, x)
                logits = model.classifier(embedded)
            unit = F.normalize(embedded.float(), dim=1)
            keep = (1 - (unit * frozen[b.to(device), view.to(device)]).sum(1)).mean()
            loss = loss_fn(logits.float(), y[b.to(device)]) + KEEP * keep
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + float(loss.detach()), count + 1
        log(f"top stage epoch {epoch}/{EPOCHS}  train loss {total / max(count, 1):.4f}")
    for p in tuned:
        p.requires_grad_(False)
    model.eval()
    logits, features = tuned_outputs(model, lower, flip_tta)
    return TopOnly(logits, torch.from_numpy(features), {int(r): i for i, r in enumerate(rows)})
