"""Does progress and logging slow a training step? The same epochs with and without them.

One model (default: the seed baseline CNN at 64 px, batch 64, the cheapest step, where any
overhead would show most) trains epochs over synthetic images alternately with no callback and
with what ``train``/``cv`` attach to every step: the progress bar drawn on a terminal (stderr,
redirected to /dev/null here), plus the per-epoch log line written to a run.log. Pairs of
epochs alternate so the machine's load hits both alike; it prints the median seconds per epoch
of each and their ratio.

    PYTHONPATH=src python benchmarks/progress_overhead.py [--model baseline] [--epochs 8]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from facecls.config import AugmentConfig
from facecls.data.batches import IndexBatches
from facecls.models import create_model
from facecls.progress import bar
from facecls.runtime import Runtime
from facecls.training.engine import train_one_epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="baseline")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8, help="epochs of each kind")
    args = p.parse_args()
    torch.manual_seed(0)
    device = torch.device("cpu")
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    targets = torch.randint(0, 10, (args.images,))
    model = create_model(args.model, num_classes=10, image_size=args.size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    runtime = Runtime(device)
    batches = IndexBatches(images, targets, torch.arange(args.images), args.batch, device,
                           shuffle=True, drop_last=True)  # fmt: skip
    logger = logging.getLogger("facecls.benchmark")
    logger.setLevel(logging.DEBUG)
    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
        logger.addHandler(handler)
        times: dict[bool, list[float]] = {False: [], True: []}
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            for epoch in range(2 * args.epochs + 2):
                shown = epoch % 2 == 1
                counter = bar(args.images, "train", True, terminal=True) if shown else None
                start = time.perf_counter()
                stats = train_one_epoch(
                    model, batches, optimizer, torch.nn.CrossEntropyLoss(), [0.5] * 3,
                    [0.25] * 3, AugmentConfig(), epoch, runtime,
                    on_batch=counter.update if counter is not None else None,
                )  # fmt: skip
                if counter is not None:
                    counter.close()
                    logger.info(f"epoch {epoch} train loss {stats.loss:.4f}")
                if epoch >= 2:  # the first pair warms up
                    times[shown].append(time.perf_counter() - start)
        logger.removeHandler(handler)
    plain, shown = statistics.median(times[False]), statistics.median(times[True])
    print(f"{args.model} @ {args.size} px, batch {args.batch}, {args.images} images, "
          f"{args.epochs} epochs of each, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"  no progress, no log:   {plain:.3f} s per epoch (median)")
    print(f"  progress bar + log:    {shown:.3f} s per epoch (median)")
    print(f"  ratio with/without:    {shown / plain:.3f}")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {sys.platform}")


if __name__ == "__main__":
    main()
