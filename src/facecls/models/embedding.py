"""Face embeddings from any classifier: the input of its final ``nn.Linear`` layer.

A classifier's last linear layer scores identities against the features it is given, so those
features are the model's face embedding. A forward hook reads them during the ordinary forward
pass, which works for the seed CNNs (``classifier[2]``), torchvision models (``fc``,
``classifier[-1]``, ``heads.head``) and any model whose logits come from a final Linear, without
knowing its structure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


def final_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (the layer that produces the logits).

    Raises:
        ValueError: when the model has no Linear layer.
    """

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


def head_name(model: nn.Module) -> str:
    """Module path of the final ``nn.Linear`` (the classifier head)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head to fine-tune")
    return names[-1]


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(backbone, head)`` parameters; the head is :func:`head_name`'s module."""
    prefix = head_name(model) + "."
    backbone, head = [], []
    for name, param in model.named_parameters():
        (head if name.startswith(prefix) else backbone).append(param)
    return backbone, head


def load_backbone_weights(
    model: nn.Module, path: str | Path, drop_prefixes: tuple[str, ...] = ()
) -> nn.Module:
    """Load a safetensors state dict into ``model``: strict key matching, the head excepted.

    Keys under ``drop_prefixes`` (another model's head) are ignored; every other key of the file
    must exist in the model with the same shape and every backbone key of the model must be in
    the file. The head keeps its fresh initialisation.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file, or the keys or shapes differ (named in the message).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from error
    head = head_name(model) + "."
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith((*drop_prefixes, head))}
    state.update({k: v for k, v in own.items() if k.startswith(head)})
    problem = key_differences(own, state)
    if problem:
        raise ValueError(
            f"{path}: weights do not match {type(model).__name__} ({problem}); is the file for "
            "another architecture?"
        )
    model.load_state_dict(state, strict=True)
    return model


def key_differences(expected: dict[str, Any], given: dict[str, Any], show: int = 5) -> str:
    """How two state dicts differ, counted, with the first ``show`` keys (a file for another
    architecture differs in hundreds of keys: its message stays one line)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    reshaped = sorted(
        k for k in set(expected) & set(given)
        if tuple(expected[k].shape) != tuple(given[k].shape)
    )  # fmt: skip
    parts = [
        f"{len(keys)} key(s) {what}, e.g. {', '.join(keys[:show])}"
        for keys, what in ((missing, "missing from the file"), (unexpected, "not in the model"),
                           (reshaped, "of another shape"))
        if keys
    ]  # fmt: skip
    return "; ".join(parts)


class NormFaceNet(nn.Module):
    """A face network whose classifier sees its L2-normalised embedding × ``embedding_scale`` (a
    NormFace head, Wang et al. 2017): FaceNet and SFace. Subclasses give :meth:`features` (the
    un-normalised embedding) and a ``classifier`` Linear.

    ``forward`` returns logits; :meth:`embed` the L2-normalised embeddings (the metric space
    faces are compared in); :meth:`head_input` what the classifier sees (what a forward hook on
    the final Linear sees), whose cosine similarities are the embeddings'.

    Attributes:
        frozen_bn: keep every BatchNorm in eval mode even in ``train()``. Set when pretrained
            weights are loaded: batch statistics of a few hundred faces (or, for FaceNet's
            folded file, any batch statistics) would change what every layer computes; the
            BatchNorm affine terms still train.
    """

    classifier: nn.Linear

    def __init__(self, embedding_scale: float = 16.0) -> None:
        super().__init__()
        self.frozen_bn = False
        self.embedding_scale = embedding_scale

    def train(self, mode: bool = True) -> NormFaceNet:
        super().train(mode)
        if mode and self.frozen_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The un-normalised embeddings ``(N, D)`` of standardised faces ``(N, 3, S, S)``."""
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``(N, D)``; call in eval mode."""
        return F.normalize(self.features(images), p=2, dim=1)

    def head_input(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's input ``(N, D)``: the normalised embedding × ``embedding_scale``."""
        return self.embed(images) * self.embedding_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_input(x))
