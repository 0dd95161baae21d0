"""The files of a run folder that people read: metrics, tables, predictions, pictures, reports.

Checkpoints and model bundles are written by ``training/`` and ``bundle.py``; everything a person
reads (JSON, CSV, PNG, the HTML and Markdown reports) is written here, atomically. What the reports
show is assembled in ``report_content.py``, ``report_faces.py`` and ``compare.py``; the pages are
the jinja2 templates in ``templates/`` (HTML autoescaped).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.nn as nn
from matplotlib.figure import Figure

from facecls.atomic import atomic_path, csv_text, file_in_the_way, write_json, write_text
from facecls.metrics import EvalResult
from facecls.openset import softmax
from facecls.progress import bar
from facecls.report import faces as report_faces
from facecls.report import plots
from facecls.report.card import CARD_NAME, model_card
from facecls.report.compare import build_comparison
from facecls.report.compare_text import comparison_text
from facecls.report.content import build_run_page
from facecls.report.lr_find import plot_lr_find
from facecls.report.render import render
from facecls.report.run_data import RunData, load_run
from facecls.report.settings import loss_labels
from facecls.report.tuning import tuning_pages

if TYPE_CHECKING:
    from facecls.data.dataset import FaceDataset
    from facecls.data.splits import TestSplit


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


def predictions_rows(
    result: EvalResult, paths: Sequence[str], class_names: Sequence[str], k: int = 5
) -> tuple[list[str], list[list[Any]]]:
    """``predictions.csv`` content: path, true, predicted, its probability, then top-k pairs.

    The top-k are ranked on the logits, ties broken by class index (a stable sort), the rule of
    :func:`facecls.metrics.top_k_hits`: the file's top-5 recomputes ``metrics.json``'s exactly
    (softmax probabilities may tie where the logits do not).
    """
    probs = softmax(result.logits)
    k = min(k, probs.shape[1])
    top = np.argsort(-np.asarray(result.logits), axis=1, kind="stable")[:, :k]
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


def architecture(model: nn.Module, max_rows: int = 60) -> dict[str, Any]:
    """The model's layers and parameter counts, for ``metrics.json`` and the report.

    Rows are the leaf modules in definition order (``name``, ``layer`` as PyTorch prints it,
    ``parameters``); a model with more than ``max_rows`` leaves is listed by its top-level blocks.
    """
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]
    if len(leaves) > max_rows:
        leaves = list(model.named_children())
    rows = [
        {"name": name, "layer": " ".join(repr(m).split())[:120],
         "parameters": sum(p.numel() for p in m.parameters())}
        for name, m in leaves
    ]  # fmt: skip
    return {
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "layers": rows,
    }


# The seed CNNs have at most 7 convolutions, all drawn; FaceNet has 132, whose pictures cost a
# probe run more time than training its head and say little past the first layers.
MAX_KERNEL_LAYERS = 12


def write_kernels(model: nn.Module, folder: Path) -> list[Path]:
    """One kernel picture per convolution layer, the first :data:`MAX_KERNEL_LAYERS` of them:
    ``kernels/<NN>_<layer>.png``."""
    written = []
    for i, (name, conv) in enumerate(conv_layers(model)[:MAX_KERNEL_LAYERS], start=1):
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
            run_dir / "history.csv", csv_text(header, [[r[h] for h in header] for r in history])
        )
    write_json(run_dir / "metrics.json", result_metrics)
    per_class = result_metrics["test"]["per_class"]
    if per_class:
        header = list(per_class[0])
        write_text(
            run_dir / "per_class.csv",
            csv_text(header, [[r[h] for h in header] for r in per_class]),
        )
    paths = [dataset.paths[i] for i in split.test]
    header, rows = predictions_rows(test, paths, dataset.class_names)
    write_text(run_dir / "predictions.csv", csv_text(header, rows))
    labels = loss_labels(result_metrics.get("config", {}))
    save_figure(plots.plot_loss_curves(history, labels=labels).figure, run_dir / "loss_curves.png")
    save_figure(plots.plot_accuracy_curves(history).figure, run_dir / "accuracy_curves.png")
    write_kernels(model, run_dir / "kernels")


# ---- HTML and Markdown reports ------------------------------------------------------------------


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _save_figures(
    figures: dict[str, tuple[Figure, str]], out: Path, steps: Any = None
) -> dict[str, dict[str, str]]:
    """Write each figure as ``out/figures/<key>.png`` and return it as an inlinable picture
    (``steps``: a progress counter advanced per figure)."""
    pictures = {}
    for key, (figure, caption) in figures.items():
        path = out / "figures" / f"{key}.png"
        save_figure(figure, path)
        pictures[key] = {"uri": _png_uri(path.read_bytes()), "file": f"figures/{key}.png",
                         "caption": caption}  # fmt: skip
        if steps is not None:
            steps.update(1)
    return pictures


def _run_pictures(run_dir: Path, out: Path) -> tuple[dict[str, dict], list[dict]]:
    """The curves and kernel pictures the run already holds, inlined; copied next to a report
    written outside the run folder so its Markdown links still work."""

    def picture(path: Path, caption: str) -> dict[str, str]:
        data = path.read_bytes()
        relative = path.relative_to(run_dir).as_posix()
        if out.resolve() != run_dir.resolve():
            relative = f"figures/{path.name}"
            write_bytes(out / relative, data)
        return {"uri": _png_uri(data), "file": relative, "caption": caption}

    curves = {
        name: picture(run_dir / f"{name}.png", caption)
        for name, caption in (("accuracy_curves", "Validation accuracy (solid) and balanced accuracy (dotted)"),)
        if (run_dir / f"{name}.png").is_file()
    }  # fmt: skip
    kernels = [
        picture(path, "layer " + path.stem.replace("_", ": ", 1).lstrip("0"))
        for path in sorted((run_dir / "kernels").glob("*.png"))
    ]
    return curves, kernels


def _add_faces(
    context: dict[str, Any], run: RunData, dataset: FaceDataset | None, steps: Any
) -> None:
    """Pair examples, the error gallery and Grad-CAM; a page without them if the data is gone.
    ``steps`` advances by two: the face pictures, then Grad-CAM."""

    try:
        faces = report_faces.FaceImages(run, dataset, log=lambda _message: None)
    except Exception as error:  # the data moved or changed: the numbers are still worth a page
        context["faces_note"] = (
            f"Face pictures are not shown: the data could not be reloaded ({error})."
        )
        steps.update(2)
        return
    context["face_grid"] = report_faces.face_grid(faces)
    thumbs = report_faces.row_thumbnails(faces)
    for row in context["per_class"]:
        row["thumb"] = thumbs.get(row["name"])
    context["pairs"] = report_faces.pair_examples(faces, context["pairs"])
    context["gallery"] = report_faces.error_gallery(faces)
    context["doubtful_faces"] = report_faces.doubtful_faces(faces, context["data"]["several_faces"])
    steps.update(1)
    try:
        context["saliency"] = report_faces.saliency_panels(faces)
    except Exception as error:
        context["saliency_note"] = f"Grad-CAM maps are not shown: {error}"
    steps.update(1)


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that is (or lies under) a file, before anything is drawn.

    Raises:
        ValueError: naming the option and the file in the way.
    """
    blocking = file_in_the_way(out)
    if blocking is not None:
        raise ValueError(
            f"--out {out}: {blocking} is a file, not a folder; --out names the report's folder"
        )


def write_report(
    run_dir: Path, out: Path | None = None, shareable: bool = False,
    dataset: FaceDataset | None = None, show_progress: bool = False,
) -> Path:  # fmt: skip
    """Write a run's ``report.html`` (self-contained) and ``report.md``, plus ``figures/*.png``.

    Args:
        run_dir: a folder written by ``facecls train`` or ``facecls cv``.
        out: folder for the report; the run folder when ``None``.
        shareable: leave out every face picture and file path (``report-shareable.*``).
        dataset: the run's data when already in memory; reloaded from its config otherwise.
        show_progress: a bar over the steps (each figure, the run's pictures, the face pictures,
            Grad-CAM, the pages).

    Returns:
        The HTML file's path.
    """

    run = load_run(run_dir)
    out = Path(out) if out is not None else run.run_dir
    check_out_folder(out)
    page = build_run_page(run, shareable)
    context = page.context
    total = len(page.figures) + 2 + (0 if shareable else 2)
    with bar(total, "report", show_progress, unit="step") as steps:
        context["figures"] = _save_figures(page.figures, out, steps)
        context["curves"], context["kernels"] = _run_pictures(run.run_dir, out)
        steps.update(1)
        if not shareable:
            _add_faces(context, run, dataset, steps)
        stem = "report-shareable" if shareable else "report"
        write_text(out / f"{stem}.md", render("run.md.j2", context))
        write_text(out / f"{stem}.html", render("run.html.j2", context))
        steps.update(1)
    return out / f"{stem}.html"


def write_lr_find(
    run_dir: Path, lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
    suggestion: float, min_loss_lr: float,
) -> None:  # fmt: skip
    """``lr_find.csv`` (step, lr, loss, smoothed) and ``lr_find.png`` of a range test."""
    rows = [[i, f"{lr:.6g}", f"{loss:.6g}", f"{smooth:.6g}"]
            for i, (lr, loss, smooth) in enumerate(zip(lrs, losses, smoothed, strict=True), 1)]  # fmt: skip
    write_text(run_dir / "lr_find.csv", csv_text(["step", "lr", "loss", "smoothed"], rows))
    ax = plot_lr_find(lrs, losses, smoothed, suggestion, min_loss_lr)
    save_figure(ax.figure, run_dir / "lr_find.png")


def write_model_card(run_dir: Path) -> Path:
    """``model/MODEL_CARD.md`` of a finished run (:func:`facecls.report.card.model_card`)."""
    path = Path(run_dir) / "model" / CARD_NAME
    write_text(path, model_card(run_dir))
    return path


def write_tuning_page(run_dir: Path, rows: list[dict[str, Any]], best: int) -> Path:
    """``tuning.md`` and ``tuning.html`` of a ``facecls tune`` folder; returns the HTML."""
    md, html = tuning_pages(rows, best)
    write_text(Path(run_dir) / "tuning.md", md)
    write_text(Path(run_dir) / "tuning.html", html)
    return Path(run_dir) / "tuning.html"


def write_report_safely(
    run_dir: Path, log: Callable[[str], None], dataset: FaceDataset | None = None,
    show_progress: bool = False,
) -> Path | None:  # fmt: skip
    """:func:`write_report` at the end of a run: a failure is logged, never raised, so the run's
    results are never lost to a reporting problem."""
    try:
        path = write_report(run_dir, dataset=dataset, show_progress=show_progress)
    except Exception as error:
        log(f"warning: report not written ({type(error).__name__}: {error}); the run itself is "
            f"complete; try again with: facecls report {run_dir}")  # fmt: skip
        return None
    log(f"Report: {path}")
    return path


def _relative_link(target: Path, start: Path) -> str:
    """``target`` as a link from a page in ``start`` (relative, so folders can move together)."""
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def write_comparison(
    run_dirs: Sequence[Path], out: Path | None = None, shareable: bool = False,
    echo: Callable[[str], None] | None = None,
) -> Path:  # fmt: skip
    """Write ``comparison.html`` and ``comparison.md`` for two or more runs.

    Args:
        run_dirs: run folders; runs with the same test images also get paired tests.
        out: folder for the page; ``<parent of the first run>/compare-<a>-vs-<b>…`` when ``None``.
        shareable: leave out file paths (the page shows no face in either case).
        echo: also given the verdict sentences and the score table as text
            (:func:`facecls.report.compare_text.comparison_text`; ``facecls compare`` prints it).

    Returns:
        The HTML file's path.
    """

    runs = [load_run(Path(d)) for d in run_dirs]
    if len(runs) < 2:
        raise ValueError("compare needs at least two run folders")
    if out is None:
        label = "-vs-".join(r.name for r in runs[:3]) + (
            f"-and-{len(runs) - 3}" if len(runs) > 3 else ""
        )
        out = runs[0].run_dir.parent / f"compare-{label}"
    out = Path(out)
    check_out_folder(out)
    page = build_comparison(runs, shareable)
    context = page.context
    context["figures"] = _save_figures(page.figures, out)
    stem = "comparison-shareable" if shareable else "comparison"
    page_name = "report-shareable.html" if shareable else "report.html"
    context["run_pages"] = [  # no link in a shareable page: a link is a path
        _relative_link(r.run_dir / page_name, out)
        if not shareable and (r.run_dir / page_name).is_file() else None
        for r in runs
    ]  # fmt: skip
    write_text(out / f"{stem}.md", render("compare.md.j2", context))
    write_text(out / f"{stem}.html", render("compare.html.j2", context))
    if echo is not None:
        echo(comparison_text(context))
    return out / f"{stem}.html"
