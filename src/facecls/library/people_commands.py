"""The people commands, one call each, on a library given by its folder or URL: ``facecls
cluster``, ``facecls people LIB [ACTION]``, ``people LIB write-xmp``, ``export-folders``."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from facecls.data.library_tables import PhotoFiles
from facecls.data.sources import default_cache_dir
from facecls.library import people
from facecls.library.cluster import DEFAULT_METHOD, ClusterSettings
from facecls.library.export import ExportFace, export_folders
from facecls.library.people import LibraryRef, display, find_person, opened
from facecls.library.questions import questions
from facecls.library.store import Library, LibraryError
from facecls.library.xmp import FaceRegion, sidecar_path, write_sidecar

# The argparse destinations each people action takes.
ACTION_OPTIONS = ("person", "name", "people", "faces", "out", "limit")


def cluster_command(
    library: LibraryRef,
    method: str | None = None,
    threshold: float | None = None,
    min_size: int = 2,
    model: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> people.ClusterReport:
    """``facecls cluster``: group the free faces (:func:`facecls.library.people.cluster`)."""
    settings = ClusterSettings(method=method or DEFAULT_METHOD, threshold=threshold,
                               min_size=min_size)  # fmt: skip
    join = people.join_threshold_of(model, settings)
    with opened(library) as lib:
        return people.cluster(lib, settings, join, log)


def listing(library: LibraryRef, hidden: bool = False) -> str:
    """``facecls people LIB``: people and clusters with their face counts, as text."""
    with opened(library) as lib:
        found = lib.people(hidden=hidden)
        counts = lib.counts()
    lines = [f"{'id':>6}  {'faces':>6}  name"]
    for person in found:
        mark = "  (forgotten)" if person.hidden else ""
        lines.append(f"{person.id:>6}  {person.faces:>6}  {display(person.name)}{mark}")
    labelled = sum(p.faces for p in found)
    lines.append(
        f"{counts['people']} named, {counts['clusters']} unnamed clusters; "
        f"{counts['faces'] - labelled:,} of {counts['faces']:,} faces in no listed person"
    )
    return "\n".join(lines)


def people_command(
    library: LibraryRef, action: str, log: Callable[[str], None] = print, **options: object
) -> str:
    """``facecls people LIB ACTION ...``: one action; answers the line to print."""
    with opened(library) as lib:
        if action == "name":
            return people.name(lib, options["person"], options["name"])
        if action == "merge":
            refs = list(options["people"])
            if len(refs) < 2:
                raise LibraryError("merge needs at least two people: the last gets the faces")
            return people.merge(lib, refs[:-1], refs[-1])
        if action == "split":
            return people.split(lib, options["person"], options.get("faces") or ())
        if action in ("forget", "remember"):
            return people.forget(lib, options["person"], hidden=action == "forget")
        if action == "move":
            return people.move(lib, options["faces"], options["person"])
        if action == "remove":
            return people.remove(lib, options["faces"])
        if action == "faces":
            return faces_of(lib, options["person"])
        if action == "undo":
            done = lib.undo()
            return "nothing to undo" if done is None else f"undone: {display(done)}"
        if action == "history":
            rows = lib.history()
            return (
                "\n".join(
                    f"{r['id']:>5}  {r['at']}  {display(r['description'])}"
                    + ("  (undone)" if r["undone"] else "")
                    for r in rows
                )
                or "no actions yet"
            )
        if action == "suggest":
            return "\n".join(questions(lib, int(options.get("limit") or 20))) or "nothing to ask"
        if action == "write-xmp":
            counts = write_xmp(lib, options.get("out"), log)
            return f"{counts['written']} sidecar(s) written, {counts['skipped']} skipped"
    raise ValueError(f"unknown people action {action!r}")


def faces_of(library: Library, ref: str | int) -> str:
    """A person's faces, one line each: face id, photo path, box."""
    person = find_person(library, ref)
    lines = []
    for face in library.faces(person_id=person.id):
        paths = library.photo(face.photo_id)["paths"]
        box = " ".join(f"{v:.0f}" for v in face.box)
        lines.append(f"{face.id:>8}  {paths[0] if paths else '?'}  [{box}]  {face.source}")
    return "\n".join(lines) or f"{display(person.name)}: no faces"


def named_faces(library: Library) -> list[tuple[int, str, str, tuple[float, ...]]]:
    """``(face id, name, photo, box)`` of every face of a named, not forgotten person (model
    suggestions left out); ``photo`` is the library's first name for the photo's file."""
    names = {p.id: p.name for p in library.people(hidden=False) if p.name is not None}
    found = []
    paths: dict[int, list[str]] = {}
    for face in library.faces():
        if face.person_id not in names or face.ignored or face.source == "suggestion":
            continue
        if face.photo_id not in paths:
            paths[face.photo_id] = library.photo(face.photo_id)["paths"]
        if paths[face.photo_id]:
            found.append((face.id, names[face.person_id], paths[face.photo_id][0], face.box))
    return found


def write_xmp(
    library: Library, out: Path | None = None, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Write an XMP sidecar for every photo with named faces (see :mod:`facecls.library.xmp`);
    under ``out`` they keep the photos' folders (relative to the photos' common folder). A
    photo inside an archive gets one only under ``out``."""
    by_photo: dict[str, list[FaceRegion]] = defaultdict(list)
    sizes: dict[str, tuple[int, int]] = {}
    for face_id, name, photo, box in named_faces(library):
        by_photo[photo].append(FaceRegion(name, box))
        if photo not in sizes:
            found = library.photo(library.faces(ids=[face_id])[0].photo_id)
            sizes[photo] = (found["width"], found["height"])
    names = [Path(p) for p in by_photo]
    root = Path(os.path.commonpath([str(p.parent) for p in names])) if names else None
    files = PhotoFiles(default_cache_dir())
    written = skipped = 0
    for photo in sorted(by_photo):
        target = sidecar_path(Path(photo), None if out is None else Path(out), root)
        file = files(photo)
        if file is None:
            reason = "the photo is gone"
        elif out is None and file != Path(photo):
            reason = "the photo is inside an archive: give --out DIR"
        else:
            reason = write_sidecar(file, by_photo[photo], target, sizes[photo])
        if reason is None:
            written += 1
        else:
            skipped += 1
            log(f"  skipped {target}: {reason}")
    return {"written": written, "skipped": skipped}


def export_command(
    library: LibraryRef, out: Path, size: int = 250, log: Callable[[str], None] = print
) -> dict[str, int]:
    """``facecls export-folders``: the named faces as ``out/<person>/<face>.jpg``."""
    files = PhotoFiles(default_cache_dir())
    with opened(library) as lib:
        faces = [ExportFace(fid, name, files(photo) or Path(photo), box)
                 for fid, name, photo, box in named_faces(lib)]  # fmt: skip
    if not faces:
        raise LibraryError(f"{library}: no named faces to export; name people first")
    counts = export_folders(faces, Path(out), size, log)
    log(f"Exported {counts['faces']} faces of {counts['people']} people to {out}")
    return counts
