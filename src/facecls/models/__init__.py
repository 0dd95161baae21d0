"""Models: a name registry, the seed report's CNNs and torchvision classifiers.

Asking this package for any of its names registers every model (``seed``, ``tv`` and ``facenet``
register on import). The package itself loads nothing on import, so its light modules (the
weights store, :mod:`facecls.models.facenet_files`) serve ``facecls weights list`` without
PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module of this package that defines it
_HOMES = {
    "ModelFactory": "registry", "ModelInfo": "registry", "list_models": "registry",
    "model_info": "registry", "register_model": "registry", "create_model": "factory",
    "SeedCNN": "seed", "feature_shapes": "seed", "min_image_size": "seed",
    "replace_classifier": "tv", "torchvision_model_names": "tv",
    "facenet": None, "seed": None, "sface": None, "tv": None,
}  # fmt: skip

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'facecls.models' has no attribute {name!r}")
    importlib.import_module("facecls.models.factory")  # imports, so registers, every model
    home = _HOMES[name]
    if home is None:
        return importlib.import_module(f"facecls.models.{name}")
    return getattr(importlib.import_module(f"facecls.models.{home}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
