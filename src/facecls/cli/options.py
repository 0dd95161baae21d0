"""The options of a run (train, cv, tune, lr-find) and how they become a :class:`RunConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facecls.config import FACES, FREEZE, IMBALANCE, SAMPLERS, ConfigError, RunConfig, device_name
from facecls.config_io import from_dict, load_yaml, to_dict

# argparse destination → (config section, key). Options left unset keep the config's value.
_OPTIONS: dict[str, tuple[str, str]] = {
    "data": ("data", "source"),
    "image_size": ("data", "image_size"),
    "min_images": ("data", "min_images"),
    "split_file": ("data", "split_file"),
    "split_column": ("data", "split_column"),
    "test_fraction": ("data", "test_fraction"),
    "val_fraction": ("data", "val_fraction"),
    "cache_dir": ("data", "cache_dir"),
    "rotation": ("augment", "rotation"),
    "model": ("train", "model"),
    "pretrained": ("train", "pretrained"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "class_weights": ("train", "class_weights"),
    "imbalance": ("train", "imbalance"),
    "tau": ("train", "tau"),
    "beta": ("train", "beta"),
    "drw_epoch": ("train", "drw_epoch"),
    "sampler": ("train", "sampler"),
    "freeze": ("train", "freeze"),
    "unfreeze_epoch": ("train", "unfreeze_epoch"),
    "backbone_lr_scale": ("train", "backbone_lr_scale"),
    "weights": ("train", "weights"),
    "crop": ("data", "crop"),
    "faces": ("data", "faces"),
    "recipe": ("train", "recipe"),
    "optimizer": ("train", "optimizer"),
    "schedule": ("train", "schedule"),
    "label_smoothing": ("train", "label_smoothing"),
    "flip_tta": ("train", "flip_tta"),
    "precision": ("train", "precision"),
    "channels_last": ("train", "channels_last"),
    "compile": ("train", "compile"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "folds": ("train", "folds"),
    "skip_nonfinite": ("train", "skip_nonfinite"),
    "sync_bn": ("train", "sync_bn"),
    "parallel_folds": ("train", "parallel_folds"),
    "name": ("", "name"),
    "runs_dir": ("", "runs_dir"),
}


def device_type(name: str) -> str:
    """argparse type of ``--device``: refused when parsed, not after the data is loaded."""
    try:
        return device_name(name)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_run_options(p: argparse.ArgumentParser, folds: bool, resume: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder, archive (.tgz/.tar.gz/.tar/.zip), 'lfw' or 'synthetic'")
    g.add_argument("--image-size", type=int, help="square input size in pixels (default 64)")
    g.add_argument("--min-images", type=int, help="keep identities with at least N images")
    g.add_argument("--split-file", help="CSV fixing the test split (e.g. lfw-benchmark-splits.csv)")
    g.add_argument("--split-column", help="column of --split-file (default lfw<min-images>)")
    g.add_argument("--test-fraction", type=float, help="stratified test share (default 0.2)")
    g.add_argument("--val-fraction", type=float, help="validation share for train (default 0.15)")
    g.add_argument(
        "--cache-dir", help="decode/extract cache (default $FACECLS_CACHE or ~/.cache/facecls)"
    )
    g.add_argument(
        "--crop", type=float,
        help="keep the centre square of this fraction of the shorter side before resizing "
        "(default 1; 0.64 keeps LFW's centre 160 of 250 px, the face)",
    )  # fmt: skip
    g.add_argument(
        "--faces", choices=[*FACES, "detect"],
        help="face pipeline: centre (default: centre crop of photos that are faces), align "
        "(find faces with MTCNN, align on 5 landmarks), box (MTCNN box + margin) or detect "
        "(box for facenet, align otherwise)",
    )  # fmt: skip
    g.add_argument("--rotation", type=float, help="random rotation range in degrees (default 10)")
    g = p.add_argument_group("model and training (unset values come from --recipe)")
    g.add_argument(
        "--model", help="baseline, tronnet, resnet18, facenet or any torchvision model name"
    )
    g.add_argument("--pretrained", action="store_true", default=None, help="ImageNet weights")
    g.add_argument(
        "--recipe", choices=["fast", "report"],
        help="fast (default): AdamW, one-cycle, label smoothing 0.1, flip TTA, 30 epochs; "
        "report: the report's Adam lr 1e-4, weight decay 5e-3, constant rate, 10 epochs",
    )  # fmt: skip
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="learning rate (peak of the one-cycle schedule)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--optimizer", choices=["adam", "adamw"])
    g.add_argument("--schedule", choices=["constant", "onecycle"])
    g.add_argument("--label-smoothing", type=float)
    g.add_argument(
        "--flip-tta", action=argparse.BooleanOptionalAction, default=None,
        help="average logits with the mirror image at evaluation",
    )  # fmt: skip
    g.add_argument(
        "--class-weights", choices=["none", "inverse"],
        help="the report's name for --imbalance inverse",
    )  # fmt: skip
    g.add_argument("--seed", type=int)
    g.add_argument("--device", type=device_type, help="auto (default), cpu, cuda or cuda:N")
    g.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto: bf16 on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX), else fp32",
    )
    g.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="NHWC memory format (default: on for CUDA and ResNet-style models)",
    )  # fmt: skip
    g.add_argument(
        "--compile", action="store_true", default=None,
        help="torch.compile the model once (reused across folds)",
    )  # fmt: skip
    if folds:
        g.add_argument("--folds", type=int, help="k of stratified k-fold (default 5)")
    g.add_argument(
        "--skip-nonfinite", action="store_true", default=None,
        help="skip batches with a NaN/infinite loss instead of stopping (a sync per step)",
    )  # fmt: skip
    g = p.add_argument_group(
        "several processes (start with torchrun --nproc-per-node N -m facecls …; "
        "--batch-size is the global batch)"
    )
    g.add_argument(
        "--sync-bn", action="store_true", default=None,
        help="synchronise BatchNorm statistics over the processes (CUDA only)",
    )  # fmt: skip
    if folds:
        g.add_argument(
            "--parallel-folds", action="store_true", default=None,
            help="train one fold per process at once instead of each fold with all of them",
        )  # fmt: skip
    g = p.add_argument_group("imbalance (one remedy per run; docs/imbalance.md)")
    g.add_argument(
        "--imbalance", choices=list(IMBALANCE),
        help="loss remedy: inverse / sqrt / effective class weights, drw (deferred "
        "re-weighting), balanced-softmax, logit-adjust (default none)",
    )  # fmt: skip
    g.add_argument("--tau", type=float, help="logit-adjust strength τ (default 1)")
    g.add_argument("--beta", type=float, help="β of effective-number weights (default 0.999)")
    g.add_argument(
        "--drw-epoch", type=int, help="drw: first re-weighted epoch (default: last third)"
    )
    g.add_argument(
        "--sampler", choices=list(SAMPLERS),
        help="re-sampling instead of a loss remedy: class-balanced or sqrt (default none)",
    )  # fmt: skip
    g = p.add_argument_group("fine-tuning a pretrained backbone (docs/models.md)")
    g.add_argument(
        "--weights", help="backbone weights file (safetensors), e.g. FaceNet's CASIA-WebFace file"
    )
    g.add_argument(
        "--freeze", choices=list(FREEZE),
        help="backbone: linear probe; backbone-then-unfreeze: probe, then fine-tune",
    )  # fmt: skip
    g.add_argument("--unfreeze-epoch", type=int, help="first unfrozen epoch (default: after 1/3)")
    g.add_argument(
        "--backbone-lr-scale", type=float,
        help="pretrained backbone lr = lr × this (default 0.1)",
    )  # fmt: skip
    g = p.add_argument_group("run")
    g.add_argument("--config", type=Path, help="YAML config (e.g. a run's config.yaml)")
    g.add_argument("--name", help="run folder name under --runs-dir")
    g.add_argument("--runs-dir", help="where run folders go (default runs)")
    if not resume:
        return
    g.add_argument(
        "--resume", nargs="?", const="", metavar="RUN_DIR",
        help="continue an interrupted run folder (or runs-dir/name with --name); finished "
        "epochs and folds are not redone and the result equals an uninterrupted run",
    )  # fmt: skip


def resume_dir(args: argparse.Namespace) -> Path | None:
    """The run folder ``--resume`` names: its value, or ``--runs-dir``/``--name``."""
    if getattr(args, "resume", None) is None:  # lr-find has no --resume
        return None
    if args.resume:
        return Path(args.resume)
    if not args.name:
        raise ConfigError("--resume needs a run folder (--resume RUN_DIR) or --name")
    return Path(args.runs_dir or "runs") / args.name


def config_from_args(args: argparse.Namespace, command: str) -> RunConfig:
    """Merge a ``--config`` file (if any) with the options given on the command line.

    With ``--resume`` the run's own ``config.yaml`` is the base, so only options that are given
    can contradict it (the library refuses those).
    """
    base = args.config
    run = resume_dir(args)
    if run is not None and base is None:
        base = run / "config.yaml"
        if not base.is_file():
            raise ConfigError(f"--resume {run}: not a facecls run folder (no config.yaml)")
    values: dict[str, Any] = to_dict(load_yaml(base)) if base else {}
    values.setdefault(
        "name", f"{command}-{args.model or values.get('train', {}).get('model', 'baseline')}"
    )
    for dest, (section, key) in _OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if section:
            values.setdefault(section, {})[key] = value
        else:
            values[key] = value
    return from_dict(values)
