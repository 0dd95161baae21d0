"""Per-class tables of one confusion matrix: each identity's metrics, rankings, mistakes, groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from facecls.metrics import check_cm, class_arrays, summary


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
    "top5/worst5": "ranked by accuracy as the report's Tables 3 and 4 are; ties broken by more "
    "test images, then aggregated, then name; no identity is in both lists",
}
# Said under the tables on every page that shows them.
RANK_RULE = (
    "ranked by Acc, as the seed report's Tables 3 and 4 are; equal Acc: more test images first, "
    "then Aggregated (higher first in the top list, lower first in the worst), then the name"
)

_RANK_KEYS = tuple(f.name for f in fields(ClassMetrics) if f.name != "name")


def per_class(cm: np.ndarray, class_names: Sequence[str]) -> list[ClassMetrics]:
    """Metrics for every class, in class-index order.

    Args:
        cm: (K, K) confusion matrix of counts.
        class_names: K names, index-aligned with the matrix.

    Returns:
        K :class:`ClassMetrics`, zero-support classes included (their recall is 0.0).
    """
    cm = check_cm(cm)
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class matrix")
    arrays = class_arrays(cm)
    return [
        ClassMetrics(
            name=str(name),
            **{key: int(v[c]) if key == "support" else float(v[c]) for key, v in arrays.items()},
        )
        for c, name in enumerate(class_names)
    ]


def ranked(
    metrics: Sequence[ClassMetrics], key: str = "accuracy", n: int = 5, worst: bool = False
) -> list[ClassMetrics]:
    """The best (or worst) n classes by one metric; by Acc, as in the report's Tables 3 and 4.

    In all eight top and worst lists the report prints, Acc is in order and Aggregated is not.
    Ties break by support, larger first (among identities never recognised, the one with the
    most test images missed is the worst; among perfect ones, the best-attested is the best),
    then by aggregated (higher first for the best, lower first for the worst), then by name, so
    the order never depends on input order.
    """
    if key not in _RANK_KEYS:
        raise ValueError(f"unknown key {key!r}; choose from {', '.join(_RANK_KEYS)}")
    sign = 1.0 if worst else -1.0
    return sorted(
        metrics,
        key=lambda m: (sign * getattr(m, key), -m.support, sign * m.aggregated, m.name),
    )[: max(n, 0)]


def top_and_worst(
    metrics: Sequence[ClassMetrics], n: int = 5
) -> tuple[list[ClassMetrics], list[ClassMetrics], dict]:
    """Tables 3 and 4 over the tested identities, never with one identity in both.

    With fewer than ``2 n`` tested identities the top list takes the better half (rounded up)
    and the worst list the rest; the worst list is ranked among identities not in the top one.

    Returns:
        ``(top, worst, ranking)``; ``ranking`` holds ``tested`` (identities with test images),
        ``rule`` (:data:`RANK_RULE`) and ``ties``: one ``{"accuracy", "identities"}`` per Acc
        value shared across a list's boundary (which of them are shown is decided by the
        tie-breaks, and the page says so).
    """
    tested = [m for m in metrics if m.support > 0]
    top = ranked(tested, n=min(n, (len(tested) + 1) // 2))
    names = {m.name for m in top}
    rest = [m for m in tested if m.name not in names]
    worst = ranked(rest, n=min(n, len(rest)), worst=True)
    shown = top + worst
    ties = []
    for value in sorted({m.accuracy for m in shown}, reverse=True):
        sharing = [m for m in tested if m.accuracy == value]
        in_top = sum(m in top for m in sharing)
        in_worst = sum(m in worst for m in sharing)
        if len(sharing) > 1 and len(sharing) != max(in_top, in_worst):
            ties.append({"accuracy": float(value), "identities": len(sharing)})
    ranking = {"tested": len(tested), "rule": RANK_RULE, "ties": ties}
    return top, worst, ranking


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
    cm = check_cm(cm)
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


def metrics_table(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """Everything above in one JSON-serialisable dict.

    Keys: ``summary``, ``per_class`` (one dict per class), ``top5`` and ``worst5``
    (:func:`top_and_worst`: by Acc, among classes present in the test data, so a class never
    tested is not called "worst", and never one class in both), ``ranking`` (how they were
    ranked, ties across their boundaries), ``aggregated`` (:func:`median_and_above`) and
    ``confused_pairs``.
    """
    classes = per_class(cm, class_names)
    top, worst, ranking = top_and_worst(classes)
    return {
        "summary": summary(cm),
        "aggregated": median_and_above(classes),
        "definitions": DEFINITIONS,
        "per_class": [asdict(m) for m in classes],
        "top5": [asdict(m) for m in top],
        "worst5": [asdict(m) for m in worst],
        "ranking": ranking,
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
    cm = check_cm(cm)
    groups = np.asarray(groups).astype(str)
    if groups.shape != (cm.shape[0],):
        raise ValueError(f"need one group per class ({cm.shape[0]}), got shape {groups.shape}")
    per = class_arrays(cm)
    tested = per["support"] > 0
    known = [g for g in ("head", "medium", "few") if g in groups]
    others = sorted(set(groups.tolist()) - set(known))
    out = {}
    for group in known + others:
        mask = (groups == group) & tested
        if mask.any():
            out[group] = float(per["recall"][mask].mean())
    return out
