"""Caches are never trusted unchecked (issue 23, items 3 and 4): a damaged entry is logged,
discarded and rebuilt; a photo whose bytes changed is embedded again even when its size and
modification time were kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

import facecls
from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.config_rules import resolve
from facecls.data.cache import decode_cached
from facecls.data.dataset import load_dataset
from facecls.data.sources import scan_folder
from facecls.runtime import runtime_for
from facecls.training.fold_setup import ModelSource, input_normalization
from facecls.training.probe import embed_once

# --- item 3: the frozen backbone's embedding cache, and the decode cache ----------------------


@pytest.fixture(scope="module")
def probe_setup(synthetic_folder: Path) -> tuple:
    config = resolve(
        RunConfig(
            data=DataConfig(source=str(synthetic_folder), image_size=32),
            augment=AugmentConfig(enabled=False),
            train=TrainConfig(model="tronnet", freeze="backbone", epochs=1, batch_size=16,
                              precision="fp32", device="cpu"),
        )
    )  # fmt: skip
    dataset = load_dataset(config.data, log=lambda _m: None)
    model, _ = ModelSource(config, dataset.num_classes, torch.device("cpu")).get(0)
    runtime = runtime_for(config.train, torch.device("cpu"))
    mean, std = input_normalization(dataset, np.arange(len(dataset)), "tronnet")
    return dataset, model, mean, std, runtime


def _embed(setup: tuple, cache: Path, log: list[str]) -> torch.Tensor:
    dataset, model, mean, std, runtime = setup
    return embed_once(dataset, model, dataset.images, mean, std, runtime, 2, cache, log.append)


def _damage(entry: Path, how: str) -> None:
    array = np.load(entry)
    if how == "random":  # the right shape, other values: the checksum no longer matches
        entry.write_bytes(b"")
        np.save(entry, np.random.default_rng(0).normal(size=array.shape).astype(np.float32))
    elif how == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif how == "nan":  # NaN with a checksum that matches it: only the finiteness check sees it
        array[3, 0, 0] = np.nan
        np.save(entry, array)
        meta = json.loads(entry.with_suffix(".json").read_text())
        import zlib

        meta["crc32"] = zlib.crc32(array.reshape(-1).view(np.uint8))
        entry.with_suffix(".json").write_text(json.dumps(meta))
    elif how == "short":
        np.save(entry, array[:-1])
    elif how == "pickled":
        np.save(entry, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif how == "no checksum":  # an entry of an older version, or its .json lost
        entry.with_suffix(".json").unlink()
        np.save(entry, np.zeros_like(array))


@pytest.mark.parametrize("how", ["random", "truncated", "nan", "short", "pickled", "no checksum"])
def test_a_damaged_embedding_entry_is_discarded_and_rebuilt(
    how: str, probe_setup: tuple, tmp_path: Path
) -> None:
    said: list[str] = []
    fresh = _embed(probe_setup, tmp_path, said)
    (entry,) = (tmp_path / "embedded").glob("*.npy")
    _damage(entry, how)
    said.clear()
    again = _embed(probe_setup, tmp_path, said)
    assert any(f"Embedding cache entry {entry} is damaged" in m for m in said), said
    assert any("backbone ran on" in m and "ran on 0" not in m for m in said)
    torch.testing.assert_close(again, fresh)
    said.clear()
    _embed(probe_setup, tmp_path, said)
    assert any("backbone ran on 0 images" in m for m in said)  # the rebuilt entry is whole


def test_a_decode_entry_without_its_checksum_is_rebuilt(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    refs = scan_folder(synthetic_folder).refs
    images, *_ = decode_cached(refs, 32, tmp_path, log=lambda _m: None)
    (entry,) = (tmp_path / "decoded").glob("*.npy")
    meta = json.loads(entry.with_suffix(".json").read_text())
    del meta["crc32"]
    entry.with_suffix(".json").write_text(json.dumps(meta))
    np.save(entry, np.zeros_like(images))  # same shape, other pixels
    said: list[str] = []
    again, *_ = decode_cached(refs, 32, tmp_path, log=said.append)
    assert any("damaged; discarding it" in m for m in said)
    assert np.array_equal(again, images)


# --- item 4: the gallery cache -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(untrained_bundle: Path) -> facecls.FaceModel:
    return facecls.load_model(untrained_bundle, device="cpu")


def _bmp(path: Path, seed: int) -> Path:
    """A 40 px BMP: every one has the same size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="BMP")
    return path


def test_a_photo_replaced_with_its_size_and_mtime_kept_is_embedded_again(
    model: facecls.FaceModel, tmp_path: Path
) -> None:
    gallery = tmp_path / "gallery"
    photos = [_bmp(gallery / f"p{i}.bmp", i) for i in range(3)]
    facecls.search(model, photos[0], gallery, top_k=1, log=lambda _m: None)
    target, stat = photos[1], photos[1].stat()
    _bmp(tmp_path / "new.bmp", 99).replace(target)  # other bytes, same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old modification time
    assert target.stat().st_size == stat.st_size
    result = facecls.search(model, target, gallery, top_k=1, log=lambda _m: None)
    (match,) = result.matches
    assert match.path == str(target) and match.similarity == pytest.approx(1.0, abs=1e-5)
    gallery_object = facecls.inference.search.Gallery(model, gallery).refresh()
    row = [f.path for f in gallery_object.faces].index(str(target))
    np.testing.assert_allclose(gallery_object.vectors[row], model.embed([target])[0], atol=1e-5)


def test_nan_embeddings_in_the_gallery_cache_are_redone(
    model: facecls.FaceModel, tmp_path: Path
) -> None:
    gallery = tmp_path / "gallery"
    photos = [_bmp(gallery / f"p{i}.bmp", i) for i in range(3)]
    facecls.search(model, photos[0], gallery, top_k=3, log=lambda _m: None)
    (cache,) = (Path(os.environ["FACECLS_CACHE"]) / "gallery").glob(
        f"{facecls.inference.search.Gallery(model, gallery).cache.stem}.safetensors"
    )
    from safetensors import safe_open

    with safe_open(str(cache), framework="np") as f:
        meta = f.metadata()
    tensors = load_file(str(cache))
    tensors["embeddings"][:] = np.nan
    save_file(tensors, str(cache), metadata=meta)
    said: list[str] = []
    result = facecls.search(model, photos[0], gallery, top_k=3, log=said.append)
    similarities = [m.similarity for m in result.matches]
    assert len(similarities) == 3 and np.isfinite(similarities).all()
    assert result.matches[0].path == str(photos[0])
    assert any("3 damaged embedding(s) discarded" in m for m in said), said


# --- item 5: --resume checks what the photos hold, not only their names ----------------------


def test_resume_refuses_photos_whose_content_changed_under_the_same_names(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import shutil

    from facecls.cli import main
    from facecls.training.interrupt import TEST_SIGNAL_ENV

    data = tmp_path / "faces"
    shutil.copytree(synthetic_folder, data)
    monkeypatch.setenv(TEST_SIGNAL_ENV, "0:1:1:TERM")  # stopped after epoch 1, step 1
    args = ["--quiet", "train", "--data", str(data), "--image-size", "32", "--epochs", "2",
            "--batch-size", "8", "--runs-dir", str(tmp_path / "runs"), "--name", "run",
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 143
    monkeypatch.delenv(TEST_SIGNAL_ENV)
    first, second = sorted(data.iterdir())[:2]
    photo = sorted(first.glob("*.png"))[0]
    shutil.copy(sorted(second.glob("*.png"))[0], photo)  # another person's face, same name
    capsys.readouterr()
    run = tmp_path / "runs" / "run"
    assert main(["--quiet", "train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"--resume {run}: the photos changed since the run started" in err
    assert err.count("\n") == 1 and not (run / "metrics.json").exists()
