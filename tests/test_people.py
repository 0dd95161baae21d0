"""People in a face library, on SQLite and a real PostgreSQL server: clustering the faces, the
naming actions, each one undone, and two writers naming clusters at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from facecls.library import people
from facecls.library.people_commands import listing, people_command
from facecls.library.store import FileStamp, LibraryError, ModelKey, NewFace, NewPhoto, open_library

DIM = 32
KEY = ModelKey("test-net", "cd" * 32, "box", 160, DIM)


def _centres(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(count, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def make_library(location: str, sizes: tuple[int, ...] = (6, 5, 4), strangers: int = 1) -> dict:
    """A library of one face per photo: ``sizes[k]`` faces of person k, then ``strangers``
    faces like nobody. Answers the true person of each face id (-1 for a stranger)."""
    centres = _centres(len(sizes) + strangers, seed=1)
    rng = np.random.default_rng(2)
    truth, photos = [], []
    for person, count in enumerate(list(sizes) + [1] * strangers):
        for _ in range(count):
            v = centres[person] + rng.normal(scale=0.05, size=DIM)
            n = len(photos)
            face = NewFace((10, 10, 60, 70), np.zeros((5, 2), np.float32), 0.99,
                           (v / np.linalg.norm(v)).astype(np.float32))  # fmt: skip
            photos.append(NewPhoto(f"{n:064x}", 200, 150, [face],
                                   [FileStamp(f"/photos/{n}.jpg", 100 + n, 1)]))  # fmt: skip
            truth.append(person if person < len(sizes) else -1)
    with open_library(location, create=True) as lib:
        lib.claim_model(KEY)
        lib.add_photos(photos)
        ids, _ = lib.embeddings()
    return dict(zip(ids.tolist(), truth, strict=True))


def _groups(lib) -> dict[int | None, set[int]]:
    found: dict[int | None, set[int]] = {}
    for face in lib.faces():
        found.setdefault(face.person_id, set()).add(face.id)
    return found


def _state(lib) -> tuple:
    return (sorted((f.id, f.person_id, f.source, f.ignored) for f in lib.faces()),
            sorted((p.id, p.name, p.hidden) for p in lib.people()))  # fmt: skip


def test_cluster_finds_the_people_and_leaves_the_stranger(library_location: str) -> None:
    truth = make_library(library_location)
    with open_library(library_location) as lib:
        said: list[str] = []
        report = people.cluster(lib, log=said.append)
        groups = _groups(lib)
    assert report.clusters == 3 and report.unclustered == 1
    assert said[0].startswith("Clustering 16 faces")  # the wait is announced before it starts
    expected = [{f for f, t in truth.items() if t == k} for k in range(3)]
    assert sorted(map(sorted, expected)) == sorted(sorted(g) for p, g in groups.items() if p)
    assert groups[None] == {f for f, t in truth.items() if t == -1}


def test_clustering_again_keeps_names_ids_and_human_labels(library_location: str) -> None:
    truth = make_library(library_location)
    with open_library(library_location) as lib:
        people.cluster(lib, log=lambda _m: None)
        before = {p: g for p, g in _groups(lib).items() if p is not None}
        ada = next(p for p, g in before.items() if truth[min(g)] == 0)
        people.name(lib, ada, "Ada Lovelace")
        odd = min(f for f, t in truth.items() if t == 1)
        people.move(lib, [odd], "Ada Lovelace")  # a person's word, right or wrong, stays
        people.cluster(lib, log=lambda _m: None)
        after = _groups(lib)
        assert after[ada] == before[ada] | {odd}
        assert lib.person(ada).name == "Ada Lovelace"
        unnamed = {p for p in before if p != ada}
        assert {p for p in after if p is not None} == {ada} | unnamed  # ids kept


def test_new_faces_join_the_named_person_they_match(library_location: str) -> None:
    truth = make_library(library_location, sizes=(6, 5))
    with open_library(library_location) as lib:
        first = sorted(f for f, t in truth.items() if t == 0)
        lib.assign_faces(first[:2], lib.create_person("Grace"), "human")
        people.cluster(lib, log=lambda _m: None)
        grace = lib.person_named("Grace")
        assert {f.id for f in lib.faces(person_id=grace.id)} == set(first)
        assert {f.source for f in lib.faces(person_id=grace.id)} == {"human", "cluster"}


def test_each_action_is_undone(library_location: str) -> None:
    truth = make_library(library_location)
    with open_library(library_location) as lib:
        people.cluster(lib, log=lambda _m: None)
        clusters = sorted(p.id for p in lib.people())
        a, b, c = clusters
        stranger = next(f for f, t in truth.items() if t == -1)
        member = min(f.id for f in lib.faces(person_id=b))
        steps = [
            lambda: people.name(lib, a, "Ada"),
            lambda: people.name(lib, b, "Ada"),  # the name is taken: b merges into Ada
            lambda: people.merge(lib, [c], "Ada"),
            lambda: people.split(lib, "Ada", [member]),
            lambda: people.forget(lib, "Ada"),
            lambda: people.forget(lib, "Ada", hidden=False),
            lambda: people.move(lib, [stranger], "Ada"),
            lambda: people.remove(lib, [stranger]),
        ]
        states = [_state(lib)]
        for step in steps:
            step()
            states.append(_state(lib))
        assert all(x != y for x, y in zip(states[:-1], states[1:], strict=True))  # each changed
        for expected in reversed(states[:-1]):
            assert lib.undo() is not None
            assert _state(lib) == expected
        assert lib.undo() is not None  # and the first clustering
        assert all(p is None for p in _groups(lib)) and lib.people() == []


def test_naming_merges_into_an_existing_name_and_refuses_bad_names(library_location) -> None:
    make_library(library_location)
    with open_library(library_location) as lib:
        people.cluster(lib, log=lambda _m: None)
        a, b, _ = sorted(p.id for p in lib.people())
        people.name(lib, a, "Zoë 李 <b>&amp;</b>")
        line = people.name(lib, b, "  Zoë 李 <b>&amp;</b> ")
        assert "merged" in line
        assert [p.name for p in lib.people() if p.name] == ["Zoë 李 <b>&amp;</b>"]
        for bad, why in [("", "empty"), ("x" * 10_000, "at most"), ("a\nb", "control")]:
            with pytest.raises(LibraryError, match=why) as caught:
                people.name(lib, a, bad)
            assert "\n" not in str(caught.value)
        with pytest.raises(LibraryError, match="no person or cluster"):
            people.name(lib, 999, "Nobody")


def test_two_writers_naming_at_once_make_one_person(library_location: str) -> None:
    """Two processes' worth of connections name two clusters the same at the same moment:
    the writes are serialised, and the second sees the first's name and merges."""
    make_library(library_location)
    with open_library(library_location) as lib:
        people.cluster(lib, log=lambda _m: None)
        a, b, _ = sorted(p.id for p in lib.people())
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def name(cluster: int) -> None:
        try:
            with open_library(library_location) as own:
                start.wait()
                people.name(own, cluster, "Ada")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=name, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with open_library(library_location) as lib:
        named = [p for p in lib.people() if p.name == "Ada"]
        assert len(named) == 1 and named[0].faces == 11


def test_the_command_lines_answers(library_location: str) -> None:
    make_library(library_location)
    people_command(library_location, "undo")  # nothing yet: no error
    from facecls.library.people_commands import cluster_command

    cluster_command(library_location, log=lambda _m: None)
    text = listing(library_location)
    assert "3 unnamed clusters" in text and "1 of 16 faces in no listed person" in text
    with open_library(library_location) as lib:
        first = sorted(p.id for p in lib.people())[0]
    assert "is now Ada" in people_command(library_location, "name", person=str(first),
                                          name="Ada")  # fmt: skip
    assert "Ada" in listing(library_location)
    assert "undone" in people_command(library_location, "undo")
    assert "name" in people_command(library_location, "history")
    with pytest.raises(LibraryError, match="at least two"):
        people_command(library_location, "merge", people=["Ada"])
