"""The face library's vector index on both engines (SQLite and a real PostgreSQL server):
answers as brute force over the library's embeddings, follows another process's writes through
the change counter, saved and trusted only when every face it holds checks out; and
``facecls search PHOTO --library LIB`` end to end with FaceNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecls.cli import main
from facecls.library.store import FileStamp, ModelKey, NewFace, NewPhoto, open_library
from facecls.library.vectors import LibraryVectors
from facecls.vector_index import IndexSettings, brute_force_search, faiss_threads
from tests.library_photos import build_collection

KEY = ModelKey("facenet", "0" * 64, "box", 160, 16)
OTHER_KEY = ModelKey("facenet", "1" * 64, "box", 160, 16)  # other weights, the same shape
WEIGHTS_NAME = "facenet-inception-resnet-v1-casia-webface.safetensors"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    faiss_threads(1)  # a graph built in one order; no threads spinning on a busy machine
    yield
    faiss_threads(None)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_faces(
    location: str, start: int, count: int, seed: int, per_photo: int = 3, key: ModelKey = KEY
) -> None:
    """``count`` photos of ``per_photo`` random unit faces each, as ``facecls index`` stores."""
    rng = np.random.default_rng(seed)
    photos = []
    for n in range(start, start + count):
        vectors = unit(rng.standard_normal((per_photo, KEY.dim)))
        faces = [NewFace((0, 0, 10, 10), None, 0.99, v) for v in vectors]
        photos.append(NewPhoto(f"{n:064x}", 100, 100, faces, [FileStamp(f"/p/{n}.jpg", 1, n)]))
    with open_library(location, create=True) as lib:
        lib.claim_model(key)
        lib.add_photos(photos)


def assert_brute_force(vectors: LibraryVectors, queries: np.ndarray, k: int = 8) -> None:
    ids, embeddings = vectors.library.embeddings()
    want_scores, want = brute_force_search(embeddings, ids, queries, k)
    scores, got = vectors.search(queries, k)
    # the approximate engines score with float16 copies of the vectors
    np.testing.assert_allclose(
        scores, want_scores, atol=1e-5 if vectors.index.engine == "exact" else 1e-3
    )
    assert (got == want).mean() > 0.99  # the same ids, in order (random ties are rare)


def test_the_library_index_follows_another_processes_writes(library_location: str) -> None:
    add_faces(library_location, 0, 40, seed=1)
    queries = unit(np.random.default_rng(9).standard_normal((30, KEY.dim)))
    with open_library(library_location) as reader:
        vectors = LibraryVectors(reader, log=print).refresh()
        assert len(vectors.index) == 120 and vectors.seq == reader.seq()
        assert_brute_force(vectors, queries)
        add_faces(library_location, 40, 10, seed=2)  # another connection (process) writes
        assert len(vectors.index) == 120  # until the next refresh
        vectors.refresh()
        assert len(vectors.index) == 150
        assert_brute_force(vectors, queries)
        with open_library(library_location) as writer:
            gone = writer.drop_files([f"/p/{n}.jpg" for n in range(5)])
        assert gone == 15
        vectors.refresh()
        assert len(vectors.index) == 135
        assert_brute_force(vectors, queries)
        face_ids, neighbours, scores = vectors.knn_graph(4)
        assert len(face_ids) == 135 and not np.isin(neighbours, face_ids, invert=True).any()


def test_a_saved_library_index_is_reused_caught_up_or_rebuilt(
    library_location: str, tmp_path: Path
) -> None:
    approximate = IndexSettings(exact_up_to=50, approximate="hnsw")
    add_faces(library_location, 0, 60, seed=3)
    queries = unit(np.random.default_rng(8).standard_normal((20, KEY.dim)))
    path = tmp_path / "vectors.index"
    logged: list[str] = []
    with open_library(library_location) as lib:
        first = LibraryVectors(lib, approximate, path, logged.append).refresh()
        assert first.index.engine == "hnsw" and first.save() and path.is_file()
        want = first.search(queries, 5)
        # opened again: read, not rebuilt; faces written since are caught up
        add_faces(library_location, 60, 5, seed=4)
        with open_library(library_location) as writer:
            writer.drop_files(["/p/1.jpg"])
        again = LibraryVectors(lib, approximate, path, logged.append).refresh()
        assert not logged and len(again.index) == 60 * 3 + 15 - 3
        assert again.index.engine == "hnsw"
        assert (again.search(queries, 5)[1] == want[1]).mean() > 0.7  # a few new faces win
        assert_brute_force(again, queries, 3)
        # damaged: rebuilt, and said why
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
        rebuilt = LibraryVectors(lib, approximate, path, logged.append).refresh()
        assert "damaged" in logged[-1] and len(rebuilt.index) == len(again.index)
        assert rebuilt.save()
    # another library's file (same model, other faces, a counter as far): its checksums tell
    other = str(tmp_path / "other-library")
    for batch in range(6):
        add_faces(other, 20 * batch, 20, seed=10 + batch)
    with open_library(other) as lib:
        assert lib.seq() >= rebuilt.seq
        mine = LibraryVectors(lib, approximate, path, logged.append).refresh()
    assert "other embeddings" in logged[-1] and len(mine.index) == 120 * 3


def test_a_library_index_saved_by_another_model_is_rebuilt(
    library_location: str, tmp_path: Path
) -> None:
    """The same vectors under another model's key: the key alone tells, and it is rebuilt."""
    approximate = IndexSettings(exact_up_to=50, approximate="hnsw")
    add_faces(library_location, 0, 30, seed=5)
    path = tmp_path / "vectors.index"
    logged: list[str] = []
    with open_library(library_location) as lib:
        assert LibraryVectors(lib, approximate, path, logged.append).refresh().save()
    other = str(tmp_path / "other-model")
    add_faces(other, 0, 30, seed=5, key=OTHER_KEY)
    queries = unit(np.random.default_rng(7).standard_normal((20, KEY.dim)))
    with open_library(other) as lib:
        rebuilt = LibraryVectors(lib, approximate, path, logged.append).refresh()
        assert "another model" in logged[-1] and "rebuilding" in logged[-1]
        assert rebuilt.model == OTHER_KEY and len(rebuilt.index) == 90
        assert_brute_force(rebuilt, queries)
        assert rebuilt.save()
        logged.clear()
        LibraryVectors(lib, approximate, path, logged.append).refresh()  # now its own: trusted
        assert not logged


def test_past_the_largest_size_measured_it_says_so_once(library_location: str) -> None:
    add_faces(library_location, 0, 30, seed=6)  # 90 faces
    logged: list[str] = []
    with open_library(library_location) as lib:
        tested = IndexSettings(tested_up_to=100)
        vectors = LibraryVectors(lib, tested, log=logged.append).refresh()
        assert not logged  # 90 faces: within what was measured
        add_faces(library_location, 30, 5, seed=7)
        vectors.refresh().refresh()
        assert len(logged) == 1 and "105 faces, more than the 100 measured" in logged[0]


def test_search_library_finds_the_photos_face(tmp_path: Path, capsys) -> None:
    from tests.test_library_index import WEIGHTS

    photos = tmp_path / "photos"
    build_collection(photos)
    library = tmp_path / "library"
    args = ["--quiet", "index", str(photos), "--library", str(library), "--weights", str(WEIGHTS)]
    assert main(args) == 0
    query = photos / "trip" / "day1" / "hotel.jpg"
    capsys.readouterr()
    assert main(["search", str(query), "--library", str(library), "--weights", str(WEIGHTS),
                 "--top-k", "3"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert float(lines[0].split()[1]) > 0.99 and str(query) in lines[0]  # its own face
    assert "old.zip" in lines[1]  # the same person's face in the zipped scan
    assert len(lines) == 3
    # a photo without a face, and the wrong model's library: one line each
    assert main(["search", str(photos / "phone" / "IMG_0002.jpg"), "--library", str(library),
                 "--weights", str(WEIGHTS)]) == 2  # fmt: skip
    assert "no face" in capsys.readouterr().err
    assert main(["search", str(query), "--library", str(tmp_path / "none")]) == 2
    assert "Traceback" not in capsys.readouterr().err
