"""The recall-against-training-images scatter, with names that never overprint.

Named identities often share a spot (several at recall 0 with the same few training images), so
each name is placed, in pixels, at the first of a ring of offsets around its dot where its box
touches no other name, no dot and leaves the axes free, and is tied to its dot by a leader line.
A name that finds no such place is left off (the caller lists it in the caption) rather than put
beside another identity's dot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

from facecls.report.plots import mpl_text, plain_log

DOT_AREA = 14.0  # scatter marker area in points²
_RADII = (10, 16, 24, 34, 46, 60, 76)  # candidate distances of a name from its dot, in points
_DIRECTIONS = 16


def _offsets() -> list[tuple[float, float]]:
    """Candidate offsets in points: near first, and at each distance right, up, left, down, …"""
    out = []
    for radius in _RADII:
        for k in range(_DIRECTIONS):
            angle = 2 * math.pi * k / _DIRECTIONS
            out.append((radius * math.cos(angle), radius * math.sin(angle)))
    return out


def _dot_hits(box: Bbox, dots: np.ndarray, radius: float) -> bool:
    """Whether any dot (pixel centres, (M, 2)) of ``radius`` px touches ``box``."""
    near_x = np.clip(dots[:, 0], box.x0, box.x1)
    near_y = np.clip(dots[:, 1], box.y0, box.y1)
    return bool(np.any(np.hypot(dots[:, 0] - near_x, dots[:, 1] - near_y) < radius))


def place_labels(
    ax: Axes, points: Sequence[tuple[float, float]], names: Sequence[str],
    dots: np.ndarray, fontsize: float = 7.0,
) -> tuple[list[Annotation], list[str]]:  # fmt: skip
    """Name each point where the name collides with nothing, with a leader line to its dot.

    The figure's layout is run first and then fixed, so the pixel positions used here are
    those of the saved picture (scaled uniformly by its dpi).

    Args:
        points: (x, y) in data units of each point to name.
        names: one name per point.
        dots: (M, 2) every dot of the plot in data units (the named ones included).
        fontsize: of the names, in points.

    Returns:
        The annotations drawn, and the names left off for lack of room.
    """
    figure = ax.figure
    canvas = (
        figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    )
    figure.draw_without_rendering()  # the layout engine moves the axes: let it finish, then fix
    figure.set_layout_engine("none")
    renderer = canvas.get_renderer()
    px_per_pt = figure.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    dot_px = ax.transData.transform(np.asarray(dots, dtype=float).reshape(-1, 2))
    radius = math.sqrt(DOT_AREA / math.pi) * px_per_pt + 1.0
    font = FontProperties(size=fontsize)
    pad = 2.0 * px_per_pt
    placed: list[Bbox] = []
    drawn, left_off = [], []
    for (x, y), name in zip(points, names, strict=True):
        label = mpl_text(name)
        width, height, _ = renderer.get_text_width_height_descent(label, font, ismath=False)
        cx, cy = ax.transData.transform((x, y))
        for dx, dy in _offsets():
            mx, my = cx + dx * px_per_pt, cy + dy * px_per_pt
            box = Bbox.from_bounds(mx - width / 2 - pad, my - height / 2 - pad,
                                   width + 2 * pad, height + 2 * pad)  # fmt: skip
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
            if not inside or box.y1 > frame.y1:
                continue
            if any(box.overlaps(other) for other in placed) or _dot_hits(box, dot_px, radius):
                continue
            placed.append(box)
            drawn.append(ax.annotate(
                label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                ha="center", va="center", annotation_clip=False,
                arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.8, "shrinkA": 1,
                            "shrinkB": 3},
            ))  # fmt: skip
            break
        else:
            left_off.append(str(name))
    return drawn, left_off


def plot_recall_vs_train_images(
    train_counts: Sequence[int], recall: Sequence[float], names: Sequence[str],
    label: Sequence[str] = (), ax: Axes | None = None,
) -> Axes:  # fmt: skip
    """Test recall of each identity against its training images: does the tail fail?

    Args:
        label: the identities to name on the plot (e.g. the worst five); others stay dots. A
            name with no free place beside its dot is left off; ``ax.texts`` holds those named.
    """
    if ax is None:
        ax = Figure(figsize=(6.4, 3.8), layout="constrained").subplots()
    x = np.maximum(np.asarray(train_counts, dtype=float), 1)
    y = np.asarray(recall, dtype=float)
    ax.scatter(x, y, s=DOT_AREA, alpha=0.6, color="C0", edgecolors="none")
    if x.max() > 4 * x.min():
        ax.set_xscale("log")
        plain_log(ax.xaxis)
        ax.set_xlim(x.min() / 1.6, x.max() * 1.6)  # room for names beside the outermost dots
    else:
        span = max(x.max() - x.min(), 1.0)
        ax.set_xlim(x.min() - 0.3 * span, x.max() + 0.3 * span)
    ax.set_ylim(-0.12, 1.12)
    ax.set_xlabel("training images of the identity")
    ax.set_ylabel("test recall")
    ax.set_title("Recall per identity against its training images")
    ax.grid(alpha=0.3)
    wanted = set(label)
    chosen = sorted((xi, yi, n) for xi, yi, n in zip(x, y, names, strict=True) if n in wanted)
    if chosen:  # the named identities' dots ringed, so each line ends at a visible mark
        ax.scatter([c[0] for c in chosen], [c[1] for c in chosen], s=DOT_AREA * 3,
                   facecolors="none", edgecolors="C3", linewidths=0.8)  # fmt: skip
    place_labels(
        ax, [(xi, yi) for xi, yi, _ in chosen], [n for _, _, n in chosen], np.column_stack([x, y])
    )
    return ax
