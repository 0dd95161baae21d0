"""Open-set scores: how much a face looks like someone the model knows, to say ``unknown``.

Five scores, each oriented so that higher means "more like a known person":

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
  with 0.21 % of strangers named, where the plain cosine named them 0.857 and 0.933 with 0.70 %;
- ``fused``: ``margin`` plus :data:`FUSED_WEIGHT` times the trained head's softmax probability
  of the chosen identity. The head learned from every training photo what tells its people
  apart; the centroids say how close the face is to them: together they separate known faces
  from strangers better than either (the default of a trained face-backbone model; a model with
  enrolled people, whose head is its centroids, decides by ``margin``).

Calibration. A validation part holds no strangers, so a rejection rate on strangers cannot be
fixed there. The threshold is instead set at a target acceptance rate of known faces: the score
that accepts ``target_acceptance`` (95 % by default) of the validation images the model names
correctly. That fixes the cost to people the model knows; what it buys against strangers is
measured, not assumed (``benchmarks/openset.py`` reports FPIR on LFW people outside training).
Holding out training identities as pseudo-strangers would need a second model per run.

Thresholds are :mod:`facecls.openset_thresholds`, calibration :mod:`facecls.openset_calibration`
and the rates a threshold gives :mod:`facecls.openset_rates`.

Default. ``msp``: on LFW (``benchmarks/openset.py``, docs/inference.md) it gave the highest
detection-and-identification rate at FPIR 1 % of the three with the seed CNNs, and it needs no
embedding. A face-backbone model (FaceNet) decides by ``fused`` (bundles calibrated before it
keep the score they were calibrated with). A model with enrolled identities uses ``margin``
(``centroid`` when its bundle was calibrated before ``margin`` existed), on the cosines of its
nearest-class-mean head.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facecls.catalog import METHODS

DEFAULT_METHOD = "msp"
DEFAULT_ACCEPTANCE = 0.95
# Architectures whose embedding is a face embedding, and the score a trained one decides by. Once
# people are enrolled, everyone is decided by ``margin`` on the centroids (``enrolled_method``):
# either way a model has one operating point for all the people it knows.
FACE_BACKBONES: tuple[str, ...] = ("facenet", "sface")
FACE_METHOD = "fused"
# The scores computed on class centroids (they need the training part's embeddings).
CENTROID_METHODS: tuple[str, ...] = ("centroid", "margin", "fused")
# The runner-up's weight in the ``margin`` score. Chosen on validation data alone: with each
# LFW-8 validation person's own centroid removed (so their photos play strangers), 0.5 named
# the most at a pseudo-stranger rate of 1 % (0.979; 0.957 at 0, 0.976 at 0.6, 0.944 at 1).
MARGIN_WEIGHT = 0.5
# The head's probability's weight in the ``fused`` score. On LFW-8's validation part (each
# person's class and centroid left out, so their photos play strangers) the named rate at 1 %
# of pseudo-strangers is 0.971 at 0 (``margin``), 0.978 at 0.2, 0.981 at 0.3, 0.983 at 0.5
# and 0.981 at 1. A head has seen every validation person, so its part of the pseudo-stranger
# scores is optimistic and a larger weight lets more real strangers through than the target
# (LFW people outside training, 1 % target, thresholds from the clean validation faces, in an
# exploration on the FaceNet probe's embeddings: 0.89 % named at 0.2, 1.06 % at 0.3, 1.62 % at
# 0.5): 0.3 is the largest weight that stayed within half a point of it.
FUSED_WEIGHT = 0.3
# The weight of a model whose last stage was tuned (``--freeze top``): tuning makes the people
# it trained on more distinct from each other, so a head's part of the pseudo-strangers' scores
# is more optimistic still (same exploration, 1 % target: 2.24 % of real strangers named at
# 0.3, 1.57 % at 0.2, 0.96 % at 0.1). It is stored in the bundle (``fused_weight``).
TOP_FUSED_WEIGHT = 0.1


def default_method(architecture: str, has_centroids: bool = True) -> str:
    """The score a model decides by unless told otherwise: :data:`FACE_METHOD` for a face
    backbone with class centroids, else :data:`DEFAULT_METHOD`."""
    face = architecture.split("@")[0].strip().lower() in FACE_BACKBONES
    return FACE_METHOD if face and has_centroids else DEFAULT_METHOD


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
    fused_weight: float = FUSED_WEIGHT,
) -> np.ndarray:
    """The open-set score ``(N,)`` of each image; higher means more like a known person.

    Args:
        method: ``msp``, ``energy``, ``centroid``, ``margin`` or ``fused``.
        logits: classifier logits ``(N, C)``.
        features: embeddings ``(N, D)``; needed by :data:`CENTROID_METHODS`.
        centroids: unit class centroids ``(C', D)``; needed by :data:`CENTROID_METHODS`.
        predicted: the class each image is assigned to (default: the logits' argmax); the
            ``centroid`` score is the cosine to that class's centroid.
        fused_weight: the head probability's weight in ``fused`` (the bundle's
            :func:`fused_weight_of`).
    """
    if method == "msp":
        return softmax(logits).max(axis=1)
    if method == "energy":
        return logsumexp(logits)
    if method in CENTROID_METHODS:
        if features is None or centroids is None:
            raise ValueError(f"the {method} score needs embeddings and class centroids")
        chosen = logits.argmax(axis=1) if predicted is None else predicted
        cos = cosine(features, centroids)
        rows = np.arange(len(chosen))
        own = cos[rows, chosen]
        if method == "centroid":
            return own
        margin = margin_score(own, runner_up(cos, chosen))
        if method == "margin":
            return margin
        return fused_score(margin, softmax(logits)[rows, chosen], fused_weight)
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


def fused_score(
    margin: np.ndarray, probability: np.ndarray, weight: float = FUSED_WEIGHT
) -> np.ndarray:
    """The ``fused`` score: the ``margin`` plus the weighted head probability of the same
    identity."""
    return margin + weight * probability


def fused_weight_of(openset: dict[str, Any]) -> float:
    """The ``fused`` weight a bundle was calibrated with (its ``model.json`` ``openset``
    entry); bundles calibrated before it was stored used :data:`FUSED_WEIGHT`."""
    return float(openset.get("fused_weight", FUSED_WEIGHT))


def fused_weight_for(freeze: str | None) -> float:
    """The ``fused`` weight for a model trained with ``--freeze freeze``."""
    return TOP_FUSED_WEIGHT if freeze == "top" else FUSED_WEIGHT
