"""Model bundles: weights as safetensors plus a JSON sidecar; loading never unpickles.

The sidecar carries everything ``predict`` needs: architecture, class names, image size and the
training-part normalisation, so a bundle can be used with no other file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import numpy as safetensors_numpy
from safetensors.torch import load_file, save_file
from torch import nn

from facecls.atomic import atomic_path, write_json
from facecls.models import create_model, model_info
from facecls.openset import METHODS

BUNDLE_FORMAT = "facecls-model"
BUNDLE_VERSION = 1
WEIGHTS_NAME, META_NAME = "model.safetensors", "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
# torch.load(weights_only=True) could run code before torch 2.6 (CVE-2025-32434).
MIN_TORCH_FOR_PICKLE = (2, 6)
# Refused before anything is allocated: a hostile model.json must not ask for 10**9 classes.
MAX_IMAGE_SIZE, MAX_CLASSES = 4096, 1_000_000
DIGEST_KEY = "weights_sha256"


class BundleError(ValueError):
    """A model file cannot be loaded; the message names it and why."""


class BundleWarning(UserWarning):
    """A bundle loads but lacks a safeguard (written before facecls recorded its weights' digest)."""


def _number(value: Any) -> bool:
    """A finite int or float (``bool`` excluded: JSON's true is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a ``model.json`` document, or ``None`` when it can be used."""
    if not isinstance(meta, dict):
        return f"must hold a JSON object, not {type(meta).__name__}"
    if meta.get("format") != BUNDLE_FORMAT:
        return 'not a facecls model sidecar (no "format": "facecls-model")'
    types = {"architecture": str, "num_classes": int, "class_names": list, "image_size": int,
             "mean": list, "std": list}  # fmt: skip
    for key, kind in types.items():
        if key not in meta:
            return f"the field {key!r} is missing"
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            return f"{key!r} must be a {kind.__name__}, not {type(meta[key]).__name__}"
    num, size, names = meta["num_classes"], meta["image_size"], meta["class_names"]
    if not 1 <= num <= MAX_CLASSES:
        return f"num_classes {num} is outside 1..{MAX_CLASSES:,}"
    if not all(isinstance(n, str) for n in names) or len(names) != num:
        return f"class_names must be {num} strings (num_classes), got {len(names)} entries"
    if len(set(names)) != len(names):
        return "class_names has a name twice"
    info = model_info(meta["architecture"])
    low = (info.min_size if info else None) or 8
    if not low <= size <= MAX_IMAGE_SIZE:
        return f"image_size {size} is outside {low}..{MAX_IMAGE_SIZE} for {meta['architecture']}"
    if len(meta["mean"]) != 3 or not all(_number(v) for v in meta["mean"]):
        return "mean must be three finite numbers"
    if len(meta["std"]) != 3 or not all(_number(v) and v > 0 for v in meta["std"]):
        return "std must be three positive finite numbers"
    crop = meta.get("crop", 1.0)
    if not (_number(crop) and 0 < crop <= 1):
        return f"crop must be a number in (0, 1], not {crop!r}"
    digest = meta.get(DIGEST_KEY)
    if digest is not None and not (
        isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)
    ):
        return f"{DIGEST_KEY} must be 64 hex digits"
    enrolled = meta.get("enrolled", {})
    names = enrolled.get("names", []) if isinstance(enrolled, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "enrolled must be a JSON object whose names are strings"
    return _openset_problem(meta.get("openset"))


def _openset_problem(openset: Any) -> str | None:
    """What is wrong with the ``openset`` block (absent is fine)."""
    if openset is None:
        return None
    if not isinstance(openset, dict):
        return "openset must be a JSON object"
    if openset.get("method", "msp") not in METHODS:
        return f"openset method must be one of {METHODS}, not {openset.get('method')!r}"
    thresholds = openset.get("thresholds", {})
    if not isinstance(thresholds, dict) or not all(_number(v) for v in thresholds.values()):
        return "openset thresholds must map method names to finite numbers"
    for key in ("threshold", "ncm_scale", "acceptance"):
        if key in openset and not _number(openset[key]):
            return f"openset {key} must be a finite number, not {openset[key]!r}"
    if openset.get("ncm_scale", 1) <= 0 or not 0 <= openset.get("acceptance", 0.5) <= 1:
        return "openset ncm_scale must be positive and acceptance in [0, 1]"
    return None


def validate_meta(meta: Any, path: Path) -> dict[str, Any]:
    """Check a ``model.json`` document before anything is built from it; returns it.

    Every loader calls this: the fields and their types, ``len(class_names) == num_classes``,
    finite means, positive finite stds, an image size and class count within bounds (refused
    before any allocation), a size the architecture can take, and the ``openset`` block.

    Raises:
        BundleError: naming ``path`` and the first problem found.
    """
    problem = _meta_problem(meta)
    if problem is not None:
        raise BundleError(f"{path}: {problem}")
    return meta


def weights_digest(path: Path) -> str:
    """sha256 of a weights file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_digest(meta: dict[str, Any], weights_path: Path, meta_path: Path) -> None:
    """Refuse weights whose sha256 differs from the one ``model.json`` records (weights swapped
    in from another run); a bundle written before digests existed loads with a warning."""
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        warnings.warn(
            f"{meta_path}: no {DIGEST_KEY} recorded (a bundle from an older facecls), so "
            f"{weights_path.name} cannot be checked against it",
            BundleWarning,
            stacklevel=3,
        )
    elif weights_digest(weights_path) != recorded:
        raise BundleError(
            f"{weights_path}: its sha256 differs from the one {meta_path.name} records; these "
            "weights were not saved with this model.json (swapped in from another run?)"
        )


def read_sidecar(meta_path: Path) -> dict[str, Any]:
    """Read and validate a bundle's ``model.json``.

    Raises:
        BundleError: the file is missing, unreadable, not JSON or not a valid sidecar.
    """
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise BundleError(f"{meta_path}: the bundle's JSON sidecar is missing") from error
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError(f"{meta_path}: not valid JSON ({error})") from error
    return validate_meta(meta, meta_path)


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
    """The bundle's ``centroids.safetensors`` tensors (``trained``, maybe ``enrolled``), or {}."""
    path = Path(folder) / CENTROIDS_NAME
    if not path.exists():
        return {}
    try:
        return safetensors_numpy.load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise BundleError(f"{path}: not a readable safetensors file ({error})") from error


def write_centroids(folder: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``centroids.safetensors`` atomically (float32, contiguous)."""
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    with atomic_path(Path(folder) / CENTROIDS_NAME) as tmp:
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
