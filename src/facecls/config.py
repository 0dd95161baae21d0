"""Run configuration: the frozen, typed dataclasses and the choices their fields accept.

Every library entry point takes a :class:`RunConfig` (or plain arguments that build one); the resolved
config is written into every run directory and every saved model, so a run can be repeated exactly.
Filling and checking values is :mod:`facecls.config_rules`; dicts and YAML are
:mod:`facecls.config_io` (unknown keys and wrong types raise :class:`ConfigError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


# What --device accepts; checked when parsed, so a typo fails before any work is done.
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def device_name(name: str) -> str:
    """``name`` when it names a device (auto, cpu, mps, cuda, cuda:N).

    Raises:
        ConfigError: for anything else.
    """
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, mps, cuda or cuda:N")
    return name


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split.

    Attributes:
        source: a folder, an archive (.tgz/.tar.gz/.tar/.zip), ``lfw`` or ``synthetic``.
        image_size: side of the square images the cache holds and the model sees.
        min_images: keep identities with at least this many usable images (LFW-8 is 8).
        split_file: CSV with columns ``path`` and a split column (``train``/``test``/empty).
        split_column: column of ``split_file`` to use; ``None`` picks ``lfw<min_images>``.
        test_fraction: stratified test share when the source is not pre-split.
        val_fraction: stratified validation share of the train part for ``train`` (not ``cv``).
        cache_dir: decoded-image and extraction cache; ``None`` means ``$FACECLS_CACHE`` or
            ``~/.cache/facecls``.
        crop: side of the centre square kept before resizing, as a fraction of the image's
            shorter side (1.0 keeps it all; 0.64 keeps LFW's centre 160 of 250 px, the face).
            Applies to decoded files with ``faces: centre`` (the synthetic source ignores it).
        faces: the face pipeline (:mod:`facecls.data.faces`): ``centre`` (the centre crop
            above; photos that are already faces), ``align`` (MTCNN + 5-point alignment),
            ``box`` (MTCNN box + margin) or ``detect`` (resolved to the detecting pipeline that
            suits the model: ``box`` for FaceNet, ``align`` otherwise). Detection runs once, at decode time; a photo without
            a face is skipped and listed, one with several keeps the main face (largest, most central).
        synthetic_classes: identities drawn by the ``synthetic`` source.
        synthetic_max: images of the most frequent synthetic identity.
        synthetic_min: images of the rarest synthetic identity.
        duplicate_distance: pHash bits (of 64) within which two images count as near
            duplicates, kept in one split and reported; -1 finds exact duplicates only.
    """

    source: str = "synthetic"
    image_size: int = 64
    min_images: int = 1
    split_file: str | None = None
    split_column: str | None = None
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    cache_dir: str | None = None
    crop: float = 1.0
    faces: str = "centre"
    synthetic_classes: int = 20
    synthetic_max: int = 60
    synthetic_min: int = 8
    duplicate_distance: int = 4


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation applied on the training device (rotation is the report's)."""

    rotation: float = 10.0
    hflip: bool = True
    scale: float = 0.1
    translate: float = 0.06
    enabled: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation settings.

    Fields left ``None`` are filled from the recipe by :func:`resolve`: ``fast`` (the default:
    AdamW, one-cycle schedule, label smoothing, flip test-time augmentation) or ``report`` (the
    report's Adam, lr 1e-4, weight decay 5e-3, constant rate). The resolved values are what a
    run directory's ``config.yaml`` records.

    Attributes:
        model: a registered model name or any torchvision classification model.
        pretrained: load ImageNet weights through torchvision's weights API.
        recipe: ``fast`` or ``report``; supplies every ``None`` field below.
        epochs: passes over the training part.
        batch_size: images per optimisation step.
        lr: learning rate (the peak rate of the one-cycle schedule).
        weight_decay: weight decay of the optimiser.
        optimizer: ``adam`` (L2 penalty, the report's) or ``adamw`` (decoupled decay).
        schedule: ``constant`` or ``onecycle``.
        label_smoothing: cross-entropy label smoothing.
        flip_tta: average each evaluated image's logits with its mirror image's.
        class_weights: ``none`` or ``inverse``: the report's name for ``imbalance: inverse``
            (kept as an alias; setting both to different remedies is refused).
        imbalance: the long-tail remedy in the loss: ``none``, ``inverse``, ``sqrt``,
            ``effective``, ``drw``, ``balanced-softmax`` or ``logit-adjust`` (see losses.py).
        tau: logit-adjustment strength of ``logit-adjust`` (1.0 = balanced softmax).
        beta: β of the effective number of samples (``effective`` and ``drw`` weights).
        drw_epoch: first epoch (1-based) of ``drw``'s re-weighting; ``None`` = the last third
            (``epochs * 2 // 3 + 1``).
        sampler: ``none``, ``class-balanced`` (each identity equally likely) or ``sqrt``
            (identity drawn ∝ sqrt of its image count); batches drawn with replacement.
        freeze: ``none``, ``backbone`` (linear probe: only the final Linear trains) or
            ``backbone-then-unfreeze`` (frozen until ``unfreeze_epoch``, then fine-tuned).
        unfreeze_epoch: first epoch (1-based) with the backbone unfrozen; ``None`` = after a
            third of the epochs (``epochs // 3 + 1``).
        backbone_lr_scale: backbone learning rate = ``lr × backbone_lr_scale`` when the model
            starts from pretrained weights (``pretrained`` or ``weights``); 1 otherwise.
        weights: a safetensors file of backbone weights (``facenet``: the CASIA-WebFace file),
            loaded with strict key matching, the classifier head excepted.
        seed: seeds splits, initialisation, batch order and augmentation.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (bf16 autocast on CUDA and on CPUs with native bf16 — AVX-512
            BF16 or AMX — fp32 elsewhere), ``bf16`` or ``fp32``.
        channels_last: NHWC memory format; ``None`` means on for CUDA and ResNet-style models.
        compile: ``torch.compile`` the model once and reuse it across folds.
        folds: k of the stratified k-fold in ``cv``.
        eval_batch_size: images per evaluation forward pass.
        skip_nonfinite: skip batches whose loss is NaN or infinite instead of stopping (costs a
            host sync per step).
        sync_bn: under several processes (``torchrun``), synchronise BatchNorm statistics over
            them (``nn.SyncBatchNorm``, CUDA only); otherwise each uses its own rows'.
        parallel_folds: under several processes, ``cv`` trains one fold per process instead of
            every fold with all of them.
    """

    model: str = "baseline"
    pretrained: bool = False
    recipe: str = "fast"
    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    schedule: str | None = None
    label_smoothing: float | None = None
    flip_tta: bool | None = None
    class_weights: str = "none"
    imbalance: str = "none"
    tau: float = 1.0
    beta: float = 0.999
    drw_epoch: int | None = None
    sampler: str = "none"
    freeze: str = "none"
    unfreeze_epoch: int | None = None
    backbone_lr_scale: float = 0.1
    weights: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    folds: int = 5
    eval_batch_size: int = 256
    skip_nonfinite: bool = False
    sync_bn: bool = False
    parallel_folds: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``train`` or ``cv`` run needs."""

    name: str = "run"
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CLASS_WEIGHTS = ("none", "inverse")
IMBALANCE = ("none", "inverse", "sqrt", "effective", "drw", "balanced-softmax", "logit-adjust")
SAMPLERS = ("none", "class-balanced", "sqrt")
FREEZE = ("none", "backbone", "backbone-then-unfreeze")
# The face pipelines of facecls.data.faces (kept here so config needs no torch import).
FACES = ("centre", "align", "box")


def imbalance_of(train: TrainConfig) -> str:
    """The loss remedy in force: ``imbalance``, or the report's alias ``class_weights``."""
    return train.imbalance if train.imbalance != "none" else train.class_weights
