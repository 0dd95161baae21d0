"""On a CUDA device: the probe, training in bf16 and resident images (``-m cuda``; skipped with
the reason on a machine without one; ``benchmarks/gpu_check.sh`` runs them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.config_rules import resolve
from facecls.data.batches import resident
from facecls.data.dataset import load_dataset
from facecls.models.embedding import final_linear
from facecls.training.fold import train_model
from facecls.training.fold_setup import ModelSource
from facecls.training.run import fit

pytestmark = pytest.mark.cuda


def _config(source: Path, tmp_path: Path, precision: str, **train) -> RunConfig:
    return resolve(
        RunConfig(
            name="cuda", runs_dir=str(tmp_path / "runs"),
            data=DataConfig(source=str(source), image_size=32),
            augment=AugmentConfig(enabled=False),
            train=TrainConfig(model="tronnet", epochs=3, batch_size=16, precision=precision,
                              device="cuda", **train),
        )
    )  # fmt: skip


def test_cached_probe_on_cuda_trains_the_same_head(synthetic_folder: Path, tmp_path: Path) -> None:
    config = _config(synthetic_folder, tmp_path, "fp32", freeze="backbone")
    device = torch.device("cuda")
    dataset = load_dataset(config.data, log=lambda _m: None)
    images = resident(dataset.images, device)
    assert images.device.type == "cuda"  # a small dataset is held on the device
    order = np.random.default_rng(0).permutation(len(dataset))
    heads = []
    for cached in (True, False):
        trained = train_model(
            dataset, images, dataset.targets.to(device), order[20:], order[:20], config, device,
            ModelSource(config, dataset.num_classes, device), log=lambda _m: None,
            embed_frozen=cached,
        )  # fmt: skip
        heads.append(final_linear(trained.model).weight.detach().cpu())
    torch.testing.assert_close(heads[0], heads[1], rtol=1e-3, atol=1e-4)


def test_train_in_bf16_on_cuda(synthetic_folder: Path, tmp_path: Path) -> None:
    config = _config(synthetic_folder, tmp_path, "bf16")
    result = fit(config, log=lambda _m: None)
    assert result.metrics["environment"]["processes"] == 1
    assert result.metrics["config"]["train"]["precision"] == "bf16"
    assert np.isfinite(result.metrics["test"]["summary"]["loss"])
    assert (result.run_dir / "model" / "model.safetensors").is_file()
