"""A tiny model registry: ``register_model``, ``list_models`` and ``model_info`` (a leaf).

Modelled on torchvision's ``models/_api.py``: factories register themselves with a decorator
when their module is imported (``facecls.models`` imports them all), and callers build models
by name. Names that are not registered but are torchvision classification models are built
by ``facecls.models.tv`` with their classifier head replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch import nn

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model.

    Attributes:
        name: The name given to ``create_model``.
        description: One line for ``facecls list-models``.
        pretrained_ok: Whether ``create_model(..., pretrained=True)`` is allowed.
        default_size: The square input size (pixels) the model was designed for.
        min_size: The smallest input side it accepts (``None``: not declared).
        normalization: Fixed per-channel ``(mean, std)`` in [0, 1] units the model's weights
            expect (FaceNet's ``(x − 127.5) / 128``); ``None``: the training part's statistics.
    """

    name: str
    description: str
    pretrained_ok: bool
    default_size: int
    min_size: int | None = None
    normalization: tuple[list[float], list[float]] | None = None


# The one registry: filled by the decorators in seed.py and tv.py when they are imported.
_REGISTRY: dict[str, tuple[ModelInfo, ModelFactory]] = {}


def register_model(
    name: str,
    description: str = "",
    pretrained_ok: bool = False,
    default_size: int = 224,
    min_size: int | None = None,
    normalization: tuple[list[float], list[float]] | None = None,
) -> Callable[[F], F]:
    """Register a model factory under ``name``.

    The factory is called as ``factory(num_classes=..., image_size=..., **kwargs)``, plus
    ``pretrained=...`` when ``pretrained_ok`` is true, and returns an ``nn.Module`` whose
    forward maps ``(N, 3, image_size, image_size)`` images to ``(N, num_classes)`` logits.

    Args:
        name: Registry name; must not be registered already.
        description: One-line description shown by ``list_models``.
        pretrained_ok: Whether the factory accepts ``pretrained=True``.
        default_size: The input size the model was designed for.
        min_size: The smallest input side the model accepts.
        normalization: Fixed ``(mean, std)`` the model expects instead of data statistics.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered (checked when the decorator is applied).
    """

    def decorator(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        info = ModelInfo(name, description, pretrained_ok, default_size, min_size, normalization)
        _REGISTRY[name] = (info, factory)
        return factory

    return decorator


def list_models() -> list[ModelInfo]:
    """Return the registered models, sorted by name.

    Any torchvision classification model name (``torchvision.models.list_models(
    module=torchvision.models)``, e.g. ``"resnet50"``, ``"efficientnet_b0"``) also works with
    ``create_model`` even though it is not listed here; see
    ``facecls.models.torchvision_model_names``.
    """
    return [info for info, _ in sorted(_REGISTRY.values(), key=lambda entry: entry[0].name)]


def model_info(name: str) -> ModelInfo | None:
    """The registry's record of ``name``, or ``None`` for unregistered (torchvision) names."""
    entry = _REGISTRY.get(name)
    return entry[0] if entry else None


def registered(name: str) -> tuple[ModelInfo, ModelFactory] | None:
    """The record and factory of a registered ``name``, or ``None`` (torchvision names)."""
    return _REGISTRY.get(name)
