"""Load on the local service: throughput and latency of /predict, and enrollments under load.

Starts ``facecls serve`` in a child process on 127.0.0.1 (loopback only), then

1. 8 concurrent clients × 200 requests of ``/predict``, each a single-face photo: requests per
   second, p50 and p99 latency, errors;
2. 2 clients enrolling (``--enrollments`` people each, 3 photos per person) while 6 predict:
   the same figures, and whether every enrolled person is present afterwards.

Without ``--run`` a small baseline is trained on synthetic faces first (about a minute); with
``--run RUN --photos DIR`` the service serves that run and uploads the photos under ``DIR``.

    PYTHONPATH=src python benchmarks/serve_load.py [--run RUN --photos DIR] [--clients 8]
        [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, tries: int) -> None:
    """Poll the service's /health every 0.1 s until it answers 200 (at most ``tries`` times)."""
    for _ in range(tries):
        try:
            if httpx.get(url + "health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)


def tiny_run(work: Path) -> tuple[Path, Path]:
    """A baseline trained on synthetic faces (6 people) and a folder of their photos."""
    from facecls.cli import main
    from facecls.data.synthetic import SyntheticSpec, write_synthetic_folder

    spec = SyntheticSpec(num_classes=9, max_per_class=24, min_per_class=20, image_size=40, seed=5)
    root = write_synthetic_folder(work / "all", spec)
    names = sorted(p.name for p in root.iterdir())
    for name in names[:6]:
        shutil.copytree(root / name, work / "train" / name)
    code = main([
        "--quiet", "train", "--data", str(work / "train"), "--image-size", "32", "--epochs",
        "20", "--batch-size", "16", "--recipe", "report", "--runs-dir", str(work / "runs"),
        "--name", "load",
    ])  # fmt: skip
    if code != 0:
        raise SystemExit("training the tiny model failed")
    return work / "runs" / "load", work / "train"


def hammer(url: str, photos: list[bytes], count: int, latencies: list[float], errors: list[str]):
    with httpx.Client(timeout=60) as client:
        for i in range(count):
            started = time.perf_counter()
            try:
                reply = client.post(url + "predict", files={"file": ("p", photos[i % len(photos)])})
                if reply.status_code != 200 or not reply.json()["faces"]:
                    errors.append(f"{reply.status_code} {reply.text[:80]}")
            except httpx.HTTPError as error:
                errors.append(repr(error))
            latencies.append(time.perf_counter() - started)


def enroller(url: str, prefix: str, people: int, photos: list[bytes], done: list[str], errors):
    with httpx.Client(timeout=120) as client:
        for i in range(people):
            name = f"{prefix}{i:02d}"
            chosen = [photos[(3 * i + j) % len(photos)] for j in range(3)]
            files = [("files", (f"{name}{j}.png", data)) for j, data in enumerate(chosen)]
            reply = client.post(url + "enroll", data={"name": name}, files=files)
            (done if reply.status_code == 200 else errors).append(
                name if reply.status_code == 200 else f"enroll {reply.status_code} {reply.text}"
            )


def report(label: str, latencies: list[float], errors: list[str], seconds: float) -> None:
    ms = np.array(latencies) * 1000
    print(f"  {label}: {len(ms)} requests in {seconds:.1f} s = {len(ms) / seconds:.1f} req/s; "
          f"p50 {np.percentile(ms, 50):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms; "
          f"errors {len(errors)}")  # fmt: skip
    for error in errors[:3]:
        print(f"    {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="run folder or bundle to serve")
    parser.add_argument("--photos", type=Path, help="single-face photos to upload (with --run)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--enrollments", type=int, default=5, help="people per enrolling client")
    parser.add_argument("--threads", type=int, help="the service's PyTorch threads (its default)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="facecls-serve-load-"))
    try:
        run, photo_dir = (args.run, args.photos) if args.run else tiny_run(work)
        photos = [p.read_bytes() for p in sorted(photo_dir.rglob("*")) if p.is_file()][:200]
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        server = subprocess.Popen(
            [sys.executable, "-m", "facecls", "--quiet", "serve", str(run), "--port", str(port),
             "--store", str(work / "store"), "--host", "127.0.0.1",
             *(["--threads", str(args.threads)] if args.threads else [])],
            env=env,
        )  # fmt: skip
        try:
            wait_ready(url, 600)
            print(f"Service load on {platform.machine()} with {os.cpu_count()} CPUs; load "
                  f"average before: {os.getloadavg()[0]:.2f}; model {run}; service threads "
                  f"{args.threads or 'default'}")  # fmt: skip
            # warm-up, concurrent too: the first pass of each batch size pays for kernel set-up
            warm = [threading.Thread(target=hammer, args=(url, photos, 25, [], []))
                    for _ in range(args.clients)]  # fmt: skip
            for t in warm:
                t.start()
            for t in warm:
                t.join()
            latencies: list[float] = []
            errors: list[str] = []
            threads = [
                threading.Thread(target=hammer, args=(url, photos, args.requests, latencies, errors))
                for _ in range(args.clients)
            ]  # fmt: skip
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            report(f"{args.clients} clients x {args.requests} /predict", latencies, errors,
                   time.perf_counter() - started)  # fmt: skip
            latencies, errors, enrolled = [], [], []
            threads = [
                threading.Thread(target=hammer, args=(url, photos, args.requests // 2, latencies,
                                                      errors))
                for _ in range(6)
            ] + [
                threading.Thread(target=enroller, args=(url, p, args.enrollments, photos, enrolled,
                                                        errors))
                for p in ("alpha", "beta")
            ]  # fmt: skip
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            report("6 clients /predict while 2 enroll", latencies, errors,
                   time.perf_counter() - started)  # fmt: skip
            present = set(httpx.get(url + "identities").json()["enrolled"])
            print(f"  enrollments: {len(enrolled)} answered, "
                  f"{len(set(enrolled) & present)} present afterwards (of "
                  f"{2 * args.enrollments}); load average after: {os.getloadavg()[0]:.2f}")  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
