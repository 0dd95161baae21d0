"""Metrics against scikit-learn as the oracle, plus the seed report's worked numbers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from facecls import metrics, metrics_classes, metrics_intervals

# (num_classes, num_samples, seed); the generator below leaves some classes without support and
# some never predicted, the cases where zero-division conventions matter.
CASES = [(2, 1, 0), (3, 10, 1), (5, 40, 2), (7, 200, 3), (25, 300, 4), (60, 500, 5)]


def _random_predictions(
    num_classes: int, num_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Draw targets from ~2/3 of the classes and predictions from another ~2/3, so both
    # "no support" and "never predicted" classes occur once num_classes >= 3.
    true_pool = rng.choice(num_classes, size=max(1, 2 * num_classes // 3), replace=False)
    pred_pool = rng.choice(num_classes, size=max(1, 2 * num_classes // 3), replace=False)
    targets = rng.choice(true_pool, size=num_samples)
    # Mostly right, partly wrong: correct answers where the pool allows, else a random pool member.
    correct = rng.random(num_samples) < 0.6
    preds = np.where(
        correct & np.isin(targets, pred_pool), targets, rng.choice(pred_pool, size=num_samples)
    )
    return targets, preds


@pytest.fixture(params=CASES, ids=lambda c: f"K{c[0]}-N{c[1]}")
def case(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, int]:
    num_classes, num_samples, seed = request.param
    targets, preds = _random_predictions(num_classes, num_samples, seed)
    return targets, preds, num_classes


def test_generator_covers_edge_cases() -> None:
    targets, preds = _random_predictions(25, 300, 4)
    cm = metrics.confusion_matrix(targets, preds, 25)
    assert (cm.sum(axis=1) == 0).any() and (cm.sum(axis=0) == 0).any()


def test_confusion_matrix_matches_sklearn(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    targets, preds, k = case
    cm = metrics.confusion_matrix(targets, preds, k)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, skm.confusion_matrix(targets, preds, labels=range(k)))


def test_confusion_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0]), 3)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(np.array([], int), np.array([], int), 2), np.zeros((2, 2))
    )


def test_per_class_matches_sklearn(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    targets, preds, k = case
    cm = metrics.confusion_matrix(targets, preds, k)
    rows = metrics_classes.per_class(cm, [f"c{i}" for i in range(k)])
    p, r, f, s = skm.precision_recall_fscore_support(
        targets, preds, labels=range(k), zero_division=0
    )
    np.testing.assert_allclose([m.precision for m in rows], p)
    np.testing.assert_allclose([m.recall for m in rows], r)
    np.testing.assert_allclose([m.f1 for m in rows], f)
    np.testing.assert_array_equal([m.support for m in rows], s)
    # One-vs-rest accuracy is plain binary accuracy of "is class c" against "predicted c".
    ovr = [skm.accuracy_score(targets == c, preds == c) for c in range(k)]
    np.testing.assert_allclose([m.ovr_accuracy for m in rows], ovr)
    # The report's per-class accuracy: correct predictions of c / samples of c, i.e. recall.
    own = [skm.accuracy_score(targets[targets == c], preds[targets == c]) if s[c] else 0.0
           for c in range(k)]  # fmt: skip
    np.testing.assert_allclose([m.accuracy for m in rows], own)
    np.testing.assert_allclose([m.bcr for m in rows], (p + r) / 2)
    np.testing.assert_allclose(
        [m.aggregated for m in rows], (np.array(own) + p + r + (p + r) / 2) / 4
    )


def test_summary_matches_sklearn(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    targets, preds, k = case
    got = metrics.summary(metrics.confusion_matrix(targets, preds, k))
    labels = list(range(k))
    with warnings.catch_warnings():
        # balanced_accuracy_score warns about classes predicted but absent from y_true.
        warnings.simplefilter("ignore")
        balanced = skm.balanced_accuracy_score(targets, preds)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(targets, preds))
    assert got["balanced_accuracy"] == pytest.approx(balanced)
    macro = {"labels": labels, "average": "macro", "zero_division": 0}
    assert got["macro_f1"] == pytest.approx(skm.f1_score(targets, preds, **macro))
    assert got["macro_precision"] == pytest.approx(skm.precision_score(targets, preds, **macro))
    assert got["macro_recall"] == pytest.approx(skm.recall_score(targets, preds, **macro))
    rows = metrics_classes.per_class(
        metrics.confusion_matrix(targets, preds, k), [str(i) for i in labels]
    )
    for key in ("accuracy", "ovr_accuracy", "precision", "recall", "bcr", "aggregated"):
        assert got[f"class_avg_{key}"] == pytest.approx(np.mean([getattr(m, key) for m in rows]))
    # Table 5's Accuracy row is the mean per-class accuracy, the macro recall over all K labels.
    assert got["class_avg_accuracy"] == pytest.approx(got["macro_recall"])


def test_empty_matrix_gives_zeros_not_nan() -> None:
    got = metrics.summary(np.zeros((4, 4), dtype=np.int64))
    assert all(v == 0.0 for v in got.values())


def test_report_table3_worked_numbers() -> None:
    # Class 0 ("Sheikh Hasina", Nnet column): TP=5, FP=3, FN=0 gives precision 0.625, recall 1.0.
    cm = np.array([[5, 0, 0], [2, 4, 0], [1, 0, 3]])
    row = metrics_classes.per_class(cm, ["hasina", "b", "c"])[0]
    assert (row.accuracy, row.precision, row.recall) == (1.0, 0.625, 1.0)
    assert row.bcr == 0.8125
    # The report's Agg, (1 + 0.625 + 1 + 0.8125) / 4 = 0.859375, printed 0.859.
    assert row.aggregated == 0.859375
    # One-vs-rest accuracy, (TP + TN) / N = (5 + 7) / 15, is kept under its own name only.
    assert row.ovr_accuracy == pytest.approx(12 / 15)


def test_report_table4_theo_epstein_row() -> None:
    """Table 4, Nnet column: Theo Epstein, Acc 0.182, P 1.0, R 0.182, BCR 0.591, Agg 0.489.

    2 of his 11 test images named right (2 / 11 = 0.182) and nobody else taken for him.
    """
    cm = np.zeros((3, 3), dtype=np.int64)
    cm[0, 0], cm[0, 1], cm[0, 2] = 2, 5, 4
    cm[1, 1], cm[2, 2], cm[2, 1] = 30, 20, 3
    theo = metrics_classes.per_class(cm, ["theo", "b", "c"])[0]
    assert theo.precision == 1.0
    assert round(theo.accuracy, 3) == round(theo.recall, 3) == 0.182
    assert round(theo.bcr, 3) == 0.591
    assert round(theo.aggregated, 3) == 0.489
    # The one-vs-rest figure would say 0.84 for a man recognised twice in eleven tries.
    assert theo.ovr_accuracy == pytest.approx((2 + 53) / 64)


def test_never_recognised_identity_scores_zero() -> None:
    """A zero-recall identity aggregates to 0 and is ranked worst, the larger one first."""
    cm = np.array([[0, 6, 0, 0], [0, 10, 0, 0], [0, 0, 0, 2], [0, 0, 0, 8]])
    rows = metrics_classes.per_class(cm, ["never6", "b", "never2", "d"])
    assert rows[0].aggregated == rows[2].aggregated == 0.0
    assert rows[0].ovr_accuracy > 0.7  # what the one-vs-rest reading would have shown
    assert [m.name for m in metrics_classes.ranked(rows, n=2, worst=True)] == ["never6", "never2"]
    table = metrics_classes.metrics_table(cm, ["never6", "b", "never2", "d"])
    assert [r["name"] for r in table["worst5"][:2]] == ["never6", "never2"]
    assert table["summary"]["class_avg_accuracy"] == pytest.approx((0 + 1 + 0 + 1) / 4)
    aggregated = sorted(m.aggregated for m in rows)
    assert table["aggregated"]["median_aggregated"] == pytest.approx(np.median(aggregated))
    assert table["aggregated"]["above"] == sum(a > 0.9 for a in aggregated)
    assert "per_class.accuracy" in table["definitions"]


def test_top_k_accuracy_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    for k_classes, n in [(3, 20), (10, 100), (50, 300)]:
        scores = rng.normal(size=(n, k_classes))
        targets = rng.integers(0, k_classes, size=n)
        for k in (1, 2, 5):
            kk = min(k, k_classes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn warns when k >= n_classes
                want = skm.top_k_accuracy_score(targets, scores, k=kk, labels=range(k_classes))
            assert metrics.top_k_accuracy(scores, targets, k=k) == pytest.approx(want)
    assert metrics.top_k_accuracy(rng.normal(size=(5, 3)), np.zeros(5, int), k=10) == 1.0
    with pytest.raises(ValueError):
        metrics.top_k_accuracy(np.zeros((2, 3)), np.zeros(3, int))


def _row(name: str, aggregated: float, support: int = 1) -> metrics_classes.ClassMetrics:
    return metrics_classes.ClassMetrics(name, support, 0.0, 0.0, 0.0, 0.0, 0.0, aggregated, 0.0)


def test_ranked_order_and_ties() -> None:
    """By any one metric (here aggregated); the report's Acc order is tests/test_rankings.py."""
    rows = [_row("d", 0.5), _row("b", 0.9), _row("a", 0.9), _row("c", 0.1), _row("e", 0.5)]
    assert [m.name for m in metrics_classes.ranked(rows, "aggregated", n=3)] == ["a", "b", "d"]
    assert [m.name for m in metrics_classes.ranked(rows, "aggregated", n=3, worst=True)] == [
        "c",
        "d",
        "e",
    ]
    assert [m.name for m in metrics_classes.ranked(rows[::-1], "aggregated", n=3)] == [
        "a",
        "b",
        "d",
    ]
    # Support breaks ties before the name does.
    tied = [_row("a", 0.0, 2), _row("z", 0.0, 9), _row("m", 1.0, 3), _row("b", 1.0, 7)]
    assert [m.name for m in metrics_classes.ranked(tied, "aggregated", n=2, worst=True)] == [
        "z",
        "a",
    ]
    assert [m.name for m in metrics_classes.ranked(tied, "aggregated", n=2)] == ["b", "m"]
    assert len(metrics_classes.ranked(rows, n=10)) == 5
    with pytest.raises(ValueError):
        metrics_classes.ranked(rows, key="name")


def test_confused_pairs() -> None:
    cm = np.array([[5, 3, 1], [0, 4, 3], [2, 0, 0]])
    pairs = metrics_classes.confused_pairs(cm, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("a", "b", 3),
        ("b", "c", 3),
        ("c", "a", 2),
        ("a", "c", 1),
    ]
    assert pairs[0]["fraction_of_true"] == pytest.approx(3 / 9)
    assert pairs[2]["fraction_of_true"] == 1.0
    assert len(metrics_classes.confused_pairs(cm, ["a", "b", "c"], n=2)) == 2
    assert metrics_classes.confused_pairs(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_bootstrap_matches_loop_oracle() -> None:
    """The vectorised bootstrap against scikit-learn on each of the same (stratified)
    resamples; each resample keeps every identity's number of test items."""
    targets, preds = _random_predictions(7, 200, 3)
    n_boot, seed = 5, 11
    rng = np.random.default_rng(seed)
    (idx,) = metrics_intervals.stratified_resamples(targets, n_boot, rng, chunk=n_boot)
    for row in idx:
        assert np.array_equal(np.bincount(targets[row], minlength=7), np.bincount(targets))
    values = [
        skm.f1_score(targets[i], preds[i], labels=range(7), average="macro", zero_division=0)
        for i in idx
    ]
    got = metrics_intervals.bootstrap_ci(
        targets, preds, 7, metric="macro_f1", n_boot=n_boot, seed=seed, alpha=0.2
    )
    np.testing.assert_allclose(got, np.percentile(values, [10, 90]))


def test_bootstrap_contains_estimate_and_narrows() -> None:
    widths = []
    for n in (200, 4000):
        targets, preds = _random_predictions(10, n, 1)
        point = metrics.summary(metrics.confusion_matrix(targets, preds, 10))["balanced_accuracy"]
        low, high = metrics_intervals.bootstrap_ci(targets, preds, 10, n_boot=300)
        assert low <= point <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2
    assert metrics_intervals.bootstrap_ci(
        targets, preds, 10, n_boot=50
    ) == metrics_intervals.bootstrap_ci(targets, preds, 10, n_boot=50)
    with pytest.raises(ValueError):
        metrics_intervals.bootstrap_ci(targets, preds, 10, metric="nope")


def test_mean_std() -> None:
    assert metrics_intervals.mean_std([0.5]) == (0.5, 0.0)
    mean, std = metrics_intervals.mean_std([0.1, 0.4, 0.7])
    assert mean == pytest.approx(0.4) and std == pytest.approx(np.std([0.1, 0.4, 0.7], ddof=1))
    with pytest.raises(ValueError):
        metrics_intervals.mean_std([])


def test_metrics_table_is_json_and_skips_untested_classes() -> None:
    targets, preds = _random_predictions(25, 300, 4)
    names = [f"person {i}" for i in range(25)]
    table = metrics_classes.metrics_table(metrics.confusion_matrix(targets, preds, 25), names)
    json.dumps(table, allow_nan=False)
    assert set(table) == {
        "summary",
        "per_class",
        "top5",
        "worst5",
        "ranking",
        "aggregated",
        "definitions",
        "confused_pairs",
    }
    assert len(table["per_class"]) == 25 and len(table["top5"]) == 5
    assert all(row["support"] > 0 for row in table["worst5"])


def test_head_medium_few_boundaries() -> None:
    groups = metrics_classes.head_medium_few(np.array([20, 19, 8, 7, 0, 500]))
    assert groups.tolist() == ["head", "medium", "medium", "few", "few", "head"]
    with pytest.raises(ValueError):
        metrics_classes.head_medium_few(np.array([1]), thresholds=(8, 20))


def test_group_recall() -> None:
    # Recalls: 1.0, 0.5, 0.0, and class 3 has no test support (ignored, so "few" is omitted).
    cm = np.array([[2, 0, 0, 0], [1, 1, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0]])
    got = metrics_classes.group_recall(cm, ["head", "head", "medium", "few"])
    assert got == {"head": 0.75, "medium": 0.0}
