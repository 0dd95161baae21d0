"""embed, verify, search and serve: comparing faces, and the local service (see docs/serve.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facecls.cli.options import add_require_digest
from facecls.numbers import finite_float

COMMANDS = ("embed", "verify", "search", "serve")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of :data:`COMMANDS`."""
    p = sub.add_parser("embed", help="write one embedding per face (safetensors + CSV index)")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("photos", nargs="+", type=Path, help="image files and/or folders")
    p.add_argument("--out", type=Path, required=True, help="safetensors file (index: .csv)")
    p.add_argument(
        "--detect",
        action="store_true",
        help="every face MTCNN finds (always so for --faces align/box models)",
    )
    add_require_digest(p)
    p = sub.add_parser("verify", help="are two photos the same person? (cosine similarity)")
    p.add_argument("model", type=Path, help="run folder or model bundle")
    p.add_argument("a", type=Path, help="first photo")
    p.add_argument("b", type=Path, help="second photo")
    p.add_argument(
        "--threshold", type=finite_float, help="similarity threshold (default: calibrated)"
    )
    p.add_argument("--detect", action="store_true", help="compare detected faces (main first)")
    p.add_argument(
        "--face", type=int, nargs="+", metavar="N",
        help="which face of a photo with several to compare (0 = the main face): one index "
        "for both photos, or one for each",
    )  # fmt: skip
    add_require_digest(p)
    p = sub.add_parser(
        "search", help="the gallery's (or library's) faces closest to a photo's face",
        usage="facecls search MODEL PHOTO --gallery DIR|FILE | facecls search PHOTO --library LIB",
    )  # fmt: skip
    p.add_argument("inputs", nargs="+", type=Path, metavar="[MODEL] PHOTO",
                   help="run folder or bundle, and the photo to look for (--library: the photo; "
                   "the library's own model embeds it)")  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gallery", type=Path,
                       help="folder of photos (cached), or a facecls embed file")  # fmt: skip
    where.add_argument("--library", metavar="LIB",
                       help="a face library (folder or postgresql://): search all its faces")  # fmt: skip
    p.add_argument("--model", type=Path, metavar="RUN",
                   help="with --library: the trained model it was indexed with (default FaceNet)")  # fmt: skip
    p.add_argument("--weights", type=Path, help="with --library: the FaceNet weights file")
    p.add_argument("--top-k", type=int, default=5, help="faces listed (default 5)")
    p.add_argument(
        "--detect",
        action="store_true",
        help="every face MTCNN finds (always so for --faces align/box models)",
    )
    add_require_digest(p)
    p = sub.add_parser("serve", help="local HTTP service and web page (facecls[serve])")
    p.add_argument("model", type=Path, nargs="?", help="run folder or model bundle")
    p.add_argument("--library", metavar="LIB", help="a face library: its People page (at / "
                   "without a model, else at /people/), to name and fix its clusters")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", help="bearer token every request must carry (required off "
                   "loopback; default $FACECLS_TOKEN)")  # fmt: skip
    p.add_argument(
        "--store", type=Path, help="folder of enrolled versions (default <bundle>.served)"
    )
    p.add_argument("--gallery", type=Path,
                   help="folder of photos, or a facecls embed file, /search looks in")  # fmt: skip
    p.add_argument(
        "--detect",
        action="store_true",
        help="find every face in uploads (MTCNN; always so for --faces align/box models)",
    )
    p.add_argument("--threads", type=int, help="PyTorch threads (default: half the cores)")
    add_require_digest(p, default=True)


def run(args: argparse.Namespace, log: Any, progress: bool) -> None:
    """Carry out one of :data:`COMMANDS`."""
    import facecls

    if args.command == "embed":
        facecls.embed(args.model, args.photos, args.out, args.detect, log=log,
                      require_digest=args.require_digest, show_progress=progress)  # fmt: skip
    elif args.command == "verify":
        answer = facecls.verify(args.model, args.a, args.b, args.threshold, args.detect,
                                face=args.face, require_digest=args.require_digest)  # fmt: skip
        print(answer.line())
    elif args.command == "search":
        _search(args, log, progress)
    else:
        facecls.serve(args.model, args.host, args.port, args.token, args.store, args.gallery,
                      args.detect, log=log, threads=args.threads, quiet=args.quiet,
                      require_digest=args.require_digest, library=args.library)  # fmt: skip


def _search(args: argparse.Namespace, log: Any, progress: bool) -> None:
    import facecls

    wanted = 1 if args.library else 2
    if len(args.inputs) != wanted:
        raise ValueError("search takes MODEL PHOTO with --gallery, or PHOTO with --library")
    if not args.library:  # the gallery's model is the first argument
        given = [f for f, v in (("--model", args.model), ("--weights", args.weights)) if v]
        if given:
            raise ValueError(
                f"search {given[0]} is for --library; with --gallery the model is the first "
                "argument (search MODEL PHOTO --gallery DIR)"
            )
    if args.library:
        found = facecls.search_library(args.inputs[0], args.library, args.top_k, args.model,
                                       args.weights, log=log,
                                       require_digest=args.require_digest)  # fmt: skip
        for rank, match in enumerate(found.matches, 1):
            who = f"  [{match.person}]" if match.person else ""
            print(f"{rank}. {match.similarity:.4f}  {match.path} face {match.face}{who}")
        return
    result = facecls.search(*args.inputs, args.gallery, args.top_k, args.detect, log=log,
                            require_digest=args.require_digest,
                            show_progress=progress)  # fmt: skip
    for rank, match in enumerate(result.matches, 1):
        face = "" if match.face is None else f" face {match.face}"
        mark = "" if match.same is None else ("same   " if match.same else "       ")
        print(f"{rank}. {match.similarity:.4f}  {mark}{match.path}{face}")
    if result.threshold is None:
        print("(this model has no verify threshold: no match is marked as the same person)")
    else:
        far = "" if result.far is None else f", false-accept rate {result.far:.1%}"
        print(f"(same: similarity >= {result.threshold:.4f}, the model's verify threshold"
              f"{far})")  # fmt: skip
