"""A frozen network's CPU pass on PyTorch and on ONNX Runtime (``models/cpu_pass.py``), side by
side in one process: images per second and how far the embeddings differ.

FaceNet (CASIA-WebFace weights from ``../shared`` when present, else random) at 160 px, fp32,
batches of 16, on PyTorch's thread count: PyTorch channels-last (what training and predict use
for FaceNet on the CPU), PyTorch NCHW, and ONNX Runtime through ``FrozenPass``.

    PYTHONPATH=src python benchmarks/frozen_pass_speed.py [--batches 12] [--model facenet]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time

import numpy as np
import torch

from _paths import FACENET_WEIGHTS, shared
from facecls.models.cpu_pass import FrozenPass, onnx_pass
from facecls.models.facenet import load_backbone
from facecls.models.factory import create_model
from facecls.runtime import Runtime

WEIGHTS = shared(*FACENET_WEIGHTS)


def per_second(run, batch: torch.Tensor, batches: int) -> float:  # noqa: ANN001
    """Images per second of ``run`` over ``batches`` calls after two warm-up calls."""
    run(batch)
    run(batch)
    start = time.perf_counter()
    for _ in range(batches):
        run(batch)
    return batches * len(batch) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="facenet")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=12)
    args = p.parse_args()
    model = create_model(args.model, num_classes=8, image_size=args.size).eval()
    weights = "random weights"
    if args.model == "facenet" and WEIGHTS.is_file():
        load_backbone(model, WEIGHTS)
        weights = WEIGHTS.name
    batch = torch.randn(
        args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)
    )
    cpu = torch.device("cpu")
    print(f"{args.model} ({weights}) at {args.size} px, fp32, batches of {args.batch}; "
          f"{platform.machine()} CPU, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    started = time.perf_counter()
    assert onnx_pass(model, args.size, 10**9) is not None, "ONNX Runtime cannot run this model"
    export = time.perf_counter() - started
    # each engine its own copy: PyTorch's passes set the module's memory format in place
    engines = {
        "PyTorch, channels-last": FrozenPass(copy.deepcopy(model), Runtime(cpu, None, True),
                                             args.size, 0),
        "PyTorch, NCHW": FrozenPass(copy.deepcopy(model), Runtime(cpu, None, False), args.size, 0),
        "ONNX Runtime": FrozenPass(copy.deepcopy(model), Runtime(cpu, None, False), args.size,
                                   10**9),
    }  # fmt: skip
    rates = {name: per_second(run, batch, args.batches) for name, run in engines.items()}
    reference = engines["PyTorch, NCHW"](batch)[1].numpy()
    for name, rate in rates.items():
        gap = np.abs(engines[name](batch)[1].numpy() - reference).max()
        print(f"  {name:<24} {rate:7.1f} images/s  (max |embedding - NCHW PyTorch| {gap:.1e})")
    print(f"  ONNX Runtime over PyTorch channels-last: "
          f"{rates['ONNX Runtime'] / rates['PyTorch, channels-last']:.2f}x; export "
          f"{export:.1f} s; load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
