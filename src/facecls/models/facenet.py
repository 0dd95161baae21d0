"""FaceNet's Inception-ResNet-v1 (512-d face embedding) with a classifier head.

The layers and their names follow facenet-pytorch's ``InceptionResnetV1`` (Szegedy et al. 2017,
"Inception-v4, Inception-ResNet"; Schroff et al. 2015, "FaceNet"), so its CASIA-WebFace weights
load with strict key matching. facecls writes the architecture itself rather than depend on
facenet-pytorch, whose pinned requirements would downgrade torch.

Shapes at the 160 px input the weights were trained on::

    conv2d_1a..4b  (3, 160, 160) → (256, 17, 17)     stem
    repeat_1       5 × Block35 (scale 0.17)           (256, 17, 17)
    mixed_6a       (896, 8, 8)
    repeat_2       10 × Block17 (scale 0.10)          (896, 8, 8)
    mixed_7a       (1792, 3, 3)
    repeat_3, block8  5 + 1 × Block8 (scale 0.20; the last without ReLU)
    avgpool, dropout, last_linear (1792 → 512, no bias), last_bn → the 512-d embedding
    L2-normalise × 16, classifier Linear(512, num_classes) → logits  (facecls's head)

The smallest input that reaches ``mixed_7a`` with a 1 × 1 map is 75 px. Inputs are expected
standardised as ``(x − 127.5) / 128`` on 0–255 pixels, i.e. mean 0.5 and std 128/255 in [0, 1]
units (:data:`NORMALIZATION`); facecls uses that fixed normalisation for this model instead of
the training part's statistics.

Weights: ``weights=PATH`` (a safetensors state dict in this layout; the CASIA-WebFace file has
batch norm folded into the convolutions: γ 1, β = the folded bias, mean 0, var 1 − ε).
``pretrained=True`` loads :data:`WEIGHTS_FILE` from ``$FACECLS_CACHE/weights/`` (default
``~/.cache/facecls``), where ``facecls weights get facenet`` (:mod:`facecls.models.weights_store`)
puts it; ``docs/models.md`` has the other ways.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from facecls.models.embedding import NormFaceNet, load_backbone_weights
from facecls.models.facenet_files import WEIGHTS_FILE as WEIGHTS_FILE
from facecls.models.facenet_files import WEIGHTS_SHA256 as WEIGHTS_SHA256
from facecls.models.facenet_files import default_weights_path as default_weights_path
from facecls.models.facenet_files import missing_weights_message as missing_weights_message
from facecls.models.facenet_files import sha256_of as sha256_of
from facecls.models.registry import register_model

EMBEDDING_DIM = 512
MIN_IMAGE_SIZE = 75
# (x − 127.5) / 128 on 0–255 pixels, in facecls's [0, 1] units.
NORMALIZATION = ([0.5, 0.5, 0.5], [128 / 255] * 3)
# facenet-pytorch's own classifier head (10,575 CASIA identities), dropped when loading.
FOREIGN_HEAD_PREFIX = "logits."


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm (ε = 0.001, as TensorFlow's FaceNet) → ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Block35(nn.Module):
    """Inception-ResNet-A on (256, 17, 17): three branches, 1×1 up-projection, scaled residual."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, 1, 1))
        self.branch2 = nn.Sequential(
            BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, 1, 1), BasicConv2d(32, 32, 3, 1, 1)
        )
        self.conv2d = nn.Conv2d(96, 256, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Block17(nn.Module):
    """Inception-ResNet-B on (896, 8, 8) with factorised 1×7 / 7×1 convolutions."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 128, 1),
            BasicConv2d(128, 128, (1, 7), 1, (0, 3)),
            BasicConv2d(128, 128, (7, 1), 1, (3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x)), 1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Block8(nn.Module):
    """Inception-ResNet-C on (1792, 3, 3) with 1×3 / 3×1 convolutions; optionally no final ReLU."""

    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1792, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1792, 192, 1),
            BasicConv2d(192, 192, (1, 3), 1, (0, 1)),
            BasicConv2d(192, 192, (3, 1), 1, (1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, 1)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x)), 1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Mixed6a(nn.Module):
    """Reduction-A: (256, 17, 17) → (384 + 256 + 256 = 896, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, 2)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, 1, 1), BasicConv2d(192, 256, 3, 2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed7a(nn.Module):
    """Reduction-B: (896, 8, 8) → (384 + 256 + 256 + 896 = 1792, 3, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, 2))
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, 2))
        self.branch2 = nn.Sequential(
            BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, 1, 1), BasicConv2d(256, 256, 3, 2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))
        return torch.cat(branches, 1)


class FaceNet(NormFaceNet):
    """Inception-ResNet-v1 → 512-d embedding → L2-normalised × ``embedding_scale`` → logits.

    A :class:`facecls.models.embedding.NormFaceNet`: FaceNet's embeddings are made to be compared
    by angle, and on LFW-8 a linear probe on the normalised ones reached 0.989 balanced accuracy
    against 0.985 on the un-normalised ones. ``frozen_bn`` is set when pretrained weights are
    loaded: the shared file has batch norm folded into the convolutions (mean 0, var 1).
    """

    def __init__(
        self, num_classes: int, dropout: float = 0.6, embedding_scale: float = 16.0
    ) -> None:
        super().__init__(embedding_scale)
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*(Block35(0.17) for _ in range(5)))
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*(Block17(0.10) for _ in range(10)))
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*(Block8(0.20) for _ in range(5)))
        self.block8 = Block8(relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1792, EMBEDDING_DIM, bias=False)
        self.last_bn = nn.BatchNorm1d(EMBEDDING_DIM, eps=0.001, momentum=0.1)
        self.classifier = nn.Linear(EMBEDDING_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised 512-d embeddings (``last_bn``'s output) ``(N, 512)`` of images
        ``(N, 3, S, S)`` standardised as :data:`NORMALIZATION` says."""
        for stage in (
            self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a, self.conv2d_3b,
            self.conv2d_4a, self.conv2d_4b, self.repeat_1, self.mixed_6a, self.repeat_2,
            self.mixed_7a, self.repeat_3, self.block8, self.avgpool_1a, self.dropout,
        ):  # fmt: skip
            x = stage(x)
        return self.last_bn(self.last_linear(x.flatten(1)))


def load_backbone(model: FaceNet, path: str | Path) -> FaceNet:
    """Load backbone weights into ``model`` with strict key matching (the head excepted).

    Accepts facecls's layout and facenet-pytorch's (whose ``logits.*`` head is dropped). Batch
    norm is then held in eval mode while the model trains (:attr:`FaceNet.frozen_bn`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a safetensors state dict of this architecture.
    """
    load_backbone_weights(model, path, drop_prefixes=(FOREIGN_HEAD_PREFIX,))
    model.frozen_bn = True
    return model


def download_weights(url: str, sha256: str = WEIGHTS_SHA256, dest: Path | None = None) -> Path:
    """Download a weights file to ``dest`` (default :func:`default_weights_path`), verify it.

    The file is written under a temporary name and moved into place only when its sha256 equals
    ``sha256``, so a partial or altered download never reaches the cache.

    Raises:
        ValueError: the checksum differs (the download is deleted).
        OSError: the download failed.
    """
    dest = Path(dest) if dest is not None else default_weights_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as response:  # noqa: S310
            shutil.copyfileobj(response, out)
        got = sha256_of(tmp)
        if got != sha256:
            raise ValueError(f"{url}: sha256 {got} differs from the expected {sha256}; not saved")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return dest


def convert_facenet_pytorch(source: Path, dest: Path) -> Path:
    """Turn facenet-pytorch's ``20180408-102900-casia-webface.pt`` into a safetensors file.

    The ``.pt`` file is read with ``torch.load(weights_only=True)`` (tensors only, no code runs)
    and its ``logits.*`` head dropped; batch norm is kept as stored (not folded), which loads
    into :class:`FaceNet` all the same.
    """
    state = torch.load(Path(source), map_location="cpu", weights_only=True)
    state = {k: v.contiguous() for k, v in state.items() if not k.startswith(FOREIGN_HEAD_PREFIX)}
    missing = {k for k in FaceNet(num_classes=1).state_dict() if not k.startswith("classifier.")}
    missing -= set(state)
    if missing:
        raise ValueError(
            f"{source}: not an InceptionResnetV1 state dict, lacks {sorted(missing)[:3]}"
        )
    save_file(state, str(dest))
    return Path(dest)


@register_model(
    "facenet",
    "FaceNet Inception-ResNet-v1, 512-d embedding; weights: facecls weights get facenet",
    pretrained_ok=True,
    default_size=160,
    min_size=MIN_IMAGE_SIZE,
    normalization=NORMALIZATION,
)
def facenet(
    num_classes: int,
    image_size: int = 160,
    pretrained: bool = False,
    weights: str | Path | None = None,
    dropout: float = 0.6,
) -> FaceNet:
    """Inception-ResNet-v1 with ``classifier = Linear(512, num_classes)``.

    Args:
        weights: a backbone weights file (safetensors); overrides ``pretrained``.
        pretrained: load :func:`default_weights_path` (raises with instructions when absent:
            ``facecls weights get facenet``).

    Raises:
        ValueError: ``image_size`` below 75 px.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"facenet needs images of at least {MIN_IMAGE_SIZE} px (160 is what its weights "
            f"were trained on), got {image_size}; pass --image-size 96 or more"
        )
    model = FaceNet(num_classes, dropout)
    if weights is None and pretrained:
        weights = default_weights_path()
        if not weights.is_file():
            raise FileNotFoundError(missing_weights_message(weights))
    if weights is not None:
        load_backbone(model, weights)
    return model
