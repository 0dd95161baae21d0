"""The picture of a learning-rate range test (``facecls lr-find``): loss against lr, log x.

Plain numbers in, an ``Axes`` out (as every ``plot_*`` of ``plots.py``); ``write.py`` saves it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# The explosion at the end of a test would squash the useful part of the curve: the y axis
# stops a little above where the smoothed loss started (the test stops at 4x its minimum).
_HEADROOM = 1.15


def plot_lr_find(
    lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
    suggestion: float, min_loss_lr: float, ax: Axes | None = None,
) -> Axes:  # fmt: skip
    """Each step's loss (faint) and its smoothed curve against the lr, the suggestion marked.

    Args:
        suggestion: the lr of the steepest descent (a red dot on the curve and its label).
        min_loss_lr: the lr of the lowest smoothed loss; a dashed line marks a tenth of it.
    """
    if ax is None:
        ax = Figure(figsize=(6.4, 4.0), layout="constrained").subplots()
    lr, raw, smooth = (np.asarray(v, dtype=float) for v in (lrs, losses, smoothed))
    ax.plot(lr, raw, color="C0", alpha=0.3, linewidth=1, label="loss per step")
    ax.plot(lr, smooth, color="C0", linewidth=2, label="smoothed loss")
    at = int(np.argmin(np.abs(np.log(lr) - np.log(suggestion))))
    ax.plot([lr[at]], [smooth[at]], "o", color="C3", markersize=8,
            label=f"suggestion: steepest descent, lr {suggestion:.2g}")  # fmt: skip
    ax.axvline(min_loss_lr / 10, color="C2", linestyle="--", linewidth=1,
               label=f"lowest loss lr / 10: {min_loss_lr / 10:.2g}")  # fmt: skip
    ax.set_xscale("log")
    finite = smooth[np.isfinite(smooth)]
    if len(finite):
        seen = raw[np.isfinite(raw)]
        low = min(finite.min(), seen.min() if len(seen) else finite.min())
        high = max(finite[: max(1, len(finite) // 10)].max(), finite.min()) * _HEADROOM
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax
