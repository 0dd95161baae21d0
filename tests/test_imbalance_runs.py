"""Runs with long-tail remedies on tiny data: groups in the metrics, train counts in the bundle,
post-hoc logit adjustment at evaluation, and the centre crop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

import facecls
from facecls.cli import main
from facecls.data.cache import cache_key
from facecls.data.images import load_rgb
from facecls.data.sources import ImageRef


def test_sampler_run_reports_groups_and_posthoc_tau_zero_changes_nothing(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    code = main([
        "--quiet", "train", "--data", str(synthetic_folder), "--model", "baseline",
        "--image-size", "32", "--epochs", "2", "--batch-size", "16", "--crop", "0.8",
        "--sampler", "class-balanced", "--runs-dir", str(tmp_path), "--name", "s",
    ])  # fmt: skip
    assert code == 0
    run = tmp_path / "s"
    metrics = json.loads((run / "metrics.json").read_text())
    groups = metrics["test"]["groups"]
    assert groups["thresholds"]["few"] == "< 8"
    counts = json.loads((run / "model" / "model.json").read_text())["train_counts"]
    assert sum(groups["identities"].values()) == len(counts) == 6
    assert sum(groups["test_images"].values()) == metrics["test"]["summary"]["images"]
    assert set(groups["recall"]) <= {"head", "medium", "few"}
    assert json.loads((run / "model" / "model.json").read_text())["crop"] == 0.8

    plain = facecls.evaluate(run, log=lambda _m: None)
    zero = facecls.evaluate(run, log=lambda _m: None, logit_adjust=0.0)
    assert zero["summary"] == plain["summary"] == metrics["test"]["summary"]
    adjusted = facecls.evaluate(run, log=lambda _m: None, logit_adjust=1.0)
    assert adjusted["logit_adjust_tau"] == 1.0 and "groups" in adjusted


def test_crop_is_part_of_the_cache_key(tmp_path: Path) -> None:
    path = tmp_path / "a" / "a_0001.png"
    path.parent.mkdir()
    pixels = np.zeros((100, 100, 3), dtype=np.uint8)
    pixels[25:75, 25:75] = (200, 10, 10)  # a red centre square of half the side
    Image.fromarray(pixels).save(path)
    refs = [ImageRef(path=path, relpath="a/a_0001.png", identity="a")]
    assert cache_key(refs, 32) == cache_key(refs, 32, 1.0) != cache_key(refs, 32, 0.5)
    centre = load_rgb(path, 10, crop=0.5)
    assert centre.shape == (10, 10, 3) and (centre[..., 0] > 150).all()
    whole = load_rgb(path, 10)
    assert whole[0, 0].tolist() == [0, 0, 0] and whole[5, 5, 0] > 150
