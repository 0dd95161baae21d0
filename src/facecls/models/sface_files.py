"""SFace's weights file: the network's shape table and the conversion of OpenCV Zoo's ONNX file,
without PyTorch (the weights store converts with numpy and ``onnx`` alone).

:mod:`facecls.models.sface` builds the network from :data:`PAIRS`; :func:`sface_state` turns the
ONNX file's initializers into that network's state dict (keys and shapes checked here).
"""

from __future__ import annotations

import numpy as np

EMBEDDING_DIM = 128
IMAGE_SIZE = 112
# (name, input channels, output channels, stride) of each depthwise-separable pair after conv_1.
PAIRS = (
    (2, 32, 64, 1), (3, 64, 128, 2), (4, 128, 128, 1), (5, 128, 256, 2), (6, 256, 256, 1),
    (7, 256, 512, 2), (8, 512, 512, 1), (9, 512, 512, 1), (10, 512, 512, 1), (11, 512, 512, 1),
    (12, 512, 512, 1), (13, 512, 1024, 2), (14, 1024, 1024, 1),
)  # fmt: skip
_BN = ("weight", "bias", "running_mean", "running_var")


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter and buffer of the network but the head and ``num_batches_tracked``."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn_prelu(name: str, weight: tuple[int, ...]) -> None:
        shapes[f"{name}.conv.weight"] = weight
        shapes.update({f"{name}.bn.{p}": (weight[0],) for p in _BN})
        shapes[f"{name}.prelu.weight"] = (weight[0],)

    conv_bn_prelu("conv_1", (32, 3, 3, 3))
    for n, cin, cout, _stride in PAIRS:
        conv_bn_prelu(f"conv_{n}_dw", (cin, 1, 3, 3))
        conv_bn_prelu(f"conv_{n}", (cout, cin, 1, 1))
    shapes.update({f"bn1.{p}": (1024,) for p in _BN})
    shapes["pre_fc1.weight"] = (EMBEDDING_DIM, 1024 * 7 * 7)
    shapes["pre_fc1.bias"] = (EMBEDDING_DIM,)
    shapes.update({f"fc1.{p}": (EMBEDDING_DIM,) for p in _BN})
    return shapes


# ONNX initializer name endings -> the parameter they become in a ConvBnPrelu or BatchNorm.
_SUFFIXES = {
    "conv2d_weight": "conv.weight", "batchnorm_gamma": "bn.weight", "batchnorm_beta": "bn.bias",
    "batchnorm_moving_mean": "bn.running_mean", "batchnorm_moving_var": "bn.running_var",
    "relu_gamma": "prelu.weight", "gamma": "weight", "beta": "bias",
    "moving_mean": "running_mean", "moving_var": "running_var", "weight": "weight", "bias": "bias",
}  # fmt: skip


def sface_state(initializers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ONNX file's initializers as a state dict of :class:`facecls.models.sface.SFace` (without the head).

    Raises:
        ValueError: a parameter of the network is missing or has another shape (another file).
    """
    state: dict[str, np.ndarray] = {}
    for name, value in initializers.items():
        if name.startswith("scalar_op"):  # the input scaling, which NORMALIZATION does
            continue
        for ending, target in _SUFFIXES.items():
            if name.endswith("_" + ending):
                module = name[: -len(ending) - 1]
                state[f"{module}.{target}"] = np.ascontiguousarray(value, dtype=np.float32)
                break
    for key, value in list(state.items()):
        if key.endswith("prelu.weight"):
            state[key] = value.reshape(-1)  # ONNX broadcasts PReLU's slope as (C, 1, 1)
    expected = expected_shapes()
    wrong = [k for k, shape in expected.items() if k not in state or state[k].shape != shape]
    if wrong or len(state) != len(expected):
        raise ValueError(f"not SFace's network: {len(wrong)} parameter(s) differ, e.g. {wrong[:3]}")
    for key in expected:
        if key.endswith("running_var"):
            state[key.removesuffix("running_var") + "num_batches_tracked"] = np.zeros((), np.int64)
    return state


def read_onnx_initializers(data: bytes) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX model held in memory, by name.

    Raises:
        ValueError: the bytes are not an ONNX model.
    """
    import onnx  # a core dependency; imported here so `facecls weights list` stays light
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(data)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"not an ONNX model ({error})") from error
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
