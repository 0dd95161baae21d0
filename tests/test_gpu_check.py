"""The CPU-side parts of the GPU check: its dry run, the device-data packer and its table."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]


def _benchmark(name: str):
    """A module of ``benchmarks/`` (a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_states_the_plan_and_runs_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path / "dd")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path / "out")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "pytest -q -m cuda" in text
    assert "throughput.py --device cuda --size 224 --batch 256" in text
    assert f"missing: {tmp_path / 'dd'}/facenet.safetensors" in text
    for run in ("resnet18-scratch", "mobilenet_v2-imagenet", "facenet-probe", "facenet-finetune"):
        assert f"plan: {run}:" in text
    assert text.rstrip().endswith("dry run: nothing was run")
    assert not (tmp_path / "out").exists()


def _fake_shared(root: Path) -> Path:
    """A tiny stand-in for ../shared: an LFW-like archive, a split file, two weight files."""
    (root / "datasets").mkdir(parents=True)
    (root / "weights").mkdir()
    rows = []
    with tarfile.open(root / "datasets" / "lfw-deepfunneled.tgz", "w:gz") as tar:
        for person in ("Ann_A", "Bob_B", "Cid_C"):
            for i in (1, 2):
                buffer = io.BytesIO()
                pixels = np.full((60, 60, 3), 40 * i, dtype=np.uint8)
                Image.fromarray(pixels).save(buffer, "JPEG")
                name = f"lfw-deepfunneled/{person}/{person}_{i:04d}.jpg"
                info = tarfile.TarInfo(name)
                info.size = buffer.tell()
                buffer.seek(0)
                tar.addfile(info, buffer)
                split = "" if person == "Cid_C" else ("test" if i == 1 else "train")
                rows.append({"path": name, "identity": person, "lfw8": split, "lfw20": ""})
    with (root / "datasets" / "lfw-benchmark-splits.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "identity", "lfw8", "lfw20"])
        writer.writeheader()
        writer.writerows(rows)
    save_file(
        {"conv.weight": torch.randn(4, 3), "logits.weight": torch.randn(10, 4)},
        str(root / "weights" / "facenet-inception-resnet-v1-casia-webface.safetensors"),
    )
    torch.save(
        {"features.0.weight": torch.randn(4, 3), "classifier.1.weight": torch.randn(9, 4),
         "features.1.num_batches_tracked": torch.tensor(3)},
        root / "weights" / "mobilenet_v2-b0353104.pth",
    )  # fmt: skip
    return root


def test_pack_writes_the_split_images_and_half_weights(tmp_path: Path) -> None:
    pack = _benchmark("pack_device_data")
    out = tmp_path / "device_data"
    manifest = pack.pack(_fake_shared(tmp_path / "shared"), out, size=32, quality=80)
    images = sorted(p.relative_to(out / "lfw8").as_posix() for p in (out / "lfw8").rglob("*.*"))
    assert images == [f"{p}/{p}_000{i}.webp" for p in ("Ann_A", "Bob_B") for i in (1, 2)]
    assert Image.open(out / "lfw8" / images[0]).size == (32, 32)
    with (out / "lfw-benchmark-splits.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].split("/")[-1] for r in rows] == [i.split("/")[-1] for i in images]
    facenet = load_file(str(out / "facenet.safetensors"))
    assert set(facenet) == {"conv.weight"} and facenet["conv.weight"].dtype == torch.float16
    mobilenet = load_file(str(out / "mobilenet_v2.safetensors"))
    assert "classifier.1.weight" not in mobilenet
    assert mobilenet["features.1.num_batches_tracked"].dtype == torch.int64  # not halved
    assert manifest["images"] == 4 and json.loads((out / "manifest.json").read_text()) == manifest


def test_table_reads_each_step_or_says_it_did_not_finish(tmp_path: Path) -> None:
    table = _benchmark("gpu_check_table")
    assert [r[1] for r in table.summary_rows(tmp_path)] == ["did not finish"] * 3
    (tmp_path / "cuda_tests.txt").write_text("..\n2 passed in 3.10s\n")
    (tmp_path / "throughput.txt").write_text(
        "resnet18: ceiling 4000, facecls 3600, usual 500 img/s\n"
    )
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps([{
        "run": "resnet18-scratch", "epochs": 30, "target": 0.86, "test_balanced_accuracy": 0.9,
        "train_seconds": 40.0, "seconds_to_target": 21.5, "wall_seconds": 55.0, "goal_met": True,
    }]))  # fmt: skip
    rows = {check.strip(): result for check, result, _goal in table.summary_rows(tmp_path)}
    assert rows["tests marked cuda"] == "2 passed"
    assert rows["b/a"] == "0.90" and rows["b/c"] == "7.20"
    assert "val target at 21.5 s" in rows["LFW-8 112 px resnet18-scratch"]
