"""Group faces into people from their embeddings.

Every method works on L2-normalised embeddings and a similarity ``threshold`` (cosine): two faces
less similar than it are never put together by a direct link. Clusters smaller than ``min_size``
are dissolved: those faces stay *unclustered* (label ``-1``) rather than being forced into a
person. Labels are canonical — clusters numbered by size (largest first), ties by their first
face — so the same embeddings always give the same labels.

Methods (``benchmarks/cluster_lfw.py`` measures them on LFW):

- ``agglomerative``: average-linkage agglomerative clustering on the cosine similarity, cut at
  ``threshold``: a cluster is a group whose faces are on average at least ``threshold`` alike,
  so one look-alike link does not chain two people together (:func:`average_linkage`, exact,
  in ``N x D`` memory: scikit-learn's ``AgglomerativeClustering`` needs the ``N²`` distances,
  1.4 GB at 13,233 faces, and restricted to a k-nearest-neighbour graph it is no longer
  average linkage — BCubed F 0.46 on LFW-8's photos where the exact one gives 0.96).
- ``chinese-whispers``: label propagation on the graph of pairs at least ``threshold`` alike
  (Biemann 2006; dlib's ``chinese_whispers``, face_recognition's clustering example), edges
  weighted by similarity, nodes visited in index order: deterministic.
- ``hdbscan``: scikit-learn's HDBSCAN on the Euclidean distance of the unit vectors; a face
  less than ``threshold`` alike to its cluster's centroid is left unclustered.
- ``dbscan``: scikit-learn's DBSCAN, density-connected faces within ``1 - threshold`` cosine
  distance, ``min_size`` faces for a core (Immich's rule, with its 0.5 distance by default).

Faces already named keep their names (:func:`cluster_with_people`): other faces first join the
named person whose centroid they match at the join threshold (a model's calibrated verify
threshold where there is one), the rest are clustered, and a new cluster whose centroid matches a
named person joins that person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from facecls.catalog import CLUSTER_METHODS
from facecls.openset import l2_normalize
from facecls.vector_index import VectorIndex

METHODS = CLUSTER_METHODS
DEFAULT_METHOD = "agglomerative"
# Cosine similarity of the default cut, per method, for FaceNet (CASIA-WebFace) embeddings with
# the box pipeline; chosen on LFW-8's photos (benchmarks/cluster_lfw.py --sweep).
DEFAULT_THRESHOLDS = {"agglomerative": 0.5, "chinese-whispers": 0.5, "hdbscan": 0.5, "dbscan": 0.5}
DEFAULT_NEIGHBORS = 30
# Rows of the similarity matrix computed at once by :func:`average_linkage` (rows x N floats).
_BLOCK = 2048


@dataclass(frozen=True)
class ClusterSettings:
    """How faces are grouped.

    Attributes:
        method: one of :data:`METHODS`.
        threshold: cosine similarity below which faces are not linked; ``None`` takes the
            method's default (:data:`DEFAULT_THRESHOLDS`).
        min_size: clusters with fewer faces stay unclustered (``-1``).
        neighbors: neighbours per face in the k-nearest-neighbour graph of
            ``chinese-whispers``.
    """

    method: str = DEFAULT_METHOD
    threshold: float | None = None
    min_size: int = 2
    neighbors: int = DEFAULT_NEIGHBORS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown clustering method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"clustering threshold {self.threshold} is not a cosine in [-1, 1]")
        if self.min_size < 1:
            raise ValueError(f"clustering min_size {self.min_size} must be at least 1")
        if self.neighbors < 1:
            raise ValueError(f"clustering neighbors {self.neighbors} must be at least 1")

    @property
    def cut(self) -> float:
        """The similarity threshold in use."""
        return DEFAULT_THRESHOLDS[self.method] if self.threshold is None else float(self.threshold)


Graph = tuple[np.ndarray, np.ndarray]  # neighbours (N, k) int64, similarities (N, k) float32


def knn_graph(vectors: np.ndarray, k: int) -> Graph:
    """The k nearest neighbours by cosine of unit ``vectors`` (N, D), the face itself left out,
    from the vector index (FAISS: exact up to its limit, approximate above).

    Returns ``(neighbours, similarities)``: positions in ``vectors`` and cosines, both
    ``(N, min(k, N - 1))``, nearest first (ties: the lower position first).
    """
    n = len(vectors)
    k = max(0, min(k, n - 1))
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = VectorIndex(x.shape[1]).add(x, np.arange(n, dtype=np.int64))
    _, neighbours, similarities = index.knn_graph(k)
    return neighbours, similarities


def canonical_labels(labels: np.ndarray, min_size: int = 1) -> np.ndarray:
    """``labels`` renumbered: clusters of at least ``min_size`` faces numbered 0, 1, … by size
    (largest first, ties by their first face); smaller ones and ``-1`` become ``-1``."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), -1, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    ids, first, inverse, counts = np.unique(
        labels[valid], return_index=True, return_inverse=True, return_counts=True
    )
    first_face = np.flatnonzero(valid)[first]
    kept = counts >= min_size
    order = np.lexsort((first_face, -counts))  # by size, then first face
    order = order[kept[order]]
    rank = np.full(len(ids), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    out[valid] = rank[inverse]
    return out


def cluster_faces(
    vectors: np.ndarray, settings: ClusterSettings | None = None, graph: Graph | None = None
) -> np.ndarray:
    """Cluster labels ``(N,)`` of the faces ``vectors`` (N, D); ``-1`` = unclustered.

    Args:
        vectors: embeddings (normalised here).
        settings: method, threshold, smallest cluster; the defaults when ``None``.
        graph: a k-nearest-neighbour graph of ``vectors`` already built (the library's vector
            index) for ``chinese-whispers``, else :func:`knn_graph` builds one.
    """
    settings = settings or ClusterSettings()
    x = l2_normalize(np.asarray(vectors, dtype=np.float32))
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return canonical_labels(np.zeros(1, dtype=np.int64), settings.min_size)
    cut, method = settings.cut, settings.method
    if method == "agglomerative":
        raw = average_linkage(x, cut)
    elif method == "chinese-whispers":
        raw = chinese_whispers(graph or knn_graph(x, settings.neighbors), cut)
    elif method == "hdbscan":
        raw = _hdbscan(x, cut, settings.min_size)
    else:
        raw = _dbscan(x, cut, settings.min_size)
    return canonical_labels(raw, settings.min_size)


def average_linkage(x: np.ndarray, cut: float) -> np.ndarray:
    """Average-linkage clusters of unit vectors ``x`` (N, D), merged while the best pair of
    clusters is on average at least ``cut`` alike; answers a cluster id per face.

    For unit vectors the average cosine between the faces of two clusters is the dot product
    of their mean vectors, so a cluster is its sum and size. Average linkage is reducible, so
    merging every pair of clusters that are each other's nearest (reciprocal nearest
    neighbours) in one round gives the same clusters as merging one pair at a time; after a
    round only the merged clusters and those whose nearest was merged look again. Memory is
    ``N x D`` plus one block of similarities, not the ``N²`` distances of scipy's and
    scikit-learn's average linkage (the tests check both agree).
    """
    n = len(x)
    sums = x.astype(np.float64)
    sizes = np.ones(n)
    live = np.ones(n, dtype=bool)
    parent = np.arange(n)
    means = np.ascontiguousarray(x, dtype=np.float32)
    nearest, alike = _nearest(means, np.arange(n), live)
    while True:
        a = np.flatnonzero(live)
        b = nearest[a]
        pair = (nearest[b] == a) & (a < b) & (alike[a] >= cut)
        if not pair.any():
            break
        keep, gone = a[pair], b[pair]
        sums[keep] += sums[gone]
        sizes[keep] += sizes[gone]
        live[gone] = False
        parent[gone] = keep
        means[keep] = sums[keep] / sizes[keep][:, None]
        means[gone] = 0.0
        merged = np.zeros(n, dtype=bool)
        merged[keep] = merged[gone] = True
        stale = np.flatnonzero(live & (merged | merged[nearest]))
        nearest[stale], alike[stale] = _nearest(means, stale, live)
    while not np.array_equal(parent[parent], parent):  # each face to its cluster's survivor
        parent = parent[parent]
    return parent


def _nearest(
    means: np.ndarray, rows: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each of the live ``rows``, the other live cluster whose mean is most alike and that
    similarity (ties: the lower index)."""
    columns = np.flatnonzero(live)  # sorted: argmax's first hit is the lowest index
    others = np.ascontiguousarray(means[columns])
    own = np.searchsorted(columns, rows)  # each row's own column
    best = np.zeros(len(rows), dtype=np.int64)
    alike = np.full(len(rows), -np.inf)
    for start in range(0, len(rows), _BLOCK):
        part = slice(start, start + _BLOCK)
        sims = means[rows[part]] @ others.T  # (block, live)
        count = len(sims)
        sims[np.arange(count), own[part]] = -np.inf
        pick = sims.argmax(axis=1)
        best[part] = columns[pick]
        alike[part] = sims[np.arange(count), pick]
    return best, alike


def _adjacency(graph: Graph, n: int, symmetric: bool, weights: bool = False) -> sparse.csr_matrix:
    neighbours, similarities = graph
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    data = similarities.ravel() if weights else np.ones(rows.size, dtype=np.float32)
    matrix = sparse.csr_matrix((data, (rows, neighbours.ravel())), shape=(n, n))
    return matrix.maximum(matrix.T).tocsr() if symmetric else matrix


def chinese_whispers(graph: Graph, cut: float, iterations: int = 30) -> np.ndarray:
    """Chinese whispers on the edges of ``graph`` at least ``cut`` alike, weighted by similarity.

    Each face starts as its own label; in each sweep, faces in index order take the label with
    the largest summed edge weight among their neighbours (ties: the smaller label), until a
    sweep changes nothing or ``iterations`` sweeps are done.
    """
    neighbours, similarities = graph
    n = len(neighbours)
    adjacency = _adjacency(
        (neighbours, np.where(similarities >= cut, similarities, 0)), n, True, True
    )
    adjacency.eliminate_zeros()
    indptr, indices, data = adjacency.indptr, adjacency.indices.tolist(), adjacency.data.tolist()
    labels = list(range(n))
    for _ in range(iterations):
        changed = 0
        for node in range(n):
            start, stop = indptr[node], indptr[node + 1]
            if start == stop:
                continue
            votes: dict[int, float] = {}
            for j in range(start, stop):
                label = labels[indices[j]]
                votes[label] = votes.get(label, 0.0) + data[j]
            best = min(votes, key=lambda lab: (-votes[lab], lab))
            if best != labels[node]:
                labels[node] = best
                changed += 1
        if changed == 0:
            break
    return np.asarray(labels, dtype=np.int64)


def _hdbscan(x: np.ndarray, cut: float, min_size: int) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    # cluster_selection_epsilon would hold clusters together down to the cut, but it raises a
    # TypeError with NumPy 2 (scikit-learn issue #33219); the cut is applied afterwards instead:
    # a face less alike than it to its cluster's centroid is left unclustered.
    model = HDBSCAN(min_cluster_size=max(2, min_size), min_samples=1, copy=True)
    labels = canonical_labels(model.fit_predict(x.astype(np.float64)))
    if labels.max() >= 0:
        centres = centroids(x, labels, int(labels.max()) + 1)
        inside = labels >= 0
        alike = np.einsum("nd,nd->n", x[inside], centres[labels[inside]])
        labels[np.flatnonzero(inside)[alike < cut]] = -1
    return labels


def _dbscan(x: np.ndarray, cut: float, min_size: int) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=1.0 - cut, min_samples=min_size, metric="cosine").fit_predict(x)


def centroids(vectors: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Unit-length mean of each label's unit vectors ``(count, D)``; labels ``-1`` ignored."""
    x = l2_normalize(np.asarray(vectors, dtype=np.float32))
    sums = np.zeros((count, x.shape[1]), dtype=np.float64)
    valid = labels >= 0
    np.add.at(sums, labels[valid], x[valid])
    return l2_normalize(sums).astype(np.float32)


def cluster_with_people(
    vectors: np.ndarray,
    people: np.ndarray,
    join_threshold: float,
    settings: ClusterSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster faces around the people already fixed by a person.

    Args:
        vectors: embeddings ``(N, D)``.
        people: ``(N,)`` index of the fixed person of each face (0, 1, …) or ``-1`` for a
            face free to move; fixed faces never move.
        join_threshold: cosine between a free face (or a new cluster's centroid) and a fixed
            person's centroid at or above which it joins that person.
        settings: how the remaining faces are clustered.

    Returns:
        ``(joined, clusters)``: for each face the fixed person it belongs to or joins (``-1``
        when none), and for the faces that joined none the label of its new cluster (``-1``
        when unclustered; canonical numbering).
    """
    people = np.asarray(people, dtype=np.int64)
    x = l2_normalize(np.asarray(vectors, dtype=np.float32))
    joined = people.copy()
    count = int(people.max()) + 1 if len(people) and people.max() >= 0 else 0
    free = np.flatnonzero(people < 0)
    if count and len(free):
        sims = x[free] @ centroids(x, people, count).T  # (free, people)
        best = sims.argmax(axis=1)
        hit = sims[np.arange(len(free)), best] >= join_threshold
        joined[free[hit]] = best[hit]
    rest = np.flatnonzero(joined < 0)
    clusters = np.full(len(people), -1, dtype=np.int64)
    clusters[rest] = cluster_faces(x[rest], settings)
    if count and clusters.max() >= 0:
        found = int(clusters.max()) + 1
        sims = centroids(x, clusters, found) @ centroids(x, people, count).T  # (found, people)
        best = sims.argmax(axis=1)
        for label in np.flatnonzero(sims[np.arange(found), best] >= join_threshold):
            members = clusters == label
            joined[members] = best[label]
            clusters[members] = -1
        clusters = canonical_labels(clusters)
    return joined, clusters
