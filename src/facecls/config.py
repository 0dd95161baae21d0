"""Run configuration: the frozen, typed dataclasses, one field per option with its CLI metadata.

Every library entry point takes a :class:`RunConfig` (or plain arguments that build one); the resolved
config is written into every run directory and every saved model, so a run can be repeated exactly.
Each field is the one place of its option: its ``metadata`` (:func:`option`) holds the help, the
choices and which commands take it; :mod:`facecls.config_options` makes the CLI flags and the
docs table (``docs/options.md``) from it. Filling and checking values is
:mod:`facecls.config_rules`; dicts and YAML are :mod:`facecls.config_io` (unknown keys and
wrong types raise :class:`ConfigError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


# What --device accepts; checked when parsed, so a typo fails before any work is done.
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
# The largest input side: 4096 px is 16.8 M pixels per image; a mistyped 100000 would ask the
# decode cache for terabytes. model.json is held to the same bound.
MAX_IMAGE_SIZE = 4096

CLASS_WEIGHTS = ("none", "inverse")
IMBALANCE = ("none", "inverse", "sqrt", "effective", "drw", "balanced-softmax", "logit-adjust")
SAMPLERS = ("none", "class-balanced", "sqrt")
FREEZE = ("none", "backbone", "backbone-then-unfreeze", "top")
RECIPE_NAMES = ("fast", "report")  # what facecls.config_rules.RECIPES fills in
# The face pipelines of facecls.data.faces (kept here so config needs no torch import).
FACES = ("centre", "align", "box", "arcface")

# The commands that take a run's options, and those of them that train folds.
RUN_COMMANDS = ("train", "cv", "tune", "lr-find")
FOLD_COMMANDS = ("cv", "tune")


def device_name(name: str) -> str:
    """``name`` when it names a device (auto, cpu, mps, cuda, cuda:N).

    Raises:
        ConfigError: for anything else.
    """
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, mps, cuda or cuda:N")
    return name


def option(
    help: str,
    *,
    flag: str | None = None,
    choices: Sequence[str] | None = None,
    commands: Sequence[str] = RUN_COMMANDS,
    group: str | None = None,
    parse: Callable[[str], Any] | None = None,
    default_text: str | None = None,
) -> dict[str, Any]:
    """The metadata of a config field that makes it an option (``field(metadata=option(...))``).

    Args:
        help: what the option does, for ``--help`` and the docs table.
        flag: the command-line flag; ``None`` means ``--`` + the field name with hyphens.
        choices: the values it accepts (checked on the command line and in every config).
        commands: the commands that take the flag; ``()`` for a config-file-only setting.
        group: the ``--help`` group (``facecls.config_options.GROUPS``); ``None`` means the
            section's own (data, training, run).
        parse: turns the flag's text into the value, raising :class:`ConfigError` when bad.
        default_text: the default in words, where the field's value (often ``None``: filled in
            later) does not say it.
    """
    return {
        "help": help,
        "flag": flag,
        "choices": None if choices is None else tuple(choices),
        "commands": tuple(commands),
        "group": group,
        "parse": parse,
        "default_text": default_text,
    }


def _opt(value: Any, help: str, **how: Any) -> Any:
    """A dataclass field with the default ``value`` and :func:`option` metadata."""
    return field(default=value, metadata=option(help, **how))


_RECIPE = "from --recipe"


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split (each field's help is its metadata)."""

    source: str = _opt(
        "synthetic",
        "a folder, an archive (.tgz/.tar.gz/.tar/.zip), 'lfw' or 'synthetic'",
        flag="--data",
    )
    image_size: int = _opt(
        64, "side of the square images the cache holds and the model sees, in pixels"
    )
    min_images: int = _opt(1, "keep identities with at least N usable images (LFW-8 is 8)")
    split_file: str | None = _opt(
        None,
        "CSV with columns path and a split column "
        "(train/test/empty) fixing the test split, e.g. "
        "lfw-benchmark-splits.csv",
    )
    split_column: str | None = _opt(None, "column of --split-file", default_text="lfw<min-images>")
    test_fraction: float = _opt(0.2, "stratified test share when the source is not pre-split")
    val_fraction: float = _opt(
        0.15, "stratified validation share of the train part for train (cv validates on its folds)"
    )
    cache_dir: str | None = _opt(
        None,
        "decoded-image and extraction cache",
        default_text="$FACECLS_CACHE or ~/.cache/facecls",
    )
    crop: float = _opt(
        1.0,
        "keep the centre square of this fraction of the shorter side before "
        "resizing (0.64 keeps LFW's centre 160 of 250 px, the face); photos "
        "decoded with --faces centre only",
    )
    faces: str = _opt(
        "centre",
        "face pipeline: centre (centre crop of photos that are faces), "
        "align (find faces with MTCNN, align on 5 landmarks), arcface (the same on the "
        "ArcFace framing, what sface expects), box (MTCNN box + margin) or detect (box for "
        "facenet, arcface for sface, align otherwise); detection runs once, "
        "at decode time; of a photo with several faces it keeps the one that agrees with "
        "the identity's other photos (FaceNet embeddings; else the main face) and lists them "
        "in data_report.json, as it lists photos without one",
        choices=(*FACES, "detect"),
    )
    synthetic_classes: int = _opt(20, "identities drawn by the synthetic source", commands=())
    synthetic_max: int = _opt(60, "images of the most frequent synthetic identity", commands=())
    synthetic_min: int = _opt(8, "images of the rarest synthetic identity", commands=())
    duplicate_distance: int = _opt(
        4,
        "pHash bits (of 64) within which two images count as near "
        "duplicates, kept in one split and reported; -1 finds exact "
        "duplicates only",
        commands=(),
    )


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation applied on the training device. Rotation is the report's; the rest is
    filled from ``--recipe`` when unset (``report``: none of it; ``fast``: flip, zoom, shift)."""

    rotation: float = _opt(10.0, "random rotation range in degrees")
    hflip: bool | None = _opt(None, "random horizontal flip", default_text=_RECIPE)
    scale: float | None = _opt(
        None, "random zoom: scale drawn from 1 ± this (0: none)", default_text=_RECIPE
    )
    translate: float | None = _opt(
        None, "random shift: up to this fraction of the side (0: none)", default_text=_RECIPE
    )
    enabled: bool = _opt(True, "augment the training batches at all", commands=())


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation settings (each field's help is its metadata).

    Fields left ``None`` are filled from the recipe by :func:`facecls.config_rules.resolve`:
    ``fast`` (the default: AdamW, one-cycle schedule, label smoothing, flip test-time
    augmentation) or ``report`` (the report's Adam, lr 1e-4, weight decay 5e-3, constant rate).
    The resolved values are what a run directory's ``config.yaml`` records.
    """

    model: str = _opt(
        "baseline",
        "a registered model (baseline, tronnet, resnet18, facenet) or "
        "any torchvision classification model name",
    )
    pretrained: bool | None = _opt(
        None,
        "start from pretrained weights: ImageNet's (torchvision's weights API) or FaceNet's "
        "CASIA-WebFace file (facecls weights get facenet)",
        default_text="on for facenet and sface without --weights, off otherwise",
    )
    recipe: str = _opt(
        "fast",
        "fills the settings left unset: fast (AdamW, one-cycle, label "
        "smoothing 0.1, flip TTA, flip/zoom/shift augmentation, 30 epochs) or report (the "
        "report's Adam, lr 1e-4, weight decay 5e-3, constant rate, rotation-only augmentation, "
        "a frozen backbone for --pretrained, 10 epochs)",
        choices=RECIPE_NAMES,
    )
    epochs: int | None = _opt(None, "passes over the training part", default_text=_RECIPE)
    batch_size: int = _opt(64, "images per optimisation step")
    lr: float | None = _opt(
        None,
        "learning rate (the peak of the one-cycle schedule)",
        default_text="from --recipe; fast: 1e-3 pretrained, 1e-2 for a --freeze backbone (or top) probe",
    )
    weight_decay: float | None = _opt(None, "weight decay of the optimiser", default_text=_RECIPE)
    optimizer: str | None = _opt(
        None,
        "adam (L2 penalty, the report's) or adamw (decoupled decay)",
        choices=("adam", "adamw"),
        default_text=_RECIPE,
    )
    schedule: str | None = _opt(
        None, "learning-rate schedule", choices=("constant", "onecycle"), default_text=_RECIPE
    )
    label_smoothing: float | None = _opt(
        None, "cross-entropy label smoothing", default_text=_RECIPE
    )
    flip_tta: bool | None = _opt(
        None, "average each evaluated image's logits with its mirror image's", default_text=_RECIPE
    )
    class_weights: str = _opt(
        "none",
        "the report's name for --imbalance inverse (two different remedies are refused)",
        choices=CLASS_WEIGHTS,
    )
    imbalance: str = _opt(
        "none",
        "loss remedy: inverse / sqrt / effective class weights, drw "
        "(deferred re-weighting), balanced-softmax or logit-adjust",
        choices=IMBALANCE,
        group="imbalance",
    )
    tau: float = _opt(1.0, "logit-adjust strength τ (1 = balanced softmax)", group="imbalance")
    beta: float = _opt(
        0.999, "β of the effective number of samples (effective and drw weights)", group="imbalance"
    )
    drw_epoch: int | None = _opt(
        None,
        "drw: first re-weighted epoch (1-based)",
        group="imbalance",
        default_text="the last third, epochs * 2 // 3 + 1",
    )
    sampler: str = _opt(
        "none",
        "re-sampling instead of a loss remedy: class-balanced (each "
        "identity equally likely) or sqrt (∝ sqrt of its image count), drawn "
        "with replacement",
        choices=SAMPLERS,
        group="imbalance",
    )
    freeze: str | None = _opt(
        None,
        "none: the whole network trains; backbone: linear probe (only the final Linear "
        "trains); backbone-then-unfreeze: probe until --unfreeze-epoch, then fine-tune; top "
        "(facenet): the probe, then its last stage tuned on cached inputs, kept near the "
        "pretrained embedding",
        choices=FREEZE,
        group="fine-tuning",
        default_text="none; under --recipe report, backbone for --pretrained or --weights "
        "(the report's transfer model trained only its fully connected layer)",
    )
    unfreeze_epoch: int | None = _opt(
        None,
        "first epoch (1-based) with the backbone unfrozen",
        group="fine-tuning",
        default_text="after a third, epochs // 3 + 1",
    )
    backbone_lr_scale: float = _opt(
        0.1,
        "pretrained backbone lr = lr × this (--pretrained or --weights; 1 otherwise)",
        group="fine-tuning",
    )
    weights: str | None = _opt(
        None,
        "backbone weights file (safetensors), e.g. FaceNet's "
        "CASIA-WebFace file; strict key match, the head excepted",
        group="fine-tuning",
    )
    seed: int = _opt(0, "seeds splits, initialisation, batch order and augmentation")
    device: str = _opt("auto", "auto, cpu, mps, cuda or cuda:N", parse=device_name)
    precision: str = _opt(
        "auto",
        "auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX), else fp32",
        choices=("auto", "bf16", "fp32"),
    )
    channels_last: bool | None = _opt(
        None, "NHWC memory format", default_text="on for CUDA and ResNet-style models"
    )
    compile: bool = _opt(False, "torch.compile the model once (reused across folds)")
    folds: int = _opt(5, "k of the stratified k-fold", commands=FOLD_COMMANDS)
    eval_batch_size: int = _opt(256, "images per evaluation forward pass", commands=())
    skip_nonfinite: bool = _opt(
        False, "skip batches with a NaN/infinite loss instead of stopping (a host sync per step)"
    )
    sync_bn: bool = _opt(
        False,
        "synchronise BatchNorm statistics over the processes (CUDA "
        "only); otherwise each uses its own rows'",
        group="processes",
    )
    parallel_folds: bool = _opt(
        False,
        "train one fold per process at once instead of each fold with all of them",
        commands=FOLD_COMMANDS,
        group="processes",
    )


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``train`` or ``cv`` run needs."""

    name: str = _opt("run", "run folder name under --runs-dir", default_text="<command>-<model>")
    runs_dir: str = _opt("runs", "where run folders go")
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def imbalance_of(train: TrainConfig) -> str:
    """The loss remedy in force: ``imbalance``, or the report's alias ``class_weights``."""
    return train.imbalance if train.imbalance != "none" else train.class_weights
