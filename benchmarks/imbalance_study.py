"""``benchmarks/lfw.py --study imbalance``: long-tail remedies × models, and peers, on LFW-8.

Every system is trained on the split file's train part of LFW-8 (217 identities, 3,857 images) and
measured once on its test part (965 images). Rows:

* CNNs (``--models``, default ``tronnet,resnet18,facenet``; ``mobilenet_v2`` is the ImageNet
  transfer): one ``facecls.train`` run per remedy (``--methods``), validation held out of the
  train part as ``facecls train`` does, the epoch with the lowest validation loss kept.
  ``posthoc`` re-evaluates the ``none`` run's model with logits − τ·log π (no training).
* ``facenet`` (``--facenet-mode``): ``probe`` embeds every image once with the frozen CASIA-WebFace
  backbone (centre crop, optionally flip-averaged) and trains facecls's head, ``Linear(512, N)`` on
  the classifier input (the L2-normalised embedding × 16), with each remedy's loss or sampler: what ``--freeze backbone`` computes,
  minus the per-epoch augmentation, at a fraction of the CPU cost. ``finetune`` runs
  ``facecls.train`` with ``--weights`` and ``--freeze backbone-then-unfreeze`` (GPU-sized).
* Peers (``benchmarks/peers.py``) on the same train/test images: eigenfaces + RBF SVM, and dlib
  embeddings + logistic regression when ``facecls[peers]`` is installed.

Columns: balanced accuracy, macro-F1, accuracy, recall of the "few" identities (< 8 training
images), wall time, and the hardware. Results go to ``<out>/study.json`` and ``study.md``.
Rows on embeddings computed once are ``imbalance_embedded.py``; rows and table
``imbalance_rows.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

import facecls
from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.data.dataset import load_dataset
from facecls.data.splits import split_test
from facecls.models.facenet import WEIGHTS_FILE
from imbalance_embedded import facenet_probe_rows, peer_rows
from imbalance_rows import METHODS, row_from_run, table

PRETRAINED = {"mobilenet_v2", "resnet18-imagenet"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--study imbalance")
    g.add_argument("--methods", default=",".join(METHODS), help="remedies (see METHODS)")
    g.add_argument("--tau", type=float, default=1.0, help="τ of logit-adjust and posthoc")
    g.add_argument("--crop", type=float, default=1.0, help="centre crop of the CNNs' images")
    g.add_argument("--transfer-size", type=int, default=96, help="mobilenet_v2's image size")
    g.add_argument("--transfer-epochs", type=int, default=10)
    g.add_argument("--facenet-mode", default="probe", choices=["probe", "finetune", "none"])
    g.add_argument("--facenet-size", type=int, default=160)
    g.add_argument("--facenet-crop", type=float, default=0.64, help="LFW's centre 160 of 250 px")
    g.add_argument("--facenet-flip", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument(
        "--facenet-weights",
        help="safetensors file (default ../shared/weights/" + WEIGHTS_FILE + ")",
    )
    g.add_argument("--facenet-epochs", type=int, default=8, help="finetune mode")
    g.add_argument("--probe-epochs", type=int, default=60)
    g.add_argument("--probe-lr", type=float, default=1e-3)
    g.add_argument("--peers", default="eigenfaces,dlib", help="peers to measure ('' for none)")


def hardware(device: str) -> str:
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return f"1× {torch.cuda.get_device_name(0)}"
    cores = os.cpu_count()
    return (
        f"{cores}-core CPU ({platform.processor() or platform.machine()}), no GPU, "
        f"{torch.get_num_threads()} torch threads"
    )


def cnn_rows(args: argparse.Namespace, model: str, methods: list[str], log) -> list[dict]:
    """One ``facecls.train`` run per remedy (``posthoc`` reuses the ``none`` run)."""
    pretrained = model in PRETRAINED
    name = "resnet18" if model == "resnet18-imagenet" else model
    size = args.transfer_size if pretrained else args.size
    epochs = args.transfer_epochs if pretrained else (args.epochs or 30)
    rows, none_run = [], None
    for method in methods:
        if method == "posthoc":
            continue
        config = RunConfig(
            name=f"{model}-{method}-{size}px", runs_dir=str(Path(args.out) / "runs"),
            data=DataConfig(source=args.data, image_size=size, min_images=args.min_images,
                            split_file=args.split_file, crop=args.crop),
            augment=AugmentConfig(),
            train=TrainConfig(model=name, pretrained=pretrained, recipe=args.recipe,
                              epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, device=args.device, tau=args.tau,
                              **METHODS[method]),
        )  # fmt: skip
        started = time.perf_counter()
        result = facecls.train(config, log=lambda _m: None)
        seconds = time.perf_counter() - started
        notes = f"{size} px, {epochs} epochs, {args.recipe} recipe" + (
            ", ImageNet weights" if pretrained else ", from scratch"
        )
        rows.append(row_from_run(model, method, result.metrics["test"], seconds, notes))
        log(rows[-1])
        if method == "none":
            none_run = result.run_dir
    if "posthoc" in methods and none_run is not None:
        started = time.perf_counter()
        table = facecls.evaluate(none_run, log=lambda _m: None, logit_adjust=args.tau)
        seconds = time.perf_counter() - started
        rows.append(row_from_run(model, f"posthoc τ={args.tau:g}", table, seconds,
                                  "the 'none' model, logits − τ·log π at evaluation"))  # fmt: skip
        log(rows[-1])
    return rows


def facenet_finetune_rows(args, methods: list[str], log) -> list[dict]:
    """``facecls.train`` with the CASIA-WebFace weights, probe then fine-tune (GPU-sized)."""
    rows = []
    for method in [m for m in methods if m != "posthoc"]:
        config = RunConfig(
            name=f"facenet-{method}", runs_dir=str(Path(args.out) / "runs"),
            data=DataConfig(source=args.data, image_size=args.facenet_size,
                            min_images=args.min_images, split_file=args.split_file,
                            crop=args.facenet_crop),
            augment=AugmentConfig(),
            train=TrainConfig(model="facenet", weights=args.facenet_weights, recipe=args.recipe,
                              epochs=args.facenet_epochs, batch_size=args.batch_size,
                              freeze="backbone-then-unfreeze", seed=args.seed,
                              device=args.device, tau=args.tau, **METHODS[method]),
        )  # fmt: skip
        started = time.perf_counter()
        result = facecls.train(config, log=lambda _m: None)
        notes = (
            f"{args.facenet_size} px crop {args.facenet_crop:g}, {args.facenet_epochs} epochs, "
            "probe then fine-tune (backbone lr × 0.1)"
        )
        rows.append(row_from_run("facenet (fine-tuned)", method, result.metrics["test"],
                                  time.perf_counter() - started, notes))  # fmt: skip
        log(rows[-1])
    return rows


def run(args: argparse.Namespace) -> None:
    """The whole study; prints progress lines, then the table."""
    started = time.perf_counter()
    load_before = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(item: Any) -> None:
        if isinstance(item, dict):
            item = (f"  {item['model']:<40} {item['method']:<24} bal acc "
                    f"{item['balanced_accuracy']:.3f}  few {item['few_recall'] or 0:.3f}  "
                    f"{item['wall_seconds']:.0f} s")  # fmt: skip
        print(item, flush=True)

    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; known: {list(METHODS)}")
    models = [m for m in args.models.split(",") if m]
    rows: list[dict] = []
    # Peers and the FaceNet probe share one decode of LFW-8 at FaceNet's size and crop.
    data = DataConfig(source=args.data, image_size=args.facenet_size, min_images=args.min_images,
                      split_file=args.split_file, crop=args.facenet_crop)  # fmt: skip
    dataset = load_dataset(data, log)
    split = split_test(dataset, data, args.seed)
    log(f"LFW-{args.min_images}: {dataset.num_classes} identities, {len(split.pool)} train, "
        f"{len(split.test)} test ({split.how})")  # fmt: skip
    rows += peer_rows(args, dataset, split, log)
    if "facenet" in models and args.facenet_mode == "probe":
        rows += facenet_probe_rows(args, dataset, split, methods, log)
    del dataset
    for model in models:
        if model == "facenet":
            if args.facenet_mode == "finetune":
                rows += facenet_finetune_rows(args, methods, log)
            continue
        rows += cnn_rows(args, model, methods, log)
    load_after = os.getloadavg()
    header = (
        f"LFW-{args.min_images} test split ({args.split_file and Path(args.split_file).name}), "
        f"seed {args.seed}; {hardware(args.device)}; load average {load_before[0]:.1f} at the "
        f"start, {load_after[0]:.1f} at the end (other jobs share the cores: CPU times are "
        f"upper bounds); whole study {time.perf_counter() - started:.0f} s"
    )
    text = table(rows, header)
    print("\n" + text)
    (out / "study.md").write_text(text + "\n")
    (out / "study.json").write_text(
        json.dumps(
            {"args": vars(args), "hardware": hardware(args.device), "header": header, "rows": rows},
            indent=2,
            default=str,
        )  # fmt: skip
    )
