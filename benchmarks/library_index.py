"""Index LFW-8's photos into a face library, then re-index the unchanged collection.

LFW-8 is the 4,822 photos of LFW's 217 people with at least 8 (the split file's ``lfw8``
column). They are linked into a scratch folder (nothing is copied) and indexed with FaceNet and
the ``box`` pipeline (``facecls index``'s default, here with ``--weights``), or with ``--backbone
sface`` (SFace from the weights cache, the ``arcface`` pipeline), or both one after the other
(``both``: their speeds as a ratio in one run), then indexed again unchanged. Prints photos/s
(wall and CPU seconds per photo, all threads), faces, the time of the unchanged re-index, the
hardware and the load average.

    nice -n 10 python benchmarks/library_index.py [--limit N] [--library postgresql://…]
    nice -n 10 python benchmarks/library_index.py --backbone both --limit 1500
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from _paths import FACENET_WEIGHTS, LFW_ARCHIVE, LFW_SPLITS, shared
from facecls.data.archive import extract_archive
from facecls.data.sources import default_cache_dir
from facecls.library.embedder import Embedder, backbone_embedder
from facecls.library.index import index_photos
from facecls.library.store import open_library


def lfw8(folder: Path, limit: int | None) -> int:
    """Symlink LFW-8's photos into ``folder`` (one folder per person); answers how many."""
    root = extract_archive(shared(*LFW_ARCHIVE), default_cache_dir())
    with open(shared(*LFW_SPLITS), newline="") as f:
        paths = [row["path"] for row in csv.DictReader(f) if row["lfw8"]]
    for relative in paths[:limit]:
        link = folder / Path(relative).relative_to("lfw-deepfunneled")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(root / relative)
    return len(paths[:limit])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", type=Path,
                   default=shared(*FACENET_WEIGHTS))  # fmt: skip
    p.add_argument("--library", help="a postgresql:// URL (default: a scratch SQLite library)")
    p.add_argument("--limit", type=int, help="index only the first N photos")
    p.add_argument("--backbone", choices=["facenet", "sface", "both"], default="facenet")
    args = p.parse_args()
    if args.library and args.backbone == "both":
        p.error("--backbone both needs two libraries: leave out --library")
    print(f"Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} on {torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lfw8-index-") as scratch:
        photos = Path(scratch) / "lfw8"
        count = lfw8(photos, args.limit)
        names = ("facenet", "sface") if args.backbone == "both" else (args.backbone,)
        for name in names:
            library = args.library or str(Path(scratch) / f"library-{name}")
            weights = args.weights if name == "facenet" else None
            index_once(photos, count, library, backbone_embedder(name, weights, "cpu"), name)
    print(f"Load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def index_once(photos: Path, count: int, library: str, embedder: Embedder, name: str) -> None:
    """Index ``photos`` into ``library`` with ``embedder``, then again unchanged; print both."""
    start, cpu = time.perf_counter(), time.process_time()
    report = index_photos([photos], library, embedder=embedder, log=lambda _m: None)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"index ({name}) {count} LFW-8 photos: {seconds:.1f} s, {count / seconds:.2f} photos/s "
          f"({cpu / count:.3f} CPU s/photo), {report.faces} faces "
          f"({report.new_photos} photos stored, {len(report.unreadable)} unreadable); "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    start = time.perf_counter()
    again = index_photos([photos], library, embedder=embedder, log=lambda _m: None)
    print(f"re-index unchanged: {time.perf_counter() - start:.2f} s "
          f"({again.unchanged} unchanged, {again.read} read)")  # fmt: skip
    with open_library(library) as lib:
        print(f"library: {lib.counts()}")


if __name__ == "__main__":
    main()
