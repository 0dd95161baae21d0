"""Run configuration: frozen, typed dataclasses with strict YAML/dict round-trips.

Every library entry point takes a :class:`RunConfig` (or plain arguments that build one); the resolved
config is written into every run directory and every saved model, so a run can be repeated exactly.
Unknown keys and values of the wrong type raise :class:`ConfigError` instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecls.atomic import write_text


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


# What --device accepts; checked when parsed, so a typo fails before any work is done.
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def device_name(name: str) -> str:
    """``name`` when it names a device (auto, cpu, mps, cuda, cuda:N).

    Raises:
        ConfigError: for anything else.
    """
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
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
        pretrained: start from pretrained weights: ImageNet's through torchvision's weights
            API, FaceNet's CASIA-WebFace file from the weights cache (``facecls weights get
            facenet``). ``None``: yes for ``facenet`` (without ``weights``), no otherwise.
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
    pretrained: bool | None = None
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
# ``faces: detect`` is the detecting pipeline that suits the model: for FaceNet the box crop its
# weights were trained on (better than alignment on LFW pairs), else alignment.
DETECT_PIPELINES = {"facenet": "box"}


def imbalance_of(train: TrainConfig) -> str:
    """The loss remedy in force: ``imbalance``, or the report's alias ``class_weights``."""
    return train.imbalance if train.imbalance != "none" else train.class_weights


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
# Fine-tuning pretrained weights wants a smaller step than training from scratch.
FAST_PRETRAINED_LR = 1e-3
# A linear probe (--freeze backbone) trains one Linear layer: a larger step converges in a few
# epochs (FaceNet embeddings of LFW-8: 0.95 balanced accuracy after 1 epoch at 1e-2, 0.33 at 1e-3).
FAST_PROBE_LR = 1e-2


def resolve(config: RunConfig) -> RunConfig:
    """Fill the ``None`` training fields from the recipe; returns a new, validated config."""
    t = config.train
    if t.recipe not in RECIPES:
        raise ConfigError(f"train.recipe must be one of {sorted(RECIPES)}, got {t.recipe!r}")
    defaults = dict(RECIPES[t.recipe])
    if t.pretrained is None:  # FaceNet from scratch is rarely wanted: its weights by default
        t = dataclasses.replace(t, pretrained=t.model == "facenet" and not t.weights)
    if t.recipe == "fast" and t.freeze == "backbone":
        defaults["lr"] = FAST_PROBE_LR
    elif t.recipe == "fast" and (t.pretrained or t.weights):
        defaults["lr"] = FAST_PRETRAINED_LR
    filled = {k: v for k, v in defaults.items() if getattr(t, k) is None}
    config = dataclasses.replace(config, train=dataclasses.replace(t, **filled))
    if config.data.faces == "detect":
        faces = DETECT_PIPELINES.get(t.model, "align")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, faces=faces))
    return validate(config)


def validate(config: RunConfig) -> RunConfig:
    """Check value ranges that types cannot express; returns the config unchanged.

    Raises:
        ConfigError: naming the first invalid setting.
    """
    d, t = config.data, config.train
    checks = [
        (d.image_size >= 16, f"data.image_size must be >= 16, got {d.image_size}"),
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
            t.optimizer in (None, "adam", "adamw"),
            f"train.optimizer: adam or adamw, not {t.optimizer!r}",
        ),
        (
            t.schedule in (None, "constant", "onecycle"),
            f"train.schedule: constant or onecycle, not {t.schedule!r}",
        ),
        (
            t.label_smoothing is None or 0 <= t.label_smoothing < 1,
            f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}",
        ),
        (
            t.precision in ("auto", "bf16", "fp32"),
            f"train.precision: auto, bf16 or fp32, not {t.precision!r}",
        ),
        (t.folds >= 2, f"train.folds must be >= 2, got {t.folds}"),
        (0 <= t.seed <= MAX_SEED, f"train.seed must be in [0, {MAX_SEED}], got {t.seed}"),
        (
            bool(_DEVICE.fullmatch(t.device)),
            f"train.device: auto, cpu, cuda or cuda:N, not {t.device!r}",
        ),
        (
            t.class_weights in CLASS_WEIGHTS,
            f"train.class_weights must be one of {CLASS_WEIGHTS}, got {t.class_weights!r}",
        ),
        (0.0 < d.crop <= 1.0, f"data.crop must be in (0, 1], got {d.crop}"),
        (
            d.faces in (*FACES, "detect"),
            f"data.faces must be one of {', '.join(FACES)} or detect, got {d.faces!r}",
        ),
        (
            t.imbalance in IMBALANCE,
            f"train.imbalance must be one of {IMBALANCE}, got {t.imbalance!r}",
        ),
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
        (t.sampler in SAMPLERS, f"train.sampler must be one of {SAMPLERS}, got {t.sampler!r}"),
        (
            t.sampler == "none" or imbalance_of(t) == "none",
            f"one imbalance remedy per run: sampler {t.sampler!r} with imbalance "
            f"{imbalance_of(t)!r} would correct twice; set one of them to 'none'",
        ),
        (t.freeze in FREEZE, f"train.freeze must be one of {FREEZE}, got {t.freeze!r}"),
        (
            t.unfreeze_epoch is None
            or (t.unfreeze_epoch >= 1 and (t.epochs is None or t.unfreeze_epoch <= t.epochs)),
            f"train.unfreeze_epoch must be in [1, epochs={t.epochs}], got {t.unfreeze_epoch}",
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


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (nested dataclasses become dicts)."""
    return dataclasses.asdict(config)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        concrete = [o for o in options if o is not type(None)]
        if len(concrete) == 1:  # Optional[X]: report X's own error
            return _coerce(value, concrete[0], where)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(annotation, value, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        # bool is a subclass of int: refuse True where an int is expected.
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {annotation}")


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def from_dict(values: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a (possibly partial) nested dict.

    Raises:
        ConfigError: on unknown keys, wrong types or out-of-range values.
    """
    return validate(_from_dict(RunConfig, values, ""))


def replace(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Return a copy with fields of sections replaced, e.g. ``replace(c, train={"epochs": 3})``."""
    merged = to_dict(config)
    for section, values in sections.items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        else:
            merged[section] = values
    return from_dict(merged)


def save_yaml(config: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    import yaml  # here, not at the top: ``facecls --help`` starts faster without it

    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def load_yaml(path: Path) -> RunConfig:
    """Read a config written by :func:`save_yaml` (``yaml.safe_load``: no objects are built)."""
    import yaml  # here, not at the top: ``facecls --help`` starts faster without it

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read this config ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8)") from error
    except yaml.YAMLError as error:  # a python/object tag is refused here too (safe_load)
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(values)
