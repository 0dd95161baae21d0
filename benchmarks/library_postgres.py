"""The face library's engines at a million faces: time to add them, and how soon another
process sees a new face.

Adds ``--faces`` synthetic 512-d unit vectors (10 faces per synthetic photo, 10,000 faces per
transaction) through the library's own API, to PostgreSQL (``--url``) and to an embedded SQLite
library; then, with the million stored, a second process waits for changes
(``wait_for_change``: LISTEN/NOTIFY on PostgreSQL, polling the change counter on SQLite) while
this one adds one photo at a time: the time from the writer's commit returning to the watcher
holding the new face (read through ``changes_since``), median and 95th percentile.

    python tests/pg_server.py start /tmp/pg     # prints a server's URL (or use your own)
    nice -n 10 python benchmarks/library_postgres.py --url postgresql://… [--faces 1000000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from facecls.library.store import FileStamp, ModelKey, NewFace, NewPhoto, open_library

KEY = ModelKey("synthetic", "0" * 64, "box", 160, 512)
PER_PHOTO, PER_WRITE = 10, 10_000


def photos(first: int, count: int, rng: np.random.Generator) -> list[NewPhoto]:
    vectors = rng.standard_normal((count * PER_PHOTO, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = []
    for n in range(count):
        faces = [NewFace((10.0 * k, 20.0, 10.0 * k + 60, 90.0), None, 0.99, vectors[n * PER_PHOTO + k])
                 for k in range(PER_PHOTO)]  # fmt: skip
        number = first + n
        out.append(NewPhoto(f"{number:064x}", 4032, 3024, faces,
                            [FileStamp(f"/photos/{number:08d}.jpg", 3_000_000, number)]))  # fmt: skip
    return out


def fill(location: str, total: int) -> float:
    """Add ``total`` faces; answers the seconds it took."""
    rng = np.random.default_rng(0)
    with open_library(location, create=True) as lib:
        lib.claim_model(KEY)
        start = time.perf_counter()
        for first in range(0, total // PER_PHOTO, PER_WRITE // PER_PHOTO):
            lib.add_photos(photos(first, PER_WRITE // PER_PHOTO, rng))
        seconds = time.perf_counter() - start
        assert lib.face_count() == total
    return seconds


def watch(location: str, rounds: int, seen: multiprocessing.Queue) -> None:
    with open_library(location) as lib:
        seq = lib.seq()
        seen.put(("ready", 0.0))
        for _ in range(rounds):
            while True:
                lib.wait_for_change(seq, 30.0)
                changes = lib.changes_since(seq)
                if len(changes.added):
                    seq = changes.seq
                    seen.put(("face", time.monotonic()))  # CLOCK_MONOTONIC: one clock per machine
                    break


def latency(location: str, rounds: int = 30) -> list[float]:
    """Milliseconds from a commit returning to another process holding the new face."""
    spawn = multiprocessing.get_context("spawn")
    seen: multiprocessing.Queue = spawn.Queue()
    watcher = spawn.Process(target=watch, args=(location, rounds, seen))
    watcher.start()
    seen.get(timeout=120)
    rng, out = np.random.default_rng(1), []
    with open_library(location) as lib:
        for n in range(rounds):
            time.sleep(0.05)
            lib.add_photos(photos(10**8 + n, 1, rng))
            done = time.monotonic()
            out.append((seen.get(timeout=60)[1] - done) * 1000)
    watcher.join(60)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="postgresql://… of an empty database")
    p.add_argument("--faces", type=int, default=1_000_000)
    args = p.parse_args()
    print(f"Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="library-bench-") as scratch:
        for name, location in (("PostgreSQL", args.url), ("SQLite", str(Path(scratch) / "lib"))):
            seconds = fill(location, args.faces)
            print(f"{name}: {args.faces:,} faces added in {seconds:.1f} s "
                  f"({args.faces / seconds:,.0f} faces/s, {PER_WRITE:,} per transaction); "
                  f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
            ms = np.array(latency(location))
            print(
                f"{name}: a second process sees a new face {np.median(ms):.1f} ms after the "
                f"commit (median of {len(ms)}; 95th percentile {np.percentile(ms, 95):.1f} ms)"
            )
    print(f"Load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
