"""The imbalance study's rows on embeddings computed once: the FaceNet linear probe, peers."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import peers
from facecls import metrics
from facecls.config import TrainConfig
from facecls.data.augment import normalize
from facecls.data.batches import IndexBatches
from facecls.data.dataset import FaceDataset
from facecls.data.samplers import SampledBatches
from facecls.data.sources import default_cache_dir, scan_source
from facecls.data.splits import holdout
from facecls.models import create_model
from facecls.models.facenet import NORMALIZATION, FaceNet
from facecls.training.evaluate import group_metrics
from facecls.training.losses import build_loss, posthoc_adjust
from imbalance_rows import METHODS, row


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
        rows.append(row("facecls", "facenet (linear probe)", method, cm,
                         group_metrics(cm, counts), seconds, base))  # fmt: skip
        log(rows[-1])
        if method == "none":
            none_head = logits
    if "posthoc" in methods and none_head is not None:
        adjusted = posthoc_adjust(none_head, counts, args.tau)
        cm = metrics.confusion_matrix(
            targets.numpy()[test], adjusted.argmax(1), dataset.num_classes
        )
        rows.append(row("facecls", "facenet (linear probe)", f"posthoc τ={args.tau:g}", cm,
                         group_metrics(cm, counts), 0.0, base))  # fmt: skip
        log(rows[-1])
    # The benchmark's reference recipe on the same embeddings: L2-normalised + scikit-learn LR.
    started = time.perf_counter()
    unit = nn.functional.normalize(features, dim=1).numpy()  # (the head's input / scale)
    preds, chosen = peers.logistic_regression(unit, targets.numpy(), pool, test)
    cm = metrics.confusion_matrix(targets.numpy()[test], preds, dataset.num_classes)
    pool_counts = np.bincount(targets.numpy()[pool], minlength=dataset.num_classes)
    rows.append(row("scikit-learn", "FaceNet embeddings + logistic regression", "none", cm,
                     group_metrics(cm, pool_counts), time.perf_counter() - started,
                     f"same embeddings, L2-normalised; {chosen['best_params']}"))  # fmt: skip
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
        rows.append(row("scikit-learn", "eigenfaces + RBF SVM", "class_weight=balanced", cm,
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
            rows.append(row("dlib (face_recognition's model)", "dlib embeddings + logistic "
                             "regression", "none", cm, group_metrics(cm, counts), total,
                             f"HOG detector, 5-point landmarks, 1 jitter; {chosen['best_params']}"
                             + ("" if seconds else "; descriptors from the cache")))  # fmt: skip
            log(rows[-1])
    return rows
