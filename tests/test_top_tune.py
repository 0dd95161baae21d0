"""``--freeze top``: the probe, then FaceNet's last stage tuned on its cached inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.config_rules import ConfigError, resolve
from facecls.data.augment import normalize
from facecls.data.dataset import load_dataset
from facecls.models.embedding import forward_tta
from facecls.training.fold import train_model
from facecls.training.fold_setup import ModelSource
from facecls.training.top_tune import LOWER, TOP


def _config(source: Path, tmp_path: Path, **train: object) -> RunConfig:
    settings = {"model": "facenet", "pretrained": False, "freeze": "top", "epochs": 2,
                "batch_size": 16, "precision": "fp32", "device": "cpu", **train}  # fmt: skip
    return resolve(
        RunConfig(
            name="top", runs_dir=str(tmp_path / "runs"),
            data=DataConfig(source=str(source), image_size=96),
            augment=AugmentConfig(enabled=True, rotation=0.0, scale=0.0, translate=0.0),
            train=TrainConfig(**settings),  # type: ignore[arg-type]
        )
    )  # fmt: skip


def test_top_stage_tunes_and_its_cached_outputs_are_the_networks(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    """Only the last stage and the head change; the lower stages stay as they were; the cached
    path calibration reads gives what the whole tuned network computes from the images."""
    config = _config(synthetic_folder, tmp_path)
    dataset = load_dataset(config.data, log=lambda _m: None)
    order = np.random.default_rng(0).permutation(len(dataset))
    val, train = order[:16], order[16:]
    source = ModelSource(config, dataset.num_classes, torch.device("cpu"))
    logs: list[str] = []
    trained = train_model(
        dataset, dataset.images, dataset.targets, train, val, config, torch.device("cpu"),
        source, log=logs.append,
    )  # fmt: skip
    assert any(line.startswith("top stage epoch 3/3") for line in logs)
    assert trained.top_only is not None and trained.head_only is None
    # what the probe phase ended with: the same run without the top stage
    probe_config = _config(synthetic_folder, tmp_path / "probe", freeze="backbone")
    probe = train_model(
        dataset, dataset.images, dataset.targets, train, val, probe_config,
        torch.device("cpu"), ModelSource(probe_config, dataset.num_classes, torch.device("cpu")),
        log=lambda _m: None,
    ).model.state_dict()  # fmt: skip
    tuned = trained.model.state_dict()
    for name, value in tuned.items():
        stage = name.split(".")[0]
        if stage in LOWER:
            assert torch.equal(value, probe[name]), name
    changed = [n for n in tuned if n.split(".")[0] in TOP and not torch.equal(tuned[n], probe[n])]
    assert any(n.startswith("repeat_3.") for n in changed)
    assert any(n.startswith("last_linear.") for n in changed)
    # the validation outputs (and calibration's training-part ones) equal the network's
    model = trained.model.eval()
    x = normalize(dataset.images[torch.from_numpy(val)], trained.mean, trained.std)
    with torch.no_grad():
        logits, features = forward_tta(model, x, flip_tta=True)
    np.testing.assert_allclose(trained.val.logits, logits.numpy(), rtol=0.02, atol=0.02)
    np.testing.assert_allclose(trained.val.features, features.numpy(), rtol=0.02, atol=0.02)
    assert trained.val.loss == pytest.approx(trained.val.loss)  # finite
    assert np.isfinite(trained.val.loss)


def test_top_needs_facenet(synthetic_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="freeze top .* needs --model facenet"):
        _config(synthetic_folder, tmp_path, model="tronnet")


def test_a_tuned_run_is_calibrated_and_decides_with_its_fused_weight(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    """The whole run: the bundle records the lighter fused weight it was calibrated with, and
    the loaded model decides with it."""
    from facecls import openset
    from facecls.inference.model import load_model
    from facecls.training.run import fit

    result = fit(_config(synthetic_folder, tmp_path, epochs=1), log=lambda _m: None)
    model = load_model(result.run_dir, device="cpu")
    assert model.meta["openset"]["fused_weight"] == openset.TOP_FUSED_WEIGHT
    assert model.fused_weight == openset.TOP_FUSED_WEIGHT
    images = model.to_batch([str(p) for p in sorted(synthetic_folder.glob("*/*.png"))[:6]])
    logits, features = model.outputs(images)
    answers = model.decide(logits, features, top_k=1)
    expected = openset.scores(
        model.method, logits, features, model.trained_centroids, fused_weight=model.fused_weight
    )
    assert [a.score for a in answers] == pytest.approx(expected.tolist(), abs=1e-5)
