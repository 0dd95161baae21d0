"""Losses for imbalanced identities: class weights, deferred re-weighting and logit adjustment.

Every remedy is a cross-entropy over logits (softmax folded into the loss), built from the training
part's images per class ``n_c`` and its prior ``π_c = n_c / Σ n``:

=================== ============================================= ===================================
``imbalance``       loss                                          source
=================== ============================================= ===================================
``none``            CE(z, y)
``inverse``         CE weighted by w_c ∝ 1 / n_c                  the seed report (§3.3)
``sqrt``            CE weighted by w_c ∝ 1 / √n_c                 Mahajan et al. 2018; Mikolov 2013
``effective``       CE weighted by w_c ∝ (1 − β) / (1 − β^n_c)    Cui et al., CVPR 2019
``drw``             CE until ``drw_epoch``, then ``effective``    Cao et al. (LDAM-DRW), NeurIPS 2019
``balanced-softmax`` CE(z + log π, y)                             Ren et al., NeurIPS 2020
``logit-adjust``    CE(z + τ·log π, y)                            Menon et al., ICLR 2021
=================== ============================================= ===================================

Any of them can be combined with label smoothing (the ``fast`` recipe's 0.1), applied to the
training loss only. Weights are scaled to average 1 over the classes present, so every loss stays on the scale of
plain cross-entropy. β → 0 gives no weighting and β → 1 gives ``inverse``. Balanced softmax and
logit adjustment change only the training loss: the model's raw logits are already "balanced" and
are used as they are at evaluation. Post-hoc adjustment (Menon et al. §4) instead takes any model
trained with plain CE and evaluates ``z − τ·log π`` (:func:`posthoc_adjust`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facecls.config import TrainConfig, imbalance_of

WEIGHTED = ("inverse", "sqrt", "effective")
ADJUSTED = ("balanced-softmax", "logit-adjust")


def class_weights(
    train_counts: np.ndarray, scheme: str, beta: float = 0.999
) -> torch.Tensor | None:
    """Per-class loss weights from training-part image counts, averaging 1 over present classes.

    Args:
        train_counts: ``(K,)`` training images per class; classes with 0 get weight 0.
        scheme: ``none`` (gives ``None``), ``inverse``, ``sqrt`` or ``effective``.
        beta: β of ``effective`` (Cui et al.: 0.9, 0.99, 0.999, 0.9999 were tried).

    Returns:
        float32 ``(K,)`` weights, or ``None`` for ``none``.
    """
    if scheme == "none":
        return None
    counts = np.asarray(train_counts, dtype=np.float64)
    present = counts > 0
    n = counts[present]
    if scheme == "inverse":
        raw = 1.0 / n
    elif scheme == "sqrt":
        raw = 1.0 / np.sqrt(n)
    elif scheme == "effective":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        # (1 − β) / (1 − β^n) with -expm1(n·log β) = 1 − β^n computed without cancellation.
        raw = (1.0 - beta) / -np.expm1(n * np.log(beta)) if beta > 0 else np.ones_like(n)
    else:
        raise ValueError(
            f"unknown class-weight scheme {scheme!r}; choose 'none', {', '.join(WEIGHTED)}"
        )
    weights = np.zeros_like(counts)
    weights[present] = raw * (present.sum() / raw.sum())
    return torch.tensor(weights, dtype=torch.float32)


def log_prior(train_counts: np.ndarray) -> torch.Tensor:
    """``log π_c`` of the training part, float32 ``(K,)``; a class with no image counts as one."""
    counts = np.maximum(np.asarray(train_counts, dtype=np.float64), 1.0)
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


class LongTailLoss(nn.Module):
    """Cross-entropy with optional class weights and an additive logit offset (mean over a batch).

    ``forward(logits, targets) = CE(logits + offset, targets; weight)`` with ``offset`` ``(K,)``
    (``τ·log π`` for logit adjustment, else zero). For ``drw`` the weights switch on at
    ``drw_epoch``: call :meth:`set_epoch` before each epoch. :meth:`selection_loss` is the loss
    the run ends with, so validation losses of all epochs are comparable (DRW's weighted phase).
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
        later_weight: torch.Tensor | None = None,
        switch_epoch: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        # Buffers (not saved with a model) so that .to(device) moves them.
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("later_weight", later_weight, persistent=False)
        self.switch_epoch = switch_epoch
        self.late = False

    def set_epoch(self, epoch: int) -> None:
        """Use the weights of 1-based ``epoch`` (DRW: re-weighted from ``switch_epoch`` on)."""
        self.late = self.switch_epoch is not None and epoch >= self.switch_epoch

    def selection_loss(self) -> LongTailLoss:
        """The loss of the last phase, unsmoothed (to choose the best epoch on validation data)."""
        last = self.later_weight if self.switch_epoch is not None else self.weight
        return LongTailLoss(last, self.offset)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.offset is not None:
            logits = logits + self.offset.to(logits.dtype)
        weight = self.later_weight if self.late else self.weight
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing)


def drw_start(train: TrainConfig) -> int:
    """First (1-based) epoch of DRW's re-weighting: ``drw_epoch`` or the last third."""
    return train.drw_epoch if train.drw_epoch is not None else train.epochs * 2 // 3 + 1


def build_loss(
    train: TrainConfig, train_counts: np.ndarray, device: torch.device,
    label_smoothing: float = 0.0,
) -> LongTailLoss:  # fmt: skip
    """The training loss of ``train.imbalance`` (or its alias ``class_weights``) on ``device``."""
    scheme = imbalance_of(train)
    smoothing = {"label_smoothing": label_smoothing}
    if scheme in ("none", *WEIGHTED):
        loss = LongTailLoss(weight=class_weights(train_counts, scheme, train.beta), **smoothing)
    elif scheme == "drw":
        later = class_weights(train_counts, "effective", train.beta)
        loss = LongTailLoss(later_weight=later, switch_epoch=drw_start(train), **smoothing)
    elif scheme in ADJUSTED:
        tau = 1.0 if scheme == "balanced-softmax" else train.tau
        loss = LongTailLoss(offset=tau * log_prior(train_counts), **smoothing)
    else:
        raise ValueError(f"unknown imbalance remedy {scheme!r}")
    return loss.to(device)


def posthoc_adjust(logits: np.ndarray, train_counts: np.ndarray, tau: float) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al. 2021, eq. 6): ``logits − τ·log π``.

    Applied at evaluation to a model trained with plain cross-entropy; τ = 0 changes nothing.
    """
    if tau == 0:
        return logits
    return logits - tau * log_prior(train_counts).numpy()[None, :].astype(logits.dtype)
