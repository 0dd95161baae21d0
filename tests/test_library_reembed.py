"""Re-embedding a library with another model: the store's swap (both engines) and
:mod:`facecls.library.reembed` on real photos, a zip archive among them."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facecls.data.faces import FaceCutter
from facecls.library.embedder import Embedder, facenet_embedder
from facecls.library.index import index_photos
from facecls.library.reembed import photo_file, reembed_library
from facecls.library.store import FileStamp, LibraryError, ModelKey, is_server_url, open_library
from tests.conftest import SHARED
from tests.library_photos import canvas, lfw_faces, paste, write_photo
from tests.test_library_store import KEY, new_library, photo, unit

WEIGHTS = SHARED / "weights" / "facenet-inception-resnet-v1-casia-webface.safetensors"
QUIET = {"log": lambda _m: None}
OTHER = ModelKey("other-net", "ef" * 32, "align", 112, 4)


def other_vectors(ids: np.ndarray) -> np.ndarray:
    return np.stack([unit(1000 + int(i), dim=4) for i in ids])


def test_replace_embeddings_swaps_every_vector_and_the_key_in_one_write(
    library_location: str,
) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1), photo(2, faces=1)])
        ids, _ = lib.embeddings()
        ada = lib.create_person("Ada")
        lib.assign_faces([int(ids[0])], ada)
        mark = lib.seq()
        lib.replace_embeddings(OTHER, ids[::-1], other_vectors(ids[::-1]))  # any order
        assert lib.seq() == mark + 1 and lib.model_key() == OTHER
        got_ids, vectors = lib.embeddings()
        assert list(got_ids) == list(ids) and vectors.shape == (3, 4)
        np.testing.assert_array_equal(vectors, other_vectors(ids))
        assert lib.faces(ids=[int(ids[0])])[0].person_id == ada  # labels belong to the faces
        changes = lib.changes_since(mark)  # a vector index rebuilds every face
        assert list(changes.added) == list(ids) and changes.model == OTHER
        assert len(changes.removed) == 0
        np.testing.assert_array_equal(changes.vectors, other_vectors(ids))
        lib.add_photos([photo(3, faces=0)])  # new faces after the swap go on as usual
        with pytest.raises(LibraryError, match="indexed with other-net"):
            lib.claim_model(KEY)
    with open_library(library_location) as again:
        assert again.model_key() == OTHER
        np.testing.assert_array_equal(again.embeddings()[1], other_vectors(ids))
    if not is_server_url(library_location):  # the old file goes at the next open
        assert [p.name for p in Path(library_location).glob("embeddings*.f32")] == [
            f"embeddings-{mark + 1}.f32"
        ]


def test_new_faces_after_a_swap_are_appended_to_the_new_embeddings(
    library_location: str,
) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1)])
        ids, _ = lib.embeddings()
        lib.replace_embeddings(OTHER, ids, other_vectors(ids))
        face = photo(2, faces=1).faces[0]
        extra = replace(photo(2, faces=1), faces=[replace(face, embedding=unit(77, dim=4))])
        lib.add_photos([extra])
        all_ids, vectors = lib.embeddings()
        np.testing.assert_array_equal(vectors[:2], other_vectors(ids))
        np.testing.assert_array_equal(vectors[2], unit(77, dim=4))
        assert len(all_ids) == 3


@pytest.mark.parametrize("wrong", ["a face missing", "a face twice", "an unknown face",
                                   "the wrong dimension"])  # fmt: skip
def test_replace_embeddings_refuses_anything_but_every_face_once(
    library_location: str, wrong: str
) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1), photo(2)])
        ids, before = lib.embeddings()
        seq = lib.seq()
        given = {
            "a face missing": ids[1:],
            "a face twice": np.concatenate([ids[:-1], ids[:1]]),
            "an unknown face": np.concatenate([ids[:-1], [int(ids.max()) + 100]]),
            "the wrong dimension": ids,
        }[wrong]
        vectors = other_vectors(given)
        if wrong == "the wrong dimension":
            vectors = vectors[:, :3]
        with pytest.raises(ValueError):
            lib.replace_embeddings(OTHER, given, vectors)
        assert lib.model_key() == KEY and lib.seq() == seq
        np.testing.assert_array_equal(lib.embeddings()[1], before)


def test_another_open_library_sees_the_swapped_vectors(library_location: str) -> None:
    # The same number of faces before and after: a reader must notice the file changed.
    with new_library(library_location) as lib, open_library(library_location) as reader:
        lib.add_photos([photo(1)])
        ids, before = reader.embeddings()
        np.testing.assert_array_equal(before, np.stack([unit(10), unit(11)]))
        lib.replace_embeddings(OTHER, ids, other_vectors(ids))
        np.testing.assert_array_equal(reader.embeddings()[1], other_vectors(ids))


def test_photo_paths_give_each_photo_its_content_and_paths(library_location: str) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1, paths=("/b/1.jpg", "/a/1.jpg")), photo(2, faces=0)],
                       errors=[(FileStamp("/bad.jpg", 1, 1), "truncated")])  # fmt: skip
        paths = lib.photo_paths()
        assert sorted(paths.values()) == [
            (f"{1:064x}", ["/a/1.jpg", "/b/1.jpg"]),
            (f"{2:064x}", ["/photos/2.jpg"]),
        ]
        assert paths[lib.photo_of(f"{1:064x}")][0] == f"{1:064x}"


def test_photo_file_finds_a_file_and_an_archive_member(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"plain")
    with zipfile.ZipFile(tmp_path / "old.zip", "w") as archive:
        archive.writestr("scans/1998.jpg", b"member")
    cache = tmp_path / "cache"
    assert photo_file(str(tmp_path / "a.jpg"), cache).read_bytes() == b"plain"
    assert photo_file(str(tmp_path / "old.zip/scans/1998.jpg"), cache).read_bytes() == b"member"
    gone = tmp_path / "gone" / "b.jpg"
    assert photo_file(str(gone), cache) == gone  # reading it then says it is gone


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} is missing: tests read the FaceNet weights from ../shared/weights")
    return facenet_embedder(WEIGHTS, "cpu")


def _aligned(embedder: Embedder) -> Embedder:
    """The same backbone on the ``align`` pipeline: another model key, other embeddings."""
    cutter = FaceCutter("align", 160)
    return replace(embedder, key=replace(embedder.key, pipeline="align"),
                   cut=lambda image, found: cutter.faces_of(image, found, every_face=True))  # fmt: skip


def _small_collection(root: Path) -> None:
    a, b, *_ = lfw_faces()
    write_photo(root / "beach.jpg", 900, 700, 1, [(a, 300, 200, 1.2)])
    inner = canvas(700, 500, 6)
    paste(inner, b, 200, 100, 1.1)
    packed = io.BytesIO()
    inner.save(packed, "JPEG", quality=92)
    with zipfile.ZipFile(root / "old.zip", "w") as archive:
        archive.writestr("scans/1998.jpg", packed.getvalue())


def _by_path(location: str) -> dict[str, np.ndarray]:
    with open_library(location) as lib:
        out = {}
        for path, record in lib.files().items():
            faces = lib.faces(photo_id=record.photo_id)
            out[path] = lib.embeddings([f.id for f in faces])[1]
        return out


def test_reembedding_equals_indexing_afresh_and_refuses_a_gone_photo(
    embedder: Embedder, library_location: str, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    _small_collection(root)
    other = _aligned(embedder)
    index_photos([root], library_location, embedder=embedder, **QUIET)
    with open_library(library_location) as lib:
        assert reembed_library(lib, other, log=QUIET["log"]) == 2
        assert lib.model_key() == other.key
    fresh = str(tmp_path / "fresh")
    index_photos([root], fresh, embedder=other, **QUIET)
    reembedded, expected = _by_path(library_location), _by_path(fresh)
    assert (
        reembedded.keys()
        == expected.keys()
        == {str(root / "beach.jpg"), str(root / "old.zip") + "/scans/1998.jpg"}
    )
    for path, vectors in reembedded.items():
        assert vectors.shape == expected[path].shape == (1, 512)
        assert float(vectors[0] @ expected[path][0]) > 0.99, path

    (root / "beach.jpg").write_bytes(b"edited since")  # not indexed again: the content is gone
    with open_library(library_location) as lib:
        _, before = lib.embeddings()
        with pytest.raises(LibraryError, match=r"1 photo\(s\) .*\(first: .*beach\.jpg: no file"):
            reembed_library(lib, embedder, log=QUIET["log"])
        assert lib.model_key() == other.key  # nothing swapped
        np.testing.assert_array_equal(lib.embeddings()[1], before)
