"""Embed once: a frozen backbone's embeddings are computed once, cached, and give the same head."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from facecls.bundle import read_centroids
from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.config_rules import resolve
from facecls.data.dataset import load_dataset
from facecls.data.sources import default_cache_dir
from facecls.inference.calibration import calibrate_run
from facecls.models.embedding import final_linear
from facecls.runtime import runtime_for
from facecls.training.evaluate import evaluate_run
from facecls.training.fold import train_model
from facecls.training.fold_setup import ModelSource, input_normalization
from facecls.training.probe import embed_once, embedding_key
from facecls.training.run import cross_validate


def _config(source: Path, tmp_path: Path, **train) -> RunConfig:
    return resolve(
        RunConfig(
            name="probe", runs_dir=str(tmp_path / "runs"),
            data=DataConfig(source=str(source), image_size=32),
            augment=AugmentConfig(enabled=False),
            train=TrainConfig(model="tronnet", freeze="backbone", epochs=3, batch_size=16,
                              precision="fp32", device="cpu", **train),
        )
    )  # fmt: skip


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_cached_probe_trains_the_same_head(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """The head trained on cached embeddings (computed by PyTorch, or by ONNX Runtime as long
    passes are on the CPU) equals the head trained through the frozen network."""
    if engine == "onnxruntime":
        monkeypatch.setattr("facecls.models.cpu_pass.MIN_IMAGES", 1)
    shutil.rmtree(default_cache_dir() / "embedded", ignore_errors=True)  # computed here
    config = _config(synthetic_folder, tmp_path)
    dataset = load_dataset(config.data, log=lambda _m: None)
    order = np.random.default_rng(0).permutation(len(dataset))
    val, train = order[:20], order[20:]
    heads, vals, logs = [], [], []
    for cached in (True, False):
        trained = train_model(
            dataset, dataset.images, dataset.targets, train, val, config, torch.device("cpu"),
            ModelSource(config, dataset.num_classes, torch.device("cpu")), log=logs.append,
            embed_frozen=cached,
        )  # fmt: skip
        assert (trained.head_only is not None) == cached
        heads.append({k: v.clone() for k, v in final_linear(trained.model).state_dict().items()})
        vals.append(trained.val.logits)
    for key in heads[0]:
        torch.testing.assert_close(heads[0][key], heads[1][key], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vals[0], vals[1], rtol=1e-4, atol=1e-4)
    on_onnx = any("runs on ONNX Runtime" in line for line in logs)
    assert on_onnx == (engine == "onnxruntime")


def _key(config: RunConfig, weights: Path | None = None) -> str:
    """The embedding key a run with ``config`` would use."""
    if weights is not None:
        config = resolve(RunConfig(data=config.data, augment=config.augment,
                                   train=TrainConfig(**{**config.train.__dict__,
                                                        "weights": str(weights)})))  # fmt: skip
    dataset = load_dataset(config.data, log=lambda _m: None)
    model, _ = ModelSource(config, dataset.num_classes, torch.device("cpu")).get(0)
    mean, std = input_normalization(dataset, np.arange(len(dataset)), config.train.model)
    runtime = runtime_for(config.train, torch.device("cpu"))
    return embedding_key(dataset, model, mean, std, runtime, 2)


def test_cache_key_follows_weights_photos_size_and_crop(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "faces"
    shutil.copytree(synthetic_folder, folder)
    config = _config(folder, tmp_path)
    weights = tmp_path / "backbone.safetensors"
    model, _ = ModelSource(config, 6, torch.device("cpu")).get(0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    base = _key(config, weights)
    assert _key(config, weights) == base  # stable

    state = model.state_dict()
    first = next(k for k in state if not k.startswith("classifier"))
    state[first] = state[first] + 0.5
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    assert _key(config, weights) != base  # another weights file
    assert _key(config) == base  # the seeded initialisation: the first file held the same

    resized = resolve(RunConfig(data=DataConfig(source=str(folder), image_size=40),
                                augment=config.augment, train=config.train))  # fmt: skip
    cropped = resolve(RunConfig(data=DataConfig(source=str(folder), image_size=32, crop=0.8),
                                augment=config.augment, train=config.train))  # fmt: skip
    assert _key(resized) != _key(config)
    assert _key(cropped) != _key(config)
    before = _key(config)
    photo = sorted(folder.rglob("*.png"))[0]
    photo.write_bytes(photo.read_bytes())  # a photo replaced (new mtime)
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    assert _key(config) != before


def test_embed_once_reads_the_cache(synthetic_folder: Path, tmp_path: Path) -> None:
    config = _config(synthetic_folder, tmp_path)
    dataset = load_dataset(config.data, log=lambda _m: None)
    model, _ = ModelSource(config, dataset.num_classes, torch.device("cpu")).get(0)
    runtime = runtime_for(config.train, torch.device("cpu"))
    mean, std = input_normalization(dataset, np.arange(len(dataset)), "tronnet")
    logs: list[str] = []
    first = embed_once(dataset, model, dataset.images, mean, std, runtime, 2, tmp_path, logs.append)
    again = embed_once(dataset, model, dataset.images, mean, std, runtime, 2, tmp_path, logs.append)
    assert f"backbone ran on {2 * len(dataset)} images" in logs[-2]
    assert "backbone ran on 0 images" in logs[-1]
    torch.testing.assert_close(first, again)
    assert first.shape[:2] == (len(dataset), 2)


def test_cv_runs_the_backbone_once_per_image(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(synthetic_folder, tmp_path, folds=3)
    model = ModelSource(config, 6, torch.device("cpu")).get(0)[1]
    weights = tmp_path / "backbone.safetensors"  # a pretrained backbone, the same in every fold
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    train = TrainConfig(**{**config.train.__dict__, "weights": str(weights)})
    config = resolve(RunConfig(name="cv", runs_dir=config.runs_dir, data=config.data,
                               augment=AugmentConfig(), train=train))  # fmt: skip
    # The report's Grad-CAM figures run the model on a few images of their own.
    monkeypatch.setattr("facecls.training.finish.write_report_safely", lambda *_a, **_k: None)
    # A fixed input normalisation, as FaceNet's (else each fold normalises by its own
    # training part, and its embeddings differ).
    monkeypatch.setattr(
        "facecls.training.fold_setup.input_normalization", lambda *_a: ([127.5] * 3, [128.0] * 3)
    )
    ran = 0

    def count(module: nn.Module, args: tuple) -> None:
        nonlocal ran
        # (a run's start checks the input size on the meta device: no image is computed there)
        if type(module) is type(model) and args[0].device.type != "meta":
            ran += int(args[0].shape[0])

    shutil.rmtree(default_cache_dir() / "embedded", ignore_errors=True)
    hook = nn.modules.module.register_module_forward_pre_hook(count)
    logs: list[str] = []
    try:
        result = cross_validate(config, log=logs.append)
        first = ran
        cross_validate(config, log=logs.append)
    finally:
        hook.remove()
    images = result.metrics["test"]["summary"]["images"] + sum(
        f["images"] for f in result.metrics["cv"]["folds"]
    )
    views = 2 if config.train.flip_tta or config.augment.hflip else 1
    # the calibration views: validation faces rendered as photos show them, new images scored once
    rendered = [re.search(r"Calibration views: (\d+) validation faces", line) for line in logs]
    drawn = sum(int(m.group(1)) for m in rendered if m) // 2  # each of the two runs says it
    # every image (and its mirror) once, for three folds, the test part and the calibration
    assert first == views * (images + drawn)
    # the second run reads the cache; only the views are drawn and scored again
    assert ran == first + views * drawn
    assert sum(f"backbone ran on {views * images} images" in line for line in logs) == 1
    assert (result.run_dir / "model").is_dir() and (result.run_dir / "history.csv").is_file()
    # The saved whole network, run on the images, gives the test figures of the embeddings.
    again = evaluate_run(result.run_dir, log=lambda _m: None)["summary"]
    tested = result.metrics["test"]["summary"]
    assert again["balanced_accuracy"] == pytest.approx(tested["balanced_accuracy"], abs=1e-9)
    assert again["loss"] == pytest.approx(tested["loss"], rel=1e-5)
    # The probe calibrated every score from its cached embeddings, as facecls calibrate would
    # from the photos (centroids for enroll, margin thresholds, per-k tables).
    folder = result.run_dir / "model"
    cached = json.loads((folder / "model.json").read_text())["openset"]
    centroids = read_centroids(folder)["trained"]
    assert "margin" in cached["thresholds"] and "deferred" not in cached
    assert set(cached["enrolled_thresholds"]) == {"centroid", "margin"}
    calibrate_run(result.run_dir, log=lambda _m: None)
    redone = json.loads((folder / "model.json").read_text())["openset"]
    for method, value in redone["thresholds"].items():
        assert cached["thresholds"][method] == pytest.approx(value, abs=1e-4), method
    np.testing.assert_allclose(centroids, read_centroids(folder)["trained"], atol=1e-5)


def test_the_cached_flip_follows_the_coin_augment_draws() -> None:
    from facecls.data.augment import augment, normalize
    from facecls.training.probe import HeadOnly

    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    plain = normalize(images, [0.5] * 3, [0.25] * 3)
    flips_only = AugmentConfig(rotation=0.0, scale=0.0, translate=0.0, hflip=True)
    warped = augment(images, [0.5] * 3, [0.25] * 3, flips_only, torch.Generator().manual_seed(7))
    mirrored = [
        bool(torch.allclose(w, p.flip(2), atol=1e-4)) for w, p in zip(warped, plain, strict=True)
    ]
    assert 0 < sum(mirrored) < 16  # some of each
    rows = torch.stack([torch.zeros(16, 4), torch.ones(16, 4)], 1)  # view 1 marks the mirror
    probe = HeadOnly(nn.Linear(4, 2), rows, flips_only, flip_tta=False)
    chosen = probe.train_inputs(rows, torch.Generator().manual_seed(7), (0, 16))
    assert chosen[:, 0].bool().tolist() == mirrored


@pytest.mark.parametrize("recipe", ["fast", "report"])
def test_the_report_recipe_rotates_what_its_frozen_backbone_sees(
    synthetic_folder: Path, tmp_path: Path, recipe: str
) -> None:
    """Issue 29.17: the seed report rotated the images its frozen ResNet saw. Under ``--recipe
    report`` the frozen backbone runs on the rotated batch in every step (no embeddings computed
    once); the fast recipe's probe keeps its cache (the mirror image only)."""
    config = resolve(
        RunConfig(
            name="rotated", runs_dir=str(tmp_path / "runs"),
            data=DataConfig(source=str(synthetic_folder), image_size=32),
            augment=AugmentConfig(rotation=10.0),
            train=TrainConfig(model="tronnet", freeze="backbone", epochs=1, batch_size=16,
                              precision="fp32", device="cpu", recipe=recipe),
        )
    )  # fmt: skip
    dataset = load_dataset(config.data, log=lambda _m: None)
    order = np.random.default_rng(0).permutation(len(dataset))
    trained = train_model(
        dataset, dataset.images, dataset.targets, order[20:], order[:20], config,
        torch.device("cpu"), ModelSource(config, dataset.num_classes, torch.device("cpu")),
        log=lambda _m: None,
    )  # fmt: skip
    assert (trained.head_only is None) == (recipe == "report")
