"""Model bundles: weights as safetensors plus a JSON sidecar; loading never unpickles.

The sidecar carries everything ``predict`` needs: architecture, class names, image size and the
training-part normalisation, so a bundle can be used with no other file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import numpy as safetensors_numpy
from safetensors.torch import load_file, save_file
from torch import nn

from facecls.atomic import atomic_path, write_json
from facecls.bundle_meta import BUNDLE_FORMAT as BUNDLE_FORMAT
from facecls.bundle_meta import DIGEST_KEY, BundleError, check_digest, read_sidecar, weights_digest
from facecls.bundle_meta import MAX_CLASSES as MAX_CLASSES
from facecls.bundle_meta import MAX_IMAGE_SIZE as MAX_IMAGE_SIZE
from facecls.bundle_meta import BundleWarning as BundleWarning
from facecls.bundle_meta import validate_meta as validate_meta
from facecls.models import create_model

BUNDLE_VERSION = 1
WEIGHTS_NAME, META_NAME = "model.safetensors", "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
# torch.load(weights_only=True) could run code before torch 2.6 (CVE-2025-32434).
MIN_TORCH_FOR_PICKLE = (2, 6)


def facecls_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facecls")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Bundle:
    """A model with the metadata that travels with its weights."""

    model: nn.Module
    architecture: str
    class_names: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    flip_tta: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "facecls_version": facecls_version(),
            "architecture": self.architecture,
            "num_classes": len(self.class_names),
            "class_names": self.class_names,
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "flip_tta": self.flip_tta,
            **self.extra,
        }


def save_bundle(bundle: Bundle, folder: Path) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``folder`` atomically; returns folder."""
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.model.state_dict().items()}
    size = sum(v.numel() * v.element_size() for v in state.values())
    with atomic_path(folder / WEIGHTS_NAME, size) as tmp:
        save_file(state, str(tmp), metadata={"format": BUNDLE_FORMAT})
        digest = weights_digest(tmp)
    write_json(folder / META_NAME, {**bundle.meta(), DIGEST_KEY: digest})
    return folder


def _torch_version() -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _load_trusted_pickle(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of a file the user vouched for, on a safe torch only."""
    if _torch_version() < MIN_TORCH_FOR_PICKLE:
        raise BundleError(
            f"{path}: refusing to read a pickle with torch {torch.__version__}: before 2.6, "
            "torch.load(weights_only=True) could run code (CVE-2025-32434). Upgrade torch, or "
            "convert the weights to safetensors on a machine you trust."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, … from the restricted loader
        raise BundleError(
            f"{path}: torch.load(weights_only=True) refused this file: it holds more than "
            f"weights, so it was not loaded ({type(error).__name__})"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{path}: not a state dict of tensors")
    return state


def _resolve(path: Path) -> tuple[Path, Path]:
    """Weights and sidecar paths for a run folder, a bundle folder, or either file."""
    path = Path(path)
    if path.is_dir():
        for folder in (path / "model", path):
            if (folder / WEIGHTS_NAME).exists():
                return folder / WEIGHTS_NAME, folder / META_NAME
        raise BundleError(f"{path}: no {WEIGHTS_NAME} in this folder or its model/ folder")
    if path.suffix == ".json":
        return path.with_name(WEIGHTS_NAME), path
    if path.is_file() and path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
        raise BundleError(
            f"{path}: not a model; give a run folder, a bundle folder, its model.safetensors "
            "or its model.json"
        )
    return path, path.with_name(META_NAME)


def refuse_pickle(path: Path, trust_pickle: bool, remedy: str | None = None) -> tuple[Path, Path]:
    """Weights and sidecar paths of ``path``; a pickle-based weights file is refused unless
    ``trust_pickle``. ``remedy`` replaces the ``--trust-pickle`` advice for a command that has
    no such option.

    Raises:
        BundleError: for a ``.pt``/``.pth``/… file without ``trust_pickle``.
    """
    weights_path, meta_path = _resolve(Path(path))
    if weights_path.suffix.lower() in PICKLE_SUFFIXES and not trust_pickle:
        raise BundleError(
            f"{weights_path}: refusing to load a pickle-based file ({weights_path.suffix}); "
            "pickles can run code when loaded. facecls bundles are model.safetensors + "
            "model.json. "
            + (
                remedy
                or "If you trust this file, pass --trust-pickle (it is then read with "
                "torch.load(weights_only=True))."
            )
        )
    return weights_path, meta_path


def bundle_folder(path: Path) -> Path:
    """The folder holding a bundle's files, for a run folder, a bundle folder or either file.

    Raises:
        BundleError: when no bundle is found there.
    """
    weights_path, _ = _resolve(Path(path))
    if not weights_path.exists():
        raise BundleError(f"{weights_path}: model weights not found")
    return weights_path.parent


def load_bundle(
    path: Path, device: str | torch.device = "cpu", trust_pickle: bool = False
) -> Bundle:
    """Load a bundle from a run folder, a bundle folder, ``model.safetensors`` or ``model.json``.

    Pickle files (``.pt``/``.pth``/…) are refused unless ``trust_pickle`` is set, and even then
    read with ``torch.load(weights_only=True)``, which builds no arbitrary objects.

    Raises:
        BundleError: naming the file and the problem.
    """
    weights_path, meta_path = refuse_pickle(Path(path), trust_pickle)
    if not weights_path.exists():
        raise BundleError(f"{weights_path}: model weights not found")
    meta = read_sidecar(meta_path)
    if weights_path.suffix.lower() in PICKLE_SUFFIXES:
        state = _load_trusted_pickle(weights_path)
    else:
        try:
            state = load_file(str(weights_path))
        except Exception as error:  # safetensors raises its own error types
            raise BundleError(
                f"{weights_path}: not a readable safetensors file ({error})"
            ) from error
        check_digest(meta, weights_path, meta_path)
    try:
        model = create_model(
            meta["architecture"], num_classes=meta["num_classes"], image_size=meta["image_size"]
        )
    except (ValueError, RuntimeError) as error:  # unknown name, a size the model cannot take
        raise BundleError(
            f"{meta_path}: cannot build {meta['architecture']!r} ({error})"
        ) from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise BundleError(f"{weights_path}: weights do not match {meta['architecture']}") from error
    known = {"format", "format_version", "facecls_version", "architecture", "num_classes",
             "class_names", "image_size", "mean", "std", "flip_tta", DIGEST_KEY}  # fmt: skip
    return Bundle(
        model=model.to(device).eval(),
        architecture=meta["architecture"],
        class_names=list(meta["class_names"]),
        image_size=int(meta["image_size"]),
        mean=list(meta["mean"]),
        std=list(meta["std"]),
        flip_tta=bool(meta.get("flip_tta", False)),
        extra={k: v for k, v in meta.items() if k not in known},
    )


CENTROIDS_NAME = "centroids.safetensors"


def read_centroids(folder: Path) -> dict[str, np.ndarray]:
    """The bundle's ``centroids.safetensors`` tensors (``trained``, maybe ``enrolled``), or {}.

    Raises:
        BundleError: the file is unreadable, or holds NaN or infinite values (every score
            against such a centroid would be NaN: each face "unknown" with no score).
    """
    path = Path(folder) / CENTROIDS_NAME
    if not path.exists():
        return {}
    try:
        tensors = safetensors_numpy.load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise BundleError(f"{path}: not a readable safetensors file ({error})") from error
    for name, array in tensors.items():
        if not np.isfinite(array).all():
            raise BundleError(
                f"{path}: the {name!r} centroids hold NaN or infinite values; recompute them "
                "with facecls calibrate RUN (the run folder the model was trained in)"
            )
    return tensors


def write_centroids(folder: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``centroids.safetensors`` atomically (float32, contiguous)."""
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    size = sum(a.nbytes for a in arrays.values())
    with atomic_path(Path(folder) / CENTROIDS_NAME, size) as tmp:
        safetensors_numpy.save_file(arrays, str(tmp), metadata={"format": "facecls-centroids"})


def update_meta(folder: Path, **entries: Any) -> dict[str, Any]:
    """Merge ``entries`` into the bundle's ``model.json`` (a ``None`` value removes the key)."""
    path = Path(folder) / META_NAME
    meta = read_sidecar(path)
    for key, value in entries.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    write_json(path, meta)
    return meta
