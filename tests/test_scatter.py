"""The recall-against-training-images scatter on a crowded case: names never overprint each
other, never sit on a dot, and each is tied to its own identity's dot."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Annotation, Text

from facecls.report.scatter import plot_recall_vs_train_images


def test_crowded_scatter_names_do_not_collide() -> None:
    """Issue 29.7: twelve named identities, eight of them on one spot (recall 0, 12 training
    images), among sixty dots."""
    rng = np.random.default_rng(0)
    train = [12] * 8 + list(rng.integers(5, 200, 52))
    recall = [0.0] * 8 + list(np.round(rng.random(52), 1))
    names = [f"Someone_Longnamed_{i:02d}" for i in range(60)]
    named = names[:8] + names[20:24]
    ax = plot_recall_vs_train_images(train, recall, names, named)
    figure = ax.figure
    renderer = (
        figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    ).get_renderer()
    figure.draw(renderer)
    labels = [t for t in ax.texts if isinstance(t, Annotation)]
    assert labels, "no identity was named"
    # The names' own boxes (an Annotation's extent would include its leader line).
    boxes = [Text.get_window_extent(t, renderer) for t in labels]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    dots = ax.transData.transform(np.column_stack([np.maximum(train, 1), recall]))
    where = dict(zip(names, zip(np.maximum(train, 1), recall, strict=True), strict=True))
    for label, box in zip(labels, boxes, strict=True):
        # Tied to its own identity's dot (the leader line ends there) ...
        assert tuple(label.xy) == tuple(float(v) for v in where[label.get_text()])
        assert label.arrow_patch is not None
        # ... and on no dot at all, its own included.
        inside = (
            (dots[:, 0] >= box.x0) & (dots[:, 0] <= box.x1)
            & (dots[:, 1] >= box.y0) & (dots[:, 1] <= box.y1)
        )  # fmt: skip
        assert not inside.any(), label.get_text()
    # Every wanted name is either drawn or left off on purpose (never twice).
    drawn = [t.get_text() for t in labels]
    assert len(drawn) == len(set(drawn)) and set(drawn) <= set(named)
    assert len(drawn) >= 8  # room enough on this figure for most of them
