"""The whole path on a small collection of real faces, through the command line: ``facecls index``
(MTCNN + FaceNet), ``cluster``, ``people name``, ``train --data LIB``, then new photos indexed
and ``predict --library`` suggests names for them, never over a person's label."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.cli import main
from facecls.library.store import open_library
from tests.conftest import LFW_ARCHIVE, SHARED
from tests.library_photos import canvas

WEIGHTS = SHARED / "weights" / "facenet-inception-resnet-v1-casia-webface.safetensors"
PEOPLE = ("Colin_Powell", "Tony_Blair", "Hugo_Chavez")
PER_PERSON = 7  # 5 alone, 1 in a group photo, 1 added later


def _lfw(names: tuple[str, ...], count: int) -> dict[str, list[Image.Image]]:
    wanted = {f"{n}/{n}_{k:04d}.jpg": n for n in names for k in range(1, count + 1)}
    found: dict[str, list[Image.Image]] = {n: [] for n in names}
    with tarfile.open(LFW_ARCHIVE, "r:gz") as archive:
        for member in archive:
            name = wanted.get(member.name.split("/", 1)[-1])
            if name is not None:
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                found[name].append(Image.open(io.BytesIO(data)).convert("RGB"))
    return found


def _photo(path: Path, seed: int, faces: list[tuple[Image.Image, int, int]]) -> list[tuple]:
    """LFW photos pasted at (x, y) on a 700 x 420 photo; answers their centres."""
    photo = canvas(700, 420, seed)
    for face, x, y in faces:
        photo.paste(face, (x, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    photo.save(path, quality=92)
    return [(x + 125, y + 125) for _, x, y in faces]


@pytest.mark.slow
def test_index_cluster_name_train_predict(tmp_path: Path) -> None:
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} is missing: tests read the FaceNet weights from ../shared/weights")
    faces = _lfw(PEOPLE, PER_PERSON)
    root, later = tmp_path / "photos", tmp_path / "later"
    truth: dict[str, list[tuple[tuple, str]]] = {}
    for p, name in enumerate(PEOPLE):
        for k in range(5):
            path = root / name.split("_")[0].lower() / f"{k}.jpg"
            (centre,) = _photo(path, 10 * p + k, [(faces[name][k], 40 + 60 * k, 80)])
            truth[str(path)] = [(centre, name)]
        path = later / f"{name}.jpg"
        (centre,) = _photo(path, 100 + p, [(faces[name][6], 300, 100)])
        truth[str(path)] = [(centre, name)]
    group = root / "party.jpg"
    centres = _photo(group, 99, [(faces[n][5], 20 + 230 * i, 100) for i, n in enumerate(PEOPLE)])
    truth[str(group)] = list(zip(centres, PEOPLE, strict=True))
    library, runs = str(tmp_path / "library"), tmp_path / "runs"
    quiet = ["--quiet"]

    assert main([*quiet, "index", str(root), "--library", library, "--weights", str(WEIGHTS),
                 "--device", "cpu"]) == 0  # fmt: skip
    assert main([*quiet, "cluster", library]) == 0
    with open_library(library) as lib:
        who = _who(lib, truth)
        clusters = [p for p in lib.people() if p.faces >= 2]
        assert len(clusters) == len(PEOPLE)
        for person in clusters:  # each cluster is one person (FaceNet, real photos)
            members = {who[f.id] for f in lib.faces(person_id=person.id)}
            assert len(members) == 1 and members != {None}
            assert main([*quiet, "people", library, "name", str(person.id), members.pop()]) == 0
        assert sorted(p.name for p in lib.people() if p.name) == sorted(PEOPLE)
        human = {f.id: f.person_id for f in lib.faces() if f.source == "human"}
        assert len(human) >= 3 * 6

    assert main([*quiet, "train", "--data", library, "--model", "baseline", "--image-size",
                 "32", "--epochs", "2", "--batch-size", "8", "--runs-dir", str(runs),
                 "--name", "lib", "--device", "cpu"]) == 0  # fmt: skip
    meta = json.loads((runs / "lib" / "model" / "model.json").read_text())
    assert meta["class_names"] == sorted(PEOPLE)

    assert main([*quiet, "index", str(root), str(later), "--library", library, "--weights",
                 str(WEIGHTS), "--device", "cpu"]) == 0  # fmt: skip
    assert main([*quiet, "predict", str(runs / "lib"), "--library", library]) == 0
    with open_library(library) as lib:
        after = {f.id: f for f in lib.faces()}
        assert {f: after[f].person_id for f in human} == human  # a person's labels stay
        new = [f for f in after.values() if f.id not in human]
        assert all(f.source in (None, "suggestion") for f in new)
        names = {lib.person(f.person_id).name for f in new if f.source == "suggestion"}
        assert names <= set(PEOPLE)


def _who(lib, truth: dict[str, list[tuple[tuple, str]]]) -> dict[int, str | None]:  # noqa: ANN001
    """The true person of each face: the pasted LFW face whose centre its box holds."""
    found: dict[int, str | None] = {}
    for name, record in lib.files().items():
        for face in lib.faces(photo_id=record.photo_id) if record.photo_id else []:
            x1, y1, x2, y2 = face.box
            hits = [n for (cx, cy), n in truth.get(name, []) if x1 < cx < x2 and y1 < cy < y2]
            found[face.id] = hits[0] if hits else None
    return found


def test_lfw_faces_are_read(tmp_path: Path) -> None:
    """The photos the path test pastes exist (a guard that fails, not skips)."""
    found = _lfw(PEOPLE[:1], 2)
    assert len(found[PEOPLE[0]]) == 2 and found[PEOPLE[0]][0].size == (250, 250)
    assert np.asarray(found[PEOPLE[0]][0]).std() > 10
