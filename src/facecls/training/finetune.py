"""Fine-tuning a pretrained backbone: head/backbone split, weights files, freezing, learning rates.

The *head* of every facecls model is its final ``nn.Linear`` (the last one in module order: ResNet's
``fc``, MobileNet's ``classifier[-1]``, FaceNet's ``classifier``); everything else is the backbone.
Three schedules (``TrainConfig.freeze``):

* ``none``: everything trains; the backbone at ``lr × backbone_lr_scale`` when it starts from
  pretrained weights (discriminative learning rates, Howard & Ruder 2018).
* ``backbone``: a linear probe: only the head trains, and the backbone runs in eval mode
  (BatchNorm statistics and dropout frozen), so it computes exactly its pretrained embedding.
* ``backbone-then-unfreeze``: the probe until ``unfreeze_epoch``, then full fine-tuning (the
  head starts from a trained state instead of noise: Kumar et al., ICLR 2022, "LP-FT").
"""

from __future__ import annotations

import types

from torch import nn

from facecls.config import TrainConfig
from facecls.models.embedding import split_parameters
from facecls.training.top_tune import EPOCHS as TOP_EPOCHS
from facecls.training.top_tune import HEAD_LR as TOP_HEAD_LR
from facecls.training.top_tune import LR as TOP_LR


def backbone_frozen(model: nn.Module) -> bool:
    backbone, _ = split_parameters(model)
    return bool(backbone) and not any(p.requires_grad for p in backbone)


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze or unfreeze the backbone's parameters; a frozen backbone also stays in eval mode.

    ``model.train()`` is wrapped once (on this instance) so that, while the backbone is frozen,
    every module is put back in eval mode: BatchNorm keeps its running statistics and dropout
    is off, as in the pretrained embedding. The state dict is unchanged.
    """
    backbone, _ = split_parameters(model)
    for param in backbone:
        param.requires_grad_(not frozen)
    if "train" not in vars(model):
        model.train = types.MethodType(_train_unless_frozen, model)  # type: ignore[method-assign]
    if frozen:
        model.eval()


def _train_unless_frozen(self: nn.Module, mode: bool = True) -> nn.Module:
    type(self).train(self, mode)
    if mode and backbone_frozen(self):
        type(self).train(self, False)
    return self


def unfreeze_start(train: TrainConfig) -> int:
    """First (1-based) unfrozen epoch of ``backbone-then-unfreeze``: set, or after a third."""
    return train.unfreeze_epoch if train.unfreeze_epoch is not None else train.epochs // 3 + 1


def frozen_at(train: TrainConfig, epoch: int) -> bool:
    """Whether the backbone is frozen during 1-based ``epoch``."""
    if train.freeze in ("backbone", "top"):  # top: the probe first (training/top_tune.py)
        return True
    return train.freeze == "backbone-then-unfreeze" and epoch < unfreeze_start(train)


def param_groups(model: nn.Module, lr: float, backbone_scale: float) -> list[dict]:
    """Optimiser groups: the head at ``lr`` (group 0), the backbone at ``lr × backbone_scale``.

    Frozen parameters stay in their group (their gradient is ``None``, so Adam skips them) and
    start training when unfrozen, with no new optimiser.
    """
    backbone, head = split_parameters(model)
    return [
        {"params": head, "lr": lr, "name": "head"},
        {"params": backbone, "lr": lr * backbone_scale, "name": "backbone"},
    ]


def describe(train: TrainConfig, pretrained: bool) -> str:
    """One line for the log: what trains, at which learning rates."""
    scale = train.backbone_lr_scale if pretrained else 1.0
    if train.freeze == "backbone":
        return f"linear probe: backbone frozen, head lr {train.lr:g}"
    if train.freeze == "top":
        return (
            f"linear probe (backbone frozen, head lr {train.lr:g}), then the last stage "
            f"tuned for {TOP_EPOCHS} epochs (lr {TOP_LR:g}, head lr {TOP_HEAD_LR:g})"
        )
    lrs = f"backbone lr {train.lr * scale:g}, head lr {train.lr:g}"
    if train.freeze == "backbone-then-unfreeze":
        return f"backbone frozen until epoch {unfreeze_start(train)}, then {lrs}"
    return f"full fine-tuning: {lrs}" if pretrained else f"from scratch: lr {train.lr:g}"
