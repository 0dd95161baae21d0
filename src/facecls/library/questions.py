"""Which labels to ask for next: ``facecls people LIB suggest``.

A person's answer is worth the faces it labels. Three kinds of question, ranked by the faces an
answer settles:

- **name a cluster** (``name``): an unnamed cluster's faces all get a person with one answer;
  largest first. A cluster whose centroid is close to a named person's is asked as "is this
  Ada?" (``merge``): one answer, and Ada's model gets all of them.
- **is this face that person?** (``face``): a face in no person whose nearest named centroid is
  just under the join threshold — the faces clustering could not decide. People with few faces
  come first (their centroids, and a model trained on them, gain most from one more face).

:func:`rank_questions` works on arrays (the benchmark's simulated user asks it too);
:func:`questions` reads them from a library.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecls.library.cluster import ClusterSettings, centroids
from facecls.library.people import display
from facecls.library.store import Library
from facecls.openset import l2_normalize

# Faces within this much of the join threshold are worth asking about.
BAND = 0.15


@dataclass(frozen=True)
class Question:
    """One thing to ask: ``kind`` ``name``/``merge``/``face``; ``target`` the named person
    (index or id) it may be, ``group`` the cluster (label or id), ``faces`` it settles."""

    kind: str
    faces: tuple[int, ...]
    target: int | None = None
    group: int | None = None
    gain: float = 0.0


def rank_questions(
    vectors: np.ndarray,
    named: np.ndarray,
    clusters: np.ndarray,
    threshold: float,
    limit: int = 20,
) -> list[Question]:
    """The ``limit`` most useful questions, best first.

    Args:
        vectors: embeddings ``(N, D)``.
        named: ``(N,)`` index of each face's named person (0, 1, ...), ``-1`` for none.
        clusters: ``(N,)`` unnamed cluster of each face, ``-1`` for none (ignored where
            ``named`` is set).
        threshold: the join threshold (cosine to a person's centroid).
    """
    x = l2_normalize(np.asarray(vectors, dtype=np.float32))
    named, clusters = np.asarray(named), np.where(np.asarray(named) >= 0, -1, clusters)
    count = int(named.max()) + 1 if len(named) and named.max() >= 0 else 0
    sizes = np.bincount(named[named >= 0], minlength=count)
    centres = centroids(x, named, count) if count else np.zeros((0, x.shape[1]), np.float32)
    found: list[Question] = []
    groups = int(clusters.max()) + 1 if len(clusters) and clusters.max() >= 0 else 0
    if groups:
        means = centroids(x, clusters, groups)
        for label in range(groups):
            members = tuple(int(i) for i in np.flatnonzero(clusters == label))
            if count:
                sims = centres @ means[label]
                best = int(sims.argmax())
                if sims[best] >= threshold - BAND:
                    found.append(Question("merge", members, best, label, float(len(members))))
                    continue
            found.append(Question("name", members, None, label, float(len(members))))
    lone = np.flatnonzero((named < 0) & (clusters < 0))
    if count and len(lone):
        sims = x[lone] @ centres.T
        best = sims.argmax(axis=1)
        near = sims[np.arange(len(lone)), best]
        close = np.flatnonzero((near >= threshold - BAND) & (near < threshold))
        for i in close:
            # nearer the threshold and rarer people first; one face settles at most one label
            weight = (1 - (threshold - near[i]) / BAND) / np.sqrt(sizes[best[i]])
            found.append(Question("face", (int(lone[i]),), int(best[i]), None, float(weight)))
    found.sort(key=lambda q: (-q.gain, q.kind, q.faces))
    return found[:limit]


def questions(library: Library, limit: int = 20, threshold: float | None = None) -> list[str]:
    """The library's best questions as lines to print (ids are the library's)."""
    cut = ClusterSettings().cut if threshold is None else threshold
    table = library.face_table()
    ids, vectors = library.embeddings()
    people = {p.id: p for p in library.people()}
    named_ids = sorted(pid for pid, p in people.items() if p.name is not None and not p.hidden)
    index = {pid: i for i, pid in enumerate(named_ids)}
    person = table["person_id"]
    use = ~table["ignored"] & ~(table["human"] & (person < 0))
    use &= np.array([p < 0 or not people[p].hidden for p in person], dtype=bool)
    # int64 even when the library holds no face (an empty list would make float64 arrays)
    named = np.array([index.get(p, -1) for p in person], dtype=np.int64)
    unnamed = sorted({int(p) for p in person[use] if p >= 0 and people[p].name is None})
    group = {pid: k for k, pid in enumerate(unnamed)}
    clusters = np.array([group.get(p, -1) for p in person], dtype=np.int64)
    lines = []
    for q in rank_questions(vectors[use], named[use], clusters[use], cut, limit):
        faces = ids[use][list(q.faces)]
        if q.kind == "face":
            who = display(people[named_ids[q.target]].name)
            lines.append(f"face {faces[0]}: is it {who}? (people LIB move {faces[0]} --to ID)")
        elif q.kind == "merge":
            who = display(people[named_ids[q.target]].name)
            lines.append(f"cluster {unnamed[q.group]} ({len(faces)} faces): is it {who}? "
                         f"(people LIB merge {unnamed[q.group]} {named_ids[q.target]})")  # fmt: skip
        else:
            lines.append(f"cluster {unnamed[q.group]} ({len(faces)} faces): who is it? "
                         f"(people LIB name {unnamed[q.group]} NAME)")  # fmt: skip
    return lines
