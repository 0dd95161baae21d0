"""``facecls index``: a small collection built from LFW faces, on both library engines."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from facecls.library.embedder import Embedder, facenet_embedder
from facecls.library.index import index_photos
from facecls.library.store import LibraryError, open_library
from tests.conftest import REPO, SHARED
from tests.library_photos import build_collection, canvas, lfw_faces, paste

WEIGHTS = SHARED / "weights" / "facenet-inception-resnet-v1-casia-webface.safetensors"
QUIET = {"log": lambda _m: None}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} is missing: tests read the FaceNet weights from ../shared/weights")
    return facenet_embedder(WEIGHTS, "cpu")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    root = tmp_path_factory.mktemp("collection") / "photos"
    return root, build_collection(root)


def snapshot(location: str) -> dict[str, tuple]:
    """Path -> (sha256, faces as sorted rounded boxes, their embeddings), for comparisons."""
    with open_library(location) as lib:
        out = {}
        for path, record in lib.files().items():
            if record.photo_id is None:
                out[path] = ("error", record.error)
                continue
            photo = lib.photo(record.photo_id)
            faces = sorted(lib.faces(photo_id=record.photo_id), key=lambda f: f.rank)
            vectors = lib.embeddings([f.id for f in faces])[1]
            boxes = tuple(tuple(round(v, 1) for v in f.box) for f in faces)
            out[path] = (photo["sha256"], boxes, vectors)
        return out


def assert_same(a: dict[str, tuple], b: dict[str, tuple]) -> None:
    assert a.keys() == b.keys()
    for path in a:
        if a[path][0] == "error":
            assert a[path] == b[path]
            continue
        assert a[path][0] == b[path][0], path
        assert len(a[path][1]) == len(b[path][1]), path
        np.testing.assert_allclose(np.array(a[path][1]), np.array(b[path][1]), atol=0.5)
        np.testing.assert_allclose(a[path][2], b[path][2], atol=2e-3)


def test_a_collection_is_indexed_face_by_face(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, library_location: str
) -> None:
    root, pasted = collection
    report = index_photos([root], library_location, embedder=embedder, **QUIET)
    assert report.photos == 8 and report.read == 8 and report.other_files == 1
    assert report.known_content == 1  # the copy: hashed, not searched again
    assert [name for name, _ in report.unreadable] == [str(root / "broken.jpg")]
    with open_library(library_location) as lib:
        files = lib.files()
        assert set(files) == set(pasted) | {str(root / "broken.jpg")}
        assert "truncated" in files[str(root / "broken.jpg")].error
        for name, centres in pasted.items():
            faces = lib.faces(photo_id=files[name].photo_id)
            assert len(faces) == len(centres), name
            for cx, cy in centres:  # every pasted face found, once
                inside = [f for f in faces if f.box[0] < cx < f.box[2] and f.box[1] < cy < f.box[3]]
                assert len(inside) == 1, (name, cx, cy)
        copy = lib.photo(files[str(root / "trip/copy of beach.jpg")].photo_id)
        assert copy["paths"] == [str(root / "trip/copy of beach.jpg"),
                                 str(root / "trip/day1/beach.jpg")]  # fmt: skip
        assert lib.counts()["faces"] == 7 and lib.counts()["photos"] == 6
        big = lib.photo(files[str(root / "phone/IMG_0001.png")].photo_id)
        assert (big["width"], big["height"]) == (1600, 1200)
        ids, vectors = lib.embeddings()
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # The stored embedding is the backbone's embedding of the face cut from the full photo.
        from facecls.data.images import load_rgb
        from facecls.data.mtcnn import Detections

        (face,) = lib.faces(photo_id=files[str(root / "trip/day1/hotel.jpg")].photo_id)
        photo = load_rgb(root / "trip/day1/hotel.jpg")
        found = Detections(np.array([face.box], np.float32), np.array([face.score], np.float32),
                           face.landmarks[None].astype(np.float32))  # fmt: skip
        (cut,) = embedder.cut(photo, found)
        expected = embedder.embed(cut.pixels.transpose(2, 0, 1)[None])[0]
        assert float(lib.embeddings([face.id])[1][0] @ expected) > 0.999
    again = index_photos([root], library_location, embedder=embedder, **QUIET)
    assert again.unchanged == 8 and again.read == 0 and len(again.unreadable) == 1


def test_reindex_follows_added_changed_touched_and_deleted_photos(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, library_location: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    root = tmp_path / "photos"
    shutil.copytree(collection[0], root)
    index_photos([root], library_location, embedder=embedder, **QUIET)
    a, b, _, _ = lfw_faces()
    new = canvas(800, 600, 9)
    paste(new, b, 300, 200, 1.0)
    new.save(root / "trip" / "new.jpg", quality=92)
    changed = canvas(800, 600, 10)
    paste(changed, a, 100, 100, 1.0)
    paste(changed, b, 450, 150, 1.0)
    changed.save(root / "trip/day1/hotel.jpg", quality=92)  # edited: now two faces
    os.utime(root / "phone/IMG_0002.jpg", (1, 1))  # touched: same bytes, new mtime
    (root / "trip/day2/dinner.jpg").unlink()
    (root / "trip/copy of beach.jpg").unlink()  # a copy gone: the photo stays
    report = index_photos([root], library_location, embedder=embedder, **QUIET)
    assert (report.read, report.new_photos, report.known_content) == (3, 2, 1)
    assert (report.removed_files, report.removed_faces) == (2, 3)
    fresh = str(tmp_path / "fresh")
    index_photos([root], fresh, embedder=embedder, **QUIET)
    assert_same(snapshot(library_location), snapshot(fresh))


def test_another_models_library_is_refused(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, tmp_path: Path
) -> None:
    index_photos([collection[0] / "trip/day1"], tmp_path / "lib", embedder=embedder, **QUIET)
    other = replace(embedder, key=replace(embedder.key, pipeline="align"))
    with pytest.raises(LibraryError, match="indexed with facenet .*box faces.* not facenet"):
        index_photos([collection[0] / "phone"], tmp_path / "lib", embedder=other, **QUIET)
    with open_library(tmp_path / "lib") as lib:
        assert lib.counts()["photos"] == 2  # nothing of the other model's was stored


def test_a_file_changing_while_read_is_not_stored(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, tmp_path: Path
) -> None:
    from facecls.data.photo_faces import FaceReader

    photo = tmp_path / "live.jpg"
    shutil.copy(collection[0] / "trip/day1/beach.jpg", photo)
    reader = FaceReader(embedder.cut, embedder.face_px, embedder.detector)

    def write_meanwhile(_sha: str) -> bool:  # runs in the reader between read and check
        with open(photo, "ab") as f:
            f.write(b"more")
        return False

    (read,) = reader.read([photo], skip=write_meanwhile)
    assert read.error and "changed while it was read" in read.error and not read.faces


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "facecls", "--quiet", "index", *args, "--weights",
            str(WEIGHTS), "--device", "cpu"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def test_an_index_killed_midway_resumes_and_ends_as_an_uninterrupted_one(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    (root / "many").mkdir(parents=True)
    faces = lfw_faces()
    for n in range(24):
        photo = canvas(640, 480, 100 + n)
        paste(photo, faces[n % 4], 40 + 10 * n, 60, 1.0)
        photo.save(root / "many" / f"{n:02d}.jpg", quality=92)
    shutil.copytree(collection[0] / "trip", root / "trip")
    library = tmp_path / "killed"
    run = subprocess.Popen(_cli(str(root), "--library", str(library), "--commit-every", "1"),
                           env=_env(), stderr=subprocess.PIPE)  # fmt: skip
    stored = 0
    deadline = time.monotonic() + 600
    while stored < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if (library / "library.sqlite").exists():
            try:
                with open_library(library, writable=False) as lib:
                    stored = lib.counts()["photos"]
            except LibraryError:
                pass
    run.send_signal(signal.SIGKILL)
    run.wait()
    with open_library(library) as lib:
        assert 2 <= lib.counts()["photos"] < 29, "the kill came after the index had finished"
    done = subprocess.run(_cli(str(root), "--library", str(library)), env=_env(),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    whole = tmp_path / "whole"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs above: the same kernels, the same boxes
    try:
        index_photos([root], whole, embedder=embedder, **QUIET)
    finally:
        torch.set_num_threads(threads)
    assert_same(snapshot(str(library)), snapshot(str(whole)))


def test_cli_refusals_are_one_line(
    collection: tuple[Path, dict[str, list]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from facecls.cli import main

    (tmp_path / "mine.txt").write_text("someone's folder")
    for args, expected in [
        (["index", str(collection[0]), "--library", str(tmp_path)], "holds other files"),
        (["index", str(tmp_path / "nowhere"), "--library", str(tmp_path / "l")], "no such file"),
        (["index", str(collection[0]), "--library", str(tmp_path / "l2"), "--weights",
          str(tmp_path / "none.safetensors")], "none.safetensors: no such file"),
        (["index", str(collection[0]), "--library", str(tmp_path / "l3"), "--min-face", "5"],
         "--min-face must be at least 12"),
    ]:  # fmt: skip
        assert main(["--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err


def test_two_torchrun_ranks_index_one_shared_library_with_every_face_once(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, postgres_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    from tests.library_fixtures import drop_database, fresh_database

    url = fresh_database(postgres_url)
    try:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", "2", "-m", "facecls", "--quiet", "index",
                   str(collection[0]), "--library", url, "--weights", str(WEIGHTS)]  # fmt: skip
        done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what each of the two ranks had
        try:
            index_photos([collection[0]], tmp_path / "one", embedder=embedder, **QUIET)
        finally:
            torch.set_num_threads(threads)
        shared = snapshot(url)
        assert_same(shared, snapshot(str(tmp_path / "one")))
        with open_library(url) as lib:
            assert lib.counts()["faces"] == 7 and lib.counts()["photos"] == 6
            table = lib.face_table()
            pairs = list(zip(table["photo_id"], table["rank"], strict=True))
            assert len(pairs) == len(set(pairs))  # no face written twice
    finally:
        drop_database(postgres_url, url)


def test_reembed_swaps_the_model_and_keeps_the_labels(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, library_location: str
) -> None:
    from facecls.data.faces import FaceCutter
    from facecls.data.images import load_rgb
    from facecls.data.mtcnn import Detections

    root = collection[0]
    index_photos([root / "trip"], library_location, embedder=embedder, **QUIET)
    with open_library(library_location) as lib:
        ids, before = lib.embeddings()
        ada = lib.create_person("Ada")
        lib.assign_faces([int(ids[0])], ada)
    aligned = FaceCutter("align", 160)
    other = replace(embedder, key=replace(embedder.key, pipeline="align"),
                    cut=lambda photo, found: aligned.faces_of(photo, found, every_face=True))  # fmt: skip
    with pytest.raises(LibraryError, match="--reembed"):
        index_photos([root / "trip", root / "phone"], library_location, embedder=other, **QUIET)
    report = index_photos([root / "trip", root / "phone"], library_location, embedder=other,
                          reembed=True, **QUIET)  # fmt: skip
    assert report.reembedded == len(ids) and report.new_photos == 2
    assert f"{len(ids)} face(s) re-embedded first" in report.summary()
    with open_library(library_location) as lib:
        assert lib.model_key() == other.key
        after = lib.embeddings(ids)[1]
        assert lib.faces(ids=[int(ids[0])])[0].person_id == ada
        assert float(np.min(np.sum(before * after, axis=1))) < 0.999  # new vectors, not the old
        files = lib.files()
        (face,) = lib.faces(photo_id=files[str(root / "trip/day1/hotel.jpg")].photo_id)
        found = Detections(np.array([face.box], np.float32), np.array([face.score], np.float32),
                           face.landmarks[None].astype(np.float32))  # fmt: skip
        (cut,) = other.cut(load_rgb(root / "trip/day1/hotel.jpg"), found)
        expected = other.embed(cut.pixels.transpose(2, 0, 1)[None])[0]
        assert float(lib.embeddings([face.id])[1][0] @ expected) > 0.999
    if not library_location.startswith("postgresql"):
        assert [p.name for p in Path(library_location).glob("embeddings*.f32")] != []
        with open_library(library_location):
            pass
        assert len(list(Path(library_location).glob("embeddings*.f32"))) == 1


def test_a_file_name_that_is_not_utf8_is_listed_not_fatal(
    collection: tuple[Path, dict[str, list]], embedder: Embedder, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    odd = os.fsencode(root) + b"/caf\xe9.jpg"  # Latin-1 bytes: not UTF-8
    with open(odd, "wb") as f:
        f.write((collection[0] / "trip/day1/hotel.jpg").read_bytes())
    report = index_photos([root], tmp_path / "lib", embedder=embedder, **QUIET)
    assert [reason for _, reason in report.unreadable] == [
        "file name is not valid UTF-8 (rename the file)"
    ]
    assert "\\xe9" in report.unreadable[0][0]
