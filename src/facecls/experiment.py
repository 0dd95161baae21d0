"""fit() and cross_validate(): run directories, the training of one model, folds and summaries.

Both commands share :func:`train_model` (one model on given train/validation indices), which
uses the engine's only loops. Run files are written atomically; metrics come from ``metrics.py``
and files other than checkpoints from ``report.py``.
"""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from facecls import metrics
from facecls.atomic import write_json
from facecls.bundle import Bundle, facecls_version, save_bundle
from facecls.config import RunConfig, resolve, save_yaml, to_dict
from facecls.data.augment import channel_stats
from facecls.data.batches import IndexBatches, resident
from facecls.data.dataset import FaceDataset, load_dataset
from facecls.data.samplers import SampledBatches
from facecls.data.splits import (
    TestSplit,
    folds_document,
    folds_from_document,
    holdout,
    split_test,
    stratified_folds,
)
from facecls.engine import EvalResult, evaluate, train_one_epoch
from facecls.finetune import describe, frozen_at, load_backbone_weights, param_groups
from facecls.finetune import set_backbone_frozen as _set_frozen
from facecls.losses import build_loss, posthoc_adjust
from facecls.models import create_model, model_info
from facecls.optimization import build_optimizer, build_scheduler, runtime_for
from facecls.report import write_run_files

Log = Callable[[str], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use cpu")
    return device


@dataclass
class TrainedModel:
    """One trained model (the best epoch by validation loss) and how it got there."""

    model: nn.Module
    mean: list[float]
    std: list[float]
    history: list[dict[str, Any]]
    best_epoch: int
    val: EvalResult
    train_counts: np.ndarray


@dataclass
class RunResult:
    """What ``fit``/``cross_validate`` return: the run folder and its ``metrics.json`` content."""

    run_dir: Path
    metrics: dict[str, Any]
    folds: list[TrainedModel] = field(default_factory=list, repr=False)


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    """Batch order and augmentation of an epoch depend only on (seed, fold, epoch)."""
    return (seed * 1_000_003 + fold * 10_007 + epoch) % (2**63)


def train_model(
    dataset: FaceDataset,
    images: torch.Tensor,
    targets: torch.Tensor,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: RunConfig,
    device: torch.device,
    models: ModelSource,
    fold: int = 0,
    log: Log = print,
    show_progress: bool = False,
) -> TrainedModel:
    """Train one model on ``train_idx``, keep the epoch with the lowest validation loss.

    Args:
        images: the dataset's uint8 images, already resident (device or pinned host memory).
        targets: the dataset's targets on the same device as ``images``.
    """
    t = config.train
    runtime = runtime_for(t, device)
    model, module = models.get(fold)
    mean, std = input_normalization(dataset, train_idx, t.model)
    counts = dataset.class_counts(train_idx)
    loss_fn = build_loss(t, counts, device, t.label_smoothing or 0.0)
    # Validation loss (checkpoint selection) is never smoothed, and for DRW is the re-weighted
    # loss of the last phase in every epoch, so the best epoch is chosen on one scale.
    val_loss_fn = loss_fn.selection_loss()
    pretrained = bool(t.pretrained or t.weights)
    optimizer = build_optimizer(
        module, t, device, param_groups(module, t.lr, t.backbone_lr_scale if pretrained else 1.0)
    )
    drop_last = len(train_idx) > t.batch_size
    train_batches: IndexBatches = (
        SampledBatches(images, targets, torch.from_numpy(train_idx), t.batch_size, device,
                       t.sampler, dataset.num_classes, drop_last)
        if t.sampler != "none"
        else IndexBatches(images, targets, torch.from_numpy(train_idx), t.batch_size, device,
                          shuffle=True, drop_last=drop_last)
    )  # fmt: skip
    scheduler = build_scheduler(optimizer, t, len(train_batches))
    if fold == 0 and (t.freeze != "none" or pretrained):
        log(f"Fine-tuning: {describe(t, pretrained)}")
    val_batches = IndexBatches(
        images, targets, torch.from_numpy(val_idx), t.eval_batch_size, device
    )
    history: list[dict[str, Any]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    for epoch in range(1, t.epochs + 1):
        loss_fn.set_epoch(epoch)
        if t.freeze != "none":
            _set_frozen(module, frozen_at(t, epoch))
        bar = tqdm(
            total=len(train_batches) * t.batch_size, unit="img", leave=False,
            desc=f"fold {fold} epoch {epoch}/{t.epochs}", disable=not show_progress,
        )  # fmt: skip
        stats = train_one_epoch(
            model, train_batches, optimizer, loss_fn, mean, std, config.augment,
            epoch_seed(t.seed, fold, epoch), runtime, scheduler, on_batch=bar.update,
        )  # fmt: skip
        bar.close()
        val = evaluate(model, val_batches, mean, std, val_loss_fn, bool(t.flip_tta), runtime)
        summary = metrics.summary(
            metrics.confusion_matrix(val.targets, val.preds, dataset.num_classes)
        )
        row = {
            "fold": fold,
            "epoch": epoch,
            "train_loss": round(stats.loss, 6),
            "val_loss": round(val.loss, 6),
            "val_accuracy": round(summary["accuracy"], 6),
            "val_balanced_accuracy": round(summary["balanced_accuracy"], 6),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(stats.seconds, 3),
            "images_per_second": round(stats.images / max(stats.seconds, 1e-9), 1),
        }
        history.append(row)
        log(
            f"fold {fold} epoch {epoch:>3}/{t.epochs}  train loss {stats.loss:.4f}  "
            f"val loss {val.loss:.4f}  val acc {summary['accuracy']:.3f}  "
            f"bal acc {summary['balanced_accuracy']:.3f}  {row['images_per_second']:.0f} img/s"
        )
        if val.loss < best_loss:
            best_loss, best_epoch = val.loss, epoch
            best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in module.state_dict().items()}
            )
    assert best_state is not None
    module.load_state_dict(best_state)
    val = evaluate(model, val_batches, mean, std, val_loss_fn, bool(t.flip_tta), runtime)
    # Keep a detached copy: with --compile the same module object is reused by the next fold.
    kept = copy.deepcopy(module) if t.compile else module
    return TrainedModel(kept, mean, std, history, best_epoch, val, counts)


class ModelSource:
    """Fresh, seeded models for each fold; with ``compile`` one compiled module is reused.

    Compiling costs tens of seconds, so under ``--compile`` the module is built and compiled
    once and every later fold loads freshly initialised weights into it (same parameters
    objects, so the compiled graph stays valid) instead of compiling again.
    """

    def __init__(self, config: RunConfig, num_classes: int, device: torch.device) -> None:
        self.config, self.num_classes, self.device = config, num_classes, device
        self._compiled: tuple[nn.Module, nn.Module] | None = None

    def _fresh(self, fold: int) -> nn.Module:
        t = self.config.train
        torch.manual_seed(t.seed + fold)
        # FaceNet loads --weights itself (and holds its folded batch norm); any other model
        # gets them through the generic strict loader (head excepted).
        own = {"weights": t.weights} if t.weights and t.model == "facenet" else {}
        model = create_model(
            t.model, num_classes=self.num_classes, image_size=self.config.data.image_size,
            pretrained=t.pretrained and not t.weights, **own,
        )  # fmt: skip
        if t.weights and not own:
            load_backbone_weights(model, t.weights)
        model = model.to(self.device)
        if runtime_for(t, self.device).channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def get(self, fold: int) -> tuple[nn.Module, nn.Module]:
        """``(callable model, its nn.Module)``: the same object unless compiled."""
        fresh = self._fresh(fold)
        if not self.config.train.compile:
            return fresh, fresh
        if self._compiled is None:
            self._compiled = (torch.compile(fresh), fresh)
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


def _new_run_dir(config: RunConfig) -> Path:
    """``runs/<name>``, or ``runs/<name>-2``, ``-3``… when taken (never overwrite a run)."""
    base = Path(config.runs_dir) / config.name
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    candidate.mkdir(parents=True)
    return candidate


def environment() -> dict[str, Any]:
    """Versions and hardware recorded in every run."""
    import torchvision

    return {
        "facecls": facecls_version(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _data_report(dataset: FaceDataset, split: TestSplit) -> dict[str, Any]:
    counts = dataset.class_counts()
    return {
        **dataset.info,
        "split": split.how,
        "train_pool_images": int(len(split.pool)),
        "test_images": int(len(split.test)),
        "images_per_identity": {
            n: int(c) for n, c in zip(dataset.class_names, counts, strict=True)
        },
        "skipped_files": dataset.skipped,
    }


def _report_skipped(dataset: FaceDataset, log: Log) -> None:
    if not dataset.skipped:
        return
    log(f"Skipped {len(dataset.skipped)} file(s) that could not be used:")
    for item in dataset.skipped[:20]:
        log(f"  {item['path']}: {item['reason']}")
    if len(dataset.skipped) > 20:
        log(f"  … and {len(dataset.skipped) - 20} more (all listed in data_report.json)")


def _test_metrics(
    dataset: FaceDataset, trained: TrainedModel, images: torch.Tensor, targets: torch.Tensor,
    test_idx: np.ndarray, config: RunConfig, device: torch.device,
) -> tuple[dict[str, Any], EvalResult]:  # fmt: skip
    batches = IndexBatches(
        images, targets, torch.from_numpy(test_idx), config.train.eval_batch_size, device
    )
    result = evaluate(
        trained.model, batches, trained.mean, trained.std, nn.CrossEntropyLoss(),
        bool(config.train.flip_tta), runtime_for(config.train, device),
    )  # fmt: skip
    table = evaluation_metrics(result, dataset.class_names, config.train.seed, trained.train_counts)
    return table, result


def evaluation_metrics(
    result: EvalResult, class_names: list[str], seed: int = 0,
    train_counts: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``metrics.metrics_table`` of a result plus top-5, 95 % bootstrap intervals and, given the
    model's training images per class, the head / medium / few breakdown (``groups``)."""
    k = len(class_names)
    cm = metrics.confusion_matrix(result.targets, result.preds, k)
    table = metrics.metrics_table(cm, class_names)
    if train_counts is not None:
        table["groups"] = group_metrics(cm, train_counts)
    table["summary"]["top5_accuracy"] = metrics.top_k_accuracy(result.logits, result.targets, 5)
    table["summary"]["loss"] = result.loss
    table["summary"]["images"] = int(len(result.targets))
    table["intervals_95"] = {
        name: list(metrics.bootstrap_ci(result.targets, result.preds, k, name, seed=seed))
        for name in ("accuracy", "balanced_accuracy", "macro_f1")
    }
    return table


# Training images per identity: head >= 20, medium 8-19, few < 8 (metrics.head_medium_few).
GROUP_THRESHOLDS = (20, 8)


def group_metrics(cm: np.ndarray, train_counts: np.ndarray) -> dict[str, Any]:
    """Recall of head / medium / few identities, by training images per identity.

    Returns:
        ``{"thresholds": {...}, "recall": {group: mean recall}, "identities": {group: count},
        "test_images": {group: count}}``; a group with no tested identity has no recall.
    """
    groups = metrics.head_medium_few(np.asarray(train_counts), GROUP_THRESHOLDS)
    support = cm.sum(axis=1)
    names = [g for g in ("head", "medium", "few") if g in groups]
    head_min, medium_min = GROUP_THRESHOLDS
    return {
        "thresholds": {
            "head": f">= {head_min}", "medium": f"{medium_min}-{head_min - 1}",
            "few": f"< {medium_min}", "counted": "training images per identity",
        },
        "recall": metrics.group_recall(cm, groups),
        "identities": {g: int((groups == g).sum()) for g in names},
        "test_images": {g: int(support[groups == g].sum()) for g in names},
    }  # fmt: skip


def groups_text(table: dict[str, Any]) -> str:
    """``head 0.95 (40 ids) · medium 0.90 (80) · few 0.81 (97)`` or ``""`` without groups."""
    groups = table.get("groups")
    if not groups:
        return ""
    parts = [f"{g} {r:.3f} ({groups['identities'][g]} ids)" for g, r in groups["recall"].items()]
    return "recall by training images: " + " · ".join(parts)


def _start(config: RunConfig, log: Log, show_progress: bool) -> tuple:
    device = resolve_device(config.train.device)
    info = model_info(config.train.model)
    if info is not None and info.min_size and config.data.image_size < info.min_size:
        # Say so before decoding the data, not after.
        raise ValueError(
            f"model {info.name!r} needs --image-size of at least {info.min_size} px "
            f"(it was designed for {info.default_size}), got {config.data.image_size}"
        )
    dataset = load_dataset(config.data, log, show_progress)
    _report_skipped(dataset, log)
    split = split_test(dataset, config.data, config.train.seed)
    if len(split.test) == 0:
        raise ValueError("the test part is empty: check the split file or the test/ folder")
    images = resident(dataset.images, device)
    targets = dataset.targets.to(images.device)
    run_dir = _new_run_dir(config)
    save_yaml(config, run_dir / "config.yaml")
    log(
        f"Data: {len(dataset)} images of {dataset.num_classes} identities "
        f"({dataset.info['kind']}: {dataset.info['location']}); test part {len(split.test)} "
        f"images ({split.how}); device {device}; run folder {run_dir}"
    )
    return device, dataset, split, images, targets, run_dir


def _finish(
    run_dir: Path, config: RunConfig, dataset: FaceDataset, split: TestSplit, folds: list,
    final: TrainedModel, test: EvalResult, result_metrics: dict[str, Any], started: float,
    log: Log,
) -> RunResult:  # fmt: skip
    result_metrics["environment"] = environment()
    result_metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
    result_metrics["config"] = to_dict(config)
    save_bundle(
        Bundle(final.model, config.train.model, dataset.class_names, config.data.image_size,
               final.mean, final.std, bool(config.train.flip_tta),
               extra={"config": to_dict(config), "crop": config.data.crop,
                      "train_counts": [int(c) for c in final.train_counts]}),
        run_dir / "model",
    )  # fmt: skip
    history = [row for trained in folds for row in trained.history]
    write_run_files(run_dir, dataset, split, history, result_metrics, test, final.model)
    write_json(run_dir / "data_report.json", _data_report(dataset, split))
    s = result_metrics["test"]["summary"]
    log(
        f"Test: accuracy {s['accuracy']:.3f}  balanced accuracy {s['balanced_accuracy']:.3f}  "
        f"macro-F1 {s['macro_f1']:.3f}  top-5 {s['top5_accuracy']:.3f}  ({len(split.test)} images)"
    )
    if groups_text(result_metrics["test"]):
        log(f"Test {groups_text(result_metrics['test'])}")
    log(f"Run folder: {run_dir}")
    return RunResult(run_dir, result_metrics, folds)


def fit(config: RunConfig, log: Log = print, show_progress: bool = False) -> RunResult:
    """Train one model: split off the test part, hold out validation, train, evaluate on test.

    Returns:
        The run folder and its metrics (also written to ``metrics.json``).
    """
    started = time.perf_counter()
    config = resolve(config)
    device, dataset, split, images, targets, run_dir = _start(config, log, show_progress)
    targets_np = dataset.targets.numpy()
    val = split.val if split.val is not None else holdout(
        targets_np, split.pool, config.data.val_fraction, config.train.seed
    )  # fmt: skip
    train_idx = np.setdiff1d(split.pool, val)
    write_json(run_dir / "folds.json", folds_document(dataset, split, [val]))
    models = ModelSource(config, dataset.num_classes, device)
    trained = train_model(
        dataset, images, targets, train_idx, val, config, device, models, 0, log, show_progress
    )
    test_metrics, test = _test_metrics(
        dataset, trained, images, targets, split.test, config, device
    )  # fmt: skip
    result_metrics = {
        "command": "train",
        "test": test_metrics,
        "validation": evaluation_metrics(
            trained.val, dataset.class_names, config.train.seed, trained.train_counts
        ),
        "final_model": {"fold": 0, "epoch": trained.best_epoch},
    }
    return _finish(run_dir, config, dataset, split, [trained], trained, test, result_metrics,
                   started, log)  # fmt: skip


def cross_validate(config: RunConfig, log: Log = print, show_progress: bool = False) -> RunResult:
    """Stratified k-fold over the train part; the best fold's model is evaluated on the test part.

    The fold assignment is written to ``folds.json``. The summary holds each fold's validation
    metrics, their mean ± std, and metrics of the pooled out-of-fold predictions.
    """
    started = time.perf_counter()
    config = resolve(config)
    device, dataset, split, images, targets, run_dir = _start(config, log, show_progress)
    targets_np = dataset.targets.numpy()
    k = config.train.folds
    models = ModelSource(config, dataset.num_classes, device)
    folds = stratified_folds(targets_np, split.pool, k, config.train.seed, dataset.class_names)
    write_json(run_dir / "folds.json", folds_document(dataset, split, folds))
    trained_folds: list[TrainedModel] = []
    for fold, val_idx in enumerate(folds):
        log(f"Fold {fold + 1} of {k}: {len(split.pool) - len(val_idx)} train, {len(val_idx)} val")
        train_idx = np.setdiff1d(split.pool, val_idx)
        trained_folds.append(train_model(
            dataset, images, targets, train_idx, val_idx, config, device, models, fold, log,
            show_progress,
        ))  # fmt: skip
    fold_metrics = [
        evaluation_metrics(t.val, dataset.class_names, config.train.seed)["summary"]
        for t in trained_folds
    ]
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "loss")
    mean_std = {key: list(metrics.mean_std([m[key] for m in fold_metrics])) for key in keys}
    pooled = EvalResult(
        np.concatenate([t.val.logits for t in trained_folds]),
        np.concatenate([t.val.targets for t in trained_folds]),
        float(np.mean([t.val.loss for t in trained_folds])),
    )
    # Groups of pooled predictions: each identity's mean training count over the folds.
    mean_counts = np.mean([t.train_counts for t in trained_folds], axis=0)
    pooled_table = evaluation_metrics(pooled, dataset.class_names, train_counts=mean_counts)
    # The report's choice: the best of the k models (lowest validation loss) goes to the test.
    best = int(np.argmin([t.val.loss for t in trained_folds]))
    final = trained_folds[best]
    test_metrics, test = _test_metrics(dataset, final, images, targets, split.test, config, device)
    result_metrics = {
        "command": "cv",
        "test": test_metrics,
        "cv": {
            "folds": fold_metrics,
            "best_epochs": [t.best_epoch for t in trained_folds],
            "mean_std": mean_std,
            "pooled_out_of_fold": pooled_table["summary"],
            "pooled_out_of_fold_groups": pooled_table["groups"],
        },
        "final_model": {"fold": best, "epoch": final.best_epoch, "rule": "lowest validation loss"},
    }
    log("CV: " + "  ".join(f"{k} {m:.3f}±{s:.3f}" for k, (m, s) in mean_std.items() if k != "loss"))
    return _finish(run_dir, config, dataset, split, trained_folds, final, test, result_metrics,
                   started, log)  # fmt: skip


def evaluate_run(
    run_dir: Path, data: str | None = None, log: Log = print, show_progress: bool = False,
    logit_adjust: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Re-evaluate a run's saved model on its test part (or on another source's test split).

    Reads ``config.yaml``, ``folds.json`` and the model bundle; writes nothing into the run.

    Args:
        logit_adjust: τ of post-hoc logit adjustment (Menon et al. 2021): the logits become
            ``logits − τ·log π`` with π the model's training prior (``train_counts`` in the
            bundle). τ = 0 (or ``None``) evaluates the logits as they are. The reported loss
            stays that of the unadjusted logits.
    """
    from facecls.bundle import load_bundle
    from facecls.config import load_yaml, replace

    run_dir = Path(run_dir)
    config = load_yaml(run_dir / "config.yaml")
    if data is not None:
        config = replace(config, data={"source": data})
    device = resolve_device(config.train.device)
    bundle = load_bundle(run_dir, device)
    dataset = load_dataset(config.data, log, show_progress)
    document = json.loads((run_dir / "folds.json").read_text())
    split, _ = folds_from_document(dataset, document)
    images = resident(dataset.images, device)
    targets = dataset.targets.to(images.device)
    batches = IndexBatches(
        images, targets, torch.from_numpy(split.test), config.train.eval_batch_size, device
    )
    if dataset.class_names != bundle.class_names:
        raise ValueError(
            f"{run_dir}: the data's identities differ from the model's "
            f"({dataset.num_classes} vs {len(bundle.class_names)}); evaluate on the same identities"
        )
    train_counts = bundle.extra.get("train_counts")
    if logit_adjust and train_counts is None:
        raise ValueError(
            f"{run_dir}: the model bundle has no train_counts (saved by an older facecls), "
            "which post-hoc logit adjustment needs; retrain to use --logit-adjust"
        )
    result = evaluate(
        bundle.model, batches, bundle.mean, bundle.std, nn.CrossEntropyLoss(), bundle.flip_tta,
        runtime_for(config.train, device),
    )  # fmt: skip
    if logit_adjust:
        logits = posthoc_adjust(result.logits, np.asarray(train_counts), logit_adjust)
        result = EvalResult(logits, result.targets, result.loss)
    counts = None if train_counts is None else np.asarray(train_counts)
    table = evaluation_metrics(result, bundle.class_names, config.train.seed, counts)
    table["logit_adjust_tau"] = float(logit_adjust or 0.0)
    return table
