"""One facecls line naming the option or file and what to do, never a traceback or a silent
guess (issue 23, items 7, 8, 12, 14 and 15; a full disk, item 13, is test_full_disk.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facecls.cli import main
from tests import serve_fixtures
from tests.cli_helpers import one_error, photo, train_args

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures


_photo, _one_error, _train_args = photo, one_error, train_args


# --- item 7: a folder where one photo is expected -----------------------------------------------


@pytest.mark.parametrize("command", ["verify", "search"])
def test_a_folder_given_as_the_photo_is_refused(
    command: str, untrained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "photos"
    photo = _photo(folder / "a.png")
    if command == "verify":
        args = ["verify", str(untrained_bundle), str(folder), str(photo), "--threshold", "0.5"]
    else:
        args = ["search", str(untrained_bundle), str(folder), "--gallery", str(folder)]
    assert main(args) == 2
    assert f"{folder}: is a folder; give one photo" in _one_error(capsys)


# --- item 12: a reader that goes away -----------------------------------------------------------


@pytest.mark.parametrize("command", ["predict", "verify"])
def test_a_closed_pipe_on_stdout_is_no_traceback(
    command: str, untrained_bundle: Path, tmp_path: Path
) -> None:
    """``facecls predict … | head -1``: the reader is gone before facecls writes (a pipe whose
    read end is closed); the command still does its work, quietly, and exits 0."""
    photo = _photo(tmp_path / "a.png")
    out = tmp_path / "p.csv"
    if command == "predict":  # messages through the logging console
        args = ["predict", str(untrained_bundle), str(photo), "--out", str(out)]
    else:  # a result through print()
        args = ["verify", str(untrained_bundle), str(photo), str(photo), "--threshold", "0.5"]
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "facecls", *args], stdout=write, stderr=subprocess.PIPE,
            timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.stderr.decode() == "" and done.returncode == 0
    if command == "predict":
        with out.open(newline="") as f:
            assert len(list(csv.DictReader(f))) == 1


# --- item 15: options that did something else than asked ----------------------------------------


@pytest.mark.parametrize("top_k", ["0", "-3"])
def test_top_k_below_one_is_refused(
    top_k: str, untrained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = _photo(tmp_path / "g" / "a.png")
    for command in (
        ["search", str(untrained_bundle), str(photo), "--gallery", str(photo.parent)],
        ["predict", str(untrained_bundle), str(photo), "--out", str(tmp_path / "p.csv")],
    ):
        assert main([*command, "--top-k", top_k]) == 2
        assert f"--top-k must be a whole number of at least 1, got {top_k}" in _one_error(capsys)


def test_photos_and_a_video_together_are_refused(
    untrained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = _photo(tmp_path / "a.png")
    out = tmp_path / "p.csv"
    args = ["predict", str(untrained_bundle), str(photo), "--video", "clip.mp4", "--out", str(out)]
    assert main(args) == 2
    assert f"photos ({photo}) and --video clip.mp4 given" in _one_error(capsys)


# --- item 8: a bundle without a weights digest --------------------------------------------------


def _undigested(bundle: Path, tmp_path: Path) -> Path:
    import json
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(bundle, folder)
    meta = json.loads((folder / "model.json").read_text())
    del meta["weights_sha256"]
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_a_bundle_without_a_digest_is_named_unverified_in_one_line(
    untrained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = _undigested(untrained_bundle, tmp_path)
    photo = _photo(tmp_path / "a.png")
    args = ["predict", str(folder), str(photo), "--out", str(tmp_path / "p.csv")]
    assert main(["--quiet", *args]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("facecls: warning: "), err
    assert "model.safetensors is unverified" in err
    assert main([*args, "--require-digest"]) == 2
    assert "no weights_sha256 recorded, so the weights are unverified" in _one_error(capsys)


def test_the_service_refuses_an_unverified_bundle_by_default(
    untrained_bundle: Path, tmp_path: Path
) -> None:
    from facecls.bundle import BundleError
    from facecls.service.serve import build_app

    folder = _undigested(untrained_bundle, tmp_path)
    with pytest.raises(BundleError, match="unverified"):
        build_app(folder, store=tmp_path / "store", device="cpu")
    with pytest.warns(UserWarning, match="unverified"):
        assert build_app(folder, store=tmp_path / "store", device="cpu", require_digest=False)


# --- item 14: the catch-all line, replaced by what to do -----------------------------------------


def test_path_options_naming_a_file_where_a_folder_is_expected(
    untrained_bundle: Path, synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    photos = tmp_path / "photos"
    _photo(photos / "p.png")
    runs = ["--epochs", "1", "--runs-dir", str(tmp_path / "runs")]
    model = str(untrained_bundle)
    cases = [
        (["train", "--runs-dir", str(afile / "runs"), "--epochs", "1"], "--runs-dir"),
        (["train", "--data", str(photos), "--cache-dir", str(afile), *runs], "--cache-dir"),
        (["export", model, "--out", str(photos)], "--out"),
        (["enroll", model, "--data", str(photos), "--out", str(afile)], "--out"),
        (["evaluate", str(afile)], f"{afile}: not a model"),
        (
            ["train", "--data", str(synthetic_folder), "--split-file", str(photos), *runs],
            f"{photos}: is a folder; --split-file",
        ),
        (["train", "--weights", str(photos), *runs], f"{photos}: is a folder (--weights)"),
        (
            ["embed", model, str(photos), "--out", str(afile / "e.safetensors")],
            f"{afile} is a file, not a folder",
        ),
        (
            [
                "predict",
                model,
                str(photos),
                "--out",
                str(tmp_path / "p.csv"),
                "--annotate",
                str(afile / "drawn"),
            ],
            f"{afile} is a file, not a folder",
        ),  # fmt: skip
    ]
    for argv, says in cases:
        assert main(argv) == 2, argv
        assert says in _one_error(capsys)
    assert afile.read_text() == "x\n"


def test_report_out_under_a_file(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    assert main(["report", str(tiny_run), "--out", str(afile / "report")]) == 2
    assert f"--out {afile / 'report'}: {afile} is a file, not a folder" in _one_error(capsys)


def test_export_check_with_a_bad_photo_writes_nothing(
    untrained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    out = tmp_path / "m.onnx"
    assert main(["export", str(untrained_bundle), "--out", str(out), "--check", str(bad)]) == 2
    assert f"--check {bad}: unsupported file type" in _one_error(capsys)
    assert not out.exists()


def test_tune_with_no_trial_or_a_damaged_study(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    assert main(["tune", "--trials", "0", "--runs-dir", str(runs), "--epochs", "1"]) == 2
    assert "--trials must be a whole number of at least 1, got 0" in _one_error(capsys)
    assert not runs.exists()  # no folder left behind
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.db").write_bytes(b"this is not an sqlite database" * 10)
    (study / "config.yaml").write_text("train:\n  epochs: 1\n")
    assert main(["tune", "--resume", str(study), "--trials", "1"]) == 2
    assert f"{study / 'study.db'}: not a readable Optuna study" in _one_error(capsys)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--image-size", "100000"], "data.image_size must be in [16, 4096] px, got 100000"),
        (["--model", "vit_h_14", "--image-size", "40"], "model 'vit_h_14' cannot take"),
        (["--name", "../escape"], "name '../escape' must be a plain folder name"),
        (["--name", ""], "name '' must be a plain folder name"),
        (["--name", "/tmp/abs"], "name '/tmp/abs' must be a plain folder name"),
    ],
)
def test_run_options_refused_before_any_work(
    extra: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "--runs-dir", str(runs), "--epochs", "1", *extra]) == 2
    assert says in _one_error(capsys)
    assert not runs.exists() and not (tmp_path / "escape").exists()


# --- item 15: options that did something else than asked -----------------------------------------


def test_an_unknown_config_key_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    config = tmp_path / "c.yaml"
    config.write_text("bogus: 1\n")
    assert main(["train", "--config", str(config)]) == 2
    assert f"{config}: the top level: unknown key(s) ['bogus']" in _one_error(capsys)


def test_freezing_an_untrained_backbone_is_said(
    synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = _train_args(synthetic_folder, tmp_path / "runs", "--freeze", "backbone")
    assert main([a for a in args if a != "--quiet"]) == 0
    assert "Warning: --freeze backbone keeps a backbone that was never trained" in (
        capsys.readouterr().out
    )


def test_a_missing_tensorboard_is_said_before_decoding(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the extra not installed
    cache = tmp_path / "cache"
    args = _train_args(synthetic_folder, tmp_path / "runs", "--tensorboard")
    assert main([*args, "--cache-dir", str(cache)]) == 2
    assert "--tensorboard needs the tensorboard package" in _one_error(capsys)
    assert not (tmp_path / "runs").exists() and not cache.exists()


def test_weights_for_another_architecture_are_summarised(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch
    from safetensors.torch import save_file

    from facecls.models import create_model

    other = create_model("resnet18", num_classes=3, image_size=64)
    weights = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    torch.manual_seed(0)
    args = ["train", "--model", "baseline", "--weights", str(weights), "--epochs", "1",
            "--runs-dir", str(tmp_path / "runs"), "--image-size", "32"]  # fmt: skip
    assert main(args) == 2
    err = _one_error(capsys)
    assert len(err) < 1000, len(err)
    assert "key(s) missing from the file, e.g." in err and "key(s) not in the model" in err
