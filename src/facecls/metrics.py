"""Counts: the one confusion matrix every classification metric derives from, and its rates.

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
ever NaN and every result is JSON-serialisable. Per-class tables are :mod:`facecls.metrics_classes`,
intervals :mod:`facecls.metrics_intervals`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def check_cm(cm: np.ndarray) -> np.ndarray:
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


def class_arrays(cms: np.ndarray) -> dict[str, np.ndarray]:
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


def summary_arrays(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Whole-matrix scores for a stack of matrices: (..., K, K) -> name -> (...)."""
    per = class_arrays(cms)
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
    return {key: float(value) for key, value in summary_arrays(check_cm(cm)).items()}


def top_k_hits(probs_or_logits: np.ndarray, targets: np.ndarray, k: int = 5) -> np.ndarray:
    """Whether each sample's true class is among its k highest scores, ties broken by class index.

    The one tie rule of facecls (``torch.topk``'s and a stable sort's): among equal scores the
    lower class index ranks first, so the true class's rank is the number of classes scoring
    strictly higher plus those scoring the same with a lower index. ``predictions.csv`` lists
    its top-k in the same order, so the metric recomputes from the file.

    Args:
        probs_or_logits: (N, K) scores; any strictly monotone transform gives the same answer
            (softmax can merge distinct logits into equal probabilities: rank the logits).
        targets: (N,) true class indices.
        k: How many top scores count; clipped to K.

    Returns:
        (N,) bool.
    """
    scores = np.asarray(probs_or_logits, dtype=np.float64)
    targets = np.asarray(targets).ravel()
    if scores.ndim != 2 or scores.shape[0] != targets.shape[0] or scores.shape[0] == 0:
        raise ValueError(f"need (N, K) scores with N = len(targets) > 0, got {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    lower_index = np.arange(scores.shape[1])[None, :] < targets[:, None]
    # O(NK), no sort: classes strictly higher, and equal ones that come first by index.
    rank = (scores > target_scores).sum(axis=1) + ((scores == target_scores) & lower_index).sum(1)
    return rank < min(k, scores.shape[1])


def top_k_accuracy(probs_or_logits: np.ndarray, targets: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose true class is among the k highest scores (:func:`top_k_hits`:
    ties broken by class index, lower first)."""
    return float(np.mean(top_k_hits(probs_or_logits, targets, k)))


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
