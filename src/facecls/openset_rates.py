"""Open-set identification rates of scores: FPIR, FNIR and DIR at a threshold, the curve, AUROC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OpenSetRates:
    """Open-set identification rates at one threshold (ISO/IEC 19795-1 terms).

    Attributes:
        threshold: accept when score >= threshold.
        fpir: false positive identification rate, the share of strangers given a name.
        fnir: false negative identification rate, the share of known faces not named correctly
            (wrong name or rejected); ``dir = 1 - fnir``, the detection-and-identification rate.
    """

    threshold: float
    fpir: float
    fnir: float

    @property
    def dir(self) -> float:
        return 1.0 - self.fnir


def rates_at(
    threshold: float,
    known_scores: np.ndarray,
    known_correct: np.ndarray,
    unknown_scores: np.ndarray,
) -> OpenSetRates:
    """FPIR and FNIR at ``threshold``."""
    fpir = float(np.mean(unknown_scores >= threshold)) if len(unknown_scores) else 0.0
    named = known_correct & (known_scores >= threshold)
    return OpenSetRates(float(threshold), fpir, 1.0 - float(np.mean(named)))


def open_set_curve(
    known_scores: np.ndarray, known_correct: np.ndarray, unknown_scores: np.ndarray
) -> dict[str, np.ndarray]:
    """FPIR and DIR at every distinct threshold, from accepting nothing to accepting everything.

    Returns:
        ``{"threshold", "fpir", "dir"}``, arrays sorted by decreasing threshold.
    """
    thresholds = np.unique(np.concatenate([known_scores, unknown_scores]))[::-1]
    unknown_sorted = np.sort(unknown_scores)
    correct_sorted = np.sort(known_scores[known_correct])
    # Counts of scores >= t by binary search: O((N + M) log) instead of a loop per threshold.
    fpir = (len(unknown_sorted) - np.searchsorted(unknown_sorted, thresholds, "left")) / max(
        len(unknown_sorted), 1
    )
    named = len(correct_sorted) - np.searchsorted(correct_sorted, thresholds, "left")
    return {"threshold": thresholds, "fpir": fpir, "dir": named / max(len(known_scores), 1)}


def dir_at_fpir(
    known_scores: np.ndarray,
    known_correct: np.ndarray,
    unknown_scores: np.ndarray,
    target_fpir: float = 0.01,
) -> OpenSetRates:
    """Rates at the lowest threshold whose FPIR does not exceed ``target_fpir``."""
    curve = open_set_curve(known_scores, known_correct, unknown_scores)
    ok = np.flatnonzero(curve["fpir"] <= target_fpir)
    threshold = float(curve["threshold"][ok[-1]]) if len(ok) else float("inf")
    return rates_at(threshold, known_scores, known_correct, unknown_scores)


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """AUROC of known versus stranger on the score alone: P(a known face scores higher than a
    stranger), ties counted half (the Mann-Whitney U statistic)."""
    both = np.concatenate([known, unknown])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    # Average the ranks of tied scores so ties count half.
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    ranks = (sums / counts)[inverse]
    u = ranks[: len(known)].sum() - len(known) * (len(known) + 1) / 2
    return float(u / (len(known) * len(unknown)))
