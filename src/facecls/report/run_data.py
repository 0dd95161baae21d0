"""Read a run folder back into memory for reports and comparisons; nothing here writes.

A run folder (see ``training/run.py``) holds ``config.yaml``, ``metrics.json``, ``data_report.json``,
``folds.json``, ``history.csv`` and ``predictions.csv`` (and ``openset.json`` once
``facecls evaluate --strangers`` measured the open-set decision). :func:`load_run` reads them once and
checks that they are there, so report code never touches the disk layout itself.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecls import metrics
from facecls.atomic import read_cell
from facecls.config import RunConfig
from facecls.config_io import load_yaml

REQUIRED = ("config.yaml", "metrics.json", "predictions.csv")


class RunFolderError(FileNotFoundError):
    """A folder is not a complete facecls run; the message names what is missing."""


@dataclass
class Prediction:
    """One row of ``predictions.csv``: a test image, its true identity and the top-k guesses."""

    path: str
    true: str
    predicted: str
    probability: float
    top: list[tuple[str, float]]

    @property
    def correct(self) -> bool:
        return self.true == self.predicted

    @property
    def in_top5(self) -> bool:
        return any(name == self.true for name, _ in self.top[:5])


@dataclass
class RunData:
    """Everything a report shows about one run, as read from its folder.

    Attributes:
        class_names: identity names in class-index order (that of ``metrics.json``'s per-class).
        history: ``history.csv`` rows with numbers parsed.
        folds: ``folds.json`` (test/pool/fold paths and how the split was made), or ``{}``.
        data_report: ``data_report.json``, or ``{}`` when missing.
        openset: ``openset.json`` (``facecls evaluate --strangers``), or ``{}`` when missing.
    """

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    data_report: dict[str, Any]
    folds: dict[str, Any]
    history: list[dict[str, float]]
    predictions: list[Prediction]
    class_names: list[str]
    openset: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def command(self) -> str:
        return str(self.metrics.get("command", "train"))

    def class_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}

    def targets_preds(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) true and predicted class indices of the test images, in ``predictions`` order."""
        index = self.class_index()
        targets = np.array([index[p.true] for p in self.predictions], dtype=np.int64)
        preds = np.array([index[p.predicted] for p in self.predictions], dtype=np.int64)
        return targets, preds

    def confusion(self) -> np.ndarray:
        """The test part's (K, K) confusion matrix of counts, rebuilt from ``predictions.csv``."""
        targets, preds = self.targets_preds()
        return metrics.confusion_matrix(targets, preds, len(self.class_names))


def check_run_folder(path: Path, what: str = "run folder") -> None:
    """Refuse a path that is nothing at all: a run name typed without its runs folder.

    Raises:
        RunFolderError: "no ``what`` named …", with the runs folder's path when the name is
            one there.
    """
    path = Path(path)
    if path.exists():
        return
    where = "" if path.is_absolute() else f" in {Path.cwd()}"
    if not path.is_absolute() and (Path("runs") / path).is_dir():
        where += f"; did you mean {Path('runs') / path}?"
    raise RunFolderError(f"no {what} named {path}{where}")


def _read_predictions(path: Path) -> list[Prediction]:
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            top = []
            r = 1
            while f"top{r}" in row:
                top.append((read_cell(row[f"top{r}"]), float(row[f"top{r}_probability"])))
                r += 1
            rows.append(
                Prediction(
                    read_cell(row["path"]),
                    read_cell(row["true"]),
                    read_cell(row["predicted"]),
                    float(row["probability"]),
                    top,
                )
            )
    return rows


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def check_complete_run(run_dir: Path) -> None:
    """Refuse a path that is not a finished run folder (:data:`REQUIRED`), in one line; reads
    nothing but file names, so the command line checks its folders before loading PyTorch.

    Raises:
        RunFolderError: no such folder, or one of the files is missing.
    """
    check_run_folder(run_dir)
    missing = [name for name in REQUIRED if not (Path(run_dir) / name).is_file()]
    if missing:
        raise RunFolderError(
            f"{run_dir}: not a complete facecls run folder (missing {', '.join(missing)}); "
            "give a folder written by `facecls train` or `facecls cv`"
        )


def load_run(run_dir: Path) -> RunData:
    """Read a run folder written by ``facecls train`` or ``facecls cv``.

    Raises:
        RunFolderError: when ``config.yaml``, ``metrics.json`` or ``predictions.csv`` is missing.
    """
    run_dir = Path(run_dir)
    check_complete_run(run_dir)
    result_metrics = _read_json(run_dir / "metrics.json")
    class_names = [row["name"] for row in result_metrics["test"]["per_class"]]
    return RunData(
        run_dir=run_dir,
        config=load_yaml(run_dir / "config.yaml"),
        metrics=result_metrics,
        data_report=_read_json(run_dir / "data_report.json"),
        folds=_read_json(run_dir / "folds.json"),
        history=_read_history(run_dir / "history.csv"),
        predictions=_read_predictions(run_dir / "predictions.csv"),
        class_names=class_names,
        openset=_read_json(run_dir / "openset.json"),
    )
