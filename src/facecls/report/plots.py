"""Plots: each ``plot_*(data, ..., ax=None) -> Axes``; nothing here shows or writes a file.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot state), so plotting works headless
and in threads; ``report.py`` saves them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.0)) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").subplots()


def _epoch_axis(ax: Axes) -> None:
    """Whole epochs on the x axis, also for a run of one epoch (no 0.995 … 1.005 ticks)."""
    low, high = ax.get_xlim()
    if high - low < 2:
        middle = round((low + high) / 2)
        ax.set_xlim(middle - 1, middle + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# What each loss curve is when the caller does not say (``settings.loss_labels`` does).
LOSSES = ("training loss", "validation loss")


def plot_loss_curves(
    history: Sequence[dict[str, Any]], ax: Axes | None = None,
    labels: tuple[str, str] = LOSSES,
) -> Axes:  # fmt: skip
    """Train (solid) and validation (dashed) loss per epoch, one colour per fold.

    Args:
        history: rows with ``fold``, ``epoch``, ``train_loss`` and ``val_loss``.
        labels: what the training and the validation loss are (smoothing, augmentation, …),
            written under the title: the two curves are often not the same loss.
    """
    ax = _axes(ax, figsize=(6.4, 4.4))
    folds = sorted({int(r["fold"]) for r in history})
    colours = [f"C{i % 10}" for i in range(len(folds))]
    for fold, colour in zip(folds, colours, strict=True):
        rows = [r for r in history if int(r["fold"]) == fold]
        epochs = [int(r["epoch"]) for r in rows]
        label = f"fold {fold}" if len(folds) > 1 else ""
        ax.plot(epochs, [float(r["train_loss"]) for r in rows], color=colour,
                label=f"{label} training".strip())  # fmt: skip
        ax.plot(epochs, [float(r["val_loss"]) for r in rows], color=colour, linestyle="--",
                label=f"{label} validation".strip())  # fmt: skip
    _epoch_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    # Wrapped to the axes' width: what each loss is can be a long line.
    lines = textwrap.wrap(f"Solid: {labels[0]}", 80) + textwrap.wrap(f"Dashed: {labels[1]}", 80)
    ax.set_title(mpl_text("\n".join(lines)), fontsize="small", loc="left")
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
    _epoch_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small", ncols=2)
    ax.grid(alpha=0.3)
    return ax


def plain_log(axis: Any) -> None:
    """Log axis with plain numbers (20, 50, 100) instead of 2×10¹ labels."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def mpl_text(label: object) -> str:
    """A data name as matplotlib text: ``$`` would otherwise start mathtext and can raise."""
    return str(label).replace("$", r"\$")


def plot_long_tail(
    counts: Sequence[int],
    names: Sequence[str],
    test_counts: Sequence[int] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Images per identity, most frequent first: the data's long tail.

    The x axis is the identity's rank, not its name (names are unreadable past ~40 identities);
    the three largest and the smallest identities are named in a box instead.

    Args:
        counts: (K,) images of each identity (test part included).
        names: (K,) identity names, index-aligned with ``counts``.
        test_counts: (K,) of those, images in the test part; drawn stacked when given.
    """
    ax = _axes(ax, figsize=(7.0, 3.6))
    c = np.asarray(counts, dtype=np.int64)
    order = np.argsort(-c, kind="stable")
    ranks = np.arange(1, len(c) + 1)
    if test_counts is None:
        ax.bar(ranks, c[order], width=1.0, color="C0", label="images")
    else:
        t = np.asarray(test_counts, dtype=np.int64)[order]
        ax.bar(ranks, c[order] - t, width=1.0, color="C0", label="train part (with validation)")
        ax.bar(ranks, t, bottom=c[order] - t, width=1.0, color="C1", label="test part")
    if len(c) and c.max() > 20 * max(c.min(), 1):
        ax.set_yscale("log")
        plain_log(ax.yaxis)
    median = float(np.median(c)) if len(c) else 0.0
    ax.axhline(median, color="0.3", linestyle=":", label=f"median {median:g}")
    shown = [f"{mpl_text(names[i])}: {c[i]}" for i in order[:3]]
    if len(c) > 3:
        shown += ["…", f"{mpl_text(names[order[-1]])}: {c[order[-1]]}"]
    ax.text(0.98, 0.95, "\n".join(shown), transform=ax.transAxes, ha="right", va="top",
            fontsize="small", bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"})  # fmt: skip
    ax.set_xlim(0.5, len(c) + 0.5)
    ax.set_xlabel("identity rank (most images first)")
    ax.set_ylabel("images")
    ax.set_title(f"{len(c)} identities, {int(c.sum())} images")
    ax.legend(fontsize="small", loc="center right")
    return ax


def plot_fold_loss(
    history: Sequence[dict[str, Any]], fold: int, best_epoch: int | None = None,
    ax: Axes | None = None,
) -> Axes:  # fmt: skip
    """One fold's training (solid) and validation (dashed) loss, with the kept epoch marked
    (what each loss is goes into the caller's figure title: ``plot_loss_curves``' labels)."""
    ax = _axes(ax, figsize=(4.0, 3.0))
    rows = [r for r in history if int(r["fold"]) == fold]
    epochs = [int(r["epoch"]) for r in rows]
    ax.plot(epochs, [float(r["train_loss"]) for r in rows], color="C0", marker=".",
            label="training")  # fmt: skip
    ax.plot(epochs, [float(r["val_loss"]) for r in rows], color="C1", linestyle="--", marker=".",
            label="validation")  # fmt: skip
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.5", linestyle=":", label=f"kept (epoch {best_epoch})")
    _epoch_axis(ax)
    ax.set_title(f"fold {fold}", fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)
    return ax


def plot_confusion_heatmap(
    counts: np.ndarray, names: Sequence[str], row_totals: Sequence[int] | None = None,
    ax: Axes | None = None,
) -> Axes:  # fmt: skip
    """A (sub-)confusion matrix: colour is the share of the true identity's images, text the count.

    Meant for at most ~40 identities (the classes of the most-confused pairs, clustered), so every
    name stays readable; pass the whole matrix only for small problems.

    Args:
        counts: (M, M) counts, rows true, columns predicted, already in display order.
        names: (M,) identity names in the same order.
        row_totals: (M,) each true identity's test images (the full row sum); the rows of the
            given sub-matrix when ``None``.
    """
    counts = np.asarray(counts)
    m = counts.shape[0]
    # ~0.16 in per cell keeps 40 identities under ~9 in, shown unscaled on a report page.
    side = max(4.5, 0.16 * m + 2.6)
    ax = _axes(ax, figsize=(side + 0.9, side))
    totals = np.asarray(row_totals if row_totals is not None else counts.sum(axis=1), float)
    share = counts / np.maximum(totals, 1)[:, None]
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=max(float(share.max()), 1e-9))
    font = 8 if m <= 15 else 7 if m <= 25 else 6
    for i, j in zip(*np.nonzero(counts), strict=True):
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                color="white" if share[i, j] > 0.6 * share.max() else "black")  # fmt: skip
    # Outline the diagonal (correct predictions) so the eye finds each identity's own cell.
    ax.plot([-0.5, m - 0.5], [-0.5, m - 0.5], color="0.75", linewidth=0.6, zorder=0.5)
    labels = [mpl_text(n) for n in names]
    ax.set_xticks(range(m), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(m), labels, fontsize=font)
    ax.set_xlabel("predicted identity")
    ax.set_ylabel("true identity")
    ax.figure.colorbar(image, ax=ax, shrink=0.5, label="share of the true identity's test images")
    return ax


def plot_loss_overlay(
    histories: dict[str, Sequence[dict[str, Any]]], folds: dict[str, int],
    labels: dict[str, tuple[str, str]] | None = None, ax: Axes | None = None,
) -> Axes:  # fmt: skip
    """Several runs' loss curves on one axis: each run's tested fold, training solid,
    validation dashed, one colour per run; ``labels`` (run → what its training and validation
    losses are) go into the legend, since runs may train with different losses."""
    # The labels say what each loss is and run long: wrapped, in a legend below the axis, with
    # the figure as tall as they need (in the axis they squeezed it to nothing).
    named = {n: (labels or {}).get(n, LOSSES) for n in histories}
    wrapped = {
        n: tuple(textwrap.fill(f"{mpl_text(n)}: {mpl_text(t)}", 95) for t in pair)
        for n, pair in named.items()
    }
    lines = sum(label.count("\n") + 1 for pair in wrapped.values() for label in pair)
    ax = _axes(ax, figsize=(6.4, 4.0 + 0.16 * lines))
    for i, (name, history) in enumerate(histories.items()):
        rows = [r for r in history if int(r["fold"]) == folds.get(name, 0)]
        if not rows:
            continue
        train, val = wrapped[name]
        epochs = [int(r["epoch"]) for r in rows]
        ax.plot(epochs, [float(r["train_loss"]) for r in rows], color=f"C{i % 10}", marker=".",
                label=train)  # fmt: skip
        ax.plot(epochs, [float(r["val_loss"]) for r in rows], color=f"C{i % 10}", linestyle="--",
                marker=".", label=val)  # fmt: skip
    _epoch_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("Loss of each run's tested fold:\ntraining (solid), validation (dashed)")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(0.0, -0.14))
    ax.grid(alpha=0.3)
    return ax


def plot_interval_comparison(
    runs: Sequence[str], rows: dict[str, Sequence[tuple[float, float, float]]],
    ax: Axes | None = None,
) -> Axes:  # fmt: skip
    """Point estimates with 95 % intervals, one group per metric and one colour per run.

    Args:
        runs: run names (legend).
        rows: metric label → one ``(value, low, high)`` per run, in ``runs`` order.
    """
    ax = _axes(ax, figsize=(6.4, 0.8 + 0.3 * len(rows) * max(len(runs), 2)))
    step = 0.8 / max(len(runs), 1)
    for g, values in enumerate(rows.values()):
        for r, (value, low, high) in enumerate(values):
            y = g + (r - (len(runs) - 1) / 2) * step
            ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", capsize=3,
                        color=f"C{r % 10}", label=mpl_text(runs[r]) if g == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(rows)), list(rows))
    ax.invert_yaxis()
    ax.set_xlabel("test score (95 % bootstrap interval)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize="small", loc="best")
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
        curves: name → ``(fpir, dir)`` arrays (``openset_rates.open_set_curve``).
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
