"""Calibrate a model's open-set threshold and class centroids, and store them in its bundle.

Called at the end of ``train``/``cv`` on the final model's own training and validation parts, or
later by ``facecls calibrate`` (from a run folder's saved split, or by setting a threshold by
hand). The bundle gains an ``openset`` entry in ``model.json`` and a ``centroids.safetensors``
file holding the trained identities' embedding centroids (plus enrolled ones, see ``enroll.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facecls.bundle import (
    CENTROIDS_NAME,
    META_NAME,
    BundleError,
    bundle_folder,
    load_bundle,
    read_centroids,
    update_meta,
    write_centroids,
)
from facecls.config import load_yaml, replace
from facecls.data.augment import normalize
from facecls.data.batches import IndexBatches
from facecls.data.dataset import load_dataset
from facecls.data.splits import folds_from_document
from facecls.models.embedding import forward_tta
from facecls.openset import DEFAULT_ACCEPTANCE, DEFAULT_METHOD, METHODS, Calibration, calibrate
from facecls.runtime import Runtime, resolve_device


@torch.no_grad()
def model_outputs(
    model: nn.Module,
    images: torch.Tensor,
    indices: np.ndarray,
    mean: list[float],
    std: list[float],
    device: torch.device,
    flip_tta: bool = False,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, C)`` and embeddings ``(N, D)`` (float32, CPU) of ``images[indices]``.

    Args:
        images: uint8 ``(M, 3, S, S)`` on the CPU, on ``device`` or pinned.
    """
    model.eval()
    index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    targets = torch.zeros(images.shape[0], dtype=torch.int64, device=images.device)
    batches = IndexBatches(images, targets, index, batch_size, device)
    all_logits, all_features = [], []
    for batch, _ in batches.epoch():
        with Runtime.default(device).autocast():
            logits, features = forward_tta(model, normalize(batch, mean, std), flip_tta)
        all_logits.append(logits.float().cpu())
        all_features.append(features.float().cpu())
    if not all_logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(all_logits).numpy(), torch.cat(all_features).numpy()


def calibrate_model(
    model: nn.Module,
    images: torch.Tensor,
    targets: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    mean: list[float],
    std: list[float],
    device: torch.device,
    num_classes: int,
    flip_tta: bool = False,
    method: str = DEFAULT_METHOD,
    acceptance: float = DEFAULT_ACCEPTANCE,
) -> Calibration:
    """Class centroids from ``train_idx``, thresholds and the NCM scale from ``val_idx``."""
    _, train_features = model_outputs(model, images, train_idx, mean, std, device, flip_tta)
    val_logits, val_features = model_outputs(model, images, val_idx, mean, std, device, flip_tta)
    return calibrate(
        train_features, targets[train_idx], val_logits, val_features, targets[val_idx],
        num_classes, method, acceptance,
    )  # fmt: skip


def calibrate_trained(
    folder: Path,
    trained: Any,
    dataset: Any,
    log: Callable[[str], None] = print,
    flip_tta: bool = False,
    images: torch.Tensor | None = None,
) -> None:
    """Calibrate a just-trained model (``training.fold.TrainedModel``) on its own train/val parts
    and store the result in its bundle ``folder``; called at the end of ``train`` and ``cv``.

    ``flip_tta`` must be the bundle's: thresholds are set on the outputs ``predict`` computes.
    ``images``: the dataset's images where training keeps them (on the device when they fit);
    default ``dataset.images``.
    """
    if trained.train_idx is None or trained.val_idx is None or len(trained.val_idx) == 0:
        log("Open set: not calibrated (no validation part); use facecls calibrate --threshold")
        return
    device = next(trained.model.parameters()).device
    probe = getattr(trained, "head_only", None)
    if probe is not None:  # a linear probe: its cached embeddings, not the backbone again
        targets, runtime = dataset.targets.numpy(), Runtime.default(device)
        _, train_features = probe.outputs(trained.train_idx, runtime)
        val_logits, val_features = probe.outputs(trained.val_idx, runtime)
        calibration = calibrate(
            train_features, targets[trained.train_idx], val_logits, val_features,
            targets[trained.val_idx], dataset.num_classes, DEFAULT_METHOD, DEFAULT_ACCEPTANCE,
        )  # fmt: skip
    else:
        calibration = calibrate_model(
            trained.model, dataset.images if images is None else images,
            dataset.targets.numpy(), trained.train_idx, trained.val_idx, trained.mean,
            trained.std, device, dataset.num_classes, flip_tta,
        )  # fmt: skip
    write_calibration(folder, calibration)
    log(describe(calibration.meta()))


def write_calibration(folder: Path, calibration: Calibration) -> None:
    """Store a calibration in a bundle folder (centroids first, then the JSON that names them)."""
    tensors = read_centroids(folder)
    tensors["trained"] = calibration.centroids
    write_centroids(folder, tensors)
    update_meta(folder, openset=calibration.meta())


def set_threshold(
    model_path: Path, threshold: float | None = None, method: str | None = None
) -> dict[str, Any]:
    """Change the stored open-set method and/or threshold of a calibrated bundle in place.

    Choosing a method without a threshold uses that method's calibrated threshold.

    Returns:
        The new ``openset`` entry.
    """
    folder = bundle_folder(model_path)
    meta = json.loads((folder / META_NAME).read_text())
    openset = dict(meta.get("openset") or {})
    if method is not None:
        if method not in METHODS:
            raise ValueError(f"unknown open-set method {method!r}; choose one of {METHODS}")
        if method == "centroid" and not read_centroids(folder):
            raise BundleError(f"{folder}: no {CENTROIDS_NAME}; calibrate from data first")
        openset["method"] = method
        if threshold is None:
            if method not in openset.get("thresholds", {}):
                raise BundleError(f"{folder}: no calibrated {method} threshold; give --threshold")
            openset["threshold"] = openset["thresholds"][method]
    if threshold is not None:
        openset.setdefault("method", method or "msp")
        openset["threshold"] = float(threshold)
        openset["set_by_hand"] = True
    update_meta(folder, openset=openset)
    return openset


def calibrate_run(
    run_dir: Path,
    method: str = DEFAULT_METHOD,
    acceptance: float = DEFAULT_ACCEPTANCE,
    data: str | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Calibrate a run's model from its saved split: centroids from the final model's training
    part, thresholds from its validation part. Rewrites only the run's model bundle.

    Returns:
        The new ``openset`` entry.
    """

    run_dir = Path(run_dir)
    for name in ("config.yaml", "folds.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"{run_dir}: no {name}; calibrate needs a run folder (or use --threshold)"
            )
    config = load_yaml(run_dir / "config.yaml")
    if data is not None:
        config = replace(config, data={"source": data})
    device = resolve_device(config.train.device)
    bundle = load_bundle(run_dir, device)
    dataset = load_dataset(config.data, log, show_progress)
    if dataset.class_names != bundle.class_names:
        raise ValueError(f"{run_dir}: the data's identities differ from the model's")
    split, folds = folds_from_document(dataset, json.loads((run_dir / "folds.json").read_text()))
    fold = json.loads((run_dir / "metrics.json").read_text()).get("final_model", {}).get("fold", 0)
    val_idx = folds[int(fold)]
    train_idx = np.setdiff1d(split.pool, val_idx)
    calibration = calibrate_model(
        bundle.model, dataset.images, dataset.targets.numpy(), train_idx, val_idx, bundle.mean,
        bundle.std, device, len(bundle.class_names), bundle.flip_tta, method, acceptance,
    )  # fmt: skip
    write_calibration(bundle_folder(run_dir), calibration)
    log(describe(calibration.meta()))
    return calibration.meta()


def describe(openset: dict[str, Any]) -> str:
    """One line on a calibration for logs."""
    stats = openset.get("calibration", {})
    return (
        f"Open set: method {openset['method']}, threshold {openset['threshold']:.4f} (accepts "
        f"{openset.get('acceptance', 0):.0%} of the {stats.get('validation_correct', '?')} "
        f"correctly named validation images); thresholds "
        + ", ".join(f"{m} {t:.4f}" for m, t in openset.get("thresholds", {}).items())
    )


def calibrate_command(
    model_path: str | Path,
    method: str | None = None,
    acceptance: float = DEFAULT_ACCEPTANCE,
    threshold: float | None = None,
    data: str | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
) -> dict[str, Any]:
    """``facecls calibrate``: set a threshold by hand, or recalibrate a run folder from its data.

    With ``threshold`` (or only ``method`` on a bundle that is not a run folder) the stored
    ``openset`` entry is edited; otherwise the run's model is calibrated on its own split.

    Returns:
        The bundle's new ``openset`` entry.
    """
    path = Path(model_path)
    is_run = (path / "config.yaml").is_file() and (path / "folds.json").is_file()
    if threshold is not None or (method is not None and not is_run and data is None):
        return set_threshold(path, threshold, method)
    if not is_run:
        raise FileNotFoundError(
            f"{path}: not a run folder (no config.yaml and folds.json); calibrating from data "
            "needs the run the model came from. Give --threshold to set one by hand."
        )
    return calibrate_run(path, method or DEFAULT_METHOD, acceptance, data, log, show_progress)
