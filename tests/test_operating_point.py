"""The operating point by the stranger rate: thresholds at a target FPIR on pseudo-strangers,
calibration views of faces as photos show them, the fallback of a small validation part, and
models calibrated before it (they decide as before and say how to recalibrate)."""

from __future__ import annotations

import json
import shutil
import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facecls
from facecls import openset, openset_calibration, openset_fpir
from facecls.cli import main
from facecls.data.faces import FaceCutter
from facecls.data.views import make_views, render_view
from facecls.report.operating import band_lines, how_set, operating_point
from tests import serve_fixtures

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures


def test_threshold_at_fpir_on_a_known_distribution() -> None:
    """Stranger scores ~ N(0, 1): the threshold at FPIR 1 % is the 99th percentile, 2.326, and
    fresh strangers from the same distribution are named about 1 % of the time."""
    rng = np.random.default_rng(0)
    strangers = rng.normal(size=20_000)
    t = openset_fpir.threshold_at_fpir(strangers, 0.01)
    assert t == pytest.approx(2.326, abs=0.06)
    assert np.mean(strangers >= t) <= 0.01
    assert np.mean(rng.normal(size=200_000) >= t) == pytest.approx(0.01, abs=0.0015)
    assert openset_fpir.threshold_at_fpir(strangers, 0.5) == pytest.approx(0.0, abs=0.03)


def _people(rng: np.random.Generator, centres: np.ndarray, ids: np.ndarray, n: int):
    targets = np.repeat(ids, n)
    return centres[targets] + rng.normal(size=(len(targets), centres.shape[1])), targets


def test_calibration_at_fpir_names_that_share_of_new_strangers() -> None:
    """Centroid scores of a fixed embedding: pseudo-strangers (validation people left out of
    their own centroid) stand for people never trained on, so the threshold set at FPIR 1 %
    names about 1 % of fresh strangers; the rule and rates are recorded."""
    rng = np.random.default_rng(1)
    classes, dim = 80, 24
    centres = rng.normal(size=(classes + 400, dim)) * 0.75
    train, train_t = _people(rng, centres, np.arange(classes), 20)
    val, val_t = _people(rng, centres, np.arange(classes), 20)
    logits = 4.0 * openset.cosine(val, openset.class_centroids(train, train_t, classes))
    cal = openset_calibration.calibrate(
        train, train_t, logits, val, val_t, classes, method="margin", fpir=0.01
    )
    assert cal.rule == "fpir" and cal.meta()["fpir"] == 0.01 and cal.meta()["version"] == 2
    strangers, _ = _people(rng, centres, np.arange(classes, classes + 400), 25)
    for method in ("centroid", "margin", "fused"):
        fresh = openset.scores(method, 4.0 * openset.cosine(strangers, cal.centroids), strangers,
                               cal.centroids)  # fmt: skip
        assert np.mean(fresh >= cal.thresholds[method]) == pytest.approx(0.01, abs=0.005)
        assert cal.rates[method]["pseudo_strangers_named"] <= 0.01
        assert 0.0 < cal.rates[method]["named"] <= 1.0


def test_each_validation_person_counts_once_as_a_stranger() -> None:
    """A long tail: one person holds half the validation photos and every one of them looks
    like someone else (a sibling). Counted per photo, that person alone would push the
    threshold above every sibling-like score; counted per person they are one stranger in
    100, so at FPIR 1 % the threshold sits among the other people's scores."""
    rng = np.random.default_rng(3)
    sibling = np.full(100, 0.9)
    others = rng.uniform(0.0, 0.5, size=99)
    scores = np.r_[sibling, others]
    targets = np.r_[np.zeros(100, int), np.arange(1, 100)]
    weights = openset_fpir.person_weights(targets)
    assert weights.sum() == pytest.approx(100.0)
    per_photo = openset_fpir.threshold_at_fpir(scores, 0.01)
    per_person = openset_fpir.threshold_at_fpir(scores, 0.01, weights)
    assert per_photo > 0.9 and per_person <= 0.9
    assert openset_fpir.stranger_rate(scores, per_person, weights) <= 0.01 + 1e-12
    assert openset_fpir.stranger_rate(scores, per_photo) <= 0.01
    # equal weights are the per-photo rule
    assert openset_fpir.threshold_at_fpir(others, 0.05, np.ones(99)) == (
        openset_fpir.threshold_at_fpir(others, 0.05)
    )


def test_a_validation_part_too_small_falls_back_to_acceptance() -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 8)) * 2
    train, train_t = _people(rng, centres, np.arange(5), 10)
    val, val_t = _people(rng, centres, np.arange(5), 8)
    logits = val @ centres.T
    cal = openset_calibration.calibrate(train, train_t, logits, val, val_t, 5, fpir=0.01)
    meta = cal.meta()
    assert meta["rule"] == "acceptance" and meta["fpir"] is None
    assert "needs at least 500" in meta["calibration"]["fallback"]
    correct = logits.argmax(1) == val_t
    assert np.mean(openset.scores("msp", logits)[correct] >= cal.thresholds["msp"]) >= 0.95


@pytest.mark.parametrize("fpir", ["0", "0.7", "-0.01", "nan"])
def test_fpir_outside_the_range_is_refused_in_one_line(
    tiny_run: Path, fpir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate", str(tiny_run), "--fpir", fpir]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--fpir" in err and "(0, 0.5]" in err


def test_training_records_the_fallback_in_model_json(tiny_run: Path) -> None:
    """The tiny run's validation part is far below the 500 faces a 1 % target needs."""
    openset_entry = json.loads((tiny_run / "model" / "model.json").read_text())["openset"]
    assert openset_entry["rule"] == "acceptance" and openset_entry["version"] == 2
    assert "fallback" in openset_entry["calibration"]
    assert openset_entry["calibration"]["views"] > 0  # the views joined the validation faces
    # the log, the report and the card say how to set it by the stranger rate instead
    from facecls.inference.calibration_store import describe

    assert "--strangers" in describe(openset_entry)
    point = operating_point({"openset": openset_entry})
    assert point is not None and "--strangers PHOTOS/" in how_set(point)


def test_an_old_model_json_decides_as_before_and_says_how_to_recalibrate(
    tiny_run: Path, people: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    meta_path = run / "model" / "model.json"
    meta = json.loads(meta_path.read_text())
    # the openset entry as facecls wrote it before operating points by the stranger rate
    meta["openset"] = {
        "method": "msp", "threshold": 0.6, "thresholds": {"msp": 0.6, "energy": 2.0},
        "acceptance": 0.95, "calibration": {"validation_images": 30, "validation_correct": 29},
    }  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    model = facecls.load_model(run)
    assert model.method == "msp" and model.threshold == 0.6
    assert "facecls calibrate" in model.calibration_note
    photos = sorted((people["new"] / sorted(p.name for p in people["new"].iterdir())[0]).iterdir())
    answers = model.predict(photos[:6])
    for answer in answers:
        assert (answer.decision == "known") == (answer.score >= 0.6)
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), *map(str, photos[:2]), "--out", str(out)]) == 0
    assert "facecls calibrate" in capsys.readouterr().out


def _lfw_photos(archive: Path, count: int) -> list[np.ndarray]:
    photos = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and "/George_W_Bush/" in member.name:
                data = tar.extractfile(member).read()
                photos.append(np.asarray(Image.open(BytesIO(data)).convert("RGB")))
                if len(photos) == count:
                    break
    return photos


def test_calibration_views_are_the_same_for_a_seed(lfw_archive: Path) -> None:
    photos = _lfw_photos(lfw_archive, 4)
    cutter = FaceCutter("box", 96)
    first = make_views(photos, [None] * 4, cutter, seed=3)
    again = make_views(photos, [None] * 4, cutter, seed=3, chunk=1)  # batching changes nothing
    assert len(first.faces) >= 3 and first.lost + len(first.faces) == 4
    assert np.array_equal(first.faces, again.faces)
    assert np.array_equal(first.source, again.source)
    other = make_views(photos, [None] * 4, cutter, seed=4)
    assert not np.array_equal(first.faces[:1], other.faces[:1])
    # the face is drawn 40-120 px wide (the detector's box, so a little more or less)
    assert np.all((first.face_px > 30) & (first.face_px < 160))
    # a view holds the face off the canvas centre, tilted, JPEG-compressed: a new photo
    rng = np.random.default_rng([3, 0])
    canvas, centre, width = render_view(photos[0], None, rng)
    assert canvas.shape[0] > width and canvas.shape[1] > width and 40 <= width <= 120
    centre_views = make_views(photos, [None] * 4, FaceCutter("centre", 64), seed=3)
    assert centre_views.faces.shape == (4, 3, 64, 64) and centre_views.lost == 0


def test_rates_per_face_size_band_as_the_report_and_card_show_them() -> None:
    px = np.array([50, 50, 80, 80, 200, 200, np.nan])
    known = np.array([0.9, 0.2, 0.9, 0.9, 0.9, 0.1, 0.9])
    correct = np.array([True, True, True, False, True, True, True])  # 80 px: one named wrongly
    strangers = np.array([0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9])
    rows = openset_fpir.band_rates(known, correct, strangers, px, threshold=0.5)
    assert [r["band"] for r in rows] == ["< 60 px", "60-100 px", "> 160 px"]  # none 100-160
    assert [r["faces"] for r in rows] == [2, 2, 2]  # the face of unknown size left out
    assert [r["named"] for r in rows] == [0.5, 0.5, 0.5]
    assert [r["strangers_unknown"] for r in rows] == [0.5, 1.0, 1.0]
    meta = {"openset": {
        "method": "margin", "threshold": 0.5, "rule": "fpir", "fpir": 0.01, "version": 2,
        "rates": {"margin": {"named": 0.9, "bands": rows}},
        "calibration": {"pseudo_strangers": 300},
    }}  # fmt: skip
    point = operating_point(meta)
    assert point is not None and point["method"] == "margin" and not point["old"]
    assert "1.0% of 300 pseudo-strangers" in how_set(point) and "90.0%" in how_set(point)
    assert "--strangers" in how_set(point)  # how to set it on real strangers instead
    assert "forgotten in a face library" in how_set(point)
    table = band_lines(point)
    assert len(table) == 2 + 3 and table[2] == "| < 60 px | 2 | 50.0% | 50.0% |"
    old = operating_point({"openset": {"method": "msp", "threshold": 0.6, "acceptance": 0.95}})
    assert old is not None and old["old"] and band_lines(old) == []
    assert "accept 95%" in how_set(old) and "facecls calibrate" in how_set(old)
    assert operating_point({}) is None


def test_calibrate_on_real_strangers_names_at_most_the_target_share_of_them(
    tiny_run: Path, people: dict[str, Path], tmp_path: Path
) -> None:
    """``calibrate --strangers``: the thresholds are set on photos of people the model does not
    know, so ``predict`` names at most ``--fpir`` of them (each person counted once), and the
    model card says how the threshold was set."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    code = main(["--quiet", "calibrate", str(copy), "--strangers", str(people["new"]),
                 "--fpir", "0.1"])  # fmt: skip
    assert code == 0
    openset_meta = json.loads((copy / "model" / "model.json").read_text())["openset"]
    photos = sorted(people["new"].rglob("*.png"))
    assert openset_meta["calibration"]["strangers"] == {
        "photos": len(photos), "people": len({p.parent for p in photos})
    }  # fmt: skip
    for rates in openset_meta["rates"].values():
        assert rates["strangers_named"] <= 0.1 + 1e-9
    # people enrolled later are held to the same strangers: per photo count, never above the
    # trained threshold
    assert openset_meta["calibration"]["enrolled_rule"] == "stranger_rate"
    assert set(openset_meta["enrolled_thresholds"]) == {"centroid", "margin"}
    for method, table in openset_meta["enrolled_thresholds"].items():
        assert max(table.values()) <= openset_meta["thresholds"][method]
    answers = facecls.load_model(copy).predict(photos)
    folders = np.unique([str(p.parent) for p in photos], return_inverse=True)[1]
    named = np.array([a.decision == "known" for a in answers])
    per_person = [named[folders == k].mean() for k in range(folders.max() + 1)]
    assert np.mean(per_person) <= 0.1 + 1e-9
    point = operating_point(json.loads((copy / "model" / "model.json").read_text()))
    assert point is not None and "--strangers" in how_set(point)


def test_too_few_strangers_are_refused_in_one_line_and_nothing_changes(
    tiny_run: Path, people: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    before = (copy / "model" / "model.json").read_bytes()
    one = next(p for p in sorted(people["new"].iterdir()) if p.is_dir())
    for extra, expected in (
        ([], "too few"),  # about 20 photos: FPIR 1 % needs 500
        (["--acceptance", "0.9"], "--fpir"),
        (["--threshold", "0.5"], "--strangers"),
    ):
        capsys.readouterr()
        assert main(["calibrate", str(copy), "--strangers", str(one), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err, err
    assert (copy / "model" / "model.json").read_bytes() == before


def test_look_alikes_by_name_in_the_report_card_and_log() -> None:
    """The look-alike pairs a calibration records (class indices) reach the report, the model
    card and the calibrate log by the people's names; a model without them shows no table."""
    from facecls.inference.calibration_store import describe_look_alikes
    from facecls.report.operating import look_alike_lines

    pairs = [{"person": 2, "as": 0, "score": 0.47, "photos": 3},
             {"person": 0, "as": 2, "score": 0.43, "photos": 6}]  # fmt: skip
    openset = {"method": "fused", "threshold": 0.4, "rule": "fpir", "fpir": 0.01, "version": 2,
               "rates": {"fused": {"named": 0.99, "look_alikes": pairs}}}  # fmt: skip
    names = ["George", "Laura", "Jeb"]
    point = operating_point({"openset": openset, "class_names": names})
    assert point is not None
    assert [(p["person"], p["as"]) for p in point["look_alikes"]] == [
        ("Jeb", "George"),
        ("George", "Jeb"),
    ]
    assert look_alike_lines(point)[2:] == ["| Jeb | George | 0.4700 | 3 |",
                                           "| George | Jeb | 0.4300 | 6 |"]  # fmt: skip
    line = describe_look_alikes(openset, names)
    assert line is not None and "Jeb as George (0.470), George as Jeb (0.430)" in line
    assert "\n" not in line
    band = {"band": "< 60 px", "faces": 4, "named": 0.75, "strangers": 4, "strangers_unknown": 1.0}
    openset["rates"]["fused"]["bands"] = [band]
    point = operating_point({"openset": openset, "class_names": names})
    assert point is not None and point["bands"] == [band]
    by_hand = dict(openset, set_by_hand=True, threshold=0.2)  # rates of another threshold
    point = operating_point({"openset": by_hand, "class_names": names})
    assert point is not None and point["look_alikes"] == [] and point["bands"] == []
    openset["rates"]["fused"]["look_alikes"] = []
    point = operating_point({"openset": openset, "class_names": names})
    assert point is not None and look_alike_lines(point) == []
    assert describe_look_alikes(openset, names) is None
