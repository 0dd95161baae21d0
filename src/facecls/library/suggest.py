"""A trained model's answers written back into a face library as suggestions.

``facecls predict MODEL --library LIB`` names every face of the library that no person has
labelled: each is cut from its photo where the library found it, with the model's own pipeline,
and a ``known`` answer becomes a ``suggestion`` label of the person with that name (made, named,
when the library has nobody by it). A suggestion never replaces a person's (``human``) label,
and training from the library leaves suggestions out. Faces the model calls ``unknown`` keep
what they had. One undoable action.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecls.data.images import ImageError, load_rgb
from facecls.data.library_tables import PhotoFiles
from facecls.data.sources import default_cache_dir
from facecls.inference.model import load_model
from facecls.library.people import LibraryRef, opened
from facecls.library.store import Face


@dataclass(frozen=True)
class Suggested:
    """What :func:`suggest` did: faces looked at, named, left unknown, and unreadable."""

    faces: int
    named: int
    unknown: int
    unreadable: int

    def line(self) -> str:
        return (
            f"{self.faces:,} faces without a person's label: {self.named:,} suggested, "
            f"{self.unknown:,} unknown to the model, {self.unreadable:,} unreadable"
        )


def suggest(
    library: LibraryRef,
    model: str | Path,
    device: str = "auto",
    batch_size: int = 64,
    log: Callable[[str], None] = print,
    method: str | None = None,
    threshold: float | None = None,
    backend: str = "torch",
    trust_pickle: bool = False,
    require_digest: bool = False,
) -> Suggested:
    """Write ``model``'s names for the library's faces as suggestions (see the module notes);
    ``method`` to ``require_digest`` as for ``facecls predict``."""
    face_model = load_model(model, device, backend, method, threshold, trust_pickle, require_digest)
    files = PhotoFiles(default_cache_dir())
    with opened(library) as lib:
        faces = [f for f in lib.faces() if not f.ignored and f.source != "human"]
        by_photo: dict[int, list[Face]] = defaultdict(list)
        for face in faces:
            by_photo[face.photo_id].append(face)
        answers: dict[str, list[int]] = defaultdict(list)
        unknown = unreadable = 0
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            nonlocal unknown
            if not pending:
                return
            batch = np.stack([pixels for _, pixels in pending]).transpose(0, 3, 1, 2)
            for (face_id, _), answer in zip(
                pending, face_model.decide(*face_model.outputs(batch, batch_size)), strict=True
            ):
                if answer.decision == "known":
                    answers[answer.identity].append(face_id)
                else:
                    unknown += 1
            pending.clear()

        for photo_id in sorted(by_photo):
            photo = _readable(lib.photo(photo_id)["paths"], files)
            if photo is None:
                unreadable += len(by_photo[photo_id])
                continue
            for face in by_photo[photo_id]:
                cut = face_model.cutter.cut_known(photo, face.box, face.landmarks)
                pending.append((face.id, cut.pixels))
            if len(pending) >= batch_size:
                flush()
        flush()
        with lib.action("suggest", f"suggestions of {Path(model).name}"):
            for name in sorted(answers):
                person = lib.person_named(name)
                pid = person.id if person is not None else lib.create_person(name)
                lib.assign_faces(answers[name], pid, "suggestion")
    report = Suggested(len(faces), sum(map(len, answers.values())), unknown, unreadable)
    log(report.line())
    return report


def _readable(paths: list[str], files: PhotoFiles) -> np.ndarray | None:
    """The first of a photo's paths that decodes, as RGB pixels."""
    for path in paths:
        file = files(path)
        if file is None:
            continue
        try:
            return load_rgb(file)
        except (ImageError, OSError):
            continue
    return None
