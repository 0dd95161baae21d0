"""Several processes: sharding arithmetic, exact DDP equivalence, and torchrun runs of the CLI.

The torchrun tests start ``python -m torch.distributed.run --standalone --nproc-per-node 2`` on
the CPU (gloo) and compare with one process using the same global batch. Every process is
limited to one thread so the floating-point reduction order matches (facecls gives each of N
processes cores // N threads; the one-process reference here gets one too).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from facecls.config import AugmentConfig
from facecls.data.augment import augment
from facecls.data.batches import IndexBatches, Shard
from facecls.training.distributed import DistContext, env_ranks

REPO = Path(__file__).resolve().parents[1]

# --- the arithmetic of sharding (fast, one process) ---------------------------------------------


@pytest.mark.parametrize("rows,world", [(16, 2), (17, 2), (7, 3), (3, 4), (256, 8)])
def test_shard_bounds_tile_the_rows(rows: int, world: int) -> None:
    bounds = [Shard(r, world).bounds(rows) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def _images(n: int = 37) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
    return images, torch.arange(n) % 5


def test_sharded_training_batches_are_the_rows_of_the_global_batch() -> None:
    images, targets = _images()
    indices = torch.arange(3, 37)  # 34 indices: 4 full batches of 8 and one of 2
    whole = IndexBatches(images, targets, indices, 8, torch.device("cpu"), shuffle=True)
    parts = [
        IndexBatches(
            images, targets, indices, 8, torch.device("cpu"), shuffle=True, shard=Shard(r, 2)
        )  # fmt: skip
        for r in range(2)
    ]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 5
    for step, batch in enumerate(whole.epoch(11)):
        pieces = [list(p.epoch(11))[step] for p in parts]
        assert torch.equal(torch.cat([p[1] for p in pieces]), batch[1])
        assert torch.equal(torch.cat([p[0] for p in pieces]), batch[0])
        first, total = parts[1].rows(step)
        assert total == batch[0].shape[0] and first == pieces[0][0].shape[0]


def test_sharded_augmentation_equals_the_global_batch_rows() -> None:
    images, _ = _images(12)
    config = AugmentConfig()
    mean, std = [0.5] * 3, [0.25] * 3
    whole = augment(images, mean, std, config, torch.Generator().manual_seed(5))
    first = augment(images[:6], mean, std, config, torch.Generator().manual_seed(5), (0, 12))
    second = augment(images[6:], mean, std, config, torch.Generator().manual_seed(5), (6, 12))
    assert torch.equal(torch.cat([first, second]), whole)


def test_sharded_evaluation_blocks_restore_the_order() -> None:
    images, targets = _images()
    indices = torch.arange(37)
    blocks = [
        IndexBatches(images, targets, indices, 4, torch.device("cpu"), shard=Shard(r, 3))
        for r in range(3)
    ]
    served = torch.cat([t for b in blocks for _, t in b.epoch()])
    assert torch.equal(served, targets)
    tiny = IndexBatches(images, targets, indices[:2], 4, torch.device("cpu"), shard=Shard(1, 3))
    assert not tiny.sharded and tiny.indices.numel() == 2  # fewer than ranks: all, no gather


def test_too_few_training_images_for_the_ranks() -> None:
    images, targets = _images()
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        IndexBatches(images, targets, torch.arange(3), 8, torch.device("cpu"), shuffle=True,
                     shard=Shard(0, 4))  # fmt: skip


def test_launcher_environment() -> None:
    assert env_ranks({}) == (0, 1, 0, 1)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert env_ranks(env) == (3, 4, 1, 2)
    with pytest.raises(ValueError, match="inconsistent"):
        env_ranks({"RANK": "4", "WORLD_SIZE": "4"})
    context = DistContext(3, 4, 1, 2)
    assert not context.is_main and context.distributed and context.shard() == Shard(3, 4)
    assert context.alone().shard() == Shard() and context.alone().is_main


# --- exact equivalence of DDP and one process (spawned gloo processes, no BatchNorm) ------------


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5)
    )


def _train_tiny(context: DistContext) -> dict[str, torch.Tensor]:
    """Two epochs of the engine on random images; returns weights and the evaluation."""
    from facecls.runtime import Runtime
    from facecls.training.engine import evaluate, train_one_epoch

    torch.set_num_threads(1)
    images, targets = _images(50)
    model = module = _tiny_model()
    if context.distributed:
        model = nn.parallel.DistributedDataParallel(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    shard, cpu = context.shard(), torch.device("cpu")
    train = IndexBatches(images, targets, torch.arange(40), 10, cpu, True, True, shard)
    val = IndexBatches(images, targets, torch.arange(40, 50), 4, cpu, shard=shard)
    mean, std = [0.5] * 3, [0.25] * 3
    losses = []
    for epoch in range(2):
        stats = train_one_epoch(
            model, train, optimizer, nn.CrossEntropyLoss(), mean, std, AugmentConfig(),
            epoch, Runtime(cpu),
        )  # fmt: skip
        losses.append(stats.loss)
        assert stats.images == 40
    result = evaluate(model, val, mean, std, nn.CrossEntropyLoss())
    return {
        **{k: v.detach().clone() for k, v in module.state_dict().items()},
        "losses": torch.tensor(losses, dtype=torch.float64),
        "logits": torch.from_numpy(result.logits),
        "targets": torch.from_numpy(result.targets),
        "val_loss": torch.tensor(result.loss, dtype=torch.float64),
    }


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    from facecls.training.distributed import context, process_group

    with process_group():
        here = context("cpu")
        state = _train_tiny(here)
        state2 = _train_tiny(context("cpu"))  # a second call reuses the running group
    assert all(torch.equal(state[k], state2[k]) for k in state)
    if here.is_main:
        torch.save(state, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_equals_one_process_without_batchnorm(tmp_path: Path) -> None:
    """Same global batch, same augmentation: weights agree to float32 summation order."""
    import torch.multiprocessing as mp

    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    try:
        one = _train_tiny(DistContext())
    finally:
        torch.set_num_threads(threads)
    two = torch.load(out, weights_only=True)
    assert set(one) == set(two)
    for key in one:
        assert torch.allclose(one[key].double(), two[key].double(), rtol=1e-5, atol=1e-6), key


# --- torchrun on the CPU: the command line with two processes --------------------------------


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # FACECLS_CACHE comes from the autouse fixture
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "facecls", *args]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _one_process(*args: str) -> None:
    """The reference run in this process, with the threads each torchrun process gets."""
    from facecls.cli import main
    from facecls.training.distributed import cpu_cores

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cpu_cores() // 2))
    try:
        assert main(["--quiet", *args]) == 0
    finally:
        torch.set_num_threads(threads)


def _files(run: Path) -> list[str]:
    return sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())


def _predicted(run: Path) -> list[str]:
    lines = (run / "predictions.csv").read_text().splitlines()[1:]
    return [line.split(",")[2] for line in lines]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_write_once(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    """Two gloo processes train ``baseline`` with the global batch of one process.

    Tolerance: BatchNorm normalises each process's 8 rows with their own statistics (PyTorch's
    SyncBatchNorm runs on CUDA only), so the runs are close, not equal: every history loss
    within 0.05, the test loss within 0.02, at most one test image predicted differently.
    (Without BatchNorm they agree to float32 rounding: the test above.)
    """
    args = ["train", "--data", str(synthetic_folder), "--model", "baseline", "--image-size",
            "32", "--epochs", "2", "--batch-size", "16", "--runs-dir"]  # fmt: skip
    done = _torchrun(*args, str(tmp_path / "two"), "--name", "t")
    _one_process(*args, str(tmp_path / "one"), "--name", "t")
    two, one = tmp_path / "two" / "t", tmp_path / "one" / "t"
    # Written once: one run folder (no "t-2" from a second rank), the same files as one process.
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["t"]
    assert _files(two) == _files(one)
    assert not [f for f in _files(two) if ".tmp" in f]
    # Logged once: rank 0 only.
    assert done.stdout.count("95 % intervals): accuracy") == 1
    assert done.stdout.count("fold 0 epoch   2/2") == 1
    assert done.stdout.count("Data: ") == 1 and "2 processes" in done.stdout
    m2, m1 = (json.loads((r / "metrics.json").read_text()) for r in (two, one))
    assert m2["environment"]["processes"] == 2 and m1["environment"]["processes"] == 1
    assert m2["test"]["summary"]["images"] == m1["test"]["summary"]["images"]
    assert m2["test"]["summary"]["loss"] == pytest.approx(m1["test"]["summary"]["loss"], abs=0.02)
    h2, h1 = ([line.split(",") for line in (r / "history.csv").read_text().splitlines()[1:]]
              for r in (two, one))  # fmt: skip
    assert len(h2) == len(h1) == 2
    for row2, row1 in zip(h2, h1, strict=True):
        assert float(row2[2]) == pytest.approx(float(row1[2]), abs=0.05)  # train loss
        assert float(row2[3]) == pytest.approx(float(row1[3]), abs=0.05)  # val loss
        assert float(row2[6]) == pytest.approx(float(row1[6]), rel=1e-9)  # same schedule
    differ = sum(a != b for a, b in zip(_predicted(two), _predicted(one), strict=True))
    assert differ <= 1


@pytest.mark.slow
def test_torchrun_parallel_folds_equal_the_sequential_folds(
    synthetic_folder: Path, tmp_path: Path
) -> None:
    """Two processes each train one of two folds; the summary equals one process's, exactly
    per fold (the test part is evaluated in two blocks, so its loss may differ by rounding)."""
    args = ["cv", "--data", str(synthetic_folder), "--model", "baseline", "--image-size", "32",
            "--epochs", "2", "--folds", "2", "--batch-size", "16", "--runs-dir"]  # fmt: skip
    done = _torchrun(*args, str(tmp_path / "two"), "--name", "cv", "--parallel-folds")
    _one_process(*args, str(tmp_path / "one"), "--name", "cv")
    two, one = tmp_path / "two" / "cv", tmp_path / "one" / "cv"
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["cv"]
    assert _files(two) == _files(one)
    assert "Fold 1 of 2 on rank 0" in done.stdout and "fold 1 trained on rank 1" in done.stdout
    m2, m1 = (json.loads((r / "metrics.json").read_text()) for r in (two, one))
    assert m2["cv"]["folds"] == m1["cv"]["folds"]
    assert m2["cv"]["best_epochs"] == m1["cv"]["best_epochs"]
    assert m2["cv"]["pooled_out_of_fold"] == m1["cv"]["pooled_out_of_fold"]
    assert m2["final_model"] == m1["final_model"]
    assert m2["config"]["train"]["parallel_folds"] and not m1["config"]["train"]["parallel_folds"]
    drop = ("seconds", "images_per_second")  # timings differ, nothing else does
    h2, h1 = ([{k: v for k, v in zip(rows[0].split(","), line.split(","), strict=True)
                if k not in drop} for line in rows[1:]]
              for rows in ((r / "history.csv").read_text().splitlines() for r in (two, one)))  # fmt: skip
    assert h2 == h1
    assert _predicted(two) == _predicted(one)
    s2, s1 = m2["test"]["summary"], m1["test"]["summary"]
    assert s2 == pytest.approx(s1, abs=1e-6)
    weights = [(r / "model" / "model.safetensors").read_bytes() for r in (two, one)]
    assert weights[0] == weights[1]
