"""A tiny model registry: ``register_model``, ``create_model`` and ``list_models``.

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


def create_model(
    name: str,
    num_classes: int,
    image_size: int = 224,
    pretrained: bool = False,
    **kwargs: object,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: A registered name (see ``list_models``) or any torchvision classification
            model name.
        num_classes: Number of output logits.
        image_size: Side of the square input images in pixels; the seed CNNs size their first
            linear layer from it.
        pretrained: Start from ImageNet weights (torchvision models only).
        **kwargs: Passed on to the factory (e.g. ``final_relu`` for ``baseline``).

    Returns:
        The model, in train mode, on the CPU.

    Raises:
        ValueError: If the name is unknown, ``pretrained`` is asked of a model without
            pretrained weights, ``num_classes`` < 1, or the image size is too small.
        RuntimeError: If pretrained weights are neither cached nor downloadable.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if name in _REGISTRY:
        info, factory = _REGISTRY[name]
        if pretrained and not info.pretrained_ok:
            raise ValueError(f"model {name!r} has no pretrained weights; use pretrained=False")
        if info.pretrained_ok:
            kwargs["pretrained"] = pretrained
        return factory(num_classes=num_classes, image_size=image_size, **kwargs)

    # Imported here, not at the top: tv.py imports this module to register its models.
    from facecls.models import tv

    if name in tv.torchvision_model_names():
        return tv.build_torchvision(name, num_classes, image_size, pretrained, **kwargs)
    known = ", ".join(info.name for info in list_models())
    raise ValueError(
        f"unknown model {name!r}; registered models: {known}; "
        "any torchvision classification model name (e.g. 'resnet50') also works"
    )
