"""What a fold trains with: its fresh or compiled model, normalisation, loss, optimiser, batches."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from facecls.config import RunConfig
from facecls.config_rules import PRETRAINED_FACE_MODELS
from facecls.data.augment import channel_stats
from facecls.data.batches import IndexBatches
from facecls.data.dataset import FaceDataset
from facecls.data.samplers import SampledBatches
from facecls.models import create_model, model_info
from facecls.models.embedding import load_backbone_weights
from facecls.runtime import Runtime, runtime_for
from facecls.training.distributed import DistContext
from facecls.training.finetune import param_groups
from facecls.training.losses import LongTailLoss, build_loss
from facecls.training.optimization import build_optimizer


@dataclass
class FoldSetup:
    """What one fold trains with before its first epoch (``train_model`` and the lr range test).

    Attributes:
        model: what is called (the module, or its compiled or replicated form).
        module: the bare ``nn.Module`` whose ``state_dict`` is saved.
        batches_of: training and validation batches drawn from rows of images or embeddings.
    """

    model: nn.Module
    module: nn.Module
    runtime: Runtime
    mean: list[float]
    std: list[float]
    counts: np.ndarray
    loss_fn: LongTailLoss
    optimizer: torch.optim.Optimizer
    batches_of: Callable[[torch.Tensor], tuple[IndexBatches, IndexBatches]]


def setup_fold(
    dataset: FaceDataset, targets: torch.Tensor, train_idx: np.ndarray, val_idx: np.ndarray,
    config: RunConfig, device: torch.device, models: ModelSource, fold: int = 0,
    dist: DistContext | None = None, lr: float | None = None,
) -> FoldSetup:  # fmt: skip
    """A fold's fresh model, normalisation, loss, optimiser and batches, as training builds them.

    Args:
        lr: the head's starting learning rate (default ``train.lr``; the backbone's is scaled
            from it as in training).
    """
    t = config.train
    shard = (dist or DistContext(device=device)).shard()
    model, module = models.get(fold)  # module: the nn.Module (model may be its compiled form)
    mean, std = input_normalization(dataset, train_idx, t.model)
    counts = dataset.class_counts(train_idx)
    loss_fn = build_loss(t, counts, device, t.label_smoothing or 0.0)
    scale = t.backbone_lr_scale if t.pretrained or t.weights else 1.0
    groups = param_groups(module, t.lr if lr is None else lr, scale)
    optimizer = build_optimizer(module, t, device, groups)
    drop_last = len(train_idx) > t.batch_size

    def batches_of(rows: torch.Tensor) -> tuple[IndexBatches, IndexBatches]:
        """Training and validation batches drawn from ``rows`` (images or embeddings)."""
        labels = targets.to(rows.device)
        train: IndexBatches = (
            SampledBatches(rows, labels, torch.from_numpy(train_idx), t.batch_size, device,
                           t.sampler, dataset.num_classes, drop_last, shard=shard)
            if t.sampler != "none"
            else IndexBatches(rows, labels, torch.from_numpy(train_idx), t.batch_size, device,
                              shuffle=True, drop_last=drop_last, shard=shard)
        )  # fmt: skip
        val = IndexBatches(
            rows, labels, torch.from_numpy(val_idx), t.eval_batch_size, device, shard=shard
        )
        return train, val

    return FoldSetup(model, module, runtime_for(t, device), mean, std, counts, loss_fn,
                     optimizer, batches_of)  # fmt: skip


class ModelSource:
    """Fresh, seeded models for each fold; with ``compile`` one compiled module is reused.

    Compiling costs tens of seconds, so under ``--compile`` the module is built and compiled
    once and every later fold loads freshly initialised weights into it (same parameters
    objects, so the compiled graph stays valid) instead of compiling again.

    With a ``dist`` of several ranks the callable model is a DistributedDataParallel replica
    (its BatchNorm synchronised when ``train.sync_bn``); the module is the bare model, whose
    ``state_dict`` is what gets saved.
    """

    def __init__(
        self,
        config: RunConfig,
        num_classes: int,
        device: torch.device,
        dist: DistContext | None = None,
    ) -> None:
        self.config, self.num_classes, self.device = config, num_classes, device
        self.dist = dist or DistContext(device=device)
        self._compiled: tuple[nn.Module, nn.Module] | None = None
        self.embedded: dict[str, torch.Tensor] = {}  # a frozen backbone's embeddings, by key

    def _fresh(self, fold: int) -> nn.Module:
        t = self.config.train
        torch.manual_seed(t.seed + fold)
        # The face backbones load --weights themselves (and hold their batch norm); any other
        # model gets them through the generic strict loader (head excepted).
        own = {"weights": t.weights} if t.weights and t.model in PRETRAINED_FACE_MODELS else {}
        model = create_model(
            t.model, num_classes=self.num_classes, image_size=self.config.data.image_size,
            pretrained=t.pretrained and not t.weights, **own,
        )  # fmt: skip
        if t.weights and not own:
            load_backbone_weights(model, t.weights)
        model = model.to(self.device)
        if runtime_for(t, self.device).channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.distributed and t.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _replica(self, module: nn.Module) -> nn.Module:
        """``module`` itself in one process; a DistributedDataParallel replica under several."""
        if not self.dist.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are synchronised at the start, not before every step: the engine averages
        # them once per epoch (older torch releases only know broadcast_buffers).
        new = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        buffers = {"forward_sync_buffers" if new else "broadcast_buffers": False}
        return DistributedDataParallel(module, device_ids=ids, **buffers)

    def get(self, fold: int) -> tuple[nn.Module, nn.Module]:
        """``(callable model, its nn.Module)``: the same object unless compiled or replicated."""
        fresh = self._fresh(fold)
        if not self.config.train.compile:
            return self._replica(fresh), fresh
        if self._compiled is None:
            self._compiled = (torch.compile(self._replica(fresh)), fresh)
        else:
            self._compiled[1].load_state_dict(fresh.state_dict())
        return self._compiled


def input_normalization(
    dataset: FaceDataset, train_idx: np.ndarray, model: str
) -> tuple[list[float], list[float]]:
    """The model's fixed normalisation when its weights expect one (FaceNet's
    ``(x − 127.5) / 128``), else the training part's statistics (report eq. 6)."""
    info = model_info(model)
    if info is not None and info.normalization is not None:
        mean, std = info.normalization
        return list(mean), list(std)
    return channel_stats(dataset.images[torch.from_numpy(train_idx)])
