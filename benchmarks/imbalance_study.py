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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import facecls
import peers
from facecls import metrics
from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.data.augment import normalize
from facecls.data.batches import IndexBatches
from facecls.data.dataset import FaceDataset, load_dataset
from facecls.data.samplers import SampledBatches
from facecls.data.sources import default_cache_dir, scan_source
from facecls.data.splits import holdout, split_test
from facecls.models import create_model
from facecls.models.facenet import NORMALIZATION, WEIGHTS_FILE, FaceNet
from facecls.training.evaluate import group_metrics
from facecls.training.losses import build_loss, posthoc_adjust

# Remedy name → TrainConfig fields. "posthoc" re-evaluates the "none" model.
METHODS: dict[str, dict[str, Any]] = {
    "none": {},
    "inverse": {"imbalance": "inverse"},
    "sqrt": {"imbalance": "sqrt"},
    "effective": {"imbalance": "effective"},
    "drw": {"imbalance": "drw"},
    "balanced-softmax": {"imbalance": "balanced-softmax"},
    "logit-adjust": {"imbalance": "logit-adjust"},
    "class-balanced-sampler": {"sampler": "class-balanced"},
    "sqrt-sampler": {"sampler": "sqrt"},
    "posthoc": {},
}
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


def _row(system: str, model: str, method: str, cm: np.ndarray, groups: dict[str, Any],
         seconds: float, notes: str) -> dict[str, Any]:  # fmt: skip
    s = metrics.summary(cm)
    return {
        "system": system, "model": model, "method": method,
        "balanced_accuracy": s["balanced_accuracy"], "macro_f1": s["macro_f1"],
        "accuracy": s["accuracy"], "few_recall": groups["recall"].get("few"),
        "medium_recall": groups["recall"].get("medium"), "head_recall": groups["recall"].get("head"),
        "wall_seconds": round(seconds, 1), "notes": notes,
    }  # fmt: skip


def _row_from_run(model: str, method: str, test: dict[str, Any], seconds: float,
                  notes: str) -> dict[str, Any]:  # fmt: skip
    s, g = test["summary"], test["groups"]
    return {
        "system": "facecls", "model": model, "method": method,
        "balanced_accuracy": s["balanced_accuracy"], "macro_f1": s["macro_f1"],
        "accuracy": s["accuracy"], "few_recall": g["recall"].get("few"),
        "medium_recall": g["recall"].get("medium"), "head_recall": g["recall"].get("head"),
        "wall_seconds": round(seconds, 1), "notes": notes,
    }  # fmt: skip


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
        rows.append(_row_from_run(model, method, result.metrics["test"], seconds, notes))
        log(rows[-1])
        if method == "none":
            none_run = result.run_dir
    if "posthoc" in methods and none_run is not None:
        started = time.perf_counter()
        table = facecls.evaluate(none_run, log=lambda _m: None, logit_adjust=args.tau)
        seconds = time.perf_counter() - started
        rows.append(_row_from_run(model, f"posthoc τ={args.tau:g}", table, seconds,
                                  "the 'none' model, logits − τ·log π at evaluation"))  # fmt: skip
        log(rows[-1])
    return rows


@torch.no_grad()
def embed(model: FaceNet, images: torch.Tensor, mirrored: bool, batch: int = 64) -> torch.Tensor:
    """FaceNet's un-normalised 512-d embeddings of uint8 images (or of their mirror images)."""
    model.eval()
    mean, std = NORMALIZATION
    out = []
    for start in range(0, len(images), batch):
        x = normalize(images[start : start + batch], mean, std)
        x = (x.flip(3) if mirrored else x).contiguous(memory_format=torch.channels_last)
        out.append(model.features(x))
    return torch.cat(out)


def cached_embeddings(
    args: argparse.Namespace, model: FaceNet, images: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The classifier's input of every image (flip-averaged when asked), computed once per
    (size, crop, mirror) into ``--out``; and the seconds the embedding took this time."""
    seconds, parts = 0.0, []
    for mirrored in (False, True) if args.facenet_flip else (False,):
        name = f"facenet-{args.facenet_size}px-crop{args.facenet_crop:g}"
        cache = Path(args.out) / (name + ("-mirrored" if mirrored else "") + ".npy")
        if cache.exists():
            parts.append(torch.from_numpy(np.load(cache)))
            continue
        started = time.perf_counter()
        parts.append(embed(model, images, mirrored))
        seconds += time.perf_counter() - started
        np.save(cache, parts[-1].numpy())
    features = torch.stack(parts).mean(0)
    return nn.functional.normalize(features, dim=1) * model.embedding_scale, seconds


def train_head(
    features: torch.Tensor, targets: torch.Tensor, train_idx: np.ndarray, val_idx: np.ndarray,
    num_classes: int, train: TrainConfig, epochs: int, lr: float, seed: int,
) -> nn.Linear:  # fmt: skip
    """facecls's linear head on fixed embeddings, with the run's loss or sampler; the epoch
    with the lowest validation (selection) loss is kept, as ``facecls train`` does."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes)
    counts = np.bincount(targets.numpy()[train_idx], minlength=num_classes)
    loss_fn = build_loss(train, counts, torch.device("cpu"), 0.0)
    select = loss_fn.selection_loss()
    idx = torch.from_numpy(train_idx)
    cpu = torch.device("cpu")
    batches = (
        SampledBatches(features, targets, idx, 128, cpu, train.sampler, num_classes, True)
        if train.sampler != "none"
        else IndexBatches(features, targets, idx, 128, cpu, shuffle=True, drop_last=True)
    )
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    x_val, y_val = features[torch.from_numpy(val_idx)], targets[torch.from_numpy(val_idx)]
    best, best_state = float("inf"), None
    for epoch in range(1, epochs + 1):
        loss_fn.set_epoch(epoch)
        for x, y in batches.epoch(seed * 1000 + epoch):
            loss = loss_fn(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = float(select(head(x_val), y_val))
        if val_loss < best:
            best, best_state = val_loss, {k: v.clone() for k, v in head.state_dict().items()}
    assert best_state is not None
    head.load_state_dict(best_state)
    return head


def facenet_probe_rows(args, dataset: FaceDataset, split, methods: list[str], log) -> list[dict]:
    """Embed once with the frozen backbone, then one head per remedy."""
    model = create_model(
        "facenet", dataset.num_classes, args.facenet_size, weights=args.facenet_weights
    ).to(memory_format=torch.channels_last)
    assert isinstance(model, FaceNet)
    features, embed_seconds = cached_embeddings(args, model, dataset.images)
    log(f"FaceNet embeddings of {len(features)} images: {embed_seconds:.0f} s (0: cached)")
    targets = dataset.targets
    pool, test = split.pool, split.test
    val = holdout(targets.numpy(), pool, 0.15, args.seed)
    train_idx = np.setdiff1d(pool, val)
    counts = np.bincount(targets.numpy()[train_idx], minlength=dataset.num_classes)
    flip = ", flip-averaged" if args.facenet_flip else ""
    base = (
        f"frozen CASIA-WebFace backbone, {args.facenet_size} px centre crop "
        f"{args.facenet_crop:g}{flip}; NormFace head, {args.probe_epochs} epochs"
    )
    rows, none_head = [], None
    for method in methods:
        if method == "posthoc":
            continue
        train = TrainConfig(epochs=args.probe_epochs, tau=args.tau, **METHODS[method])
        started = time.perf_counter()
        head = train_head(features, targets, train_idx, val, dataset.num_classes, train,
                          args.probe_epochs, args.probe_lr, args.seed)  # fmt: skip
        with torch.no_grad():
            logits = head(features[torch.from_numpy(test)]).numpy()
        seconds = time.perf_counter() - started
        cm = metrics.confusion_matrix(targets.numpy()[test], logits.argmax(1), dataset.num_classes)
        rows.append(_row("facecls", "facenet (linear probe)", method, cm,
                         group_metrics(cm, counts), seconds, base))  # fmt: skip
        log(rows[-1])
        if method == "none":
            none_head = logits
    if "posthoc" in methods and none_head is not None:
        adjusted = posthoc_adjust(none_head, counts, args.tau)
        cm = metrics.confusion_matrix(
            targets.numpy()[test], adjusted.argmax(1), dataset.num_classes
        )
        rows.append(_row("facecls", "facenet (linear probe)", f"posthoc τ={args.tau:g}", cm,
                         group_metrics(cm, counts), 0.0, base))  # fmt: skip
        log(rows[-1])
    # The benchmark's reference recipe on the same embeddings: L2-normalised + scikit-learn LR.
    started = time.perf_counter()
    unit = nn.functional.normalize(features, dim=1).numpy()  # (the head's input / scale)
    preds, chosen = peers.logistic_regression(unit, targets.numpy(), pool, test)
    cm = metrics.confusion_matrix(targets.numpy()[test], preds, dataset.num_classes)
    pool_counts = np.bincount(targets.numpy()[pool], minlength=dataset.num_classes)
    rows.append(_row("scikit-learn", "FaceNet embeddings + logistic regression", "none", cm,
                     group_metrics(cm, pool_counts), time.perf_counter() - started,
                     f"same embeddings, L2-normalised; {chosen['best_params']}"))  # fmt: skip
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
        rows.append(_row_from_run("facenet (fine-tuned)", method, result.metrics["test"],
                                  time.perf_counter() - started, notes))  # fmt: skip
        log(rows[-1])
    return rows


def peer_rows(args, dataset: FaceDataset, split, log) -> list[dict]:
    wanted = [p for p in args.peers.split(",") if p]
    if not wanted:
        return []
    cache_dir = default_cache_dir()
    by_relpath = {ref.relpath: ref.path for ref in scan_source(args.data, cache_dir, log).refs}
    paths = [by_relpath[p] for p in dataset.paths]
    targets = dataset.targets.numpy()
    pool, test = split.pool, split.test
    counts = np.bincount(targets[pool], minlength=dataset.num_classes)
    rows = []
    if "eigenfaces" in wanted:
        started = time.perf_counter()
        preds, chosen = peers.eigenfaces_svm(paths, targets, pool, test, args.seed)
        cm = metrics.confusion_matrix(targets[test], preds, dataset.num_classes)
        rows.append(_row("scikit-learn", "eigenfaces + RBF SVM", "class_weight=balanced", cm,
                         group_metrics(cm, counts), time.perf_counter() - started,
                         f"PCA 150 whitened, 50×37 grey; {chosen['best_params']}"))  # fmt: skip
        log(rows[-1])
    if "dlib" in wanted:
        if not peers.dlib_available():
            log(
                "dlib peer skipped: pip install 'facecls[peers]' (dlib-bin, face-recognition-models)"
            )
        else:
            descriptors, seconds = peers.dlib_descriptors(paths, Path(args.out) / "dlib-128.npy")
            started = time.perf_counter()
            preds, chosen = peers.logistic_regression(descriptors, targets, pool, test)
            cm = metrics.confusion_matrix(targets[test], preds, dataset.num_classes)
            total = seconds + time.perf_counter() - started
            rows.append(_row("dlib (face_recognition's model)", "dlib embeddings + logistic "
                             "regression", "none", cm, group_metrics(cm, counts), total,
                             f"HOG detector, 5-point landmarks, 1 jitter; {chosen['best_params']}"
                             + ("" if seconds else "; descriptors from the cache")))  # fmt: skip
            log(rows[-1])
    return rows


def table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| system | model | remedy | balanced acc. | macro-F1 | accuracy | few recall "
        "| wall time | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        few = "—" if r["few_recall"] is None else f"{r['few_recall']:.3f}"
        lines.append(
            f"| {r['system']} | {r['model']} | {r['method']} | {r['balanced_accuracy']:.3f} "
            f"| {r['macro_f1']:.3f} | {r['accuracy']:.3f} | {few} | {r['wall_seconds']:.0f} s "
            f"| {r['notes']} |"
        )
    return "\n".join(lines)


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
