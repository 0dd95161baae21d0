"""The report's Table 5 as Markdown: one column per run (``facecls demo`` prints it)."""

from __future__ import annotations

from typing import Any

# The report's Table 5 (averages over identities; its Accuracy is the mean per-class accuracy,
# correct / samples of the class), then the whole-test-part scores facecls adds.
TABLE5_ROWS = (
    ("Accuracy (class avg.)", "class_avg_accuracy"),
    ("Precision (class avg.)", "class_avg_precision"),
    ("Recall (class avg.)", "class_avg_recall"),
    ("BCR (class avg.)", "class_avg_bcr"),
    ("Aggregated (class avg.)", "class_avg_aggregated"),
    ("Overall accuracy (correct / images)", "accuracy"),
    ("Balanced accuracy", "balanced_accuracy"),
    ("Macro-F1", "macro_f1"),
    ("Top-5 accuracy", "top5_accuracy"),
)


def table5_text(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table in the report's Table 5 form: one column per run, test-part metrics, each
    with its 95 % bootstrap interval where the run has one (``metrics.json``'s ``intervals_95``)."""
    names = list(results)
    lines = ["| Metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key in TABLE5_ROWS:
        cells = []
        for n in names:
            test = results[n]["test"]
            value = test["summary"].get(key)
            if value is None:  # a run written before this key existed
                cells.append("–")
                continue
            low, high = test.get("intervals_95", {}).get(key, (None, None))
            cells.append(f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
