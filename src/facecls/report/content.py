"""What a run's report shows: plain data for the templates and the matplotlib figures.

Every number comes from the run folder (``metrics.json``, ``predictions.csv``, ``history.csv``,
``data_report.json``, ``folds.json``); the scores and their intervals come from
:mod:`facecls.report.scores`, as on every other page. ``write.py`` renders and writes what this
module returns.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from facecls import metrics_classes
from facecls.config_io import to_dict
from facecls.report import plots
from facecls.report.findings import findings
from facecls.report.operating import LOOK_ALIKES_NOTE, how_set, operating_point
from facecls.report.run_data import RunData
from facecls.report.scatter import plot_recall_vs_train_images
from facecls.report.scores import (
    class_average_rows,
    fold_rows,
    headline_rows,
    run_commands,
)
from facecls.report.settings import (
    NOT_PATHS,
    WITHHELD,
    changed_settings,
    environment_rows,
    loss_labels,
    settings_rows,
    training_scope,
)


@dataclass
class RunPage:
    """A run report's content: ``context`` for the templates, ``figures`` to save and inline."""

    context: dict[str, Any]
    figures: dict[str, tuple[Figure, str]] = field(default_factory=dict)


def clustered_classes(cm: np.ndarray, max_classes: int = 40, max_pairs: int = 60) -> list[int]:
    """The classes of the most-confused pairs (at most ``max_classes``), clustered.

    Classes that are mistaken for each other end up next to each other: rows of the symmetrised,
    row-normalised sub-matrix are ordered by average-linkage hierarchical clustering with optimal
    leaf ordering.

    Returns:
        Class indices in display order; empty when the model made no mistake.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage

    names = [str(i) for i in range(cm.shape[0])]
    classes: list[int] = []
    for pair in metrics_classes.confused_pairs(cm, names, n=max_pairs):
        for c in (int(pair["true"]), int(pair["predicted"])):
            if c not in classes and len(classes) < max_classes:
                classes.append(c)
    if len(classes) < 3:
        return classes
    sub = cm[np.ix_(classes, classes)] / np.maximum(cm[classes].sum(axis=1), 1)[:, None]
    tree = linkage(sub + sub.T, method="average", metric="euclidean", optimal_ordering=True)
    return [classes[k] for k in leaves_list(tree)]


def data_section(run: RunData, shareable: bool) -> dict[str, Any]:
    """Identities, images, the split and folds, and the skipped files (reasons only if shareable)."""
    report, folds = run.data_report, run.folds
    skipped = report.get("skipped_files", [])
    location = report.get("location")
    split = str(report.get("split", folds.get("how", "?")))
    if shareable and run.config.data.split_file:  # "split file /home/…/x.csv (…)"
        split = split.replace(run.config.data.split_file, WITHHELD)
    return {
        "kind": report.get("kind", "?"),
        "location": WITHHELD if shareable and location not in NOT_PATHS else location,
        "identities": report.get("identities", len(run.class_names)),
        "images": report.get("images"),
        "image_size": run.config.data.image_size,
        "min_images": run.config.data.min_images,
        "split": split,
        "pool": report.get("train_pool_images", len(folds.get("pool", []))),
        "test": report.get("test_images", len(run.predictions)),
        "fold_sizes": [len(f) for f in folds.get("folds", [])],
        "skipped_count": len(skipped),
        "skipped": [] if shareable else skipped[:50],
        "skipped_reasons": Counter(item["reason"] for item in skipped).most_common(),
        # Counts only: the groups themselves list file paths.
        "duplicates": {k: v for k, v in report.get("duplicates", {}).items()
                       if isinstance(v, int)} or None,
        "several_faces": several_faces(report, shareable),
    }  # fmt: skip


def several_faces(report: dict[str, Any], shareable: bool) -> dict[str, Any] | None:
    """Photos with several faces: how the face was chosen, how many differ from the main face,
    and the doubtful choices for a person to check (their paths unless ``shareable``)."""
    entries = [e for e in report.get("several_faces", []) if isinstance(e, dict)]
    if not entries:
        return None
    doubtful = [e for e in entries if e.get("doubtful")]
    return {
        "photos": len(entries),
        "chosen_by": report.get("faces_chosen_by", ""),
        "not_main": sum(1 for e in entries if e.get("kept", 0)),
        "doubtful_count": len(doubtful),
        "doubtful": [] if shareable else doubtful[:40],
    }


def train_counts(run: RunData) -> np.ndarray | None:
    """Training images per identity of the kept model (its fold's training part, validation left
    out): the one count behind ``metrics.json``'s ``groups``, the terminal, the page and its
    plots. ``None`` for a run written before facecls stored it."""
    counts = run.metrics.get("final_model", {}).get("train_counts")
    return None if counts is None else np.asarray(counts, dtype=np.int64)


def per_class_rows(run: RunData, cm: np.ndarray) -> list[dict[str, Any]]:
    """The per-identity table: test metrics, train images, group and the most frequent mistake.

    The metrics are recomputed from the confusion matrix of ``predictions.csv`` (the same
    figures as ``metrics.json``'s, and the current definitions for a run written before them).
    """
    counts = train_counts(run)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows = []
    for c, row in enumerate(asdict(m) for m in metrics_classes.per_class(cm, run.class_names)):
        j = int(off[c].argmax())
        rows.append({
            **row,
            "train": None if counts is None else int(counts[c]),
            "confused_with": run.class_names[j] if off[c, j] else "",
            "confused_count": int(off[c, j]),
        })  # fmt: skip
    train = np.array([r["train"] if r["train"] is not None else 0 for r in rows])
    for r, group in zip(
        rows, metrics_classes.head_medium_few(train, metrics_classes.GROUP_THRESHOLDS), strict=True
    ):
        r["group"] = str(group) if counts is not None else "?"
    return rows


def openset_rows(run: RunData) -> list[dict[str, Any]]:
    """One row per open-set score of ``openset.json``, the score in use first; ``[]`` without."""
    if not run.openset.get("methods"):
        return []
    in_use = run.openset.get("method")
    rows = [
        {"method": method, "in_use": method == in_use,
         **{k: row.get(k) for k in ("threshold", "fpir", "fnir", "dir_at_fpir_1pct", "auroc")}}
        for method, row in run.openset["methods"].items()
    ]  # fmt: skip
    return sorted(rows, key=lambda r: not r["in_use"])


def build_run_page(run: RunData, shareable: bool) -> RunPage:
    """Tables and figures of a run's report (face pictures are added by ``report.py``)."""
    cm = run.confusion()
    per_class = per_class_rows(run, cm)
    test = {**run.metrics["test"], **metrics_classes.metrics_table(cm, run.class_names)}
    test["summary"] = {**run.metrics["test"]["summary"], **test["summary"]}
    groups = np.array([r["group"] for r in per_class])
    # No stored counts (an older run): no head/medium/few rather than a second definition.
    group_recall = metrics_classes.group_recall(cm, groups) if train_counts(run) is not None else {}
    changed, resolved = changed_settings(run, shareable)
    headline = headline_rows(run)
    labels = loss_labels(to_dict(run.config))
    context: dict[str, Any] = {
        "name": run.name,
        "command": run.command,
        "model": run.config.train.model,
        "shareable": shareable,
        "run_dir": None if shareable else str(run.run_dir.resolve()),
        "data": data_section(run, shareable),
        "settings": settings_rows(run, shareable),
        "settings_changed": changed,
        "settings_resolved": resolved,
        "commands": run_commands(run, shareable),
        "training_scope": training_scope(run),
        "loss_labels": labels,
        "recipe": run.config.train.recipe,
        "architecture": run.metrics.get("final_model", {}).get("architecture"),
        "environment": environment_rows(run),
        "headline": headline,
        # Said under the scores: a width-0 interval is no bug (each identity all right or wrong).
        "zero_width": any(r["low"] is not None and r["low"] == r["high"] for r in headline),
        "test_images": test["summary"].get("images", len(run.predictions)),
        "folds": fold_rows(run),
        "final_model": run.metrics.get("final_model", {}),
        "top5": test["top5"],
        "worst5": test["worst5"],
        "ranking": test["ranking"],
        "class_averages": class_average_rows(run, test["summary"]),
        "ovr_accuracy": test["summary"].get("class_avg_ovr_accuracy"),
        "aggregated": test["aggregated"],
        "group_recall": group_recall,
        "findings": findings(run, cm, group_recall),
        "group_sizes": Counter(groups.tolist()),
        "per_class": per_class,
        "pairs": test["confused_pairs"][:15],
        "errors": int(cm.sum() - np.trace(cm)),
    }
    page = RunPage(context)
    counts = [
        per_identity for per_identity in run.data_report.get("images_per_identity", {}).values()
    ]
    if counts:
        names = list(run.data_report["images_per_identity"])
        support = {r["name"]: r["support"] for r in per_class}
        ax = plots.plot_long_tail(counts, names, [support.get(n, 0) for n in names])
        page.figures["long_tail"] = (ax.figure, "Images per identity, most frequent first")
    if run.history:
        ax = plots.plot_loss_curves(run.history, labels=labels)
        page.figures["loss_curves"] = (ax.figure, "Loss of every fold together")
        page.figures["fold_losses"] = (
            _fold_losses(run, labels),
            f"Loss per fold; the dotted line is the kept epoch. Solid: {labels[0]}; dashed: "
            f"{labels[1]}",
        )
    worst = [r["name"] for r in test["worst5"]]
    ax = plot_recall_vs_train_images(
        [r["train"] or 0 for r in per_class], [r["recall"] for r in per_class],
        [r["name"] for r in per_class], worst,
    )  # fmt: skip
    named = {t.get_text() for t in ax.texts}
    left_off = [n for n in worst if plots.mpl_text(n) not in named]
    page.figures["recall_vs_train"] = (
        ax.figure,
        "Test recall against training images per identity; named: Table 4's identities"
        + (
            f" ({', '.join(left_off)} left unnamed: no free room beside the dot)"
            if left_off
            else ""
        ),
    )
    meta_path = run.run_dir / "model" / "model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    context["operating"] = operating_point(meta)
    context["operating_how"] = how_set(context["operating"]) if context["operating"] else ""
    context["look_alikes_note"] = LOOK_ALIKES_NOTE
    context["openset"] = openset_rows(run)
    context["openset_counts"] = {
        "knowns": run.openset.get("knowns", {}).get("images"),
        "strangers": run.openset.get("strangers", {}).get("images"),
    }
    if context["openset"]:
        methods = run.openset["methods"]
        ax = plots.plot_open_set(
            {m: (np.array(r["curve"]["fpir"]), np.array(r["curve"]["dir"])) for m, r in methods.items()},
            {m: (r["fpir"], r["dir"]) for m, r in methods.items() if "fpir" in r},
        )  # fmt: skip
        page.figures["open_set"] = (
            ax.figure,
            "Known faces named correctly (DIR) against strangers given a name (FPIR); dots: the "
            "calibrated thresholds",
        )
    order = clustered_classes(cm)
    context["heatmap_classes"] = len(order)
    if order:
        ax = plots.plot_confusion_heatmap(
            cm[np.ix_(order, order)], [run.class_names[i] for i in order], cm[order].sum(axis=1)
        )
        page.figures["confusion_clustered"] = (
            ax.figure, f"Confusions among the {len(order)} identities of the most-confused pairs, clustered",
        )  # fmt: skip
    return page


def _fold_losses(run: RunData, labels: tuple[str, str]) -> Figure:
    """Figures 4–7 of the seed report: one loss panel per fold, side by side, titled with what
    the two losses are (``labels``: training, validation)."""
    folds = sorted({int(r["fold"]) for r in run.history})
    epochs = run.metrics.get("cv", {}).get("best_epochs") or [
        run.metrics.get("final_model", {}).get("epoch")
    ]
    cols = min(len(folds), 3)
    rows = -(-len(folds) // cols)
    figure = Figure(figsize=(4.0 * cols, 3.0 * rows + 0.5), layout="constrained")
    # Wrapped to the figure's width: the descriptions are long, the panels narrow.
    width = max(40, int(16 * 4.0 * cols))
    figure.suptitle(
        "\n".join(textwrap.wrap(f"Solid: {labels[0]}. Dashed: {labels[1]}.", width)),
        fontsize="small",
    )
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
    for ax, fold in zip(axes, folds, strict=False):
        plots.plot_fold_loss(run.history, fold, epochs[fold] if fold < len(epochs) else None, ax=ax)
    for ax in axes[len(folds) :]:
        ax.set_axis_off()
    return figure
