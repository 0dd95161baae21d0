"""Models: a name registry, the seed report's CNNs and torchvision classifiers.

Importing this package registers every model (``seed`` and ``tv`` register on import).
"""

from __future__ import annotations

from facecls.models import facenet, seed, tv
from facecls.models.factory import create_model
from facecls.models.registry import ModelFactory, ModelInfo, list_models, model_info, register_model
from facecls.models.seed import SeedCNN, feature_shapes, min_image_size
from facecls.models.tv import replace_classifier, torchvision_model_names

__all__ = [
    "ModelFactory",
    "ModelInfo",
    "SeedCNN",
    "create_model",
    "facenet",
    "feature_shapes",
    "list_models",
    "min_image_size",
    "model_info",
    "register_model",
    "replace_classifier",
    "seed",
    "torchvision_model_names",
    "tv",
]
