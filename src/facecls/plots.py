"""Plots: each ``plot_*(data, ..., ax=None) -> Axes``; nothing here shows or writes a file.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot state), so plotting works headless
and in threads; ``report.py`` saves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.0)) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").subplots()


def plot_loss_curves(history: Sequence[dict[str, Any]], ax: Axes | None = None) -> Axes:
    """Train (solid) and validation (dashed) loss per epoch, one colour per fold.

    Args:
        history: rows with ``fold``, ``epoch``, ``train_loss`` and ``val_loss``.
    """
    ax = _axes(ax)
    folds = sorted({int(r["fold"]) for r in history})
    colours = [f"C{i % 10}" for i in range(len(folds))]
    for fold, colour in zip(folds, colours, strict=True):
        rows = [r for r in history if int(r["fold"]) == fold]
        epochs = [int(r["epoch"]) for r in rows]
        label = f"fold {fold}" if len(folds) > 1 else ""
        ax.plot(epochs, [float(r["train_loss"]) for r in rows], color=colour,
                label=f"{label} train".strip())  # fmt: skip
        ax.plot(epochs, [float(r["val_loss"]) for r in rows], color=colour, linestyle="--",
                label=f"{label} validation".strip())  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("Training (solid) and validation (dashed) loss")
    ax.legend(fontsize="small", ncols=2 if len(folds) > 2 else 1)
    ax.grid(alpha=0.3)
    return ax


def plot_accuracy_curves(history: Sequence[dict[str, Any]], ax: Axes | None = None) -> Axes:
    """Validation accuracy (solid) and balanced accuracy (dotted) per epoch and fold."""
    ax = _axes(ax)
    for i, fold in enumerate(sorted({int(r["fold"]) for r in history})):
        rows = [r for r in history if int(r["fold"]) == fold]
        epochs = [int(r["epoch"]) for r in rows]
        ax.plot(epochs, [float(r["val_accuracy"]) for r in rows], color=f"C{i % 10}",
                label=f"fold {fold} accuracy")  # fmt: skip
        ax.plot(epochs, [float(r["val_balanced_accuracy"]) for r in rows], color=f"C{i % 10}",
                linestyle=":", label=f"fold {fold} balanced")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small", ncols=2)
    ax.grid(alpha=0.3)
    return ax


def kernel_mosaic(weight: np.ndarray, max_out: int = 32, max_in: int = 16) -> np.ndarray:
    """Tile a conv weight ``(out, in, kh, kw)`` into one picture.

    A layer with 3 input channels is shown as one RGB kernel per output channel (the report's
    first-layer figures); deeper layers as a grid, one row per output channel and one small
    matrix per input channel. Each kernel is scaled to [0, 1] on its own so weak ones stay
    visible; separators are white. At most ``max_out`` × ``max_in`` kernels are drawn.
    """
    w = weight[:max_out]
    out_c, in_c, kh, kw = w.shape
    pad = 1
    if in_c == 3:
        cols = int(np.ceil(np.sqrt(out_c)))
        rows = -(-out_c // cols)
        canvas = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, 3))
        for k in range(out_c):
            kernel = w[k].transpose(1, 2, 0)
            span = kernel.max() - kernel.min()
            kernel = (kernel - kernel.min()) / span if span > 0 else kernel * 0 + 0.5
            r, c = divmod(k, cols)
            y, x = pad + r * (kh + pad), pad + c * (kw + pad)
            canvas[y : y + kh, x : x + kw] = kernel
        return canvas
    w = w[:, :max_in]
    in_c = w.shape[1]
    canvas = np.ones((out_c * (kh + pad) + pad, in_c * (kw + pad) + pad))
    for o in range(out_c):
        for i in range(in_c):
            kernel = w[o, i]
            span = kernel.max() - kernel.min()
            kernel = (kernel - kernel.min()) / span if span > 0 else kernel * 0 + 0.5
            y, x = pad + o * (kh + pad), pad + i * (kw + pad)
            canvas[y : y + kh, x : x + kw] = kernel
    return canvas


def plot_kernels(weight: np.ndarray, title: str = "", ax: Axes | None = None) -> Axes:
    """The kernels of one convolution layer (the report's Figures 8–23)."""
    mosaic = kernel_mosaic(weight)
    ax = _axes(ax, figsize=(max(3.0, mosaic.shape[1] / 12), max(3.0, mosaic.shape[0] / 12)))
    ax.imshow(mosaic, cmap=None if mosaic.ndim == 3 else "gray", interpolation="nearest")
    out_c, in_c = weight.shape[:2]
    shown = f"{min(out_c, 32)}/{out_c} out" + ("" if in_c == 3 else f" × {min(in_c, 16)}/{in_c} in")
    ax.set_title(f"{title} {tuple(weight.shape)} — {shown}".strip(), fontsize="small")
    ax.set_axis_off()
    return ax


def plot_open_set(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    marks: dict[str, tuple[float, float]] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Detection-and-identification rate against FPIR (log scale), one line per open-set score.

    Args:
        curves: name → ``(fpir, dir)`` arrays (``openset.open_set_curve``).
        marks: name → ``(fpir, dir)`` of a chosen operating point (the calibrated threshold).
    """
    ax = _axes(ax)
    for i, (name, (fpir, dir_)) in enumerate(curves.items()):
        keep = fpir > 0  # log axis: FPIR 0 has no place on it
        ax.plot(fpir[keep], dir_[keep], color=f"C{i % 10}", label=name)
        if marks and name in marks:
            ax.plot(*marks[name], marker="o", color=f"C{i % 10}")
    ax.axvline(0.01, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("FPIR (strangers given a name)")
    ax.set_ylabel("DIR (known faces named correctly)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    return ax
