"""Training checkpoints: all a fold needs to continue exactly, in one safetensors file.

``checkpoints/fold<k>-last.safetensors`` is rewritten at the end of every epoch. Its tensors are
the model, the best model so far, the optimiser state (``optim.<param>.<key>``) and the RNG
states; its header metadata holds one JSON document with everything else (epoch, history, best
epoch and loss, optimiser hyper-parameters, scheduler state, whether the fold is complete). One
file means one atomic rename, so a crash at any moment leaves the previous epoch's checkpoint or
the new one, never a mix of two. Loading reads safetensors and JSON only: nothing is unpickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from facecls.atomic import atomic_path

CHECKPOINT_FORMAT = "facecls-checkpoint"
CHECKPOINT_VERSION = 1
_META_KEY = "facecls"

State = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint cannot be used to resume; the message names the file and why."""


@dataclass
class TrainingState:
    """Where one fold's training stands after ``epoch`` completed epochs.

    Attributes:
        best_state: CPU copy of the model at ``best_epoch`` (lowest validation loss).
        best_logits: that epoch's validation logits ``(N_val, C)``, float32 on the CPU: the
            kept model's numbers are that pass's (``best_loss`` its loss), also after a resume.
        best_features: that pass's embeddings ``(N_val, D)`` (calibration's), when it kept them.
        complete: every epoch of the fold is done.
    """

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_loss: float = math.inf
    best_state: State | None = None
    complete: bool = False
    best_logits: torch.Tensor | None = None
    best_features: torch.Tensor | None = None


def checkpoint_path(run_dir: Path, fold: int) -> Path:
    """``run_dir/checkpoints/fold<k>-last.safetensors``."""
    return Path(run_dir) / "checkpoints" / f"fold{fold}-last.safetensors"


def cpu_copy(state: State) -> State:
    """Detached, contiguous CPU copies (never views of live parameters)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Any], State]:
    """Split ``optimizer.state_dict()`` into JSON (hyper-parameters, scalars) and tensors."""
    tensors: State = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars}, tensors


def _unflatten_optimizer(doc: dict[str, Any], tensors: State) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in doc["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": doc["param_groups"]}


def _restore_tuples(saved: list[dict[str, Any]], current: list[dict[str, Any]]) -> None:
    """JSON turns tuples (Adam's ``betas``) into lists; give them back their type."""
    for saved_group, group in zip(saved, current, strict=False):
        for key, value in group.items():
            if isinstance(value, tuple) and isinstance(saved_group.get(key), list):
                saved_group[key] = tuple(saved_group[key])


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    scheduler: Any | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Write the checkpoint of ``state`` atomically (temporary file, fsync, rename).

    Args:
        info: extra JSON facts checked when resuming (fold, class names).

    Raises:
        facecls.atomic.WriteError: the disk is full; the previous checkpoint is unchanged.
    """
    tensors = {f"model.{k}": v for k, v in cpu_copy(model.state_dict()).items()}
    if state.best_state is not None:
        # best_state is already a detached CPU copy (cpu_copy when kept, or read from a file)
        tensors.update({f"best.{k}": v for k, v in state.best_state.items()})
    if state.best_logits is not None:
        tensors["kept.logits"] = state.best_logits
    if state.best_features is not None:
        tensors["kept.features"] = state.best_features
    optim_doc, optim_tensors = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    doc = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": state.epoch,
        "complete": state.complete,
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_loss": state.best_loss if math.isfinite(state.best_loss) else None,
        "optimizer": optim_doc,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        **(info or {}),
    }
    metadata = {_META_KEY: json.dumps(doc, allow_nan=False)}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_path(path, size) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_checkpoint(path: Path) -> tuple[dict[str, Any], State]:
    """The JSON document and the tensors of a checkpoint file.

    Raises:
        CheckpointError: the file is not a readable facecls checkpoint.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        doc = json.loads(metadata[_META_KEY])
    except Exception as error:  # safetensors and json raise their own types
        raise CheckpointError(f"{path}: not a readable facecls checkpoint ({error})") from error
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a facecls checkpoint")
    return doc, tensors


def _part(tensors: State, prefix: str) -> State:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    expect: dict[str, Any] | None = None,
) -> TrainingState:
    """Restore model, optimiser, scheduler and RNG states from ``path``; return the rest.

    Args:
        expect: JSON facts that must match the checkpoint's (the data and fold it belongs to).

    Raises:
        CheckpointError: unreadable, or made for other data, another fold or another model.
    """
    doc, tensors = read_checkpoint(path)
    for key, value in (expect or {}).items():
        if doc.get(key) != value:
            raise CheckpointError(
                f"{path}: made for a different {key} than this run now has; the data or "
                "settings changed since it was written. Start a new run instead of resuming."
            )
    try:
        model.load_state_dict(_part(tensors, "model."), strict=True)
        optim = _unflatten_optimizer(doc["optimizer"], _part(tensors, "optim."))
        _restore_tuples(optim["param_groups"], optimizer.state_dict()["param_groups"])
        optimizer.load_state_dict(optim)
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: does not fit this model ({error})") from error
    if scheduler is not None and doc.get("scheduler") is not None:
        scheduler.load_state_dict(doc["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_keys = [f"rng.cuda.{i}" for i in range(torch.cuda.device_count())]
    if cuda_keys and all(k in tensors for k in cuda_keys):
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda_keys])
    best = _part(tensors, "best.")
    return TrainingState(
        epoch=int(doc["epoch"]),
        history=list(doc["history"]),
        best_epoch=int(doc["best_epoch"]),
        best_loss=math.inf if doc["best_loss"] is None else float(doc["best_loss"]),
        best_state=best or None,
        complete=bool(doc["complete"]),
        best_logits=tensors.get("kept.logits"),
        best_features=tensors.get("kept.features"),
    )
