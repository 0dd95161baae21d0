"""``create_model``: a registered model by name, else any torchvision classifier.

Kept apart from the registry so the registry stays a leaf that every model file imports to
register itself, while this module imports the model files (which registers them all).
"""

from __future__ import annotations

import torch
from torch import nn

from facecls.models import facenet, seed, sface, tv  # noqa: F401  (importing registers the models)
from facecls.models.registry import list_models, registered


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
    entry = registered(name)
    if entry is not None:
        info, factory = entry
        if pretrained and not info.pretrained_ok:
            raise ValueError(f"model {name!r} has no pretrained weights; use pretrained=False")
        if info.pretrained_ok:
            kwargs["pretrained"] = pretrained
        return factory(num_classes=num_classes, image_size=image_size, **kwargs)

    if name in tv.torchvision_model_names():
        return tv.build_torchvision(name, num_classes, image_size, pretrained, **kwargs)
    known = ", ".join(info.name for info in list_models())
    raise ValueError(
        f"unknown model {name!r}; registered models: {known}; "
        "any torchvision classification model name (e.g. 'resnet50') also works"
    )


def input_size_problem(name: str, image_size: int) -> str | None:
    """Why ``name`` cannot take ``image_size`` px inputs, or ``None`` (also when unknown).

    The model is built and run once on PyTorch's ``meta`` device, which computes shapes and
    allocates nothing, so any architecture's own check speaks (a ViT's patch size, a kernel
    larger than what is left of the image) before data is decoded or a run folder made.
    """
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=2, image_size=image_size).eval()
            model(torch.empty(2, 3, image_size, image_size))
    except (AssertionError, RuntimeError, ValueError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None if "meta" in text.lower() else text  # an op without a meta kernel: unknown
    except Exception:  # a model that cannot be built on the meta device: not known here
        return None
    return None
