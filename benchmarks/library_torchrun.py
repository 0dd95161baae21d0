"""``facecls index`` with 2 torchrun ranks against 1, on the same photos, into PostgreSQL.

Indexes the first ``--photos`` LFW-8 photos (linked into a scratch folder) with
``torchrun --nproc-per-node N -m facecls index … --library URL`` for N = 1 and 2, each into a
fresh database, and prints photos/s (wall clock of the whole command, start-up included, and the
ranks' own reading rate), faces stored, and whether the two libraries hold the same faces with
none written twice.

    python tests/pg_server.py start /tmp/pg     # prints a server's URL (its user may createdb)
    nice -n 10 python benchmarks/library_torchrun.py --url postgresql://… [--photos 400]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from _paths import FACENET_WEIGHTS, shared
from facecls.library.store import open_library
from library_index import lfw8


def database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    base, _, query = admin.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="postgresql://… whose user may create databases")
    p.add_argument("--photos", type=int, default=400)
    p.add_argument("--weights", type=Path,
                   default=shared(*FACENET_WEIGHTS))  # fmt: skip
    args = p.parse_args()
    print(f"Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    faces = {}
    with tempfile.TemporaryDirectory(prefix="torchrun-index-") as scratch:
        folder = Path(scratch) / "photos"
        count = lfw8(folder, args.photos)
        for ranks in (1, 2):
            url = database(args.url, f"facecls_bench_ranks{ranks}")
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node", str(ranks), "-m", "facecls", "index", str(folder),
                       "--library", url, "--weights", str(args.weights)]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(done.stderr[-2000:])
            rates = re.findall(r"read at ([\d.]+) photos/s", done.stdout + done.stderr)
            with open_library(url) as lib:
                table = lib.face_table()
                pairs = set(zip(table["photo_id"].tolist(), table["rank"].tolist(), strict=True))
                faces[ranks] = (lib.face_count(), lib.counts()["photos"], len(pairs))
            print(f"{ranks} rank(s): {count} photos in {seconds:.1f} s = {count / seconds:.2f} "
                  f"photos/s with start-up; ranks read at {' + '.join(rates)} photos/s; "
                  f"{faces[ranks][0]} faces in {faces[ranks][1]} photos; load average "
                  f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    same = faces[1] == faces[2] and faces[2][0] == faces[2][2]
    print(f"same faces with 1 and 2 ranks, none twice: {same}")
    print(f"Load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
