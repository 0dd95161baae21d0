"""Non-finite loss: the run stops naming fold, epoch and step (or skips the batch when asked),
and no model with NaN weights is ever kept."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

import facecls.training.fold
from facecls.cli import main
from facecls.training.checkpoint import checkpoint_path, read_checkpoint
from facecls.training.fold import epoch_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NaNAtStep(nn.Module):
    """A loss that turns NaN at given training steps (1-based) and is exact otherwise."""

    def __init__(self, inner: nn.Module, steps: set[int]) -> None:
        super().__init__()
        self.inner, self.steps, self.calls = inner, steps, 0

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.inner(logits, targets)
        if torch.is_grad_enabled():  # training, not evaluation
            self.calls += 1
            if self.calls in self.steps:
                return loss * float("nan")
        return loss


def _poison_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, steps: set[int]) -> None:
    """Give fold 0's ``epoch`` a loss that is NaN at ``steps``."""
    real = facecls.training.fold.train_one_epoch

    def poisoned(*args: object, **kwargs: object):
        if kwargs["epoch_seed"] == epoch_seed(0, 0, epoch):
            kwargs["loss_fn"] = NaNAtStep(kwargs["loss_fn"], steps)  # type: ignore[arg-type]
        return real(*args, **kwargs)

    monkeypatch.setattr(facecls.training.fold, "train_one_epoch", poisoned)


def _args(data: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "--quiet", "train", "--data", str(data), "--image-size", "32", "--epochs", "3",
        "--batch-size", "8", "--runs-dir", str(runs), "--name", "nan", *extra,
    ]  # fmt: skip


def _all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def test_nan_loss_stops_with_fold_epoch_and_step(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    _poison_epoch(monkeypatch, 2, {2})
    assert main(_args(synthetic_folder, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "NaN or infinite in fold 0, epoch 2, step 2" in err and "--skip-nonfinite" in err
    run = tmp_path / "nan"
    assert not (run / "model").exists() and not (run / "metrics.json").exists()
    doc, tensors = read_checkpoint(checkpoint_path(run, 0))
    assert doc["epoch"] == 1 and doc["best_epoch"] == 1  # the last good epoch is kept
    assert _all_finite(tensors)


def test_skip_nonfinite_skips_the_batch_and_finishes(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_epoch(monkeypatch, 2, {1, 3})
    assert main(_args(synthetic_folder, tmp_path, "--skip-nonfinite")) == 0
    run = tmp_path / "nan"
    with (run / "history.csv").open() as f:
        skipped = [int(row["skipped_batches"]) for row in csv.DictReader(f)]
    assert skipped == [0, 2, 0]
    assert _all_finite(load_file(run / "model" / "model.safetensors"))


def test_nan_weights_with_a_finite_loss_are_never_kept(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    """BatchNorm running statistics do not enter the training loss, but they are weights."""
    real = facecls.training.fold.train_one_epoch

    def corrupt_after_epoch_2(*args: object, **kwargs: object):
        stats = real(*args, **kwargs)
        if kwargs["epoch_seed"] == epoch_seed(0, 0, 2):
            model = args[0]
            next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)).running_var.fill_(
                float("nan")
            )
        return stats

    monkeypatch.setattr(facecls.training.fold, "train_one_epoch", corrupt_after_epoch_2)
    assert main(_args(synthetic_folder, tmp_path)) == 1
    assert "fold 0, epoch 2: weight 'features.3.running_var' holds NaN" in capsys.readouterr().err
    doc, tensors = read_checkpoint(checkpoint_path(tmp_path / "nan", 0))
    assert doc["epoch"] == 1 and _all_finite(tensors)
