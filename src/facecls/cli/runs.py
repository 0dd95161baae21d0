"""train, cv, evaluate, report, compare, models and demo: runs and their reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from facecls.catalog import MODELS
from facecls.cli.options import add_run_options, resume_dir, run_config
from facecls.numbers import finite_float

COMMANDS = ("train", "cv", "evaluate", "report", "compare", "models", "demo")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of :data:`COMMANDS`."""
    add_run_options(
        sub.add_parser("train", help="train one model, evaluate on the test part"), "train"
    )
    add_run_options(sub.add_parser("cv", help="stratified k-fold cross-validation"), "cv")
    for command in ("train", "cv"):
        sub.choices[command].add_argument(
            "--tensorboard", action="store_true",
            help="write live curves to RUN_DIR/tensorboard (pip install 'facecls[tensorboard]')",
        )  # fmt: skip
    p = sub.add_parser("evaluate", help="re-evaluate a run's model on its test part")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--data", help="evaluate on this source instead of the run's")
    p.add_argument(
        "--strangers", nargs="+", metavar="PHOTOS",
        help="photos or folders of people not trained on, or a face library (its forgotten "
        "people): measure the unknown decision (FPIR, FNIR, DIR at FPIR 1%%) into "
        "openset.json and the report",
    )  # fmt: skip
    p.add_argument(
        "--trust-pickle", action="store_true",
        help="allow a .pt/.pth weights file (pickles can run code; it is still read with "
        "torch.load(weights_only=True))",
    )  # fmt: skip
    p.add_argument(
        "--logit-adjust", type=finite_float, metavar="TAU",
        help="post-hoc logit adjustment: logits − τ·log(training prior) (Menon et al. 2021)",
    )  # fmt: skip
    p = sub.add_parser("report", help="write report.html and report.md of run folders")
    p.add_argument("runs", nargs="+", type=Path, help="run folder(s)")
    p.add_argument("--out", type=Path, help="folder for the report (default: the run folder)")
    p.add_argument("--shareable", action="store_true", help="no face image and no file path")
    p = sub.add_parser("compare", help="compare runs side by side, with paired significance tests")
    p.add_argument("runs", nargs="+", type=Path, help="two or more run folders")
    p.add_argument(
        "--out", type=Path, help="folder for comparison.html (default: next to the runs)"
    )
    p.add_argument("--shareable", action="store_true", help="no file path")
    sub.add_parser("models", help="list the model names")
    p = sub.add_parser(
        "demo", help="train and cross-validate the three models on the best data at hand"
    )
    p.add_argument("--data", help="use this source instead of choosing one")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default runs)")


def list_models() -> None:
    """Print the registered model names from a static table (no torch import)."""
    for name, description in MODELS:
        print(f"{name:<16} {description}")
    print("Any torchvision classification model name also works (resnet34, efficientnet_b0, …).")


def run(args: argparse.Namespace, log: Any, progress: bool) -> None:
    """Carry out one of :data:`COMMANDS`."""
    import facecls
    from facecls.report.run_data import check_complete_run

    if args.command in ("train", "cv"):
        config = run_config(args, args.command)
        call = facecls.train if args.command == "train" else facecls.cross_validate
        extras = {"tensorboard": True} if getattr(args, "tensorboard", False) else {}
        call(config, log=log, show_progress=progress, resume=resume_dir(args), **extras)
    elif args.command == "evaluate":
        table = facecls.evaluate(
            args.run, data=args.data, log=log, show_progress=progress,
            trust_pickle=args.trust_pickle, logit_adjust=args.logit_adjust,
            strangers=args.strangers,
        )  # fmt: skip
        shown = {"test": table["summary"], "intervals_95": table["intervals_95"]}
        if "groups" in table:
            shown["groups"] = table["groups"]
        if "openset" in table:
            shown["openset"] = {
                method: {k: v for k, v in row.items() if k != "curve"}
                for method, row in table["openset"]["methods"].items()
            }
        print(json.dumps(shown, indent=2))
    elif args.command == "report":
        for folder in args.runs:  # a mistyped folder is told before the 4 s PyTorch import
            check_complete_run(folder)
        for folder in args.runs:
            out = args.out / folder.name if args.out and len(args.runs) > 1 else args.out
            print(facecls.write_report(folder, out=out, shareable=args.shareable,
                                       show_progress=progress))  # fmt: skip
    elif args.command == "compare":
        for folder in args.runs:
            check_complete_run(folder)
        page = facecls.write_comparison(args.runs, out=args.out, shareable=args.shareable,
                                        echo=print)  # fmt: skip
        print(f"\nThe whole comparison (tests, per-identity tables, figures): {page}")
    elif args.command == "models":
        list_models()
    else:
        facecls.demo(data=args.data, runs_dir=args.runs_dir, log=log, show_progress=progress)
