"""LFW-8 time to accuracy: how soon each model reaches its target on the benchmark split.

Four ``facecls train`` runs on LFW-8 (the benchmark split's train part, validation held out of it,
tested once on its test part) at ``--size`` px:

* ResNet-18 from scratch (target 0.86 balanced accuracy within 60 s on one H100/H200),
* MobileNetV2 from ImageNet weights (target 0.92 within 60 s),
* FaceNet linear probe on the CASIA-WebFace backbone (embedded once, ``training/probe.py``),
* FaceNet fine-tuning (the whole network, discriminative learning rates).

Prints one row per run: test balanced accuracy, the training seconds until the validation
balanced accuracy first reached the target (summed epoch times), the run's wall time and
whether the goal was met; ``--json`` also writes the rows.

    python benchmarks/time_to_accuracy.py --data device_data --device cuda     # packed folder
    python benchmarks/time_to_accuracy.py --data device_data --dry-run         # the plan only
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Plan:
    """One run: what it trains and the balanced accuracy it should reach within 60 s."""

    name: str
    model: str
    epochs: int
    target: float | None
    train: dict = field(default_factory=dict)


def plans(data: Path) -> list[Plan]:
    """The four runs, with weights from the packed folder (``pack_device_data.py``)."""
    facenet, mobilenet = str(data / "facenet.safetensors"), str(data / "mobilenet_v2.safetensors")
    return [
        Plan("resnet18-scratch", "resnet18", 30, 0.86),
        Plan("mobilenet_v2-imagenet", "mobilenet_v2", 15, 0.92, {"weights": mobilenet}),
        Plan("facenet-probe", "facenet", 10, None, {"weights": facenet, "freeze": "backbone"}),
        Plan("facenet-finetune", "facenet", 10, None, {"weights": facenet}),
    ]


def seconds_to(history: list[dict], target: float | None) -> float | None:
    """Training seconds summed until the validation balanced accuracy first reached
    ``target``; ``None`` if it never did (or there is no target)."""
    if target is None:
        return None
    spent = 0.0
    for row in history:
        spent += float(row["seconds"])
        if float(row["val_balanced_accuracy"]) >= target:
            return spent
    return None


def run(plan: Plan, args: argparse.Namespace) -> dict:
    import facecls  # here: --dry-run needs no torch
    from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig

    data = Path(args.data)
    config = RunConfig(
        name=f"{plan.name}-{args.size}px", runs_dir=args.out,
        data=DataConfig(source=str(data / "lfw8"), image_size=args.size, min_images=8,
                        split_file=str(data / "lfw-benchmark-splits.csv"),
                        cache_dir=args.cache_dir),
        augment=AugmentConfig(),
        train=TrainConfig(model=plan.model, epochs=plan.epochs, batch_size=args.batch_size,
                          device=args.device, seed=args.seed, **plan.train),
    )  # fmt: skip
    started = time.perf_counter()
    result = facecls.train(config, log=print if args.verbose else (lambda _m: None))
    wall = time.perf_counter() - started
    history = result.folds[0].history
    reached = seconds_to(history, plan.target)
    return {
        "run": plan.name, "epochs": plan.epochs, "target": plan.target,
        "test_balanced_accuracy": round(result.metrics["test"]["summary"]["balanced_accuracy"], 4),
        "train_seconds": round(sum(float(r["seconds"]) for r in history), 1),
        "seconds_to_target": None if reached is None else round(reached, 1),
        "wall_seconds": round(wall, 1),
        "goal_met": None if plan.target is None else reached is not None and reached <= 60,
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = [
        "| run | epochs | test bal. acc. | target | s to target (val) | train s | wall s | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        goal = {None: "-", True: "met", False: "NOT met"}[r["goal_met"]]
        lines.append(
            f"| {r['run']} | {r['epochs']} | {r['test_balanced_accuracy']:.3f} "
            f"| {r['target'] or '-'} | {r['seconds_to_target'] or '-'} | {r['train_seconds']} "
            f"| {r['wall_seconds']} | {goal} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="device_data", help="the folder pack_device_data.py wrote")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", help="comma-separated run names (default: all four)")
    p.add_argument("--out", default="runs/time-to-accuracy")
    p.add_argument("--cache-dir", help="decode cache (default $FACECLS_CACHE)")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--verbose", action="store_true", help="show the runs' logs")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args()
    chosen = [x for x in plans(Path(args.data)) if not args.runs or x.name in args.runs.split(",")]
    for plan in chosen:
        extra = " ".join(f"--{k} {v}" for k, v in plan.train.items())
        print(f"plan: {plan.name}: facecls train --model {plan.model} --epochs {plan.epochs} "
              f"--image-size {args.size} --device {args.device} {extra}".rstrip())  # fmt: skip
    if args.dry_run:
        return
    rows = []
    for plan in chosen:
        rows.append(run(plan, args))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
