"""Operating points by the stranger rate: thresholds at a target FPIR on pseudo-strangers.

A validation part holds no strangers, but each of its people can play one: with their own
identity left out (their class's logit, or their centroid), a photo's best remaining score is
what a stranger who looks most like someone known would get. The threshold is set where
``fpir`` (1 % by default) of these pseudo-stranger scores would be accepted, and the rate of
known faces it names is reported beside it. For scores on centroids of a frozen backbone the
pseudo-strangers are exact: the other people's centroids never saw the left-out photos. A
trained head has seen every identity, so for ``msp`` and ``energy`` they are an approximation
(``benchmarks/openset.py`` measures the real FPIR on LFW people outside training).

Each validation person counts once (:func:`person_weights`): a stranger rate is a rate over the
people a model may meet, and a validation part holds as many photos of a person as the user took,
so unweighted the few people with hundreds of photos set the tail (on LFW-8 the look-alike
brothers George W. and Jeb Bush held most of SFace's top 1 %: 65 of the 586 validation photos
are George W. Bush's, where the median person has 2).

The tail of a distribution needs samples: at fewer than :data:`MIN_TAIL` / ``fpir``
pseudo-strangers (500 at 1 %) the estimate is too rough, and calibration falls back to the
acceptance rule (:func:`facecls.openset_thresholds.threshold_at_acceptance`), saying so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facecls.openset import (
    CENTROID_METHODS,
    FUSED_WEIGHT,
    cosine,
    fused_score,
    logsumexp,
    margin_score,
    softmax,
)

DEFAULT_FPIR = 0.01
MAX_FPIR = 0.5
# Pseudo-strangers expected above the threshold at the target rate, at the least.
MIN_TAIL = 5


class FpirError(ValueError):
    """A target false-positive identification rate outside (0, 0.5]."""


def check_fpir(fpir: float) -> float:
    """``fpir`` when it is a rate in (0, :data:`MAX_FPIR`], else :class:`FpirError`."""
    if not isinstance(fpir, (int, float)) or not 0.0 < float(fpir) <= MAX_FPIR:
        raise FpirError(
            f"--fpir must be a rate in (0, {MAX_FPIR}] (the share of strangers named; 0.01 is "
            f"1 %), not {fpir}"
        )
    return float(fpir)


def needed(fpir: float) -> int:
    """Pseudo-strangers needed to set a threshold at ``fpir``."""
    return int(np.ceil(MIN_TAIL / fpir - 1e-9))


def pseudo_stranger_answers(
    method: str,
    logits: np.ndarray,
    features: np.ndarray | None,
    centroids: np.ndarray | None,
    targets: np.ndarray,
    fused_weight: float = FUSED_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's ``method`` score ``(N,)`` with its own identity (``targets``) left out, and
    the identity ``(N,)`` it would then be named as.

    ``msp``/``energy``: the softmax or ``logsumexp`` of the logits without the own class's;
    ``centroid``/``margin``: the cosines to every centroid but the own one; ``fused``: both, for
    the identity the remaining logits choose (as :func:`facecls.openset.scores` does).
    """
    rows = np.arange(len(targets))
    if method in ("msp", "energy", "fused"):
        rest = np.asarray(logits, dtype=np.float64).copy()
        rest[rows, targets] = -np.inf
        if method == "energy":
            return logsumexp(rest), rest.argmax(axis=1)
        if method == "msp":
            probs = softmax(rest)
            return probs.max(axis=1), probs.argmax(axis=1)
    elif method not in CENTROID_METHODS:
        raise ValueError(f"unknown open-set method {method!r}")
    if features is None or centroids is None:
        raise ValueError(f"the {method} score needs embeddings and class centroids")
    cos = cosine(features, centroids).astype(np.float64)
    cos[rows, targets] = -np.inf
    probs = softmax(rest) if method == "fused" else None
    chosen = cos.argmax(axis=1) if probs is None else probs.argmax(axis=1)
    best = cos[rows, chosen]
    if method == "centroid":
        return best, chosen
    cos[rows, chosen] = -np.inf
    second = cos.max(axis=1) if cos.shape[1] > 2 else np.zeros(len(rows))
    margin = margin_score(best, np.where(np.isfinite(second), second, 0.0))
    if probs is None:
        return margin, chosen
    return fused_score(margin, probs[rows, chosen], fused_weight), chosen


# Look-alike pairs kept in the record of a calibration (the strongest first).
LOOK_ALIKES = 5


def look_alikes(
    scores_: np.ndarray,
    chosen: np.ndarray,
    targets: np.ndarray,
    threshold: float,
    limit: int = LOOK_ALIKES,
    is_view: np.ndarray | None = None,
) -> list[dict[str, float | int]]:
    """The pairs of known people that pseudo-strangers above ``threshold`` come from: each
    ``person`` whose photos, with their own identity left out, are named ``as`` another, with
    the highest such score and how many of their photos and of the photos' calibration views
    (``is_view``) are named so; the strongest ``limit`` pairs. These set the threshold
    (siblings, look-alikes), and a user learns which of their people the model may take for
    each other when one of them is not known."""
    scores_ = np.asarray(scores_, dtype=np.float64)
    views = np.zeros(len(scores_), bool) if is_view is None else np.asarray(is_view, bool)
    above = np.flatnonzero(scores_ >= threshold)
    pairs: dict[tuple[int, int], list[int]] = {}
    for i in above[np.argsort(-scores_[above], kind="stable")]:
        pairs.setdefault((int(targets[i]), int(chosen[i])), []).append(int(i))
    ranked = sorted(pairs.items(), key=lambda kv: -scores_[kv[1][0]])[:limit]
    return [
        {"person": person, "as": other, "score": float(scores_[rows[0]]),
         "photos": int((~views[rows]).sum()), "views": int(views[rows].sum())}
        for (person, other), rows in ranked
    ]  # fmt: skip


def by_name(pairs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """:func:`look_alikes` pairs with the people's names for their indices (the index, as text,
    where ``names`` has none)."""

    def name(i: int) -> str:
        return names[i] if 0 <= i < len(names) else str(i)

    return [dict(p, person=name(p["person"]), **{"as": name(p["as"])}) for p in pairs]


def person_weights(targets: np.ndarray) -> np.ndarray:
    """A weight per pseudo-stranger so that each identity in ``targets`` weighs 1 in all."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return np.zeros(0)
    counts = np.bincount(targets)
    return 1.0 / counts[targets]


def threshold_at_fpir(
    stranger_scores: np.ndarray, fpir: float, weights: np.ndarray | None = None
) -> float:
    """The lowest threshold that accepts (score >= it) at most ``fpir`` of ``stranger_scores``,
    each counted with its ``weights`` (equal by default)."""
    scores_ = np.asarray(stranger_scores, dtype=np.float64)
    if len(scores_) == 0:
        raise ValueError("no pseudo-stranger scores to set a threshold on")
    w = np.ones(len(scores_)) if weights is None else np.asarray(weights, dtype=np.float64)
    return threshold_at_share(scores_, w / w.sum(), fpir)


def threshold_at_share(scores: np.ndarray, shares: np.ndarray, rate: float) -> float:
    """The lowest threshold at which the ``shares`` of the ``scores`` accepted (score >= it) add
    up to at most ``rate`` (shares need not sum to one: scores never accepted are left out); the
    lowest score when all of them together stay within it."""
    scores_ = np.asarray(scores, dtype=np.float64)
    if len(scores_) == 0:
        raise ValueError("no scores to set a threshold on")
    order = np.argsort(-scores_, kind="stable")
    ranked = scores_[order]
    share = np.cumsum(np.asarray(shares, dtype=np.float64)[order])
    # strangers that may be accepted: the longest run from the top within the target
    allowed = int(np.searchsorted(share, rate + 1e-9, side="right"))
    if allowed >= len(ranked):
        return float(ranked[-1])
    # Ties with the first stranger refused are refused too: the threshold sits just above it,
    # one float32 step up, as ``predict`` compares float32 scores (a float64 step would round
    # back onto the refused score there and accept it).
    return float(np.nextafter(np.float32(ranked[allowed]), np.float32(np.inf)))


def stranger_rate(
    stranger_scores: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> float:
    """The (``weights``-weighted) share of ``stranger_scores`` accepted at ``threshold``."""
    accepted = np.asarray(stranger_scores) >= threshold
    if len(accepted) == 0:
        return 0.0
    w = np.ones(len(accepted)) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(w[accepted].sum() / w.sum())


def named_rate(scores: np.ndarray, correct: np.ndarray, threshold: float) -> float:
    """Share of known faces named correctly at ``threshold`` (right name and score >= it)."""
    if len(scores) == 0:
        return 0.0
    return float(np.mean(np.asarray(correct, bool) & (np.asarray(scores) >= threshold)))


# Face-size bands (the detected box's longer side, px) the report shows rates for.
FACE_BANDS: tuple[tuple[float, float], ...] = ((0, 60), (60, 100), (100, 160), (160, np.inf))


def band_label(low: float, high: float) -> str:
    """``< 60 px``, ``60-100 px``, ``> 160 px``."""
    if low == 0:
        return f"< {high:g} px"
    return f"> {low:g} px" if not np.isfinite(high) else f"{low:g}-{high:g} px"


def band_rates(
    known_scores: np.ndarray,
    correct: np.ndarray,
    stranger_scores: np.ndarray,
    face_px: np.ndarray,
    threshold: float,
) -> list[dict[str, float | int | str]]:
    """Per face-size band: faces, the share named correctly, pseudo-strangers and the share
    of them answered ``unknown`` at ``threshold`` (faces of unknown size are left out)."""
    px = np.asarray(face_px, dtype=np.float64)
    named = np.asarray(correct, bool) & (np.asarray(known_scores) >= threshold)
    rejected = np.asarray(stranger_scores) < threshold
    rows: list[dict[str, float | int | str]] = []
    for low, high in FACE_BANDS:
        inside = (px >= low) & (px < high)
        if not inside.any():
            continue
        rows.append({
            "band": band_label(low, high), "faces": int(inside.sum()),
            "named": float(named[inside].mean()), "strangers": int(inside.sum()),
            "strangers_unknown": float(rejected[inside].mean()),
        })  # fmt: skip
    return rows
