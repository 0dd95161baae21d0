"""Filling a config's unset training fields from its recipe, and the checks types cannot express."""

from __future__ import annotations

import dataclasses
from typing import Any

from facecls.config import (
    DEVICE_PATTERN,
    MAX_IMAGE_SIZE,
    MAX_SEED,
    AugmentConfig,
    ConfigError,
    RunConfig,
    imbalance_of,
)

# ``faces: detect`` is the detecting pipeline that suits the model: for FaceNet the box crop its
# weights were trained on (better than alignment on LFW pairs), for SFace the ArcFace template
# it was trained on, else alignment.
DETECT_PIPELINES = {"facenet": "box", "sface": "arcface"}
# Face backbones with weights of their own in the weights store (``facecls weights get NAME``):
# they start from them unless told otherwise.
PRETRAINED_FACE_MODELS = ("facenet", "sface")

# What each recipe puts in the TrainConfig fields left unset. The report's is Table 1-2's
# training; "fast" is a modern short schedule (AdamW + one-cycle + label smoothing + flip TTA).
RECIPES: dict[str, dict[str, Any]] = {
    "report": {
        "optimizer": "adam", "lr": 1e-4, "weight_decay": 5e-3, "schedule": "constant",
        "label_smoothing": 0.0, "flip_tta": False, "epochs": 10,
    },
    "fast": {
        "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "schedule": "onecycle",
        "label_smoothing": 0.1, "flip_tta": True, "epochs": 30,
    },
}  # fmt: skip
# What each recipe puts in the AugmentConfig fields left unset: the report rotates only (§3.1).
AUGMENT_RECIPES: dict[str, dict[str, Any]] = {
    "report": {"hflip": False, "scale": 0.0, "translate": 0.0},
    "fast": {"hflip": True, "scale": 0.1, "translate": 0.06},
}
# Fine-tuning pretrained weights wants a smaller step than training from scratch.
FAST_PRETRAINED_LR = 1e-3
# A linear probe (--freeze backbone) trains one Linear layer: a larger step converges in a few
# epochs (FaceNet embeddings of LFW-8: 0.95 balanced accuracy after 1 epoch at 1e-2, 0.33 at 1e-3).
FAST_PROBE_LR = 1e-2
# Models whose last stage ``--freeze top`` knows (training/top_tune.py).
TOP_STAGE_MODELS = ("facenet",)


def resolve(config: RunConfig) -> RunConfig:
    """Fill the ``None`` training fields from the recipe; returns a new, validated config."""
    t = config.train
    if t.recipe not in RECIPES:
        raise ConfigError(f"train.recipe must be one of {sorted(RECIPES)}, got {t.recipe!r}")
    defaults = dict(RECIPES[t.recipe])
    if t.pretrained is None:  # a face backbone from scratch is rarely wanted: its weights
        t = dataclasses.replace(t, pretrained=t.model in PRETRAINED_FACE_MODELS and not t.weights)
    # The report's transfer model trained only its fully connected layer (§3.4).
    starts_pretrained = bool(t.pretrained or t.weights)
    defaults["freeze"] = "backbone" if t.recipe == "report" and starts_pretrained else "none"
    freeze = t.freeze if t.freeze is not None else defaults["freeze"]
    if t.recipe == "fast" and freeze in ("backbone", "top"):
        defaults["lr"] = FAST_PROBE_LR
    elif t.recipe == "fast" and (t.pretrained or t.weights):
        defaults["lr"] = FAST_PRETRAINED_LR
    filled = {k: v for k, v in defaults.items() if getattr(t, k) is None}
    config = dataclasses.replace(config, train=dataclasses.replace(t, **filled))
    config = dataclasses.replace(config, augment=augment_of(config.augment, t.recipe))
    if config.data.faces == "detect":
        faces = DETECT_PIPELINES.get(t.model, "align")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, faces=faces))
    return validate(config)


def _plain_name(name: str) -> bool:
    """One non-empty path component: a run folder never lands outside ``runs_dir``."""
    return (
        bool(name.strip())
        and name not in (".", "..")
        and not any(sep in name for sep in ("/", "\\", "\0"))
    )


def augment_of(augment: AugmentConfig, recipe: str = "fast") -> AugmentConfig:
    """``augment`` with its unset fields filled from ``recipe`` (the ``fast`` one when a caller
    augments with a config no run resolved)."""
    unset = {k: v for k, v in AUGMENT_RECIPES[recipe].items() if getattr(augment, k) is None}
    return dataclasses.replace(augment, **unset)


def _check_choices(config: RunConfig) -> None:
    """Every field with ``choices`` in its metadata (:func:`facecls.config.option`) holds one
    of them (or ``None`` where the field may be unset)."""
    for section in (None, "data", "augment", "train"):
        values = config if section is None else getattr(config, section)
        for f in dataclasses.fields(values):
            choices = f.metadata.get("choices")
            value = getattr(values, f.name)
            if choices is None or value is None or value in choices:
                continue
            where = f"{section}.{f.name}" if section else f.name
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")


def validate(config: RunConfig) -> RunConfig:
    """Check value ranges that types cannot express; returns the config unchanged.

    Raises:
        ConfigError: naming the first invalid setting.
    """
    _check_choices(config)
    d, t = config.data, config.train
    checks = [
        (
            16 <= d.image_size <= MAX_IMAGE_SIZE,
            f"data.image_size must be in [16, {MAX_IMAGE_SIZE}] px, got {d.image_size}",
        ),
        (
            _plain_name(config.name),
            f"name {config.name!r} must be a plain folder name (not empty, no '/', not '.' or "
            f"'..'): the run folder goes inside runs_dir {config.runs_dir!r}",
        ),
        (d.min_images >= 1, f"data.min_images must be >= 1, got {d.min_images}"),
        (
            0.0 < d.test_fraction < 1.0,
            f"data.test_fraction must be in (0, 1), got {d.test_fraction}",
        ),
        (0.0 < d.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {d.val_fraction}"),
        (
            -1 <= d.duplicate_distance <= 32,
            f"data.duplicate_distance must be in [-1, 32], got {d.duplicate_distance}",
        ),
        (t.epochs is None or t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 2, f"train.batch_size must be >= 2 (BatchNorm), got {t.batch_size}"),
        (t.lr is None or t.lr > 0, f"train.lr must be > 0, got {t.lr}"),
        (
            t.weight_decay is None or t.weight_decay >= 0,
            f"train.weight_decay must be >= 0, got {t.weight_decay}",
        ),
        (
            t.label_smoothing is None or 0 <= t.label_smoothing < 1,
            f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}",
        ),
        (t.folds >= 2, f"train.folds must be >= 2, got {t.folds}"),
        (0 <= t.seed <= MAX_SEED, f"train.seed must be in [0, {MAX_SEED}], got {t.seed}"),
        (
            bool(DEVICE_PATTERN.fullmatch(t.device)),
            f"train.device: auto, cpu, cuda or cuda:N, not {t.device!r}",
        ),
        (0.0 < d.crop <= 1.0, f"data.crop must be in (0, 1], got {d.crop}"),
        (
            t.class_weights == "none" or t.imbalance in ("none", t.class_weights),
            f"train.class_weights {t.class_weights!r} (the report's alias of imbalance) "
            f"contradicts train.imbalance {t.imbalance!r}; set only one",
        ),
        (t.tau >= 0, f"train.tau must be >= 0, got {t.tau}"),
        (0.0 <= t.beta < 1.0, f"train.beta must be in [0, 1), got {t.beta}"),
        (
            t.drw_epoch is None
            or (t.drw_epoch >= 1 and (t.epochs is None or t.drw_epoch <= t.epochs)),
            f"train.drw_epoch must be in [1, epochs={t.epochs}], got {t.drw_epoch}",
        ),
        (
            t.sampler == "none" or imbalance_of(t) == "none",
            f"one imbalance remedy per run: sampler {t.sampler!r} with imbalance "
            f"{imbalance_of(t)!r} would correct twice; set one of them to 'none'",
        ),
        (
            t.unfreeze_epoch is None
            or (t.unfreeze_epoch >= 1 and (t.epochs is None or t.unfreeze_epoch <= t.epochs)),
            f"train.unfreeze_epoch must be in [1, epochs={t.epochs}], got {t.unfreeze_epoch}",
        ),
        (
            t.freeze != "top" or (t.model in TOP_STAGE_MODELS and not t.compile),
            f"train.freeze top tunes FaceNet's last stage on cached inputs: it needs --model "
            f"facenet and no --compile (got --model {t.model}"
            f"{', --compile' if t.compile else ''})",
        ),
        (
            t.backbone_lr_scale > 0,
            f"train.backbone_lr_scale must be > 0, got {t.backbone_lr_scale}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config
