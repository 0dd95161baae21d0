"""people suggest: the questions whose answers label the most faces come first."""

from __future__ import annotations

import numpy as np

from facecls.library import people
from facecls.library.people_commands import people_command
from facecls.library.questions import rank_questions
from facecls.library.store import open_library
from tests.test_people import make_library


def _near(direction: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector at ``cosine`` from the unit ``direction``."""
    other = np.random.default_rng(seed).normal(size=direction.shape)
    other -= (other @ direction) * direction
    other /= np.linalg.norm(other)
    return cosine * direction + np.sqrt(1 - cosine**2) * other


def test_questions_rank_big_clusters_then_doubtful_faces_of_rare_people() -> None:
    e = np.eye(8)
    vectors = [e[0]] * 6 + [e[1]] * 2  # Ada (6 faces), Bob (2 faces), both named
    named = [0] * 6 + [1] * 2
    clusters = [-1] * 8
    vectors += [e[2]] * 5 + [e[3]] * 3  # unnamed clusters of 5 and 3 faces
    named += [-1] * 8
    clusters += [0] * 5 + [1] * 3
    vectors += [_near(e[0], 0.45, 1), _near(e[1], 0.45, 2), _near(e[0], 0.1, 3)]  # lone faces
    named += [-1] * 3
    clusters += [-1] * 3
    vectors += [_near(e[1], 0.9, 4)] * 2  # an unnamed cluster that looks like Bob
    named += [-1] * 2
    clusters += [2] * 2
    asked = rank_questions(np.array(vectors), np.array(named), np.array(clusters), 0.5)
    kinds = [(q.kind, q.target, q.group, q.faces) for q in asked]
    assert kinds[:3] == [("name", None, 0, tuple(range(8, 13))),
                         ("name", None, 1, (13, 14, 15)), ("merge", 1, 2, (19, 20))]  # fmt: skip
    assert kinds[3:] == [("face", 1, None, (17,)), ("face", 0, None, (16,))]  # Bob is rarer
    assert 18 not in {f for q in asked for f in q.faces}  # like nobody: not worth asking


def test_suggest_lists_what_to_name_in_a_library(library_location: str) -> None:
    make_library(library_location)
    with open_library(library_location) as lib:
        people.cluster(lib, log=lambda _m: None)
        first = sorted(lib.people(), key=lambda p: -p.faces)[0]
    lines = people_command(library_location, "suggest", limit=10).splitlines()
    assert lines[0].startswith(f"cluster {first.id} ({first.faces} faces): who is it?")
    assert len(lines) == 3
    people_command(library_location, "name", person=str(first.id), name="Ada")
    assert len(people_command(library_location, "suggest").splitlines()) == 2
