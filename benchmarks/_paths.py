"""Where the benchmarks find the read-only ``shared`` folder (LFW, its splits, the weights).

``$FACECLS_SHARED`` when set; else the first ``shared/`` beside the repository or beside one of
the folders above it (a git worktree sits a level deeper); else ``../shared``, so that a
missing file is named where it was looked for. Nothing is ever copied into the repository.

    from _paths import shared
    shared("datasets", "lfw-deepfunneled.tgz")

``python benchmarks/_paths.py`` prints the folder (for the shell scripts).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LFW_ARCHIVE = ("datasets", "lfw-deepfunneled.tgz")
LFW_SPLITS = ("datasets", "lfw-benchmark-splits.csv")
LFW_PAIRS = ("datasets", "lfw-pairs.txt")
FACENET_WEIGHTS = ("weights", "facenet-inception-resnet-v1-casia-webface.safetensors")


@cache
def _root() -> Path:
    if os.environ.get("FACECLS_SHARED"):
        return Path(os.environ["FACECLS_SHARED"]).expanduser()
    for folder in REPO.parents:
        if (folder / "shared" / "datasets").is_dir() or (folder / "shared" / "weights").is_dir():
            return folder / "shared"
    return REPO.parent / "shared"


def shared(*parts: str) -> Path:
    """``shared/<parts>``, e.g. ``shared(*LFW_ARCHIVE)`` or ``shared("weights")``."""
    return _root().joinpath(*parts)


if __name__ == "__main__":
    print(shared())
