"""Calibrate a model's open-set threshold and class centroids, and store them in its bundle.

Called at the end of ``train``/``cv`` with the final model's validation outputs and one pass over
the validation part's calibration views (``calibration_views.py``: the faces as real photos show
them), or later by ``facecls calibrate`` (every score and the centroids, from a run folder's
saved split, or by setting a threshold by hand). Thresholds are set at a target share of
pseudo-strangers named (FPIR, 1 % by default; ``openset_fpir.py``). The bundle
gains an ``openset`` entry in ``model.json`` and a ``centroids.safetensors`` file holding the
trained identities' embedding centroids (plus enrolled ones, see ``enroll.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facecls.bundle import (
    META_NAME,
    bundle_folder,
    load_bundle,
    read_centroids,
    read_sidecar,
    update_meta,
)
from facecls.config_io import load_yaml, replace
from facecls.data.augment import normalize
from facecls.data.batches import IndexBatches
from facecls.data.dataset import FaceDataset, load_dataset, the_models_identities
from facecls.data.face_choice import kept_faces_of
from facecls.data.faces import FaceCutter
from facecls.data.splits import folds_from_document
from facecls.inference.calibration_store import (
    describe,
    describe_verify,
    log_look_alikes,
    set_threshold,
    write_calibration,
)
from facecls.inference.calibration_views import face_sizes, scored_views
from facecls.inference.verify_threshold import DEFAULT_FAR, calibrate_verification
from facecls.models.cpu_pass import FrozenPass
from facecls.numbers import finite
from facecls.openset import (
    DEFAULT_ACCEPTANCE,
    DEFAULT_METHOD,
    FUSED_WEIGHT,
    default_method,
    fused_weight_for,
)
from facecls.openset_calibration import (
    Calibration,
    RealStrangers,
    ScoredViews,
    calibrate,
    require_fpir,
)
from facecls.openset_fpir import DEFAULT_FPIR, check_fpir
from facecls.progress import bar as progress_bar
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
    fpir: float | None = DEFAULT_FPIR,
    views: ScoredViews | None = None,
    val_face_px: np.ndarray | None = None,
    fused_weight: float = FUSED_WEIGHT,
    strangers: RealStrangers | None = None,
) -> tuple[Calibration, dict[str, Any]]:
    """Class centroids from ``train_idx``, open-set thresholds and the NCM scale from
    ``val_idx`` and its calibration ``views``, and the ``verify`` threshold at false-accept
    rate ``far`` (:func:`~facecls.inference.verify_threshold.calibrate_verification`)."""
    seen = {"flip_tta": flip_tta, "show_progress": show_progress, "architecture": architecture}
    _, train_features = model_outputs(model, images, train_idx, mean, std, device, **seen)
    val_logits, val_features = model_outputs(model, images, val_idx, mean, std, device, **seen)
    calibration = calibrate(
        train_features, targets[train_idx], val_logits, val_features, targets[val_idx],
        num_classes, method, acceptance, fpir, views, val_face_px, fused_weight, strangers,
    )  # fmt: skip
    vectors, labels = _with_views(val_features, targets[val_idx], views)
    return calibration, calibrate_verification(
        vectors, labels, far, train_features, targets[train_idx]
    )


def _with_views(
    features: np.ndarray, targets: np.ndarray, views: ScoredViews | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validation embeddings and targets followed by the views' (verify pairs use both)."""
    if views is None or views.features is None or len(views.targets) == 0:
        return features, targets
    return np.concatenate([features, views.features]), np.concatenate([targets, views.targets])


def view_outputs(
    model: nn.Module, mean: list[float], std: list[float], device: torch.device,
    flip_tta: bool, architecture: str,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The model's logits and embeddings of uint8 faces, as ``predict`` computes them."""

    def outputs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor = torch.from_numpy(np.ascontiguousarray(faces))
        rows = np.arange(len(faces))
        return model_outputs(model, tensor, rows, mean, std, device, flip_tta,
                             architecture=architecture)  # fmt: skip

    return outputs


def run_views(
    dataset: FaceDataset, val_idx: np.ndarray, faces: str, crop: float, model: nn.Module,
    mean: list[float], std: list[float], device: torch.device, flip_tta: bool,
    architecture: str, log: Callable[[str], None],
) -> ScoredViews:  # fmt: skip
    """The calibration views of a run's validation part, scored by its model."""
    cutter = FaceCutter(faces, dataset.images.shape[-1], crop, str(device))
    outputs = view_outputs(model, mean, std, device, flip_tta, architecture)
    return scored_views(dataset, val_idx, cutter, outputs, log)


def calibrate_trained(
    folder: Path,
    trained: Any,
    log: Callable[[str], None] = print,
    train_part: tuple[np.ndarray, np.ndarray] | None = None,
    dataset: FaceDataset | None = None,
    architecture: str = "",
    fpir: float | None = DEFAULT_FPIR,
    fused_weight: float = FUSED_WEIGHT,
) -> None:
    """Calibrate a just-trained model (``training.fold.TrainedModel``) from what evaluation
    already computed, and store it in its bundle ``folder``; called at the end of ``train``/``cv``.

    The validation logits and embeddings come from training's last evaluation (``trained.val``:
    the kept epoch's weights, mirror-averaged exactly when the bundle's ``flip_tta`` is on, as
    ``predict`` computes them). The calibration views of the validation part (``dataset``'s
    photos re-read and rendered as real photos show them) take one forward pass each. The
    ``centroid`` and ``margin`` scores need embeddings of the whole training part, a second pass
    that was a tenth to a third of a run's time; it is left to ``facecls calibrate RUN`` unless
    ``train_part`` (the training part's embeddings and targets, computed as ``predict`` would)
    is given: a linear probe has them cached, so it is calibrated completely.
    """
    val = getattr(trained, "val", None)
    if trained.val_idx is None or val is None or len(val.targets) == 0:
        log("Open set: not calibrated (no validation part); use facecls calibrate --threshold")
        return
    features = getattr(val, "features", None)
    views, face_px = None, None
    if dataset is not None:
        meta = read_sidecar(folder / META_NAME)
        views = run_views(
            dataset, trained.val_idx, str(meta.get("faces", "centre")),
            float(meta.get("crop", 1.0)), trained.model, trained.mean, trained.std,
            next(trained.model.parameters()).device, bool(meta.get("flip_tta")), architecture,
            log,
        )  # fmt: skip
        face_px = face_sizes(dataset, trained.val_idx)
    complete = train_part is not None and features is not None
    method = default_method(architecture, complete)
    calibration = calibrate(
        train_part[0] if complete else None, train_part[1] if complete else None, val.logits,
        features, val.targets, val.logits.shape[1], method, DEFAULT_ACCEPTANCE, fpir, views,
        face_px, fused_weight,
    )  # fmt: skip
    verification = None
    if features is not None:
        vectors, labels = _with_views(features, val.targets, views)
        verification = calibrate_verification(
            vectors, labels, DEFAULT_FAR, *(train_part if complete else (None, None))
        )
    if complete:
        write_calibration(folder, calibration, verification)
        log(describe(calibration.meta()) + " (from the cached embeddings)")
        log_look_alikes(calibration.meta(), folder, log)
    else:
        openset = calibration.meta()
        openset["deferred"] = "centroid, margin: run facecls calibrate on the run folder"
        update_meta(folder, openset=openset, **({"verify": verification} if verification else {}))
        log(
            describe(openset)
            + ". The centroid and margin scores and class centroids (for enroll) take a pass "
            "over the training part: facecls calibrate RUN_FOLDER computes them when wanted"
        )
    if verification is not None:
        log(describe_verify(verification))


def calibrate_run(
    run_dir: Path,
    method: str | None = None,
    acceptance: float = DEFAULT_ACCEPTANCE,
    data: str | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
    fpir: float | None = DEFAULT_FPIR,
    into: Path | None = None,
    strangers: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """Calibrate a run's model from its saved split: centroids from the final model's training
    part, thresholds from its validation part and that part's calibration views. Rewrites only
    the run's model bundle, or with ``into`` only that copy of it (the service calibrates its
    own copy, never the run).

    Args:
        method: the score ``predict`` decides by (default: :func:`default_method`).
        fpir: the target share of strangers named; ``None``: the acceptance rule.
        strangers: photos (files, folders) of people the model does not know: thresholds name
            ``fpir`` of them (each folder one person) instead of ``fpir`` of pseudo-strangers.

    Returns:
        The new ``openset`` entry.
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", "folds.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"{run_dir}: no {name}; calibrate needs a run folder (or use --threshold)"
            )
    if fpir is not None:
        check_fpir(fpir)
    config = load_yaml(run_dir / "config.yaml")
    real = None
    if strangers:
        from facecls.inference.strangers import real_strangers  # it loads the model: no cycle

        real = real_strangers(run_dir, strangers, fpir, log, config.train.device, show_progress)
    if data is not None:
        config = replace(config, data={"source": data})
    device = resolve_device(config.train.device)
    bundle = load_bundle(run_dir, device)
    kept = kept_faces_of(run_dir) if data is None else None
    dataset = load_dataset(config.data, log, show_progress, kept_faces=kept)
    dataset = the_models_identities(dataset, bundle.class_names, run_dir)
    split, folds = folds_from_document(dataset, json.loads((run_dir / "folds.json").read_text()))
    fold = json.loads((run_dir / "metrics.json").read_text()).get("final_model", {}).get("fold", 0)
    val_idx = folds[int(fold)]
    train_idx = np.setdiff1d(split.pool, val_idx)
    meta = read_sidecar(bundle_folder(run_dir) / META_NAME)
    views = run_views(
        dataset, val_idx, str(meta.get("faces", "centre")), float(meta.get("crop", 1.0)),
        bundle.model, bundle.mean, bundle.std, device, bundle.flip_tta, bundle.architecture, log,
    )  # fmt: skip
    calibration, verification = calibrate_with_verify(
        bundle.model, dataset.images, dataset.targets.numpy(), train_idx, val_idx, bundle.mean,
        bundle.std, device, len(bundle.class_names), bundle.flip_tta,
        method or default_method(bundle.architecture), acceptance, show_progress=show_progress,
        architecture=bundle.architecture, fpir=fpir, views=views,
        val_face_px=face_sizes(dataset, val_idx),
        fused_weight=fused_weight_for(config.train.freeze), strangers=real,
    )  # fmt: skip
    write_calibration(into or bundle_folder(run_dir), calibration, verification)
    log(describe(calibration.meta()))
    log_look_alikes(calibration.meta(), into or bundle_folder(run_dir), log)
    log(describe_verify(verification))
    return calibration.meta()


def calibrate_command(
    model_path: str | Path,
    method: str | None = None,
    acceptance: float | None = None,
    threshold: float | None = None,
    data: str | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
    fpir: float | None = None,
    strangers: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """``facecls calibrate``: set a threshold by hand, or recalibrate a run folder from its data.

    With ``threshold`` (or only ``method`` on a bundle that is not a run folder) the stored
    ``openset`` entry is edited; otherwise the run's model is calibrated on its own split, at
    ``fpir`` (default 1 %) of pseudo-strangers named (of ``strangers``' photos when given), or
    by ``acceptance`` when that is given.

    Returns:
        The bundle's new ``openset`` entry.
    """
    if fpir is not None:
        check_fpir(fpir)
        if acceptance is not None:
            raise ValueError("give --fpir or --acceptance, not both: they are two rules")
    if acceptance is not None:
        finite(acceptance, "--acceptance")
        if not 0.0 < acceptance <= 1.0:
            raise ValueError(f"--acceptance must be in (0, 1], not {acceptance}")
    if threshold is not None:  # by hand: the options that choose one from data play no part
        unused = [f"--{n}" for n, v in (("fpir", fpir), ("acceptance", acceptance),
                                        ("data", data), ("strangers", strangers or None))
                  if v is not None]  # fmt: skip
        if unused:
            raise ValueError(
                f"--threshold {threshold} sets the threshold by hand: {unused[0]} chooses one "
                "from data; give one or the other"
            )
    path = Path(model_path)
    is_run = (path / "config.yaml").is_file() and (path / "folds.json").is_file()
    if strangers:
        require_fpir(None if acceptance is not None else DEFAULT_FPIR)
    by_hand = method is not None and not is_run and data is None and not strangers
    if threshold is not None or by_hand:
        return set_threshold(path, threshold, method)
    if not is_run:
        raise FileNotFoundError(
            f"{path}: not a run folder (no config.yaml and folds.json); calibrating from data "
            "needs the run the model came from. Give --threshold to set one by hand."
        )
    rule_fpir = None if acceptance is not None else (fpir or DEFAULT_FPIR)
    return calibrate_run(
        path, method, acceptance or DEFAULT_ACCEPTANCE, data, log, show_progress, rule_fpir,
        strangers=strangers,
    )  # fmt: skip


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
