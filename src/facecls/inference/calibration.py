"""Calibrate a model's open-set threshold and class centroids, and store them in its bundle.

Called at the end of ``train``/``cv`` with the final model's validation logits (``msp`` and
``energy`` only, no pass over the data), or later by ``facecls calibrate`` (every score and
the centroids, from a run folder's saved split, or by setting a threshold by hand). The bundle
gains an ``openset`` entry in ``model.json`` and a ``centroids.safetensors`` file holding the
trained identities' embedding centroids (plus enrolled ones, see ``enroll.py``).
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
    read_sidecar,
    update_meta,
    write_centroids,
)
from facecls.config_io import load_yaml, replace
from facecls.data.augment import normalize
from facecls.data.batches import IndexBatches
from facecls.data.dataset import load_dataset
from facecls.data.splits import folds_from_document
from facecls.inference.verify import DEFAULT_FAR, calibrate_verification
from facecls.models.cpu_pass import FrozenPass
from facecls.numbers import finite
from facecls.openset import DEFAULT_ACCEPTANCE, DEFAULT_METHOD, METHODS, scores
from facecls.openset_calibration import Calibration, calibrate
from facecls.openset_thresholds import enrolled_method, threshold_at_acceptance
from facecls.progress import bar as progress_bar
from facecls.runtime import Runtime, resolve_device

# The open-set scores computed from logits alone (no embedding, no class centroid).
LOGIT_METHODS = ("msp", "energy")


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
    show_progress: bool = False,
    architecture: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, C)`` and embeddings ``(N, D)`` (float32, CPU) of ``images[indices]``, run
    as ``predict`` runs the model (:meth:`Runtime.default` of its ``architecture``).

    Args:
        images: uint8 ``(M, 3, S, S)`` on the CPU, on ``device`` or pinned.
        show_progress: a bar (a line every 10 % off a terminal) over the images.
    """
    # predict's settings (channels-last, CPU batches of 16), on ONNX Runtime for a long CPU
    # pass: FaceNet's calibration pass went from 17.6 images/s (NCHW batches of 256) to 34
    # with these settings and to 53 on ONNX Runtime
    runtime = Runtime.default(device, architecture)
    index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    views = 2 if flip_tta else 1
    forward = FrozenPass(model, runtime, int(images.shape[-1]), len(index) * views)
    targets = torch.zeros(images.shape[0], dtype=torch.int64, device=images.device)
    batches = IndexBatches(images, targets, index, runtime.batch(batch_size), device)
    all_logits, all_features = [], []
    counter = progress_bar(len(index), "calibrate", show_progress)
    for batch, _ in batches.epoch():
        pixels = normalize(batch, mean, std)
        # averaged with the mirror image under flip TTA, as embedding.forward_tta does
        seen = [forward(v) for v in [pixels, pixels.flip(3)][:views]]
        logits = sum(s[0] for s in seen) / views
        features = sum(s[1] for s in seen) / views
        all_logits.append(logits.float().cpu())
        all_features.append(features.float().cpu())
        counter.update(len(batch))
    counter.close()
    if not all_logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(all_logits).numpy(), torch.cat(all_features).numpy()


def calibrate_with_verify(
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
    far: float = DEFAULT_FAR,
    show_progress: bool = False,
    architecture: str = "",
) -> tuple[Calibration, dict[str, Any] | None]:
    """Class centroids from ``train_idx``, open-set thresholds and the NCM scale from
    ``val_idx``, and the ``verify`` threshold at false-accept rate ``far`` on pairs of the same
    validation embeddings (``None`` when the part has no usable pair)."""
    seen = {"flip_tta": flip_tta, "show_progress": show_progress, "architecture": architecture}
    _, train_features = model_outputs(model, images, train_idx, mean, std, device, **seen)
    val_logits, val_features = model_outputs(model, images, val_idx, mean, std, device, **seen)
    calibration = calibrate(
        train_features, targets[train_idx], val_logits, val_features, targets[val_idx],
        num_classes, method, acceptance,
    )  # fmt: skip
    return calibration, calibrate_verification(val_features, targets[val_idx], far)


def calibrate_trained(
    folder: Path,
    trained: Any,
    log: Callable[[str], None] = print,
    train_part: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Calibrate a just-trained model (``training.fold.TrainedModel``) from what evaluation
    already computed, and store it in its bundle ``folder``; called at the end of ``train``/``cv``.

    The ``msp`` and ``energy`` thresholds need only the validation logits, which training kept
    (``trained.val``: the kept epoch's weights, mirror-averaged exactly when the bundle's
    ``flip_tta`` is on, as ``predict`` computes them), so they cost no pass over the data. The
    ``centroid`` and ``margin`` scores need embeddings of the whole training part, a second pass
    that was a tenth to a third of a run's time; it is left to ``facecls calibrate RUN`` (which
    redoes every score on the same parts) and said so in the log, unless ``train_part`` (the
    training part's embeddings and targets, computed as ``predict`` would) is given: a linear
    probe has them cached, so it is calibrated completely, as ``facecls calibrate`` would.
    """
    val = getattr(trained, "val", None)
    if trained.val_idx is None or val is None or len(val.targets) == 0:
        log("Open set: not calibrated (no validation part); use facecls calibrate --threshold")
        return
    features = getattr(val, "features", None)
    if train_part is not None and features is not None:
        calibration = calibrate(
            train_part[0], train_part[1], val.logits, features, val.targets, val.logits.shape[1]
        )
        verification = calibrate_verification(features, val.targets)
        write_calibration(folder, calibration, verification)
        log(describe(calibration.meta()) + " (from the cached embeddings)")
        if verification is not None:
            log(describe_verify(verification))
        return
    correct = val.preds == val.targets
    # As openset_calibration.calibrate: on the correctly named images, all when fewer than 10.
    subset = correct if correct.sum() >= 10 else np.ones_like(correct)
    thresholds = {
        m: threshold_at_acceptance(scores(m, val.logits)[subset], DEFAULT_ACCEPTANCE)
        for m in LOGIT_METHODS
    }
    openset = {
        "method": DEFAULT_METHOD,
        "threshold": thresholds[DEFAULT_METHOD],
        "thresholds": thresholds,
        "acceptance": DEFAULT_ACCEPTANCE,
        "calibration": {
            "validation_images": int(len(val.targets)),
            "validation_correct": int(correct.sum()),
            "calibrated_on": "correct" if subset is correct else "all",
            "validation_accuracy": float(correct.mean()),
            "from": "the validation logits of training's last evaluation",
        },
        "deferred": "centroid, margin: run facecls calibrate on the run folder",
    }
    # The verify threshold, from the validation embeddings of the same last evaluation.
    verification = None if features is None else calibrate_verification(features, val.targets)
    update_meta(folder, openset=openset, **({"verify": verification} if verification else {}))
    log(
        describe(openset)
        + ". The centroid and margin scores and class centroids (for enroll) take a pass "
        "over the training part: facecls calibrate RUN_FOLDER computes them when wanted"
    )
    if verification is not None:
        log(describe_verify(verification))


def write_calibration(
    folder: Path, calibration: Calibration, verification: dict[str, Any] | None = None
) -> None:
    """Store a calibration in a bundle folder (centroids first, then the JSON that names them);
    ``verification`` (see :func:`~facecls.inference.verify.calibrate_verification`), when given,
    becomes the ``verify`` entry of ``model.json``."""
    tensors = read_centroids(folder)
    tensors["trained"] = calibration.centroids
    write_centroids(folder, tensors)
    entries: dict[str, Any] = {"openset": calibration.meta()}
    if verification is not None:
        entries["verify"] = verification
    update_meta(folder, **entries)


def describe_verify(verification: dict[str, Any]) -> str:
    """One line on the verification threshold for logs."""
    stats = verification["calibration"]
    return (
        f"Verify: threshold {verification['threshold']:.4f} (cosine) at FAR "
        f"{verification['far']:.1%} on {stats['impostor_pairs']} validation pairs of different "
        f"people; accepts {stats['true_accept_rate']:.1%} of {stats['genuine_pairs']} same-person "
        "pairs"
    )


def set_threshold(
    model_path: Path, threshold: float | None = None, method: str | None = None
) -> dict[str, Any]:
    """Change the stored open-set method and/or threshold of a calibrated bundle in place.

    Choosing a method without a threshold uses that method's calibrated threshold.

    Returns:
        The new ``openset`` entry.
    """
    folder = bundle_folder(model_path)
    meta = read_sidecar(folder / META_NAME)
    openset = dict(meta.get("openset") or {})
    if method is not None:
        if method not in METHODS:
            raise ValueError(f"unknown open-set method {method!r}; choose one of {METHODS}")
        if method in ("centroid", "margin") and not read_centroids(folder):
            raise BundleError(f"{folder}: no {CENTROIDS_NAME}; calibrate from data first")
        openset["method"] = method
        if threshold is None:
            if method not in openset.get("thresholds", {}):
                raise BundleError(f"{folder}: no calibrated {method} threshold; give --threshold")
            openset["threshold"] = openset["thresholds"][method]
    if threshold is not None:
        threshold = finite(threshold, "--threshold")
        if method is None:  # the threshold is for the score the model decides by
            enrolled = bool((meta.get("enrolled") or {}).get("names"))
            openset["method"] = (
                enrolled_method(openset) if enrolled else openset.get("method", DEFAULT_METHOD)
            )
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
    into: Path | None = None,
) -> dict[str, Any]:
    """Calibrate a run's model from its saved split: centroids from the final model's training
    part, thresholds from its validation part. Rewrites only the run's model bundle, or with
    ``into`` only that copy of it (the service calibrates its own copy, never the run).

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
    calibration, verification = calibrate_with_verify(
        bundle.model, dataset.images, dataset.targets.numpy(), train_idx, val_idx, bundle.mean,
        bundle.std, device, len(bundle.class_names), bundle.flip_tta, method, acceptance,
        show_progress=show_progress, architecture=bundle.architecture,
    )  # fmt: skip
    write_calibration(into or bundle_folder(run_dir), calibration, verification)
    log(describe(calibration.meta()))
    if verification is not None:
        log(describe_verify(verification))
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
    finite(acceptance, "--acceptance", low=0.0, high=1.0)
    is_run = (path / "config.yaml").is_file() and (path / "folds.json").is_file()
    if threshold is not None or (method is not None and not is_run and data is None):
        return set_threshold(path, threshold, method)
    if not is_run:
        raise FileNotFoundError(
            f"{path}: not a run folder (no config.yaml and folds.json); calibrating from data "
            "needs the run the model came from. Give --threshold to set one by hand."
        )
    return calibrate_run(path, method or DEFAULT_METHOD, acceptance, data, log, show_progress)


def ensure_centroids(folder: Path, log: Callable[[str], None] = print) -> bool:
    """Compute a run's trained-identity centroids once if its bundle lacks them.

    ``train``/``cv`` leave the centroids (a pass over the training part) to the first use that
    needs them: enrolling people, or the service's ``/enroll``. Returns whether the bundle has
    them now (a bundle outside a run folder cannot be calibrated from data).
    """
    if "trained" in read_centroids(folder):
        return True
    run_dir = Path(folder).parent
    if not (run_dir / "folds.json").is_file():
        return False
    log(f"{run_dir}: computing the trained identities' centroids once (facecls calibrate)")
    calibrate_run(run_dir, log=log)
    return "trained" in read_centroids(folder)
