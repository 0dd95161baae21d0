"""Live curves: what each epoch measured, written as TensorBoard scalars while a run trains.

``history.csv`` stays the record; the event files under ``run_dir/tensorboard/fold<k>`` are a
view to watch during a long ``cv`` (``tensorboard --logdir runs``), one line per fold.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from facecls.training.evaluate import group_metrics
from facecls.training.fold import EpochHook

TENSORBOARD_DIR = "tensorboard"
# history row column → scalar tag
_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_accuracy": "accuracy/val",
    "val_balanced_accuracy": "balanced_accuracy/val",
    "lr": "learning_rate",
}


def summary_writer() -> Any:
    """torch's ``SummaryWriter`` class, or the install line when the extra is missing (asked
    before any data is decoded or a run folder made).

    Raises:
        ImportError: the ``tensorboard`` package is missing.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch's writer needs the tensorboard package
        raise ImportError(
            "--tensorboard needs the tensorboard package: pip install 'facecls[tensorboard]'"
        ) from error
    return SummaryWriter


class TensorBoardCurves:
    """An :data:`EpochHook` writing one TensorBoard run per fold under ``run_dir/tensorboard``.

    Raises:
        ImportError: the ``tensorboard`` package is missing (``pip install 'facecls[tensorboard]'``).
    """

    def __init__(self, run_dir: Path) -> None:
        self._writer_class = summary_writer()
        self.folder = Path(run_dir) / TENSORBOARD_DIR
        self._writers: dict[int, Any] = {}

    def __call__(self, row: dict[str, Any], cm: np.ndarray, train_counts: np.ndarray) -> None:
        fold, epoch = int(row["fold"]), int(row["epoch"])
        if fold not in self._writers:
            self._writers[fold] = self._writer_class(log_dir=str(self.folder / f"fold{fold}"))
        writer = self._writers[fold]
        for column, tag in _TAGS.items():
            writer.add_scalar(tag, float(row[column]), epoch)
        for group, recall in group_metrics(cm, train_counts)["recall"].items():
            writer.add_scalar(f"recall/{group}", float(recall), epoch)
        writer.flush()  # visible to a running TensorBoard at once

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


@contextmanager
def epoch_hooks(
    run_dir: Path, tensorboard: bool, on_epoch: EpochHook | None
) -> Iterator[EpochHook | None]:
    """One hook calling the live curves (when ``tensorboard``) and then ``on_epoch``."""
    curves = TensorBoardCurves(run_dir) if tensorboard else None
    if curves is None:
        yield on_epoch
        return

    def both(row: dict[str, Any], cm: np.ndarray, train_counts: np.ndarray) -> None:
        curves(row, cm, train_counts)
        if on_epoch is not None:
            on_epoch(row, cm, train_counts)

    try:
        yield both
    finally:
        curves.close()
