"""MTCNN's three nets (Zhang et al. 2016) and their packaged weights.

Layer names follow facenet-pytorch 2.6.0's ``PNet``/``RNet``/``ONet`` so its state dicts, converted
by ``scripts/convert_mtcnn.py`` into ``facecls/weights/mtcnn.safetensors`` (MIT, see
``MTCNN-LICENSE.txt``), load with strict key matching. The detector is :mod:`facecls.data.mtcnn`.
"""

from __future__ import annotations

from importlib import resources

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from torch import nn


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    # Channels-last: CPU max-pooling of these small maps is ~10x faster than in NCHW, and the
    # nets ~3x overall (O-Net on 40 crops: 60 -> 19 ms on one core). Values are unchanged.
    return x.contiguous(memory_format=torch.channels_last)


class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12 px window per output cell (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` -> regression ``(N, 4, h, w)``, probabilities ``(N, 2, h, w)``.

        ``h = ceil((H - 2) / 2) - 4``: one cell per 12 px window, stride 2.
        """
        x = self.pool1(self.prelu1(self.conv1(_nhwc(x))))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement net on 24 x 24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, 24, 24)`` -> regression ``(N, 4)``, probabilities ``(N, 2)``."""
        x = self.pool1(self.prelu1(self.conv1(_nhwc(x))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))  # (N, 64, 3, 3)
        # The weights come from Caffe via TF: dense4 expects (W, H, C) flattening order.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48 x 48 crops: score, box regression and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, 3, 48, 48)`` -> regression ``(N, 4)``, landmarks ``(N, 10)`` (5 x then 5 y,
        fractions of the box), probabilities ``(N, 2)``."""
        x = self.pool1(self.prelu1(self.conv1(_nhwc(x))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))  # (N, 128, 3, 3)
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


def load_nets(device: str | torch.device = "cpu") -> tuple[PNet, RNet, ONet]:
    """The three nets with the packaged weights, in eval mode on ``device``."""
    # read_bytes works from a zipped install too, where there is no file path to open.
    raw = resources.files("facecls").joinpath("weights/mtcnn.safetensors").read_bytes()
    tensors = load_safetensors(raw)
    nets = (PNet(), RNet(), ONet())
    for name, net in zip(("pnet", "rnet", "onet"), nets, strict=True):
        prefix = f"{name}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        net.load_state_dict(state, strict=True)
        net.to(device=device, memory_format=torch.channels_last).eval().requires_grad_(False)
    return nets
