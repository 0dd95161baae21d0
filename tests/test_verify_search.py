"""embed, verify and search: embeddings of faces, the calibrated verification threshold, a
cached gallery search; bad photos listed and skipped, an unreadable one a clear error."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import facecls
from facecls.cli import main
from facecls.inference.verify_threshold import calibrate_verification, threshold_at_far
from tests import serve_fixtures

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures


def test_threshold_at_far_accepts_at_most_that_share_of_impostors() -> None:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.1, 0.2, 1000)
    for far in (0.0, 0.01, 0.05, 0.2):
        t = threshold_at_far(impostor, far)
        assert np.mean(impostor >= t) <= far
        # the lowest such threshold: one impostor pair more is accepted just below it
        assert np.mean(impostor >= np.nextafter(t, -np.inf)) > far or t <= impostor.min()
    with pytest.raises(ValueError):
        threshold_at_far(impostor, 1.0)


def test_calibrate_verification_on_separable_people() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16))
    targets = np.repeat(np.arange(5), 8)
    vectors = centres[targets] + 0.05 * rng.normal(size=(40, 16))
    entry = calibrate_verification(vectors, targets, far=0.01)
    stats = entry["calibration"]
    assert stats["genuine_pairs"] == 5 * 28 and stats["impostor_pairs"] == 40 * 39 // 2 - 140
    assert stats["false_accept_rate"] <= 0.01 and stats["true_accept_rate"] > 0.95
    lonely = calibrate_verification(vectors[:1], targets[:1])  # no pair at all
    assert "threshold" not in lonely and "no pair" in lonely["missing"]


def test_training_stores_the_verify_threshold(tiny_run: Path) -> None:
    meta = json.loads((tiny_run / "model" / "model.json").read_text())
    entry = meta["verify"]
    assert entry["far"] == 0.01 and -1.0 <= entry["threshold"] <= 1.0 + 1e-6
    assert entry["calibration"]["false_accept_rate"] <= 0.01
    assert entry["calibration"]["impostor_pairs"] > 0


def test_calibrating_adds_thresholds_for_people_enrolled_from_few_photos(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Training defers the centroid pass; facecls calibrate (or the first enroll) makes it,
    with a threshold for people enrolled from one photo, two, ..."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["--quiet", "calibrate", str(run)]) == 0
    meta = json.loads((run / "model" / "model.json").read_text())
    tables = meta["openset"]["enrolled_thresholds"]
    assert "1" in tables["centroid"] and "1" in tables["margin"]
    assert "margin" in meta["openset"]["thresholds"]
    assert "verify" in meta


def test_embed_writes_unit_vectors_and_an_index(tiny_run, people, tmp_path, capsys) -> None:
    photos = sorted((people["train"] / "person_00").iterdir())[:3]
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "e.safetensors"
    args = ["embed", str(tiny_run), *map(str, photos), str(tmp_path / "broken.jpg")]
    assert main([*args, "--out", str(out)]) == 0
    vectors = load_file(str(out))["embeddings"]
    with (tmp_path / "e.csv").open(newline="") as f:
        index = list(csv.DictReader(f))
    assert [r["photo"] for r in index] == [str(p) for p in photos]
    assert vectors.shape[0] == 3 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert "broken.jpg" in capsys.readouterr().out  # listed as skipped
    # the same vectors as the model's own embed
    expected = facecls.load_model(tiny_run).embed([str(p) for p in photos])
    assert np.allclose(vectors, expected, atol=1e-4)


def test_verify_same_and_different_people(tiny_run, people, capsys) -> None:
    a, b = sorted((people["train"] / "person_01").iterdir())[:2]
    other = sorted((people["train"] / "person_04").iterdir())[0]
    same = facecls.verify(tiny_run, a, b)
    different = facecls.verify(tiny_run, a, other)
    # The contract, not what a 20-epoch model learned on one CPU: the similarity is the cosine
    # of the two faces' embeddings, the decision compares it with the threshold, and a photo
    # compared with itself is the separable case (similarity 1, above any other pair).
    model = facecls.load_model(tiny_run)
    va, vb, vo = (model.embed([photo])[0] for photo in (a, b, other))  # one at a time, as verify
    assert same.similarity == pytest.approx(float(va @ vb), abs=1e-4)
    assert different.similarity == pytest.approx(float(va @ vo), abs=1e-4)
    for answer in (same, different):
        assert answer.same == (answer.similarity >= answer.threshold)
    itself = facecls.verify(tiny_run, a, a)
    assert itself.similarity == pytest.approx(1.0, abs=1e-5)
    assert itself.similarity >= max(same.similarity, different.similarity) - 1e-6
    assert same.threshold == pytest.approx(
        json.loads((tiny_run / "model" / "model.json").read_text())["verify"]["threshold"]
    )
    assert facecls.verify(tiny_run, a, other, threshold=-1.0).same  # --threshold overrides
    assert main(["verify", str(tiny_run), str(a), str(b), "--threshold", "2"]) == 0
    assert "different people: similarity" in capsys.readouterr().out


def test_verify_bad_photo_and_uncalibrated_bundle(tiny_run, people, tmp_path, capsys) -> None:
    a = sorted((people["train"] / "person_01").iterdir())[0]
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert main(["verify", str(tiny_run), str(a), str(tmp_path / "empty.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.jpg" in err[0] and "Traceback" not in err[0]
    bundle = tmp_path / "old"
    shutil.copytree(tiny_run / "model", bundle)
    meta = json.loads((bundle / "model.json").read_text())
    del meta["verify"]
    (bundle / "model.json").write_text(json.dumps(meta))
    assert main(["verify", str(bundle), str(a), str(a)]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["verify", str(bundle), str(a), str(a), "--threshold", "0.5"]) == 0


def test_search_finds_the_photo_and_caches_the_gallery(tiny_run, people, tmp_path) -> None:
    gallery = tmp_path / "gallery"
    for name in ("person_00", "person_02", "person_03"):
        shutil.copytree(people["train"] / name, gallery / name)
    (gallery / "corrupt.png").write_bytes(b"\x89PNG not really")
    (gallery / "notes.txt").write_text("not a photo")
    query = sorted((gallery / "person_02").iterdir())[3]
    model = facecls.load_model(tiny_run)
    logged: list[str] = []
    first = facecls.search(model, query, gallery, top_k=5, log=logged.append)
    assert first.matches[0].path == str(query) and first.matches[0].similarity > 0.999
    sims = [m.similarity for m in first.matches]
    assert sims == sorted(sims, reverse=True) and len(sims) == 5
    assert {Path(p).name for p, _ in first.skipped} == {"corrupt.png", "notes.txt"}
    assert any("corrupt.png" in line for line in logged)
    photos = sum(1 for _ in gallery.rglob("*.png")) - 1
    assert first.gallery_faces == photos
    caches = list((Path(os.environ["FACECLS_CACHE"]) / "gallery").glob("*.safetensors"))
    assert caches

    gallery_object = facecls.inference.search.Gallery(model, gallery)
    assert gallery_object.refresh().embedded == 0  # nothing changed: all from the cache
    assert len(gallery_object.faces) == photos
    # one new photo and one removed: only the new one is embedded
    new = sorted((people["train"] / "person_05").iterdir())[0]
    shutil.copy(new, gallery / "newcomer.png")
    sorted((gallery / "person_00").iterdir())[0].unlink()
    again = facecls.inference.search.Gallery(model, gallery).refresh()
    assert again.embedded == 1 and len(again.faces) == photos
    # a gallery kept in memory (the service's) sees the same changes without reading the cache
    assert gallery_object.refresh().embedded == 1 and len(gallery_object.faces) == photos
    assert gallery_object.refresh().embedded == 0
    assert sorted(f.path for f in gallery_object.faces) == sorted(f.path for f in again.faces)
    top = again.nearest(model.embed([str(gallery / "newcomer.png")])[0], 1)
    assert top[0].path == str(gallery / "newcomer.png")


def test_few_shot_thresholds_accept_enrolled_people_like_trained_ones() -> None:
    """Identities enrolled from k photos: the k-shot threshold accepts about ``acceptance`` of
    their other photos (fresh draws), where the trained-centroid threshold accepts far fewer."""
    from facecls.openset import class_centroids, cosine
    from facecls.openset_thresholds import (
        few_shot_thresholds,
        shot_threshold,
        threshold_at_acceptance,
    )

    rng = np.random.default_rng(2)
    classes, dim = 20, 32
    centres = rng.normal(size=(classes, dim)) * 2

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        targets = np.repeat(np.arange(classes), n)
        return centres[targets] + rng.normal(size=(classes * n, dim)), targets

    train, train_t = sample(40)
    val, val_t = sample(12)
    centroids = class_centroids(train, train_t, classes)
    own = cosine(val, centroids)[np.arange(len(val_t)), val_t]
    trained_threshold = threshold_at_acceptance(own, 0.95)
    table = few_shot_thresholds(val, val_t, None, 0.95)
    assert set(table) == {"1", "2", "3", "5", "10"}
    assert table["1"] < table["3"] < table["10"] < trained_threshold  # noisier centroid, lower
    # fresh people enrolled from 3 photos, probed with 9 others
    fresh, fresh_t = sample(12)
    accepted_own, accepted_trained = [], []
    for c in range(classes):
        rows = fresh[fresh_t == c]
        shot = rows[:3].mean(axis=0)
        shot /= np.linalg.norm(shot)  # centroids are unit vectors
        cos = cosine(rows[3:], shot[None])[:, 0]
        accepted_own.append(cos >= shot_threshold(table, 3))
        accepted_trained.append(cos >= trained_threshold)
    assert abs(np.mean(accepted_own) - 0.95) < 0.05
    assert np.mean(accepted_trained) < 0.8
    assert shot_threshold(table, 4) == table["3"] and shot_threshold(table, 50) == table["10"]
    assert shot_threshold({}, 3) is None
    # only the photos marked as probes are scored: the easiest half gives a higher threshold
    easy = cosine(val, centroids)[np.arange(len(val_t)), val_t] > np.median(own)
    assert few_shot_thresholds(val, val_t, easy, 0.95)["3"] > table["3"]


def test_few_shot_thresholds_count_every_person_equally() -> None:
    """One person with many near-identical photos does not set the k-shot threshold for
    everyone: the threshold follows the many people with ordinary photos."""
    from facecls.openset_thresholds import few_shot_thresholds, threshold_at_acceptance

    rng = np.random.default_rng(4)
    dim = 32
    centres = rng.normal(size=(11, dim)) * 2
    # ten ordinary people with 6 photos each, one with 200 tight photos
    counts = [6] * 10 + [200]
    noise = [1.0] * 10 + [0.1]
    targets = np.repeat(np.arange(11), counts)
    spread = zip(counts, noise, strict=True)
    features = np.concatenate(
        [centres[c] + rng.normal(size=(n, dim)) * s for c, (n, s) in enumerate(spread)]
    )
    ordinary = few_shot_thresholds(features[targets < 10], targets[targets < 10], None, 0.95)
    mixed = few_shot_thresholds(features, targets, None, 0.95)
    # without weights the tight person's 197 probes per draw would push the threshold up to
    # their cosines (about 0.99); weighted, it stays near the ordinary people's
    assert abs(mixed["3"] - ordinary["3"]) < 0.05
    # the weighted quantile itself: weight 3 on the lowest score rejects nothing at 80 %
    assert threshold_at_acceptance(np.array([0.1, 0.5, 0.9]), 0.8, np.array([3.0, 1, 1])) == 0.1
    assert threshold_at_acceptance(np.array([0.1, 0.5, 0.9]), 0.7, np.array([1.0, 1, 3])) == 0.5
    assert threshold_at_acceptance(np.array([0.1, 0.5, 0.9]), 0.6, np.array([1.0, 1, 3])) == 0.9
    assert threshold_at_acceptance(np.array([0.3, 0.1, 0.2]), 0.5) == 0.2


def test_an_enrolled_model_keeps_the_score_and_threshold_it_is_given(
    tiny_run: Path, people, tmp_path: Path
) -> None:
    """Enrolled models decide by margin, unless facecls calibrate set another score or a
    threshold by hand; a calibrated bundle without a score's threshold refuses that score
    instead of accepting everyone."""
    from facecls.bundle import BundleError

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["--quiet", "calibrate", str(run)]) == 0
    newcomer = tmp_path / "new"
    shutil.copytree(sorted(people["new"].iterdir())[0], newcomer / "Ada")
    enrolled = facecls.enroll(run, newcomer, tmp_path / "enrolled", log=lambda _m: None)
    model = facecls.load_model(enrolled)
    assert model.method == "margin"
    ada = model.class_names.index("Ada")
    # Its own threshold for the number of photos it was enrolled from, never above the trained
    # people's (what a tiny model's table holds varies with the CPU's kernels: set it by hand).
    assert model.threshold_of(ada) <= model.threshold
    meta_file = enrolled / "model.json"
    meta = json.loads(meta_file.read_text())
    table = meta["openset"]["enrolled_thresholds"]["margin"]
    meta["openset"]["enrolled_thresholds"]["margin"] = {k: 0.123 for k in table}
    meta_file.write_text(json.dumps(meta))
    assert facecls.load_model(enrolled).threshold_of(ada) == pytest.approx(0.123)
    assert main(["--quiet", "calibrate", str(enrolled), "--method", "centroid",
                 "--threshold", "0.55"]) == 0  # fmt: skip
    model = facecls.load_model(enrolled)
    assert (model.method, model.threshold, model.threshold_of(ada)) == ("centroid", 0.55, 0.55)
    assert main(["--quiet", "calibrate", str(enrolled), "--threshold", "0.3"]) == 0
    model = facecls.load_model(enrolled)
    assert (model.method, model.threshold_of(ada)) == ("centroid", 0.3)
    # a bundle calibrated before the margin score existed
    meta_path = run / "model" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["openset"]["thresholds"]["margin"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="no calibrated margin threshold"):
        facecls.load_model(run, method="margin")


def test_search_marks_the_matches_at_or_above_the_verify_threshold(
    tiny_run, people, tmp_path, capsys
) -> None:
    gallery = tmp_path / "gallery"
    for name in ("person_01", "person_04"):
        shutil.copytree(people["train"] / name, gallery / name)
    query = sorted((gallery / "person_01").iterdir())[2]
    model = facecls.load_model(tiny_run)
    stored = model.meta["verify"]
    found = facecls.search(model, query, gallery, top_k=10)
    assert (found.threshold, found.far) == (stored["threshold"], stored["far"])
    assert [m.same for m in found.matches] == [
        m.similarity >= stored["threshold"] for m in found.matches
    ]
    assert found.matches[0].same  # the query itself, similarity 1
    # A threshold between the 3rd and 4th matches marks exactly the first three, here and in
    # the command's output.
    sims = [m.similarity for m in found.matches]
    cut = next(i for i in range(3, 10) if sims[i - 1] > sims[i])
    bundle = shutil.copytree(tiny_run / "model", tmp_path / "bundle")
    meta = json.loads((bundle / "model.json").read_text())
    meta["verify"]["threshold"] = (sims[cut - 1] + sims[cut]) / 2
    (bundle / "model.json").write_text(json.dumps(meta))
    marked = facecls.search(bundle, query, gallery, top_k=10)
    assert [m.same for m in marked.matches] == [True] * cut + [False] * (10 - cut)
    capsys.readouterr()
    assert main(["--quiet", "search", str(bundle), str(query), "--gallery", str(gallery),
                 "--top-k", str(cut + 1)]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert [" same " in line for line in lines[:-1]] == [True] * cut + [False]
    assert lines[-1].startswith(f"(same: similarity >= {meta['verify']['threshold']:.4f}")
    # A model without a verify threshold marks nothing, and says so.
    del meta["verify"]
    (bundle / "model.json").write_text(json.dumps(meta))
    assert {m.same for m in facecls.search(bundle, query, gallery).matches} == {None}
    assert main(["--quiet", "search", str(bundle), str(query), "--gallery", str(gallery)]) == 0
    assert "no verify threshold" in capsys.readouterr().out
