"""Model bundles: weights as safetensors plus a JSON sidecar; loading never unpickles.

The sidecar carries everything ``predict`` needs: architecture, class names, image size and the
training-part normalisation, so a bundle can be used with no other file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from facecls.atomic import atomic_path, write_json
from facecls.models import create_model

BUNDLE_FORMAT = "facecls-model"
BUNDLE_VERSION = 1
WEIGHTS_NAME, META_NAME = "model.safetensors", "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")


class BundleError(ValueError):
    """A model file cannot be loaded; the message names it and why."""


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
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": BUNDLE_FORMAT})
    write_json(folder / META_NAME, bundle.meta())
    return folder


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
    weights_path, meta_path = _resolve(Path(path))
    if weights_path.suffix in PICKLE_SUFFIXES and not trust_pickle:
        raise BundleError(
            f"{weights_path}: refusing to load a pickle-based file ({weights_path.suffix}); "
            "pickles can run code when loaded. facecls bundles are model.safetensors + "
            "model.json. If you trust this file, pass --trust-pickle (it is then read with "
            "torch.load(weights_only=True))."
        )
    if not weights_path.exists():
        raise BundleError(f"{weights_path}: model weights not found")
    if not meta_path.exists():
        raise BundleError(f"{meta_path}: the bundle's JSON sidecar is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{meta_path}: not valid JSON ({error})") from error
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: not a facecls model sidecar")
    if weights_path.suffix in PICKLE_SUFFIXES:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    else:
        try:
            state = load_file(str(weights_path))
        except Exception as error:  # safetensors raises its own error types
            raise BundleError(
                f"{weights_path}: not a readable safetensors file ({error})"
            ) from error
    model = create_model(
        meta["architecture"], num_classes=meta["num_classes"], image_size=meta["image_size"]
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise BundleError(f"{weights_path}: weights do not match {meta['architecture']}") from error
    known = {"format", "format_version", "facecls_version", "architecture", "num_classes",
             "class_names", "image_size", "mean", "std", "flip_tta"}  # fmt: skip
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
