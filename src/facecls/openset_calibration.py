"""Calibrating the open-set decision: centroids, the NCM scale and thresholds of a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facecls.catalog import METHODS
from facecls.openset import (
    DEFAULT_ACCEPTANCE,
    DEFAULT_METHOD,
    class_centroids,
    cosine,
    logsumexp,
    scores,
)
from facecls.openset_thresholds import (
    ENROLLED_METHODS,
    few_shot_thresholds,
    threshold_at_acceptance,
)

# Scales tried when fitting the nearest-class-mean softmax temperature (cosine x scale).
_SCALES = np.geomspace(1.0, 200.0, 80)


def fit_scale(cosines: np.ndarray, targets: np.ndarray) -> float:
    """The softmax scale ``s`` minimising the NLL of ``softmax(s * cosines)`` (temperature fit)."""
    best, best_nll = float(_SCALES[0]), np.inf
    for scale in _SCALES:
        z = scale * cosines
        nll = float(np.mean(logsumexp(z) - z[np.arange(len(targets)), targets]))
        if nll < best_nll:
            best, best_nll = float(scale), nll
    return best


@dataclass
class Calibration:
    """What calibration learns from a model's training and validation parts.

    Attributes:
        centroids: unit class centroids of the training part, ``(C, D)`` float32.
        scale: softmax scale of the nearest-class-mean head (fitted on validation).
        thresholds: per method, the score that accepts ``acceptance`` of correct validation answers.
        method: the method ``predict`` uses unless told otherwise.
        acceptance: the target acceptance rate of correctly named known faces.
        stats: counts and rates of the validation part, for the record.
    """

    centroids: np.ndarray
    scale: float
    thresholds: dict[str, float]
    method: str = DEFAULT_METHOD
    acceptance: float = DEFAULT_ACCEPTANCE
    stats: dict[str, Any] = field(default_factory=dict)
    # per score (``centroid``, ``margin``): {str(k): threshold} for people enrolled from k photos
    enrolled_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """The ``openset`` entry of a bundle's ``model.json`` (centroids live in safetensors)."""
        entry = {
            "method": self.method,
            "threshold": self.thresholds[self.method],
            "thresholds": self.thresholds,
            "acceptance": self.acceptance,
            "ncm_scale": self.scale,
            "calibration": self.stats,
        }
        if self.enrolled_thresholds:
            entry["enrolled_thresholds"] = self.enrolled_thresholds
        return entry


def calibrate(
    train_features: np.ndarray,
    train_targets: np.ndarray,
    val_logits: np.ndarray,
    val_features: np.ndarray,
    val_targets: np.ndarray,
    num_classes: int,
    method: str = DEFAULT_METHOD,
    acceptance: float = DEFAULT_ACCEPTANCE,
) -> Calibration:
    """Centroids from the training part, thresholds and the NCM scale from the validation part.

    Thresholds are set on the validation images the classifier names correctly (all validation
    images when fewer than 10 are correct, so a weak model still gets a threshold).
    """
    if method not in METHODS:
        raise ValueError(f"unknown open-set method {method!r}; choose one of {METHODS}")
    centroids = class_centroids(train_features, train_targets, num_classes)
    predicted = val_logits.argmax(axis=1)
    correct = predicted == val_targets
    subset = correct if correct.sum() >= 10 else np.ones_like(correct)
    thresholds = {
        m: threshold_at_acceptance(
            scores(m, val_logits, val_features, centroids)[subset], acceptance
        )
        for m in METHODS
    }
    cos = cosine(val_features, centroids)
    stats = {
        "validation_images": int(len(val_targets)),
        "validation_correct": int(correct.sum()),
        "calibrated_on": "correct" if subset is correct else "all",
        "validation_accuracy": float(correct.mean()) if len(correct) else 0.0,
        "ncm_validation_accuracy": float((cos.argmax(axis=1) == val_targets).mean()),
    }
    return Calibration(
        centroids, fit_scale(cos, val_targets), thresholds, method, acceptance, stats,
        {
            m: few_shot_thresholds(
                val_features, val_targets, subset, acceptance, method=m, centroids=centroids
            )
            for m in ENROLLED_METHODS
        },
    )  # fmt: skip
