"""Open-set recognition: say ``unknown`` for faces of people the model does not know.

Four scores, each oriented so that higher means "more like a known person":

- ``msp``: the maximum softmax probability (Hendrycks & Gimpel, 2017);
- ``energy``: ``logsumexp`` of the logits, the negative free energy (Liu et al., 2020);
- ``centroid``: the cosine similarity between the face's embedding (see ``embedding.py``) and
  the centroid of the identity it is assigned to; centroids are the means of the L2-normalised
  training-part embeddings, so this is also the score of the nearest-class-mean head that
  enrolled identities use;
- ``margin``: that cosine minus :data:`MARGIN_WEIGHT` times the cosine to the runner-up
  centroid (the nearest other identity; Lowe's ratio test in difference form). A stranger tends
  to sit about as close to several people as to the nearest; someone known stands out from the
  rest. The score of models with enrolled people: on LFW (``benchmarks/openset.py``, FaceNet
  probe), at its calibrated thresholds, it named enrolled people 0.884 and trained people 0.912
  with 0.21 % of strangers named, where the plain cosine named them 0.857 and 0.933 with 0.70 %.

Calibration. A validation part holds no strangers, so a rejection rate on strangers cannot be
fixed there. The threshold is instead set at a target acceptance rate of known faces: the score
that accepts ``target_acceptance`` (95 % by default) of the validation images the model names
correctly. That fixes the cost to people the model knows; what it buys against strangers is
measured, not assumed (``benchmarks/openset.py`` reports FPIR on LFW people outside training).
Holding out training identities as pseudo-strangers would need a second model per run.

Default. ``msp``: on LFW (``benchmarks/openset.py``, docs/inference.md) it gave the highest
detection-and-identification rate at FPIR 1 % of the three with the seed CNNs, and it needs no
embedding. A model with enrolled identities uses ``margin`` (``centroid`` when its bundle was
calibrated before ``margin`` existed), on the cosines of its nearest-class-mean head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facecls.catalog import METHODS

DEFAULT_METHOD = "msp"
DEFAULT_ACCEPTANCE = 0.95
# The runner-up's weight in the ``margin`` score. Chosen on validation data alone: with each
# LFW-8 validation person's own centroid removed (so their photos play strangers), 0.5 named
# the most at a pseudo-stranger rate of 1 % (0.979; 0.957 at 0, 0.976 at 0.6, 0.944 at 1).
MARGIN_WEIGHT = 0.5
# Scales tried when fitting the nearest-class-mean softmax temperature (cosine x scale).
_SCALES = np.geomspace(1.0, 200.0, 80)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``(N, C)``, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log(sum(exp(logits)))`` ``(N,)``, stable."""
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def class_centroids(features: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit-length mean of each class's unit-length embeddings, ``(num_classes, D)`` float32.

    A class without any image gets a zero row (cosine 0 to everything).
    """
    unit = l2_normalize(features.astype(np.float64))
    sums = np.zeros((num_classes, unit.shape[1]))
    np.add.at(sums, targets, unit)
    return l2_normalize(sums).astype(np.float32)


def cosine(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cosine similarity of each embedding to each centroid, ``(N, C)``."""
    return l2_normalize(features.astype(np.float32)) @ centroids.T


def scores(
    method: str,
    logits: np.ndarray,
    features: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
) -> np.ndarray:
    """The open-set score ``(N,)`` of each image; higher means more like a known person.

    Args:
        method: ``msp``, ``energy``, ``centroid`` or ``margin``.
        logits: classifier logits ``(N, C)``.
        features: embeddings ``(N, D)``; needed by ``centroid`` and ``margin``.
        centroids: unit class centroids ``(C', D)``; needed by ``centroid`` and ``margin``.
        predicted: the class each image is assigned to (default: the logits' argmax); the
            ``centroid`` score is the cosine to that class's centroid.
    """
    if method == "msp":
        return softmax(logits).max(axis=1)
    if method == "energy":
        return logsumexp(logits)
    if method in ("centroid", "margin"):
        if features is None or centroids is None:
            raise ValueError(f"the {method} score needs embeddings and class centroids")
        chosen = logits.argmax(axis=1) if predicted is None else predicted
        cos = cosine(features, centroids)
        rows = np.arange(len(chosen))
        own = cos[rows, chosen]
        if method == "centroid":
            return own
        return margin_score(own, runner_up(cos, chosen))
    raise ValueError(f"unknown open-set method {method!r}; choose one of {METHODS}")


def runner_up(cos: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The highest cosine ``(N,)`` of each row of ``cos`` outside its ``chosen`` column (0 for a
    single identity: no runner-up)."""
    if cos.shape[1] < 2:
        return np.zeros(len(cos), dtype=cos.dtype)
    others = cos.copy()
    others[np.arange(len(chosen)), chosen] = -np.inf
    return others.max(axis=1)


def margin_score(own: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The ``margin`` score: the chosen identity's cosine minus the weighted runner-up's."""
    return own - MARGIN_WEIGHT * second


def threshold_at_acceptance(
    known_scores: np.ndarray, acceptance: float, weights: np.ndarray | None = None
) -> float:
    """The largest threshold that accepts (score >= threshold) at least ``acceptance`` of scores
    (of their total ``weights`` when given: each score counts by its weight)."""
    if not 0.0 < acceptance <= 1.0:
        raise ValueError(f"acceptance must be in (0, 1], got {acceptance}")
    if len(known_scores) == 0:
        raise ValueError("no scores to calibrate a threshold on")
    order = np.argsort(known_scores, kind="stable")
    ordered = np.asarray(known_scores)[order]
    if weights is None:
        # Rejecting the floor((1 - acceptance) * n) lowest scores keeps at least acceptance.
        return float(ordered[int(np.floor((1.0 - acceptance) * len(ordered) + 1e-9))])
    share = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    share /= share[-1]
    # the lowest scores whose weight together stays within 1 - acceptance are rejected
    rejected = int(np.searchsorted(share, 1.0 - acceptance + 1e-9, side="right"))
    return float(ordered[min(rejected, len(ordered) - 1)])


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


# Photos per person an enrolled centroid is simulated from (``few_shot_thresholds``).
SHOTS: tuple[int, ...] = (1, 2, 3, 5, 10)
# The scores a model with enrolled people can decide by (its nearest-class-mean head's).
ENROLLED_METHODS: tuple[str, ...] = ("centroid", "margin")


def few_shot_thresholds(
    features: np.ndarray,
    targets: np.ndarray,
    probes: np.ndarray | None = None,
    acceptance: float = DEFAULT_ACCEPTANCE,
    shots: tuple[int, ...] = SHOTS,
    draws: int = 5,
    seed: int = 0,
    method: str = "centroid",
    centroids: np.ndarray | None = None,
) -> dict[str, float]:
    """``centroid`` (or ``margin``) thresholds for identities enrolled from ``k`` photos, per ``k``.

    A centroid of a few photos is noisier than one of a whole training part, so the person's
    other photos sit at a lower cosine to it; one threshold for both would reject enrolled
    people more often than trained ones. Enrollment is simulated on the validation part (photos
    the model never trained on, as enrolled photos are): for each person, ``k`` photos make a
    centroid, and the cosines of the person's other photos to it set the threshold that accepts
    ``acceptance`` of them, as :func:`calibrate` sets the trained one. Every person counts
    equally (their photos' weights sum to one per draw): only people with more than ``k``
    validation photos take part, and the few with dozens of similar photos (LFW's politicians)
    would otherwise set the threshold for everyone (on LFW-8's validation part, the FaceNet
    probe's 3-photo cosine threshold moved from 0.671 to 0.667). ``probes`` (a boolean
    mask) limits the photos scored to those the trained threshold is set on (the correctly
    named ones), so both thresholds answer the same question. ``k`` with fewer than 10 scored
    photos is left out.

    ``margin`` needs the trained ``centroids`` (``targets`` index them): a probe's runner-up is
    its nearest trained centroid other than its own person's (whom the simulated centroid
    stands in for), and only probes the simulated centroid would name (above that runner-up)
    set the threshold, as the trained one is set on correctly named images.

    Returns:
        ``{str(k): threshold}`` (string keys: it is stored in JSON).
    """
    if method not in ENROLLED_METHODS:
        raise ValueError(f"enrolled people are decided by {ENROLLED_METHODS}, not {method!r}")
    if method == "margin" and centroids is None:
        raise ValueError("the margin thresholds need the trained centroids")
    rng = np.random.default_rng(seed)
    unit = l2_normalize(np.asarray(features, dtype=np.float64))
    targets = np.asarray(targets)
    scored = np.ones(len(targets), bool) if probes is None else np.asarray(probes, bool)
    second = None
    if method == "margin":
        second = runner_up(unit @ np.asarray(centroids, dtype=np.float64).T, targets)
    table: dict[str, float] = {}
    for k in shots:
        accepted: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        for c in np.unique(targets):
            members = np.flatnonzero(targets == c)
            if len(members) < k + 1:
                continue
            for _ in range(draws):
                order = rng.permutation(members)
                shot = l2_normalize(unit[order[:k]].sum(axis=0, keepdims=True))[0]
                rest = order[k:][scored[order[k:]]]
                own = unit[rest] @ shot
                if second is not None:
                    named = own > second[rest]
                    own = margin_score(own[named], second[rest][named])
                if len(own):
                    accepted.append(own)
                    weights.append(np.full(len(own), 1.0 / len(own)))
        scores_k = np.concatenate(accepted) if accepted else np.zeros(0)
        if len(scores_k) >= 10:
            table[str(k)] = threshold_at_acceptance(scores_k, acceptance, np.concatenate(weights))
    return table


def enrolled_method(openset: dict[str, Any]) -> str:
    """The score a model with enrolled people decides by, from its bundle's ``openset`` entry:
    the one ``facecls calibrate --method`` chose, else ``margin`` where calibration set its
    thresholds (bundles calibrated before it: ``centroid``)."""
    chosen = openset.get("method")
    if chosen in ENROLLED_METHODS:
        return str(chosen)
    return "margin" if "margin" in openset.get("thresholds", {}) else "centroid"


def enrolled_table(openset: dict[str, Any], method: str) -> dict[str, float]:
    """The ``{str(k): threshold}`` table of ``method`` in a bundle's ``openset`` entry
    (``model.json``); bundles calibrated before ``margin`` hold one flat ``centroid`` table."""
    stored = openset.get("enrolled_thresholds") or {}
    if stored and all(str(key).isdigit() for key in stored):
        return dict(stored) if method == "centroid" else {}
    return dict(stored.get(method, {}))


def shot_threshold(table: dict[str, float], photos: int) -> float | None:
    """The threshold of ``table`` (:func:`few_shot_thresholds`) for an identity enrolled from
    ``photos`` photos: that of the largest simulated ``k`` not above it (the smallest ``k``
    when it is below all); ``None`` for an empty table."""
    if not table:
        return None
    ks = sorted(int(k) for k in table)
    fitting = [k for k in ks if k <= photos]
    return float(table[str(fitting[-1] if fitting else ks[0])])
