"""How well a clustering of faces matches the true identities: pairwise and BCubed scores.

An unclustered face (label ``-1``) counts as a cluster of its own: it is never wrongly put with
anyone (precision) and misses every other photo of its person (recall).

- Pairwise: over all pairs of faces, precision = pairs put together that are the same person /
  pairs put together; recall = pairs of the same person put together / pairs of the same
  person (scikit-learn's ``pair_confusion_matrix`` is the oracle in the tests). Large clusters
  weigh quadratically.
- BCubed (Bagga & Baldwin 1998; Amigó et al. 2009): per face, precision = share of its cluster
  that is its person, recall = share of its person that is in its cluster; averaged over faces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse


@dataclass(frozen=True)
class ClusterScores:
    """Scores of one clustering against the truth (see the module notes)."""

    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    clusters: int
    true_people: int
    unclustered: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _f(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _singletons(labels: np.ndarray) -> np.ndarray:
    """``labels`` with each ``-1`` replaced by a label of its own."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    lonely = labels < 0
    start = labels.max() + 1 if (~lonely).any() else 0
    labels[lonely] = start + np.arange(lonely.sum())
    return labels


def cluster_scores(truth: np.ndarray, labels: np.ndarray) -> ClusterScores:
    """Pairwise and BCubed scores of ``labels`` (``-1`` = unclustered) against ``truth``."""
    truth = np.unique(np.asarray(truth), return_inverse=True)[1].ravel()
    labels = np.asarray(labels, dtype=np.int64)
    if truth.shape != labels.shape:
        raise ValueError(f"{len(truth)} true identities for {len(labels)} cluster labels")
    predicted = np.unique(_singletons(labels), return_inverse=True)[1].ravel()
    n = len(truth)
    ones = np.ones(n, dtype=np.int64)
    # people x clusters; the conversion to CSR and back sums the duplicate entries
    table = sparse.coo_matrix((ones, (truth, predicted))).tocsr().tocoo()
    cells = table.data.astype(np.float64)
    person = np.bincount(truth).astype(np.float64)
    cluster = np.bincount(predicted).astype(np.float64)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1)).sum() / 2)

    together, same = pairs(cluster), pairs(person)
    both = pairs(cells)
    p_precision = both / together if together else 1.0
    p_recall = both / same if same else 1.0
    # BCubed: a cell of c faces gives each of them precision c / |cluster|, recall c / |person|.
    b_precision = float((cells * cells / cluster[table.col]).sum() / n) if n else 1.0
    b_recall = float((cells * cells / person[table.row]).sum() / n) if n else 1.0
    return ClusterScores(
        pairwise_precision=p_precision,
        pairwise_recall=p_recall,
        pairwise_f=_f(p_precision, p_recall),
        bcubed_precision=b_precision,
        bcubed_recall=b_recall,
        bcubed_f=_f(b_precision, b_recall),
        clusters=int(np.unique(labels[labels >= 0]).size),
        true_people=int(person.size),
        unclustered=float(np.mean(labels < 0)) if n else 0.0,
    )
