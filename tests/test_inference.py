"""Using a trained model: predict CSV, streaming, unknown decisions, enrollment, ONNX, the API.

One small baseline is trained once on 6 synthetic identities; 3 more identities are never trained
on: they are the strangers, and later the people enrolled without retraining.
"""

from __future__ import annotations

import csv
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import facecls
from facecls.cli import main

TRAINED, NEW = 6, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``train/`` (6 people), ``enroll/`` (5 photos of 3 new people), ``probe/`` (their others)."""
    from facecls.data.synthetic import SyntheticSpec, write_synthetic_folder

    base = tmp_path_factory.mktemp("people")
    spec = SyntheticSpec(
        num_classes=TRAINED + NEW, max_per_class=30, min_per_class=20, image_size=40, seed=3
    )
    root = write_synthetic_folder(base / "all", spec)
    names = sorted(p.name for p in root.iterdir())
    for name in names[:TRAINED]:
        shutil.copytree(root / name, base / "train" / name)
    for name in names[TRAINED:]:
        files = sorted((root / name).iterdir())
        for part, chosen in (("enroll", files[:5]), ("probe", files[5:])):
            (base / part / name).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, base / part / name / f.name)
    return {k: base / k for k in ("train", "enroll", "probe")} | {"base": base}


@pytest.fixture(scope="module")
def run(people: dict[str, Path]) -> Path:
    code = main([
        "--quiet", "train", "--data", str(people["train"]), "--image-size", "32", "--epochs",
        "30", "--batch-size", "16", "--lr", "1e-3", "--recipe", "report",
        "--runs-dir", str(people["base"] / "runs"),
        "--name", "t",
    ])  # fmt: skip
    assert code == 0
    return people["base"] / "runs" / "t"


def test_training_stores_calibration(run: Path, tmp_path: Path) -> None:
    """Training stores the logit thresholds (no pass over the data); calibrate adds centroids."""
    meta = json.loads((run / "model" / "model.json").read_text())
    openset = meta["openset"]
    assert openset["method"] == "msp"
    assert set(openset["thresholds"]) == {"msp", "energy"}
    assert "centroid" in openset["deferred"]
    assert not (run / "model" / "centroids.safetensors").is_file()
    model = facecls.load_model(run)
    assert model.threshold == pytest.approx(openset["threshold"])
    copy = tmp_path / "t"
    shutil.copytree(run, copy)
    assert main(["--quiet", "calibrate", str(copy)]) == 0
    again = json.loads((copy / "model" / "model.json").read_text())["openset"]
    assert set(again["thresholds"]) == {"msp", "energy", "centroid", "margin", "fused"}
    assert facecls.load_model(copy).centroids.shape[0] == TRAINED


def test_predict_csv_columns_and_bad_files(run: Path, people: dict[str, Path], tmp_path: Path):
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "p.csv"
    inputs = [str(people["train"] / "person_00"), str(tmp_path / "broken.jpg"),
              str(tmp_path / "missing.png")]  # fmt: skip
    assert main(["--quiet", "predict", str(run), *inputs, "--out", str(out), "--top-k", "3"]) == 0
    table = rows(out)
    assert list(table[0]) == [
        "path", "face", "faces", "box", "landmarks", "decision", "identity", "score", "top1",
        "top1_probability", "top2", "top2_probability", "top3", "top3_probability", "reason", "closest",
    ]  # fmt: skip
    errors = {Path(r["path"]).name: r["reason"] for r in table if r["decision"] == "error"}
    assert set(errors) == {"broken.jpg", "missing.png"}
    assert (
        "not an image" in errors["broken.jpg"] and "no such file or folder" in errors["missing.png"]
    )
    faces = [r for r in table if r["decision"] != "error"]
    assert len(faces) == len(list((people["train"] / "person_00").iterdir()))
    for r in faces:
        probs = [float(r[f"top{i}_probability"]) for i in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert r["identity"] in ("unknown", r["top1"])
    # The CSV says what the library answers (what a small model learns differs between CPUs)
    model = facecls.load_model(run)
    library = {p.path: p for p in model.predict(sorted((people["train"] / "person_00").iterdir()))}
    tol = 2e-2  # bf16 autocast (on CPUs with native bf16): other batches, other last bits
    for r in faces:
        answer = library[r["path"]]
        assert float(r["score"]) == pytest.approx(answer.score, abs=tol)
        if abs(answer.score - model.threshold) > tol:
            assert (r["decision"], r["identity"]) == (answer.decision, answer.identity)


def test_streaming_chunks_give_identical_output(run: Path, people: dict[str, Path]) -> None:
    model = facecls.load_model(run)
    from facecls.inference.model import predict_files

    whole = list(predict_files(model, [people["probe"], people["train"]], chunk_size=1000))
    chunked = list(predict_files(model, [people["probe"], people["train"]], chunk_size=7))
    assert len(whole) == len(chunked) > 7
    # Under bf16 autocast (the default on CPUs with native bf16) a batch's size changes the
    # kernels and so the last bits; a face within that much of the threshold may flip.
    tol, threshold = 2e-2, model.threshold
    for a, b in zip(whole, chunked, strict=True):
        assert a.path == b.path
        assert a.score == pytest.approx(b.score, abs=tol)
        if abs(a.score - threshold) > tol:
            assert (a.decision, a.identity) == (b.decision, b.identity)


def test_the_unknown_decision_follows_the_calibrated_threshold(
    run: Path, people: dict[str, Path]
) -> None:
    """Known people and strangers alike: "known" exactly when the score reaches the calibrated
    threshold. (How many strangers a 30-epoch model rejects is what it learned on one CPU's
    kernels; telling a separable stranger apart is tested in test_openset.py.)"""
    model = facecls.load_model(run)
    openset = json.loads((run / "model" / "model.json").read_text())["openset"]
    assert model.threshold == pytest.approx(openset["threshold"])
    answers = model.predict([people["train"]]) + model.predict([people["probe"]])
    for p in answers:
        assert p.decision == ("known" if p.score >= model.threshold else "unknown")
        assert p.identity == (p.top_k[0][0] if p.decision == "known" else "unknown")
    # --threshold overrides: -inf accepts everyone, +inf rejects everyone.
    everyone = facecls.load_model(run, threshold=-1e9).predict([people["probe"]])
    assert all(p.decision == "known" for p in everyone)
    nobody = facecls.load_model(run, threshold=1e9).predict([people["probe"]])
    assert all(p.decision == "unknown" for p in nobody)


def test_enrollment_names_new_people_without_retraining(
    run: Path, people: dict[str, Path], tmp_path: Path
) -> None:
    weights = (run / "model" / "model.safetensors").read_bytes()
    out = tmp_path / "enrolled"
    assert main(["--quiet", "enroll", str(run), "--data", str(people["enroll"]), "--out",
                 str(out)]) == 0  # fmt: skip
    assert (run / "model" / "model.safetensors").read_bytes() == weights  # original untouched
    new_names = sorted(p.name for p in people["enroll"].iterdir())
    model = facecls.load_model(out)
    assert model.class_names[-NEW:] == new_names and len(model.class_names) == TRAINED + NEW
    before = facecls.load_model(run, threshold=-1e9).predict([people["probe"]])
    assert not {p.top_k[0][0] for p in before} & set(new_names)  # not nameable before
    # A new person is the normalised mean of their photos' embeddings, so (Cauchy-Schwarz) the
    # photos are on average closer to it than to any other centroid, whatever was learned.
    centroids = model.centroids
    for k, name in enumerate(new_names):
        vectors = model.embed(sorted((people["enroll"] / name).iterdir()))
        expected = vectors.mean(0) / np.linalg.norm(vectors.mean(0))
        own = centroids[TRAINED + k]
        assert float(own @ expected) == pytest.approx(1.0, abs=1e-3)
        mean_cos = (vectors @ centroids.T).mean(0)
        assert mean_cos[TRAINED + k] >= mean_cos.max() - 1e-3
    # Five photos a person say nothing more; two say that the person will be named less often.
    lines: list[str] = []
    facecls.enroll(run, people["enroll"], tmp_path / "five", log=lines.append)
    assert not any("fewer than" in line for line in lines)
    few = tmp_path / "few" / new_names[0]
    few.mkdir(parents=True)
    for photo in sorted((people["enroll"] / new_names[0]).iterdir())[:2]:
        shutil.copy(photo, few / photo.name)
    facecls.enroll(run, few.parent, tmp_path / "two", log=lines.append)
    assert f"1 enrolled from fewer than 5 photos: {new_names[0]} (2)" in lines[-1]
    # Enrolling a trained identity's name is refused.
    clash = tmp_path / "clash" / "person_00"
    shutil.copytree(people["train"] / "person_00", clash)
    assert main(["--quiet", "enroll", str(run), "--data", str(clash.parent)]) == 2


def test_api_mirrors_the_commands(run: Path, people: dict[str, Path]) -> None:
    model = facecls.load_model(run)
    files = sorted((people["train"] / "person_01").iterdir())[:4]
    from facecls.data.images import load_rgb

    arrays = [load_rgb(f) for f in files]  # 40 px photos: resized like files are
    by_path = model.predict(files, top_k=2)
    by_array = model.predict(arrays, top_k=2)
    for a, b in zip(by_path, by_array, strict=True):
        assert a.top_k[0][0] == b.top_k[0][0] and a.score == pytest.approx(b.score, abs=1e-5)
    embeddings = model.embed(files)
    assert embeddings.shape == (4, 300)
    assert np.linalg.norm(embeddings, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_calibrate_by_hand(run: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(run / "model", bundle)
    assert main(["--quiet", "calibrate", str(bundle), "--threshold", "0.5", "--method", "msp"]) == 0
    openset = json.loads((bundle / "model.json").read_text())["openset"]
    assert openset["method"] == "msp" and openset["threshold"] == 0.5
    model = facecls.load_model(bundle)
    assert (model.method, model.threshold) == ("msp", 0.5)
    assert main(["--quiet", "calibrate", str(bundle), "--method", "energy"]) == 0
    assert facecls.load_model(bundle).threshold == pytest.approx(openset["thresholds"]["energy"])


def _lfw_photos(folder: Path, count: int) -> list[Path]:
    from tests.test_detect import lfw_archive_path

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(lfw_archive_path()) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                path = folder / Path(member.name).name
                path.write_bytes(tar.extractfile(member).read())
                written.append(path)
                if len(written) == count:
                    break
    return written


def test_onnx_export_parity_on_real_photos(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    bundle = tmp_path / "bundle"
    shutil.copytree(run / "model", bundle)
    photos = _lfw_photos(tmp_path / "lfw", 24)
    result = facecls.export_onnx(bundle, check_images=[tmp_path / "lfw"])
    print(f"ONNX parity on {result.checked_on}: max abs diff {result.max_abs_diff:.2e}")
    assert result.path == bundle / "model.onnx" and result.images == 24
    assert result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0
    torch_preds = facecls.load_model(bundle).predict(photos)
    onnx_preds = facecls.load_model(bundle, backend="onnx").predict(photos)
    for a, b in zip(torch_preds, onnx_preds, strict=True):
        assert (a.top_k[0][0], a.decision) == (b.top_k[0][0], b.decision)
        assert a.score == pytest.approx(b.score, abs=1e-4)


def _peak_rss_mib(args: list[str]) -> float:
    """Run ``python -m facecls ARGS`` in a child process; its own peak RSS in MiB."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "facecls", "--quiet", *args], env=env)
    _, status, usage = os.wait4(child.pid, 0)  # this child's rusage, not all children's
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, args
    return usage.ru_maxrss / 1024  # KiB on Linux


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "wait4"), reason="needs os.wait4 (Unix)")
def test_predict_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    """Promise 12: 10,000 photos are predicted in the memory 1,000 take (streamed in chunks,
    rows written as they come). At 64 px, holding every decoded face would add 110 MiB."""
    import io

    from PIL import Image

    from facecls.bundle import Bundle, save_bundle
    from facecls.models import create_model

    size, total = 64, 10_000
    blobs = []
    for shade in range(8):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), (30 * shade, 200 - 20 * shade, 90)).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    for i in range(total):  # 10 folders of 1,000: the first alone is the 1,000-image run
        folder = tmp_path / "photos" / f"{i // 1000:02d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        (folder / f"{i:05d}.png").write_bytes(blobs[i % len(blobs)])
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=5, image_size=size)
    names = [f"person_{c}" for c in range(5)]
    bundle = save_bundle(Bundle(model, "baseline", names, size, [0.5] * 3, [0.25] * 3),
                         tmp_path / "bundle")  # fmt: skip
    peaks = {}
    for n, inputs in ((1_000, [tmp_path / "photos" / "00"]), (total, [tmp_path / "photos"])):
        out = tmp_path / f"p{n}.csv"
        args = ["predict", str(bundle), *map(str, inputs), "--out", str(out), "--device", "cpu"]
        peaks[n] = _peak_rss_mib(args)
        with out.open() as f:
            assert sum(1 for _ in f) == n + 1
    print(f"peak RSS: {peaks[1_000]:.0f} MiB for 1,000 images, {peaks[total]:.0f} MiB for 10,000")
    assert peaks[total] <= peaks[1_000] * 1.05 + 16, peaks


def test_prediction_cuts_photos_as_training_did(run: Path, people: dict[str, Path], tmp_path):
    """A model trained with ``--crop`` sees the same centre crop at prediction and enrollment."""
    from facecls.data.images import load_rgb

    bundle = tmp_path / "cropped"
    shutil.copytree(run / "model", bundle)
    meta_path = bundle / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["crop"] = 0.6  # as if trained with --crop 0.6
    meta_path.write_text(json.dumps(meta))
    model = facecls.load_model(bundle, device="cpu")
    files = sorted((people["train"] / "person_01").iterdir())[:3]
    expected = np.stack([load_rgb(f, 32, 0.6).transpose(2, 0, 1) for f in files])
    assert np.array_equal(model.to_batch(files), expected)
    assert np.array_equal(model.to_batch([load_rgb(f) for f in files]), expected)
    uncropped = np.stack([load_rgb(f, 32).transpose(2, 0, 1) for f in files])
    assert not np.array_equal(expected, uncropped)
    by_file = model.predict(files)
    logits, features = model.outputs(expected)
    for answer, direct in zip(by_file, model.decide(logits, features), strict=True):
        assert answer.score == pytest.approx(direct.score, abs=1e-5)


def test_evaluate_strangers_measures_the_unknown_decision(
    run: Path, people: dict[str, Path], tmp_path: Path
) -> None:
    """``evaluate --strangers``: FPIR at the calibrated threshold is the share of strangers that
    ``predict`` names; the figures land in openset.json and the report shows the curve."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    strangers = tmp_path / "strangers"
    shutil.copytree(people["probe"], strangers)
    (strangers / "broken.jpg").write_bytes(b"not a jpeg")
    trained_name = sorted(p.name for p in people["train"].iterdir())[0]
    shutil.copytree(people["train"] / trained_name, strangers / trained_name)  # not strangers
    code = main(["--quiet", "evaluate", str(copy), "--strangers", str(strangers)])
    assert code == 0
    result = json.loads((copy / "openset.json").read_text())
    photos = [p for p in strangers.rglob("*.png") if p.parent.name != trained_name]
    assert result["strangers"]["images"] == len(photos)
    assert result["strangers"]["left_out_named_like_trained"] == len(
        list((strangers / trained_name).iterdir())
    )
    assert [s["path"] for s in result["strangers"]["skipped"]] == [str(strangers / "broken.jpg")]
    # The centroid score only once the run is calibrated (train leaves the centroids out).
    calibrated = (copy / "model" / "centroids.safetensors").is_file()
    assert set(result["methods"]) == {"msp", "energy"} | (
        {"centroid", "margin", "fused"} if calibrated else set()
    )
    named = [p.decision == "known" for p in facecls.load_model(copy).predict(photos)]
    assert result["methods"]["msp"]["fpir"] == pytest.approx(np.mean(named))
    for row in result["methods"].values():
        assert 0.0 <= row["dir_at_fpir_1pct"] <= 1.0 and 0.0 <= row["auroc"] <= 1.0
        assert row["curve"]["fpir"][0] <= row["curve"]["fpir"][-1] == 1.0
    html = (copy / "report.html").read_text()
    assert 'id="openset-table"' in html and "DIR at FPIR 1 %" in html
    assert "Open-set curve" in (copy / "report.md").read_text()
    # A threshold set by hand is the one predict applies, so it is the one measured.
    assert main(["--quiet", "calibrate", str(copy), "--threshold", "0.6"]) == 0
    assert main(["--quiet", "evaluate", str(copy), "--strangers", str(strangers)]) == 0
    result = json.loads((copy / "openset.json").read_text())
    assert result["threshold_set_by_hand"] and result["methods"]["msp"]["threshold"] == 0.6
    named = [p.decision == "known" for p in facecls.load_model(copy).predict(photos)]
    assert result["methods"]["msp"]["fpir"] == pytest.approx(np.mean(named))
    with pytest.raises(ValueError, match="leave out --data"):
        facecls.evaluate(copy, data=str(people["train"]), strangers=[strangers], log=print)


def test_dir_at_fpir_when_a_stranger_has_the_top_score(tmp_path: Path) -> None:
    """No threshold keeps FPIR at 1 % when a stranger outscores every known face: the figures
    say so (DIR 0, no threshold) and still go to JSON."""
    from facecls.atomic import write_json
    from facecls.inference.strangers import open_set_figures

    known = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    stranger = np.array([[9.0, 0.0], [0.0, 0.1], [0.2, 0.0]])
    features = np.ones((3, 4))
    methods = open_set_figures(known, features, np.array([0, 1, 0]), stranger, features, None, {})
    for row in methods.values():
        assert row["dir_at_fpir_1pct"] == 0.0 and row["threshold_at_fpir_1pct"] is None
        assert "fpir" not in row  # no threshold given: no rates at one
    write_json(tmp_path / "openset.json", methods)  # no infinity in the file


def test_training_calibrates_on_the_outputs_predict_computes(
    people: dict[str, Path], tmp_path: Path
) -> None:
    """With mirror averaging (the fast recipe), the thresholds stored at the end of training,
    from training's own validation logits, equal those of recalibrating the saved model on the
    same parts as predict scores, up to the run's precision: training evaluated in bf16 here
    (``precision: auto`` on this CPU) while predict runs fp32 on the CPU, so about 3 digits."""
    code = main([
        "--quiet", "train", "--data", str(people["train"]), "--image-size", "32", "--epochs",
        "3", "--batch-size", "16", "--runs-dir", str(tmp_path), "--name", "fast",
    ])  # fmt: skip
    assert code == 0
    meta = json.loads((tmp_path / "fast" / "model" / "model.json").read_text())
    assert meta["flip_tta"] is True
    stored = meta["openset"]["thresholds"]
    assert set(stored) == {"msp", "energy"}
    assert main(["--quiet", "calibrate", str(tmp_path / "fast")]) == 0
    again = json.loads((tmp_path / "fast" / "model" / "model.json").read_text())
    bf16 = yaml.safe_load((tmp_path / "fast" / "config.yaml").read_text())["train"]["precision"]
    tolerance = {"rel": 1e-2, "abs": 1e-3} if bf16 == "bf16" else {"rel": 1e-4, "abs": 1e-5}
    for method, value in stored.items():
        assert again["openset"]["thresholds"][method] == pytest.approx(value, **tolerance)
