"""The two CNNs of the seed report: ``baseline`` (Table 1) and ``tronnet`` (Table 2).

Both are a convolutional ``features`` stack, a flatten, and a two-layer classifier
``Linear(F, 300) -> ReLU -> Linear(300, num_classes)``; softmax lives in the loss. The flatten
size ``F`` is computed from ``image_size`` with the convolution output formula, so the models
work at any size above their minimum (see ``min_image_size`` and docs/models.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from facecls.models.registry import register_model

HIDDEN_UNITS = 300  # width of the hidden linear layer in Tables 1 and 2


def _pair(value: int | str | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, str):  # Conv2d(padding="same") is not used by the seed models
        raise TypeError(f"string padding {value!r} is not supported")
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The output side of a conv/pool layer (PyTorch's formula, ``ceil_mode=False``)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def feature_shapes(features: nn.Sequential, image_size: int) -> list[tuple[int, int, int]]:
    """The ``(C, H, W)`` shape after each module of ``features`` for a square RGB input.

    Computed arithmetically (no forward pass). Sizes below 1 mean the input is too small.

    Args:
        features: Conv2d, MaxPool2d and shape-preserving modules (ReLU, BatchNorm2d).
        image_size: Side of the square input in pixels.

    Returns:
        One ``(channels, height, width)`` per module, in order.

    Raises:
        TypeError: For a module whose effect on the shape is not known here.
    """
    channels, height, width = 3, image_size, image_size
    shapes: list[tuple[int, int, int]] = []
    for module in features:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            if isinstance(module, nn.MaxPool2d) and module.ceil_mode:
                raise TypeError("MaxPool2d(ceil_mode=True) is not supported")
            kernel, stride = _pair(module.kernel_size), _pair(module.stride)
            padding, dilation = _pair(module.padding), _pair(module.dilation)
            height = _out_size(height, kernel[0], stride[0], padding[0], dilation[0])
            width = _out_size(width, kernel[1], stride[1], padding[1], dilation[1])
            if isinstance(module, nn.Conv2d):
                channels = module.out_channels
        elif not isinstance(module, (nn.ReLU, nn.BatchNorm2d, nn.Identity)):
            raise TypeError(f"unknown effect on shape of {type(module).__name__}")
        shapes.append((channels, height, width))
    return shapes


def _fits(features: nn.Sequential, image_size: int) -> bool:
    return all(h >= 1 and w >= 1 for _, h, w in feature_shapes(features, image_size))


def min_image_size(features: nn.Sequential) -> int:
    """The smallest square input side for which every layer's output is at least 1x1."""
    # Output sizes grow monotonically with the input, so the first size that fits is the minimum.
    return next(size for size in range(1, 4097) if _fits(features, size))


class SeedCNN(nn.Module):
    """``features -> flatten -> Linear(F, 300) -> ReLU -> Linear(300, num_classes) [-> ReLU]``.

    Attributes:
        features: The convolutional stack.
        classifier: The fully connected head.
        image_size: The input side the model was built for.
        num_flat_features: ``F``, the flattened feature size at ``image_size``.
    """

    def __init__(
        self,
        name: str,
        features: nn.Sequential,
        num_classes: int,
        image_size: int,
        final_relu: bool = False,
        xavier_init: bool = False,
    ) -> None:
        """Build the head for ``image_size`` inputs.

        Args:
            name: Model name, used in error messages.
            features: The convolutional stack.
            num_classes: Number of output logits.
            image_size: Side of the square input images.
            final_relu: Put a ReLU on the logits, as Table 1 does. Harmful: logits cannot go
                below zero, and a class whose logit is clipped gets no gradient.
            xavier_init: Glorot-uniform conv/linear weights and zero biases (report eq. 5);
                otherwise PyTorch's default initialisation.

        Raises:
            ValueError: If ``image_size`` is below the model's minimum.
        """
        super().__init__()
        if not _fits(features, image_size):
            raise ValueError(
                f"{name} needs images of at least {min_image_size(features)} px, got {image_size}"
            )
        channels, height, width = feature_shapes(features, image_size)[-1]
        self.image_size = image_size
        self.num_flat_features = channels * height * width
        self.features = features
        self.flatten = nn.Flatten()
        head: list[nn.Module] = [
            nn.Linear(self.num_flat_features, HIDDEN_UNITS),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN_UNITS, num_classes),
        ]
        if final_relu:
            head.append(nn.ReLU())
        self.classifier = nn.Sequential(*head)
        if xavier_init:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    def conv_layers(self) -> list[nn.Conv2d]:
        """The convolutions in forward order (e.g. to draw first-layer kernels)."""
        return [module for module in self.features if isinstance(module, nn.Conv2d)]

    def forward(self, images: Tensor) -> Tensor:
        """Map ``(N, 3, S, S)`` normalised images to ``(N, num_classes)`` logits."""
        features = self.features(images)  # (N, C, H, W)
        return self.classifier(self.flatten(features))  # (N, C*H*W) -> (N, num_classes)


def baseline_features() -> nn.Sequential:
    """Table 1's four convolutions. Shapes at 224 px in the comments."""
    return nn.Sequential(
        nn.Conv2d(3, 21, kernel_size=3, stride=2),  # (21, 111, 111); no BatchNorm here
        nn.ReLU(inplace=True),
        nn.Conv2d(21, 20, kernel_size=3, stride=2),  # (20, 55, 55)
        nn.BatchNorm2d(20),
        nn.ReLU(inplace=True),
        nn.Conv2d(20, 15, kernel_size=3, stride=2, padding=1),  # (15, 28, 28)
        nn.BatchNorm2d(15),
        nn.ReLU(inplace=True),
        nn.Conv2d(15, 7, kernel_size=5, stride=2, padding=1),  # (7, 13, 13) -> F = 1183
        nn.BatchNorm2d(7),
        nn.ReLU(inplace=True),
    )


def tronnet_features(final_conv_stride: int = 1, double_relu: bool = False) -> nn.Sequential:
    """Table 2's seven convolutions and two max-pools. Shapes at 224 px in the comments.

    Args:
        final_conv_stride: Stride of the last (5x5) convolution. Table 2 says 1, which gives
            F = 4840 at 224 px; 2 (as in the baseline's last conv) gives the table's 1210.
        double_relu: ReLU -> BatchNorm -> ReLU after the second conv, as Table 2 lists it;
            by default one ReLU (before the BatchNorm, the order the table gives first).
    """
    second_block: list[nn.Module] = [nn.ReLU(inplace=True), nn.BatchNorm2d(30)]
    if double_relu:
        second_block.append(nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv2d(3, 21, kernel_size=3),  # (21, 222, 222); no BatchNorm here
        nn.ReLU(inplace=True),
        nn.Conv2d(21, 30, kernel_size=3, padding=1),  # (30, 222, 222)
        *second_block,
        nn.MaxPool2d(3),  # (30, 74, 74)
        nn.Conv2d(30, 35, kernel_size=3, padding=1),  # (35, 74, 74)
        nn.BatchNorm2d(35),
        nn.ReLU(inplace=True),
        nn.Conv2d(35, 25, kernel_size=3, padding=1),  # (25, 74, 74)
        nn.BatchNorm2d(25),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3),  # (25, 24, 24)
        nn.Conv2d(25, 20, kernel_size=3, padding=1),  # (20, 24, 24)
        nn.BatchNorm2d(20),
        nn.ReLU(inplace=True),
        nn.Conv2d(20, 15, kernel_size=3, padding=1),  # (15, 24, 24)
        nn.BatchNorm2d(15),
        nn.ReLU(inplace=True),
        # stride 1: (10, 22, 22) -> F = 4840; stride 2: (10, 11, 11) -> F = 1210
        nn.Conv2d(15, 10, kernel_size=5, stride=final_conv_stride, padding=1),
        nn.BatchNorm2d(10),
        nn.ReLU(inplace=True),
    )


@register_model("baseline", "Seed report Table 1: 4 convs, BatchNorm, 2 linear (no ReLU on logits)")
def baseline(num_classes: int, image_size: int = 224, final_relu: bool = False) -> SeedCNN:
    """The report's baseline CNN (Table 1), in its sound form by default.

    Args:
        num_classes: Number of output logits.
        image_size: Side of the square input images (minimum 23 px).
        final_relu: Keep Table 1's ReLU on the logits (see ``baseline-report``).
    """
    return SeedCNN("baseline", baseline_features(), num_classes, image_size, final_relu=final_relu)


@register_model("baseline-report", "Table 1 as printed, with the harmful ReLU on the logits")
def baseline_report(num_classes: int, image_size: int = 224) -> SeedCNN:
    """Table 1 exactly, ReLU on the logits included; for reproducing the report only."""
    features = baseline_features()
    return SeedCNN("baseline-report", features, num_classes, image_size, final_relu=True)


@register_model("tronnet", "Seed report Table 2: 7 convs, 2 max-pools, BatchNorm, Xavier init")
def tronnet(
    num_classes: int,
    image_size: int = 224,
    final_conv_stride: int = 1,
    double_relu: bool = False,
) -> SeedCNN:
    """The report's deeper CNN (Table 2), with Xavier-uniform initialisation.

    Args:
        num_classes: Number of output logits.
        image_size: Side of the square input images (minimum 29 px).
        final_conv_stride: Stride of the last convolution (see ``tronnet_features``).
        double_relu: ReLU both before and after the second BatchNorm.
    """
    features = tronnet_features(final_conv_stride, double_relu)
    return SeedCNN("tronnet", features, num_classes, image_size, xavier_init=True)


@register_model("tronnet-report", "Table 2 as the report ran it: F = 1210 at 224 px, double ReLU")
def tronnet_report(num_classes: int, image_size: int = 224) -> SeedCNN:
    """Table 2 made consistent with its ``Linear(1210, 300)`` at 224 px.

    The table's last conv (stride 1) gives F = 4840 at the report's 224 px input, yet its
    first linear layer takes 1210 = 10 x 11 x 11, which a stride-2 last conv (as in the
    baseline) gives exactly. This variant uses that stride and the table's
    ReLU -> BatchNorm -> ReLU after the second conv.
    """
    features = tronnet_features(final_conv_stride=2, double_relu=True)
    return SeedCNN("tronnet-report", features, num_classes, image_size, xavier_init=True)
