"""How sure a figure is: bootstrap intervals over test items, mean and spread across folds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facecls.metrics import confusion_matrix, summary, summary_arrays

# Bootstrap matrices are built in chunks of at most this many int64 cells (32 MiB), so 1000 resamples
# of a 200-class matrix (40 M cells) never sit in memory at once.
_BOOT_CHUNK_CELLS = 1 << 22


def bootstrap_ci(
    targets: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    metric: str = "balanced_accuracy",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a :func:`summary` metric over resampled test items.

    Args:
        targets: (N,) true class indices.
        preds: (N,) predicted class indices.
        num_classes: K.
        metric: Any key of :func:`summary`.
        n_boot: Number of resamples.
        seed: Seed of the resampling generator; the same seed gives the same interval.
        alpha: 1 - coverage; 0.05 gives the 2.5th and 97.5th percentiles.

    Returns:
        (low, high).
    """
    targets = np.asarray(targets).ravel()
    preds = np.asarray(preds).ravel()
    confusion_matrix(targets, preds, num_classes)  # validates shapes and ranges
    if targets.size == 0 or n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError("need N > 0 samples, n_boot >= 1 and 0 < alpha < 1")
    known = summary(np.zeros((1, 1), dtype=np.int64))
    if metric not in known:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(known)}")
    cells = num_classes * num_classes
    codes = targets.astype(np.int64) * num_classes + preds.astype(np.int64)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_CELLS // max(cells, targets.size))
    values = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, targets.size, size=(b, targets.size))
        # Offset resample r's codes by r*K*K so one bincount yields all b matrices: (b, K, K).
        boot_codes = codes[idx] + (np.arange(b, dtype=np.int64) * cells)[:, None]
        cms = np.bincount(boot_codes.ravel(), minlength=b * cells).reshape(
            b, num_classes, num_classes
        )
        values.append(summary_arrays(cms)[metric])
    low, high = np.percentile(np.concatenate(values), [50.0 * alpha, 100.0 - 50.0 * alpha])
    return float(low), float(high)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across folds or seeds; one value has std 0.0."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)
