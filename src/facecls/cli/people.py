"""cluster, people and export-folders: from a face library's faces to named people (see
docs/library.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facecls.catalog import CLUSTER_METHODS

COMMANDS = ("cluster", "people", "export-folders")
LIBRARY_HELP = "library folder (or postgresql:// URL) made by facecls index"


def _face_ids(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a face id is a number, not {text!r}") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of :data:`COMMANDS`."""
    p = sub.add_parser("cluster", help="group a library's faces into people (unnamed clusters)")
    p.add_argument("library", help=LIBRARY_HELP)
    p.add_argument(
        "--method", choices=CLUSTER_METHODS, help="clustering method (default agglomerative)"
    )
    p.add_argument("--threshold", type=float, help="cosine similarity of the cut (default: "
                   "the method's, chosen on LFW)")  # fmt: skip
    p.add_argument("--min-size", type=int, default=2, help="smaller clusters stay unclustered")
    p.add_argument("--model", type=Path, help="join named people at this trained model's "
                   "calibrated verify threshold")  # fmt: skip
    p = sub.add_parser("people", help="list, name, merge, split, forget people; undo")
    p.add_argument("library", help=LIBRARY_HELP)
    p.add_argument(
        "--all",
        action="store_true",
        help="list forgotten (hidden) people too (the listing: no ACTION)",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser("name", help="name a cluster or rename a person")
    a.add_argument("person", help="id or name")
    a.add_argument("name", help="the name (any text; quote it)")
    a = actions.add_parser("merge", help="merge people into the last one given")
    a.add_argument("people", nargs="+", help="ids or names; all but the last go into the last")
    a = actions.add_parser("split", help="split faces off into a new cluster")
    a.add_argument("person", help="id or name")
    a.add_argument("faces", nargs="*", type=_face_ids, help="face ids (none: re-cluster it)")
    a = actions.add_parser("forget", help="not a person I care about (hidden)")
    a.add_argument("person", help="id or name")
    a = actions.add_parser("remember", help="show a forgotten person again")
    a.add_argument("person", help="id or name")
    a = actions.add_parser("move", help="move faces to a person or cluster")
    a.add_argument("faces", nargs="+", type=_face_ids, help="face ids")
    a.add_argument("--to", required=True, dest="person", help="id or name")
    a = actions.add_parser("remove", help="take faces out of their person")
    a.add_argument("faces", nargs="+", type=_face_ids, help="face ids")
    a = actions.add_parser("faces", help="a person's faces: id, photo, box")
    a.add_argument("person", help="id or name")
    actions.add_parser("undo", help="undo the latest action")
    actions.add_parser("history", help="the latest actions")
    a = actions.add_parser("suggest", help="the labels that would help most, best first")
    a.add_argument("--limit", type=int, default=20, help="questions listed (default 20)")
    a = actions.add_parser("write-xmp", help="XMP sidecars with the named face regions")
    a.add_argument("--out", type=Path, help="folder for the sidecars (default: beside the photos)")
    p = sub.add_parser("export-folders", help="one folder of face images per named person")
    p.add_argument("library", help=LIBRARY_HELP)
    p.add_argument("out", type=Path, help="new folder (or an earlier export) to write")
    p.add_argument("--size", type=int, default=250, help="side of the face images (default 250)")


def run(args: argparse.Namespace, log: Any, progress: bool) -> None:
    """Carry out one of :data:`COMMANDS`."""
    from facecls.library import people_commands as people

    if args.command == "cluster":
        people.cluster_command(args.library, args.method, args.threshold, args.min_size,
                               args.model, log=log)  # fmt: skip
    elif args.command == "export-folders":
        people.export_command(args.library, args.out, args.size, log=log)
    elif args.action is None:
        print(people.listing(args.library, hidden=args.all))
    elif args.all:
        raise ValueError(
            f"people --all lists forgotten people too: it is for the listing, not {args.action}"
        )
    else:
        options = {k: v for k, v in vars(args).items() if k in people.ACTION_OPTIONS}
        print(people.people_command(args.library, args.action, log=log, **options))
