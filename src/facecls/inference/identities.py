"""Which identities a face is nearest: the heads behind :meth:`FaceModel.decide`.

An enrolled model names a face by its nearest identity centroid (cosine); a trained one by its
classifier. Up to :data:`INDEXED_FROM` identities every cosine is computed and the probabilities
are a softmax over all of them. Past it (an access-control system enrolling 10^5 people), the
centroids are searched through the vector index (:class:`facecls.vector_index.VectorIndex`:
approximate above its ``exact_up_to``) and the probabilities are a softmax over the
:data:`NORMALISED_OVER` nearest identities only; the name, its cosine and the runner-up's (the
``margin`` score) come from the same search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecls.openset import (
    FUSED_WEIGHT,
    cosine,
    l2_normalize,
    margin_score,
    runner_up,
    scores,
    softmax,
)
from facecls.vector_index import IndexSettings, VectorIndex

INDEXED_FROM = IndexSettings().exact_up_to  # identities from which the index is searched
NORMALISED_OVER = 64  # identities the probabilities are normalised over when it is


@dataclass
class Nearest:
    """Per face: the chosen identity, its open-set score, and the ``top_k`` identities with
    their probabilities (``order``/``probs``, most likely first)."""

    chosen: np.ndarray  # (N,) int
    score: np.ndarray  # (N,)
    order: np.ndarray  # (N, k) int
    probs: np.ndarray  # (N, k)


def _top(probs: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-probs, axis=1, kind="stable")[:, : min(top_k, probs.shape[1])]
    return order, np.take_along_axis(probs, order, 1)


def classifier_head(
    logits: np.ndarray, features: np.ndarray, centroids: np.ndarray | None, method: str,
    top_k: int, fused_weight: float = FUSED_WEIGHT,
) -> Nearest:  # fmt: skip
    """A trained model's answer: softmax over its classes, the open-set score of ``method``."""
    probs = softmax(logits)
    chosen = probs.argmax(axis=1)
    score = scores(method, logits, features, centroids, chosen, fused_weight)
    return Nearest(chosen, score, *_top(probs, top_k))


def centroid_index(centroids: np.ndarray, settings: IndexSettings | None = None) -> VectorIndex:
    """The vector index of identity centroids ``(C, D)`` (ids: their class numbers)."""
    unit = l2_normalize(np.asarray(centroids, np.float64)).astype(np.float32)
    return VectorIndex(unit.shape[1], settings).add(unit, np.arange(len(unit)))


def centroid_head(
    features: np.ndarray, centroids: np.ndarray, scale: float, margin: bool, top_k: int,
    index: VectorIndex | None = None,
) -> Nearest:  # fmt: skip
    """An enrolled model's answer: the nearest centroids, a softmax of ``scale`` x cosine.

    Args:
        margin: score by ``margin`` (own cosine minus the weighted runner-up's), else by the
            own cosine (``centroid``).
        index: the centroids' index (:func:`centroid_index`): searched instead of computing
            every cosine (the module docstring); ``None`` computes them all.
    """
    if index is None:
        cos = cosine(features, centroids)
        chosen = cos.argmax(axis=1)
        own = cos[np.arange(len(chosen)), chosen]
        score = margin_score(own, runner_up(cos, chosen)) if margin else own
        return Nearest(chosen, score, *_top(softmax(scale * cos), top_k))
    unit = l2_normalize(np.asarray(features, np.float64)).astype(np.float32)
    near_cos, near = index.search(unit, min(len(index), max(top_k, NORMALISED_OVER)))
    own, chosen = near_cos[:, 0], near[:, 0]
    second = near_cos[:, 1] if near_cos.shape[1] > 1 else np.zeros_like(own)
    score = margin_score(own, second) if margin else own
    probs = softmax(scale * near_cos)  # index answers are best first: already in order
    k = min(top_k, near.shape[1])
    return Nearest(chosen, score, near[:, :k], probs[:, :k])
