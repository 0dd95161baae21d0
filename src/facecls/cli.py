"""Command line: parse arguments, call one library function, return an exit code. No logic here.

Exit codes: 0 done; 1 a run failed (disk full, non-finite loss); 2 bad input (options, data,
model files); 130 / 143 stopped by Ctrl-C / SIGTERM after saving (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facecls.catalog import METHODS, MODELS
from facecls.config import (
    FACES,
    FREEZE,
    IMBALANCE,
    SAMPLERS,
    ConfigError,
    RunConfig,
    device_name,
    from_dict,
    load_yaml,
    to_dict,
)

# argparse destination → (config section, key). Options left unset keep the config's value.
_OPTIONS: dict[str, tuple[str, str]] = {
    "data": ("data", "source"),
    "image_size": ("data", "image_size"),
    "min_images": ("data", "min_images"),
    "split_file": ("data", "split_file"),
    "split_column": ("data", "split_column"),
    "test_fraction": ("data", "test_fraction"),
    "val_fraction": ("data", "val_fraction"),
    "cache_dir": ("data", "cache_dir"),
    "rotation": ("augment", "rotation"),
    "model": ("train", "model"),
    "pretrained": ("train", "pretrained"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "class_weights": ("train", "class_weights"),
    "imbalance": ("train", "imbalance"),
    "tau": ("train", "tau"),
    "beta": ("train", "beta"),
    "drw_epoch": ("train", "drw_epoch"),
    "sampler": ("train", "sampler"),
    "freeze": ("train", "freeze"),
    "unfreeze_epoch": ("train", "unfreeze_epoch"),
    "backbone_lr_scale": ("train", "backbone_lr_scale"),
    "weights": ("train", "weights"),
    "crop": ("data", "crop"),
    "faces": ("data", "faces"),
    "recipe": ("train", "recipe"),
    "optimizer": ("train", "optimizer"),
    "schedule": ("train", "schedule"),
    "label_smoothing": ("train", "label_smoothing"),
    "flip_tta": ("train", "flip_tta"),
    "precision": ("train", "precision"),
    "channels_last": ("train", "channels_last"),
    "compile": ("train", "compile"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "folds": ("train", "folds"),
    "skip_nonfinite": ("train", "skip_nonfinite"),
    "sync_bn": ("train", "sync_bn"),
    "parallel_folds": ("train", "parallel_folds"),
    "name": ("", "name"),
    "runs_dir": ("", "runs_dir"),
}


def _device(name: str) -> str:
    """argparse type of ``--device``: refused when parsed, not after the data is loaded."""
    try:
        return device_name(name)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _add_run_options(p: argparse.ArgumentParser, folds: bool, resume: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder, archive (.tgz/.tar.gz/.tar/.zip), 'lfw' or 'synthetic'")
    g.add_argument("--image-size", type=int, help="square input size in pixels (default 64)")
    g.add_argument("--min-images", type=int, help="keep identities with at least N images")
    g.add_argument("--split-file", help="CSV fixing the test split (e.g. lfw-benchmark-splits.csv)")
    g.add_argument("--split-column", help="column of --split-file (default lfw<min-images>)")
    g.add_argument("--test-fraction", type=float, help="stratified test share (default 0.2)")
    g.add_argument("--val-fraction", type=float, help="validation share for train (default 0.15)")
    g.add_argument(
        "--cache-dir", help="decode/extract cache (default $FACECLS_CACHE or ~/.cache/facecls)"
    )
    g.add_argument(
        "--crop", type=float,
        help="keep the centre square of this fraction of the shorter side before resizing "
        "(default 1; 0.64 keeps LFW's centre 160 of 250 px, the face)",
    )  # fmt: skip
    g.add_argument(
        "--faces", choices=[*FACES, "detect"],
        help="face pipeline: centre (default: centre crop of photos that are faces), align "
        "(find faces with MTCNN, align on 5 landmarks), box (MTCNN box + margin) or detect "
        "(box for facenet, align otherwise)",
    )  # fmt: skip
    g.add_argument("--rotation", type=float, help="random rotation range in degrees (default 10)")
    g = p.add_argument_group("model and training (unset values come from --recipe)")
    g.add_argument(
        "--model", help="baseline, tronnet, resnet18, facenet or any torchvision model name"
    )
    g.add_argument("--pretrained", action="store_true", default=None, help="ImageNet weights")
    g.add_argument(
        "--recipe", choices=["fast", "report"],
        help="fast (default): AdamW, one-cycle, label smoothing 0.1, flip TTA, 30 epochs; "
        "report: the report's Adam lr 1e-4, weight decay 5e-3, constant rate, 10 epochs",
    )  # fmt: skip
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="learning rate (peak of the one-cycle schedule)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--optimizer", choices=["adam", "adamw"])
    g.add_argument("--schedule", choices=["constant", "onecycle"])
    g.add_argument("--label-smoothing", type=float)
    g.add_argument(
        "--flip-tta", action=argparse.BooleanOptionalAction, default=None,
        help="average logits with the mirror image at evaluation",
    )  # fmt: skip
    g.add_argument(
        "--class-weights", choices=["none", "inverse"],
        help="the report's name for --imbalance inverse",
    )  # fmt: skip
    g.add_argument("--seed", type=int)
    g.add_argument("--device", type=_device, help="auto (default), cpu, cuda or cuda:N")
    g.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto: bf16 on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX), else fp32",
    )
    g.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="NHWC memory format (default: on for CUDA and ResNet-style models)",
    )  # fmt: skip
    g.add_argument(
        "--compile", action="store_true", default=None,
        help="torch.compile the model once (reused across folds)",
    )  # fmt: skip
    if folds:
        g.add_argument("--folds", type=int, help="k of stratified k-fold (default 5)")
    g.add_argument(
        "--skip-nonfinite", action="store_true", default=None,
        help="skip batches with a NaN/infinite loss instead of stopping (a sync per step)",
    )  # fmt: skip
    g = p.add_argument_group(
        "several processes (start with torchrun --nproc-per-node N -m facecls …; "
        "--batch-size is the global batch)"
    )
    g.add_argument(
        "--sync-bn", action="store_true", default=None,
        help="synchronise BatchNorm statistics over the processes (CUDA only)",
    )  # fmt: skip
    if folds:
        g.add_argument(
            "--parallel-folds", action="store_true", default=None,
            help="train one fold per process at once instead of each fold with all of them",
        )  # fmt: skip
    g = p.add_argument_group("imbalance (one remedy per run; docs/imbalance.md)")
    g.add_argument(
        "--imbalance", choices=list(IMBALANCE),
        help="loss remedy: inverse / sqrt / effective class weights, drw (deferred "
        "re-weighting), balanced-softmax, logit-adjust (default none)",
    )  # fmt: skip
    g.add_argument("--tau", type=float, help="logit-adjust strength τ (default 1)")
    g.add_argument("--beta", type=float, help="β of effective-number weights (default 0.999)")
    g.add_argument(
        "--drw-epoch", type=int, help="drw: first re-weighted epoch (default: last third)"
    )
    g.add_argument(
        "--sampler", choices=list(SAMPLERS),
        help="re-sampling instead of a loss remedy: class-balanced or sqrt (default none)",
    )  # fmt: skip
    g = p.add_argument_group("fine-tuning a pretrained backbone (docs/models.md)")
    g.add_argument(
        "--weights", help="backbone weights file (safetensors), e.g. FaceNet's CASIA-WebFace file"
    )
    g.add_argument(
        "--freeze", choices=list(FREEZE),
        help="backbone: linear probe; backbone-then-unfreeze: probe, then fine-tune",
    )  # fmt: skip
    g.add_argument("--unfreeze-epoch", type=int, help="first unfrozen epoch (default: after 1/3)")
    g.add_argument(
        "--backbone-lr-scale", type=float,
        help="pretrained backbone lr = lr × this (default 0.1)",
    )  # fmt: skip
    g = p.add_argument_group("run")
    g.add_argument("--config", type=Path, help="YAML config (e.g. a run's config.yaml)")
    g.add_argument("--name", help="run folder name under --runs-dir")
    g.add_argument("--runs-dir", help="where run folders go (default runs)")
    if not resume:
        return
    g.add_argument(
        "--resume", nargs="?", const="", metavar="RUN_DIR",
        help="continue an interrupted run folder (or runs-dir/name with --name); finished "
        "epochs and folds are not redone and the result equals an uninterrupted run",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``facecls`` argument parser with one sub-command per library call."""
    parser = argparse.ArgumentParser(
        prog="facecls",
        description="Train, cross-validate and evaluate CNN face-identity classifiers.",
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors and results")
    _add_comfort_options(parser)
    parser.add_argument(
        "--debug", action="store_true",
        help="show the Python traceback of an unexpected error (or set FACECLS_DEBUG=1)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_options(
        sub.add_parser("train", help="train one model, evaluate on the test part"), False
    )
    _add_run_options(sub.add_parser("cv", help="stratified k-fold cross-validation"), True)
    p = sub.add_parser("evaluate", help="re-evaluate a run's model on its test part")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--data", help="evaluate on this source instead of the run's")
    p.add_argument(
        "--strangers", nargs="+", metavar="PHOTOS",
        help="photos or folders of people not trained on: measure the unknown decision "
        "(FPIR, FNIR, DIR at FPIR 1%%) into openset.json and the report",
    )  # fmt: skip
    p.add_argument(
        "--trust-pickle", action="store_true",
        help="allow a .pt/.pth weights file (pickles can run code; it is still read with "
        "torch.load(weights_only=True))",
    )  # fmt: skip
    p.add_argument(
        "--logit-adjust", type=float, metavar="TAU",
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
    _add_use_commands(sub)
    _add_comfort_commands(sub)
    _add_compare_commands(sub)
    return parser


def resume_dir(args: argparse.Namespace) -> Path | None:
    """The run folder ``--resume`` names: its value, or ``--runs-dir``/``--name``."""
    if getattr(args, "resume", None) is None:  # lr-find has no --resume
        return None
    if args.resume:
        return Path(args.resume)
    if not args.name:
        raise ConfigError("--resume needs a run folder (--resume RUN_DIR) or --name")
    return Path(args.runs_dir or "runs") / args.name


def _add_use_commands(sub: argparse._SubParsersAction) -> None:
    """predict, enroll, export and calibrate: using a trained model (see docs/inference.md)."""
    p = sub.add_parser("predict", help="name the faces in photos (CSV; unknown for strangers)")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("images", nargs="*", type=Path, help="image files and/or folders")
    p.add_argument("--video", help="a video file or a webcam index (0) instead of images")
    p.add_argument("--every", type=int, default=1, help="with --video: every N-th frame")
    p.add_argument("--top-k", type=int, default=5, help="identities listed per face (default 5)")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    p.add_argument(
        "--detect", action="store_true",
        help="find every face in each photo (MTCNN); always on for models trained with "
        "--faces align/box",
    )  # fmt: skip
    p.add_argument(
        "--annotate", type=Path, metavar="DIR|OUT.mp4",
        help="write each photo with boxes and names drawn on it into DIR (with --video: the "
        "video, to OUT.mp4)",
    )  # fmt: skip
    p.add_argument("--threshold", type=float, help="open-set threshold (default: calibrated)")
    p.add_argument("--method", choices=list(METHODS), help="open-set score")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument(
        "--device", type=_device, default="auto", help="auto (default), cpu, cuda (torch backend)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="faces per forward pass")
    p.add_argument(
        "--trust-pickle", action="store_true",
        help="allow a .pt/.pth weights file beside model.json (pickles can run code; it is "
        "still read with torch.load(weights_only=True))",
    )  # fmt: skip
    p = sub.add_parser("enroll", help="add people to a copy of a model without retraining")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("--data", required=True, help="folder or archive: <name>/<photo>")
    p.add_argument("--out", type=Path, help="new bundle folder (default <bundle>-enrolled)")
    p.add_argument(
        "--detect", action="store_true",
        help="cut the main face of each photo (MTCNN; always so for --faces align/box models)",
    )  # fmt: skip
    p = sub.add_parser("export", help="export a model to ONNX and check it against PyTorch")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", type=Path, help="file to write (default model.onnx in the bundle)")
    p.add_argument("--check", nargs="+", type=Path, help="photos for the parity check")
    p = sub.add_parser("calibrate", help="set the open-set (unknown) threshold of a model")
    p.add_argument("model", type=Path, help="run folder (recalibrate from data) or bundle")
    p.add_argument("--method", choices=list(METHODS), help="open-set score")
    p.add_argument("--acceptance", type=float, default=0.95,
                   help="share of correctly named validation faces to accept (default 0.95)")  # fmt: skip
    p.add_argument("--threshold", type=float, help="set this threshold by hand (no data needed)")
    p.add_argument("--data", help="recalibrate on this source instead of the run's")


def _add_compare_commands(sub: argparse._SubParsersAction) -> None:
    """embed, verify, search and serve (see docs/serve.md)."""
    p = sub.add_parser("embed", help="write one embedding per face (safetensors + CSV index)")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("photos", nargs="+", type=Path, help="image files and/or folders")
    p.add_argument("--out", type=Path, required=True, help="safetensors file (index: .csv)")
    p.add_argument(
        "--detect",
        action="store_true",
        help="every face MTCNN finds (always so for --faces align/box models)",
    )
    p = sub.add_parser("verify", help="are two photos the same person? (cosine similarity)")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("a", type=Path, help="first photo")
    p.add_argument("b", type=Path, help="second photo")
    p.add_argument("--threshold", type=float, help="similarity threshold (default: calibrated)")
    p.add_argument("--detect", action="store_true", help="compare the main detected faces")
    p = sub.add_parser("search", help="the gallery faces closest to a photo's face")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("photo", type=Path, help="the photo to look for")
    p.add_argument("--gallery", type=Path, required=True, help="folder of photos (cached)")
    p.add_argument("--top-k", type=int, default=5, help="faces listed (default 5)")
    p.add_argument(
        "--detect",
        action="store_true",
        help="every face MTCNN finds (always so for --faces align/box models)",
    )
    p = sub.add_parser("serve", help="local HTTP service and web page (facecls[serve])")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", help="bearer token every request must carry (required off "
                   "loopback; default $FACECLS_TOKEN)")  # fmt: skip
    p.add_argument(
        "--store", type=Path, help="folder of enrolled versions (default <bundle>.served)"
    )
    p.add_argument("--gallery", type=Path, help="folder of photos /search looks in")
    p.add_argument(
        "--detect",
        action="store_true",
        help="find every face in uploads (MTCNN; always so for --faces align/box models)",
    )
    p.add_argument("--threads", type=int, help="PyTorch threads (default: half the cores)")


def _compare(args: argparse.Namespace, log: Any) -> None:
    import facecls

    if args.command == "embed":
        facecls.embed(args.model, args.photos, args.out, args.detect, log=log)
    elif args.command == "verify":
        print(facecls.verify(args.model, args.a, args.b, args.threshold, args.detect).line())
    elif args.command == "search":
        result = facecls.search(args.model, args.photo, args.gallery, args.top_k, args.detect,
                                log=log)  # fmt: skip
        for rank, match in enumerate(result.matches, 1):
            face = "" if match.face is None else f" face {match.face}"
            print(f"{rank}. {match.similarity:.4f}  {match.path}{face}")
    else:
        facecls.serve(args.model, args.host, args.port, args.token, args.store, args.gallery,
                      args.detect, log=log, threads=args.threads)  # fmt: skip


def config_from_args(args: argparse.Namespace, command: str) -> RunConfig:
    """Merge a ``--config`` file (if any) with the options given on the command line.

    With ``--resume`` the run's own ``config.yaml`` is the base, so only options that are given
    can contradict it (the library refuses those).
    """
    base = args.config
    run = resume_dir(args)
    if run is not None and base is None:
        base = run / "config.yaml"
        if not base.is_file():
            raise ConfigError(f"--resume {run}: not a facecls run folder (no config.yaml)")
    values: dict[str, Any] = to_dict(load_yaml(base)) if base else {}
    values.setdefault(
        "name", f"{command}-{args.model or values.get('train', {}).get('model', 'baseline')}"
    )
    for dest, (section, key) in _OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if section:
            values.setdefault(section, {})[key] = value
        else:
            values[key] = value
    return from_dict(values)


def _run(args: argparse.Namespace) -> int:
    import facecls

    log, progress = _console(args)
    if args.command in ("completion", "tune", "lr-find"):
        _comfort(args, log, progress)
    elif args.command in ("train", "cv"):
        config = config_from_args(args, args.command)
        call = facecls.train if args.command == "train" else facecls.cross_validate
        call(config, log=log, show_progress=progress, resume=resume_dir(args), **_extras(args))
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
        for run in args.runs:
            out = args.out / run.name if args.out and len(args.runs) > 1 else args.out
            print(facecls.write_report(run, out=out, shareable=args.shareable,
                                       show_progress=progress))  # fmt: skip
    elif args.command == "compare":
        print(facecls.write_comparison(args.runs, out=args.out, shareable=args.shareable))
    elif args.command == "models":
        for name, description in MODELS:  # a static table: no torch import to list names
            print(f"{name:<16} {description}")
        print(
            "Any torchvision classification model name also works (resnet34, efficientnet_b0, …)."
        )
    elif args.command in ("predict", "enroll", "export", "calibrate"):
        _use(args, log, progress)
    elif args.command in ("embed", "verify", "search", "serve"):
        _compare(args, log)
    elif args.command == "demo":
        facecls.demo(data=args.data, runs_dir=args.runs_dir, log=log, show_progress=progress)
    return 0


def _use(args: argparse.Namespace, log: Any, progress: bool) -> None:
    import facecls

    if args.command == "predict" and args.video is not None:
        facecls.predict_video(args.model, args.video, args.out, args.every, args.annotate,
                              args.detect, args.device, log)  # fmt: skip
    elif args.command == "predict" and not args.images:
        raise ValueError("predict needs image files or folders, or --video FILE|CAMERA")
    elif args.command == "predict":
        facecls.predict(
            args.model, args.images, args.out, args.top_k, args.detect, args.backend,
            args.threshold, args.method, args.device, args.batch_size, log, args.trust_pickle,
            args.annotate,
            show_progress=progress,
        )  # fmt: skip
    elif args.command == "enroll":
        facecls.enroll(
            args.model, args.data, args.out, args.detect, log=log, show_progress=progress
        )
    elif args.command == "export":
        result = facecls.export_onnx(args.model, args.out, args.check, show_progress=progress)
        print(
            f"Exported {result.path}; parity with PyTorch on {result.checked_on}: max abs "
            f"difference {result.max_abs_diff:.2e}, same top-1 {result.top1_agreement:.1%}"
        )
    else:
        openset = facecls.calibrate(
            args.model, args.method, args.acceptance, args.threshold, args.data, log, progress
        )
        print(json.dumps(openset, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facecls`` command; returns the process exit code."""
    args = build_parser().parse_args(
        argv
    )  # before the imports below: --help, --version need no torch
    if args.command == "models":  # a static table: answers without importing torch
        return _run(args)
    from facecls.atomic import WriteError
    from facecls.bundle import BundleError
    from facecls.data.sources import DataError
    from facecls.training.distributed import process_group
    from facecls.training.fold import NonFiniteError
    from facecls.training.interrupt import Interrupted

    try:
        with process_group():  # under torchrun: ended once the command is done
            return _run(args)
    except (NonFiniteError, WriteError) as error:
        print(f"facecls: error: {error}", file=sys.stderr)
        return 1
    except (
        ConfigError, DataError, BundleError, FileNotFoundError, ValueError, ImportError
    ) as error:  # fmt: skip
        print(f"facecls: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stopped:
        print(
            f"facecls: {stopped}; the last completed epoch is saved. Resume with: "
            f"facecls {stopped.command} --resume {stopped.run_dir}",
            file=sys.stderr,
        )
        return stopped.exit_code
    except KeyboardInterrupt:
        print("facecls: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the backstop: one line, the traceback only when asked for
        return _unexpected(error, getattr(args, "debug", False))


def _unexpected(error: Exception, debug: bool) -> int:
    """Report an error no command anticipated: one line, or the traceback with ``--debug``."""
    debug = debug or os.environ.get("FACECLS_DEBUG", "") not in ("", "0")
    if debug:
        traceback.print_exception(error)
    where = "" if debug else "; run with --debug (or FACECLS_DEBUG=1) for the traceback"
    print(f"facecls: error: {type(error).__name__}: {error}{where}", file=sys.stderr)
    return 1


# --- comfort (issue 16): --version, --verbose, completion, --tensorboard, tune, lr-find -------


def _add_comfort_options(parser: argparse.ArgumentParser) -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("facecls")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"facecls {installed}")
    parser.add_argument(
        "--verbose", action="store_true", help="also print debug detail (always in run.log)"
    )


def _add_comfort_commands(sub: argparse._SubParsersAction) -> None:
    for command in ("train", "cv"):
        sub.choices[command].add_argument(
            "--tensorboard", action="store_true",
            help="write live curves to RUN_DIR/tensorboard (pip install 'facecls[tensorboard]')",
        )  # fmt: skip
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=["bash", "zsh"])
    p = sub.add_parser(
        "tune",
        help="search lr, weight decay, imbalance remedy and sampler (Optuna; docs/comfort.md)",
    )
    _add_run_options(p, True)
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
    _add_run_options(p, False, resume=False)
    g = p.add_argument_group("range test (the lr rises exponentially; no model is kept)")
    g.add_argument("--steps", type=int, default=100, help="mini-batches at most (default 100)")
    g.add_argument("--start-lr", type=float, default=1e-7, help="first lr (default 1e-7)")
    g.add_argument("--end-lr", type=float, default=10.0, help="last lr (default 10)")


def _console(args: argparse.Namespace) -> tuple[Any, bool]:
    """The ``log`` callable (records of the ``facecls`` logger) and whether to show progress."""
    from facecls.logs import configure_console, log_to

    configure_console(quiet=args.quiet, verbose=getattr(args, "verbose", False))
    return log_to(), not args.quiet


def _extras(args: argparse.Namespace) -> dict[str, Any]:
    return {"tensorboard": True} if getattr(args, "tensorboard", False) else {}


def _comfort(args: argparse.Namespace, log: Any, progress: bool) -> None:
    if args.command == "completion":
        import shtab

        print(shtab.complete(build_parser(), shell=args.shell))
        return
    import facecls

    if args.command == "lr-find":
        config = config_from_args(args, "lr-find")
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
    result = facecls.tune(
        config_from_args(args, "tune"), trials=args.trials, mode=args.mode,
        resume=resume_dir(args), log=log, show_progress=progress,
    )  # fmt: skip
    print(f"Best configuration: {result.best_config} (train with --config)")


if __name__ == "__main__":
    sys.exit(main())
