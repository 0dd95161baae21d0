"""Test evaluation: the metrics tables of a trained model, head / medium / few recall, and
``evaluate_run`` (``facecls evaluate``), which re-evaluates a saved run on its test part."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from facecls import metrics, metrics_classes, metrics_intervals
from facecls.bundle import load_bundle
from facecls.config import RunConfig
from facecls.config_io import load_yaml, replace
from facecls.data.batches import IndexBatches, resident
from facecls.data.dataset import FaceDataset, load_dataset, the_models_identities
from facecls.data.face_choice import kept_faces_of
from facecls.data.splits import (
    folds_from_document,
)
from facecls.inference.strangers import OPENSET_FILE, evaluate_strangers, summary_lines
from facecls.numbers import finite
from facecls.report.run_data import check_run_folder
from facecls.report.write import write_report_safely
from facecls.runtime import resolve_device, runtime_for
from facecls.training.distributed import (
    DistContext,
)
from facecls.training.engine import EvalResult, evaluate
from facecls.training.fold import Log, TrainedModel
from facecls.training.losses import posthoc_adjust


def evaluate_on_test(
    dataset: FaceDataset, trained: TrainedModel, images: torch.Tensor, targets: torch.Tensor,
    test_idx: np.ndarray, config: RunConfig, device: torch.device, dist: DistContext | None = None,
) -> tuple[dict[str, Any], EvalResult]:  # fmt: skip
    probe = trained.head_only  # a linear probe is evaluated on its cached embeddings
    rows = images if probe is None else probe.features
    batches = IndexBatches(
        rows, targets.to(rows.device), torch.from_numpy(test_idx), config.train.eval_batch_size,
        device, shard=(dist or DistContext(device=device)).shard(),
    )  # fmt: skip
    result = evaluate(
        trained.model if probe is None else probe.head, batches, trained.mean, trained.std,
        nn.CrossEntropyLoss(), bool(config.train.flip_tta), runtime_for(config.train, device),
        views=None if probe is None else probe.eval_views,
    )  # fmt: skip
    table = evaluation_metrics(result, dataset.class_names, config.train.seed, trained.train_counts)
    return table, result


def evaluation_metrics(
    result: EvalResult, class_names: list[str], seed: int = 0,
    train_counts: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``metrics_classes.metrics_table`` of a result plus top-5, 95 % bootstrap intervals and,
    given the model's training images per class, the head / medium / few breakdown (``groups``)."""
    k = len(class_names)
    cm = metrics.confusion_matrix(result.targets, result.preds, k)
    table = metrics_classes.metrics_table(cm, class_names)
    if train_counts is not None:
        table["groups"] = group_metrics(cm, train_counts)
    top5 = metrics.top_k_hits(result.logits, result.targets, 5)
    table["summary"]["top5_accuracy"] = float(top5.mean())
    table["summary"]["loss"] = result.loss
    table["summary"]["images"] = int(len(result.targets))
    # One stratified bootstrap for every figure: the same number gets the same interval.
    intervals = metrics_intervals.bootstrap_intervals(
        result.targets,
        result.preds,
        k,
        metrics_intervals.TEST_INTERVALS,
        {metrics_intervals.TOP5: top5},
        seed=seed,
    )
    table["intervals_95"] = {name: list(low_high) for name, low_high in intervals.items()}
    return table


# Training images per identity: head >= 20, medium 8-19, few < 8 (metrics_classes.head_medium_few).
GROUP_THRESHOLDS = metrics_classes.GROUP_THRESHOLDS


def group_metrics(cm: np.ndarray, train_counts: np.ndarray) -> dict[str, Any]:
    """Recall of head / medium / few identities, by training images per identity.

    Returns:
        ``{"thresholds": {...}, "recall": {group: mean recall}, "identities": {group: count},
        "test_images": {group: count}}``; a group with no tested identity has no recall.
    """
    groups = metrics_classes.head_medium_few(np.asarray(train_counts), GROUP_THRESHOLDS)
    support = cm.sum(axis=1)
    names = [g for g in ("head", "medium", "few") if g in groups]
    head_min, medium_min = GROUP_THRESHOLDS
    return {
        "thresholds": {
            "head": f">= {head_min}", "medium": f"{medium_min}-{head_min - 1}",
            "few": f"< {medium_min}", "counted": "training images per identity",
        },
        "recall": metrics_classes.group_recall(cm, groups),
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


def run_dir_of(path: Path) -> Path:
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
            (:mod:`facecls.inference.strangers`); the figures go to ``openset.json`` in the run folder
            and into its report, which is rewritten.

    Reads ``config.yaml``, ``folds.json`` and the model bundle; writes nothing into the run
    unless ``strangers`` are given.
    """

    path = Path(run_dir)
    if logit_adjust is not None:
        logit_adjust = finite(logit_adjust, "--logit-adjust", low=0.0)
    if strangers and (data is not None or logit_adjust):
        raise ValueError(
            "--strangers measures the run's own model on its own test part: leave out "
            + ("--data" if data is not None else "--logit-adjust")
        )
    check_run_folder(path)  # a bare run name: say so, not "model weights not found"
    bundle = load_bundle(path, "cpu", trust_pickle=trust_pickle)  # refuses pickles first
    run_dir = run_dir_of(path)
    config = load_yaml(run_dir / "config.yaml")
    if data is not None:
        config = replace(config, data={"source": data})
    device = resolve_device(config.train.device)
    model = bundle.model.to(device)
    # the faces the run kept from photos with several (none listed: another source's data)
    kept = kept_faces_of(run_dir) if data is None else None
    dataset = load_dataset(config.data, log, show_progress, str(device), kept_faces=kept)
    dataset = the_models_identities(dataset, bundle.class_names, run_dir)
    document = json.loads((run_dir / "folds.json").read_text())
    split, _ = folds_from_document(dataset, document)
    images = resident(dataset.images, device)
    targets = dataset.targets.to(images.device)
    batches = IndexBatches(
        images, targets, torch.from_numpy(split.test), config.train.eval_batch_size, device
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
        test = torch.from_numpy(split.test)
        table["openset"] = evaluate_strangers(
            path, strangers, dataset.images[test].numpy(), dataset.targets[test].numpy(),
            log, device=str(device), out=run_dir / OPENSET_FILE, trust_pickle=trust_pickle,
            show_progress=show_progress,
        )  # fmt: skip
        for line in summary_lines(table["openset"]):
            log(line)
        write_report_safely(run_dir, log, dataset, show_progress)  # now with the open-set curve
    return table
