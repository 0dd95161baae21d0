"""predict, enroll, export and calibrate: using a trained model (see docs/inference.md)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facecls.catalog import METHODS
from facecls.cli.options import add_require_digest, device_type
from facecls.numbers import finite_float

COMMANDS = ("predict", "enroll", "export", "calibrate")
OUT = Path("predictions.csv")  # predict's CSV when --out is not given


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of :data:`COMMANDS`."""
    p = sub.add_parser("predict", help="name the faces in photos (CSV; unknown for strangers)")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("images", nargs="*", type=Path, help="image files and/or folders")
    p.add_argument("--video", help="a video file or a webcam index (0) instead of images")
    p.add_argument(
        "--library", metavar="LIB",
        help="instead of images: name the faces of this face library that no person labelled, "
        "as suggestions (never over a person's label)",
    )  # fmt: skip
    p.add_argument("--every", type=int, help="with --video: every N-th frame (default 1)")
    p.add_argument("--top-k", type=int, help="identities listed per face, photos only (default 5)")
    p.add_argument("--out", type=Path, help="CSV to write (default predictions.csv)")
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
    p.add_argument(
        "--threshold", type=finite_float, help="open-set threshold (default: calibrated)"
    )
    p.add_argument("--method", choices=list(METHODS), help="open-set score")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument(
        "--device",
        type=device_type,
        default="auto",
        help="auto (default), cpu, cuda (torch backend)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="faces per forward pass (default 64)")
    add_require_digest(p)
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
    p.add_argument(
        "--fpir", type=float,  # check_fpir refuses nan and the rest in one line
        help="share of strangers named at the operating point, in (0, 0.5] (default 0.01): "
        "the threshold names that share of pseudo-strangers (validation people left out)",
    )  # fmt: skip
    p.add_argument(
        "--acceptance", type=finite_float,
        help="the older rule instead: accept this share of correctly named validation faces "
        "(e.g. 0.95)",
    )  # fmt: skip
    p.add_argument(
        "--threshold", type=finite_float, help="set this threshold by hand (no data needed)"
    )
    p.add_argument("--data", help="recalibrate on this source instead of the run's")
    p.add_argument(
        "--strangers", nargs="+", metavar="PHOTOS",
        help="photos (files, folders: one folder per person) of people the model must not "
        "name, or a face library (its forgotten people): thresholds name --fpir of them "
        "instead of pseudo-strangers",
    )  # fmt: skip


def run(args: argparse.Namespace, log: Any, progress: bool) -> None:
    """Carry out one of :data:`COMMANDS`."""
    import facecls

    if args.command == "predict" and args.video is not None and args.images:
        raise ValueError(
            f"predict: photos ({args.images[0]}) and --video {args.video} given; name the faces "
            "of one at a time (a second command for the other)"
        )
    if args.command == "predict":
        _check_predict(args)
    if args.command == "predict" and args.library is not None:
        from facecls.library.suggest import suggest

        suggest(args.library, args.model, args.device, args.batch_size, log, args.method,
                args.threshold, args.backend, args.trust_pickle, args.require_digest)  # fmt: skip
    elif args.command == "predict" and args.video is not None:
        every = 1 if args.every is None else args.every
        facecls.predict_video(
            args.model, args.video, args.out or OUT, every, args.annotate, args.detect,
            args.device, log, progress, args.method, args.threshold, args.backend,
            args.trust_pickle, args.require_digest, args.batch_size,
        )  # fmt: skip
    elif args.command == "predict" and not args.images:
        raise ValueError("predict needs image files or folders, or --video FILE|CAMERA")
    elif args.command == "predict":
        facecls.predict(
            args.model, args.images, args.out or OUT, 5 if args.top_k is None else args.top_k,
            args.detect, args.backend, args.threshold, args.method, args.device, args.batch_size,
            log, args.trust_pickle, args.annotate,
            show_progress=progress, require_digest=args.require_digest,
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
            args.model, args.method, args.acceptance, args.threshold, args.data, log, progress,
            fpir=args.fpir, strangers=args.strangers,
        )  # fmt: skip
        _refresh_pages(args.model, log)
        print(json.dumps(openset, indent=2))


def _refresh_pages(model: Path, log: Callable[[str], None]) -> None:
    """After a calibration, the run's model card and report show its new operating point
    (nothing for a bundle outside a run folder, or a run without them)."""
    from facecls.report.card import CARD_NAME
    from facecls.report.write import write_model_card, write_report_safely

    run_dir = model if (model / "config.yaml").is_file() else model.parent
    if not (run_dir / "config.yaml").is_file():
        return
    if (run_dir / "model" / CARD_NAME).is_file():
        log(f"Model card: {write_model_card(run_dir)}")
    if (run_dir / "report.html").is_file():
        write_report_safely(run_dir, log)


def _check_predict(args: argparse.Namespace) -> None:
    """Refuse, in one line, an option the chosen kind of predict would not use."""
    if args.library is not None:
        if args.images or args.video is not None:
            raise ValueError("predict --library names the library's faces: give no images")
        if args.annotate is not None:
            raise ValueError(
                f"predict --library writes its names into the library, not onto photos: "
                f"--annotate {args.annotate} is for photos given by name"
            )
        if args.out is not None:
            raise ValueError(
                f"predict --library writes its names into the library as suggestions, no CSV: "
                f"--out {args.out} is for photos or a video"
            )
        if args.top_k is not None:
            raise ValueError(
                "predict --library suggests each face's one name: --top-k is for photos"
            )
    if args.every is not None and args.video is None:
        raise ValueError(f"--every {args.every} reads every N-th frame: it is for --video")
    if args.video is not None and args.top_k is not None:
        raise ValueError(
            "predict --video writes each face's top identity (top1 and its probability): "
            "--top-k is for photos"
        )
