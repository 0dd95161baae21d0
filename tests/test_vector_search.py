"""Search, the service's /search and an enrolled model's nearest identities through the vector
index: the same answers as brute force, an index kept up to date as a gallery changes, a saved
index reused and a damaged one rebuilt, a ``facecls embed`` file searched as a gallery (and
refused for another model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import facecls
from facecls.cli import main
from facecls.inference.identities import NORMALISED_OVER, centroid_head, centroid_index
from facecls.inference.search import Gallery, GalleryFile, open_gallery
from facecls.service.app import Settings, create_app
from facecls.service.model_store import ModelStore
from facecls.vector_index import IndexSettings, brute_force_search
from tests import serve_fixtures

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def gallery_folder(people: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "gallery"
    for name in ("person_00", "person_02", "person_04"):
        shutil.copytree(people["train"] / name, folder / name)
    return folder


def oracle_paths(gallery: Gallery, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
    scores, ids = brute_force_search(gallery.vectors, np.arange(len(gallery.faces)), vector, k)
    return [(gallery.faces[i].path or "", float(s)) for s, i in zip(scores[0], ids[0], strict=True)]


def test_gallery_search_answers_as_brute_force_as_the_gallery_changes(
    tiny_run, people, gallery_folder
) -> None:
    model = facecls.load_model(tiny_run)
    gallery = Gallery(model, gallery_folder).refresh()
    queries = model.embed(sorted((people["train"] / "person_02").iterdir())[:4])
    for vector in queries:
        got = [(m.path, m.similarity) for m in gallery.nearest(vector, 7)]
        want = oracle_paths(gallery, vector, 7)
        assert [p for p, _ in got] == [p for p, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    index = gallery.index()
    # a new photo: added to the same index; a photo gone: the index is rebuilt without it
    shutil.copy(sorted((people["train"] / "person_05").iterdir())[0], gallery_folder / "new.png")
    gallery.refresh()
    assert gallery.index() is index and len(index) == len(gallery.faces)
    gone = sorted((gallery_folder / "person_00").iterdir())[0]
    gone.unlink()
    gallery.refresh()
    assert gallery.index() is not index and len(gallery.index()) == len(gallery.faces)
    for vector in queries:
        assert [m.path for m in gallery.nearest(vector, 5)] == [
            p for p, _ in oracle_paths(gallery, vector, 5)
        ]
    assert str(gone) not in {m.path for m in gallery.nearest(queries[0], len(gallery.faces))}


def test_a_large_gallerys_index_is_saved_reused_and_rebuilt_when_damaged(
    tiny_run, people, gallery_folder, capsys
) -> None:
    model = facecls.load_model(tiny_run)
    approximate = IndexSettings(exact_up_to=10, approximate="hnsw")
    gallery = Gallery(model, gallery_folder, index_settings=approximate).refresh()
    assert gallery.index().engine == "hnsw"
    saved = gallery.cache.with_suffix(".vectors")
    assert saved.is_file()
    query = model.embed([sorted((people["train"] / "person_04").iterdir())[1]])[0]
    first = [m.path for m in gallery.nearest(query, 3)]
    assert first == [p for p, _ in oracle_paths(gallery, query, 3)]  # easy set: found exactly
    stamp = saved.stat().st_mtime_ns
    again = Gallery(model, gallery_folder, index_settings=approximate).refresh()
    assert [m.path for m in again.nearest(query, 3)] == first
    assert saved.stat().st_mtime_ns == stamp and "rebuilding" not in capsys.readouterr().out
    data = bytearray(saved.read_bytes())
    data[len(data) // 3] ^= 0xFF
    saved.write_bytes(bytes(data))
    third = Gallery(model, gallery_folder, index_settings=approximate).refresh()
    assert [m.path for m in third.nearest(query, 3)] == first
    assert "damaged" in capsys.readouterr().out


def test_an_embeddings_file_is_a_gallery_for_its_model_only(
    tiny_run, people, gallery_folder, tmp_path, capsys
) -> None:
    out = tmp_path / "faces.safetensors"
    assert main(["--quiet", "embed", str(tiny_run), str(gallery_folder), "--out", str(out)]) == 0
    model = facecls.load_model(tiny_run)
    query = sorted((gallery_folder / "person_02").iterdir())[5]
    from_file = facecls.search(model, query, out, top_k=4)
    from_folder = facecls.search(model, query, gallery_folder, top_k=4)
    assert isinstance(open_gallery(model, out), GalleryFile)
    assert [m.path for m in from_file.matches] == [m.path for m in from_folder.matches]
    assert from_file.matches[0].path == str(query) and from_file.gallery_faces == len(
        list(gallery_folder.rglob("*.png"))
    )
    capsys.readouterr()
    assert main(["search", str(tiny_run), str(query), "--gallery", str(out), "--top-k", "2"]) == 0
    assert str(query) in capsys.readouterr().out.splitlines()[0]
    # another model (here: the same network under another weights file) is refused, one line
    other = tmp_path / "other-run"
    shutil.copytree(tiny_run, other)
    assert main(["search", str(other), str(query), "--gallery", str(out)]) == 2
    err = capsys.readouterr().err
    assert "embedded by another model" in err and "Traceback" not in err


def test_the_service_searches_an_embeddings_file(tiny_run, people, tmp_path) -> None:
    out = tmp_path / "faces.safetensors"
    photos = sorted((people["train"] / "person_03").iterdir())[:6]
    assert main(["--quiet", "embed", str(tiny_run), *map(str, photos), "--out", str(out)]) == 0
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    with TestClient(create_app(store, Settings(gallery=out))) as client:
        reply = client.post("/search", files={"file": ("q", photos[2].read_bytes())},
                            data={"top_k": "3"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # named relative to the file's folder: these photos are elsewhere, so by their name only
    assert body["gallery_faces"] == 6 and body["matches"][0]["photo"] == photos[2].name
    assert body["matches"][0]["similarity"] > 0.999


def test_the_services_search_answers_as_brute_force(
    tiny_run, people, gallery_folder, tmp_path
) -> None:
    """/search over a gallery folder: the faces and order of every cosine, ranked in numpy."""
    model = facecls.load_model(tiny_run)
    gallery = Gallery(model, gallery_folder).refresh()
    store = ModelStore(tiny_run, tmp_path / "store", device="cpu")
    queries = [sorted((people["train"] / name).iterdir())[3] for name in ("person_02", "person_05")]
    with TestClient(create_app(store, Settings(gallery=gallery_folder))) as client:
        for query, vector in zip(queries, model.embed(queries), strict=True):
            reply = client.post("/search", files={"file": ("q", query.read_bytes())},
                                data={"top_k": "8"})  # fmt: skip
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["gallery_faces"] == len(gallery.faces)
            want = oracle_paths(gallery, vector, 8)
            got = [(m["photo"], m["similarity"]) for m in body["matches"]]
            names = [Path(p).relative_to(gallery_folder).as_posix() for p, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
            # the same faces in the same order, except where two scores tie (within 1e-4)
            for rank, ((photo, _), name) in enumerate(zip(got, names, strict=True)):
                near = [n for n, (_, s) in zip(names, want, strict=True)
                        if abs(s - want[rank][1]) <= 1e-4]  # fmt: skip
                assert photo == name or photo in near, (rank, photo, name)


def test_the_centroid_head_through_the_index_answers_as_every_cosine() -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((40, 32))
    for count in (NORMALISED_OVER - 4, 3000):
        centroids = unit(rng.standard_normal((count, 32)))
        index = centroid_index(centroids, IndexSettings(engine="exact"))
        for margin in (False, True):
            full = centroid_head(features, centroids, 16.0, margin, 5)
            fast = centroid_head(features, centroids, 16.0, margin, 5, index)
            np.testing.assert_array_equal(fast.chosen, full.chosen)
            np.testing.assert_array_equal(fast.order, full.order)
            np.testing.assert_allclose(fast.score, full.score, atol=1e-5)
            if count <= NORMALISED_OVER:  # normalised over the same identities: the same
                np.testing.assert_allclose(fast.probs, full.probs, atol=1e-4)
            else:  # over the nearest 64 only: the same order, never a lower probability
                assert (fast.probs >= full.probs - 1e-6).all()


def test_an_enrolled_model_with_many_identities_names_through_the_index(
    tiny_run, people, tmp_path
) -> None:
    enrolled = facecls.enroll(tiny_run, people["new"], out=tmp_path / "enrolled", log=print)
    model = facecls.load_model(enrolled)
    photos = [p for person in sorted(people["new"].iterdir()) for p in sorted(person.iterdir())[:3]]
    logits, features = model.outputs(model.to_batch(photos))
    every = model.decide(logits, features, top_k=3)
    model.indexed_from = 2  # a real parameter: from 2 identities on, search the index
    indexed = model.decide(logits, features, top_k=3)
    assert model._centroid_index is not None and len(model._centroid_index) == len(
        model.class_names
    )
    for a, b in zip(every, indexed, strict=True):
        assert (a.identity, a.decision) == (b.identity, b.decision)
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert [n for n, _ in a.top_k] == [n for n, _ in b.top_k]
