"""Plain-language findings at the top of a run's report: what a practitioner should notice first.

Each rule reads numbers the page already shows (confusion matrix, history, fold scores) and says,
in one sentence, what they suggest. Rules stay quiet unless their pattern is clear.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facecls.report.run_data import RunData


def _collapse(run: RunData, cm: np.ndarray) -> str | None:
    predicted = cm.sum(axis=0)
    total = max(int(cm.sum()), 1)
    top = int(predicted.argmax())
    share, true_share = predicted[top] / total, cm[top].sum() / total
    if share > 0.5 and share > 2 * true_share:
        # Counts, not rounded shares: 603 of 604 is not "100 %".
        return (
            f"{run.class_names[top]} is predicted for {int(predicted[top])} of the {total} test "
            f"images but is only {int(cm[top].sum())} of them: the model leans on one identity. "
            "Train longer, raise the learning rate or use --class-weights inverse."
        )
    return None


def _never_predicted(run: RunData, cm: np.ndarray) -> str | None:
    never = int(((cm.sum(axis=0) == 0) & (cm.sum(axis=1) > 0)).sum())
    tested = int((cm.sum(axis=1) > 0).sum())
    if never:
        return f"{never} of the {tested} identities in the test part are never predicted."
    return None


def _epochs(run: RunData) -> str | None:
    epochs = run.config.train.epochs or 0  # a run's config.yaml holds the resolved recipe
    kept = run.metrics.get("cv", {}).get("best_epochs") or [
        run.metrics.get("final_model", {}).get("epoch")
    ]
    kept = [int(e) for e in kept if e is not None]
    if epochs < 2 or not kept:
        return None
    if all(e == epochs for e in kept):
        return (
            f"The validation loss was still falling at the last epoch ({epochs}) in every fold: "
            "more epochs will likely help."
        )
    if epochs >= 5 and all(e <= 0.6 * epochs for e in kept):
        return (
            f"The validation loss was lowest at epoch {', '.join(map(str, kept))} of {epochs} and "
            "rose afterwards: the model overfits (the kept weights are those of the best epoch)."
        )
    return None


def _tail(run: RunData, group_recall: dict[str, float]) -> str | None:
    head, few = group_recall.get("head"), group_recall.get("few", group_recall.get("medium"))
    if head is None or few is None or head - few < 0.2:
        return None
    group = "few" if "few" in group_recall else "medium"
    hint = " Try --class-weights inverse." if run.config.train.class_weights == "none" else ""
    return (
        f"Identities with many training images are recalled at {head:.0%}, the {group}-image "
        f"ones at {few:.0%}.{hint}"
    )


def _fold_spread(run: RunData) -> str | None:
    mean_std = run.metrics.get("cv", {}).get("mean_std", {}).get("balanced_accuracy")
    if mean_std and mean_std[1] > 0.05:
        return (
            f"The folds disagree (validation balanced accuracy {mean_std[0]:.3f}, standard "
            f"deviation {mean_std[1]:.3f} over the folds): a difference between two runs smaller "
            "than that may be a training-session effect."
        )
    return None


def findings(run: RunData, cm: np.ndarray, group_recall: dict[str, Any]) -> list[str]:
    """The sentences that apply to this run, most important first (possibly none)."""
    found = [
        _collapse(run, cm),
        _never_predicted(run, cm),
        _epochs(run),
        _tail(run, group_recall),
        _fold_spread(run),
    ]
    return [f for f in found if f]
