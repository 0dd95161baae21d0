"""The numbers every page shows about a run, from one place: the headline scores and Table 5 with
their one interval each, the folds, and the commands a page prints (typed from where the run
was started). The run page, the comparison page, the Markdown twins and the model card read them
from here, so one number never appears with two values or two intervals.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np

from facecls.metrics_intervals import TEST_INTERVALS, TOP5, bootstrap_intervals
from facecls.report.run_data import RunData

HEADLINE = (
    ("Accuracy", "accuracy"),
    ("Balanced accuracy", "balanced_accuracy"),
    ("Macro-F1", "macro_f1"),
    ("Top-5 accuracy", "top5_accuracy"),
)
# The report's Table 5 rows (its per-class accuracy is correct / samples of the class, = recall).
CLASS_AVERAGES = (
    ("Accuracy", "class_avg_accuracy"),
    ("Precision", "class_avg_precision"),
    ("Recall", "class_avg_recall"),
    ("BCR", "class_avg_bcr"),
    ("Aggregated", "class_avg_aggregated"),
)
# Where a printed command has a part the reader fills in.
PHOTOS, METHOD, RUN_FOLDER = "PHOTOS/", "NAME", "RUN_FOLDER"


def test_intervals(run: RunData) -> dict[str, tuple[float, float]]:
    """The 95 % interval of every test figure: ``metrics.json``'s, or for a run written before
    it held them all, all of them again from ``predictions.csv`` with the same stratified
    bootstrap (never a mix of two bootstraps)."""
    stored = run.metrics["test"].get("intervals_95", {})
    if all(key in stored for key in (*TEST_INTERVALS, TOP5)):
        return {key: (float(v[0]), float(v[1])) for key, v in stored.items()}
    if not run.predictions:
        return {}
    targets, preds = run.targets_preds()
    hits = np.array([p.in_top5 for p in run.predictions], dtype=np.float64)
    return bootstrap_intervals(
        targets, preds, len(run.class_names), TEST_INTERVALS, {TOP5: hits},
        seed=run.config.train.seed,
    )  # fmt: skip


def headline_rows(run: RunData) -> list[dict[str, Any]]:
    """Test score with its 95 % bootstrap interval, and for ``cv`` the folds' mean and standard
    deviation (``cv_std``) and the pooled out-of-fold score."""
    test = run.metrics["test"]
    intervals = test_intervals(run)
    cv = run.metrics.get("cv", {})
    rows = []
    for label, key in HEADLINE:
        low, high = intervals.get(key, (None, None))
        mean_std = cv.get("mean_std", {}).get(key)
        rows.append({
            "label": label, "key": key, "value": test["summary"][key], "low": low, "high": high,
            "cv_mean": mean_std[0] if mean_std else None,
            "cv_std": mean_std[1] if mean_std else None,
            "pooled": cv.get("pooled_out_of_fold", {}).get(key),
        })  # fmt: skip
    return rows


def class_average_rows(run: RunData, summary: dict[str, float]) -> list[dict[str, Any]]:
    """Table 5: each class average of ``summary`` with its interval (``test_intervals``)."""
    intervals = test_intervals(run)
    return [
        {"label": label, "key": key, "value": summary[key],
         "low": intervals.get(key, (None, None))[0], "high": intervals.get(key, (None, None))[1]}
        for label, key in CLASS_AVERAGES
    ]  # fmt: skip


def fold_rows(run: RunData) -> list[dict[str, Any]]:
    """One row per fold (or the single validation part of ``train``): size, kept epoch, scores."""
    cv = run.metrics.get("cv")
    kept = run.metrics.get("final_model", {}).get("fold", 0)
    sizes = [len(f) for f in run.folds.get("folds", [])]
    if cv:
        summaries, epochs = cv["folds"], cv.get("best_epochs", [])
    else:
        summaries = [run.metrics.get("validation", {}).get("summary", {})]
        epochs = [run.metrics.get("final_model", {}).get("epoch")]
    return [
        {"fold": i, "images": sizes[i] if i < len(sizes) else None,
         "epoch": epochs[i] if i < len(epochs) else None, "kept": i == kept, **s}
        for i, s in enumerate(summaries)
    ]  # fmt: skip


def started_in(run: RunData) -> Path | None:
    """The folder the run was started in: the run folder less ``runs_dir/<name>``; ``None`` when
    the folder has moved since (its path no longer ends so)."""
    runs_dir = Path(run.config.runs_dir)
    here = run.run_dir.resolve()
    if runs_dir.is_absolute():
        return here.parent if runs_dir.resolve() == here.parent else None
    tail = (*runs_dir.parts, run.run_dir.name)
    if here.parts[-len(tail) :] != tail:
        return None
    return Path(*here.parts[: -len(tail)])


def run_commands(run: RunData, shareable: bool) -> dict[str, Any]:
    """The commands a run's page prints, each working as typed from the folder the run was
    started in (``started_in``; the run folder's own path when it has moved since).

    Keys: ``folder`` (the run folder as typed), ``started_in`` (``None`` on a shareable page),
    ``repeat``, ``strangers``, ``calibrate``, ``report``. Placeholders: ``PHOTOS/`` and ``NAME``
    (and ``RUN_FOLDER`` on a shareable page, where a path would say where the files are).
    """
    origin = started_in(run)
    if origin is not None:
        folder = (Path(run.config.runs_dir) / run.run_dir.name).as_posix()
    else:
        folder = run.run_dir.resolve().as_posix()
    if shareable and Path(folder).is_absolute():
        folder = RUN_FOLDER
    quoted = shlex.quote(folder)
    return {
        "folder": folder,
        "where": (
            "works from any folder"
            if Path(folder).is_absolute()
            else "typed in the folder the run was started in"
            + (f", {origin}" if origin is not None and not shareable else "")
        ),
        "started_in": None if shareable or origin is None else str(origin),
        "repeat": f"facecls {run.command} --config {shlex.quote(folder + '/config.yaml')}",
        "strangers": f"facecls evaluate {quoted} --strangers {PHOTOS}",
        "calibrate": f"facecls calibrate {quoted} --method {METHOD}",
        "report": f"facecls report {quoted}",
    }
