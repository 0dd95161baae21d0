"""The report's comparison on LFW-8 with the fixed benchmark split.

Trains each model with and without the report's inverse class weights (train/validation from the
split file's train part, evaluated once on its test part) and prints Table 5's rows plus balanced
accuracy, macro-F1, epochs and wall time, with the hardware.

    python benchmarks/lfw.py --size 64                      # CPU-sized run
    python benchmarks/lfw.py --size 112 --device cuda       # the report's sizes on a GPU: --size 224

With ``--study imbalance`` it runs the long-tail study instead (benchmarks/imbalance_study.py):
every remedy for tronnet, resnet18 and facenet, plus the peers (benchmarks/peers.py).

    python benchmarks/lfw.py --study imbalance --size 64 --epochs 15       # CPU-sized
    python benchmarks/lfw.py --study imbalance --size 112 --epochs 60 --device cuda \
        --models tronnet,resnet18,mobilenet_v2,facenet --facenet-mode finetune
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import facecls
import imbalance_study
from _paths import LFW_ARCHIVE, LFW_SPLITS, shared
from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig

DEFAULT_EPOCHS = {"baseline": 40, "tronnet": 40, "resnet18": 30}


def hardware(device: str) -> str:
    """A one-line description of where the figures were measured."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    p.add_argument("--split-file", default=str(shared(*LFW_SPLITS)))
    p.add_argument("--min-images", type=int, default=8, help="8 = LFW-8, 20 = LFW-20")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--study", choices=["report", "imbalance"], default="report")
    p.add_argument(
        "--models", help="default baseline,tronnet,resnet18 (study: tronnet,resnet18,facenet)"
    )
    p.add_argument("--weights", default="none,inverse", help="class-weight schemes to compare")
    p.add_argument("--recipe", choices=["report", "fast"], help="default: report (study: fast)")
    p.add_argument("--epochs", type=int, help="override the per-model defaults")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--pretrained", action="store_true", help="ImageNet weights (torchvision API)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/benchmark-lfw", help="run folders and results.json")
    imbalance_study.add_arguments(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    args.recipe = args.recipe or ("fast" if args.study == "imbalance" else "report")
    if args.study == "imbalance":
        args.models = "tronnet,resnet18,facenet" if args.models is None else args.models
        weights = shared("weights", imbalance_study.WEIGHTS_FILE)
        args.facenet_weights = args.facenet_weights or str(weights)
        imbalance_study.run(args)
        return
    args.models = "baseline,tronnet,resnet18" if args.models is None else args.models
    rows = []
    for model in args.models.split(","):
        for weights in args.weights.split(","):
            epochs = args.epochs or DEFAULT_EPOCHS.get(model, 30)
            config = RunConfig(
                name=f"{model}-{weights}-{args.size}px",
                runs_dir=args.out,
                data=DataConfig(
                    source=args.data, image_size=args.size, min_images=args.min_images,
                    split_file=args.split_file,
                ),
                augment=AugmentConfig(),
                train=TrainConfig(
                    model=model, epochs=epochs, batch_size=args.batch_size, recipe=args.recipe,
                    lr=args.lr, class_weights=weights, seed=args.seed, device=args.device,
                    pretrained=args.pretrained, precision=args.precision,
                ),
            )  # fmt: skip
            started = time.perf_counter()
            result = facecls.train(config, log=lambda _m: None)
            wall = time.perf_counter() - started
            s = result.metrics["test"]["summary"]
            history = result.folds[0].history
            train_seconds = sum(r["seconds"] for r in history)
            rows.append({"model": model, "weights": weights, "epochs": epochs,
                         "wall_seconds": round(wall, 1), "train_seconds": round(train_seconds, 1),
                         "best_epoch": result.metrics["final_model"]["epoch"], **s})  # fmt: skip
            print(f"{model:>9} {weights:>8}: balanced acc {s['balanced_accuracy']:.3f} "
                  f"({wall:.0f} s)", flush=True)  # fmt: skip
    header = (
        "| model | class weights | accuracy | balanced acc. | macro-F1 | precision | recall "
        "| BCR | aggregated | epochs (best) | training time | wall time |"
    )
    print(f"\nLFW-{args.min_images} test split, {args.size} px, seed {args.seed}, "
          f"recipe {args.recipe}, precision {args.precision}; {hardware(args.device)}\n")  # fmt: skip
    print(header)
    print("|---|---|" + "---:|" * 10)
    for r in rows:
        print(
            f"| {r['model']} | {r['weights']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} "
            f"| {r['macro_f1']:.3f} | {r['class_avg_precision']:.3f} | {r['class_avg_recall']:.3f} "
            f"| {r['class_avg_bcr']:.3f} | {r['class_avg_aggregated']:.3f} "
            f"| {r['epochs']} ({r['best_epoch']}) | {r['train_seconds']:.0f} s "
            f"| {r['wall_seconds']:.0f} s |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "hardware": hardware(args.device), "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
