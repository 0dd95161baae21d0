"""tune and lr-find: choosing settings before a run (see docs/comfort.md)."""

from __future__ import annotations

import argparse
from typing import Any

from facecls.cli.options import add_run_options, resume_dir, run_config
from facecls.numbers import finite_float

COMMANDS = ("tune", "lr-find")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of :data:`COMMANDS`."""
    p = sub.add_parser(
        "tune",
        help="search lr, weight decay, imbalance remedy and sampler (Optuna; docs/comfort.md)",
    )
    add_run_options(p, "tune")
    g = p.add_argument_group("tuning")
    g.add_argument("--trials", type=int, default=30, help="trials in the study (default 30)")
    g.add_argument(
        "--mode", choices=["holdout", "cv"], default="holdout",
        help="score: validation balanced accuracy (holdout) or pooled out-of-fold (cv)",
    )  # fmt: skip
    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test: loss against a rising lr, a suggested --lr "
        "(docs/comfort.md)",
    )
    add_run_options(p, "lr-find")
    g = p.add_argument_group("range test (the lr rises exponentially; no model is kept)")
    g.add_argument("--steps", type=int, default=100, help="mini-batches at most (default 100)")
    g.add_argument("--start-lr", type=finite_float, default=1e-7, help="first lr (default 1e-7)")
    g.add_argument("--end-lr", type=finite_float, default=10.0, help="last lr (default 10)")


def run(args: argparse.Namespace, log: Any, progress: bool) -> None:
    """Carry out one of :data:`COMMANDS`."""
    import facecls

    if args.command == "lr-find":
        config = run_config(args, "lr-find")
        found = facecls.lr_find(
            config, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr, log=log,
            show_progress=progress,
        )  # fmt: skip
        lr = f"{found.suggestion:.2g}"
        print(
            f"Suggested --lr {lr} (steepest descent; lowest-loss lr / 10: "
            f"{found.min_loss_lr / 10:.2g}). Train with: facecls train --config "
            f"{found.run_dir / 'config.yaml'} --name train-{config.train.model} --lr {lr}"
        )
        return
    if args.folds is not None and args.mode == "holdout":
        raise ValueError(
            f"--folds {args.folds} is for --mode cv; a holdout trial trains once on the "
            "train/validation split"
        )
    result = facecls.tune(
        run_config(args, "tune"), trials=args.trials, mode=args.mode,
        resume=resume_dir(args), log=log, show_progress=progress,
    )  # fmt: skip
    print(f"Best configuration: {result.best_config} (train with --config)")
