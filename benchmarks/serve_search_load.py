"""The service's /search over a million faces, under 8 clients: throughput, latency, errors.

Writes a gallery in ``facecls embed``'s format: the real embeddings of LFW's photos by ``--model``
(``vector_data.py``; embedded once and cached) plus Gaussian distractors up to ``--faces``,
stamped with the model's key. Builds its vector index once in this process (timed; saved in
the facecls cache, where the service reads it), starts ``facecls serve RUN --gallery FILE`` on
127.0.0.1, and then ``--clients`` clients each upload ``--requests`` LFW photos to /search
(photos whose person has other photos in the gallery). Printed: the first /search (the service
reading the gallery and its index), requests/s, p50/p99 latency, errors, the share of answers
whose best match is a photo of the same person, and the service's resident memory.

    PYTHONPATH=src python benchmarks/serve_search_load.py --model RUN [--faces 1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from safetensors import numpy as safetensors_numpy

from _paths import LFW_ARCHIVE, REPO, shared
from facecls.atomic import write_csv_stream
from facecls.data.sources import default_cache_dir
from facecls.inference.model import load_model
from facecls.inference.search import GalleryFile
from facecls.inference.verify import model_key
from serve_load import free_port, report, wait_ready
from vector_data import RealFaces, database, embed_lfw, hardware, read_real


def write_gallery(
    model_path: Path, data: str, faces: int, work: Path, embeddings: Path | None
) -> tuple[Path, RealFaces]:
    """The gallery file (cached) and the real faces it was made from."""
    model = load_model(model_path)
    real = read_real(embeddings or embed_lfw(model_path, data, work))
    out = work / f"gallery-{model_key(model)[:12]}-{faces}.safetensors"
    if out.exists():
        return out, real
    vectors = database(real, faces, work)
    owners = [Path(p).parent.name for p in real.database_paths]
    rows = (
        [n, real.database_paths[n] if n < len(owners) else f"distractor/{n:08d}.jpg", "", ""]
        for n in range(faces)
    )
    write_csv_stream(out.with_suffix(".csv"), ["row", "photo", "face", "box"], rows)
    tensors = {"embeddings": np.ascontiguousarray(vectors)}
    metadata = {"format": "facecls-embeddings", "index": out.with_suffix(".csv").name,
                "model": model_key(model)}  # fmt: skip
    safetensors_numpy.save_file(tensors, str(out), metadata=metadata)
    return out, real


def searcher(url: str, photos: list[tuple[bytes, str]], count: int, latencies: list[float],
             errors: list[str], hits: list[bool]) -> None:  # fmt: skip
    with httpx.Client(timeout=120) as client:
        for i in range(count):
            data, person = photos[i % len(photos)]
            started = time.perf_counter()
            try:
                reply = client.post(url + "search", files={"file": ("q.jpg", data)},
                                    data={"top_k": "5"})  # fmt: skip
                if reply.status_code != 200:
                    errors.append(f"{reply.status_code} {reply.text[:80]}")
                else:
                    # photos outside the gallery file's folder come back by name: Person_0001.jpg
                    best = Path(reply.json()["matches"][0]["photo"]).name
                    hits.append(best.rsplit("_", 1)[0] == person)
            except httpx.HTTPError as error:
                errors.append(repr(error))
            latencies.append(time.perf_counter() - started)


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder or bundle")
    parser.add_argument("--data", default=str(shared(*LFW_ARCHIVE)), help="LFW")
    parser.add_argument(
        "--embeddings",
        type=Path,
        help="facecls embed file of LFW by --model (instead of embedding it)",
    )
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--threads", type=int, help="the service's PyTorch threads")
    parser.add_argument("--work", type=Path, default=default_cache_dir() / "benchmarks")
    args = parser.parse_args()
    gallery, real = write_gallery(args.model, args.data, args.faces, args.work, args.embeddings)
    started = time.perf_counter()
    GalleryFile(load_model(args.model), gallery).refresh().index()  # built (or read) and saved
    built = time.perf_counter() - started
    people = {Path(p).parent.name for p in real.database_paths}
    photos = [(Path(p).read_bytes(), Path(p).parent.name) for p in real.query_paths[:200]
              if Path(p).parent.name in people]  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    server = subprocess.Popen(
        [sys.executable, "-m", "facecls", "--quiet", "serve", str(args.model), "--port",
         str(port), "--host", "127.0.0.1", "--gallery", str(gallery),
         "--store", str(args.work / "serve-store"),
         *(["--threads", str(args.threads)] if args.threads else [])],
        env=env,
    )  # fmt: skip
    try:
        wait_ready(url, 1200)
        print(f"/search load on {hardware()}; load average {os.getloadavg()[0]:.2f}")
        print(f"  gallery: {args.faces:,} faces ({len(real.database):,} real LFW + distractors), "
              f"{gallery}; index built or read in this process in {built:.1f} s")  # fmt: skip
        started, first_errors = time.perf_counter(), []
        searcher(url, photos[:1], 1, [], first_errors, [])
        print(f"  first /search (the service reads the gallery and its index): "
              f"{time.perf_counter() - started:.1f} s; errors {len(first_errors)}")  # fmt: skip
        latencies: list[float] = []
        errors: list[str] = []
        hits: list[bool] = []
        threads = [
            threading.Thread(target=searcher, args=(url, photos[c::args.clients], args.requests,
                                                    latencies, errors, hits))
            for c in range(args.clients)
        ]  # fmt: skip
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report(f"{args.clients} clients x {args.requests} /search", latencies, errors,
               time.perf_counter() - started)  # fmt: skip
        print(f"  best match the same person: {np.mean(hits):.3f} of {len(hits)} answers; "
              f"service memory {resident_mib(server.pid):,.0f} MiB; load average after "
              f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
