"""CPU end-to-end runs of the command line on tiny data (synthetic folders and an LFW subset)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facecls.cli import main

RUN_FILES = [
    "config.yaml", "data_report.json", "folds.json", "history.csv", "metrics.json",
    "per_class.csv", "predictions.csv", "model/model.safetensors", "model/model.json",
    "loss_curves.png",
]  # fmt: skip


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes: proves a folder was not modified."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*")):
        h.update(path.relative_to(root).as_posix().encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def run_cli(*args: str) -> int:
    return main(["--quiet", *args])


def test_train_writes_every_file_and_evaluate_reproduces(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    before = tree_digest(synthetic_folder)
    code = run_cli(
        "train", "--data", str(synthetic_folder), "--model", "baseline", "--image-size", "32",
        "--epochs", "2", "--batch-size", "16", "--runs-dir", str(tmp_path), "--name", "t",
    )  # fmt: skip
    assert code == 0
    run = tmp_path / "t"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "kernels").iterdir()) == [
        "01_features.0.png", "02_features.2.png", "03_features.5.png", "04_features.8.png"
    ]  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    folds = json.loads((run / "folds.json").read_text())
    predictions = (run / "predictions.csv").read_text().splitlines()
    assert len(predictions) - 1 == len(folds["test"]) == metrics["test"]["summary"]["images"]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[0].startswith("fold,epoch,train_loss,val_loss")
    # evaluate reproduces the test metrics from the saved bundle.
    import facecls

    again = facecls.evaluate(run, log=lambda _m: None)
    assert again["summary"] == pytest.approx(metrics["test"]["summary"], abs=1e-6)
    assert tree_digest(synthetic_folder) == before  # nothing in the user's data was written


def test_cv_folds_and_summary(synthetic_folder: Path, tmp_path: Path) -> None:
    code = run_cli(
        "cv", "--data", str(synthetic_folder), "--model", "tronnet", "--image-size", "32",
        "--epochs", "1", "--folds", "2", "--batch-size", "16", "--runs-dir", str(tmp_path),
        "--name", "cv",
    )  # fmt: skip
    assert code == 0
    run = tmp_path / "cv"
    folds = json.loads((run / "folds.json").read_text())
    pool, test = set(folds["pool"]), set(folds["test"])
    assert not pool & test
    assert set(folds["folds"][0]) | set(folds["folds"][1]) == pool
    assert not set(folds["folds"][0]) & set(folds["folds"][1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["cv"]["folds"]) == 2
    mean, std = metrics["cv"]["mean_std"]["accuracy"]
    assert mean == pytest.approx(np.mean([f["accuracy"] for f in metrics["cv"]["folds"]]))
    assert metrics["final_model"]["fold"] in (0, 1)
    assert {line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]} == {
        "0",
        "1",
    }
    assert len(list((run / "kernels").glob("*.png"))) == 7  # tronnet's seven convolutions


def test_bad_files_are_listed_and_skipped(synthetic_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "faces"
    shutil.copytree(synthetic_folder, data)
    ident = sorted(p for p in data.iterdir())[0]
    good = next(ident.glob("*.png")).read_bytes()
    (ident / "truncated.png").write_bytes(good[: len(good) // 2])
    (ident / "empty.jpg").write_bytes(b"")
    (ident / "notes.jpg").write_text("this is text, not a JPEG")
    (ident / "scan.xyz").write_bytes(b"\x00" * 10)
    (ident / ".DS_Store").write_bytes(b"junk")
    (data / ".ipynb_checkpoints").mkdir()
    (data / ".ipynb_checkpoints" / "x.png").write_bytes(good)
    before = tree_digest(data)
    code = run_cli(
        "train", "--data", str(data), "--image-size", "32", "--epochs", "1",
        "--runs-dir", str(tmp_path / "runs"), "--name", "bad",
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "runs" / "bad" / "data_report.json").read_text())
    skipped = {Path(item["path"]).name: item["reason"] for item in report["skipped_files"]}
    assert set(skipped) == {"truncated.png", "empty.jpg", "notes.jpg", "scan.xyz"}
    assert "0 bytes" in skipped["empty.jpg"] or "empty" in skipped["empty.jpg"]
    assert ".ipynb_checkpoints" not in report["images_per_identity"]
    assert tree_digest(data) == before


def test_clear_errors(
    synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    (empty / "alice").mkdir(parents=True)
    (empty / "alice" / "a.txt").write_text("x")
    assert run_cli("train", "--data", str(empty), "--runs-dir", str(tmp_path)) == 2
    assert "no usable image" in capsys.readouterr().err
    code = run_cli(
        "cv", "--data", str(synthetic_folder), "--folds", "10", "--image-size", "32",
        "--runs-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "fewer than the 10 folds" in err and "person" in err
    assert run_cli("train", "--data", str(tmp_path / "missing")) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_presplit_folder(synthetic_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "split"
    for ident in sorted(p for p in synthetic_folder.iterdir()):
        files = sorted(ident.iterdir())
        for i, f in enumerate(files):
            part = "test" if i % 4 == 0 else "train"
            (data / part / ident.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, data / part / ident.name / f.name)
    code = run_cli(
        "train", "--data", str(data), "--image-size", "32", "--epochs", "1",
        "--runs-dir", str(tmp_path / "runs"), "--name", "pre",
    )  # fmt: skip
    assert code == 0
    folds = json.loads((tmp_path / "runs" / "pre" / "folds.json").read_text())
    assert folds["test"] and all(p.startswith("test/") for p in folds["test"])
    assert all(p.startswith("train/") for p in folds["pool"])


@pytest.mark.slow
def test_lfw_archive_cv_and_split_file(lfw_archive: Path, tmp_path: Path) -> None:
    from tests.conftest import LFW_SPLITS

    code = run_cli(
        "cv", "--data", str(lfw_archive), "--min-images", "50", "--model", "baseline",
        "--image-size", "32", "--folds", "2", "--epochs", "1", "--runs-dir", str(tmp_path),
        "--name", "lfw",
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "lfw" / "data_report.json").read_text())
    assert report["identities"] == 12 and report["images"] == 1560
    # The benchmark split file fixes LFW-20's test part: 605 images.
    code = run_cli(
        "train", "--data", str(lfw_archive), "--min-images", "20", "--split-file",
        str(LFW_SPLITS), "--image-size", "32", "--epochs", "1", "--runs-dir", str(tmp_path),
        "--name", "lfw20",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "lfw20" / "metrics.json").read_text())
    assert metrics["test"]["summary"]["images"] == 605
