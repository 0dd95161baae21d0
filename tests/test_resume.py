"""Nothing lost: a run killed, stopped or failed mid-way and resumed ends exactly as an
uninterrupted one; checkpoint and result writes are atomic; two runs with one seed are identical.

Kills land at exact places through the ``FACECLS_TEST_SIGNAL`` hook (``facecls/interrupt.py``):
``fold:epoch:step:SIGNAL`` makes the process send itself SIGNAL right after that step.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import facecls.atomic
import facecls.training.checkpoint
import facecls.training.fold
from facecls.atomic import WriteError
from facecls.cli import main
from facecls.models import create_model
from facecls.training.checkpoint import (
    CheckpointError,
    TrainingState,
    checkpoint_path,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from facecls.training.interrupt import TEST_SIGNAL_ENV
from tests.conftest import REPO

TIMING = {"wall_seconds", "report_seconds"}  # metrics.json keys that measure time
TIMING_COLUMNS = {"seconds", "images_per_second"}  # history.csv columns that measure time


# the killed training processes get one thread too: the same count on both sides
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_args(data: Path, runs: Path, cache: Path, *extra: str) -> list[str]:
    """4 epochs of about 4 steps each on the 6-identity synthetic folder."""
    return [
        "train", "--data", str(data), "--image-size", "32", "--epochs", "4", "--batch-size", "8",
        "--runs-dir", str(runs), "--cache-dir", str(cache), *extra,
    ]  # fmt: skip


def cv_args(data: Path, runs: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "cv", "--data", str(data), "--image-size", "32", "--epochs", "2", "--batch-size", "8",
        "--folds", "5", "--runs-dir", str(runs), "--cache-dir", str(cache), *extra,
    ]  # fmt: skip


def run_cli(*args: str) -> int:
    return main(["--quiet", *args])


def run_killed(args: list[str], at: str) -> subprocess.CompletedProcess:
    """``python -m facecls ARGS`` in a fresh process that signals itself at ``at``."""
    env = {**os.environ, TEST_SIGNAL_ENV: at, "PYTHONPATH": str(REPO / "src")}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return subprocess.run(
        [sys.executable, "-m", "facecls", "--quiet", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    for key in TIMING:
        metrics.pop(key, None)  # report_seconds: absent when the report was not written
    metrics["config"].pop("name")
    metrics["config"].pop("runs_dir")
    return metrics


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return [
            {k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)
        ]


def assert_same_result(a: Path, b: Path) -> None:
    """Bit-identical weights; identical metrics, history and predictions but for timings."""
    weights_a = load_file(a / "model" / "model.safetensors")
    weights_b = load_file(b / "model" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    assert (a / "model" / "model.safetensors").read_bytes() == (
        b / "model" / "model.safetensors"
    ).read_bytes()
    assert _metrics(a) == _metrics(b)
    assert _history(a) == _history(b)
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()
    assert (a / "folds.json").read_text() == (b / "folds.json").read_text()


@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 identities with 8–12 images each: enough for 5 folds after the test split."""
    from facecls.data.synthetic import SyntheticSpec, write_synthetic_folder

    root = tmp_path_factory.mktemp("cv") / "faces"
    spec = SyntheticSpec(num_classes=4, max_per_class=12, min_per_class=9, image_size=32, seed=5)
    return write_synthetic_folder(root, spec)


@pytest.fixture(scope="module")
def reference(
    synthetic_folder: Path, session_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One uninterrupted train run that every resumed run must reproduce."""
    runs = tmp_path_factory.mktemp("reference")
    assert run_cli(*train_args(synthetic_folder, runs, session_cache, "--name", "ref")) == 0
    return runs / "ref"


@pytest.mark.slow
def test_sigkill_in_epoch_3_then_resume_matches(
    synthetic_folder: Path, session_cache: Path, tmp_path: Path, reference: Path
) -> None:
    args = train_args(synthetic_folder, tmp_path, session_cache, "--name", "killed")
    killed = run_killed(args, "0:3:2:KILL")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "killed"
    doc, _ = read_checkpoint(checkpoint_path(run, 0))
    assert doc["epoch"] == 2 and not doc["complete"]
    assert not (run / "metrics.json").exists()
    assert run_cli("train", "--resume", str(run)) == 0
    assert_same_result(reference, run)
    assert not (run / "checkpoints").exists()  # removed once the run finished


@pytest.mark.slow
@pytest.mark.parametrize(("name", "code"), [("TERM", 143), ("INT", 130)])
def test_sigterm_and_ctrl_c_save_and_resume(
    name: str, code: int, synthetic_folder: Path, session_cache: Path, tmp_path: Path,
    reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"0:3:2:{name}")
    args = train_args(synthetic_folder, tmp_path, session_cache, "--name", "stopped")
    assert run_cli(*args) == code
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # handlers restored
    run = tmp_path / "stopped"
    err = capsys.readouterr().err
    assert f"SIG{name} received during fold 0, epoch 3, step 2" in err
    assert f"facecls train --resume {run}" in err
    marker = json.loads((run / "checkpoints" / "interrupted.json").read_text())
    assert marker["signal"] == f"SIG{name}" and marker["last_saved_epoch"] == 2
    assert read_checkpoint(checkpoint_path(run, 0))[0]["epoch"] == 2
    monkeypatch.delenv(TEST_SIGNAL_ENV)
    # --resume with --name (and the runs folder) works as well as --resume RUN_DIR.
    assert run_cli("train", "--resume", "--runs-dir", str(tmp_path), "--name", "stopped") == 0
    assert_same_result(reference, run)


@pytest.mark.slow
def test_cv_killed_in_fold_3_of_5_resumes_without_retraining_finished_folds(
    cv_folder: Path, session_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_cli(*cv_args(cv_folder, tmp_path, session_cache, "--name", "ref")) == 0
    args = cv_args(cv_folder, tmp_path, session_cache, "--name", "killed")
    killed = run_killed(args, "2:2:1:KILL")  # fold 3 of 5 (0-based 2), epoch 2, step 1
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "killed"
    assert [read_checkpoint(checkpoint_path(run, f))[0]["complete"] for f in range(3)] == [
        True, True, False,
    ]  # fmt: skip
    trained: list[int] = []  # epoch seeds of the epochs the resumed run trains
    real = facecls.training.fold.train_one_epoch

    def counting(*args: object, **kwargs: object):
        trained.append(kwargs["epoch_seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(facecls.training.fold, "train_one_epoch", counting)
    assert run_cli("cv", "--resume", str(run)) == 0
    seed = facecls.training.fold.epoch_seed
    assert trained == [seed(0, 2, 2), seed(0, 3, 1), seed(0, 3, 2), seed(0, 4, 1), seed(0, 4, 2)]
    assert_same_result(tmp_path / "ref", run)


@pytest.mark.slow
def test_full_disk_keeps_previous_checkpoint_and_names_the_folder(
    synthetic_folder: Path, session_cache: Path, tmp_path: Path, reference: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    real_save = facecls.training.checkpoint.save_file
    calls = 0

    def full_disk_at_epoch_2(tensors: dict, filename: str, metadata: dict) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            Path(filename).write_bytes(b"\0" * 100)  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(facecls.training.checkpoint, "save_file", full_disk_at_epoch_2)
    args = train_args(synthetic_folder, tmp_path, session_cache, "--name", "full")
    assert run_cli(*args) == 1
    run = tmp_path / "full"
    err = capsys.readouterr().err
    assert f"no space left on the disk of {run / 'checkpoints'}" in err
    assert "previous file (if any) is unchanged" in err
    assert read_checkpoint(checkpoint_path(run, 0))[0]["epoch"] == 1  # still loadable
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["fold0-last.safetensors"]
    monkeypatch.setattr(facecls.training.checkpoint, "save_file", real_save)
    assert run_cli("train", "--resume", str(run)) == 0  # space freed: continue from epoch 1
    assert_same_result(reference, run)


@pytest.mark.slow
def test_same_seed_same_bits_other_seed_differs(
    synthetic_folder: Path, session_cache: Path, tmp_path: Path, reference: Path
) -> None:
    assert run_cli(*train_args(synthetic_folder, tmp_path, session_cache, "--name", "a")) == 0
    assert_same_result(reference, tmp_path / "a")
    other = train_args(synthetic_folder, tmp_path, session_cache, "--name", "b", "--seed", "1")
    assert run_cli(*other) == 0
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for run, seed in ((tmp_path / "a", 0), (tmp_path / "b", 1)):
        environment = json.loads((run / "environment.json").read_text())
        assert environment["seed"] == seed
        assert environment["facecls"] and environment["torch"] == torch.__version__
        assert environment["libraries"]["numpy"] and environment["libraries"]["safetensors"]
        assert "git_commit" in environment  # a commit hash in a checkout, else null
        assert json.loads((run / "metrics.json").read_text())["environment"]["seed"] == seed


@pytest.mark.slow
def test_resume_refuses_what_it_cannot_continue(
    synthetic_folder: Path, session_cache: Path, tmp_path: Path, reference: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    assert run_cli("train", "--resume", str(reference)) == 2
    assert "already finished" in capsys.readouterr().err
    assert run_cli("train", "--resume", str(tmp_path)) == 2
    assert "not a facecls run folder" in capsys.readouterr().err
    # An unfinished run: contradicting options and the wrong command are refused.
    run = tmp_path / "half"
    run.mkdir()
    for name in ("config.yaml", "folds.json"):
        (run / name).write_bytes((reference / name).read_bytes())
    assert run_cli("train", "--resume", str(run), "--epochs", "9") == 2
    assert "train.epochs: 4 in the run, 9 now" in capsys.readouterr().err
    assert run_cli("cv", "--resume", str(run)) == 2
    assert "this is a train run; use facecls train --resume" in capsys.readouterr().err


# ---- checkpoint files ---------------------------------------------------------------------------


def _tiny_training_state(tmp_path: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer, Path]:
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=3, image_size=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    return model, optimizer, tmp_path / "checkpoints" / "fold0-last.safetensors"


def _one_cycle(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=10)


def test_checkpoint_round_trip_restores_model_optimizer_schedule_and_rng(tmp_path: Path) -> None:
    model, optimizer, path = _tiny_training_state(tmp_path)
    scheduler = _one_cycle(optimizer)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = TrainingState(epoch=3, history=[{"epoch": 3}], best_epoch=2, best_loss=0.5,
                          best_state={k: v.clone() for k, v in model.state_dict().items()})  # fmt: skip
    save_checkpoint(path, model, optimizer, state, scheduler, info={"fold": 0})
    expected_rng = torch.rand(3)
    other = create_model("baseline", num_classes=3, image_size=32)
    other_optimizer = torch.optim.AdamW(other.parameters(), lr=1e-3)
    other_scheduler = _one_cycle(other_optimizer)
    restored = load_checkpoint(path, other, other_optimizer, other_scheduler, expect={"fold": 0})
    assert other_scheduler.state_dict() == scheduler.state_dict()
    assert other_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert torch.equal(torch.rand(3), expected_rng)  # the RNG state came back
    assert (restored.epoch, restored.best_epoch, restored.best_loss) == (3, 2, 0.5)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    saved, loaded = optimizer.state_dict(), other_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, values in saved["state"].items():
        for key, value in values.items():
            assert torch.equal(value, loaded["state"][index][key]), (index, key)
    with pytest.raises(CheckpointError, match="different fold"):
        load_checkpoint(path, other, other_optimizer, expect={"fold": 1})


def test_crash_between_write_and_rename_leaves_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer, path = _tiny_training_state(tmp_path)
    save_checkpoint(path, model, optimizer, TrainingState(epoch=1))
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise SystemExit("power cut between write and rename")

    monkeypatch.setattr(facecls.atomic.os, "replace", crash)
    with pytest.raises(SystemExit):
        save_checkpoint(path, model, optimizer, TrainingState(epoch=2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_checkpoint(path)[0]["epoch"] == 1
    # A SIGKILL there leaves a temporary sibling behind; it never stands in for the checkpoint.
    (path.parent / f".{path.name}.tmp999").write_bytes(b"torn")
    assert read_checkpoint(path)[0]["epoch"] == 1


def test_full_disk_error_names_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer, path = _tiny_training_state(tmp_path)
    save_checkpoint(path, model, optimizer, TrainingState(epoch=1))

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(facecls.training.checkpoint, "save_file", full)
    with pytest.raises(WriteError, match=f"no space left on the disk of {path.parent}"):
        save_checkpoint(path, model, optimizer, TrainingState(epoch=2))
    assert read_checkpoint(path)[0]["epoch"] == 1
    assert list(path.parent.iterdir()) == [path]


def test_signal_handlers_only_in_the_main_thread_and_restored() -> None:
    import threading

    from facecls.training.interrupt import stop_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_signals() as request:
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)  # only sets the flag
        assert request.signum == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in before} == before
    seen: list[object] = []

    def in_a_thread() -> None:
        with stop_signals() as request:  # must not raise (handlers are main-thread only)
            seen.append(signal.getsignal(signal.SIGTERM))
            seen.append(request.signum)

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert seen == [before[signal.SIGTERM], None]
