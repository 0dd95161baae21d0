"""The files of a run folder that people read: metrics, tables, predictions and pictures.

Checkpoints and model bundles are written by ``experiment.py``/``bundle.py``; everything a person
reads (JSON, CSV, PNG) is written here, atomically.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.nn as nn
from matplotlib.figure import Figure

from facecls import plots
from facecls.atomic import atomic_path, write_json, write_text

if TYPE_CHECKING:
    from facecls.data.dataset import FaceDataset
    from facecls.data.splits import TestSplit
    from facecls.engine import EvalResult


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predictions_rows(
    result: EvalResult, paths: Sequence[str], class_names: Sequence[str], k: int = 5
) -> tuple[list[str], list[list[Any]]]:
    """``predictions.csv`` content: path, true, predicted, its probability, then top-k pairs."""
    probs = softmax(result.logits)
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    header = ["path", "true", "predicted", "probability", "correct"]
    for r in range(1, k + 1):
        header += [f"top{r}", f"top{r}_probability"]
    rows = []
    for i, path in enumerate(paths):
        row: list[Any] = [
            path,
            class_names[result.targets[i]],
            class_names[top[i, 0]],
            f"{probs[i, top[i, 0]]:.6f}",
            int(top[i, 0] == result.targets[i]),
        ]
        for c in top[i]:
            row += [class_names[c], f"{probs[i, c]:.6f}"]
        rows.append(row)
    return header, rows


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every 2-D convolution in forward-definition order, with its module path."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def write_kernels(model: nn.Module, folder: Path) -> list[Path]:
    """One kernel picture per convolution layer: ``kernels/<NN>_<layer>.png``."""
    written = []
    for i, (name, conv) in enumerate(conv_layers(model), start=1):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "conv"
        ax = plots.plot_kernels(conv.weight.detach().float().cpu().numpy(), f"layer {i}: {name}")
        path = folder / f"{i:02d}_{safe}.png"
        save_figure(ax.figure, path)
        written.append(path)
    return written


def write_run_files(
    run_dir: Path,
    dataset: FaceDataset,
    split: TestSplit,
    history: Sequence[dict[str, Any]],
    result_metrics: dict[str, Any],
    test: EvalResult,
    model: nn.Module,
) -> None:
    """Write ``history.csv``, ``metrics.json``, ``per_class.csv``, ``predictions.csv``,
    ``loss_curves.png``, ``accuracy_curves.png`` and ``kernels/*.png`` into ``run_dir``."""
    if history:
        header = list(history[0])
        write_text(
            run_dir / "history.csv", _csv_text(header, [[r[h] for h in header] for r in history])
        )
    write_json(run_dir / "metrics.json", result_metrics)
    per_class = result_metrics["test"]["per_class"]
    if per_class:
        header = list(per_class[0])
        write_text(
            run_dir / "per_class.csv",
            _csv_text(header, [[r[h] for h in header] for r in per_class]),
        )
    paths = [dataset.paths[i] for i in split.test]
    header, rows = predictions_rows(test, paths, dataset.class_names)
    write_text(run_dir / "predictions.csv", _csv_text(header, rows))
    save_figure(plots.plot_loss_curves(history).figure, run_dir / "loss_curves.png")
    save_figure(plots.plot_accuracy_curves(history).figure, run_dir / "accuracy_curves.png")
    write_kernels(model, run_dir / "kernels")


TABLE5_ROWS = (
    ("Accuracy", "summary", "accuracy"),
    ("Balanced accuracy", "summary", "balanced_accuracy"),
    ("Macro-F1", "summary", "macro_f1"),
    ("Top-5 accuracy", "summary", "top5_accuracy"),
    ("Class avg. precision", "summary", "class_avg_precision"),
    ("Class avg. recall", "summary", "class_avg_recall"),
    ("Class avg. BCR", "summary", "class_avg_bcr"),
    ("Class avg. aggregated", "summary", "class_avg_aggregated"),
)


def table5_text(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table in the report's Table 5 form: one column per run, test-part metrics."""
    names = list(results)
    lines = ["| Metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, section, key in TABLE5_ROWS:
        cells = [f"{results[n]['test'][section][key]:.3f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv_stream(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a CSV atomically, row by row as ``rows`` yields them (memory stays flat).

    Returns:
        The number of data rows written.
    """
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count
