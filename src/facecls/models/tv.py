"""torchvision classification models with their classifier head sized to ``num_classes``.

``resnet18`` (the report's transfer-learning model, §3.4) and ``mobilenet_v2`` are registered;
``create_model`` also builds any other torchvision classification model by name through
``build_torchvision``. Pretrained weights come only through torchvision's weights API, which
reads ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``) before it tries to download.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import (
    MobileNet_V2_Weights,
    ResNet18_Weights,
    WeightsEnum,
    get_model,
    get_model_weights,
)

from facecls.models.registry import register_model

# Models whose auxiliary heads make train-mode forward return a namedtuple, not a tensor;
# when not pretrained, ask for no aux heads and say init_weights (silences a FutureWarning).
_AUX_HEAD_MODELS = frozenset({"googlenet", "inception_v3"})


def torchvision_model_names() -> list[str]:
    """Names of all torchvision classification models (``create_model`` accepts each)."""
    return torchvision.models.list_models(module=torchvision.models)


def replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Replace the final ``nn.Linear`` of a torchvision classifier with a fresh one, in place.

    Knows the heads ``.fc`` (ResNet, RegNet, Inception, GoogLeNet, ShuffleNet), ``.classifier``
    as a Linear (DenseNet) or a Sequential ending in a Linear (MobileNet, EfficientNet, VGG,
    AlexNet, ConvNeXt, MNASNet, MaxViT), ``.heads.head`` (ViT) and ``.head`` (Swin).

    Raises:
        ValueError: For any other head (e.g. SqueezeNet's convolutional classifier).
    """
    heads = getattr(model, "heads", None)
    if isinstance(heads, nn.Module) and isinstance(getattr(heads, "head", None), nn.Linear):
        heads.head = _fresh_linear(heads.head, num_classes)
        return
    for attr in ("fc", "head", "classifier"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            setattr(model, attr, _fresh_linear(layer, num_classes))
            return
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear):
        classifier[-1] = _fresh_linear(classifier[-1], num_classes)
        return
    raise ValueError(
        f"cannot find a final Linear layer to replace in {type(model).__name__}; "
        "supported heads: .fc, .classifier, .heads.head, .head"
    )


def _fresh_linear(old: nn.Linear, num_classes: int) -> nn.Linear:
    return nn.Linear(old.in_features, num_classes, bias=old.bias is not None)


def _drop_aux_heads(model: nn.Module) -> None:
    """Remove Inception/GoogLeNet auxiliary heads, as torchvision does when asked."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attr in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, attr):
                setattr(model, attr, None)


def _load_pretrained(name: str, weights: WeightsEnum, **kwargs: object) -> nn.Module:
    """``get_model(name, weights=weights)``, explaining how to work offline if it fails."""
    try:
        return get_model(name, weights=weights, **kwargs)
    except OSError as error:  # urllib.error.URLError is an OSError
        filename = os.path.basename(urlparse(weights.url).path)
        checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"could not download pretrained weights for {name!r} ({error}). To work offline, "
            f"download {weights.url} elsewhere and put {filename} in {checkpoints}/ "
            "(set TORCH_HOME to choose another place)"
        ) from error


def build_torchvision(
    name: str,
    num_classes: int,
    image_size: int = 224,
    pretrained: bool = False,
    weights: WeightsEnum | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a torchvision classification model whose output has ``num_classes`` logits.

    Without ``pretrained`` the model is built with ``num_classes`` outputs, so its own head
    initialisation applies. With it, the ImageNet model is loaded and its final Linear
    replaced (``replace_classifier``). Auxiliary heads (Inception, GoogLeNet) are dropped so
    forward always returns a tensor.

    Args:
        name: A name from ``torchvision_model_names()``.
        num_classes: Number of output logits.
        image_size: Input side; passed on to ViT (which needs it) when not pretrained, and
            otherwise unused (the other models pool adaptively; pretrained ViTs need 224).
        pretrained: Load ImageNet weights.
        weights: Which weights to load when pretrained; default the model's ``DEFAULT``.
        **kwargs: Passed on to the torchvision builder (e.g. ``dropout``).

    Raises:
        ValueError: If the head cannot be replaced.
        RuntimeError: If the weights are neither cached nor downloadable.
    """
    if name in _AUX_HEAD_MODELS and not pretrained:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    if not pretrained:
        if name.startswith("vit_"):
            kwargs.setdefault("image_size", image_size)
        model = get_model(name, weights=None, num_classes=num_classes, **kwargs)
    else:
        model = _load_pretrained(name, weights or get_model_weights(name).DEFAULT, **kwargs)
        replace_classifier(model, num_classes)
    if "aux_logits" not in kwargs:
        _drop_aux_heads(model)
    return model


@register_model("resnet18", "torchvision ResNet-18 (report §3.4), ImageNet weights", True)
def resnet18(
    num_classes: int, image_size: int = 224, pretrained: bool = False, **kwargs: object
) -> nn.Module:
    """ResNet-18 with ``fc = Linear(512, num_classes)``; pretrained = IMAGENET1K_V1."""
    weights = ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
    return build_torchvision("resnet18", num_classes, image_size, pretrained, weights, **kwargs)


@register_model("mobilenet_v2", "torchvision MobileNetV2, ImageNet weights", True)
def mobilenet_v2(
    num_classes: int, image_size: int = 224, pretrained: bool = False, **kwargs: object
) -> nn.Module:
    """MobileNetV2 with ``classifier[-1] = Linear(1280, num_classes)``.

    Pretrained = IMAGENET1K_V1 (file ``mobilenet_v2-b0353104.pth``), not torchvision's
    DEFAULT (IMAGENET1K_V2, ``mobilenet_v2-7ebf99e0.pth``), so the commonly cached file works.
    """
    weights = MobileNet_V2_Weights.IMAGENET1K_V1 if pretrained else None
    return build_torchvision("mobilenet_v2", num_classes, image_size, pretrained, weights, **kwargs)
