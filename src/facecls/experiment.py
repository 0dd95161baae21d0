"""fit() and cross_validate(): run directories, the training of one model, folds and summaries.

Both commands share :func:`train_model` (one model on given train/validation indices), which
uses the engine's only loops. Run files are written atomically; metrics come from ``metrics.py``
and files other than checkpoints from ``report.py``.

Nothing is lost: every epoch ends with a checkpoint (``checkpoint.py``), SIGINT/SIGTERM stop
between steps (``interrupt.py``), and ``resume=`` continues a run folder where it stopped, with
the result an uninterrupted run would have given: each epoch depends only on the seed, the fold,
the epoch number and the state the checkpoint holds.

Under ``torchrun`` both run as one process per rank (``distributed.py``): one model trained with
DistributedDataParallel on sharded batches, or with ``parallel_folds`` one fold per rank. Only
rank 0 creates the run folder, writes files and logs.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from facecls import metrics
from facecls.atomic import write_json
from facecls.bundle import Bundle, save_bundle
from facecls.calibration import calibrate_trained
from facecls.checkpoint import (
    TrainingState,
    checkpoint_path,
    cpu_copy,
    load_checkpoint,
    save_checkpoint,
)
from facecls.config import RunConfig, load_yaml, resolve, save_yaml, to_dict
from facecls.config import replace as replace_config
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
from facecls.distributed import (
    DistContext,
    broadcast_array,
    broadcast_module,
    broadcast_object,
    broadcast_text,
)
from facecls.distributed import context as dist_context
from facecls.engine import EpochStats, EvalResult, evaluate, train_one_epoch
from facecls.environment import environment
from facecls.finetune import describe, frozen_at, load_backbone_weights, param_groups
from facecls.finetune import set_backbone_frozen as _set_frozen
from facecls.interrupt import Interrupted, StopRequest, signal_hook_for_tests, stop_signals
from facecls.losses import build_loss, posthoc_adjust
from facecls.models import create_model, model_info
from facecls.optimization import autocast_dtype, build_optimizer, build_scheduler, runtime_for
from facecls.report import write_report_safely, write_run_files
from facecls.resume import check_resume

Log = Callable[[str], None]


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


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
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None


@dataclass
class RunResult:
    """What ``fit``/``cross_validate`` return: the run folder and its ``metrics.json`` content."""

    run_dir: Path
    metrics: dict[str, Any]
    folds: list[TrainedModel] = field(default_factory=list, repr=False)


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite loss or weights; the message says where."""


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    """Batch order and augmentation of an epoch depend only on (seed, fold, epoch)."""
    return (seed * 1_000_003 + fold * 10_007 + epoch) % (2**63)


def _global_seed(seed: int, fold: int, epoch: int) -> int:
    """Seed of the global torch RNG for an epoch (dropout draws from it), distinct from the
    augmentation generator's stream."""
    return (epoch_seed(seed, fold, epoch) + 0x9E3779B97F4A7C15) % (2**63)


def _first_nonfinite(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the first floating-point tensor holding a NaN or infinity, else ``None``."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _check_epoch(stats: EpochStats, val_loss: float, model: nn.Module, fold: int, epoch: int):
    """Refuse to go on (or keep a model) after a non-finite loss or weight."""
    where = f"fold {fold}, epoch {epoch}"
    if stats.nonfinite_step is not None:
        raise NonFiniteError(
            f"the training loss became NaN or infinite in {where}, step "
            f"{stats.nonfinite_step}. Lower --lr, check the data, or pass --skip-nonfinite to "
            "skip such batches. Checkpoints of earlier epochs are kept."
        )
    bad = _first_nonfinite(model.state_dict())
    if bad is not None:
        raise NonFiniteError(f"{where}: weight {bad!r} holds NaN or infinite values")
    if not math.isfinite(val_loss):
        raise NonFiniteError(f"{where}: the validation loss is {val_loss}")


def _batch_callback(
    bar: tqdm, stop: StopRequest | None, fold: int, epoch: int
) -> Callable[[int], None]:
    """Called after each step: progress, the test hook, then a stop if a signal came."""
    hook = signal_hook_for_tests(fold, epoch)
    step = 0

    def on_batch(size: int) -> None:
        nonlocal step
        step += 1
        bar.update(size)
        if hook is not None:
            hook(step)
        if stop is not None:
            stop.check(fold, epoch, step)

    return on_batch


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
    checkpoint: Path | None = None,
    stop: StopRequest | None = None,
    dist: DistContext | None = None,
) -> TrainedModel:
    """Train one model on ``train_idx``, keep the epoch with the lowest validation loss.

    Args:
        images: the dataset's uint8 images, already resident (device or pinned host memory).
        targets: the dataset's targets on the same device as ``images``.
        checkpoint: saved at the end of every epoch; when it exists, training continues from
            it (a complete fold trains no further).
        stop: checked after every step and epoch; raises :class:`Interrupted` once set.
        dist: this rank; with several, every rank calls this and trains the same model
            (``models`` must wrap it in DistributedDataParallel), each on its rows of every
            batch, and rank 0 writes the checkpoint. ``None``: one process.

    Raises:
        NonFiniteError: a loss or weight became NaN or infinite (the checkpoint keeps the last
            good epoch).
    """
    t = config.train
    dist = dist or DistContext(device=device)
    shard = dist.shard()
    runtime = runtime_for(t, device)
    model, module = models.get(fold)  # module: the nn.Module (model may be its compiled form)
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
                       t.sampler, dataset.num_classes, drop_last, shard=shard)
        if t.sampler != "none"
        else IndexBatches(images, targets, torch.from_numpy(train_idx), t.batch_size, device,
                          shuffle=True, drop_last=drop_last, shard=shard)
    )  # fmt: skip
    scheduler = build_scheduler(optimizer, t, len(train_batches))
    if fold == 0 and (t.freeze != "none" or pretrained):
        log(f"Fine-tuning: {describe(t, pretrained)}")
    val_batches = IndexBatches(
        images, targets, torch.from_numpy(val_idx), t.eval_batch_size, device, shard=shard
    )
    facts = {"fold": fold, "class_names": dataset.class_names, "model": t.model}
    state = TrainingState()
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, module, optimizer, scheduler, expect=facts)
        log(
            f"fold {fold}: complete in {checkpoint.name}, not retrained" if state.complete
            else f"fold {fold}: resuming from {checkpoint.name} after epoch {state.epoch}"
        )  # fmt: skip
    for epoch in range(state.epoch + 1, t.epochs + 1):
        torch.manual_seed(_global_seed(t.seed, fold, epoch))
        loss_fn.set_epoch(epoch)
        if t.freeze != "none":
            _set_frozen(module, frozen_at(t, epoch))
        bar = tqdm(
            total=len(train_batches) * t.batch_size, unit="img", leave=False,
            desc=f"fold {fold} epoch {epoch}/{t.epochs}", disable=not show_progress,
        )  # fmt: skip
        try:
            stats = train_one_epoch(
                model, train_batches, optimizer, loss_fn, mean, std, config.augment,
                epoch_seed(t.seed, fold, epoch), runtime, scheduler,
                on_batch=_batch_callback(bar, stop, fold, epoch), skip_nonfinite=t.skip_nonfinite,
            )  # fmt: skip
        finally:
            bar.close()
        val = evaluate(model, val_batches, mean, std, val_loss_fn, bool(t.flip_tta), runtime)
        _check_epoch(stats, val.loss, module, fold, epoch)
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
        if t.skip_nonfinite:
            row["skipped_batches"] = stats.skipped
        state.history.append(row)
        log(
            f"fold {fold} epoch {epoch:>3}/{t.epochs}  train loss {stats.loss:.4f}  "
            f"val loss {val.loss:.4f}  val acc {summary['accuracy']:.3f}  "
            f"bal acc {summary['balanced_accuracy']:.3f}  {row['images_per_second']:.0f} img/s"
            + (f"  skipped {stats.skipped} non-finite batch(es)" if stats.skipped else "")
        )
        if val.loss < state.best_loss:
            state.best_loss, state.best_epoch = val.loss, epoch
            state.best_state = cpu_copy(module.state_dict())
        state.epoch, state.complete = epoch, epoch == t.epochs
        if checkpoint is not None:  # rank 0 writes, then every rank goes on
            dist.main_writes(
                lambda: save_checkpoint(checkpoint, module, optimizer, state, scheduler, info=facts)
            )
        if stop is not None:
            stop.check(fold, epoch, None)
    assert state.best_state is not None
    module.load_state_dict(state.best_state)
    val = evaluate(model, val_batches, mean, std, val_loss_fn, bool(t.flip_tta), runtime)
    # Keep a detached copy: with --compile the same module object is reused by the next fold.
    kept = copy.deepcopy(module) if t.compile else module
    return TrainedModel(
        kept, mean, std, state.history, state.best_epoch, val, counts, train_idx, val_idx
    )


class ModelSource:
    """Fresh, seeded models for each fold; with ``compile`` one compiled module is reused.

    Compiling costs tens of seconds, so under ``--compile`` the module is built and compiled
    once and every later fold loads freshly initialised weights into it (same parameters
    objects, so the compiled graph stays valid) instead of compiling again.

    With a ``dist`` of several ranks the callable model is a DistributedDataParallel replica
    (its BatchNorm synchronised when ``train.sync_bn``); the module is the bare model, whose
    ``state_dict`` is what gets saved.
    """

    def __init__(
        self,
        config: RunConfig,
        num_classes: int,
        device: torch.device,
        dist: DistContext | None = None,
    ) -> None:
        self.config, self.num_classes, self.device = config, num_classes, device
        self.dist = dist or DistContext(device=device)
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
        if self.dist.distributed and t.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _replica(self, module: nn.Module) -> nn.Module:
        """``module`` itself in one process; a DistributedDataParallel replica under several."""
        if not self.dist.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are synchronised at the start, not before every step: the engine averages
        # them once per epoch (older torch releases only know broadcast_buffers).
        new = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        buffers = {"forward_sync_buffers" if new else "broadcast_buffers": False}
        return DistributedDataParallel(module, device_ids=ids, **buffers)

    def get(self, fold: int) -> tuple[nn.Module, nn.Module]:
        """``(callable model, its nn.Module)``: the same object unless compiled or replicated."""
        fresh = self._fresh(fold)
        if not self.config.train.compile:
            return self._replica(fresh), fresh
        if self._compiled is None:
            self._compiled = (torch.compile(self._replica(fresh)), fresh)
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


def _data_report(dataset: FaceDataset, split: TestSplit) -> dict[str, Any]:
    counts = dataset.class_counts()
    report = {
        **dataset.info,
        "split": split.how,
        "train_pool_images": int(len(split.pool)),
        "test_images": int(len(split.test)),
        "images_per_identity": {
            n: int(c) for n, c in zip(dataset.class_names, counts, strict=True)
        },
        "skipped_files": dataset.skipped,
    }
    if dataset.duplicates is not None:
        report["duplicates"] = {
            **dataset.duplicates,
            "groups_across_test_split": _groups_across(dataset, split),
        }
    return report


def _groups_across(dataset: FaceDataset, split: TestSplit) -> int:
    """Duplicate groups with images on both sides of the test split (leaks; a split file or a
    pre-split folder can cause them, the stratified split never does)."""
    if dataset.groups is None:
        return 0
    in_test = np.zeros(len(dataset), dtype=bool)
    in_test[split.test] = True
    in_pool = np.zeros(len(dataset), dtype=bool)
    in_pool[split.pool] = True
    test_groups = set(dataset.groups[in_test].tolist())
    return len(test_groups & set(dataset.groups[in_pool].tolist()))


def _report_data_problems(dataset: FaceDataset, split: TestSplit, log: Log) -> None:
    if dataset.skipped:
        log(f"Skipped {len(dataset.skipped)} file(s) that could not be used:")
        for item in dataset.skipped[:20]:
            log(f"  {item['path']}: {item['reason']}")
        if len(dataset.skipped) > 20:
            log(f"  … and {len(dataset.skipped) - 20} more (all listed in data_report.json)")
    d = dataset.duplicates
    if d is not None:
        across = _groups_across(dataset, split)
        log(
            f"Duplicates: {d['exact_groups']} group(s) of identical images, {d['near_groups']} "
            f"of near duplicates, {d['label_conflicts']} filed under more than one identity"
            + (f"; {across} group(s) straddle the test split" if across else "")
            + (" (listed in data_report.json)" if d["exact_groups"] + d["near_groups"] else "")
        )
        for group in d["conflicts"][:5]:
            log("  label conflict: " + ", ".join(f"{m['path']}" for m in group))


def _test_metrics(
    dataset: FaceDataset, trained: TrainedModel, images: torch.Tensor, targets: torch.Tensor,
    test_idx: np.ndarray, config: RunConfig, device: torch.device, dist: DistContext | None = None,
) -> tuple[dict[str, Any], EvalResult]:  # fmt: skip
    batches = IndexBatches(
        images, targets, torch.from_numpy(test_idx), config.train.eval_batch_size, device,
        shard=(dist or DistContext(device=device)).shard(),
    )  # fmt: skip
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


@dataclass
class _Run:
    """A run folder being trained: the data, its split, the folds, where it all lives."""

    device: torch.device
    dataset: FaceDataset
    split: TestSplit
    images: torch.Tensor
    targets: torch.Tensor
    run_dir: Path
    dist: DistContext
    folds: list[np.ndarray] | None = None  # from folds.json when resuming


def _check_processes(config: RunConfig, dist: DistContext) -> None:
    """Refuse settings that cannot work with this many processes, before any collective."""
    t = config.train
    if not dist.distributed or t.parallel_folds:
        return
    if t.batch_size % dist.world_size:
        raise ValueError(
            f"--batch-size {t.batch_size} is the global batch and must be a multiple of the "
            f"{dist.world_size} processes (each takes an equal share of every batch)"
        )
    if t.sync_bn and dist.device.type != "cuda":
        raise ValueError(
            "--sync-bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on the CPU "
            "(gloo). Without it each process normalises with the statistics of its own rows."
        )
    if t.skip_nonfinite:
        raise ValueError(
            "--skip-nonfinite works with one process only: a rank that skips a batch alone "
            "would leave the others waiting for its gradients"
        )


def _start(
    config: RunConfig, dist: DistContext, log: Log, show_progress: bool, command: str,
    resume: Path | None,
) -> _Run:  # fmt: skip
    _check_processes(config, dist)
    info = model_info(config.train.model)
    if info is not None and info.min_size and config.data.image_size < info.min_size:
        # Say so before decoding the data, not after.
        raise ValueError(
            f"model {info.name!r} needs --image-size of at least {info.min_size} px "
            f"(it was designed for {info.default_size}), got {config.data.image_size}"
        )
    if resume is not None:
        check_resume(resume, config, command, log)
    device = dist.device
    # Rank 0 decodes (and extracts) into the cache first; the other ranks then read the cache.
    dataset = dist.main_writes(lambda: load_dataset(config.data, log, show_progress))
    if dataset is None:
        dataset = load_dataset(config.data, log, show_progress)
    folds = None
    if resume is None:
        split = split_test(dataset, config.data, config.train.seed)
    else:
        document = json.loads((resume / "folds.json").read_text())
        split, folds = folds_from_document(dataset, document)
    _report_data_problems(dataset, split, log)
    if len(split.test) == 0:
        raise ValueError("the test part is empty: check the split file or the test/ folder")
    images = resident(dataset.images, device)
    targets = dataset.targets.to(images.device)
    if resume is None:
        # Only rank 0 creates the folder (never a -2 twin); every rank learns its name.
        run_dir = Path(broadcast_text(str(_new_run_dir(config)) if dist.is_main else None, dist))
        if dist.is_main:
            save_yaml(config, run_dir / "config.yaml")
            write_json(run_dir / "environment.json", environment(config.train.seed))
    else:
        run_dir = resume
    processes = f"; {dist.world_size} processes" if dist.distributed else ""
    precision = "bf16" if runtime_for(config.train, device).dtype is not None else "fp32"
    log(
        f"Data: {len(dataset)} images of {dataset.num_classes} identities "
        f"({dataset.info['kind']}: {dataset.info['location']}); test part {len(split.test)} "
        f"images ({split.how}); device {device} ({precision}){processes}; run folder {run_dir}"
    )
    return _Run(device, dataset, split, images, targets, run_dir, dist, folds)


def _train_folds(
    run: _Run, config: RunConfig, command: str, parts: list[tuple[np.ndarray, np.ndarray]],
    log: Log, show_progress: bool,
) -> list[TrainedModel]:  # fmt: skip
    """Train one model per ``(train, val)`` part with checkpoints, stopping on SIGINT/SIGTERM.

    Under ``parallel_folds`` with several processes, rank r trains parts r, r + N, … by itself
    (and writes their checkpoints); then every rank receives every fold's result.
    """
    dist = run.dist
    parallel = config.train.parallel_folds and dist.distributed and len(parts) > 1
    if config.train.parallel_folds and not dist.distributed:
        log("--parallel-folds: one process, so the folds run one after another")
    trained: list[TrainedModel] = []
    fold_dist = dist.alone() if parallel else dist
    models = ModelSource(config, run.dataset.num_classes, run.device, fold_dist)
    with stop_signals() as stop:
        try:
            for fold, (train_idx, val_idx) in enumerate(parts):
                if parallel and fold % dist.world_size != dist.rank:
                    continue
                if len(parts) > 1:
                    where = f" on rank {dist.rank}" if parallel else ""
                    log(
                        f"Fold {fold + 1} of {len(parts)}{where}: {len(train_idx)} train, "
                        f"{len(val_idx)} val"
                    )
                trained.append(train_model(
                    run.dataset, run.images, run.targets, train_idx, val_idx, config,
                    run.device, models, fold, log, show_progress,
                    checkpoint=checkpoint_path(run.run_dir, fold), stop=stop, dist=fold_dist,
                ))  # fmt: skip
                stop.check(fold, config.train.epochs, None)
        except Interrupted as stopped:
            stopped.run_dir, stopped.command = run.run_dir, command
            if dist.is_main:
                write_json(run.run_dir / "checkpoints" / "interrupted.json", stopped.describe())
            raise
    if parallel:
        trained = _share_folds(trained, parts, run.dataset.num_classes, models, dist, log)
    return trained


def _finish(
    run: _Run, config: RunConfig, folds: list[TrainedModel], final: TrainedModel,
    test: EvalResult, result_metrics: dict[str, Any], started: float, log: Log,
) -> RunResult:  # fmt: skip
    run_dir, dataset, split, dist = run.run_dir, run.dataset, run.split, run.dist
    result_metrics["environment"] = environment(config.train.seed)
    result_metrics["environment"]["processes"] = dist.world_size
    result_metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
    result_metrics["config"] = to_dict(config)

    def write() -> None:
        save_bundle(
            Bundle(final.model, config.train.model, dataset.class_names, config.data.image_size,
                   final.mean, final.std, bool(config.train.flip_tta),
                   extra={"config": to_dict(config), "crop": config.data.crop,
                          "train_counts": [int(c) for c in final.train_counts]}),
            run_dir / "model",
        )  # fmt: skip
        # open set: centroids and thresholds, on the outputs predict computes (mirror averaging)
        calibrate_trained(
            run_dir / "model", final, dataset, log, bool(config.train.flip_tta), run.images
        )
        history = [row for trained in folds for row in trained.history]
        write_run_files(run_dir, dataset, split, history, result_metrics, test, final.model)
        write_json(run_dir / "data_report.json", _data_report(dataset, split))
        # metrics.json marks the run finished; the per-epoch checkpoints are no longer needed.
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)

    dist.main_writes(write)  # every rank returns once the files exist
    s = result_metrics["test"]["summary"]
    log(
        f"Test: accuracy {s['accuracy']:.3f}  balanced accuracy {s['balanced_accuracy']:.3f}  "
        f"macro-F1 {s['macro_f1']:.3f}  top-5 {s['top5_accuracy']:.3f}  ({len(split.test)} images)"
    )
    if groups_text(result_metrics["test"]):
        log(f"Test {groups_text(result_metrics['test'])}")
    if dist.is_main:
        write_report_safely(run_dir, log, dataset)  # a report failure is logged, never fatal
    log(f"Run folder: {run_dir}")
    return RunResult(run_dir, result_metrics, folds)


def _begin(
    config: RunConfig, log: Log, show_progress: bool, command: str, resume: Path | str | None
) -> tuple[RunConfig, _Run, Log, bool]:
    """Resolve the recipe, join the process group (under torchrun) and start the run; ranks
    other than 0 log nothing and show no progress."""
    config = resolve(config)
    dist = dist_context(config.train.device)
    if resume is None and config.train.precision == "auto":
        # Store what auto chose on this machine, so evaluate and resume elsewhere use the same.
        dtype = autocast_dtype("auto", dist.device)
        config = replace_config(config, train={"precision": "fp32" if dtype is None else "bf16"})
    if not dist.is_main:
        log, show_progress = _silent, False
    run = _start(
        config, dist, log, show_progress, command, None if resume is None else Path(resume)
    )
    return config, run, log, show_progress


def fit(
    config: RunConfig,
    log: Log = print,
    show_progress: bool = False,
    resume: Path | str | None = None,
) -> RunResult:
    """Train one model: split off the test part, hold out validation, train, evaluate on test.

    Args:
        resume: a run folder of an unfinished ``train`` run to continue; ``config`` must equal
            its ``config.yaml``. The result equals that of an uninterrupted run.

    Returns:
        The run folder and its metrics (also written to ``metrics.json``).

    Raises:
        Interrupted: on SIGINT/SIGTERM, after saving where the run stood.
    """
    started = time.perf_counter()
    config, run, log, show_progress = _begin(config, log, show_progress, "train", resume)
    dataset, split, dist = run.dataset, run.split, run.dist
    if run.folds is not None:
        val = run.folds[0]
    else:
        val = split.val if split.val is not None else holdout(
            dataset.targets.numpy(), split.pool, config.data.val_fraction, config.train.seed,
            dataset.groups,
        )  # fmt: skip
        if dist.is_main:
            write_json(run.run_dir / "folds.json", folds_document(dataset, split, [val]))
    train_idx = np.setdiff1d(split.pool, val)
    (trained,) = _train_folds(run, config, "train", [(train_idx, val)], log, show_progress)
    test_metrics, test = _test_metrics(
        dataset, trained, run.images, run.targets, split.test, config, run.device, dist
    )
    result_metrics = {
        "command": "train",
        "test": test_metrics,
        "validation": evaluation_metrics(
            trained.val, dataset.class_names, config.train.seed, trained.train_counts
        ),
        "final_model": {"fold": 0, "epoch": trained.best_epoch},
    }
    return _finish(run, config, [trained], trained, test, result_metrics, started, log)


def cross_validate(
    config: RunConfig,
    log: Log = print,
    show_progress: bool = False,
    resume: Path | str | None = None,
) -> RunResult:
    """Stratified k-fold over the train part; the best fold's model is evaluated on the test part.

    The fold assignment is written to ``folds.json``. The summary holds each fold's validation
    metrics, their mean ± std, and metrics of the pooled out-of-fold predictions.

    Args:
        resume: a run folder of an unfinished ``cv`` run; finished folds are not retrained.

    Raises:
        Interrupted: on SIGINT/SIGTERM, after saving where the run stood.
    """
    started = time.perf_counter()
    config, run, log, show_progress = _begin(config, log, show_progress, "cv", resume)
    dataset, split, dist = run.dataset, run.split, run.dist
    k = config.train.folds
    folds = run.folds
    if folds is None:
        folds = stratified_folds(
            dataset.targets.numpy(), split.pool, k, config.train.seed, dataset.class_names,
            dataset.groups,
        )  # fmt: skip
        if dist.is_main:
            write_json(run.run_dir / "folds.json", folds_document(dataset, split, folds))
    parts = [(np.setdiff1d(split.pool, val_idx), val_idx) for val_idx in folds]
    trained_folds = _train_folds(run, config, "cv", parts, log, show_progress)
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
    test_metrics, test = _test_metrics(
        dataset, final, run.images, run.targets, split.test, config, run.device, dist
    )
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
    return _finish(run, config, trained_folds, final, test, result_metrics, started, log)


def _share_folds(
    mine: list[TrainedModel], parts: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
    models: ModelSource,
    dist: DistContext, log: Log,
) -> list[TrainedModel]:  # fmt: skip
    """Every fold's result on every rank, after rank ``f % world_size`` trained fold ``f``.

    The owner sends its history and numbers (a small JSON-like object), validation logits and
    targets, and the weights tensor by tensor into a fresh model of the same architecture.
    """
    owned = iter(mine)
    shared: list[TrainedModel] = []
    for fold, (train_idx, val_idx) in enumerate(parts):
        owner = fold % dist.world_size
        trained = next(owned) if owner == dist.rank else None
        facts = None if trained is None else {
            "mean": trained.mean, "std": trained.std, "history": trained.history,
            "best_epoch": trained.best_epoch, "loss": trained.val.loss,
            "train_counts": trained.train_counts.tolist(),
        }  # fmt: skip
        facts = broadcast_object(facts, dist, owner)
        logits = broadcast_array(
            None if trained is None else trained.val.logits, (len(val_idx), num_classes),
            np.dtype(np.float32), dist, owner,
        )  # fmt: skip
        val_targets = broadcast_array(
            None if trained is None else trained.val.targets, (len(val_idx),),
            np.dtype(np.int64), dist, owner,
        )  # fmt: skip
        model = models._fresh(fold) if trained is None else trained.model
        broadcast_module(model, dist, owner)
        if trained is None:
            trained = TrainedModel(
                model, facts["mean"], facts["std"], facts["history"], facts["best_epoch"],
                EvalResult(logits, val_targets, facts["loss"]), np.array(facts["train_counts"]),
                train_idx, val_idx,
            )  # fmt: skip
            log(
                f"fold {fold} trained on rank {owner}: best epoch {trained.best_epoch}, "
                f"val loss {trained.val.loss:.4f}"
            )
        shared.append(trained)
    return shared


def _run_dir_of(path: Path) -> Path:
    """The run folder of a run folder, a bundle folder or a weights file inside one."""
    candidates = ([path] if path.is_dir() else []) + [path.parent, path.parent.parent]
    for folder in candidates:
        if (folder / "config.yaml").is_file() and (folder / "folds.json").is_file():
            return folder
    raise ValueError(
        f"{path}: no run folder (config.yaml and folds.json) here or above; evaluate needs the "
        "run folder the model was trained in"
    )


def evaluate_run(
    run_dir: Path,
    data: str | None = None,
    log: Log = print,
    show_progress: bool = False,
    trust_pickle: bool = False,
    logit_adjust: float | None = None,
    strangers: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """Re-evaluate a run's saved model on its test part (or on another source's test split).

    Args:
        run_dir: the run folder, its ``model/`` folder, or a weights file in either.
        trust_pickle: allow a ``.pt``/``.pth`` weights file (read with
            ``torch.load(weights_only=True)``); refused otherwise.
        logit_adjust: τ of post-hoc logit adjustment (Menon et al. 2021): the logits become
            ``logits − τ·log π`` with π the model's training prior (``train_counts`` in the
            bundle). τ = 0 (or ``None``) evaluates the logits as they are. The reported loss
            stays that of the unadjusted logits.
        strangers: photos (files, folders) of people the model was not trained on: the
            open-set decision is measured against them with the test part as the known faces
            (:mod:`facecls.strangers`); the figures go to ``openset.json`` in the run folder
            and into its report, which is rewritten.

    Reads ``config.yaml``, ``folds.json`` and the model bundle; writes nothing into the run
    unless ``strangers`` are given.
    """
    from facecls.bundle import load_bundle
    from facecls.config import replace

    path = Path(run_dir)
    if strangers and (data is not None or logit_adjust):
        raise ValueError(
            "--strangers measures the run's own model on its own test part: leave out "
            + ("--data" if data is not None else "--logit-adjust")
        )
    bundle = load_bundle(path, "cpu", trust_pickle=trust_pickle)  # refuses pickles first
    run_dir = _run_dir_of(path)
    config = load_yaml(run_dir / "config.yaml")
    if data is not None:
        config = replace(config, data={"source": data})
    device = resolve_device(config.train.device)
    model = bundle.model.to(device)
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
        model, batches, bundle.mean, bundle.std, nn.CrossEntropyLoss(), bundle.flip_tta,
        runtime_for(config.train, device),
    )  # fmt: skip
    if logit_adjust:
        logits = posthoc_adjust(result.logits, np.asarray(train_counts), logit_adjust)
        result = EvalResult(logits, result.targets, result.loss)
    counts = None if train_counts is None else np.asarray(train_counts)
    table = evaluation_metrics(result, bundle.class_names, config.train.seed, counts)
    table["logit_adjust_tau"] = float(logit_adjust or 0.0)
    if strangers:
        from facecls.strangers import OPENSET_FILE, evaluate_strangers, summary_lines

        test = torch.from_numpy(split.test)
        table["openset"] = evaluate_strangers(
            path, strangers, dataset.images[test].numpy(), dataset.targets[test].numpy(),
            log, device=str(device), out=run_dir / OPENSET_FILE, trust_pickle=trust_pickle,
        )  # fmt: skip
        for line in summary_lines(table["openset"]):
            log(line)
        write_report_safely(run_dir, log, dataset)  # now with the open-set curve
    return table
