"""How sure a figure is: bootstrap intervals over test items, mean and spread across folds.

One bootstrap for every figure of a test part: each resample draws, within each identity, as many
test items as it has (a stratified bootstrap). Every tested identity is in every resample, so a
class average never scores an identity as 0 just because a resample missed its images, and two
figures that are the same number (balanced accuracy and the report's class-average accuracy,
when every identity is tested) get the same interval from the same resamples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from facecls.metrics import confusion_matrix, summary, summary_arrays

# Bootstrap matrices are built in chunks of at most this many int64 cells (32 MiB), so 1000 resamples
# of a 200-class matrix (40 M cells) never sit in memory at once.
_BOOT_CHUNK_CELLS = 1 << 22
N_BOOT = 1000
# The test-part figures with a 95 % interval in metrics.json: the headline scores, then the
# report's Table 5 class averages; top-5 accuracy comes from its per-image hits.
TEST_INTERVALS = (
    "accuracy", "balanced_accuracy", "macro_f1", "class_avg_accuracy", "class_avg_precision",
    "class_avg_recall", "class_avg_bcr", "class_avg_aggregated",
)  # fmt: skip
TOP5 = "top5_accuracy"


def stratified_resamples(
    targets: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int
) -> Iterator[np.ndarray]:
    """Item indices of ``n_boot`` resamples, ``chunk`` at a time: ``(b, N)`` int64 arrays.

    Each resample draws, with replacement, ``n_c`` items among the ``n_c`` items of each class
    ``c`` (column ``j`` of a chunk always holds an item of the same class).
    """
    targets = np.asarray(targets).ravel()
    order = np.argsort(targets, kind="stable")
    sorted_classes = targets[order]
    counts = np.bincount(sorted_classes)
    starts = np.cumsum(counts) - counts
    start, size = starts[sorted_classes], counts[sorted_classes]  # (N,) per sorted position
    for first in range(0, n_boot, chunk):
        b = min(chunk, n_boot - first)
        drawn = (rng.random((b, targets.size)) * size).astype(np.int64)
        yield order[start + np.minimum(drawn, size - 1)]


def bootstrap_intervals(
    targets: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    metrics: Sequence[str] = ("balanced_accuracy",),
    hits: Mapping[str, np.ndarray] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of several figures from the same stratified resamples.

    Args:
        targets: (N,) true class indices.
        preds: (N,) predicted class indices.
        num_classes: K.
        metrics: keys of :func:`facecls.metrics.summary`.
        hits: more figures that are a mean over items, name -> (N,) 0/1 values (e.g.
            ``top5_accuracy`` from :func:`facecls.metrics.top_k_hits`).
        n_boot: Number of resamples.
        seed: Seed of the resampling generator; the same seed gives the same intervals.
        alpha: 1 - coverage; 0.05 gives the 2.5th and 97.5th percentiles.

    Returns:
        name -> (low, high), for every name of ``metrics`` and ``hits``.
    """
    targets = np.asarray(targets).ravel()
    preds = np.asarray(preds).ravel()
    confusion_matrix(targets, preds, num_classes)  # validates shapes and ranges
    if targets.size == 0 or n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError("need N > 0 samples, n_boot >= 1 and 0 < alpha < 1")
    known = summary(np.zeros((1, 1), dtype=np.int64))
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(known)}")
    means = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in (hits or {}).items()}
    if any(v.shape != targets.shape for v in means.values()):
        raise ValueError("every hits array needs one value per test item")
    cells = num_classes * num_classes
    codes = targets.astype(np.int64) * num_classes + preds.astype(np.int64)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_CELLS // max(cells, targets.size))
    values: dict[str, list[np.ndarray]] = {name: [] for name in (*metrics, *means)}
    for idx in stratified_resamples(targets, n_boot, rng, chunk):
        b = idx.shape[0]
        # Offset resample r's codes by r*K*K so one bincount yields all b matrices: (b, K, K).
        boot_codes = codes[idx] + (np.arange(b, dtype=np.int64) * cells)[:, None]
        cms = np.bincount(boot_codes.ravel(), minlength=b * cells).reshape(
            b, num_classes, num_classes
        )
        scores = summary_arrays(cms)
        for name in metrics:
            values[name].append(scores[name])
        for name, v in means.items():
            values[name].append(v[idx].mean(axis=1))
    out = {}
    for name, parts in values.items():
        low, high = np.percentile(np.concatenate(parts), [50.0 * alpha, 100.0 - 50.0 * alpha])
        out[name] = (float(low), float(high))
    return out


def bootstrap_ci(
    targets: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    metric: str = "balanced_accuracy",
    n_boot: int = N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """The stratified percentile interval of one :func:`summary` metric
    (:func:`bootstrap_intervals` with one metric)."""
    return bootstrap_intervals(targets, preds, num_classes, (metric,), None, n_boot, seed, alpha)[
        metric
    ]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across folds or seeds; one value has std 0.0."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)
