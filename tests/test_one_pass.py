"""One validation pass per epoch (issue 29.15): the kept epoch's pass gives the fold's logits,
loss and the embeddings calibration reads; no second pass after training, nor after a resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.config_rules import resolve
from facecls.data.dataset import load_dataset
from facecls.models.embedding import logits_and_features
from facecls.training import fold as fold_module
from facecls.training.checkpoint import checkpoint_path
from facecls.training.engine import normalize
from facecls.training.fold import train_model
from facecls.training.fold_setup import ModelSource


@pytest.mark.parametrize("freeze", ["none", "backbone"])
def test_the_kept_epochs_pass_is_the_only_one(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, freeze: str
) -> None:
    config = resolve(
        RunConfig(
            name="one-pass", runs_dir=str(tmp_path / "runs"),
            data=DataConfig(source=str(synthetic_folder), image_size=32),
            augment=AugmentConfig(enabled=False),
            train=TrainConfig(model="tronnet", freeze=freeze, epochs=3, batch_size=16,
                              precision="fp32", device="cpu", flip_tta=True),
        )
    )  # fmt: skip
    dataset = load_dataset(config.data, log=lambda _m: None)
    order = np.random.default_rng(0).permutation(len(dataset))
    val_idx, train_idx = np.sort(order[:20]), order[20:]
    passes: list[bool] = []
    real = fold_module.evaluate

    def counted(*args, **kwargs):  # the real pass, counted
        passes.append(bool(kwargs.get("features")))
        return real(*args, **kwargs)

    monkeypatch.setattr(fold_module, "evaluate", counted)
    device = torch.device("cpu")
    checkpoint = checkpoint_path(tmp_path / "run", 0)

    def train():
        return train_model(
            dataset, dataset.images, dataset.targets, train_idx, val_idx, config, device,
            ModelSource(config, dataset.num_classes, device), log=lambda _m: None,
            checkpoint=checkpoint,
        )  # fmt: skip

    trained = train()
    assert passes == [True] * 3  # one pass an epoch, each keeping its embeddings
    kept = next(row for row in trained.history if row["epoch"] == trained.best_epoch)
    assert trained.val.loss == pytest.approx(kept["val_loss"], abs=1e-6)
    assert trained.val.features is not None
    np.testing.assert_array_equal(trained.val.targets, dataset.targets.numpy()[val_idx])
    # Oracle: the kept model's own forward pass over the validation images (flip averaged).
    model = trained.model.eval()
    inputs = normalize(dataset.images[torch.from_numpy(val_idx)], trained.mean, trained.std)
    with torch.no_grad():
        views = [logits_and_features(model, v) for v in (inputs, inputs.flip(3))]
    logits = (views[0][0] + views[1][0]) / 2
    features = (views[0][1] + views[1][1]) / 2
    np.testing.assert_allclose(trained.val.logits, logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(trained.val.features, features.numpy(), rtol=1e-4, atol=1e-4)

    passes.clear()
    again = train()  # the fold is complete in its checkpoint: nothing is evaluated again
    assert passes == []
    np.testing.assert_array_equal(again.val.logits, trained.val.logits)
    np.testing.assert_array_equal(again.val.features, trained.val.features)
    np.testing.assert_array_equal(again.val.targets, trained.val.targets)
    assert again.val.loss == trained.val.loss
