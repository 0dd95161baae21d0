"""Whole runs: ``fit`` (``facecls train``) and ``cross_validate`` (``facecls cv``).

A run resolves its recipe, joins the process group under torchrun, loads and splits the data
(:mod:`facecls.training.start`), trains its folds (:mod:`facecls.training.fold`), evaluates the
chosen model on the test part, saves the bundle and calibrates it, then writes the run folder
and its report (:mod:`facecls.training.finish`).
"""

from __future__ import annotations

import errno
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facecls import metrics_intervals
from facecls.atomic import WriteError, write_json
from facecls.config import RunConfig
from facecls.data.dataset import FaceDataset
from facecls.data.splits import (
    TestSplit,
    folds_document,
    holdout,
    stratified_folds,
)
from facecls.logs import RunLog
from facecls.progress import bar
from facecls.training.checkpoint import (
    checkpoint_path,
)
from facecls.training.engine import EvalResult
from facecls.training.evaluate import evaluate_on_test, evaluation_metrics
from facecls.training.finish import RunResult, finish_run
from facecls.training.fold import EpochHook, Log, TrainedModel, share_folds, train_model
from facecls.training.fold_setup import ModelSource
from facecls.training.interrupt import Interrupted, stop_signals
from facecls.training.live import epoch_hooks, summary_writer
from facecls.training.start import StartedRun, begin_run


def _train_folds(
    run: StartedRun, config: RunConfig, command: str, parts: list[tuple[np.ndarray, np.ndarray]],
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
        except Exception as error:
            # A failed start (no epoch saved yet) leaves no half-made run folder behind.
            saved = (run.run_dir / "checkpoints").is_dir()
            if run.folds is None and dist.is_main and not saved:
                shutil.rmtree(run.run_dir, ignore_errors=True)
            elif isinstance(error, WriteError) and error.errno == errno.ENOSPC:
                raise WriteError(
                    errno.ENOSPC,
                    f"{error}. Free some space, then resume with: facecls {command} --resume "
                    f"{run.run_dir}",
                ) from error
            raise
        finally:
            whole.close()
    if parallel:
        trained = share_folds(trained, parts, run.dataset.num_classes, models, dist, log)
    return trained


def _command(
    command: str, body: Callable[..., RunResult], config: RunConfig, log: Log,
    show_progress: bool, resume: Path | str | None, tensorboard: bool,
    on_epoch: EpochHook | None,
) -> RunResult:  # fmt: skip
    """What ``fit`` and ``cross_validate`` share around their ``body``: the wall clock,
    ``run.log``, the start of the run and the per-epoch hooks (TensorBoard, tuning)."""
    started = time.perf_counter()
    if tensorboard:
        summary_writer()  # a missing extra is said before the data is decoded
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
    config: RunConfig,
    run: StartedRun,
    log: Log,
    show_progress: bool,
    hook: EpochHook,
    started: float,
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
    return finish_run(
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
    config: RunConfig,
    run: StartedRun,
    log: Log,
    show_progress: bool,
    hook: EpochHook,
    started: float,
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
    mean_std = {
        key: list(metrics_intervals.mean_std([m[key] for m in fold_metrics])) for key in keys
    }
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
    log(
        f"CV (validation parts, mean ± sd over {k} folds): "
        + "  ".join(f"{n} {m:.3f} ± {s:.3f}" for n, (m, s) in mean_std.items() if n != "loss")
    )
    return finish_run(
        run, config, trained_folds, final, test, result_metrics, started, log, show_progress
    )
