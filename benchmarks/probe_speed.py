"""Speed on a laptop CPU: the FaceNet linear probe end to end, and the commands' start-up.

On LFW-8 with the benchmark split, in one run (prints the figures and the machine's load):

1. the decode cache is warmed (timed apart: a first-ever run also decodes);
2. ``facecls train --model facenet --weights … --freeze backbone``, the embedding cache cold:
   the frozen backbone embeds every image and its mirror once, then the head trains;
3. the same with another head setting (``--lr`` halved): the embeddings come from the cache;
4. ``facecls cv --folds 5`` of the same, the embedding cache cold again, counting the images the
   backbone ran on (a forward hook on PyTorch, a counter on ONNX Runtime's sessions): once per
   image, not once per fold;
5. ``facecls --help`` and ``facecls models``: median wall time of 5 (fresh processes);
6. the dlib peer (``benchmarks/peers.py``: HOG detection, 5 landmarks, 128-d descriptor, then
   logistic regression with C by 3-fold CV) on the same images and split, after step 3: its
   descriptors of every image (train + test), computed afresh every run (never cached: its wall
   time is the figure), the fit and the test balanced accuracy; then dlib's wall time over
   facecls's first run's (the issue's goal: facecls at least 5x faster to the same accuracy).

``--faces detect`` decodes with MTCNN box crops (as ``facecls train --faces detect``): the
detection then runs in step 1, which a first-ever run also pays, so the ratio is printed over the
first run alone and over decode + first run.

    python benchmarks/probe_speed.py                      # LFW-8 from ../shared, 160 px, crop 0.64
    python benchmarks/probe_speed.py --faces detect --skip-cv
    python benchmarks/probe_speed.py --skip-cv --size 112 --skip-dlib
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
from typing import TYPE_CHECKING

from _paths import FACENET_WEIGHTS, LFW_ARCHIVE, LFW_SPLITS, shared

if TYPE_CHECKING:  # imported in main, after the start-up timings
    from facecls.config import DataConfig
    from facecls.data.dataset import FaceDataset

REPO = Path(__file__).resolve().parents[1]


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


def dlib_peer(
    args: argparse.Namespace,
    data: DataConfig,
    dataset: FaceDataset,
    first_s: float,
    decode_s: float,
    first_bal: float,
) -> None:
    """The dlib peer on the images facecls kept and its split, timed from model load to the
    test predictions; its descriptors are computed afresh (no cache: the wall time is the
    figure)."""
    import numpy as np

    import peers
    from facecls import metrics
    from facecls.data.sources import default_cache_dir, scan_source
    from facecls.data.splits import split_test

    if not peers.dlib_available():
        print("dlib peer skipped: dlib is not installed (pip install 'facecls[peers]': dlib-bin, "
              "face-recognition-models)")  # fmt: skip
        return
    by_relpath = {r.relpath: r.path for r in scan_source(args.data, default_cache_dir(),
                                                         lambda _m: None).refs}  # fmt: skip
    split = split_test(dataset, data, 0)
    targets = dataset.targets.numpy()
    rows = np.sort(np.concatenate([split.pool, split.test]))
    note = ""
    if args.limit:  # whole people in name order, so each keeps its train and test images
        people = np.unique(targets[rows])
        counts = np.cumsum([np.sum(targets[rows] == c) for c in people])
        keep = people[: int(np.searchsorted(counts, args.limit)) + 1]
        rows = rows[np.isin(targets[rows], keep)]
        note = f" (--limit {args.limit}: {len(keep)} people; a check of the code path)"
    train = np.intersect1d(split.pool, rows)
    test = np.intersect1d(split.test, rows)
    paths = [by_relpath[dataset.paths[i]] for i in rows]
    print(f"dlib peer: descriptors of {len(rows)} images ({len(train)} train, {len(test)} test)"
          f"{note}, no cache", flush=True)  # fmt: skip
    start, cpu = time.perf_counter(), cpu_seconds()
    descriptors, describe_s = peers.dlib_descriptors(paths, log=print)
    x = np.zeros((len(dataset), 128), dtype=np.float32)
    x[rows] = descriptors
    fit_start = time.perf_counter()
    preds, chosen = peers.logistic_regression(x, targets, train, test)
    fit_s = time.perf_counter() - fit_start
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    s = metrics.summary(metrics.confusion_matrix(targets[test], preds, dataset.num_classes))
    print(f"dlib peer: {wall:.1f} s wall ({cpu:.0f} CPU s): descriptors {describe_s:.1f} s "
          f"({len(rows) / describe_s:.1f} images/s), logistic regression {chosen['best_params']} "
          f"by 3-fold CV {fit_s:.1f} s; test balanced accuracy {s['balanced_accuracy']:.4f}, "
          f"accuracy {s['accuracy']:.4f}; {load()}")  # fmt: skip
    print(f"dlib wall / facecls first run wall: {wall / first_s:.2f}x (goal >= 5; test balanced "
          f"accuracy facecls {first_bal:.4f}, dlib {s['balanced_accuracy']:.4f}); over decode + "
          f"first run: {wall / (decode_s + first_s):.2f}x", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    p.add_argument("--split-file", default=str(shared(*LFW_SPLITS)))
    p.add_argument("--weights", default=str(shared(*FACENET_WEIGHTS)))
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--crop", type=float,
                   help="centre crop of --faces centre (default 0.64, the README's command); "
                   "--faces detect cuts MTCNN boxes and defaults to 1.0")  # fmt: skip
    p.add_argument(
        "--faces",
        choices=["centre", "detect"],
        default="centre",
        help="face pipeline, as facecls train --faces (detect: MTCNN box for FaceNet)",
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/probe-speed", help="run folders and the cache")
    p.add_argument("--skip-cv", action="store_true", help="leave out the cv --folds 5 count")
    p.add_argument("--skip-dlib", action="store_true", help="leave out the dlib peer")
    p.add_argument("--limit", type=int,
                   help="dlib peer on the images of the first people (name order) until this "
                   "many: a quick check of its code path, not a figure")  # fmt: skip
    args = p.parse_args()
    if args.crop is None:
        args.crop = 0.64 if args.faces == "centre" else 1.0
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
    from facecls.config_rules import resolve
    from facecls.data.dataset import load_dataset

    def config(name: str, lr: float | None = None, folds: int = 5) -> RunConfig:
        return RunConfig(
            name=name, runs_dir=str(out),
            data=DataConfig(source=args.data, image_size=args.size, min_images=8,
                            split_file=args.split_file, crop=args.crop, faces=args.faces),
            augment=AugmentConfig(),
            train=TrainConfig(model="facenet", weights=args.weights, freeze="backbone",
                              epochs=args.epochs, lr=lr, device=args.device, folds=folds),
        )  # fmt: skip

    start = time.perf_counter()
    data = resolve(config("warm")).data  # ``detect`` becomes the model's pipeline, as in train
    dataset = load_dataset(data, log=lambda _m: None)
    decode_s = time.perf_counter() - start
    print(f"decode cache warmed: {len(dataset)} images in {decode_s:.1f} s (faces {data.faces}, "
          f"crop {data.crop:g}; seconds only if an earlier run decoded them)")  # fmt: skip
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

    if not args.skip_dlib:
        dlib_peer(args, data, dataset, figures[0][1], decode_s, figures[0][3])

    if not args.skip_cv:
        shutil.rmtree(cache / "embedded", ignore_errors=True)
        ran = 0

        def count(module: nn.Module, inputs: tuple) -> None:
            nonlocal ran
            if type(module).__name__ == "FaceNet":
                ran += int(inputs[0].shape[0])

        # The long passes run on ONNX Runtime (models/cpu_pass.py): count what its sessions run
        # too. (Each export traces the network once on one image: the hook counts that.)
        import facecls.models.cpu_pass as cpu_pass

        original = cpu_pass.onnx_pass

        def counted(*a, **k):  # noqa: ANN002, ANN003, ANN202
            run = original(*a, **k)
            if run is None:
                return None

            def counting(images):  # noqa: ANN001, ANN202
                nonlocal ran
                ran += int(images.shape[0])
                return run(images)

            return counting

        cpu_pass.onnx_pass = counted
        hook = nn.modules.module.register_module_forward_pre_hook(count)
        start, cpu = time.perf_counter(), cpu_seconds()
        try:
            result = facecls.cross_validate(config("probe-cv5"), log=lambda _m: None)
        finally:
            hook.remove()
            cpu_pass.onnx_pass = original
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        mean, std = result.metrics["cv"]["mean_std"]["balanced_accuracy"]
        print(f"cv --folds 5: backbone ran on {ran} images for {len(dataset)} images (each with "
              f"its mirror: {2 * len(dataset)}; the report's Grad-CAM and the ONNX export's trace "
              f"add a few); {wall:.1f} s "
              f"wall ({cpu:.0f} CPU s); CV balanced accuracy {mean:.4f} ± {std:.4f}; {load()}")  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; end: {load()}")


if __name__ == "__main__":
    main()
