"""Speed on a laptop CPU: the FaceNet linear probe end to end, and the commands' start-up.

On LFW-8 with the benchmark split, in one run (prints the figures and the machine's load):

1. the decode cache is warmed (timed apart: a first-ever run also decodes);
2. ``facecls train --model facenet --weights … --freeze backbone``, the embedding cache cold:
   the frozen backbone embeds every image and its mirror once, then the head trains;
3. the same with another head setting (``--lr`` halved): the embeddings come from the cache;
4. ``facecls cv --folds 5`` of the same, the embedding cache cold again, counting the images the
   backbone ran on (a forward hook): once per image, not once per fold;
5. ``facecls --help`` and ``facecls models``: median wall time of 5 (fresh processes).

    python benchmarks/probe_speed.py                      # LFW-8 from ../shared, 160 px, crop 0.64
    python benchmarks/probe_speed.py --skip-cv --size 112
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = next(
    (p / "shared" for p in REPO.parents if (p / "shared" / "datasets").is_dir()),
    REPO.parent / "shared",
)


def command_seconds(args: list[str], repeats: int = 5) -> float:
    """Median wall time of ``python -m facecls ARGS`` in fresh processes."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "facecls", *args], env=env, check=True,
                       capture_output=True)  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_seconds() -> float:
    """CPU time this process used so far (user + system): a busy machine slows the wall time,
    not this."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED / "datasets" / "lfw-deepfunneled.tgz"))
    p.add_argument("--split-file", default=str(SHARED / "datasets" / "lfw-benchmark-splits.csv"))
    p.add_argument("--weights", default=str(SHARED / "weights" /
                   "facenet-inception-resnet-v1-casia-webface.safetensors"))  # fmt: skip
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--crop", type=float, default=0.64, help="centre crop (the README's command)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/probe-speed", help="run folders and the cache")
    p.add_argument("--skip-cv", action="store_true", help="leave out the cv --folds 5 count")
    args = p.parse_args()
    out = Path(args.out)
    cache = out / "cache"
    os.environ["FACECLS_CACHE"] = str(cache)  # the benchmark's own cache: it deletes entries
    print(f"start: {load()}")
    help_s, models_s = command_seconds(["--help"]), command_seconds(["models"])
    print(f"facecls --help {help_s:.2f} s, facecls models {models_s:.2f} s (median of 5)")

    import torch  # noqa: E402  (after the start-up timings, which must not share it)
    from torch import nn

    import facecls
    from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
    from facecls.data.dataset import load_dataset

    def config(name: str, lr: float | None = None, folds: int = 5) -> RunConfig:
        return RunConfig(
            name=name, runs_dir=str(out),
            data=DataConfig(source=args.data, image_size=args.size, min_images=8,
                            split_file=args.split_file, crop=args.crop),
            augment=AugmentConfig(),
            train=TrainConfig(model="facenet", weights=args.weights, freeze="backbone",
                              epochs=args.epochs, lr=lr, device=args.device, folds=folds),
        )  # fmt: skip

    start = time.perf_counter()
    dataset = load_dataset(config("warm").data, log=lambda _m: None)
    print(f"decode cache warmed: {len(dataset)} images in {time.perf_counter() - start:.1f} s")
    shutil.rmtree(cache / "embedded", ignore_errors=True)
    figures = []
    for name, lr in (("probe-first", None), ("probe-second-lr-half", "half")):
        if lr == "half":
            lr = figures[0][2] / 2
        start, cpu = time.perf_counter(), cpu_seconds()
        result = facecls.train(config(name, lr), log=lambda _m: None)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        s = result.metrics["test"]["summary"]
        used_lr = result.metrics["config"]["train"]["lr"]
        figures.append((name, wall, used_lr, s["balanced_accuracy"]))
        print(
            f"{name}: {wall:.1f} s wall, lr {used_lr:g}, test balanced accuracy "
            f"{s['balanced_accuracy']:.4f}, accuracy {s['accuracy']:.4f}; {load()}",
            flush=True,
        )

    if not args.skip_cv:
        shutil.rmtree(cache / "embedded", ignore_errors=True)
        ran = 0

        def count(module: nn.Module, inputs: tuple) -> None:
            nonlocal ran
            if type(module).__name__ == "FaceNet":
                ran += int(inputs[0].shape[0])

        hook = nn.modules.module.register_module_forward_pre_hook(count)
        start, cpu = time.perf_counter(), cpu_seconds()
        try:
            result = facecls.cross_validate(config("probe-cv5"), log=lambda _m: None)
        finally:
            hook.remove()
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        mean, std = result.metrics["cv"]["mean_std"]["balanced_accuracy"]
        print(f"cv --folds 5: backbone ran on {ran} images for {len(dataset)} images (each with "
              f"its mirror: {2 * len(dataset)}; the report's Grad-CAM adds a few); {wall:.1f} s "
              f"wall ({cpu:.0f} CPU s); CV balanced accuracy {mean:.4f} ± {std:.4f}; {load()}")  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; end: {load()}")


if __name__ == "__main__":
    main()
