"""Clustering faces into people: the scores against their definitions and scikit-learn, every
method on faces whose people are known by construction, determinism, unclustered outliers, and
named people keeping their faces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics.cluster import pair_confusion_matrix
from sklearn.neighbors import NearestNeighbors

from facecls.library.cluster import (
    METHODS,
    ClusterSettings,
    average_linkage,
    canonical_labels,
    chinese_whispers,
    cluster_faces,
    cluster_with_people,
    knn_graph,
)
from facecls.library.cluster_scores import cluster_scores


def _people(num_people: int, per_person: int, noise: float, seed: int = 0, dim: int = 64):
    """Unit vectors around ``num_people`` random directions (nearly orthogonal in 64-d)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(num_people), per_person)
    x = centres[truth] + rng.normal(scale=noise, size=(len(truth), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(truth))  # people interleaved, not in blocks
    return x[order].astype(np.float32), truth[order]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return cluster_scores(a, b).pairwise_f == 1.0 and cluster_scores(b, a).pairwise_f == 1.0


def test_pairwise_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 12, size=300)
    labels = np.where(rng.random(300) < 0.2, -1, rng.integers(0, 9, size=300))
    scores = cluster_scores(truth, labels)
    own = labels.copy()
    own[own < 0] = 100 + np.arange((own < 0).sum())  # unclustered: a cluster each
    (_, fp), (fn, tp) = pair_confusion_matrix(truth, own) / 2
    assert scores.pairwise_precision == pytest.approx(tp / (tp + fp))
    assert scores.pairwise_recall == pytest.approx(tp / (tp + fn))
    assert scores.unclustered == pytest.approx(np.mean(labels < 0))
    assert scores.clusters == len(set(labels[labels >= 0].tolist()))
    assert scores.true_people == len(set(truth.tolist()))


def test_bcubed_matches_its_definition() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 6, size=80)
    labels = np.where(rng.random(80) < 0.25, -1, rng.integers(0, 5, size=80))
    precision, recall = [], []
    for i in range(80):
        mine = [j for j in range(80) if labels[j] == labels[i] and labels[i] >= 0] or [i]
        person = [j for j in range(80) if truth[j] == truth[i]]
        correct = sum(truth[j] == truth[i] for j in mine)
        precision.append(correct / len(mine))
        recall.append(correct / len(person))
    scores = cluster_scores(truth, labels)
    assert scores.bcubed_precision == pytest.approx(np.mean(precision))
    assert scores.bcubed_recall == pytest.approx(np.mean(recall))
    perfect = cluster_scores(truth, truth)
    assert perfect.bcubed_f == perfect.pairwise_f == 1.0


def test_knn_graph_is_exact() -> None:
    x, _ = _people(10, 12, 0.3)
    neighbours, sims = knn_graph(x, 7)
    oracle = NearestNeighbors(n_neighbors=8, metric="cosine").fit(x)
    distances, indices = oracle.kneighbors(x)
    assert np.allclose(sims, 1 - distances[:, 1:], atol=1e-5)
    assert (neighbours != np.arange(len(x))[:, None]).all()  # never itself
    assert np.allclose(np.einsum("nd,nkd->nk", x, x[neighbours]), sims, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # nearest first


@pytest.mark.parametrize("method", METHODS)
def test_each_method_finds_well_separated_people(method: str) -> None:
    x, truth = _people(12, 10, noise=0.06)
    labels = cluster_faces(x, ClusterSettings(method=method))
    assert _same_partition(truth, labels)
    assert (labels >= 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_clustering_is_deterministic(method: str) -> None:
    x, _ = _people(15, 8, noise=0.12, seed=3)  # noisy enough that choices are made
    first = cluster_faces(x, ClusterSettings(method=method))
    again = cluster_faces(x.copy(), ClusterSettings(method=method))
    assert np.array_equal(first, again)
    assert np.array_equal(first, canonical_labels(first))  # numbered by size


@pytest.mark.parametrize("method", METHODS)
def test_a_face_like_nobody_stays_unclustered(method: str) -> None:
    x, _ = _people(6, 10, noise=0.06, seed=4)
    stranger = np.zeros((1, x.shape[1]), dtype=np.float32)
    stranger[0, 0] = 1.0  # a direction none of the people share (64-d: about orthogonal)
    labels = cluster_faces(np.vstack([x, stranger]), ClusterSettings(method=method))
    assert labels[-1] == -1
    assert (labels[:-1] >= 0).all()


def test_small_clusters_are_dissolved() -> None:
    x, truth = _people(5, 3, noise=0.05, seed=5)
    assert (cluster_faces(x, ClusterSettings(min_size=4)) == -1).all()
    assert _same_partition(truth, cluster_faces(x, ClusterSettings(min_size=3)))


def test_canonical_labels_number_by_size_then_first_face() -> None:
    labels = np.array([7, 3, 3, 9, 7, 7, -1, 9, 5])
    assert canonical_labels(labels).tolist() == [0, 1, 1, 2, 0, 0, -1, 2, 3]
    assert canonical_labels(labels, min_size=2).tolist() == [0, 1, 1, 2, 0, 0, -1, 2, -1]


@pytest.mark.parametrize(("seed", "cut"), [(10, 0.3), (11, 0.5), (12, 0.7)])
def test_average_linkage_is_scipys(seed: int, cut: float) -> None:
    """The reciprocal-nearest-neighbour rounds give scipy's average linkage, cut at the same
    distance, on faces noisy enough that the order of merges matters."""
    x, _ = _people(25, 8, noise=0.15, seed=seed, dim=32)
    distances = np.clip(1 - x.astype(np.float64) @ x.T.astype(np.float64), 0, 2)
    np.fill_diagonal(distances, 0)
    tree = linkage(squareform(distances, checks=False), method="average")
    oracle = canonical_labels(fcluster(tree, 1 - cut, criterion="distance") - 1)
    ours = canonical_labels(average_linkage(x, cut))
    assert len(set(oracle.tolist())) not in (1, len(x))  # a real choice was made
    assert np.array_equal(ours, oracle)


def test_average_linkage_does_not_chain_people_through_one_link() -> None:
    """Two people joined by a single look-alike pair: the graph methods may chain them, average
    linkage keeps them apart."""
    x, truth = _people(2, 10, noise=0.05, seed=7)
    bridge = (x[truth == 0][0] + x[truth == 1][0]) / 2
    bridge /= np.linalg.norm(bridge)
    labels = cluster_faces(np.vstack([x, bridge]), ClusterSettings(threshold=0.6))
    assert _same_partition(truth, labels[:-1])


def test_chinese_whispers_on_a_graph_of_two_cliques() -> None:
    pairs = list(itertools.permutations(range(4), 2)) + list(itertools.permutations(range(4, 8), 2))
    neighbours = np.array([[j for i2, j in pairs if i2 == i] for i in range(8)])
    sims = np.full(neighbours.shape, 0.9, dtype=np.float32)
    labels = chinese_whispers((neighbours, sims), cut=0.5)
    assert len(set(labels[:4].tolist())) == len(set(labels[4:].tolist())) == 1
    assert labels[0] != labels[4]
    assert len(set(chinese_whispers((neighbours, sims), cut=0.95).tolist())) == 8


def test_named_people_keep_their_faces_and_attract_new_ones() -> None:
    x, truth = _people(4, 10, noise=0.06, seed=8)
    people = np.full(len(x), -1)
    ada = np.flatnonzero(truth == 0)
    bob = np.flatnonzero(truth == 1)
    people[ada[:3]] = 0  # three faces of person 0 named
    people[bob[:5]] = 1
    people[np.flatnonzero(truth == 2)[0]] = 1  # a human put a face of person 2 under Bob: kept
    joined, clusters = cluster_with_people(x, people, join_threshold=0.6)
    assert (joined[ada] == 0).all()  # the rest of Ada's faces joined her
    assert (joined[bob] == 1).all()
    assert joined[np.flatnonzero(truth == 2)[0]] == 1  # a human's label never moves
    others = np.flatnonzero(truth >= 2)[1:]
    free = others[joined[others] < 0]
    assert len(free) >= 18  # persons 2 and 3 join nobody (Bob's centroid is Bob's)
    assert _same_partition(truth[free], clusters[free])
    assert (clusters[joined >= 0] == -1).all()


def test_a_new_cluster_like_a_named_person_joins_that_person() -> None:
    x, truth = _people(3, 10, noise=0.08, seed=9)
    people = np.full(len(x), -1)
    named = np.flatnonzero(truth == 0)[:2]
    people[named] = 0
    free = np.flatnonzero(truth == 0)[2:]
    centre = x[named].sum(axis=0)
    centre /= np.linalg.norm(centre)
    single = float((x[free] @ centre).max())  # the best single face's match
    together = x[free].sum(axis=0)
    together = float(together @ centre / np.linalg.norm(together))  # the cluster's match
    assert together > single + 0.02  # averaging removes noise: the test's premise
    threshold = (single + together) / 2  # no face alone joins; their cluster does
    joined, clusters = cluster_with_people(x, people, join_threshold=threshold)
    assert (joined[truth == 0] == 0).all()
    assert (clusters[truth == 0] == -1).all()
    assert (joined[truth != 0] == -1).all()
    assert sorted(set(clusters[truth != 0].tolist())) == [0, 1]
