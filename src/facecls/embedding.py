"""Face embeddings from any classifier: the input of its final ``nn.Linear`` layer.

A classifier's last linear layer scores identities against the features it is given, so those
features are the model's face embedding. A forward hook reads them during the ordinary forward
pass, which works for the seed CNNs (``classifier[2]``), torchvision models (``fc``,
``classifier[-1]``, ``heads.head``) and any model whose logits come from a final Linear, without
knowing its structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def final_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (the layer that produces the logits).

    Raises:
        ValueError: when the model has no Linear layer.
    """
    from facecls.finetune import head_name  # the one definition of "the head"

    try:
        return model.get_submodule(head_name(model))
    except ValueError as error:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer; embeddings are the input of the "
            "final Linear classifier layer"
        ) from error


def logits_and_features(
    model: nn.Module, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass returning logits ``(N, C)`` and embeddings ``(N, D)`` (not normalised).

    Args:
        model: a classifier whose logits come from its final Linear layer.
        inputs: normalised images ``(N, 3, S, S)``.
    """
    captured: list[torch.Tensor] = []
    hook = final_linear(model).register_forward_hook(
        lambda _m, args, _out: captured.append(args[0])
    )
    try:
        logits = model(inputs)
    finally:
        hook.remove()
    if not captured:
        raise ValueError(f"the final Linear layer of {type(model).__name__} was not called")
    # The features may arrive flattened later (e.g. (N, D) already); keep the batch axis.
    return logits, captured[-1].reshape(inputs.shape[0], -1)


@torch.no_grad()
def embed(model: nn.Module, inputs: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Embeddings ``(N, D)`` of normalised images ``(N, 3, S, S)``, L2-normalised by default."""
    model.eval()
    _, features = logits_and_features(model, inputs)  # (N, D)
    features = features.float()
    return F.normalize(features, dim=1) if normalize else features


def forward_tta(
    model: nn.Module, inputs: torch.Tensor, flip_tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and embeddings of normalised images, averaged with the mirror image when asked."""
    logits, features = logits_and_features(model, inputs)
    if flip_tta:
        flipped_logits, flipped_features = logits_and_features(model, inputs.flip(3))
        logits, features = (logits + flipped_logits) / 2, (features + flipped_features) / 2
    return logits, features
