"""The verify threshold: set at training time from pairs of validation faces of different people.

On every pair of validation-part embeddings, the lowest cosine similarity that accepts at most
``far`` (1 % by default) of the pairs of different people; stored as the ``verify`` entry of the
bundle's ``model.json`` and used by ``facecls verify``, ``search`` and the service.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facecls.openset import l2_normalize

DEFAULT_FAR = 0.01
# Pairs of different people drawn at most, so calibration stays fast on big validation parts.
MAX_IMPOSTOR_PAIRS = 2_000_000
# Fewer validation pairs of different people than this: the training part's join them (the
# 1 % tail of 1,000 pairs is 10 pairs).
MIN_IMPOSTOR_PAIRS = 1_000


def pair_similarities(vectors: np.ndarray, targets: np.ndarray, seed: int = 0):
    """Cosine similarities of every pair of unit ``vectors``: ``(same-person, different)``.

    Different-person pairs beyond :data:`MAX_IMPOSTOR_PAIRS` are sampled (fixed seed).
    """
    vectors = l2_normalize(np.asarray(vectors, dtype=np.float64))
    targets = np.asarray(targets)
    i, j = np.triu_indices(len(targets), k=1)
    same = targets[i] == targets[j]
    diff_i, diff_j = i[~same], j[~same]
    if len(diff_i) > MAX_IMPOSTOR_PAIRS:
        pick = np.random.default_rng(seed).choice(len(diff_i), MAX_IMPOSTOR_PAIRS, replace=False)
        diff_i, diff_j = diff_i[pick], diff_j[pick]
    genuine = np.einsum("nd,nd->n", vectors[i[same]], vectors[j[same]])
    impostor = np.einsum("nd,nd->n", vectors[diff_i], vectors[diff_j])
    return genuine, impostor


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The lowest similarity that accepts at most ``far`` of the ``impostor`` pairs (``>=``)."""
    if not 0.0 <= far < 1.0:
        raise ValueError(f"the false-accept rate must be in [0, 1), got {far}")
    ranked = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    allowed = int(np.floor(far * len(ranked)))  # impostor pairs that may be accepted
    return float(np.nextafter(ranked[allowed], np.inf))


def calibrate_verification(
    vectors: np.ndarray,
    targets: np.ndarray,
    far: float = DEFAULT_FAR,
    train_vectors: np.ndarray | None = None,
    train_targets: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``verify`` entry of ``model.json`` from validation embeddings.

    The FAR threshold needs only pairs of different people (the impostor distribution): a
    validation part with one photo per person has none of the same person, and still sets it.
    Where the validation part has fewer than :data:`MIN_IMPOSTOR_PAIRS` such pairs, pairs of
    the training part's different people (``train_vectors``) join them. The true-accept rate is
    measured where same-person validation pairs exist. With no pair of different people at all
    the entry holds no threshold, only ``missing``: why (``facecls verify`` says it).
    """
    genuine, impostor = pair_similarities(vectors, targets)
    part = "validation"
    if len(impostor) < MIN_IMPOSTOR_PAIRS and train_vectors is not None and len(train_vectors):
        _, more = pair_similarities(train_vectors, np.asarray(train_targets))
        if len(more):
            impostor = np.concatenate([impostor, more])
            part = "validation and training parts"
    if len(impostor) == 0:
        return {
            "far": far,
            "missing": "no pair of photos of different people in the validation part (one "
            "person, or no validation part); give --threshold, or retrain with more people",
        }
    threshold = threshold_at_far(impostor, far)
    return {
        "threshold": threshold,
        "far": far,
        "similarity": "cosine of L2-normalised embeddings",
        "calibration": {
            "part": part,
            "genuine_pairs": int(len(genuine)),
            "impostor_pairs": int(len(impostor)),
            "false_accept_rate": float(np.mean(impostor >= threshold)),
            # unmeasured without a same-person pair (one validation photo per person)
            "true_accept_rate": float(np.mean(genuine >= threshold)) if len(genuine) else None,
        },
    }
