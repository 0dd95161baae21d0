"""index: the face library (see docs/library.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

COMMANDS = ("index",)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of :data:`COMMANDS`."""
    p = sub.add_parser(
        "index", help="find, embed and store every face of a photo collection in a face library"
    )
    p.add_argument("photos", nargs="+", type=Path, help="folders (recursive), photos, archives")
    p.add_argument("--library", required=True, metavar="LIB",
                   help="library folder (made if new) or postgresql://user:pw@host/db")  # fmt: skip
    p.add_argument("--model", type=Path, metavar="RUN",
                   help="embed with a trained model's backbone and face pipeline "
                   "(default: --backbone's)")  # fmt: skip
    p.add_argument("--backbone", choices=["facenet", "sface"],
                   help="the face backbone without --model (default: the library's own; "
                   "facenet for a new library)")  # fmt: skip
    p.add_argument(
        "--weights",
        type=Path,
        help="the backbone's weights file (default: the one facecls weights get stored)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--min-face", type=int, default=40, metavar="PX",
                   help="smallest face looked for, in pixels of the photo (default 40)")  # fmt: skip
    p.add_argument("--workers", type=int,
                   help="photos processed at once, one thread each (default: the cores)")  # fmt: skip
    p.add_argument("--reembed", action="store_true",
                   help="a library indexed with another model: re-embed its faces with this one "
                   "(cut again from the photos) instead of refusing")  # fmt: skip
    p.add_argument("--commit-every", type=int, default=32, metavar="N",
                   help="photos per transaction; a killed index loses at most these (default 32)")  # fmt: skip


def run(args: argparse.Namespace, log: Any, progress: bool) -> None:
    """Carry out one of :data:`COMMANDS`."""
    from facecls.library.index import index_photos
    from facecls.training.distributed import context, cpu_cores

    if args.min_face < 12:
        raise ValueError(f"--min-face must be at least 12 px (MTCNN's window), not {args.min_face}")
    # Under torchrun each rank indexes its share of the photos into the one library.
    ctx = context(args.device)
    if ctx.distributed and args.reembed:
        raise ValueError("--reembed runs in one process: re-embed first, then index with torchrun")
    device = str(ctx.device) if ctx.distributed else args.device
    index_photos(
        args.photos, args.library, model=args.model, weights=args.weights, device=device,
        backbone=args.backbone,
        min_face=args.min_face,
        workers=args.workers or max(1, cpu_cores() // ctx.local_world_size),
        commit_every=args.commit_every, reembed=args.reembed,
        shard=(ctx.rank, ctx.world_size), show_progress=progress and ctx.is_main,
        log=log if ctx.is_main or not ctx.distributed else _rank_log(log, ctx.rank),
    )  # fmt: skip
    ctx.barrier()


def _rank_log(log: Any, rank: int) -> Any:
    return lambda message: log(f"[rank {rank}] {message}")
