"""Calibrating the open-set decision: centroids, the NCM scale and thresholds of a model.

Thresholds come from the validation part *and* its calibration views (``data/views.py``: the
same faces rendered as real photos show them), by one of two rules:

- ``fpir`` (the default): the threshold that names ``fpir`` (1 %) of pseudo-strangers, each
  validation person counted once (``openset_fpir.py``), and the rate of known faces it names is
  reported beside it;
- ``acceptance`` (``--acceptance``, and the fallback where the part is too small for the
  target rate): the threshold that accepts ``acceptance`` of the correctly named faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facecls.catalog import METHODS
from facecls.openset import (
    DEFAULT_ACCEPTANCE,
    DEFAULT_METHOD,
    FUSED_WEIGHT,
    class_centroids,
    cosine,
    logsumexp,
    scores,
)
from facecls.openset_fpir import (
    DEFAULT_FPIR,
    band_rates,
    look_alikes,
    named_rate,
    needed,
    person_weights,
    pseudo_stranger_answers,
    stranger_rate,
    threshold_at_fpir,
)
from facecls.openset_thresholds import (
    ENROLLED_METHODS,
    few_shot_fpir_thresholds,
    few_shot_thresholds,
    settled,
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


# model.json's ``openset.version``: 2 = operating point by the stranger rate on validation faces
# and their calibration views (bundles without it were calibrated by acceptance on clean faces).
CALIBRATION_VERSION = 2


@dataclass
class ScoredViews:
    """Model outputs of the calibration views of validation faces (``data/views.py``).

    Attributes:
        logits: ``(V, C)``; ``features``: ``(V, D)`` (``None`` without embeddings).
        targets: ``(V,)`` the identity of each view's photo.
        face_px: ``(V,)`` the face's size in the rendered photo.
        lost: views whose face the detector missed.
    """

    logits: np.ndarray
    features: np.ndarray | None
    targets: np.ndarray
    face_px: np.ndarray
    lost: int = 0


@dataclass
class RealStrangers:
    """Model outputs of photos of people it does not know (``facecls calibrate --strangers``):
    thresholds are set on them instead of on pseudo-strangers.

    Attributes:
        logits: ``(S, C)``; ``features``: ``(S, D)`` (``None`` without embeddings).
        people: ``(S,)`` who each photo shows (its folder), so each person counts once.
    """

    logits: np.ndarray
    features: np.ndarray | None
    people: np.ndarray


@dataclass
class Calibration:
    """What calibration learns from a model's training and validation parts.

    Attributes:
        centroids: unit class centroids of the training part, ``(C, D)`` float32 (``None``
            when the training part's embeddings were not computed).
        scale: softmax scale of the nearest-class-mean head (fitted on validation).
        thresholds: per method, the calibrated threshold.
        method: the method ``predict`` uses unless told otherwise.
        acceptance: the acceptance rule's target (the rule in use, or its fallback).
        fpir: the target share of strangers named; ``None`` under the acceptance rule.
        rule: ``fpir`` or ``acceptance`` (also where ``fpir`` fell back, see ``stats``).
        stats: counts and rates of the validation part, for the record.
    """

    centroids: np.ndarray | None
    scale: float | None
    thresholds: dict[str, float]
    method: str = DEFAULT_METHOD
    acceptance: float = DEFAULT_ACCEPTANCE
    stats: dict[str, Any] = field(default_factory=dict)
    # per score (``centroid``, ``margin``): {str(k): threshold} for people enrolled from k photos
    enrolled_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    fpir: float | None = DEFAULT_FPIR
    rule: str = "fpir"
    # per score: the rates at its threshold (named, pseudo-strangers named, per face-size band)
    rates: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the head probability's weight in the ``fused`` score (openset.fused_weight_for)
    fused_weight: float = FUSED_WEIGHT

    def meta(self) -> dict[str, Any]:
        """The ``openset`` entry of a bundle's ``model.json`` (centroids live in safetensors)."""
        entry: dict[str, Any] = {
            "version": CALIBRATION_VERSION,
            "method": self.method,
            "threshold": self.thresholds[self.method],
            "thresholds": self.thresholds,
            "rule": self.rule,
            "fpir": self.fpir,
            "acceptance": self.acceptance,
            "calibration": self.stats,
            "rates": self.rates,
            "fused_weight": self.fused_weight,
        }
        if self.scale is not None:
            entry["ncm_scale"] = self.scale
        if self.enrolled_thresholds:
            entry["enrolled_thresholds"] = self.enrolled_thresholds
        return entry


def _pool(
    val_logits: np.ndarray, val_features: np.ndarray | None, val_targets: np.ndarray,
    views: ScoredViews | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:  # fmt: skip
    """Validation outputs followed by the views': logits, features, targets, is-a-view."""
    if views is None or len(views.targets) == 0:
        return val_logits, val_features, val_targets, np.zeros(len(val_targets), bool)
    features = None
    if val_features is not None and views.features is not None:
        features = np.concatenate([val_features, views.features])
    logits = np.concatenate([val_logits, views.logits])
    targets = np.concatenate([val_targets, views.targets])
    is_view = np.r_[np.zeros(len(val_targets), bool), np.ones(len(views.targets), bool)]
    return logits, features, targets, is_view


def calibrate(
    train_features: np.ndarray | None,
    train_targets: np.ndarray | None,
    val_logits: np.ndarray,
    val_features: np.ndarray | None,
    val_targets: np.ndarray,
    num_classes: int,
    method: str = DEFAULT_METHOD,
    acceptance: float = DEFAULT_ACCEPTANCE,
    fpir: float | None = DEFAULT_FPIR,
    views: ScoredViews | None = None,
    val_face_px: np.ndarray | None = None,
    fused_weight: float = FUSED_WEIGHT,
    strangers: RealStrangers | None = None,
) -> Calibration:
    """Centroids from the training part; thresholds and the NCM scale from the validation part
    and its calibration ``views``.

    Args:
        train_features: the training part's embeddings; ``None`` calibrates the scores of
            logits alone (``msp``, ``energy``).
        fpir: the target share of pseudo-strangers named (``None``: the acceptance rule). A
            part with fewer pseudo-strangers than the target needs (``openset_fpir.needed``)
            falls back to the acceptance rule, and ``stats['fallback']`` says why.
        val_face_px: the size of each validation face in its photo (for the per-band rates).
        strangers: photos of people the model does not know; with them each threshold names
            ``fpir`` of these strangers (each person counted once) instead of pseudo-strangers.

    Raises:
        ValueError: ``strangers`` too few for a threshold at ``fpir``, or given without ``fpir``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown open-set method {method!r}; choose one of {METHODS}")
    logits, features, targets, is_view = _pool(val_logits, val_features, val_targets, views)
    centroids = None
    methods: tuple[str, ...] = ("msp", "energy")
    if train_features is not None and features is not None and train_targets is not None:
        centroids = class_centroids(train_features, train_targets, num_classes)
        methods = METHODS
    if method not in methods:
        raise ValueError(f"the {method} score needs the training part's embeddings")
    predicted = logits.argmax(axis=1)
    correct = predicted == targets
    # the acceptance rule: on the correctly named faces, all of them when fewer than 10
    subset = correct if correct.sum() >= 10 else np.ones_like(correct)
    rule, stats = "acceptance" if fpir is None else "fpir", {}
    if fpir is not None and len(targets) < needed(fpir) and strangers is None:
        rule = "acceptance"
        stats["fallback"] = (
            f"{len(targets)} validation faces and views play pseudo-strangers; a threshold at "
            f"FPIR {fpir:.1%} needs at least {needed(fpir)}: set at acceptance {acceptance:.0%} "
            "instead"
        )
    real_weights = None
    if strangers is not None:
        real_weights = check_strangers(strangers, fpir)
        stats["strangers"] = {
            "photos": int(len(strangers.people)),
            "people": int(len(np.unique(strangers.people))),
        }
    px = np.full(len(targets), np.nan)
    if val_face_px is not None:
        px[: len(val_targets)] = val_face_px
    if views is not None and len(views.targets):
        px[len(val_targets) :] = views.face_px
    thresholds, rates = {}, {}
    clean_correct = correct & ~is_view
    weights = person_weights(targets)  # each validation person plays one stranger
    for m in methods:
        known = scores(m, logits, features, centroids, fused_weight=fused_weight)
        pseudo, chosen = pseudo_stranger_answers(
            m, logits, features, centroids, targets, fused_weight
        )
        real = None
        if real_weights is not None:
            real = scores(m, strangers.logits, strangers.features, centroids,
                          fused_weight=fused_weight)  # fmt: skip
            thresholds[m] = threshold_at_fpir(real, fpir, real_weights)
        elif rule == "fpir":
            thresholds[m] = threshold_at_fpir(pseudo, fpir, weights)
        else:
            thresholds[m] = threshold_at_acceptance(known[subset], acceptance)
        t = thresholds[m]
        rates[m] = {
            "named": named_rate(known[~is_view], correct[~is_view], t),
            "named_views": named_rate(known[is_view], correct[is_view], t) if is_view.any()
            else None,
            "pseudo_strangers_named": stranger_rate(pseudo, t, weights),
            # of the clean validation faces named correctly, the share accepted
            "accepted_of_correct": float(np.mean(known[clean_correct] >= t))
            if clean_correct.any() else 0.0,
            "bands": band_rates(known, correct, pseudo, px, t),
            # the known people taken for each other when one is left out: who sets the tail
            "look_alikes": look_alikes(pseudo, chosen, targets, t, is_view=is_view),
        }  # fmt: skip
        if real is not None:
            rates[m]["strangers_named"] = stranger_rate(real, t, real_weights)
    stats.update(
        validation_images=int(len(val_targets)),
        validation_correct=int(correct[~is_view].sum()),
        views=int(is_view.sum()),
        views_lost=int(views.lost) if views is not None else 0,
        pseudo_strangers=int(len(targets)),
        pseudo_stranger_people=int(len(np.unique(targets))),
        stranger_weighting="person",
        calibrated_on="correct" if subset is correct else "all",
        validation_accuracy=float(correct[~is_view].mean()) if (~is_view).any() else 0.0,
    )
    scale, enrolled = None, {}
    if centroids is not None:
        cos = cosine(features, centroids)
        stats["ncm_validation_accuracy"] = float((cos.argmax(axis=1) == targets)[~is_view].mean())
        scale = fit_scale(cos, targets)
        clean = ~is_view  # a view of an enrolled photo would flatter its centroid
        # the strangers an enrolled person may draw no more of than a trained one
        if real_weights is not None:
            others, own, w = strangers.features, np.full(len(real_weights), -1), real_weights
        else:
            others, own, w = features, targets, weights
        by_rate = few_shot_fpir_thresholds(
            features[clean], targets[clean], centroids,
            {m: thresholds[m] for m in ENROLLED_METHODS}, others, own, w,
        ) if rule == "fpir" else {}  # fmt: skip
        for m in ENROLLED_METHODS:
            if rule == "fpir":
                table = by_rate[m]
            else:  # enrolled people are accepted as often as trained ones
                table = few_shot_thresholds(
                    features[clean], targets[clean], subset[clean],
                    min(max(acceptance, 0.5), 1.0), method=m, centroids=centroids,
                )  # fmt: skip
            enrolled[m] = settled(table, thresholds[m])
        stats["enrolled_rule"] = "stranger_rate" if rule == "fpir" else "acceptance"
    return Calibration(
        centroids, scale, thresholds, method, acceptance, stats, enrolled,
        fpir if rule == "fpir" else None, rule, rates, fused_weight,
    )  # fmt: skip


def require_fpir(fpir: float | None) -> float:
    """``fpir``, which real strangers need (:class:`ValueError` under the acceptance rule)."""
    if fpir is None:
        raise ValueError(
            "--strangers sets each threshold at a share of strangers named (--fpir); "
            "--acceptance is the other rule: give one of them"
        )
    return fpir


def check_strangers(strangers: RealStrangers, fpir: float | None) -> np.ndarray:
    """Each stranger photo's weight (a person counts once), once they can set a threshold.

    Raises:
        ValueError: no target rate, or fewer photos than a threshold at ``fpir`` needs.
    """
    require_fpir(fpir)
    photos = len(strangers.people)
    if photos < needed(fpir):
        raise ValueError(
            f"--strangers: {photos} stranger photos are too few for a threshold at FPIR "
            f"{fpir:.1%}: at least {needed(fpir)} are needed (or a larger --fpir)"
        )
    _, people = np.unique(strangers.people, return_inverse=True)
    return person_weights(people)
