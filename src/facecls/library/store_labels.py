"""People and labels in the face library, every change an action that can be undone.

A label action (name a person, merge two, move faces, forget a person...) is one write
transaction that also stores, in the ``actions`` table, the state of every face and person it
touched as it was before; :meth:`Labels.undo` puts the latest action's rows back. Several calls
make one action inside ``with library.action(kind, description):`` (a split: create a person,
move faces to it); a call outside one is an action of its own.

Labels from people (``human``) are never overwritten by the machine's (``cluster``,
``suggestion``): :meth:`Labels.assign_faces` leaves them as they are.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from facecls.library.store_engine import Engine
from facecls.library.store_types import SOURCES, LibraryError, Person

MAX_NAME = 200  # characters; longer is a paste gone wrong, not a name


def clean_name(name: str) -> str:
    """A person's name as stored: any Unicode text, trimmed, 1 to :data:`MAX_NAME` characters.

    Raises:
        LibraryError: empty, too long, or holding a control character (a line break...).
    """
    if not isinstance(name, str):
        raise LibraryError(f"a person's name must be text, not {type(name).__name__}")
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise LibraryError("a person's name cannot be empty")
    if len(text) > MAX_NAME:
        raise LibraryError(f"a person's name has at most {MAX_NAME} characters, not {len(text):,}")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise LibraryError("a person's name cannot hold control characters (line breaks, tabs)")
    return text


class Labels(Engine):
    """People, labels and undo; mixed into :class:`facecls.library.store_base.Library`."""

    location: str
    _undo: dict[str, dict[str, Any]] | None = None

    # ---- reading ----------------------------------------------------------------------------
    def people(self, hidden: bool = True) -> list[Person]:
        """Every person (named, then unnamed clusters; most faces first), ``hidden`` ones too
        unless told otherwise."""
        rows = self._rows(
            "SELECT p.id, p.name, p.hidden, COUNT(f.id) FROM people p "
            "LEFT JOIN faces f ON f.person_id = p.id GROUP BY p.id, p.name, p.hidden"
        )
        found = [Person(int(i), n, bool(h), int(c)) for i, n, h, c in rows if hidden or not h]
        return sorted(found, key=lambda p: (p.name is None, -p.faces, p.id))

    def person(self, person_id: int) -> Person:
        """One person, or a LibraryError naming the id."""
        # one row by its key: clustering a large library asks this once per cluster
        rows = self._rows(
            "SELECT p.id, p.name, p.hidden, COUNT(f.id) FROM people p "
            "LEFT JOIN faces f ON f.person_id = p.id WHERE p.id = ? "
            "GROUP BY p.id, p.name, p.hidden",
            (int(person_id),),
        )
        if not rows:
            raise LibraryError(f"{self.location}: no person or cluster {person_id}")
        ((pid, name, hidden, faces),) = rows
        return Person(int(pid), name, bool(hidden), int(faces))

    def person_named(self, name: str) -> Person | None:
        """The person with this name (as :func:`clean_name` stores it), if any."""
        wanted = clean_name(name)
        return next((p for p in self.people() if p.name == wanted), None)

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest actions, newest first: ``id``, ``at``, ``kind``, ``description``,
        ``undone``."""
        rows = self._rows(
            "SELECT id, made_at, kind, description, undone FROM actions ORDER BY id DESC LIMIT ?",
            (int(limit),),
        )
        return [{"id": int(i), "at": a, "kind": k, "description": d, "undone": bool(u)}
                for i, a, k, d, u in rows]  # fmt: skip

    # ---- actions ----------------------------------------------------------------------------
    @contextmanager
    def action(self, kind: str, description: str) -> Iterator[int]:
        """One undoable action made of the label calls inside it (one transaction)."""
        if self._undo is not None:  # already inside one: the calls join it
            yield -1
            return
        with self.writing() as seq:
            self._undo = {"faces": {}, "people": {}}
            try:
                yield seq
                self._run(
                    "INSERT INTO actions (seq, made_at, kind, description, undo, undone) "
                    "VALUES (?, ?, ?, ?, ?, 0)",
                    (seq, time.strftime("%Y-%m-%dT%H:%M:%S"), kind, description,
                     json.dumps(self._undo)),
                )  # fmt: skip
            finally:
                self._undo = None

    def _remember_faces(self, face_ids: Sequence[int]) -> list[int]:
        """Record the faces' labels before a change; answers the ids that exist."""
        assert self._undo is not None
        kept = []
        for start in range(0, len(face_ids), 500):
            part = [int(i) for i in face_ids[start : start + 500]]
            marks = ", ".join("?" * len(part))
            for fid, person, source, ignored in self._rows(
                f"SELECT id, person_id, source, ignored FROM faces WHERE id IN ({marks})", part
            ):
                self._undo["faces"].setdefault(str(fid), [person, source, int(ignored)])
                kept.append(int(fid))
        return kept

    def _remember_person(self, person_id: int, created: bool = False) -> None:
        assert self._undo is not None
        if created:
            self._undo["people"].setdefault(str(person_id), None)
            return
        person = self.person(person_id)
        self._undo["people"].setdefault(str(person_id), [person.name, int(person.hidden)])

    # ---- label calls ------------------------------------------------------------------------
    def create_person(self, name: str | None = None, hidden: bool = False) -> int:
        """A new person (``name`` None: an unnamed cluster); answers its id."""
        name = None if name is None else clean_name(name)
        with self.action("create", f"new person {name or '(unnamed)'}") as seq:
            (pid,) = self._insert_ids("people", ("name", "hidden", "seq"),
                                      [(name, int(hidden), self._seq_of(seq))])  # fmt: skip
            self._remember_person(pid, created=True)
        return pid

    def name_person(self, person_id: int, name: str) -> None:
        """Name (or rename) a person or cluster."""
        name = clean_name(name)
        with self.action("name", f"name {person_id} {name}"):
            self._remember_person(person_id)
            self._run("UPDATE people SET name = ? WHERE id = ?", (name, int(person_id)))

    def hide_person(self, person_id: int, hidden: bool = True) -> None:
        """Mark a person as "not a person I care about" (or care again)."""
        with self.action("hide" if hidden else "show", f"hide {person_id}: {hidden}"):
            self._remember_person(person_id)
            self._run("UPDATE people SET hidden = ? WHERE id = ?", (int(hidden), int(person_id)))

    def assign_faces(
        self, face_ids: Sequence[int], person_id: int | None, source: str = "human"
    ) -> int:
        """Give faces to a person; answers how many changed.

        ``person_id`` None takes the label away (by a ``human``: a person said the face is
        nobody the library knows, and clustering leaves it so). A ``cluster`` or
        ``suggestion`` never replaces a ``human`` label.
        """
        if source not in SOURCES:
            raise ValueError(f"label source must be one of {', '.join(SOURCES)}, not {source!r}")
        with self.action("assign", f"{len(face_ids)} face(s) to {person_id} ({source})"):
            if person_id is not None:
                self.person(person_id)  # exists
            ids = self._remember_faces(face_ids)
            if source != "human":
                ids = [i for i in ids if self._undo is not None
                       and self._undo["faces"][str(i)][1] != "human"]  # fmt: skip
            self._run_many(
                "UPDATE faces SET person_id = ?, source = ? WHERE id = ?",
                [(person_id, source, i) for i in ids],
            )
        return len(ids)

    def ignore_faces(self, face_ids: Sequence[int], ignored: bool = True) -> None:
        """Mark faces as not worth a label (a poster, a crowd), or not any more."""
        with self.action("ignore", f"{len(face_ids)} face(s) ignored: {ignored}"):
            ids = self._remember_faces(face_ids)
            self._run_many("UPDATE faces SET ignored = ? WHERE id = ?",
                           [(int(ignored), i) for i in ids])  # fmt: skip

    def merge_people(self, source_id: int, into_id: int) -> None:
        """Move every face of ``source_id`` to ``into_id`` and remove ``source_id``."""
        if int(source_id) == int(into_id):
            raise LibraryError(f"cannot merge person {source_id} into itself")
        with self.action("merge", f"merge {source_id} into {into_id}"):
            self.person(into_id)
            self._forget(source_id, into_id)

    def forget_person(self, person_id: int) -> None:
        """Remove a person or cluster; its faces keep no label."""
        with self.action("forget", f"forget {person_id}"):
            self._forget(person_id, None)

    def _forget(self, person_id: int, into: int | None) -> None:
        self._remember_person(person_id)
        faces = [int(r[0]) for r in self._rows("SELECT id FROM faces WHERE person_id = ?",
                                               (int(person_id),))]  # fmt: skip
        self._remember_faces(faces)
        if into is None:
            self._run("UPDATE faces SET person_id = NULL, source = NULL WHERE person_id = ?",
                      (int(person_id),))  # fmt: skip
        else:
            self._run("UPDATE faces SET person_id = ? WHERE person_id = ?",
                      (int(into), int(person_id)))  # fmt: skip
        self._run("DELETE FROM people WHERE id = ?", (int(person_id),))

    def undo(self) -> str | None:
        """Undo the latest action not undone yet; answers its description (None: nothing)."""
        with self.writing():
            found = self._rows(
                "SELECT id, description, undo FROM actions WHERE undone = 0 ORDER BY id DESC "
                "LIMIT 1"
            )
            if not found:
                return None
            action_id, description, payload = found[0]
            before = json.loads(payload)
            created = [int(p) for p, state in before["people"].items() if state is None]
            for pid, state in before["people"].items():
                if state is None:
                    continue
                if self._rows("SELECT 1 FROM people WHERE id = ?", (int(pid),)):
                    self._run("UPDATE people SET name = ?, hidden = ? WHERE id = ?",
                              (state[0], state[1], int(pid)))  # fmt: skip
                else:
                    self._insert_person(int(pid), state[0], int(state[1]))
            self._run_many(  # faces dropped since (their photo deleted) are simply not there
                "UPDATE faces SET person_id = ?, source = ?, ignored = ? WHERE id = ?",
                [(p, s, i, int(fid)) for fid, (p, s, i) in before["faces"].items()],
            )
            for pid in created:
                self._run("UPDATE faces SET person_id = NULL, source = NULL WHERE person_id = ?",
                          (pid,))  # fmt: skip
                self._run("DELETE FROM people WHERE id = ?", (pid,))
            self._run("UPDATE actions SET undone = 1 WHERE id = ?", (int(action_id),))
            return str(description)

    def _insert_person(self, person_id: int, name: str | None, hidden: int) -> None:
        self._run("INSERT INTO people (id, name, hidden, seq) VALUES (?, ?, ?, 0)",
                  (person_id, name, hidden))  # fmt: skip

    def _seq_of(self, seq: int) -> int:
        """The current write's seq (``action`` yields -1 when joined to an outer one)."""
        return (
            seq if seq >= 0 else int(self._rows("SELECT value FROM meta WHERE key = 'seq'")[0][0])
        )
