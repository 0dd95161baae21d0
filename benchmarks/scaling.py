"""Scaling out: training throughput with 1, 2, … processes under torchrun, and its efficiency.

Each setting is a real ``torchrun --standalone --nproc-per-node N -m facecls train`` on LFW
(default LFW-20 at 64 px, ``baseline``, global batch 64), started as a subprocess. Throughput
is the median over epochs 2… of ``images_per_second`` in the run's ``history.csv`` (all
processes' images per second of rank 0's epoch time; evaluation not included). The decode
cache is built once before any timing.

Scaling efficiency = rate_N / (N · rate_1), where rate_1 is one process with the resources one
of the N processes has: one GPU on CUDA; on the CPU, where facecls gives each of N processes
cores // N threads, one process with cores // N threads. The CPU rows also compare with one
process using every core ("vs all cores"), the question a CPU user actually has.

    python benchmarks/scaling.py                           # CPU (gloo): 1 and 2 processes
    python benchmarks/scaling.py --device cuda --processes 1,2,4,8 --size 112 --batch 512
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _paths import LFW_ARCHIVE, shared
from facecls.config import DataConfig
from facecls.data.dataset import load_dataset
from facecls.training.distributed import cpu_cores


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    p.add_argument("--min-images", type=int, default=20, help="20 = LFW-20, 8 = LFW-8")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--model", default="baseline")
    p.add_argument("--batch", type=int, default=64, help="global batch (same for every N)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--processes", default="1,2", help="comma-separated process counts")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    return p.parse_args()


def run(args: argparse.Namespace, processes: int, threads: int, runs: Path) -> float:
    """One torchrun training; returns img/s (median of epochs 2…)."""
    name = f"n{processes}-t{threads}"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(processes), "-m", "facecls", "--quiet", "train",
        "--data", args.data, "--min-images", str(args.min_images), "--image-size",
        str(args.size), "--model", args.model, "--batch-size", str(args.batch), "--epochs",
        str(args.epochs), "--device", args.device, "--runs-dir", str(runs), "--name", name,
    ]  # fmt: skip
    # One process reads OMP_NUM_THREADS; several get cores // N threads each from facecls.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with (runs / name / "history.csv").open() as f:
        rates = [float(row["images_per_second"]) for row in csv.DictReader(f)]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    args = parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    # Decode (and extract) once so no timed run pays for it.
    load_dataset(DataConfig(source=args.data, image_size=args.size, min_images=args.min_images),
                 log=lambda _m: None)  # fmt: skip
    if args.device == "cuda":
        hardware = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        hardware = f"{platform.processor() or platform.machine()}, {cpu_cores()} cores"
    print(
        f"{args.model} @ {args.size} px, LFW-{args.min_images}, global batch {args.batch}, "
        f"{args.epochs} epochs, device {args.device} ({hardware}), torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    cores, cpu = cpu_cores(), args.device == "cpu"
    rates: dict[tuple[int, int], float] = {}
    print(f"{'processes':>9}  {'threads each':>12}  {'img/s':>7}  {'efficiency':>10}  "
          f"{'vs all cores' if cpu else '':>12}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:

        def rate(processes: int, threads: int) -> float:
            if (processes, threads) not in rates:
                rates[processes, threads] = run(args, processes, threads, Path(tmp))
            return rates[processes, threads]

        for n in counts:
            threads = max(1, cores // n) if cpu else cores
            if cpu and n > 1:  # the one-process reference with one process's share of cores
                print(f"{1:>9}  {threads:>12}  {rate(1, threads):>7.0f}  {'':>10}  "
                      f"{rate(1, threads) / rate(1, cores):>12.2f}", flush=True)  # fmt: skip
            here = rate(n, threads)
            efficiency = here / (n * rate(1, threads))
            versus = f"{here / rate(1, cores):>12.2f}" if cpu else ""
            print(f"{n:>9}  {threads:>12}  {here:>7.0f}  {efficiency:>10.2f}  {versus}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
