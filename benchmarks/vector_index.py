"""The vector index at 10^5, 10^6 (and 5x10^6) faces: recall, latency, build time, memory, disk.

For numpy brute force (facecls's search before FAISS), FAISS exact (``IndexFlatIP``), HNSW, IVF-PQ
and the default (``auto``), with 512-d unit vectors: real FaceNet embeddings of LFW's photos as
the queries and true matches, mixed into synthetic distractors (``vector_data.py``: a Gaussian
fitted to the real embeddings). Printed per engine and search setting:

- recall@1 and recall@10 against exact search (the exact top-10 by chunked products);
- identification: queries whose best answer is a photo of the same person;
- query latency p50/p99, one query at a time and per batch of 64 (per query in brackets);
- build time (wall), memory (growth of the process's anonymous memory: RssAnon) and disk
  (the saved index file).

    PYTHONPATH=src python benchmarks/vector_index.py --model RUN [--sizes 100000,1000000]
    PYTHONPATH=src python benchmarks/vector_index.py --embeddings lfw-all.safetensors \
        --sizes 1000000 --engines auto,hnsw

Timings depend on what else runs: the load average is printed before and after each engine.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from _paths import LFW_ARCHIVE, shared
from facecls.data.sources import default_cache_dir
from facecls.vector_file import save_index
from facecls.vector_index import IndexSettings, MemoryLimitError, VectorIndex, faiss_threads
from vector_data import database, embed_lfw, exact_top, hardware, read_real

# search settings measured per engine (the index is built once per engine)
SWEEPS = {
    "hnsw": [{"ef_search": ef} for ef in (64, 128, 256, 512)],
    "ivfpq": [{"nprobe": n} for n in (32, 64, 128, 256)],
}
IN_MEMORY = 2_000_000  # databases up to this size are read into memory (4 GiB at 512-d)
# the slow ones are timed on fewer queries and batches
SINGLE_QUERIES = {"numpy": 100, "exact": 200}
BATCHES = {"numpy": 5, "exact": 5}


def anon_memory() -> int:
    """The process's anonymous resident memory in bytes (what an index allocates)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def latencies(
    search, queries: np.ndarray, single: int, batches: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per query one at a time (``single`` queries) and per batch of 64 (``batches``)."""
    one = []
    for q in queries[:single]:
        started = time.perf_counter()
        search(q[None])
        one.append(time.perf_counter() - started)
    per_batch = []
    for start in range(0, min(len(queries), 64 * batches), 64):
        started = time.perf_counter()
        search(queries[start : start + 64])
        per_batch.append(time.perf_counter() - started)
    return np.array(one), np.array(per_batch)


def numpy_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """facecls's search before the index: every product, then the best ``k`` sorted."""
    scores = queries @ vectors.T
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, 1), axis=1, kind="stable")
    return np.take_along_axis(best, order, 1)


def line(label: str, found: np.ndarray, exact: np.ndarray, same: np.ndarray, one, batch,
         build: float, memory: int, disk: int | None) -> str:  # fmt: skip
    r1 = float((found[:, 0] == exact[:, 0]).mean())
    r10 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))
    ident = float(same[np.arange(len(found)), 0].mean()) if same is not None else float("nan")
    ms = 1000
    disk_text = "-" if disk is None else f"{disk / 2**20:,.0f} MiB"
    return (
        f"  {label:<28} recall@1 {r1:.4f}  recall@10 {r10:.4f}  identified {ident:.3f}  "
        f"1-by-1 p50 {np.percentile(one, 50) * ms:7.2f} p99 {np.percentile(one, 99) * ms:7.2f} ms  "
        f"batch64 p50 {np.percentile(batch, 50) * ms:7.1f} p99 {np.percentile(batch, 99) * ms:7.1f}"
        f" ms ({np.percentile(batch, 50) / 64 * ms:.2f} ms/query)  build {build:6.1f} s  "
        f"memory {memory / 2**20:,.0f} MiB  disk {disk_text}"
    )


def run_size(size: int, real, args: argparse.Namespace) -> None:
    vectors = database(real, size, args.work)
    started = time.perf_counter()
    if size <= IN_MEMORY:  # larger databases stay memory-mapped, read a chunk at a time
        vectors = np.ascontiguousarray(vectors)
    print(f"\n{size:,} faces ({len(real.database):,} real + {size - len(real.database):,} "
          f"distractors), {len(real.queries):,} queries; database read in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    started = time.perf_counter()
    exact_scores, exact = exact_top(vectors, real.queries, 10)
    print(f"  exact top-10 of every query: {time.perf_counter() - started:.1f} s; best answer a "
          f"real face for {np.mean(exact[:, 0] < len(real.database)):.3f} of the queries")  # fmt: skip

    def person_of(found: np.ndarray) -> np.ndarray:
        owner = np.full(size, -1)
        owner[: len(real.database)] = real.database_people[:size]
        return owner[np.maximum(found, 0)] == real.query_people[:, None]

    for engine in args.engines:
        load = os.getloadavg()[0]
        if engine == "numpy":
            found = numpy_search(vectors, real.queries, 10)
            one, batch = latencies(lambda q: numpy_search(vectors, q, 10), real.queries,
                                   SINGLE_QUERIES["numpy"], BATCHES["numpy"])  # fmt: skip
            print(line("numpy brute force", found, exact, person_of(found), one, batch, 0.0, 0,
                       None) + f"  (load {load:.1f})")  # fmt: skip
            continue
        settings = IndexSettings(engine=engine, memory_limit=args.memory_limit, **args.set)
        before, started = anon_memory(), time.perf_counter()
        try:
            index = VectorIndex(vectors.shape[1], settings).add(vectors, np.arange(size))
        except MemoryLimitError as error:
            print(f"  {engine}: refused: {error}")
            continue
        build, memory = time.perf_counter() - started, anon_memory() - before
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            disk = save_index(index, Path(tmp) / "index.vectors", "bench", "-").stat().st_size
        label = f"{engine} ({index.engine})" if engine == "auto" else engine
        for tuning in SWEEPS.get(index.engine, [{}]) if engine != "auto" else [{}]:
            index.tune(**tuning)
            _, found = index.search(real.queries, 10)
            one, batch = latencies(lambda q, i=index: i.search(q, 10), real.queries,
                                   SINGLE_QUERIES.get(index.engine, len(real.queries)),
                                   BATCHES.get(index.engine, 20))  # fmt: skip
            text = " ".join(f"{k}={v}" for k, v in tuning.items())
            print(line(f"{label} {text}".strip(), found, exact, person_of(found), one, batch,
                       build, memory, disk) + f"  (load {load:.1f}->{os.getloadavg()[0]:.1f})",
                  flush=True)  # fmt: skip
        del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="run folder or bundle embedding LFW")
    parser.add_argument("--data", default=str(shared(*LFW_ARCHIVE)), help="LFW")
    parser.add_argument("--embeddings", type=Path, help="facecls embed file of LFW (instead)")
    parser.add_argument("--sizes", default="100000,1000000", help="faces in the database")
    parser.add_argument("--engines", default="numpy,exact,hnsw,ivfpq,auto")
    parser.add_argument("--threads", type=int, help="FAISS threads (default: every core)")
    parser.add_argument("--queries", type=int, help="use only this many queries")
    parser.add_argument("--per-person", type=int, default=1,
                        help="query photos per person (with more photos than that)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="NAME=INT",
                        help="an IndexSettings field for every engine, e.g. pq_m=32")  # fmt: skip
    parser.add_argument("--memory-limit", type=float, help="GiB an index may use")
    parser.add_argument("--work", type=Path, default=default_cache_dir() / "benchmarks")
    args = parser.parse_args()
    args.engines = args.engines.split(",")
    args.set = {k: int(v) for k, v in (item.split("=", 1) for item in args.set)}
    args.memory_limit = None if args.memory_limit is None else int(args.memory_limit * 2**30)
    if args.embeddings is None and args.model is None:
        parser.error("give --model RUN (to embed LFW) or --embeddings FILE")
    faiss_threads(args.threads)
    source = args.embeddings or embed_lfw(args.model, args.data, args.work)
    real = read_real(source, args.per_person)
    if args.queries:
        real.queries, real.query_people = (
            real.queries[: args.queries],
            real.query_people[: args.queries],
        )
    print(f"Vector index benchmark on {hardware()}; FAISS threads {args.threads or 'all'}; "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"Real faces: {source} ({len(real.queries) + len(real.database):,} photos' main "
          f"faces, {len(real.queries):,} queries); distractors: a Gaussian fitted to them")  # fmt: skip
    for size in (int(float(s)) for s in args.sizes.split(",")):
        run_size(size, real, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"Peak resident memory of the benchmark (database included): {peak:.2f} GiB; load "
          f"average {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
