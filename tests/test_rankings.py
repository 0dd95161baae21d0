"""Tables 3 and 4 as the report ranks them, one top-5 tie rule, one interval per number."""

from __future__ import annotations

import numpy as np
import pytest

from facecls import metrics, metrics_classes, metrics_intervals
from facecls.metrics import EvalResult
from facecls.report.write import predictions_rows
from facecls.training.evaluate import evaluation_metrics


def _cm_with_rows(rows: list[tuple[int, int, int]]) -> np.ndarray:
    """A matrix where identity i has ``right`` of its ``support`` test images right (the rest
    taken for a last "sink" identity) and ``taken`` sink images taken for it."""
    k = len(rows) + 1
    cm = np.zeros((k, k), dtype=np.int64)
    for i, (support, right, taken) in enumerate(rows):
        cm[i, i] = right
        cm[i, k - 1] = support - right
        cm[k - 1, i] = taken
    return cm


def test_tables_rank_by_acc_as_the_report_does() -> None:
    """Issue 29.1: the report's Tables 3 and 4 are in Acc order, Aggregated is not. An identity
    with Acc 0.5 and perfect precision (Aggregated 0.69, "Jennifer") must not push one with Acc
    0.75 and poor precision (Aggregated 0.59, "Laura") out of the top list."""
    rows = {
        "A": (4, 4, 0), "B": (4, 4, 0), "C": (4, 4, 0), "D": (8, 7, 0),
        "Jennifer": (4, 2, 0), "Laura": (4, 3, 6),
        **{f"f{i}": (4, 1, 0) for i in range(6)},
    }  # fmt: skip
    names = [*rows, "sink"]
    cm = _cm_with_rows(list(rows.values()))
    per = {m.name: m for m in metrics_classes.per_class(cm, names)}
    assert per["Jennifer"].aggregated > per["Laura"].aggregated
    assert per["Laura"].accuracy > per["Jennifer"].accuracy
    table = metrics_classes.metrics_table(cm, names)
    assert [r["name"] for r in table["top5"]] == ["A", "B", "C", "D", "Laura"]
    accs = [r["accuracy"] for r in table["worst5"]]
    assert accs == sorted(accs) and table["worst5"][0]["name"] == "sink"
    assert "Acc" in table["ranking"]["rule"]
    assert "accuracy" in table["definitions"]["top5/worst5"]


def test_a_collapsed_run_lists_no_identity_twice() -> None:
    """Issue 29.2: everything predicted as one identity; 19 identities tie at Acc 0. No
    identity may be in both lists, and the tie is reported."""
    k = 20
    cm = np.zeros((k, k), dtype=np.int64)
    cm[:, 0] = np.arange(5, 5 + k)
    names = [f"p{i:02d}" for i in range(k)]
    table = metrics_classes.metrics_table(cm, names)
    top = {r["name"] for r in table["top5"]}
    worst = {r["name"] for r in table["worst5"]}
    assert len(top) == len(worst) == 5 and not top & worst
    assert table["top5"][0]["name"] == "p00"
    assert table["ranking"]["ties"] == [{"accuracy": 0.0, "identities": 19}]
    # Four identities: the better two and the other two, never the same one twice.
    small = metrics_classes.metrics_table(cm[:4, :4], names[:4])
    assert len(small["top5"]) == len(small["worst5"]) == 2
    assert not {r["name"] for r in small["top5"]} & {r["name"] for r in small["worst5"]}
    assert small["ranking"]["tested"] == 4


def test_a_tied_top5_counts_as_predictions_csv_lists_it() -> None:
    """Issue 29.3: equal logits rank by class index (lower first), in the metric and in the CSV,
    so top-5 accuracy recomputes from predictions.csv exactly."""
    logits = np.zeros((3, 8), dtype=np.float32)
    logits[:, :4] = 2.0  # four classes clearly ahead, then four tied at 0
    targets = np.array([4, 6, 1])  # 4: fifth by index, in; 6: seventh, out; 1: in the top four
    assert metrics.top_k_hits(logits, targets, 5).tolist() == [True, False, True]
    assert metrics.top_k_accuracy(logits, targets, 5) == pytest.approx(2 / 3)
    # bf16-like ties among the top scores too, on random data: the CSV agrees row by row.
    rng = np.random.default_rng(3)
    noisy = np.round(rng.normal(size=(200, 12)), 1).astype(np.float32)  # many exact ties
    truth = rng.integers(0, 12, 200)
    names = [f"c{i}" for i in range(12)]
    header, rows = predictions_rows(
        EvalResult(noisy, truth, 0.0), [str(i) for i in range(200)], names
    )
    top_cols = [header.index(f"top{r}") for r in range(1, 6)]
    in_csv = [names[t] in {row[c] for c in top_cols} for row, t in zip(rows, truth, strict=True)]
    assert in_csv == metrics.top_k_hits(noisy, truth, 5).tolist()
    assert all(row[2] == names[int(np.argmax(noisy[i]))] for i, row in enumerate(rows))


def test_one_number_has_one_interval() -> None:
    """Issue 29.5: with every identity tested, Table 5's class-average accuracy is balanced
    accuracy: the same number gets the same interval (a bootstrap within each identity), and
    metrics.json carries an interval for top-5 and every Table 5 row."""
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(9), [30, 20, 12, 8, 6, 5, 4, 3, 2])
    logits = rng.normal(size=(targets.size, 9)).astype(np.float32)
    logits[np.arange(targets.size), targets] += rng.random(targets.size) * 2.5
    table = evaluation_metrics(EvalResult(logits, targets, 0.0), [f"n{i}" for i in range(9)])
    s, intervals = table["summary"], table["intervals_95"]
    assert s["class_avg_accuracy"] == pytest.approx(s["balanced_accuracy"])
    assert intervals["class_avg_accuracy"] == intervals["balanced_accuracy"]
    for key in ("top5_accuracy", *metrics_intervals.TEST_INTERVALS):
        low, high = intervals[key]
        assert low <= s[key] <= high, key
    # No resample leaves an identity out, so the class average is not dragged down.
    (idx,) = metrics_intervals.stratified_resamples(targets, 50, np.random.default_rng(1), 50)
    assert all(set(targets[row]) == set(targets) for row in idx)
