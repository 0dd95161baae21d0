"""Training throughput: the ceiling, facecls end to end, and the usual ImageFolder loop.

For each model, in one run on one machine:
  (a) ceiling   - training steps on random tensors already on the device (same precision and
                  memory format as facecls uses);
  (b) facecls   - facecls's own training epoch on real LFW images from its decode cache (the
                  cache is built beforehand and its time reported separately);
  (c) usual     - torchvision ImageFolder over the same JPEG files, DataLoader with workers,
                  Pillow transforms including the report's rotation, fp32.
Prints img/s, b/a and b/c, peak host RSS and peak device memory.

    python benchmarks/throughput.py --device cpu --size 64
    python benchmarks/throughput.py --device cuda --size 224 --batch 256
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from _paths import LFW_ARCHIVE, shared
from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.config_rules import resolve
from facecls.data.augment import channel_stats
from facecls.data.batches import IndexBatches, resident
from facecls.data.dataset import load_dataset
from facecls.data.sources import default_cache_dir, scan_source
from facecls.models import create_model
from facecls.runtime import Runtime, runtime_for
from facecls.training.engine import train_one_epoch
from facecls.training.optimization import build_optimizer


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mib() -> float:
    """Resident set size now, MiB (Linux ``/proc/self/statm``; peak RSS elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return rss_mib()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def device_peak_mib(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_config(args: argparse.Namespace, model: str, device: torch.device) -> TrainConfig:
    config = RunConfig(train=TrainConfig(model=model, batch_size=args.batch, precision=args.precision,
                                         compile=args.compile, device=str(device)))  # fmt: skip
    return resolve(config).train


def make_model(
    name: str, classes: int, args: argparse.Namespace, runtime: Runtime
) -> torch.nn.Module:
    model = create_model(name, num_classes=classes, image_size=args.size).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if args.compile else model


def ceiling(name: str, classes: int, args: argparse.Namespace, device: torch.device) -> float:
    """(a) Steps on random tensors already on the device; no data pipeline at all."""
    t = train_config(args, name, device)
    runtime = runtime_for(t, device)
    model = make_model(name, classes, args, runtime)
    optimizer = build_optimizer(model, t, device)
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=fmt
    )
    y = torch.randint(0, classes, (args.batch,), device=device)

    def step() -> None:
        with runtime.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    return args.steps * args.batch / (time.perf_counter() - start)


def facecls_rate(name: str, dataset, images, targets, args, device: torch.device) -> float:
    """(b) facecls's training epoch: device-resident uint8, batched augmentation, one loop."""
    t = train_config(args, name, device)
    runtime = runtime_for(t, device)
    model = make_model(name, dataset.num_classes, args, runtime)
    optimizer = build_optimizer(model, t, device)
    n = min(len(dataset), (args.steps + args.warmup) * args.batch)
    idx = torch.arange(n)
    mean, std = channel_stats(dataset.images[:n])
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    warm = IndexBatches(
        images, targets, idx[: args.warmup * args.batch], args.batch, device, True, True
    )
    timed = IndexBatches(images, targets, idx, args.batch, device, shuffle=True, drop_last=True)
    train_one_epoch(model, warm, optimizer, loss_fn, mean, std, AugmentConfig(), 0, runtime)
    sync(device)
    start = time.perf_counter()
    stats = train_one_epoch(
        model, timed, optimizer, loss_fn, mean, std, AugmentConfig(), 1, runtime
    )
    sync(device)
    return stats.images / (time.perf_counter() - start)


def usual_rate(name: str, folder: Path, classes: int, args, device: torch.device) -> float:
    """(c) ImageFolder + DataLoader workers + Pillow transforms (report's rotation), fp32."""
    tf = transforms.Compose([
        transforms.Resize((args.size, args.size)),
        transforms.RandomRotation(10),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
    ])  # fmt: skip
    data = datasets.ImageFolder(str(folder), transform=tf)
    loader = DataLoader(
        data, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip
    model = create_model(name, num_classes=classes, image_size=args.size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    seen, start = 0, None
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            sync(device)
            start = time.perf_counter()
        if step >= args.warmup + args.steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if start is not None:
            seen += x.shape[0]
    sync(device)
    return seen / (time.perf_counter() - start) if start else float("nan")


def identity_folder(args: argparse.Namespace, names: list[str]) -> Path:
    """A folder of symlinks to the chosen identities' JPEG folders, for ImageFolder."""
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    scan = scan_source(args.data, cache, log=lambda _m: None)
    root = Path(tempfile.mkdtemp(prefix="facecls-usual-"))
    for name in names:
        os.symlink(scan.root / name, root / name)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", default="baseline,tronnet,resnet18")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    p.add_argument("--min-images", type=int, default=20)
    p.add_argument("--cache-dir")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})"
          f", torch {torch.__version__}, {torch.get_num_threads()} threads, size {args.size}, "
          f"batch {args.batch}, precision {args.precision}, compile {args.compile}, "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")  # fmt: skip

    rss_before, resident_before = rss_mib(), resident_mib()
    start = time.perf_counter()
    data_config = DataConfig(source=args.data, image_size=args.size, min_images=args.min_images,
                             cache_dir=args.cache_dir)  # fmt: skip
    dataset = load_dataset(data_config, log=lambda _m: None)
    cache_seconds = time.perf_counter() - start
    raw_mib = dataset.images.numel() / 2**20
    held, peak = resident_mib() - resident_before, rss_mib() - rss_before
    print(f"cache: {len(dataset)} images of {dataset.num_classes} identities, {raw_mib:.1f} MiB "
          f"raw uint8, loaded in {cache_seconds:.1f} s; host memory held after loading "
          f"+{held:.1f} MiB ({held / raw_mib:.2f}x raw), peak while loading +{peak:.1f} MiB "
          f"({peak / raw_mib:.2f}x raw, includes the duplicate check)")  # fmt: skip
    images = resident(dataset.images, device)
    targets = dataset.targets.to(images.device)
    folder = identity_folder(args, dataset.class_names)

    rows = []
    for name in filter(None, args.models.split(",")):  # --models "" measures the cache only
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        a = ceiling(name, dataset.num_classes, args, device)
        b = facecls_rate(name, dataset, images, targets, args, device)
        c = usual_rate(name, folder, dataset.num_classes, args, device)
        rows.append((name, a, b, c, rss_mib(), device_peak_mib(device)))
        print(f"{name}: ceiling {a:.0f}, facecls {b:.0f}, usual {c:.0f} img/s", flush=True)

    print("\n| model | (a) ceiling img/s | (b) facecls img/s | (c) usual img/s | b/a | b/c "
          "| peak host RSS MiB | peak device MiB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, a, b, c, rss, dev in rows:
        print(f"| {name} | {a:.0f} | {b:.0f} | {c:.0f} | {b / a:.2f} | {b / c:.2f} | {rss:.0f} "
              f"| {'-' if np.isnan(dev) else f'{dev:.0f}'} |")  # fmt: skip


if __name__ == "__main__":
    main()
