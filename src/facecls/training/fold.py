"""One fold's epochs: ``train_model`` trains a fold (checkpoints, signals, non-finite checks)
and ``share_folds`` hands folds trained on other ranks to every rank; what a fold trains with
(``ModelSource``, ``setup_fold``) is :mod:`facecls.training.fold_setup`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from facecls import metrics
from facecls.config import RunConfig
from facecls.data.batches import IndexBatches
from facecls.data.dataset import FaceDataset
from facecls.models.embedding import head_name
from facecls.progress import bar as progress_bar
from facecls.runtime import Runtime
from facecls.training.checkpoint import (
    TrainingState,
    cpu_copy,
    load_checkpoint,
    save_checkpoint,
)
from facecls.training.distributed import (
    DistContext,
    broadcast_array,
    broadcast_module,
    broadcast_object,
)
from facecls.training.engine import EpochStats, EvalResult, evaluate, train_one_epoch
from facecls.training.finetune import backbone_frozen, describe, frozen_at
from facecls.training.finetune import set_backbone_frozen as _set_frozen
from facecls.training.fold_setup import ModelSource, setup_fold
from facecls.training.interrupt import StopRequest, signal_hook_for_tests
from facecls.training.optimization import build_scheduler
from facecls.training.probe import HeadOnly, head_only
from facecls.training.top_tune import TopOnly, tune_top

Log = Callable[[str], None]
# Called after each epoch with its history row, the (C, C) validation confusion matrix and the
# training images per identity: live curves and tuning's pruning listen here.
EpochHook = Callable[[dict[str, Any], np.ndarray, np.ndarray], None]


@dataclass
class TrainedModel:
    """One trained model (the best epoch by validation loss) and how it got there."""

    model: nn.Module
    mean: list[float]
    std: list[float]
    history: list[dict[str, Any]]
    best_epoch: int
    val: EvalResult
    train_counts: np.ndarray
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    # A linear probe's cached embeddings of every image (``probe.py``): evaluation and
    # calibration read them instead of running the frozen backbone again.
    head_only: HeadOnly | None = None
    # ``--freeze top``: the tuned network's outputs of the training and validation rows, for
    # calibration (the test part runs the whole tuned network).
    top_only: TopOnly | None = None


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite loss or weights; the message says where."""


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    """Batch order and augmentation of an epoch depend only on (seed, fold, epoch)."""
    return (seed * 1_000_003 + fold * 10_007 + epoch) % (2**63)


def _global_seed(seed: int, fold: int, epoch: int) -> int:
    """Seed of the global torch RNG for an epoch (dropout draws from it), distinct from the
    augmentation generator's stream."""
    return (epoch_seed(seed, fold, epoch) + 0x9E3779B97F4A7C15) % (2**63)


def _first_nonfinite(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the first floating-point tensor holding a NaN or infinity, else ``None``."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _changed_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an epoch can have changed: the whole state, or only the head's while the backbone is
    frozen (its weights and eval-mode buffers stay as loaded; checking FaceNet's 23 M frozen
    weights every epoch cost a probe more than its training)."""
    state = model.state_dict()
    if not backbone_frozen(model):
        return state
    head = head_name(model) + "."
    return {name: tensor for name, tensor in state.items() if name.startswith(head)}


def _check_epoch(stats: EpochStats, val_loss: float, model: nn.Module, fold: int, epoch: int):
    """Refuse to go on (or keep a model) after a non-finite loss or weight."""
    where = f"fold {fold}, epoch {epoch}"
    if stats.nonfinite_step is not None:
        raise NonFiniteError(
            f"the training loss became NaN or infinite in {where}, step "
            f"{stats.nonfinite_step}. Lower --lr, check the data, or pass --skip-nonfinite to "
            "skip such batches. Checkpoints of earlier epochs are kept."
        )
    bad = _first_nonfinite(_changed_state(model))
    if bad is not None:
        raise NonFiniteError(f"{where}: weight {bad!r} holds NaN or infinite values")
    if not math.isfinite(val_loss):
        raise NonFiniteError(f"{where}: the validation loss is {val_loss}")


def _batch_callback(
    bar: Any, stop: StopRequest | None, fold: int, epoch: int
) -> Callable[[int], None]:
    """Called after each step: progress, the test hook, then a stop if a signal came."""
    hook = signal_hook_for_tests(fold, epoch)
    step = 0

    def on_batch(size: int) -> None:
        nonlocal step
        step += 1
        bar.update(size)
        if hook is not None:
            hook(step)
        if stop is not None:
            stop.check(fold, epoch, step)

    return on_batch


def _kept_pass(
    state: TrainingState, module: nn.Module, val_batches: IndexBatches, val_targets: np.ndarray,
    probe: tuple[HeadOnly, IndexBatches] | None, mean: list[float], std: list[float],
    loss_fn: nn.Module, flip_tta: bool, runtime: Runtime,
) -> EvalResult:  # fmt: skip
    """The kept model's validation numbers: its epoch's one pass (history.csv's row, its logits
    and embeddings kept in the checkpoint across a resume). Only where that pass kept no
    embeddings (a compiled or replicated model) does a second pass run, for them alone.

    Args:
        val_targets: the targets of ``val_batches`` in the order of its (gathered) pass.
        probe: the cached head and its validation batches when calibration reads the cache.
    """
    if state.best_logits is not None and state.best_features is not None:
        logits, features = state.best_logits.numpy(), state.best_features.numpy()
        return EvalResult(logits, val_targets, state.best_loss, features)
    if probe is not None:
        val = evaluate(
            probe[0].head, probe[1], mean, std, loss_fn, flip_tta, runtime,
            views=probe[0].eval_views, features=True,
        )  # fmt: skip
    else:
        val = evaluate(module, val_batches, mean, std, loss_fn, flip_tta, runtime, features=True)
    if state.best_logits is None:  # a checkpoint written before the logits were kept
        return val
    return EvalResult(state.best_logits.numpy(), val.targets, state.best_loss, val.features)


def train_model(
    dataset: FaceDataset,
    images: torch.Tensor,
    targets: torch.Tensor,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: RunConfig,
    device: torch.device,
    models: ModelSource,
    fold: int = 0,
    log: Log = print,
    show_progress: bool = False,
    checkpoint: Path | None = None,
    stop: StopRequest | None = None,
    dist: DistContext | None = None,
    on_epoch: EpochHook | None = None,
    embed_frozen: bool = True,
) -> TrainedModel:
    """Train one model on ``train_idx``, keep the epoch with the lowest validation loss.

    Args:
        images: the dataset's uint8 images, already resident (device or pinned host memory).
        targets: the dataset's targets on the same device as ``images``.
        checkpoint: saved at the end of every epoch; when it exists, training continues from
            it (a complete fold trains no further).
        stop: checked after every step and epoch; raises :class:`Interrupted` once set.
        dist: this rank; with several, every rank calls this and trains the same model
            (``models`` must wrap it in DistributedDataParallel), each on its rows of every
            batch, and rank 0 writes the checkpoint. ``None``: one process.
        embed_frozen: while the backbone is frozen, train the head on its embeddings computed
            once (``probe.py``; one process, not compiled); ``False``: run the backbone in
            every step, as a fine-tuned model does.

    Raises:
        NonFiniteError: a loss or weight became NaN or infinite (the checkpoint keeps the last
            good epoch).
    """
    t = config.train
    dist = dist or DistContext(device=device)
    setup = setup_fold(dataset, targets, train_idx, val_idx, config, device, models, fold, dist)
    model, module, runtime = setup.model, setup.module, setup.runtime
    mean, std, counts, loss_fn = setup.mean, setup.std, setup.counts, setup.loss_fn
    optimizer, batches_of = setup.optimizer, setup.batches_of
    # Validation loss (checkpoint selection) is never smoothed, and for DRW is the re-weighted
    # loss of the last phase in every epoch, so the best epoch is chosen on one scale.
    val_loss_fn = loss_fn.selection_loss()
    pretrained = bool(t.pretrained or t.weights)
    train_batches, val_batches = batches_of(images)
    scheduler = build_scheduler(optimizer, t, len(train_batches))
    if fold == 0 and (t.freeze != "none" or pretrained):
        log(f"Fine-tuning: {describe(t, pretrained)}")
    facts = {"fold": fold, "class_names": dataset.class_names, "model": t.model}
    state = TrainingState()
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, module, optimizer, scheduler, expect=facts)
        log(
            f"fold {fold}: complete in {checkpoint.name}, not retrained" if state.complete
            else f"fold {fold}: resuming from {checkpoint.name} after epoch {state.epoch}"
        )  # fmt: skip
    probe = None
    # The report's recipe rotates the images its frozen backbone sees (its §3.1, §3.4), which
    # embeddings computed once cannot: under it the backbone runs in every step.
    warped = config.augment.enabled and bool(config.augment.rotation or config.augment.scale
                                             or config.augment.translate)  # fmt: skip
    embed_frozen = embed_frozen and not (t.recipe == "report" and warped)
    if embed_frozen and frozen_at(t, state.epoch + 1) and not t.compile and not dist.distributed:
        _set_frozen(module, True)
        probe = head_only(dataset, module, images, mean, std, runtime, config, log, models.embedded)
        probe_batches = batches_of(probe.features)
    if t.freeze == "top" and probe is None:  # before any training, not after it
        raise ValueError(
            "--freeze top tunes the last stage after a probe on cached embeddings: it needs one "
            "process and no --recipe report with rotation, zoom or shift"
        )
    for epoch in range(state.epoch + 1, t.epochs + 1):
        torch.manual_seed(_global_seed(t.seed, fold, epoch))
        loss_fn.set_epoch(epoch)
        if t.freeze != "none":
            _set_frozen(module, frozen_at(t, epoch))
        # While the backbone is frozen only the head trains, on the cached embeddings.
        on_cache = probe is not None and frozen_at(t, epoch)
        net, (epoch_batches, epoch_val) = (
            (probe.head, probe_batches) if on_cache else (model, (train_batches, val_batches))
        )
        # The end of each epoch is logged; off a terminal the bar stays silent (lines=False).
        bar = progress_bar(
            len(train_batches) * t.batch_size, f"fold {fold} epoch {epoch}/{t.epochs}",
            show_progress, lines=False,
        )  # fmt: skip
        try:
            stats = train_one_epoch(
                net, epoch_batches, optimizer, loss_fn=loss_fn, mean=mean, std=std,
                augment_config=config.augment, epoch_seed=epoch_seed(t.seed, fold, epoch),
                runtime=runtime, scheduler=scheduler,
                on_batch=_batch_callback(bar, stop, fold, epoch), skip_nonfinite=t.skip_nonfinite,
                inputs_of=probe.train_inputs if on_cache else None,
            )  # fmt: skip
        finally:
            bar.close()
        # The embeddings come with the logits (a forward hook on the bare module or the cached
        # head), so the kept epoch's one pass also feeds calibration.
        val = evaluate(
            net, epoch_val, mean, std, val_loss_fn, bool(t.flip_tta), runtime,
            features=on_cache or net is module, views=probe.eval_views if on_cache else None,
        )  # fmt: skip
        _check_epoch(stats, val.loss, module, fold, epoch)
        cm = metrics.confusion_matrix(val.targets, val.preds, dataset.num_classes)
        summary = metrics.summary(cm)
        row = {
            "fold": fold,
            "epoch": epoch,
            "train_loss": round(stats.loss, 6),
            "val_loss": round(val.loss, 6),
            "val_accuracy": round(summary["accuracy"], 6),
            "val_balanced_accuracy": round(summary["balanced_accuracy"], 6),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(stats.seconds, 3),
            "images_per_second": round(stats.images / max(stats.seconds, 1e-9), 1),
        }
        if t.skip_nonfinite:
            row["skipped_batches"] = stats.skipped
        state.history.append(row)
        log(
            f"fold {fold} epoch {epoch:>3}/{t.epochs}  train loss {stats.loss:.4f}  "
            f"val loss {val.loss:.4f}  val acc {summary['accuracy']:.3f}  "
            f"bal acc {summary['balanced_accuracy']:.3f}  {row['images_per_second']:.0f} img/s"
            + (f"  skipped {stats.skipped} non-finite batch(es)" if stats.skipped else "")
        )
        if val.loss < state.best_loss:
            state.best_loss, state.best_epoch = val.loss, epoch
            state.best_state = cpu_copy(module.state_dict())
            # The kept model's numbers: this pass, the one history.csv shows.
            state.best_logits = torch.from_numpy(np.ascontiguousarray(val.logits, np.float32))
            state.best_features = (
                None if val.features is None
                else torch.from_numpy(np.ascontiguousarray(val.features, np.float32))
            )  # fmt: skip
        state.epoch, state.complete = epoch, epoch == t.epochs
        if checkpoint is not None:  # rank 0 writes, then every rank goes on
            dist.main_writes(
                lambda: save_checkpoint(checkpoint, module, optimizer, state, scheduler, info=facts)
            )
        if on_epoch is not None:
            on_epoch(row, cm, counts)
        if stop is not None:
            stop.check(fold, epoch, None)
    assert state.best_state is not None
    module.load_state_dict(state.best_state)
    top = None
    if t.freeze == "top":
        assert probe is not None  # refused before training otherwise
        top = tune_top(
            module, images, targets, train_idx, val_idx, mean, std, runtime, loss_fn,
            int(probe.features.shape[1]), bool(probe.augment.enabled and probe.augment.hflip),
            bool(t.flip_tta), _global_seed(t.seed, fold, 0), log,
        )  # fmt: skip
    if not (probe is not None and t.freeze == "backbone"):
        probe = None  # the backbone trained: its embeddings are no longer the cached ones
    val_targets = targets[torch.as_tensor(val_idx, device=targets.device)].cpu().numpy()
    if top is not None:  # the tuned network's validation outputs, from the cached inputs
        logits, features = top.outputs(val_idx, runtime)
        on = targets.device  # the loss (its class weights) lives where training ran
        loss = float(
            val_loss_fn(torch.from_numpy(logits).to(on), torch.from_numpy(val_targets).to(on))
        )
        val = EvalResult(logits, val_targets, loss, features)
    else:
        val = _kept_pass(
            state, module, val_batches, val_targets,
            None if probe is None else (probe, probe_batches[1]),
            mean, std, val_loss_fn, bool(t.flip_tta), runtime,
        )  # fmt: skip
    # Keep a detached copy: with --compile the same module object is reused by the next fold.
    kept = copy.deepcopy(module) if t.compile else module
    return TrainedModel(
        kept, mean, std, state.history, state.best_epoch, val, counts, train_idx, val_idx, probe,
        top,
    )  # fmt: skip


def share_folds(
    mine: list[TrainedModel], parts: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
    models: ModelSource,
    dist: DistContext, log: Log,
) -> list[TrainedModel]:  # fmt: skip
    """Every fold's result on every rank, after rank ``f % world_size`` trained fold ``f``.

    The owner sends its history and numbers (a small JSON-like object), validation logits and
    targets, and the weights tensor by tensor into a fresh model of the same architecture.
    """
    owned = iter(mine)
    shared: list[TrainedModel] = []
    for fold, (train_idx, val_idx) in enumerate(parts):
        owner = fold % dist.world_size
        trained = next(owned) if owner == dist.rank else None
        facts = None if trained is None else {
            "mean": trained.mean, "std": trained.std, "history": trained.history,
            "best_epoch": trained.best_epoch, "loss": trained.val.loss,
            "train_counts": trained.train_counts.tolist(),
        }  # fmt: skip
        facts = broadcast_object(facts, dist, owner)
        logits = broadcast_array(
            None if trained is None else trained.val.logits, (len(val_idx), num_classes),
            np.dtype(np.float32), dist, owner,
        )  # fmt: skip
        val_targets = broadcast_array(
            None if trained is None else trained.val.targets, (len(val_idx),),
            np.dtype(np.int64), dist, owner,
        )  # fmt: skip
        model = models._fresh(fold) if trained is None else trained.model
        broadcast_module(model, dist, owner)
        if trained is None:
            trained = TrainedModel(
                model, facts["mean"], facts["std"], facts["history"], facts["best_epoch"],
                EvalResult(logits, val_targets, facts["loss"]), np.array(facts["train_counts"]),
                train_idx, val_idx,
            )  # fmt: skip
            log(
                f"fold {fold} trained on rank {owner}: best epoch {trained.best_epoch}, "
                f"val loss {trained.val.loss:.4f}"
            )
        shared.append(trained)
    return shared
