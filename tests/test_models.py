"""Contracts of the model registry, the seed CNNs and the torchvision models."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from facecls.models import (
    ModelInfo,
    create_model,
    feature_shapes,
    list_models,
    register_model,
    replace_classifier,
    torchvision_model_names,
)
from tests.conftest import SHARED

# torchvision's mobilenet_v2-b0353104.pth lies in ../shared/weights beside the repository (CI too).
WEIGHTS_DIR = SHARED / "weights"
MOBILENET_V1_FILE = "mobilenet_v2-b0353104.pth"

# Small inputs keep every test on the CPU and fast; all are above the models' minimum sizes.
TEST_SIZE = {
    "baseline": 64, "baseline-report": 64, "tronnet": 64, "tronnet-report": 64, "facenet": 75,
    "sface": 112,
}  # fmt: skip
DEFAULT_TEST_SIZE = 32


def _shapes_by_forward(model: nn.Module, image_size: int) -> list[tuple[int, ...]]:
    """The (C, H, W) after each module of ``model.features``, from a real forward pass."""
    shapes: list[tuple[int, ...]] = []
    x = torch.zeros(2, 3, image_size, image_size)
    with torch.no_grad():
        for module in model.features:
            x = module(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


def _conv_shapes(model: nn.Module, image_size: int) -> list[tuple[int, int, int]]:
    """The (C, H, W) after each Conv2d only."""
    shapes = feature_shapes(model.features, image_size)
    return [s for m, s in zip(model.features, shapes, strict=True) if isinstance(m, nn.Conv2d)]


def test_baseline_shapes_at_224_match_table_1() -> None:
    model = create_model("baseline", num_classes=201)
    assert _conv_shapes(model, 224) == [(21, 111, 111), (20, 55, 55), (15, 28, 28), (7, 13, 13)]
    assert model.num_flat_features == 1183 == 7 * 13 * 13  # Table 1: Linear In 1183
    assert feature_shapes(model.features, 224) == _shapes_by_forward(model, 224)
    assert model.classifier[0].in_features == 1183
    assert model.classifier[-1].out_features == 201
    # Table 1: no BatchNorm after the first conv, ReLU directly.
    assert isinstance(model.features[1], nn.ReLU)
    assert isinstance(model.features[3], nn.BatchNorm2d)


def test_tronnet_shapes_at_224() -> None:
    model = create_model("tronnet", num_classes=201)
    conv_shapes = _conv_shapes(model, 224)
    assert conv_shapes == [
        (21, 222, 222),
        (30, 222, 222),
        (35, 74, 74),
        (25, 74, 74),
        (20, 24, 24),
        (15, 24, 24),
        (10, 22, 22),
    ]
    assert model.num_flat_features == 4840
    assert feature_shapes(model.features, 224) == _shapes_by_forward(model, 224)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 2
    assert [c.out_channels for c in model.conv_layers()] == [21, 30, 35, 25, 20, 15, 10]


def test_tronnet_report_reproduces_table_2_flatten() -> None:
    model = create_model("tronnet-report", num_classes=201)
    assert model.num_flat_features == 1210 == 10 * 11 * 11  # Table 2: Linear In 1210
    assert feature_shapes(model.features, 224) == _shapes_by_forward(model, 224)


@pytest.mark.parametrize("image_size", [23, 29, 48, 100, 160])
def test_flatten_size_follows_image_size(image_size: int) -> None:
    for name in ("baseline", "tronnet"):
        if name == "tronnet" and image_size < 29:
            continue
        model = create_model(name, num_classes=3, image_size=image_size)
        out = model.features(torch.zeros(2, 3, image_size, image_size))
        assert model.num_flat_features == out[0].numel()


@pytest.mark.parametrize(("name", "minimum"), [("baseline", 23), ("tronnet", 29)])
def test_too_small_images_raise_with_minimum(name: str, minimum: int) -> None:
    create_model(name, num_classes=3, image_size=minimum)
    with pytest.raises(ValueError, match=f"at least {minimum} px"):
        create_model(name, num_classes=3, image_size=minimum - 1)


@pytest.mark.parametrize("info", list_models(), ids=lambda info: info.name)
def test_every_model_shape_finite_and_gradients(info: ModelInfo) -> None:
    torch.manual_seed(0)
    num_classes = 5
    size = TEST_SIZE.get(info.name, DEFAULT_TEST_SIZE)
    model = create_model(info.name, num_classes=num_classes, image_size=size)
    model.train()
    logits = model(torch.randn(2, 3, size, size))  # batch 2: BatchNorm needs > 1 value
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
            assert torch.isfinite(param.grad).all(), name


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=4, image_size=64)
    images = torch.randn(8, 3, 64, 64)
    targets = torch.arange(8) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    model.eval()
    with torch.no_grad():
        assert (model(images).argmax(dim=1) == targets).all()


def test_baseline_report_has_relu_on_logits() -> None:
    torch.manual_seed(0)
    report = create_model("baseline-report", num_classes=10, image_size=64)
    assert isinstance(report.classifier[-1], nn.ReLU)
    assert (report(torch.randn(4, 3, 64, 64)) >= 0).all()
    sound = create_model("baseline", num_classes=10, image_size=64)
    assert isinstance(sound.classifier[-1], nn.Linear)
    assert (sound(torch.randn(4, 3, 64, 64)) < 0).any()


def test_tronnet_xavier_init() -> None:
    torch.manual_seed(0)
    model = create_model("tronnet", num_classes=201)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 9
    for layer in layers:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        expected = 2.0 / (fan_in + fan_out)  # report eq. 5
        assert layer.weight.var().item() == pytest.approx(expected, rel=0.2)
        assert torch.all(layer.bias == 0)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("baseline")(lambda num_classes, image_size=224: nn.Identity())


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ValueError, match="unknown model 'no-such-net'") as info:
        create_model("no-such-net", num_classes=3)
    for name in ("baseline", "tronnet", "resnet18", "mobilenet_v2"):
        assert name in str(info.value)


def test_pretrained_on_seed_model_raises() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("tronnet", num_classes=3, pretrained=True)


def test_torchvision_fallback_builds_any_classifier() -> None:
    assert "resnet34" in torchvision_model_names()
    assert "resnet34" not in {info.name for info in list_models()}
    model = create_model("resnet34", num_classes=7)
    assert model.fc.out_features == 7
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_registered_resnet18_head() -> None:
    model = create_model("resnet18", num_classes=201)
    assert isinstance(model.fc, nn.Linear)
    assert (model.fc.in_features, model.fc.out_features) == (512, 201)


def test_unreplaceable_head_raises() -> None:
    # SqueezeNet's head is Conv2d -> ReLU -> pool, not a Linear.
    with pytest.raises(ValueError, match="final Linear"):
        replace_classifier(torchvision.models.squeezenet1_1(), 5)


def test_aux_heads_dropped_so_train_forward_gives_a_tensor() -> None:
    model = create_model("googlenet", num_classes=4).train()
    logits = model(torch.randn(2, 3, 64, 64))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 4)


def _no_network(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("network disabled in tests")


def test_pretrained_offline_without_cache_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(RuntimeError, match=r"resnet18-f37072fd\.pth") as info:
        create_model("resnet18", num_classes=3, pretrained=True)
    assert str(tmp_path / "hub" / "checkpoints") in str(info.value)


def test_pretrained_from_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = WEIGHTS_DIR / MOBILENET_V1_FILE
    if not source.is_file():
        pytest.fail(f"{source} is missing: tests read the weights from ../shared/weights")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # torch.hub reads TORCH_HOME at call time, unless someone called torch.hub.set_dir().
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(source, checkpoints / MOBILENET_V1_FILE)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)

    model = create_model("mobilenet_v2", num_classes=5, image_size=32, pretrained=True)
    state = torch.load(source, map_location="cpu", weights_only=True)
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(model.features[18][0].weight, state["features.18.0.weight"])
    assert model.classifier[-1].out_features == 5
    # A saved pretrained model loads into a freshly built one (bundle round trip).
    assert model.state_dict().keys() == create_model("mobilenet_v2", 5).state_dict().keys()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
