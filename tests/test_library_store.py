"""The face library's store: the same contract on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from facecls.library.store import (
    FileStamp,
    LibraryError,
    ModelKey,
    NewFace,
    NewPhoto,
    is_server_url,
    open_library,
)

KEY = ModelKey("test-net", "ab" * 32, "box", 160, 8)


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def photo(n: int, faces: int = 2, paths: tuple[str, ...] | None = None) -> NewPhoto:
    """Photo ``n``: ``faces`` faces with embeddings from seeds n*10+k, at /photos/<n>.jpg."""
    found = [
        NewFace((10.0 * k, 5.0, 10.0 * k + 40.0, 55.0), np.full((5, 2), k, np.float32), 0.9,
                unit(n * 10 + k))
        for k in range(faces)
    ]  # fmt: skip
    names = paths or (f"/photos/{n}.jpg",)
    return NewPhoto(f"{n:064x}", 640, 480, found, [FileStamp(p, 1000 + n, 7) for p in names])


def new_library(location: str):
    lib = open_library(location, create=True)
    lib.claim_model(KEY)
    return lib


def test_a_library_is_made_once_and_opened_after(library_location: str) -> None:
    with pytest.raises(LibraryError, match="no face library there"):
        open_library(library_location)
    with new_library(library_location) as lib:
        assert lib.counts() == dict(photos=0, files=0, unreadable=0, faces=0, people=0,
                                    clusters=0)  # fmt: skip
    with open_library(library_location) as again:
        assert again.model_key() == KEY


def test_photos_faces_and_embeddings_come_back_as_stored(library_location: str) -> None:
    with new_library(library_location) as lib:
        seq = lib.add_photos([photo(1), photo(2, faces=1), photo(3, faces=0)])
        lib.add_photos([], errors=[(FileStamp("/photos/bad.jpg", 3, 9), "not an image")])
        assert lib.seq() == seq + 1
        ids, vectors = lib.embeddings()
        assert len(ids) == 3 and vectors.shape == (3, 8) and vectors.dtype == np.float32
        expected = np.stack([unit(10), unit(11), unit(20)])
        np.testing.assert_array_equal(vectors, expected)
        first = lib.faces(photo_id=lib.photo_of(f"{1:064x}"))
        assert [f.rank for f in first] == [0, 1] and first[1].box == (10.0, 5.0, 50.0, 55.0)
        assert first[1].size == 50 and np.array_equal(first[1].landmarks, np.ones((5, 2)))
        files = lib.files()
        assert files["/photos/bad.jpg"].error == "not an image"
        assert files["/photos/bad.jpg"].photo_id is None
        assert files["/photos/3.jpg"].photo_id is not None  # a photo without faces is known
        assert lib.counts()["unreadable"] == 1 and lib.counts()["photos"] == 3
        table = lib.face_table()
        assert list(table["id"]) == list(ids) and list(table["person_id"]) == [-1, -1, -1]


def test_two_copies_share_one_set_of_faces(library_location: str) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1, paths=("/a/1.jpg", "/b/copy.jpg"))])
        lib.add_photos([photo(1, paths=("/c/late.jpg",))])  # another process stored it first
        pid = lib.photo_of(f"{1:064x}")
        assert lib.photo(pid)["paths"] == ["/a/1.jpg", "/b/copy.jpg", "/c/late.jpg"]
        assert lib.face_count() == 2
        assert lib.drop_files(["/a/1.jpg", "/b/copy.jpg"]) == 0  # one copy is left
        assert lib.face_count() == 2
        before = lib.seq()
        assert lib.drop_files(["/c/late.jpg"]) == 2
        changes = lib.changes_since(before)
        assert len(changes.removed) == 2 and len(changes.added) == 0
        assert lib.counts()["photos"] == 0


def test_a_path_with_new_content_drops_the_old_photo(library_location: str) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1)])
        lib.add_photos([photo(2, paths=("/photos/1.jpg",))])  # the file was edited
        assert lib.photo_of(f"{1:064x}") is None and lib.face_count() == 2
        ids, vectors = lib.embeddings()
        np.testing.assert_array_equal(vectors, np.stack([unit(20), unit(21)]))


def test_changes_since_lists_what_a_vector_index_must_add_and_remove(
    library_location: str,
) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1)])
        mark = lib.seq()
        lib.add_photos([photo(2)])
        lib.drop_files(["/photos/1.jpg"])
        changes = lib.changes_since(mark)
        ids, _ = lib.embeddings()
        assert list(changes.added) == list(ids) and changes.model == KEY
        np.testing.assert_array_equal(changes.vectors, np.stack([unit(20), unit(21)]))
        assert len(changes.removed) == 2 and changes.seq == lib.seq()
        assert set(changes.removed).isdisjoint(ids)


def test_another_model_and_a_newer_facecls_are_refused(library_location: str) -> None:
    with new_library(library_location) as lib:
        other = ModelKey("facenet", "cd" * 32, "align", 160, 512)
        with pytest.raises(LibraryError, match="indexed with test-net .* not facenet"):
            lib.claim_model(other)
        lib.claim_model(KEY)  # the same model is welcome
        if is_server_url(library_location):
            lib._run("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            lib._run("UPDATE meta SET value = '9.1.0' WHERE key = 'facecls_version'")
    if not is_server_url(library_location):
        with sqlite3.connect(Path(library_location) / "library.sqlite") as raw:
            raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            raw.execute("UPDATE meta SET value = '9.1.0' WHERE key = 'facecls_version'")
    with pytest.raises(LibraryError, match=r"written by facecls 9\.1\.0 .*upgrade facecls"):
        open_library(library_location)


def test_labels_people_and_undo(library_location: str) -> None:
    with new_library(library_location) as lib:
        lib.add_photos([photo(1), photo(2)])
        a, b, c, d = (int(i) for i in lib.embeddings()[0])
        cluster = lib.create_person()
        assert lib.assign_faces([a, b, c], cluster, "cluster") == 3
        lib.name_person(cluster, "  Ada Lovelace ")
        assert lib.person(cluster).name == "Ada Lovelace" and lib.person(cluster).faces == 3
        lib.assign_faces([c], None)  # a person says c is not Ada
        assert lib.assign_faces([c, d], cluster, "suggestion") == 1  # c's human word stays
        assert lib.faces(ids=[c])[0].person_id is None
        other = lib.create_person("Grace Hopper")
        lib.assign_faces([d], other)
        lib.merge_people(other, cluster)
        assert [p.name for p in lib.people()] == ["Ada Lovelace"]
        assert lib.undo() == f"merge {other} into {cluster}"
        assert lib.person(other).name == "Grace Hopper"
        assert lib.faces(ids=[d])[0].person_id == other
        lib.hide_person(other)
        assert [p.name for p in lib.people(hidden=False)] == ["Ada Lovelace"]
        lib.forget_person(cluster)
        assert lib.faces(ids=[a])[0].person_id is None
        lib.undo()  # the forget
        assert lib.faces(ids=[a])[0].person_id == cluster and lib.faces(ids=[a])[0].source
        with lib.action("split", "split Ada"):
            new = lib.create_person()
            lib.assign_faces([b], new, "cluster")
        assert lib.faces(ids=[b])[0].person_id == new
        assert lib.undo() == "split Ada"
        assert lib.faces(ids=[b])[0].person_id == cluster
        assert new not in {p.id for p in lib.people()}
        assert [h["kind"] for h in lib.history(3)] == ["split", "forget", "hide"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 10_000, "two\nlines"])
def test_bad_names_are_refused_in_one_line(library_location: str, name: str) -> None:
    with new_library(library_location) as lib:
        person = lib.create_person()
        with pytest.raises(LibraryError) as caught:
            lib.name_person(person, name)
        assert "\n" not in str(caught.value) and "name" in str(caught.value)
        assert lib.person(person).name is None


def test_names_are_any_unicode(library_location: str) -> None:
    with new_library(library_location) as lib:
        names = ["Zoë Ñúñez", "王小明", "<script>alert(1)</script>", "O'Brien; DROP TABLE faces"]
        for name in names:
            lib.name_person(lib.create_person(), name)
        assert sorted(p.name for p in lib.people()) == sorted(names)
        assert lib.person_named("王小明") is not None


def _add_many(location: str, first: int, count: int) -> None:
    with open_library(location) as lib:
        for n in range(first, first + count):
            lib.add_photos([photo(n)])


def test_two_processes_adding_at_once_lose_nothing(library_location: str) -> None:
    new_library(library_location).close()
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_add_many, args=(library_location, s, 25)) for s in (0, 100)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    with open_library(library_location) as lib:
        assert lib.counts()["photos"] == 50 and lib.face_count() == 100
        for n in (0, 24, 100, 124):
            pid = lib.photo_of(f"{n:064x}")
            ids = [f.id for f in lib.faces(photo_id=pid)]
            np.testing.assert_array_equal(
                lib.embeddings(ids)[1], np.stack([unit(n * 10), unit(n * 10 + 1)])
            )


def test_a_second_process_sees_a_new_face(library_location: str) -> None:
    with new_library(library_location) as lib, open_library(library_location) as other:
        mark = other.seq()
        timer = threading.Timer(0.3, lambda: lib.add_photos([photo(5)]))
        timer.start()
        now = other.wait_for_change(mark, timeout=30)
        timer.join()
        assert now > mark and len(other.changes_since(mark).added) == 2


def test_rows_past_the_committed_count_are_ignored_and_overwritten(tmp_path: Path) -> None:
    location = tmp_path / "library"
    with new_library(str(location)) as lib:
        lib.add_photos([photo(1)])
    # What a process killed between writing its rows and committing its faces leaves behind.
    with open(location / "embeddings.f32", "ab") as f:
        f.write(np.full((3, 8), 7.0, "<f4").tobytes())
    with open_library(location) as lib:
        assert len(lib.embeddings()[0]) == 2
        lib.add_photos([photo(2)])
        _, vectors = lib.embeddings()
        np.testing.assert_array_equal(vectors, np.stack([unit(k) for k in (10, 11, 20, 21)]))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 1 MiB file system (tmpfs), remountable read-only; tests run as root."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("dim", [4096, 4], ids=["embeddings-fill-it", "database-fills-it"])
def test_a_full_disk_keeps_every_committed_photo(small_disk: Path, dim: int) -> None:
    from facecls.atomic import WriteError

    wide = ModelKey("test-net", "ab" * 32, "box", 160, dim)
    stored, name = 0, "x" * 3000  # long paths fill the database first when vectors are short
    with open_library(small_disk / "library", create=True) as lib:
        lib.claim_model(wide)
        with pytest.raises(WriteError, match="no space left on the disk of"):
            for n in range(2000):
                faces = [NewFace((0, 0, 9, 9), None, 0.9, np.full(dim, n, np.float32))]
                files = [FileStamp(f"/{n}/{name}", 1, 1)]
                lib.add_photos([NewPhoto(f"{n:064x}", 9, 9, faces, files)])
                stored += 1
    assert 0 < stored < 2000
    with open_library(small_disk / "library", writable=False) as lib:
        ids, vectors = lib.embeddings()
        assert len(ids) == stored == lib.counts()["photos"]
        assert np.array_equal(vectors[:, 0], np.arange(stored, dtype=np.float32))


def test_a_read_only_disk_is_refused_for_writing_and_read_all_the_same(small_disk: Path) -> None:
    import subprocess

    with new_library(str(small_disk / "library")) as lib:
        lib.add_photos([photo(1)])
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(LibraryError, match="read-only"):
        open_library(small_disk / "library")
    with pytest.raises(LibraryError, match="cannot make the library folder"):
        open_library(small_disk / "new", create=True)
    with open_library(small_disk / "library", writable=False) as lib:
        assert lib.face_count() == 2


def test_a_library_is_never_made_in_someone_elses_folder(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(LibraryError, match="holds other files and no library"):
        open_library(tmp_path, create=True)
    assert [p.name for p in tmp_path.iterdir()] == ["holiday.jpg"]


def test_server_problems_are_one_line_each(postgres_url: str) -> None:
    from tests.library_fixtures import with_database

    host = postgres_url.split("@", 1)[1].split("/", 1)[0]
    wrong = postgres_url.replace(":facecls-test@", ":wrong@")
    with pytest.raises(LibraryError, match="refused the login .*check the user and password"):
        open_library(wrong)
    with pytest.raises(LibraryError) as caught:
        open_library(wrong)
    assert "wrong" not in str(caught.value)  # the password is never printed
    nobody = postgres_url.replace(host, "127.0.0.1:1")
    with pytest.raises(LibraryError, match="no PostgreSQL server answers there"):
        open_library(nobody)
    with pytest.raises(LibraryError, match="does not exist.*createdb"):
        open_library(with_database(postgres_url, "no_such_db"), create=True)
