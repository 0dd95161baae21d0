"""Classification metrics, every one derived from a single confusion matrix of counts.

Convention: ``cm[i, j]`` counts samples of true class ``i`` predicted as class ``j`` (scikit-learn's
convention), as int64. Counts add up across batches, ranks and folds, so a fold's or a whole run's
metrics come from summing matrices, never from averaging rates.

Per class ``c`` the one-vs-rest counts are TP = ``cm[c, c]``, FP = column sum - TP, FN = row sum - TP
and TN = N - TP - FP - FN. From them:

* ``precision`` = TP / (TP + FP), ``recall`` = TP / (TP + FN), ``f1`` = 2TP / (2TP + FP + FN)
  (the same as 2PR / (P + R), and how scikit-learn computes it).
* ``bcr`` = (precision + recall) / 2. This is the seed report's definition (Table 3: P = 0.625,
  R = 1.0 gives BCR = 0.8125), not the textbook balanced classification rate
  (sensitivity + specificity) / 2.
* ``accuracy`` = TP / support: the seed report's per-class accuracy, "the fraction of correctly
  predicted samples for the given class, divided by the number of samples" (§5.4). It equals
  ``recall`` by definition, as "Acc" equals "Recall" in every row of the report's Nnet and TronNet
  columns (Table 4, Theo Epstein: Acc 0.182, Recall 0.182).
* ``ovr_accuracy`` = (TP + TN) / N, the one-vs-rest accuracy of the class as a binary task. Kept
  under this name only: it is 0.93-0.99 even for an identity never recognised, because TN
  dominates, so no table ranks or aggregates by it. (The report's TransferNet column fits neither
  reading: Acc 0.671 with Recall 0.345 for Kaia Gerber; see docs/reports.md.)
* ``aggregated`` = mean(accuracy, precision, recall, bcr) with the report's ``accuracy``, as the
  report's "Agg" column: Table 3, (1 + 0.625 + 1 + 0.8125) / 4 = 0.859; Table 4, Theo Epstein,
  (0.182 + 1.0 + 0.182 + 0.591) / 4 = 0.489. An identity never recognised scores 0.

Any ratio whose denominator is zero is 0.0, like scikit-learn's ``zero_division=0``, so no metric is
ever NaN and every result is JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

# Bootstrap matrices are built in chunks of at most this many int64 cells (32 MiB), so 1000 resamples
# of a 200-class matrix (40 M cells) never sit in memory at once.
_BOOT_CHUNK_CELLS = 1 << 22


@dataclass(frozen=True)
class ClassMetrics:
    """One class's metrics; see the module docstring for the definitions."""

    name: str
    support: int
    accuracy: float
    ovr_accuracy: float
    precision: float
    recall: float
    bcr: float
    aggregated: float
    f1: float


# Written into metrics.json beside the tables, so a reader of the file knows which figure is which.
DEFINITIONS = {
    "per_class.accuracy": "the seed report's per-class accuracy: correct predictions of the class "
    "/ its test images (= recall)",
    "per_class.ovr_accuracy": "one-vs-rest accuracy (TP + TN) / N; near 1 for every class when "
    "there are many classes, so nothing is ranked or aggregated by it",
    "per_class.bcr": "(precision + recall) / 2, the seed report's BCR",
    "per_class.aggregated": "mean of accuracy, precision, recall and bcr (the report's Agg)",
    "summary.accuracy": "correct test images / test images (overall)",
    "summary.class_avg_accuracy": "Table 5's Accuracy row: mean per-class accuracy over all "
    "classes (= macro_recall)",
    "summary.class_avg_ovr_accuracy": "mean one-vs-rest accuracy over all classes",
    "top5/worst5": "ranked by aggregated, ties broken by larger support, then name",
}

_RANK_KEYS = tuple(f.name for f in fields(ClassMetrics) if f.name != "name")


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Count (true, predicted) pairs.

    Args:
        targets: True class indices, shape (N,), integers in ``[0, num_classes)``.
        preds: Predicted class indices, shape (N,), same range.
        num_classes: K; the matrix is K x K even when some classes never occur.

    Returns:
        int64 array of shape (K, K) with ``cm[i, j]`` = samples of class i predicted as j.

    Raises:
        ValueError: On mismatched shapes or indices outside ``[0, num_classes)``.
    """
    targets = np.asarray(targets).ravel()
    preds = np.asarray(preds).ravel()
    if targets.shape != preds.shape:
        raise ValueError(f"targets {targets.shape} and preds {preds.shape} differ in shape")
    for label, values in (("targets", targets), ("preds", preds)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{label} must lie in [0, {num_classes}), got {values.min()}..{values.max()}"
            )
    # One bincount over flat i*K + j codes is a single pass over the data, no Python loop.
    codes = targets.astype(np.int64) * num_classes + preds.astype(np.int64)
    counts = np.bincount(codes, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def aggregated_score(accuracy: float, precision: float, recall: float, bcr: float) -> float:
    """The report's aggregated score: the plain mean of the four rates."""
    return (accuracy + precision + recall + bcr) / 4.0


def _check_cm(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square 2-D, got shape {cm.shape}")
    if np.any(cm < 0):
        raise ValueError("confusion matrix holds negative counts")
    return cm.astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0.0 wherever den == 0 (scikit-learn's zero_division=0)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den))
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def _class_arrays(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class rates for a stack of matrices: (..., K, K) -> name -> (..., K)."""
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    support = cms.sum(axis=-1)
    fp = cms.sum(axis=-2) - tp
    fn = support - tp
    total = cms.sum(axis=(-2, -1))[..., None]
    tn = total - tp - fp - fn
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, support)
    bcr = (precision + recall) / 2.0
    return {
        "support": support,
        "accuracy": recall,  # the report's per-class accuracy, TP / support: recall by definition
        "ovr_accuracy": _safe_div(tp + tn, total),
        "precision": precision,
        "recall": recall,
        "bcr": bcr,
        "aggregated": aggregated_score(recall, precision, recall, bcr),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
    }


def _summary_arrays(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Whole-matrix scores for a stack of matrices: (..., K, K) -> name -> (...)."""
    per = _class_arrays(cms)
    has_support = per["support"] > 0
    out = {
        "accuracy": _safe_div(np.trace(cms, axis1=-2, axis2=-1), cms.sum(axis=(-2, -1))),
        # scikit-learn's balanced accuracy skips classes absent from y_true (their recall is undefined).
        "balanced_accuracy": _safe_div((per["recall"] * has_support).sum(-1), has_support.sum(-1)),
        # Macro averages run over all K labels, absent ones scoring 0, as f1_score(labels=range(K)).
        "macro_f1": per["f1"].mean(-1),
        "macro_precision": per["precision"].mean(-1),
        "macro_recall": per["recall"].mean(-1),
    }
    for key in ("accuracy", "ovr_accuracy", "precision", "recall", "bcr", "aggregated"):
        out[f"class_avg_{key}"] = per[key].mean(-1)
    return out


def per_class(cm: np.ndarray, class_names: Sequence[str]) -> list[ClassMetrics]:
    """Metrics for every class, in class-index order.

    Args:
        cm: (K, K) confusion matrix of counts.
        class_names: K names, index-aligned with the matrix.

    Returns:
        K :class:`ClassMetrics`, zero-support classes included (their recall is 0.0).
    """
    cm = _check_cm(cm)
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class matrix")
    arrays = _class_arrays(cm)
    return [
        ClassMetrics(
            name=str(name),
            **{key: int(v[c]) if key == "support" else float(v[c]) for key, v in arrays.items()},
        )
        for c, name in enumerate(class_names)
    ]


def summary(cm: np.ndarray) -> dict[str, float]:
    """Whole-matrix scores.

    Keys: ``accuracy`` (trace / N); ``balanced_accuracy`` (mean recall over classes with support,
    as scikit-learn); ``macro_f1``, ``macro_precision``, ``macro_recall`` (over all K classes with
    zero_division=0, as scikit-learn with ``labels=range(K)``); and the report's Table 5 class
    averages ``class_avg_accuracy`` (the report's per-class accuracy, TP / support, so equal to
    ``macro_recall``), ``class_avg_precision``, ``class_avg_recall``, ``class_avg_bcr``,
    ``class_avg_aggregated``, and ``class_avg_ovr_accuracy`` (one-vs-rest, labelled as such), all
    over all K classes. ``accuracy`` (trace / N) is the usual overall accuracy, not a Table 5 row.
    """
    return {key: float(value) for key, value in _summary_arrays(_check_cm(cm)).items()}


def top_k_accuracy(probs_or_logits: np.ndarray, targets: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose true class is among the k highest scores.

    Args:
        probs_or_logits: (N, K) scores; any monotone transform (softmax or not) gives the same answer.
        targets: (N,) true class indices.
        k: How many top scores count; clipped to K.

    Returns:
        Top-k accuracy in [0, 1]. Ties with the true class's score count in its favour.
    """
    scores = np.asarray(probs_or_logits, dtype=np.float64)
    targets = np.asarray(targets).ravel()
    if scores.ndim != 2 or scores.shape[0] != targets.shape[0] or scores.shape[0] == 0:
        raise ValueError(f"need (N, K) scores with N = len(targets) > 0, got {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    target_scores = scores[np.arange(len(targets)), targets]
    # The true class is in the top k iff fewer than k classes score strictly higher: O(NK), no sort.
    higher = (scores > target_scores[:, None]).sum(axis=1)
    return float(np.mean(higher < min(k, scores.shape[1])))


def ranked(
    metrics: list[ClassMetrics], key: str = "aggregated", n: int = 5, worst: bool = False
) -> list[ClassMetrics]:
    """The best (or worst) n classes by one metric, as in the report's Tables 3 and 4.

    Ties break by support, larger first (among identities never recognised, the one with the most
    test images missed is the worst; among perfect ones, the best-attested is the best), then by
    name, so the order never depends on input order.
    """
    if key not in _RANK_KEYS:
        raise ValueError(f"unknown key {key!r}; choose from {', '.join(_RANK_KEYS)}")
    sign = 1.0 if worst else -1.0
    return sorted(metrics, key=lambda m: (sign * getattr(m, key), -m.support, m.name))[: max(n, 0)]


def median_and_above(metrics: Sequence[ClassMetrics], threshold: float = 0.9) -> dict[str, float]:
    """The report's §5.1 figures: median aggregated score and how many identities exceed 0.9.

    Only identities with test support count (as in Tables 3 and 4).
    """
    scores = np.array([m.aggregated for m in metrics if m.support > 0], dtype=np.float64)
    return {
        "median_aggregated": float(np.median(scores)) if scores.size else 0.0,
        "above": int((scores > threshold).sum()),
        "threshold": float(threshold),
        "identities": int(scores.size),
    }


def confused_pairs(cm: np.ndarray, class_names: Sequence[str], n: int = 20) -> list[dict]:
    """The n most frequent mistakes (off-diagonal cells with a count > 0), largest first.

    Each entry: ``{"true", "predicted", "count", "fraction_of_true"}``, the last being the count over
    the true class's support. Equal counts are ordered by (true index, predicted index).
    """
    cm = _check_cm(cm)
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class matrix")
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    # lexsort's last key is primary: count descending, then row-major position.
    order = np.lexsort((cols, rows, -off[rows, cols]))[: max(n, 0)]
    support = cm.sum(axis=1)
    return [
        {
            "true": str(class_names[i]),
            "predicted": str(class_names[j]),
            "count": int(off[i, j]),
            "fraction_of_true": float(off[i, j] / support[i]),
        }
        for i, j in zip(rows[order], cols[order], strict=True)
    ]


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
        values.append(_summary_arrays(cms)[metric])
    low, high = np.percentile(np.concatenate(values), [50.0 * alpha, 100.0 - 50.0 * alpha])
    return float(low), float(high)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across folds or seeds; one value has std 0.0."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)


def metrics_table(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """Everything above in one JSON-serialisable dict.

    Keys: ``summary``, ``per_class`` (one dict per class), ``top5`` and ``worst5`` (by aggregated
    score, support breaking ties, among classes present in the test data, so a class never tested
    is not called "worst"), ``aggregated`` (:func:`median_and_above`) and ``confused_pairs``.
    """
    classes = per_class(cm, class_names)
    tested = [m for m in classes if m.support > 0]
    return {
        "summary": summary(cm),
        "aggregated": median_and_above(classes),
        "definitions": DEFINITIONS,
        "per_class": [asdict(m) for m in classes],
        "top5": [asdict(m) for m in ranked(tested, n=5)],
        "worst5": [asdict(m) for m in ranked(tested, n=5, worst=True)],
        "confused_pairs": confused_pairs(cm, class_names),
    }


# Training images per identity: head >= 20, medium 8-19, few < 8.
GROUP_THRESHOLDS = (20, 8)


def head_medium_few(
    train_counts: np.ndarray, thresholds: tuple[int, int] = GROUP_THRESHOLDS
) -> np.ndarray:
    """Label each class by how many training images it has.

    Args:
        train_counts: (K,) training images per class.
        thresholds: (head_min, medium_min): "head" if count >= head_min, "medium" if
            medium_min <= count < head_min, else "few".

    Returns:
        (K,) array of "head" / "medium" / "few".
    """
    head_min, medium_min = thresholds
    if head_min <= medium_min:
        raise ValueError(
            f"thresholds must be (head_min, medium_min) with head_min > medium_min, got {thresholds}"
        )
    counts = np.asarray(train_counts)
    return np.where(counts >= head_min, "head", np.where(counts >= medium_min, "medium", "few"))


def group_recall(cm: np.ndarray, groups: Sequence[str] | np.ndarray) -> dict[str, float]:
    """Mean recall per class group (e.g. from :func:`head_medium_few`).

    Only classes with test support count, as in balanced accuracy; a group with no such class is
    left out rather than reported as NaN. Keys come in head, medium, few order, then any others sorted.
    """
    cm = _check_cm(cm)
    groups = np.asarray(groups).astype(str)
    if groups.shape != (cm.shape[0],):
        raise ValueError(f"need one group per class ({cm.shape[0]}), got shape {groups.shape}")
    per = _class_arrays(cm)
    tested = per["support"] > 0
    known = [g for g in ("head", "medium", "few") if g in groups]
    others = sorted(set(groups.tolist()) - set(known))
    out = {}
    for group in known + others:
        mask = (groups == group) & tested
        if mask.any():
            out[group] = float(per["recall"][mask].mean())
    return out


@dataclass
class EvalResult:
    """Predictions of one evaluation pass, on the CPU.

    Attributes:
        logits: float32 ``(N, C)``.
        targets: int64 ``(N,)``.
        loss: mean loss over the images (with the training loss's class weights).
        features: float32 ``(N, D)`` embeddings when the pass kept them, else ``None``.
    """

    logits: np.ndarray
    targets: np.ndarray
    loss: float
    features: np.ndarray | None = None

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1)
