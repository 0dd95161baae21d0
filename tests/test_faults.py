"""Bad input and faults (issue 13): one clear line, no traceback, nothing accepted silently.

Every case here failed before: a traceback, a silent acceptance, a whole run stopped by one bad
file, or debris left behind.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import facecls.bundle
import facecls.data.cache as cache_module
from facecls.atomic import WriteError
from facecls.bundle import (
    DIGEST_KEY,
    META_NAME,
    Bundle,
    BundleError,
    BundleWarning,
    load_bundle,
    save_bundle,
    validate_meta,
)
from facecls.cli import main
from facecls.data.archive import archive_digest, extract_archive
from facecls.data.cache import decode_cached
from facecls.data.images import ImageError, file_problem, load_rgb
from facecls.data.sources import scan_folder, scan_source
from facecls.inference.model import load_model, read_meta
from facecls.models import create_model
from facecls.training.interrupt import TEST_SIGNAL_ENV


def _bundle(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model("baseline", num_classes=3, image_size=32)
    save_bundle(Bundle(model, "baseline", ["a", "b", "c"], 32, [0.5] * 3, [0.25] * 3), folder)
    return folder


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("bundle") / "model")


def _edited(bundle_dir: Path, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the bundle whose model.json has ``changes`` (a value of ... removes a key)."""
    folder = tmp_path / "edited"
    shutil.copytree(bundle_dir, folder)
    meta = json.loads((folder / META_NAME).read_text())
    for key, value in changes.items():
        if value is ...:
            meta.pop(key)
        else:
            meta[key] = value
    (folder / META_NAME).write_text(json.dumps(meta))
    return folder


BAD_META = {
    "num_classes missing": ({"num_classes": ...}, "'num_classes' is missing"),
    "num_classes a string": ({"num_classes": "3"}, "'num_classes' must be a int"),
    "huge num_classes": ({"num_classes": 10**9}, "num_classes 1000000000 is outside"),
    "huge image": ({"image_size": 10**9}, "image_size 1000000000 is outside"),
    "zero image": ({"image_size": 0}, "image_size 0 is outside"),
    "extra class name": ({"class_names": ["a", "b", "c", "d"]}, "class_names must be 3 strings"),
    "name twice": ({"class_names": ["a", "a", "c"]}, "class_names has a name twice"),
    "nan std": ({"std": [0.25, float("nan"), 0.25]}, "std must be three positive finite"),
    "zero std": ({"std": [0.25, 0.0, 0.25]}, "std must be three positive finite"),
    "two means": ({"mean": [0.5, 0.5]}, "mean must be three finite numbers"),
    "mean of strings": ({"mean": ["a", "b", "c"]}, "mean must be three finite numbers"),
    "architecture a number": ({"architecture": 7}, "'architecture' must be a str"),
    "openset a list": ({"openset": [1, 2]}, "openset must be a JSON object"),
    "openset nan threshold": (
        {"openset": {"method": "msp", "threshold": float("nan")}},
        "openset threshold must be a finite number",
    ),
    "openset unknown method": ({"openset": {"method": "magic"}}, "openset method must be one of"),
    "facenet too small": ({"architecture": "facenet"}, "image_size 32 is outside 75..4096"),
    "digest not hex": ({DIGEST_KEY: "xyz"}, "weights_sha256 must be 64 hex digits"),
    "enrolled a list": ({"enrolled": ["x"]}, "enrolled must be a JSON object"),
    "crop above one": ({"crop": 2}, "crop must be a number in (0, 1]"),
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_every_loader_refuses_a_bad_model_json_with_one_line(
    case: str, bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    changes, expected = BAD_META[case]
    folder = _edited(bundle_dir, tmp_path, **changes)
    for load in (load_bundle, read_meta, load_model):
        with pytest.raises(BundleError) as caught:
            load(folder)
        assert str(folder / META_NAME) in str(caught.value) and expected in str(caught.value)
    photo = tmp_path / "x.png"
    photo.write_bytes(b"")
    for argv in (
        ["predict", str(folder), str(photo), "--out", str(tmp_path / "p.csv")],
        ["export", str(folder)],
        ["calibrate", str(folder), "--threshold", "0.5"],
        ["evaluate", str(folder)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, (argv, err)
        assert err.startswith("facecls: error: ") and expected in err, (argv, err)


@pytest.mark.parametrize("document", [[1, 2, 3], "model", 42, None])
def test_model_json_that_is_not_an_object_is_refused(document: Any, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="must hold a JSON object"):
        validate_meta(document, tmp_path / META_NAME)


def test_save_records_the_weights_digest_and_load_checks_it(
    bundle_dir: Path, tmp_path: Path
) -> None:
    meta = json.loads((bundle_dir / META_NAME).read_text())
    assert len(meta[DIGEST_KEY]) == 64
    other = _bundle(tmp_path / "other", seed=1)
    swapped = _edited(bundle_dir, tmp_path)
    shutil.copy(other / "model.safetensors", swapped / "model.safetensors")
    for load in (load_bundle, load_model):
        with pytest.raises(BundleError, match="sha256 differs"):
            load(swapped)
    load_bundle(bundle_dir)  # the untouched bundle still loads


def test_a_bundle_without_a_digest_loads_with_a_warning(bundle_dir: Path, tmp_path: Path) -> None:
    old = _edited(bundle_dir, tmp_path, **{DIGEST_KEY: ...})
    with pytest.warns(BundleWarning, match="no weights_sha256 recorded"):
        bundle = load_bundle(old)
    assert bundle.class_names == ["a", "b", "c"]


def test_threshold_nan_is_refused(bundle_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="finite"):
        load_model(bundle_dir, device="cpu", threshold=math.nan)
    with pytest.raises(SystemExit) as stopped:  # refused when the command line is parsed
        main(["calibrate", str(bundle_dir), "--threshold", "nan"])
    assert stopped.value.code == 2
    assert "argument --threshold: must be a finite number" in capsys.readouterr().err
    assert "openset" not in json.loads((bundle_dir / META_NAME).read_text())


# --- the backstop (item 6) ---------------------------------------------------------------------


def _explode(*_args: Any, **_kwargs: Any) -> Any:
    return {}["no such key"]  # a KeyError no command anticipates


def _run_folder(tmp_path: Path) -> Path:
    """A folder the command line takes for a run (it checks the files' names, not their text)."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "metrics.json", "predictions.csv"):
        (run / name).write_text("")
    return run


def test_an_unexpected_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import facecls

    monkeypatch.delenv("FACECLS_DEBUG", raising=False)
    monkeypatch.setattr(facecls, "write_report", _explode)
    assert main(["report", str(_run_folder(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("facecls: error: KeyError: 'no such key'") and "--debug" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(
    how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import facecls

    monkeypatch.setattr(facecls, "write_report", _explode)
    if how == "env":
        monkeypatch.setenv("FACECLS_DEBUG", "1")
    run = str(_run_folder(tmp_path))
    assert main(["--debug", "report", run] if how == "flag" else ["report", run]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "_explode" in err and "facecls: error: KeyError" in err


def _train_args(data: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "--quiet", "train", "--data", str(data), "--image-size", "32", "--epochs", "1",
        "--batch-size", "8", "--runs-dir", str(runs), "--name", "run", "--device", "cpu", *extra,
    ]  # fmt: skip


def test_missing_weights_are_refused_before_data_and_before_a_run_folder(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import facecls.training.start as start_module

    monkeypatch.setattr(start_module, "load_dataset", _explode)  # must not be reached
    runs = tmp_path / "runs"
    missing = tmp_path / "nowhere.safetensors"
    assert main(_train_args(synthetic_folder, runs, "--weights", str(missing))) == 2
    err = capsys.readouterr().err
    assert f"{missing}: weights file not found (--weights)" in err and err.count("\n") == 1
    assert not runs.exists()


def test_a_failed_start_leaves_no_half_made_run_folder(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import facecls.training.fold_setup as fold_setup_module

    monkeypatch.setattr(
        fold_setup_module, "create_model", _explode
    )  # fails building the first model
    runs = tmp_path / "runs"
    assert main(_train_args(synthetic_folder, runs)) == 1
    assert "facecls: error: KeyError" in capsys.readouterr().err
    assert runs.is_dir() and list(runs.iterdir()) == []


def test_enroll_refuses_a_pickle_naming_an_option_it_has(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weights = tmp_path / "model.pt"
    torch.save(load_bundle(bundle_dir).model.state_dict(), weights)
    shutil.copy(bundle_dir / META_NAME, tmp_path / META_NAME)
    assert main(["enroll", str(weights), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "as MODEL" in err and "--trust-pickle" not in err


# --- options and config (item 4) ----------------------------------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", ["train", "predict"])
def test_device_is_checked_when_parsed(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import facecls.training.start as start_module

    monkeypatch.setattr(start_module, "load_dataset", _explode)
    argv = [command, "--data", "synthetic"] if command == "train" else ["predict", "m", "x"]
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--device", "gpu0"])
    assert stopped.value.code == 2
    assert "device 'gpu0' is not one of auto, cpu, mps, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("data:\n  source: [unclosed\ntrain: {}\n", 3, "not valid YAML"),
        ("train:\n  seed: !!python/object/apply:os.system ['touch pwned']\n", 2, "constructor"),
        ("data:\n\tsource: x\n", 2, "not valid YAML"),
    ],
)
def test_a_malformed_config_is_one_line_naming_file_and_line(
    text: str, line: int, says: str, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["train", "--config", str(config)]) == 2
    err = _one_error_line(capsys)
    assert f"{config}, line {line}: " in err and says in err
    assert not (tmp_path / "pwned").exists()


def test_a_binary_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"\xff\xfe\x00\x81binary")
    assert main(["train", "--config", str(config)]) == 2
    assert f"{config}: not a YAML text file" in _one_error_line(capsys)


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(10**30)])
def test_seed_out_of_range_is_refused(seed: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data", "synthetic", "--seed", seed]) == 2
    assert f"train.seed must be in [0, 4294967295], got {seed}" in _one_error_line(capsys)


def test_test_fraction_too_small_is_explained_in_facecls_words(
    synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    assert main(_train_args(synthetic_folder, runs, "--test-fraction", "0.01")) == 2
    err = _one_error_line(capsys)
    assert "--test-fraction 0.01 gives 1 test images for 6 identities" in err
    assert "use --test-fraction 0.1" in err and "should be greater" not in err
    assert not runs.exists()


def test_too_many_folds_are_explained(
    synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = _train_args(synthetic_folder, tmp_path / "runs", "--folds", "40")
    args[args.index("train")] = "cv"
    assert main(args) == 2
    err = _one_error_line(capsys)
    assert "fewer than the 40 folds asked for: use --folds" in err


def test_a_binary_split_file_is_named(
    synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    split = tmp_path / "split.csv"
    split.write_bytes(bytes(range(256)) * 4)
    assert main(_train_args(synthetic_folder, tmp_path / "runs", "--split-file", str(split))) == 2
    assert f"{split}: not a CSV text file" in _one_error_line(capsys)


def test_predict_refuses_a_missing_input_and_a_bad_out(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"")
    missing = tmp_path / "no-such-folder"  # one error row, as for any bad file
    out = tmp_path / "p.csv"
    assert main(["--quiet", "predict", str(bundle_dir), str(missing), "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert row["path"] == str(missing) and row["reason"] == "no such file or folder"
    assert main(["predict", str(bundle_dir), str(photo), "--out", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder; --out names the predictions CSV file" in _one_error_line(
        capsys
    )
    blocked = photo / "p.csv"  # under a file: cannot be written
    assert main(["predict", str(bundle_dir), str(photo), "--out", str(blocked)]) == 2
    assert f"{blocked}: {photo} is a file, not a folder" in _one_error_line(capsys)


# --- one bad file never stops a run (item 2) ----------------------------------------------------

BAD_NAME = "bad\udcff.png"  # the bytes b"bad\xff.png": not valid UTF-8
SHOWN = "bad\\xff.png"


def _add_bad_files(folder: Path, good: bytes) -> dict[str, str]:
    """Put a non-UTF-8 name, a dangling symlink, a symlink loop, a FIFO and a folder named like
    an image into ``folder``; returns file name (as shown) → what the reason must say."""
    (folder / BAD_NAME).write_bytes(good)
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    return {
        SHOWN: "file name is not valid UTF-8",
        "dangling.png": "dangling symlink",
        "loop.png": "symlink loop",
        "pipe.png": "not a regular file",
    }


def test_file_problem_names_each_case(tmp_path: Path) -> None:
    expected = _add_bad_files(tmp_path, b"x")
    (tmp_path / "folder.jpg").mkdir()
    expected["folder.jpg"] = "a folder, not an image file"
    expected["missing.png"] = "no such file or folder"
    for name, reason in expected.items():
        path = tmp_path / (BAD_NAME if name == SHOWN else name)
        assert reason in file_problem(path), name
        with pytest.raises(ImageError, match=reason):
            load_rgb(path, 32)  # the FIFO would block forever if it were opened
    assert file_problem(tmp_path / BAD_NAME.replace("\udcff", "")) == "no such file or folder"


def _unreadable(monkeypatch: pytest.MonkeyPatch, victim: Path) -> None:
    """Make one file unreadable for root (tests run as root; chmod 000 stops nobody)."""
    real_open = Path.open

    def guarded(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == victim:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded)


@pytest.mark.slow
def test_bad_files_are_listed_and_every_command_goes_on(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    data = tmp_path / "faces"
    shutil.copytree(synthetic_folder, data)
    ident = sorted(data.iterdir())[0]
    good, locked = sorted(ident.glob("*.png"))[:2]
    expected = _add_bad_files(ident, good.read_bytes())
    # A cache of its own: copies keep mtimes, so another test's decoded entry would match.
    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    _unreadable(monkeypatch, locked)
    expected[locked.name] = "cannot read file (Permission denied)"
    alien = data / "\udcffidentity"  # a whole identity folder whose name is not UTF-8
    alien.mkdir()
    (alien / "a.png").write_bytes(good.read_bytes())
    runs = tmp_path / "runs"
    assert main([a for a in _train_args(data, runs) if a != "--quiet"]) == 0
    out = capsys.readouterr().out
    listed = {
        item["path"]: item["reason"]
        for item in json.loads((runs / "run" / "data_report.json").read_text())["skipped_files"]
    }
    for name, reason in expected.items():
        assert reason in listed[f"{ident.name}/{name}"] and f"{ident.name}/{name}: " in out
    assert "not valid UTF-8" in listed["\\xffidentity/"]
    args = _train_args(data, runs, "--folds", "2")
    args[args.index("train")], args[args.index("run")] = "cv", "cv"
    assert main(args) == 0
    cv_report = json.loads((runs / "cv" / "data_report.json").read_text())
    assert {i["path"] for i in cv_report["skipped_files"]} == set(listed)

    csv_path = tmp_path / "p.csv"
    assert main(["--quiet", "predict", str(runs / "run"), str(data), "--out", str(csv_path)]) == 0
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    for name, reason in expected.items():
        assert rows[name]["decision"] == "error" and reason in rows[name]["reason"], name
    assert rows[good.name]["decision"] in ("known", "unknown")

    strangers = tmp_path / "strangers" / "newcomer"
    strangers.mkdir(parents=True)
    for i, photo in enumerate(sorted(sorted(data.iterdir())[1].glob("*.png"))[:3]):
        shutil.copy(photo, strangers / f"s{i}.png")
    _add_bad_files(strangers, good.read_bytes())
    capsys.readouterr()
    assert main(["evaluate", str(runs / "run"), "--strangers", str(strangers.parent)]) == 0
    out = capsys.readouterr().out
    assert "Strangers: skipped" in out and "symlink" in out
    assert main(["enroll", str(runs / "run"), "--data", str(strangers.parent)]) == 0
    out = capsys.readouterr().out
    assert "dangling symlink" in out and SHOWN in out and "Enrolled 1 identity" in out


def test_when_nothing_usable_is_left_the_skipped_files_come_first(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "faces"
    for ident in ("ann", "bob"):
        (data / ident).mkdir(parents=True)
        _add_bad_files(data / ident, b"not an image")
    args = [a for a in _train_args(data, tmp_path / "runs") if a != "--quiet"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "Skipped 8 file(s) that could not be used:" in captured.out
    assert f"ann/{SHOWN}: file name is not valid UTF-8" in captured.out
    assert "no usable image" in captured.err and "8 file(s) skipped, listed above" in captured.err
    assert not (tmp_path / "runs").exists()


def test_a_non_utf8_name_in_an_archive_is_skipped_and_shown_escaped(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "faces.tar"
    with tarfile.open(archive, "w", encoding="utf-8", errors="surrogateescape") as tar:
        for ident in sorted(synthetic_folder.iterdir())[:2]:
            for photo in sorted(ident.glob("*.png"))[:3]:
                tar.add(photo, arcname=f"faces/{ident.name}/{photo.name}")
            tar.add(photo, arcname=f"faces/{ident.name}/{BAD_NAME}")
    scan = scan_source(str(archive), tmp_path / "cache", log=lambda _m: None)
    assert len(scan.refs) == 6
    assert {s["path"].split("/")[-1] for s in scan.skipped} == {SHOWN}
    json.dumps(scan.skipped).encode("utf-8")  # reports can write it


# --- full disk and caches (item 3) --------------------------------------------------------------


def _disk_full(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_caching_leaves_no_temporary_file(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = scan_folder(synthetic_folder).refs
    monkeypatch.setattr(cache_module.np, "save", _disk_full)
    with pytest.raises(WriteError) as caught:
        decode_cached(refs, 32, tmp_path, log=lambda _m: None)
    folder = tmp_path / "decoded"
    assert f"no space left on the disk of {folder}" in str(caught.value)
    assert "MiB of free space is needed" in str(caught.value)
    assert list(folder.iterdir()) == []  # no .npy.tmpPID


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_a_damaged_cache_entry_is_discarded_and_rebuilt(
    damage: str, synthetic_folder: Path, tmp_path: Path
) -> None:
    refs = scan_folder(synthetic_folder).refs
    images, kept, _, _ = decode_cached(refs, 32, tmp_path, log=lambda _m: None)
    (entry,) = (tmp_path / "decoded").glob("*.npy")
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        raw[-100] ^= 0xFF  # same size, one pixel changed
        entry.write_bytes(raw)
    else:
        entry.with_suffix(".json").write_text("{not json")
    said: list[str] = []
    again, kept_again, _, _ = decode_cached(refs, 32, tmp_path, log=said.append)
    assert any("damaged; discarding it" in m and str(entry) in m for m in said)
    assert np.array_equal(again, images) and kept_again == kept
    said.clear()
    decode_cached(refs, 32, tmp_path, log=said.append)
    assert said == []  # the rebuilt entry is whole


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        pid += 1


def test_a_killed_extractions_staging_folder_is_cleaned_by_the_next_run(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "faces.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(synthetic_folder, arcname="faces")
    parent = tmp_path / "cache" / "archives"
    name = archive_digest(archive)[:16]
    killed = parent / f".{name}.partial-{_dead_pid()}-x1"
    alive = parent / f".{name}.partial-{os.getppid()}-x2"  # an extraction still running
    for staging in (killed, alive):
        (staging / "faces").mkdir(parents=True)
    extract_archive(archive, tmp_path / "cache")
    assert not killed.exists() and alive.exists()


def test_full_disk_while_saving_the_model_names_folder_and_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(facecls.bundle, "save_file", _disk_full)
    with pytest.raises(WriteError) as caught:
        _bundle(tmp_path / "model")
    message = str(caught.value)
    assert f"no space left on the disk of {tmp_path / 'model'}" in message
    assert "MiB of free space is needed" in message
    assert [p.name for p in (tmp_path / "model").iterdir()] == []


def test_full_disk_while_checkpointing_is_one_line_and_exit_1(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import facecls.training.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "save_file", _disk_full)
    assert main(_train_args(synthetic_folder, tmp_path / "runs")) == 1
    err = _one_error_line(capsys)
    folder = tmp_path / "runs" / "run" / "checkpoints"
    assert f"no space left on the disk of {folder} while writing fold0-last" in err
    assert "MiB of free space is needed" in err
    assert list(folder.iterdir()) == []


# --- changed data on resume (item 5) -----------------------------------------------------------


@pytest.mark.parametrize("change", ["gained", "lost"])
def test_resume_refuses_data_that_gained_or_lost_images(
    change: str, synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    data = tmp_path / "faces"
    shutil.copytree(synthetic_folder, data)
    monkeypatch.setenv(TEST_SIGNAL_ENV, "0:1:1:TERM")  # stop after epoch 1, step 1
    args = _train_args(data, tmp_path / "runs", "--epochs", "2")
    assert main(args) == 143
    run = tmp_path / "runs" / "run"
    assert json.loads((run / "data_files.json").read_text())["images"] > 0
    monkeypatch.delenv(TEST_SIGNAL_ENV)
    ident = sorted(data.iterdir())[0]
    photo = sorted(ident.glob("*.png"))[0]
    if change == "gained":
        shutil.copy(photo, ident / "new.png")
    else:
        photo.unlink()
    capsys.readouterr()
    assert main(["--quiet", "train", "--resume", str(run)]) == 2
    err = _one_error_line(capsys)
    assert f"--resume {run}: the data changed since the run started" in err
    assert not (run / "metrics.json").exists()
