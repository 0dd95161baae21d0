"""From a face library to a model and back: cluster a pile of photos (some with two people),
name the clusters, ``train --data LIB`` on exactly the named faces cut where the library found
them, ``enroll --data LIB`` the newcomers, and ``predict --library`` writes suggestions that
never cover a person's label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.cli import main
from facecls.config import DataConfig
from facecls.data.dataset import load_dataset
from facecls.data.faces import FaceCutter
from facecls.data.sources import scan_folder
from facecls.library import people
from facecls.library.people_commands import cluster_command
from facecls.library.store import FileStamp, ModelKey, NewFace, NewPhoto, open_library

DIM = 16
LEFT, RIGHT = (5.0, 10.0, 45.0, 50.0), (55.0, 10.0, 95.0, 50.0)


@pytest.fixture
def pile(synthetic_folder: Path, tmp_path: Path) -> tuple[Path, str, dict[int, str]]:
    """Every synthetic face pasted on a 100 x 60 photo (every third with the next person's
    face beside it), indexed into a library with embeddings that separate the people.
    Answers the photos' folder, the library and the true name of each face id."""
    scan = scan_folder(synthetic_folder)
    names = sorted({r.identity for r in scan.refs})
    rng = np.random.default_rng(0)
    centres = np.eye(DIM)[: len(names)]  # people far apart: clustering finds each
    photos_dir = tmp_path / "pile"
    photos_dir.mkdir()
    photos, truth = [], []
    for n, ref in enumerate(scan.refs):
        canvas = Image.new("RGB", (100, 60), (60, 60, 60))
        canvas.paste(Image.open(ref.path).convert("RGB"), (5, 10))
        who = [ref.identity]
        if n % 3 == 0:
            other = next(r for r in scan.refs if r.identity != ref.identity)
            canvas.paste(Image.open(other.path).convert("RGB"), (55, 10))
            who.append(other.identity)
        path = photos_dir / f"IMG_{n:04d}.png"
        canvas.save(path)
        faces = []
        for box, name in zip((LEFT, RIGHT), who, strict=False):
            v = centres[names.index(name)] + rng.normal(scale=0.05, size=DIM)
            faces.append(NewFace(box, None, 0.99, (v / np.linalg.norm(v)).astype(np.float32)))
            truth.append(name)
        stat = path.stat()
        photos.append(NewPhoto(f"{n:064x}", 100, 60, faces,
                               [FileStamp(str(path), stat.st_size, stat.st_mtime_ns)]))  # fmt: skip
    location = str(tmp_path / "library")
    with open_library(location, create=True) as lib:
        lib.claim_model(ModelKey("test-net", "ef" * 32, "box", 160, DIM))
        lib.add_photos(photos)
        ids, _ = lib.embeddings()
    return photos_dir, location, dict(zip(ids.tolist(), truth, strict=True))


def _name_clusters(location: str, truth: dict[int, str]) -> None:
    with open_library(location) as lib:
        for person in lib.people():
            faces = [f.id for f in lib.faces(person_id=person.id)]
            people.name(lib, person.id, truth[faces[0]])


def test_cluster_name_train_enroll_predict(pile, tmp_path: Path) -> None:
    photos_dir, location, truth = pile
    cluster_command(location, log=lambda _m: None)
    names = sorted(set(truth.values()))
    newcomer = names[-1]
    held = sorted(f for f, n in truth.items() if n == names[0])[:2]
    with open_library(location) as lib:
        lib.assign_faces(held, None, "cluster")  # the machine's label taken away: no person
    _name_clusters(location, truth)
    with open_library(location) as lib:
        assert sorted(p.name for p in lib.people()) == names  # the synthetic people are apart
        people.forget(lib, newcomer)  # not trained on
        human = {f.id: f.person_id for f in lib.faces() if f.source == "human"}
        assert not set(held) & set(human)
    trained = [n for n in names if n != newcomer]
    expected = sum(1 for f, n in truth.items() if n in trained and f not in held)

    dataset = load_dataset(DataConfig(source=location, image_size=32), log=lambda _m: None)
    assert dataset.class_names == trained and len(dataset) == expected
    cutter = FaceCutter("centre", 32)
    with open_library(location) as lib:
        boxes = {f.id: f.box for f in lib.faces()}
    for i, path in enumerate(dataset.paths):  # each face cut where the library found it
        face_id = int(path.rsplit("#", 1)[1])
        assert truth[face_id] == dataset.class_names[int(dataset.targets[i])]
        photo = np.asarray(Image.open(photos_dir / path.split("/")[-1].split("#")[0]))
        assert np.array_equal(dataset.images[i].numpy().transpose(1, 2, 0),
                              cutter.cut_known(photo, boxes[face_id], None).pixels)  # fmt: skip

    runs = tmp_path / "runs"
    assert main(["--quiet", "train", "--data", location, "--model", "baseline", "--image-size",
                 "32", "--epochs", "2", "--batch-size", "16", "--runs-dir", str(runs),
                 "--name", "lib"]) == 0  # fmt: skip
    meta = json.loads((runs / "lib" / "model" / "model.json").read_text())
    assert meta["class_names"] == trained

    with open_library(location) as lib:
        people.forget(lib, newcomer, hidden=False)  # named again: enroll adds them
    enrolled = tmp_path / "enrolled"
    assert main(["--quiet", "enroll", str(runs / "lib"), "--data", location,
                 "--out", str(enrolled)]) == 0  # fmt: skip
    assert json.loads((enrolled / "model.json").read_text())["enrolled"]["names"] == [newcomer]

    suggest = ["--quiet", "predict", str(runs / "lib"), "--library", location]
    assert main([*suggest, "--threshold", "0"]) == 0  # honoured: every face clears it
    with open_library(location) as lib:
        open_faces = [f for f in lib.faces() if not f.ignored and f.source != "human"]
        assert open_faces and all(f.source == "suggestion" for f in open_faces)
        assert lib.undo() is not None
    assert main([*suggest, "--threshold", "2"]) == 0  # and no face clears this one
    with open_library(location) as lib:
        assert not [f for f in lib.faces() if f.source == "suggestion"]
    assert main([*suggest, "--annotate", str(tmp_path / "drawn")]) == 2  # for photos only
    assert not (tmp_path / "drawn").exists()
    assert main(suggest) == 0
    with open_library(location) as lib:
        after = {f.id: f for f in lib.faces()}
        assert {f: after[f].person_id for f in human} == human  # never over a person's label
        suggested = [f for f in after.values() if f.source == "suggestion"]
        assert {lib.person(f.person_id).name for f in suggested} <= set(trained)
        assert {f.id for f in suggested} <= set(held) | {
            f.id for f in after.values() if f.id not in human
        }
        assert lib.undo() is not None  # the suggestions are one action
        assert not [f for f in lib.faces() if f.source == "suggestion"]
    dataset_again = load_dataset(DataConfig(source=location, image_size=32), log=lambda _m: None)
    assert newcomer in dataset_again.class_names  # named and shown again: trained on now


def test_a_library_without_names_is_refused_in_one_line(pile) -> None:
    from facecls.data.sources import DataError

    _, location, _ = pile
    with pytest.raises(DataError, match="no named faces") as caught:
        load_dataset(DataConfig(source=location, image_size=32), log=lambda _m: None)
    assert "\n" not in str(caught.value)


def test_export_folders_and_xmp_from_the_library(pile, tmp_path: Path) -> None:
    photos_dir, location, truth = pile
    cluster_command(location, log=lambda _m: None)
    _name_clusters(location, truth)
    before = {p.name: p.read_bytes() for p in photos_dir.iterdir()}
    assert main(["--quiet", "export-folders", location, str(tmp_path / "out"), "--size",
                 "40"]) == 0  # fmt: skip
    exported = scan_folder(tmp_path / "out")
    assert len(exported.refs) == len(truth)
    assert {r.identity for r in exported.refs} == set(truth.values())
    assert main(["--quiet", "people", location, "write-xmp", "--out", str(tmp_path / "xmp")]) == 0
    sidecars = sorted((tmp_path / "xmp").rglob("*.xmp"))
    assert len(sidecars) == len(before)
    assert {p.name: p.read_bytes() for p in photos_dir.iterdir()} == before  # untouched


def test_the_training_query_on_both_engines(library_location: str, tmp_path: Path) -> None:
    """Named faces only: not a forgotten person's, not an ignored face, not a suggestion; a
    face whose photo is gone is listed as skipped; the box and landmarks come along."""
    from facecls.data.library_source import scan_data, scan_library

    files = []
    for n in range(4):
        path = tmp_path / f"p{n}.png"
        Image.new("RGB", (100, 60)).save(path)
        files.append(path)
    marks = np.arange(10, dtype=np.float32).reshape(5, 2)
    photos = [
        NewPhoto(f"{n:064x}", 100, 60,
                 [NewFace(LEFT, marks, 0.9, np.eye(DIM, dtype=np.float32)[k]) for k in range(3)],
                 [FileStamp(str(path), 1, 1)])
        for n, path in enumerate(files)
    ]  # fmt: skip
    with open_library(library_location, create=True) as lib:
        lib.claim_model(ModelKey("test-net", "ef" * 32, "box", 160, DIM))
        lib.add_photos(photos)
        faces = [f.id for f in lib.faces()]  # photo by photo, 3 faces each
        ada, bob, eve = (lib.create_person(n) for n in ("Ada Lovelace", "Bob", "Eve"))
        lib.assign_faces(faces[0:3], ada, "human")
        lib.assign_faces(faces[3:5], bob, "cluster")
        lib.assign_faces(faces[5:6], bob, "suggestion")  # a model's guess: not trained on
        lib.assign_faces(faces[6:8], eve, "human")
        lib.hide_person(eve)  # forgotten
        lib.assign_faces(faces[8:9], ada, "human")
        lib.ignore_faces(faces[2:3])
        crowd = lib.create_person(None, hidden=True)  # a forgotten cluster: no name
        lib.assign_faces(faces[9:10], crowd, "cluster")  # photo 3's faces: no one else's
    files[1].unlink()  # photo 1 (faces 3-5) is gone
    scan = scan_data(library_location, tmp_path / "cache", lambda _m: None)
    assert scan.kind == "library" and "facecls-test" not in scan.location  # no password shown
    assert [(r.identity, r.path.name) for r in scan.refs] == [
        ("Ada Lovelace", "p0.png"), ("Ada Lovelace", "p0.png"), ("Ada Lovelace", "p2.png")
    ]  # fmt: skip
    box, points = scan.refs[0].known_face()
    assert box == LEFT and np.array_equal(points, marks)
    assert [s["path"].split("#")[1] for s in scan.skipped] == [str(f) for f in faces[3:5]]
    # the strangers of calibrate --strangers LIB: the forgotten people's faces, one each
    forgotten = scan_library(library_location, tmp_path / "cache", forgotten=True)
    assert [(r.identity, r.path.name) for r in forgotten.refs] == [
        ("Eve", "p2.png"), ("Eve", "p2.png"), (f"cluster {crowd}", "p3.png")
    ]  # fmt: skip
    assert forgotten.refs[2].known_face()[0] == LEFT


def test_forgotten_people_are_the_strangers_calibrate_sets_thresholds_on(
    pile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``calibrate RUN --strangers LIB``: the people forgotten in the library (not ones the user
    cares about, so not trained on) play the strangers, each face cut where the library found
    it, each person counted once. Without a forgotten person: one line, and the model is left as
    it was; nor with a trained person forgotten since (the line names them)."""
    _, location, truth = pile
    cluster_command(location, log=lambda _m: None)
    _name_clusters(location, truth)
    names = sorted(set(truth.values()))
    with open_library(location) as lib:
        for name in names[-2:]:
            people.forget(lib, name)
    runs = tmp_path / "runs"
    assert main(["--quiet", "train", "--data", location, "--model", "baseline", "--image-size",
                 "32", "--epochs", "2", "--batch-size", "16", "--runs-dir", str(runs),
                 "--name", "lib"]) == 0  # fmt: skip
    model_json = runs / "lib" / "model" / "model.json"
    assert json.loads(model_json.read_text())["class_names"] == names[:-2]
    calibrate = ["--quiet", "calibrate", str(runs / "lib"), "--strangers", location, "--fpir"]

    with open_library(location) as lib:  # remembered: nobody is forgotten
        for name in names[-2:]:
            people.forget(lib, name, hidden=False)
    before = model_json.read_bytes()
    assert main([*calibrate, "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no forgotten people" in err and "forget" in err and "\n" not in err
    assert model_json.read_bytes() == before

    with open_library(location) as lib:  # forgotten again
        for name in names[-2:]:
            people.forget(lib, name)
    faces = sum(1 for n in truth.values() if n in names[-2:])
    assert main([*calibrate, "0.5"]) == 0
    meta = json.loads(model_json.read_text())["openset"]
    assert meta["calibration"]["strangers"] == {"photos": faces, "people": 2}
    for rates in meta["rates"].values():
        assert rates["strangers_named"] <= 0.5 + 1e-9
    # the model card now shows the operating point just set
    card = (runs / "lib" / "model" / "MODEL_CARD.md").read_text()
    assert "photos of 2 strangers given to `facecls calibrate --strangers`" in card

    # a person the model was trained on, forgotten since: calibration says whom, in one line
    with open_library(location) as lib:
        people.forget(lib, names[0])
    before = model_json.read_bytes()
    assert main(["--quiet", "calibrate", str(runs / "lib")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"the model knows {names[0]}, whom the data no longer holds" in err
    assert "\n" not in err and model_json.read_bytes() == before


def test_the_identity_difference_says_who() -> None:
    """The one-line reason a model's identities differ from its data's: who is missing (at most
    five named), who is new, or only the order."""
    from facecls.data.dataset import identity_difference

    model = [f"p{i}" for i in range(9)]
    assert identity_difference(model[:2], model).startswith(
        "the model knows p2, p3, p4, p5, p6 and 2 more, whom the data no longer holds"
    )
    assert identity_difference([*model, "new"], model) == (
        "the data holds new, whom the model does not know"
    )
    assert identity_difference(model[::-1], model) == "the same people in another order"
