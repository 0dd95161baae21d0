"""People in a face library: cluster the faces, then name, merge, split, move and forget.

Every call here is one undoable action (one transaction; :meth:`Library.undo` takes the latest
back). A person is referred to by id or by name (``"Ada Lovelace"``; a number-like name is
looked up as a name when no person has that id).

Which faces clustering may move. A face is *fixed* when a person gave its label (source
``human``) or it belongs to a named or hidden person; the faces of unnamed clusters, model
suggestions and unlabelled faces are *free*. Ignored faces and faces a person took out of
their person (``remove``: nobody known) are left as they are.
:func:`cluster` keeps every fixed face where it is; a free face joins the fixed person whose
centroid it matches at the join threshold (a trained model's calibrated verify threshold with
``model``), the others are clustered (:mod:`facecls.library.cluster`), and a new cluster whose
centroid matches a fixed person joins that person. A new cluster keeps the id of the old
unnamed cluster that held most of its faces, so ids stay put across runs.

Naming a cluster confirms its faces (they become the person's, source ``human``); naming it
with the name of an existing person merges it into that person — inside the same transaction,
so two people naming two clusters "Ada" at once end with one Ada.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecls.library.cluster import ClusterSettings, cluster_with_people
from facecls.library.store import Library, LibraryError, Person, open_library
from facecls.library.store_labels import clean_name

LibraryRef = Library | str | Path  # an open library, or where one is


@dataclass(frozen=True)
class ClusterReport:
    """What :func:`cluster` did: faces considered, joined to fixed people, put in clusters,
    left unclustered, and the clusters there are now; ``threshold`` is the join threshold."""

    faces: int
    joined: int
    clustered: int
    unclustered: int
    clusters: int
    threshold: float

    def line(self) -> str:
        return (
            f"{self.faces:,} faces: {self.joined:,} joined named people, {self.clustered:,} in "
            f"{self.clusters:,} unnamed clusters, {self.unclustered:,} unclustered (join "
            f"threshold {self.threshold:.3f})"
        )


@contextmanager
def opened(library: LibraryRef) -> Iterator[Library]:
    """``library`` itself when open, else the library at that folder or URL (closed after)."""
    if isinstance(library, Library):
        yield library
        return
    with open_library(library) as own:
        yield own


def find_person(library: Library, ref: str | int) -> Person:
    """The person ``ref`` names: an id, else a name.

    Raises:
        LibraryError: nobody by that id or name.
    """
    people = library.people()
    text = str(ref).strip()
    if text.isdigit():
        found = [p for p in people if p.id == int(text)]
        if found:
            return found[0]
    try:
        wanted = clean_name(text)
    except LibraryError:
        wanted = None
    found = [p for p in people if wanted is not None and p.name == wanted]
    if not found:
        raise LibraryError(f"{library.location}: no person or cluster {display(text)!s}")
    return found[0]


def display(text: str | None) -> str:
    """A name safe to print on a terminal (format and control characters shown escaped)."""
    if text is None:
        return "(unnamed)"
    import unicodedata

    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Cf") and c not in "\u200d"
        else c
        for c in text
    )


def join_threshold_of(model: str | Path | None, settings: ClusterSettings) -> float:
    """The verify threshold a trained ``model`` calibrated, else the clustering cut."""
    if model is None:
        return settings.cut
    from facecls.inference.model import read_meta

    _, meta = read_meta(model)
    entry = meta.get("verify") or {}
    if "threshold" not in entry:
        raise LibraryError(f"{model}: no calibrated verify threshold in its model.json")
    return float(entry["threshold"])


def _fixed_people(library: Library, table: dict[str, np.ndarray]) -> set[int]:
    people = {p.id: p for p in library.people()}
    fixed = {pid for pid, p in people.items() if p.name is not None or p.hidden}
    fixed |= set(table["person_id"][table["human"] & (table["person_id"] >= 0)].tolist())
    return fixed


def cluster(
    library: Library,
    settings: ClusterSettings | None = None,
    join_threshold: float | None = None,
    log: Callable[[str], None] = print,
) -> ClusterReport:
    """Group the library's free faces into people (see the module notes); one action."""
    settings = settings or ClusterSettings()
    threshold = settings.cut if join_threshold is None else float(join_threshold)
    with library.action("cluster", f"cluster ({settings.method}, cut {settings.cut:g})"):
        table = library.face_table()
        ids, vectors = library.embeddings()
        if not np.array_equal(ids, table["id"]):
            raise LibraryError(f"{library.location}: faces and embeddings disagree; re-index")
        fixed_people = _fixed_people(library, table)
        # Ignored faces and faces a person said are nobody known stay as they are.
        use = ~table["ignored"] & ~(table["human"] & (table["person_id"] < 0))
        ids, vectors, person = ids[use], vectors[use], table["person_id"][use]
        # the one wait of this command (seconds per 10,000 faces): say it before it starts
        log(f"Clustering {len(ids):,} faces of {library.location} ({settings.method}, cut "
            f"{settings.cut:g}) ...")  # fmt: skip
        suggested = _sources(library, ids) == "suggestion"
        fixed = (person >= 0) & (
            table["human"][use] | (np.isin(person, sorted(fixed_people)) & ~suggested)
        )
        order = sorted(fixed_people)
        index = {pid: i for i, pid in enumerate(order)}
        fixed_index = np.array([index[p] if f else -1 for p, f in zip(person, fixed, strict=True)],
                               dtype=np.int64)  # fmt: skip
        joined, labels = cluster_with_people(vectors, fixed_index, threshold, settings)
        free = ~fixed
        joins = free & (joined >= 0)
        for i in sorted(set(joined[joins].tolist())):
            library.assign_faces(ids[joins & (joined == i)].tolist(), order[i], "cluster")
        grouped = free & (labels >= 0)
        old = {int(f): int(p) for f, p in zip(ids[free], person[free], strict=True) if p >= 0}
        new = {int(f): int(k) for f, k in zip(ids[grouped], labels[grouped], strict=True)}
        cluster_ids = _reuse_ids(library, new, old, fixed_people)
        for label, pid in sorted(cluster_ids.items()):
            library.assign_faces(ids[grouped & (labels == label)].tolist(), pid, "cluster")
        lone = free & (joined < 0) & (labels < 0) & ~suggested  # a model's guess stays
        if lone.any():
            library.assign_faces(ids[lone].tolist(), None, "cluster")
        for pid in sorted(set(old.values()) - set(cluster_ids.values()) - fixed_people):
            if not library.faces(person_id=pid):
                library.forget_person(pid)
    report = ClusterReport(
        faces=int(use.sum()), joined=int(joins.sum()), clustered=int(grouped.sum()),
        unclustered=int((free & (joined < 0) & (labels < 0)).sum()),
        clusters=len(cluster_ids), threshold=threshold,
    )  # fmt: skip
    log(report.line())
    return report


def _sources(library: Library, ids: np.ndarray) -> np.ndarray:
    by_id = {f.id: f.source for f in library.faces()}
    return np.array([by_id.get(int(i)) or "" for i in ids], dtype=object)


def _reuse_ids(
    library: Library, new: dict[int, int], old: dict[int, int], fixed: set[int]
) -> dict[int, int]:
    """A person id for each new cluster label (``new``: face id -> label): the old unnamed
    cluster (``old``: face id -> person) holding most of its faces, each used once, biggest
    overlaps first; else a new person."""
    overlap = Counter((label, old[f]) for f, label in new.items() if f in old)
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for (label, pid), _count in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0])):
        if label not in chosen and pid not in used and pid not in fixed:
            chosen[label] = pid
            used.add(pid)
    for label in sorted(set(new.values()) - set(chosen)):
        chosen[label] = library.create_person(None)
    return chosen


def name(library: Library, ref: str | int, new_name: str) -> str:
    """Name a cluster or person; its faces become the person's (``human``). With the name of
    another person, merges into that person. Answers one line saying what was done."""
    text = clean_name(new_name)
    with library.action("name", f"name {ref} {text}"):
        person = find_person(library, ref)
        other = library.person_named(text)
        faces = [f.id for f in library.faces(person_id=person.id)]
        if other is not None and other.id != person.id:
            library.merge_people(person.id, other.id)
            library.assign_faces(faces, other.id, "human")
            return f"{_who(person)} merged into {display(text)} ({other.id}): {len(faces)} faces"
        library.name_person(person.id, text)
        library.assign_faces(faces, person.id, "human")
    return f"{_who(person)} is now {display(text)}: {len(faces)} faces"


def merge(library: Library, refs: Sequence[str | int], into: str | int) -> str:
    """Merge the people ``refs`` into ``into``; their faces become its (``human``)."""
    with library.action("merge", f"merge {', '.join(map(str, refs))} into {into}"):
        target = find_person(library, into)
        moved = 0
        for ref in refs:
            person = find_person(library, ref)
            if person.id == target.id:
                raise LibraryError(f"cannot merge {_who(person)} into itself")
            faces = [f.id for f in library.faces(person_id=person.id)]
            library.merge_people(person.id, target.id)
            library.assign_faces(faces, target.id, "human")
            moved += len(faces)
    return f"{moved} faces merged into {_who(target)}"


def split(
    library: Library, ref: str | int, face_ids: Sequence[int] = (), cut_step: float = 0.1
) -> str:
    """Split a person or cluster: the faces ``face_ids`` become a new unnamed cluster; without
    them, its faces are clustered again at a cut ``cut_step`` stricter, each part but the
    largest becoming a new cluster."""
    with library.action("split", f"split {ref}"):
        person = find_person(library, ref)
        faces = library.faces(person_id=person.id)
        if face_ids:
            own = {f.id for f in faces}
            strangers = sorted(set(map(int, face_ids)) - own)
            if strangers:
                raise LibraryError(f"face(s) {strangers} are not in {_who(person)}")
            parts = [sorted(set(map(int, face_ids)))]
        else:
            parts = _parts(library, [f.id for f in faces], cut_step)
        for part in parts:
            library.assign_faces(part, library.create_person(None), "human")
    return f"{_who(person)} split: {len(parts)} new cluster(s) of {sum(map(len, parts))} faces"


def _parts(library: Library, face_ids: list[int], cut_step: float) -> list[list[int]]:
    from facecls.library.cluster import cluster_faces

    ids, vectors = library.embeddings(face_ids)
    stricter = ClusterSettings(threshold=min(0.99, ClusterSettings().cut + cut_step), min_size=1)
    labels = cluster_faces(vectors, stricter)  # 0 is the largest part: it stays
    return [ids[labels == k].tolist() for k in range(1, int(labels.max()) + 1)]


def forget(library: Library, ref: str | int, hidden: bool = True) -> str:
    """Mark a person or cluster as not one the user cares about (hidden from lists; its faces
    stay together and new faces like them join it), or care again (``hidden`` False)."""
    with library.action("forget" if hidden else "show", f"forget {ref}: {hidden}"):
        person = find_person(library, ref)
        library.hide_person(person.id, hidden)
    return f"{_who(person)} {'forgotten (hidden)' if hidden else 'shown again'}"


def move(library: Library, face_ids: Sequence[int], ref: str | int) -> str:
    """Move faces to a person or cluster (their label becomes a ``human`` one)."""
    with library.action("move", f"move {len(face_ids)} face(s) to {ref}"):
        person = find_person(library, ref)
        ids = _existing(library, face_ids)
        library.ignore_faces(ids, False)
        library.assign_faces(ids, person.id, "human")
    return f"{len(ids)} face(s) moved to {_who(person)}"


def remove(library: Library, face_ids: Sequence[int]) -> str:
    """Take faces out of their person: a person says they are nobody the library knows, and
    clustering leaves them so (``move`` gives one a person again)."""
    with library.action("remove", f"remove {len(face_ids)} face(s)"):
        ids = _existing(library, face_ids)
        library.assign_faces(ids, None, "human")
    return f"{len(ids)} face(s) removed from their people"


def _existing(library: Library, face_ids: Sequence[int]) -> list[int]:
    wanted = sorted({int(i) for i in face_ids})
    found = {f.id for f in library.faces(ids=wanted)}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise LibraryError(f"{library.location}: no face {', '.join(map(str, missing))}")
    return wanted


def _who(person: Person) -> str:
    return f"{display(person.name)} ({person.id})" if person.name else f"cluster {person.id}"
