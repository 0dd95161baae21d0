"""facecls tune: a tiny study runs, resumes without repeating a trial, and its best config trains."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from facecls.cli import main
from facecls.config_io import load_yaml
from facecls.training.tune import STUDY_FILE


def _trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(
        study_name="facecls", storage=f"sqlite:///{folder / STUDY_FILE}"
    ).trials


def test_study_resumes_and_its_best_config_trains(
    synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = [
        "--data", str(synthetic_folder), "--model", "baseline", "--image-size", "32",
        "--epochs", "2", "--batch-size", "16", "--runs-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(["--quiet", "tune", *tiny, "--name", "study", "--trials", "2"]) == 0
    folder = tmp_path / "study"
    first = _trials(folder)
    assert len(first) == 2 and all(t.state.is_finished() for t in first)
    # an interrupted session leaves a study with fewer trials than asked: resume asks for 3
    assert main(["--quiet", "tune", "--resume", str(folder), "--trials", "3"]) == 0
    after = _trials(folder)
    assert len(after) == 3  # the two finished trials were kept, one new trial ran
    assert [t.params for t in after[:2]] == [t.params for t in first]
    assert after[2].params != after[0].params and after[2].params != after[1].params
    assert sorted(p.name for p in (folder / "trials").iterdir()) == [
        "trial-0", "trial-1", "trial-2"
    ]  # fmt: skip
    # the best configuration is the best finished trial's settings
    values = [t.value for t in after if t.value is not None]
    best = load_yaml(folder / "best.yaml")
    best_trial = max((t for t in after if t.value is not None), key=lambda t: t.value)
    assert best_trial.value == max(values)
    assert best.train.lr == pytest.approx(best_trial.params["lr"])
    assert best.train.weight_decay == pytest.approx(best_trial.params["weight_decay"])
    page = (folder / "tuning.md").read_text()
    assert f"{best_trial.number} (best)" in page and page.count("| ") >= 4
    assert "trial 2:" in (folder / "run.log").read_text()
    # train --config accepts it
    capsys.readouterr()
    code = main([
        "--quiet", "train", "--config", str(folder / "best.yaml"), "--epochs", "1",
        "--runs-dir", str(tmp_path), "--name", "from-best",
    ])  # fmt: skip
    assert code == 0
    trained = load_yaml(tmp_path / "from-best" / "config.yaml")
    assert trained.train.lr == pytest.approx(best_trial.params["lr"])
