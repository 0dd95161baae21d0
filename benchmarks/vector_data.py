"""The vector benchmarks' data: real FaceNet embeddings of LFW's photos and synthetic distractors.

Real: every LFW photo's main face embedded by a model (``facecls embed --detect``), cached under
``$FACECLS_CACHE/benchmarks/`` (or read from ``--embeddings``, a ``facecls embed`` file of LFW).
Queries: the first photo (or first few) of each person with more photos; the database: every
other real face (the true matches among them) plus synthetic distractors up to the size wanted.

Distractors: drawn from a Gaussian fitted to the real unit embeddings (their mean and full
covariance), then L2-normalised, in seeded chunks into a memory-mapped file. They resemble real
faces more closely than other real people do (a real face's 99th-percentile cosine to a
distractor is higher than to another real person), so the search is at least as hard as with
real faces.
"""

from __future__ import annotations

import csv
import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import numpy as safetensors_numpy

CHUNK = 100_000


@dataclass
class RealFaces:
    """Real embeddings: the queries, the database part and each face's person."""

    queries: np.ndarray  # (Q, D) unit float32
    query_people: np.ndarray  # (Q,) person index
    query_paths: list[str]
    database: np.ndarray  # (R, D) unit float32
    database_people: np.ndarray  # (R,)
    database_paths: list[str]
    source: str


def hardware() -> str:
    """The CPU, its cores and the FAISS build, for the printed figures."""
    import faiss

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, {memory:.0f} GiB RAM, no GPU; "
            f"FAISS {faiss.__version__} ({faiss.get_compile_options().strip()})")  # fmt: skip


def embed_lfw(model_path: Path, data: str, cache: Path) -> Path:
    """Embed the main face of every LFW photo once (cached by the model's key)."""
    import facecls
    from facecls.data.sources import default_cache_dir, scan_source
    from facecls.inference.verify import model_key

    model = facecls.load_model(model_path)
    out = cache / f"lfw-all-{model_key(model)[:16]}.safetensors"
    if not out.exists():
        scan = scan_source(data, default_cache_dir(), print)
        files = sorted((ref.path for ref in scan.refs), key=str)
        print(f"Embedding {len(files)} LFW photos with {model_path} (--detect) into {out} ...")
        facecls.embed(model, files, out, detect=True)
    return out


def read_real(path: Path, per_person: int = 1) -> RealFaces:
    """Split a ``facecls embed`` file of LFW into queries (the first ``per_person`` photos of
    each person with more photos than that) and database faces (the others)."""
    vectors = safetensors_numpy.load_file(str(path))["embeddings"].astype(np.float32)
    with path.with_suffix(".csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # one face per photo: the main face (face 0) when every face was embedded
    keep = [i for i, row in enumerate(rows) if row.get("face") in ("", "0", None)]
    vectors, rows = vectors[keep], [rows[i] for i in keep]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = [Path(row["photo"]).parent.name for row in rows]
    people = {name: n for n, name in enumerate(sorted(set(names)))}
    person = np.array([people[name] for name in names])
    counts = np.bincount(person)
    taken = np.zeros(len(counts), int)
    is_query = np.zeros(len(rows), bool)
    for i, p in enumerate(person):
        if counts[p] > per_person and taken[p] < per_person:
            is_query[i], taken[p] = True, taken[p] + 1
    paths = [row["photo"] for row in rows]
    return RealFaces(
        vectors[is_query], person[is_query], [p for p, q in zip(paths, is_query, strict=True) if q],
        vectors[~is_query], person[~is_query], [p for p, q in zip(paths, is_query, strict=True) if not q],
        str(path),
    )  # fmt: skip


def database(real: RealFaces, size: int, folder: Path, seed: int = 0) -> np.ndarray:
    """The real database faces, then distractors from a Gaussian fitted to every real face:
    ``(size, D)`` unit float32, memory-mapped from a cached file (a smaller size's
    distractors are the first ones of a larger size's)."""
    every = np.concatenate([real.queries, real.database])
    key = hashlib.sha256(every.tobytes()).hexdigest()[:12]
    path = folder / f"database-{key}-{seed}-{size}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    folder.mkdir(parents=True, exist_ok=True)
    mean = every.astype(np.float64).mean(axis=0)
    cov = np.cov(every.astype(np.float64), rowvar=False)
    factor = np.linalg.cholesky(cov + 1e-6 * np.eye(len(mean)))
    tmp = path.with_name(path.name + ".part")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(size, len(mean)))
    first = min(size, len(real.database))
    out[:first] = real.database[:first]
    rng = np.random.default_rng(seed)
    for start in range(first, size, CHUNK):
        n = min(CHUNK, size - start)
        draw = mean + rng.standard_normal((n, len(mean))) @ factor.T
        out[start : start + n] = draw / np.linalg.norm(draw, axis=1, keepdims=True)
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def exact_top(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, positions) of each query, best first, by chunked products."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(database), CHUNK):
        scores = queries @ np.asarray(database[start : start + CHUNK]).T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        all_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        all_ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.lexsort((all_ids, -all_scores), axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, order, 1)
        best_ids = np.take_along_axis(all_ids, order, 1)
    return best_scores, best_ids
