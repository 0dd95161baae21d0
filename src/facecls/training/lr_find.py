"""``facecls lr-find``: a learning-rate range test (Smith 2015, "Cyclical learning rates";
fastai's ``lr_find``).

The model, normalisation, loss, optimiser, device augmentation and batches are built exactly
as ``train`` builds its fold (:func:`facecls.training.fold_setup.setup_fold`) and trained by the
one loop (:func:`facecls.training.engine.train_one_epoch`), while the learning rate rises
exponentially from ``start_lr`` to ``end_lr`` over ``steps`` mini-batches (as many epochs as
that takes). Each
step's loss is recorded with its exponential moving average (β 0.98, bias-corrected); the test
stops early once that smoothed loss is above 4× its minimum or not finite. The suggestion is
where the smoothed loss falls fastest against log(lr) before its minimum (:func:`suggest`); the
lr of the minimum / 10 is the classic alternative.

A frozen backbone (``--freeze backbone``, and the frozen first phase of
``backbone-then-unfreeze``) trains its head on the cached embeddings of ``probe.py``, as training
does. Nothing of the model is kept: its weights are restored afterwards and then dropped; the run
folder holds ``lr_find.csv``, ``lr_find.png``, ``config.yaml``, ``run.log`` and the run's
``environment.json`` and ``data_files.json``, no weights.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecls.config import RunConfig
from facecls.data.dataset import FaceDataset
from facecls.logs import RunLog
from facecls.numbers import finite
from facecls.progress import bar
from facecls.report.write import write_lr_find
from facecls.training.checkpoint import cpu_copy
from facecls.training.distributed import env_ranks
from facecls.training.engine import train_one_epoch
from facecls.training.finetune import frozen_at, set_backbone_frozen
from facecls.training.fold import Log, epoch_seed
from facecls.training.fold_setup import FoldSetup, ModelSource, setup_fold
from facecls.training.probe import head_only
from facecls.training.run import validation_part
from facecls.training.start import begin_run

BETA = 0.98  # of the loss's exponential moving average (fastai's)
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum


@dataclass
class LrFindResult:
    """The range test's record and what it suggests.

    Attributes:
        lrs: the head's learning rate of each step taken (the backbone's is scaled as in
            training).
        smoothed: the bias-corrected exponential moving average of ``losses``.
        suggestion: the lr where the smoothed loss falls fastest against log(lr).
        min_loss_lr: the lr of the lowest smoothed loss; ``min_loss_lr / 10`` is the careful
            choice.
        stopped_early: the loss diverged (or became NaN) before ``steps``.
    """

    run_dir: Path
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    min_loss_lr: float
    stopped_early: bool


class _Done(Exception):
    """Ends the range test from inside the training loop."""


class _Recorder:
    """``on_loss`` of the loop: records each step and ends the test when it is over."""

    def __init__(self, optimizer: torch.optim.Optimizer, steps: int, counter: Any) -> None:
        self.optimizer, self.steps, self.counter = optimizer, steps, counter
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.average, self.lowest, self.stopped_early = 0.0, math.inf, False

    def __call__(self, loss: torch.Tensor) -> None:
        value = float(loss)  # one sync per step, by design: the stopping rule needs it now
        self.average = BETA * self.average + (1 - BETA) * value
        smooth = self.average / (1 - BETA ** (len(self.losses) + 1))
        # The scheduler has not stepped yet: group 0 (the head) still holds this step's lr.
        self.lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        self.losses.append(value)
        self.smoothed.append(smooth)
        self.counter.update(1)
        self.lowest = min(self.lowest, smooth)
        if not math.isfinite(smooth) or smooth > DIVERGED * self.lowest:
            self.stopped_early = True
            raise _Done
        if len(self.losses) >= self.steps:
            raise _Done


def smooth_losses(losses: list[float], beta: float = BETA) -> list[float]:
    """The bias-corrected exponential moving average of ``losses`` (what the test records)."""
    average, out = 0.0, []
    for i, value in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta**i))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """``(steepest, min_loss_lr)``: where the smoothed loss falls fastest against log(lr), and
    the lr of its minimum.

    The steepest fall is the most negative slope between neighbouring steps from the end of
    the first tenth (the average of a few steps is noise) to the minimum (past it the loss
    rises); its lower lr is returned, the careful end. Too few steps there: the whole finite
    record is used.
    """
    lr, loss = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    finite = np.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    if len(loss) == 0:
        raise ValueError("the loss was not finite at any step: lower --start-lr")
    lowest = int(np.argmin(loss))
    start, stop = len(loss) // 10, lowest + 1
    if stop - start < 2:
        start, stop = 0, len(loss)
    if stop - start < 2:
        return float(lr[lowest]), float(lr[lowest])
    slopes = np.diff(loss[start:stop]) / np.diff(np.log(lr[start:stop]))
    return float(lr[start + int(np.argmin(slopes))]), float(lr[lowest])


def _check(steps: int, start_lr: float, end_lr: float) -> None:
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    finite(start_lr, "--start-lr")
    finite(end_lr, "--end-lr")  # inf passed the comparison below and made every lr inf
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < --start-lr < --end-lr, got {start_lr:g} and {end_lr:g}")
    if env_ranks(os.environ)[1] > 1:
        raise ValueError("lr-find runs in one process: start it without torchrun")


def lr_find(
    config: RunConfig, steps: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0,
    log: Log = print, show_progress: bool = False,
) -> LrFindResult:  # fmt: skip
    """Run a learning-rate range test of ``config``'s model on its training part.

    The run folder (``runs/<name>``, as ``train`` names it) gets ``lr_find.csv`` (step, lr,
    loss, smoothed), ``lr_find.png``, ``config.yaml`` and ``run.log``; no weights.

    Args:
        steps: mini-batches at most; the lr of step i is ``start_lr·(end_lr/start_lr)^(i/(steps−1))``.
        start_lr: the first step's lr (the head's; a pretrained backbone's is scaled by
            ``backbone_lr_scale`` as in training).
        end_lr: the last step's lr, if the loss has not diverged before.
    """
    _check(steps, start_lr, end_lr)
    started = time.perf_counter()
    with RunLog(log) as record:
        config, run, log, show_progress = begin_run(config, record, show_progress, "lr-find", None)
        val_idx = validation_part(run.dataset, run.split, config)
        train_idx = np.setdiff1d(run.split.pool, val_idx)
        models = ModelSource(config, run.dataset.num_classes, run.device)
        setup = setup_fold(run.dataset, run.targets, train_idx, val_idx, config, run.device,
                           models, lr=start_lr)  # fmt: skip
        recorder = _range_test(setup, run.dataset, run.images, config, models, steps, start_lr,
                               end_lr, log, show_progress)  # fmt: skip
        suggestion, min_loss_lr = suggest(recorder.lrs, recorder.smoothed)
        result = LrFindResult(run.run_dir, recorder.lrs, recorder.losses, recorder.smoothed,
                              suggestion, min_loss_lr, recorder.stopped_early)  # fmt: skip
        write_lr_find(run.run_dir, result.lrs, result.losses, result.smoothed, suggestion,
                      min_loss_lr)  # fmt: skip
        _log_result(result, steps, log)
        log(f"Run folder: {run.run_dir} (wall time {time.perf_counter() - started:.1f} s)")
    return result


def _range_test(
    setup: FoldSetup, dataset: FaceDataset, images: torch.Tensor, config: RunConfig,
    models: ModelSource, steps: int, start_lr: float, end_lr: float, log: Log,
    show_progress: bool,
) -> _Recorder:  # fmt: skip
    """Train with a rising lr until ``steps`` or divergence; the weights are restored after."""
    t, module = config.train, setup.module
    kept = cpu_copy(module.state_dict())
    setup.loss_fn.set_epoch(1)
    if t.freeze != "none":
        set_backbone_frozen(module, frozen_at(t, 1))
    probe = None
    if frozen_at(t, 1) and not t.compile:  # the head on cached embeddings, as training does
        probe = head_only(dataset, module, images, setup.mean, setup.std, setup.runtime, config,
                          log, models.embedded)  # fmt: skip
    net, rows = (probe.head, probe.features) if probe else (setup.model, images)
    batches, _ = setup.batches_of(rows)
    ratio = end_lr / start_lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        setup.optimizer, lambda i: ratio ** (min(i, steps - 1) / (steps - 1))
    )
    counter = bar(steps, "lr-find", show_progress, unit="step")
    recorder = _Recorder(setup.optimizer, steps, counter)
    try:
        for epoch in range(1, steps + 1):  # an epoch has at least one step
            train_one_epoch(
                net, batches, setup.optimizer, setup.loss_fn, setup.mean, setup.std,
                config.augment, epoch_seed(t.seed, 0, epoch), setup.runtime, scheduler,
                inputs_of=probe.train_inputs if probe else None, on_loss=recorder,
            )  # fmt: skip
    except _Done:
        pass
    finally:
        counter.close()
        module.load_state_dict(kept)
    return recorder


def _log_result(result: LrFindResult, steps: int, log: Log) -> None:
    taken = len(result.lrs)
    how = (
        f"stopped at step {taken} of {steps}: the smoothed loss passed {DIVERGED:g}× its "
        "minimum or was not finite" if result.stopped_early else f"{taken} steps"
    )  # fmt: skip
    log(f"lr-find: lr {result.lrs[0]:.2g} → {result.lrs[-1]:.2g}, {how}; steepest descent at "
        f"lr {result.suggestion:.2g}, lowest smoothed loss at lr {result.min_loss_lr:.2g}")  # fmt: skip
    lowest = int(np.nanargmin(result.smoothed))
    if lowest == 0 or result.smoothed[lowest] >= 0.99 * result.smoothed[0]:
        log("warning: the smoothed loss hardly fell: try a lower --start-lr, or check the data")
