"""``facecls lr-find``: the learning-rate range test (Smith 2015; fastai's lr_find)."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import facecls
from facecls.cli import build_parser, config_from_args, main
from facecls.training import lr_find as lr_find_module
from facecls.training.fold_setup import ModelSource
from facecls.training.lr_find import smooth_losses, suggest

TINY = ["--model", "baseline", "--image-size", "32", "--batch-size", "16", "--device", "cpu"]


def _rows(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "lr_find.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _config(folder: Path, runs: Path, *extra: str) -> facecls.RunConfig:
    """The config ``facecls lr-find`` builds from these options."""
    args = build_parser().parse_args(
        ["lr-find", "--data", str(folder), *TINY, "--runs-dir", str(runs), *extra]
    )
    return config_from_args(args, "lr-find")


def test_cli_writes_the_record_the_plot_and_a_suggestion_in_range(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([
            "lr-find", "--data", str(synthetic_folder), *TINY, "--steps", "30",
            "--runs-dir", str(tmp_path), "--name", "lf",
        ])  # fmt: skip
    assert code == 0
    run = tmp_path / "lf"
    assert (run / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "config.yaml").is_file() and "lr-find: lr 1e-07" in (run / "run.log").read_text()
    rows = _rows(run)
    lrs = [r["lr"] for r in rows]
    assert 2 <= len(rows) <= 30 and [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(b > a for a, b in zip(lrs, lrs[1:], strict=False))  # rising every step
    # exponential from 1e-7 to 10 over 30 steps: each step multiplies the lr by 10^(8/29)
    np.testing.assert_allclose(lrs, 1e-7 * 10 ** (8 * np.arange(len(lrs)) / 29), rtol=1e-4)
    smoothed = smooth_losses([r["loss"] for r in rows])
    np.testing.assert_allclose([r["smoothed"] for r in rows], smoothed, rtol=1e-4)
    line = out.getvalue().strip().splitlines()[-1]
    suggested = float(re.search(r"--lr (\S+)$", line).group(1))
    assert line.startswith("Suggested --lr") and str(run / "config.yaml") in line
    assert min(lrs) * 0.99 <= suggested <= max(lrs) * 1.01
    # no model is kept: no weights file anywhere, no bundle, no checkpoints
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".safetensors", ".pt", ".pth")]
    assert not (run / "model").exists() and not (run / "checkpoints").exists()


def test_stops_early_when_the_loss_explodes(synthetic_folder: Path, tmp_path: Path) -> None:
    result = facecls.lr_find(
        _config(synthetic_folder, tmp_path), steps=60, start_lr=1e-3, end_lr=1e8,
        log=lambda _m: None,
    )  # fmt: skip
    assert result.stopped_early and len(result.lrs) < 60
    last = result.smoothed[-1]
    assert not np.isfinite(last) or last > 4 * np.nanmin(result.smoothed[:-1])
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1]
    assert len(_rows(result.run_dir)) == len(result.lrs)


def test_the_model_trains_during_the_test_and_its_weights_are_restored(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]] = []
    real_get = ModelSource.get

    def get(self: ModelSource, fold: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        model, module = real_get(self, fold)
        built.append((module, {k: v.clone() for k, v in module.state_dict().items()}))
        return model, module

    moved: list[bool] = []
    real_call = lr_find_module._Recorder.__call__

    def spy(self: lr_find_module._Recorder, loss: torch.Tensor) -> None:
        module, before = built[0]
        moved.append(any(not torch.equal(v, before[k]) for k, v in module.state_dict().items()))
        real_call(self, loss)

    monkeypatch.setattr(ModelSource, "get", get)
    monkeypatch.setattr(lr_find_module._Recorder, "__call__", spy)
    result = facecls.lr_find(
        _config(synthetic_folder, tmp_path), steps=12, start_lr=1e-3, end_lr=1.0,
        log=lambda _m: None,
    )  # fmt: skip
    assert len(built) == 1 and len(result.lrs) == len(moved)
    assert any(moved)  # the steps did change the weights ...
    module, before = built[0]
    for key, value in module.state_dict().items():  # ... and they are as built again
        assert torch.equal(value, before[key]), key


def test_a_frozen_backbone_trains_its_head_on_cached_embeddings(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    messages: list[str] = []
    config = _config(synthetic_folder, tmp_path, "--model", "tronnet", "--freeze", "backbone")
    result = facecls.lr_find(config, steps=10, start_lr=1e-4, end_lr=1.0, log=messages.append)
    assert any(m.startswith("Embedding") or m.startswith("Embeddings of") for m in messages)
    assert len(result.lrs) >= 2 and np.isfinite(result.losses[0])


def test_suggest_finds_the_steepest_fall_before_the_minimum() -> None:
    lrs = np.logspace(-7, 1, 100)
    x = np.log10(lrs)
    # falls fastest at lr 1e-3 (tanh's inflection), lowest near 1e-1, then explodes
    loss = 2.0 - np.tanh(x + 3) + np.where(x > -1, 40 * (x + 1) ** 2, 0.0)
    steepest, lowest = suggest(lrs.tolist(), loss.tolist())
    assert 10**-3.2 <= steepest <= 10**-2.8
    assert lowest == pytest.approx(lrs[int(np.argmin(loss))])
    assert smooth_losses([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # bias-corrected


@pytest.mark.parametrize(
    ("options", "problem"),
    [(["--steps", "1"], "--steps"), (["--start-lr", "1", "--end-lr", "0.1"], "--start-lr")],
)
def test_bad_range_is_one_line_and_no_folder(
    options: list[str], problem: str, synthetic_folder: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code = main(["lr-find", "--data", str(synthetic_folder), *TINY, "--runs-dir", str(tmp_path),
                 *options])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
