"""The end of a run: save and calibrate the model, write the run files, the report, metrics.json."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecls.atomic import write_json
from facecls.bundle import Bundle, save_bundle
from facecls.config import RunConfig
from facecls.config_io import to_dict
from facecls.data.checks import data_report
from facecls.data.dataset import FaceDataset
from facecls.environment import environment
from facecls.inference.calibration import calibrate_trained
from facecls.openset import fused_weight_for
from facecls.report.write import (
    architecture,
    write_model_card,
    write_report_safely,
    write_run_files,
)
from facecls.runtime import Runtime
from facecls.training.engine import EvalResult
from facecls.training.evaluate import groups_text
from facecls.training.fold import Log, TrainedModel
from facecls.training.start import StartedRun


@dataclass
class RunResult:
    """What ``fit``/``cross_validate`` return: the run folder and its ``metrics.json`` content."""

    run_dir: Path
    metrics: dict[str, Any]
    folds: list[TrainedModel] = field(default_factory=list, repr=False)


def probe_train_part(
    final: TrainedModel, dataset: FaceDataset
) -> tuple[np.ndarray, np.ndarray] | None:
    """A linear probe's training-part embeddings (from its cache, mirror-averaged as ``predict``
    computes them) and targets, for a complete calibration at no extra pass; else ``None``."""
    probe, rows = final.head_only or final.top_only, final.train_idx
    if probe is None or rows is None or len(rows) == 0:
        return None
    _, features = probe.outputs(rows, Runtime(probe.features.device))
    return features, dataset.targets.numpy()[rows]


def test_line(test: dict[str, Any]) -> str:
    """The terminal's test figures, each with the interval the pages and the card show."""
    s, intervals = test["summary"], test.get("intervals_95", {})
    parts = []
    for label, key in (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
                       ("macro-F1", "macro_f1"), ("top-5", "top5_accuracy")):  # fmt: skip
        low_high = intervals.get(key)
        interval = f" [{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
        parts.append(f"{label} {s[key]:.3f}{interval}")
    return f"Test ({s['images']} images, 95 % intervals): " + "  ".join(parts)


def finish_run(
    run: StartedRun, config: RunConfig, folds: list[TrainedModel], final: TrainedModel,
    test: EvalResult, result_metrics: dict[str, Any], started: float, log: Log,
    show_progress: bool = False,
) -> RunResult:  # fmt: skip
    """Save and calibrate ``final``'s bundle, write the run files and ``data_report.json``
    (rank 0), log the test figures, then write the report and ``metrics.json``, which marks the
    run finished."""
    run_dir, dataset, split, dist = run.run_dir, run.dataset, run.split, run.dist
    result_metrics["environment"] = environment(config.train.seed)
    result_metrics["environment"]["processes"] = dist.world_size
    result_metrics["config"] = to_dict(config)
    if run.given is not None:  # what the user set; the report lists the rest as filled in
        result_metrics["settings_given"] = run.given
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
        # open set: thresholds at FPIR 1 % from the validation outputs already computed and the
        # calibration views of the validation part (one pass); every score and the centroids
        # when a linear probe holds the training part's embeddings
        calibrate_trained(run_dir / "model", final, log, probe_train_part(final, dataset),
                          dataset, config.train.model,
                          fused_weight=fused_weight_for(config.train.freeze))  # fmt: skip
        # Up to here; the report adds its own time below (report_seconds).
        result_metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
        history = [row for trained in folds for row in trained.history]
        write_run_files(run_dir, dataset, split, history, result_metrics, test, final.model)
        write_json(run_dir / "data_report.json", data_report(dataset, split))
        write_model_card(run_dir)
        # metrics.json marks the run finished; the per-epoch checkpoints are no longer needed.
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)

    dist.main_writes(write)  # every rank returns once the files exist
    log(test_line(result_metrics["test"]))
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
