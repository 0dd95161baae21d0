"""The imbalance study's remedies, result rows and table (``benchmarks/imbalance_study.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from facecls import metrics

# Remedy name → TrainConfig fields. "posthoc" re-evaluates the "none" model.
METHODS: dict[str, dict[str, Any]] = {
    "none": {},
    "inverse": {"imbalance": "inverse"},
    "sqrt": {"imbalance": "sqrt"},
    "effective": {"imbalance": "effective"},
    "drw": {"imbalance": "drw"},
    "balanced-softmax": {"imbalance": "balanced-softmax"},
    "logit-adjust": {"imbalance": "logit-adjust"},
    "class-balanced-sampler": {"sampler": "class-balanced"},
    "sqrt-sampler": {"sampler": "sqrt"},
    "posthoc": {},
}


def row(system: str, model: str, method: str, cm: np.ndarray, groups: dict[str, Any],
         seconds: float, notes: str) -> dict[str, Any]:  # fmt: skip
    s = metrics.summary(cm)
    return {
        "system": system, "model": model, "method": method,
        "balanced_accuracy": s["balanced_accuracy"], "macro_f1": s["macro_f1"],
        "accuracy": s["accuracy"], "few_recall": groups["recall"].get("few"),
        "medium_recall": groups["recall"].get("medium"), "head_recall": groups["recall"].get("head"),
        "wall_seconds": round(seconds, 1), "notes": notes,
    }  # fmt: skip


def row_from_run(model: str, method: str, test: dict[str, Any], seconds: float,
                  notes: str) -> dict[str, Any]:  # fmt: skip
    s, g = test["summary"], test["groups"]
    return {
        "system": "facecls", "model": model, "method": method,
        "balanced_accuracy": s["balanced_accuracy"], "macro_f1": s["macro_f1"],
        "accuracy": s["accuracy"], "few_recall": g["recall"].get("few"),
        "medium_recall": g["recall"].get("medium"), "head_recall": g["recall"].get("head"),
        "wall_seconds": round(seconds, 1), "notes": notes,
    }  # fmt: skip


def table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| system | model | remedy | balanced acc. | macro-F1 | accuracy | few recall "
        "| wall time | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        few = "—" if r["few_recall"] is None else f"{r['few_recall']:.3f}"
        lines.append(
            f"| {r['system']} | {r['model']} | {r['method']} | {r['balanced_accuracy']:.3f} "
            f"| {r['macro_f1']:.3f} | {r['accuracy']:.3f} | {few} | {r['wall_seconds']:.0f} s "
            f"| {r['notes']} |"
        )
    return "\n".join(lines)
