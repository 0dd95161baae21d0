"""FaceNet (Inception-ResNet-v1): strict loading of the shared CASIA-WebFace weights, embeddings of
real LFW faces, and the fine-tuning schedules (frozen backbone, learning-rate groups)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from facecls.config import TrainConfig
from facecls.models import create_model, model_info
from facecls.models.embedding import head_name, load_backbone_weights, split_parameters
from facecls.models.facenet import NORMALIZATION, WEIGHTS_FILE, FaceNet
from facecls.training.finetune import frozen_at, param_groups, set_backbone_frozen
from tests.conftest import SHARED

WEIGHTS = SHARED / "weights" / WEIGHTS_FILE
# Two photos of one person and one photo each of three others, early in the LFW archive.
SAME = ("Aaron_Peirsol_0001", "Aaron_Peirsol_0002")
OTHERS = ("Aaron_Sorkin_0001", "AJ_Cook_0001", "Abba_Eban_0001")


@pytest.fixture(scope="module")
def weights() -> Path:
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} is missing: tests read the FaceNet weights from ../shared/weights")
    return WEIGHTS


@pytest.fixture(scope="module")
def facenet(weights: Path) -> FaceNet:
    model = create_model("facenet", num_classes=7, image_size=160, weights=weights)
    assert isinstance(model, FaceNet)
    return model.eval()


def _lfw_faces(archive: Path, stems: tuple[str, ...], size: int = 160) -> torch.Tensor:
    """Centre 64 % crops of the named LFW JPEGs, resized to ``size``, FaceNet-normalised."""
    found: dict[str, Image.Image] = {}
    with tarfile.open(archive) as tar:
        for member in tar:  # the archive is sorted by name: the faces come early
            stem = member.name.rsplit("/", 1)[-1].removesuffix(".jpg")
            if stem in stems:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                found[stem] = Image.open(io.BytesIO(data)).convert("RGB")
            if len(found) == len(stems):
                break
    assert sorted(found) == sorted(stems)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMALIZATION)
    out = []
    for stem in stems:
        image = found[stem]
        side = round(image.width * 0.64)
        left = (image.width - side) // 2
        image = image.crop((left, left, left + side, left + side)).resize((size, size))
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
        out.append((x - mean) / std)
    return torch.stack(out)


def test_shared_weights_load_with_strict_keys(facenet: FaceNet, weights: Path) -> None:
    state = load_file(str(weights))
    own = facenet.state_dict()
    # Every key of the file is in the model and every model key but the head is in the file.
    assert set(own) - set(state) == {"classifier.weight", "classifier.bias"}
    assert set(state) <= set(own)
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    assert facenet.frozen_bn  # folded batch norm: statistics stay frozen when training
    info = model_info("facenet")
    assert info is not None and info.normalization == NORMALIZATION and info.min_size == 75


def test_wrong_weights_files_are_refused(tmp_path: Path) -> None:
    # The same strict loader as FaceNet's, on a small model so the files stay small.
    torch.manual_seed(0)
    state = create_model("tronnet", num_classes=9, image_size=32).state_dict()
    model = create_model("tronnet", num_classes=4, image_size=32)

    def load(name: str, values: dict[str, torch.Tensor]) -> None:
        save_file(values, str(tmp_path / name))
        load_backbone_weights(model, tmp_path / name, drop_prefixes=("logits.",))

    load("ok.safetensors", state)  # the head (9 classes) is another size: ignored, kept fresh
    assert torch.equal(model.features[0].weight, state["features.0.weight"])
    assert model.classifier[2].out_features == 4
    with pytest.raises(ValueError, match=r"features\.0\.weight"):
        load("missing.safetensors", {k: v for k, v in state.items() if k != "features.0.weight"})
    with pytest.raises(ValueError, match="mystery"):
        load("extra.safetensors", {**state, "mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"1 key\(s\) of another shape, e.g. features\.0\.weight"):
        load("shape.safetensors", {**state, "features.0.weight": torch.zeros(1, 3, 3, 3)})
    load("theirs.safetensors", {**state, "logits.weight": torch.zeros(5, 2)})  # dropped
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(model, tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="at least 75 px"):
        create_model("facenet", 3, 64)


def test_embeddings_of_one_person_are_closer(facenet: FaceNet, lfw_archive: Path) -> None:
    faces = _lfw_faces(lfw_archive, SAME + OTHERS)
    with torch.no_grad():
        embeddings = facenet.embed(faces)
        # What a hook on the final Linear sees is the same embedding, scaled.
        seen: dict[str, torch.Tensor] = {}
        hook = facenet.classifier.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
        logits = facenet(faces[:1])
        hook.remove()
    assert logits.shape == (1, 7)
    assert torch.allclose(seen["x"], embeddings[:1] * facenet.embedding_scale, atol=1e-4)
    assert embeddings.shape == (5, 512)
    distances = torch.cdist(embeddings, embeddings)
    same = distances[0, 1]
    different = distances[:2, 2:]  # each photo of the person against each other person
    assert same < different.min(), (float(same), different)


def test_frozen_backbone_trains_only_the_head_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = create_model("tronnet", num_classes=4, image_size=32)
    assert head_name(model) == "classifier.2"
    backbone, head = split_parameters(model)
    assert len(head) == 2 and len(backbone) + 2 == len(list(model.parameters()))
    set_backbone_frozen(model, True)
    model.train()  # what the engine calls each epoch
    assert not any(m.training for m in model.modules())  # BatchNorm statistics frozen
    before = [p.detach().clone() for p in backbone]
    optimizer = torch.optim.Adam(param_groups(model, 1e-2, 0.1))
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in backbone) and all(p.grad is not None for p in head)
    assert all(torch.equal(a, b) for a, b in zip(before, backbone, strict=True))
    set_backbone_frozen(model, False)
    model.train()
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    groups = param_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])


def test_freeze_schedules() -> None:
    probe = TrainConfig(freeze="backbone", epochs=6)
    assert all(frozen_at(probe, e) for e in range(1, 7))
    staged = TrainConfig(freeze="backbone-then-unfreeze", epochs=6)  # default: unfreeze at 3
    assert [frozen_at(staged, e) for e in range(1, 7)] == [True, True, False, False, False, False]
    staged = TrainConfig(freeze="backbone-then-unfreeze", epochs=6, unfreeze_epoch=5)
    assert [frozen_at(staged, e) for e in range(1, 7)] == [True] * 4 + [False] * 2
    assert not any(frozen_at(TrainConfig(epochs=6), e) for e in range(1, 7))


def test_loaded_facenet_keeps_batch_norm_statistics_while_fine_tuning(facenet: FaceNet) -> None:
    facenet.train()
    try:
        norms = [m for m in facenet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and not any(m.training for m in norms)
        assert facenet.dropout.training  # the rest is in train mode
    finally:
        facenet.eval()
