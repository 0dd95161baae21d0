"""Whole runs: ``fit`` (``facecls train``) and ``cross_validate`` (``facecls cv``).

A run resolves its recipe, joins the process group under torchrun, loads and splits the data,
trains its folds (:mod:`facecls.training.fold`), evaluates the chosen model on the test part,
saves the bundle and calibrates it, then writes the run folder and its report.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecls import metrics
from facecls.atomic import write_json
from facecls.bundle import Bundle, save_bundle
from facecls.config import RunConfig, resolve, save_yaml, to_dict
from facecls.config import replace as replace_config
from facecls.data.batches import resident
from facecls.data.checks import data_report, report_data_problems
from facecls.data.dataset import FaceDataset, load_dataset
from facecls.data.splits import (
    TestSplit,
    folds_document,
    folds_from_document,
    holdout,
    split_test,
    stratified_folds,
)
from facecls.environment import environment
from facecls.inference.calibration import calibrate_trained
from facecls.logs import RunLog, debug
from facecls.models import model_info
from facecls.models.facenet import default_weights_path, missing_weights_message
from facecls.progress import bar
from facecls.report.write import (
    architecture,
    write_model_card,
    write_report_safely,
    write_run_files,
)
from facecls.runtime import Runtime, autocast_dtype, runtime_for
from facecls.training.checkpoint import (
    checkpoint_path,
)
from facecls.training.distributed import (
    DistContext,
    broadcast_text,
)
from facecls.training.distributed import context as dist_context
from facecls.training.engine import EvalResult
from facecls.training.evaluate import evaluate_on_test, evaluation_metrics, groups_text
from facecls.training.fold import (
    EpochHook,
    Log,
    ModelSource,
    TrainedModel,
    share_folds,
    train_model,
)
from facecls.training.interrupt import Interrupted, stop_signals
from facecls.training.live import epoch_hooks
from facecls.training.resume import (
    DATA_FILES_NAME,
    check_resume,
    check_same_data,
    data_fingerprint,
)


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


@dataclass
class RunResult:
    """What ``fit``/``cross_validate`` return: the run folder and its ``metrics.json`` content."""

    run_dir: Path
    metrics: dict[str, Any]
    folds: list[TrainedModel] = field(default_factory=list, repr=False)


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


def check_prerequisites(config: RunConfig) -> None:
    """Refuse a run whose weights file is missing, before data is loaded or a folder is made.

    Raises:
        FileNotFoundError: ``--weights`` (or FaceNet's default weights) is not a file.
    """
    t = config.train
    if t.weights and not Path(t.weights).expanduser().is_file():
        raise FileNotFoundError(
            f"{Path(t.weights).expanduser()}: weights file not found (--weights); nothing was "
            "loaded and no run folder was made"
        )
    facenet_default = not t.weights and t.model == "facenet" and t.pretrained
    if facenet_default and not default_weights_path().is_file():
        raise FileNotFoundError(f"{missing_weights_message()}; no run folder was made")


def _start(
    config: RunConfig, dist: DistContext, log: Log, show_progress: bool, command: str,
    resume: Path | None,
) -> _Run:  # fmt: skip
    _check_processes(config, dist)
    check_prerequisites(config)
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
    dataset = dist.main_writes(lambda: load_dataset(config.data, log, show_progress, str(device)))
    if dataset is None:
        dataset = load_dataset(config.data, log, show_progress, str(device))
    folds = None
    if resume is None:
        split = split_test(dataset, config.data, config.train.seed)
    else:
        check_same_data(resume, dataset.paths)
        document = json.loads((resume / "folds.json").read_text())
        split, folds = folds_from_document(dataset, document)
    report_data_problems(dataset, split, log)
    if len(split.test) == 0:
        raise ValueError("the test part is empty: check the split file or the test/ folder")
    images = resident(dataset.images, device)
    targets = dataset.targets.to(images.device)
    if resume is None:
        # Only rank 0 creates the folder (never a -2 twin); every rank learns its name.
        run_dir = Path(broadcast_text(str(new_run_dir(config)) if dist.is_main else None, dist))
        if dist.is_main:
            save_yaml(config, run_dir / "config.yaml")
            write_json(run_dir / "environment.json", environment(config.train.seed))
            write_json(run_dir / DATA_FILES_NAME, data_fingerprint(dataset.paths))
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
    log: Log, show_progress: bool, on_epoch: EpochHook | None = None,
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
    mine = len(parts) if not parallel else len(range(dist.rank, len(parts), dist.world_size))
    whole = bar(mine * config.train.epochs, command, show_progress, unit="epoch", leave=True)

    def epoch_done(row: dict[str, Any], cm: np.ndarray, counts: np.ndarray) -> None:
        whole.update(1)
        if on_epoch is not None:
            on_epoch(row, cm, counts)

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
                    on_epoch=epoch_done,
                ))  # fmt: skip
                stop.check(fold, config.train.epochs, None)
        except Interrupted as stopped:
            stopped.run_dir, stopped.command = run.run_dir, command
            if dist.is_main:
                write_json(run.run_dir / "checkpoints" / "interrupted.json", stopped.describe())
            raise
        except Exception:
            # A failed start (no epoch saved yet) leaves no half-made run folder behind.
            saved = (run.run_dir / "checkpoints").is_dir()
            if run.folds is None and dist.is_main and not saved:
                shutil.rmtree(run.run_dir, ignore_errors=True)
            raise
        finally:
            whole.close()
    if parallel:
        trained = share_folds(trained, parts, run.dataset.num_classes, models, dist, log)
    return trained


def probe_train_part(
    final: TrainedModel, dataset: FaceDataset
) -> tuple[np.ndarray, np.ndarray] | None:
    """A linear probe's training-part embeddings (from its cache, mirror-averaged as ``predict``
    computes them) and targets, for a complete calibration at no extra pass; else ``None``."""
    probe, rows = final.head_only, final.train_idx
    if probe is None or rows is None or len(rows) == 0:
        return None
    _, features = probe.outputs(rows, Runtime(probe.features.device))
    return features, dataset.targets.numpy()[rows]


def _finish(
    run: _Run, config: RunConfig, folds: list[TrainedModel], final: TrainedModel,
    test: EvalResult, result_metrics: dict[str, Any], started: float, log: Log,
    show_progress: bool = False,
) -> RunResult:  # fmt: skip
    run_dir, dataset, split, dist = run.run_dir, run.dataset, run.split, run.dist
    result_metrics["environment"] = environment(config.train.seed)
    result_metrics["environment"]["processes"] = dist.world_size
    result_metrics["config"] = to_dict(config)
    # The one count of training images per identity (the kept model's training part) that
    # metrics.json's groups, the terminal and the report all use.
    result_metrics["final_model"]["train_counts"] = [int(c) for c in final.train_counts]
    result_metrics["final_model"]["architecture"] = architecture(final.model)
    result_metrics["wall_seconds"] = round(time.perf_counter() - started, 2)  # updated below

    def write() -> None:
        save_bundle(
            Bundle(final.model, config.train.model, dataset.class_names, config.data.image_size,
                   final.mean, final.std, bool(config.train.flip_tta),
                   extra={"config": to_dict(config), "crop": config.data.crop,
                          "faces": config.data.faces,
                          "train_counts": [int(c) for c in final.train_counts]}),
            run_dir / "model",
        )  # fmt: skip
        # open set: msp/energy thresholds from the validation logits already computed; every
        # score and the centroids when a linear probe holds the training part's embeddings
        calibrate_trained(run_dir / "model", final, log, probe_train_part(final, dataset))
        # Up to here; the report adds its own time below (report_seconds).
        result_metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
        history = [row for trained in folds for row in trained.history]
        write_run_files(run_dir, dataset, split, history, result_metrics, test, final.model)
        write_json(run_dir / "data_report.json", data_report(dataset, split))
        write_model_card(run_dir)
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
        before = time.perf_counter()
        # a report failure is logged, never fatal
        write_report_safely(run_dir, log, dataset, show_progress)
        # The command's whole wall time, report included, for metrics.json and later pages.
        result_metrics["report_seconds"] = round(time.perf_counter() - before, 2)
        result_metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
        write_json(run_dir / "metrics.json", result_metrics)
    log(f"Run folder: {run_dir} (wall time {time.perf_counter() - started:.1f} s)")
    return RunResult(run_dir, result_metrics, folds)


def begin_run(
    config: RunConfig, record: RunLog, show_progress: bool, command: str,
    resume: Path | str | None,
) -> tuple[RunConfig, _Run, Log, bool]:  # fmt: skip
    """Resolve the recipe, join the process group (under torchrun) and start the run; ranks
    other than 0 log nothing, show no progress and keep no run.log."""
    log: Log = record.log
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
    if dist.is_main:
        record.open(run.run_dir)
        debug(f"facecls {command}{' (resumed)' if resume else ''}; resolved config:\n"
              + json.dumps(to_dict(config), indent=2))  # fmt: skip
        debug("environment:\n" + json.dumps(environment(config.train.seed), indent=2))
    else:
        record.discard()
    return config, run, log, show_progress


def _command(
    command: str, body: Callable[..., RunResult], config: RunConfig, log: Log,
    show_progress: bool, resume: Path | str | None, tensorboard: bool,
    on_epoch: EpochHook | None,
) -> RunResult:  # fmt: skip
    """What ``fit`` and ``cross_validate`` share around their ``body``: the wall clock,
    ``run.log``, the start of the run and the per-epoch hooks (TensorBoard, tuning)."""
    started = time.perf_counter()
    with RunLog(log) as record:
        config, run, log, show_progress = begin_run(config, record, show_progress, command, resume)
        with epoch_hooks(run.run_dir, tensorboard and run.dist.is_main, on_epoch) as hook:
            return body(config, run, log, show_progress, hook, started)


def fit(
    config: RunConfig,
    log: Log = print,
    show_progress: bool = False,
    resume: Path | str | None = None,
    tensorboard: bool = False,
    on_epoch: EpochHook | None = None,
) -> RunResult:
    """Train one model: split off the test part, hold out validation, train, evaluate on test.

    Args:
        resume: a run folder of an unfinished ``train`` run to continue; ``config`` must equal
            its ``config.yaml``. The result equals that of an uninterrupted run.

    Returns:
        The run folder and its metrics (also written to ``metrics.json``).

    ``tensorboard`` writes live curves to ``run_dir/tensorboard`` (``facecls[tensorboard]``);
    ``on_epoch`` is called with each epoch's history row, validation confusion matrix and
    training images per identity (tuning prunes with it). The run folder gains ``run.log``
    (every message, timestamps, the resolved config) and ``model/MODEL_CARD.md``.

    Raises:
        Interrupted: on SIGINT/SIGTERM, after saving where the run stood.
    """
    return _command("train", _fit, config, log, show_progress, resume, tensorboard, on_epoch)


def _fit(
    config: RunConfig, run: _Run, log: Log, show_progress: bool, hook: EpochHook, started: float
) -> RunResult:
    dataset, split, dist = run.dataset, run.split, run.dist
    if run.folds is not None:
        val = run.folds[0]
    else:
        val = validation_part(dataset, split, config)
        if dist.is_main:
            write_json(run.run_dir / "folds.json", folds_document(dataset, split, [val]))
    train_idx = np.setdiff1d(split.pool, val)
    (trained,) = _train_folds(run, config, "train", [(train_idx, val)], log, show_progress, hook)
    test_metrics, test = evaluate_on_test(
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
    return _finish(
        run, config, [trained], trained, test, result_metrics, started, log, show_progress
    )


def validation_part(dataset: FaceDataset, split: TestSplit, config: RunConfig) -> np.ndarray:
    """``train``'s validation images: the split's own, else a stratified share of the pool."""
    if split.val is not None:
        return split.val
    return holdout(
        dataset.targets.numpy(), split.pool, config.data.val_fraction, config.train.seed,
        dataset.groups,
    )  # fmt: skip


def cross_validate(
    config: RunConfig,
    log: Log = print,
    show_progress: bool = False,
    resume: Path | str | None = None,
    tensorboard: bool = False,
    on_epoch: EpochHook | None = None,
) -> RunResult:
    """Stratified k-fold over the train part; the best fold's model is evaluated on the test part.

    The fold assignment is written to ``folds.json``. The summary holds each fold's validation
    metrics, their mean ± std, and metrics of the pooled out-of-fold predictions.

    Args:
        resume: a run folder of an unfinished ``cv`` run; finished folds are not retrained.

    ``tensorboard`` writes live curves to ``run_dir/tensorboard`` (``facecls[tensorboard]``);
    ``on_epoch`` is called with each epoch's history row, validation confusion matrix and
    training images per identity (tuning prunes with it). The run folder gains ``run.log``
    (every message, timestamps, the resolved config) and ``model/MODEL_CARD.md``.

    Raises:
        Interrupted: on SIGINT/SIGTERM, after saving where the run stood.
    """
    return _command(
        "cv", _cross_validate, config, log, show_progress, resume, tensorboard, on_epoch
    )


def _cross_validate(
    config: RunConfig, run: _Run, log: Log, show_progress: bool, hook: EpochHook, started: float
) -> RunResult:
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
    trained_folds = _train_folds(run, config, "cv", parts, log, show_progress, hook)
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
    test_metrics, test = evaluate_on_test(
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
    return _finish(
        run, config, trained_folds, final, test, result_metrics, started, log, show_progress
    )


def new_run_dir(config: RunConfig) -> Path:
    """``runs/<name>``, or ``runs/<name>-2``, ``-3``… when taken (never overwrite a run)."""
    base = Path(config.runs_dir) / config.name
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    candidate.mkdir(parents=True)
    return candidate
