"""Clustering LFW's photos into people: facecls's methods against the peers, on the same photos.

Faces: each photo's main face (the ``--faces detect`` pipeline, FaceNet CASIA-WebFace
embeddings); a photo where no face was found counts as unclustered. Sets: LFW-8's 4,822 photos
(217 people; the split file's ``lfw8`` column) and all 13,233 LFW photos (5,749 people, 4,069 of
them with one photo). Printed per method: pairwise precision/recall/F, BCubed precision/recall/F
(``facecls.library.cluster_scores``), clusters found against the true number of people, the
share of faces left unclustered, and the seconds the clustering took.

Peers, on the same photos: dlib's 128-d descriptors (face_recognition's pipeline,
``benchmarks/peers.py``) clustered by dlib's ``chinese_whispers_clustering`` at distance 0.5
(face_recognition's clustering example), and DBSCAN at Immich's defaults (at least 3 faces,
cosine distance at most 0.5) on facecls's embeddings.

``--sweep`` prints each method's scores over thresholds on the LFW people *outside* LFW-8
(8,411 photos of 5,532 people), where the defaults were chosen, so LFW-8 is not tuned on.

    PYTHONPATH=src python benchmarks/cluster_lfw.py --embeddings lfw-all-facenet.safetensors
    PYTHONPATH=src python benchmarks/cluster_lfw.py --model RUN   # embeds LFW itself (cached)
    PYTHONPATH=src python benchmarks/cluster_lfw.py               # facecls index LFW (cached)
    PYTHONPATH=src python benchmarks/cluster_lfw.py --backbone sface   # ... with SFace

dlib descriptors take about 0.15-0.25 s a photo on one core; they are cached in ``--cache`` in
chunks of 500 photos, so an interrupted run loses little.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from facecls.data.sources import default_cache_dir, scan_source
from facecls.library.cluster import DEFAULT_METHOD, METHODS, ClusterSettings, cluster_faces
from facecls.library.cluster_scores import ClusterScores, cluster_scores

REPO = Path(__file__).resolve().parents[1]
SHARED = next(
    (p / "shared" / "datasets" for p in (REPO.parent, REPO.parent.parent)
     if (p / "shared").is_dir()),
    REPO.parent / "shared" / "datasets",
)  # fmt: skip
WEIGHTS = SHARED.parent / "weights" / "facenet-inception-resnet-v1-casia-webface.safetensors"
DLIB_CHUNK = 500
SWEEP = {
    "agglomerative": (0.35, 0.4, 0.45, 0.5, 0.55, 0.6),
    "chinese-whispers": (0.45, 0.5, 0.55, 0.6, 0.65, 0.7),
    "hdbscan": (0.0, 0.2, 0.3, 0.4, 0.5),
    "dbscan": (0.4, 0.45, 0.5, 0.55, 0.6, 0.65),
}


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores; load average {load}"


def lfw_photos(data: str, cache: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """Every LFW photo: ``identity/file`` names (sorted), paths, identity index of each."""
    scan = scan_source(data, cache, lambda _m: None)
    refs = sorted(scan.refs, key=lambda r: r.relpath)
    names = sorted({r.identity for r in refs})
    index = {n: i for i, n in enumerate(names)}
    truth = np.array([index[r.identity] for r in refs], dtype=np.int64)
    return [r.relpath for r in refs], [r.path for r in refs], truth


def lfw8_mask(relpaths: list[str], split_file: Path) -> np.ndarray:
    with split_file.open(newline="") as f:
        listed = {"/".join(row["path"].split("/")[-2:]) for row in csv.DictReader(f) if row["lfw8"]}
    return np.array([r in listed for r in relpaths])


def main_faces(file: Path, relpaths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's main face (face 0) from an embeddings file (``facecls embed``'s safetensors
    + CSV); ``(vectors (N, D), found (N,))``, zero rows where no face was found."""
    table = load_file(str(file))["embeddings"]
    row_of: dict[str, int] = {}
    with file.with_suffix(".csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["face"] in ("", "0"):
                row_of["/".join(Path(row["photo"]).parts[-2:])] = int(row["row"])
    vectors = np.zeros((len(relpaths), table.shape[1]), dtype=np.float32)
    found = np.array([r in row_of for r in relpaths])
    vectors[found] = table[[row_of[r] for r in np.asarray(relpaths)[found]]]
    return vectors, found


def embed_lfw(model: Path, paths: list[Path], cache: Path, log: Callable[[str], None]) -> Path:
    """Embed every face of every photo with ``model`` (``facecls embed --detect``), cached."""
    from facecls.inference.model import read_meta
    from facecls.inference.verify import embed

    folder, _ = read_meta(model)
    stamp = f"{folder.resolve()}:{(folder / 'model.json').stat().st_mtime_ns}:{len(paths)}"
    out = cache / f"lfw-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.safetensors"
    if not out.exists():
        log(f"Embedding {len(paths)} photos with {model} into {out} (once) ...")
        embed(model, paths, out, detect=True, log=log)
    return out


def index_lfw(
    root: Path, relpaths: list[str], cache: Path, weights: Path | None, backbone: str = "facenet"
) -> Path:
    """Index LFW with ``facecls index`` (``backbone`` and its pipeline: FaceNet's ``box``,
    SFace's ``arcface``) into a library under ``cache`` (resumed if interrupted), and write each
    photo's main face (rank 0) as a ``facecls embed``-style file (safetensors + CSV) beside it;
    answers that file."""
    from safetensors.numpy import save_file

    from facecls.library.index import index_photos
    from facecls.library.store import open_library

    tag = "" if backbone == "facenet" else f"-{backbone}"
    library = cache / f"lfw-library{tag}"
    out = cache / f"lfw-index-main-faces{tag}.safetensors"
    if out.exists():
        return out
    started = time.perf_counter()
    index_photos([root], library, weights=weights, log=print, show_progress=True,
                 backbone=backbone)  # fmt: skip
    print(f"facecls index ({backbone}) of {len(relpaths)} LFW photos: "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    rows, vectors = [], []
    with open_library(library) as lib:
        files = lib.files()
        for rel in relpaths:
            record = files.get(str(root / rel))
            faces = lib.faces(photo_id=record.photo_id) if record and record.photo_id else []
            main = [f for f in faces if f.rank == 0]
            if main:
                vectors.append(lib.embeddings([main[0].id])[1][0])
                rows.append([len(rows), str(root / rel), 0, ""])
    save_file({"embeddings": np.stack(vectors).astype(np.float32)}, str(out))
    with out.with_suffix(".csv").open("w", newline="") as f:
        csv.writer(f).writerows([["row", "photo", "face", "box"], *rows])
    return out


def dlib_descriptors(relpaths: list[str], paths: list[Path], cache: Path) -> np.ndarray:
    """dlib's descriptors of each photo's main face (``peers.DlibDescriber``), in the order
    given. Cached per photo in ``cache`` (chunks of 500 photos, each an ``.npz`` of names and
    vectors), so runs on other sets of photos, or an interrupted run, reuse what was done."""
    from peers import DlibDescriber

    cache.mkdir(parents=True, exist_ok=True)
    known: dict[str, np.ndarray] = {}
    for file in sorted(cache.glob("*.npz")):
        with np.load(file) as chunk:
            known.update(zip(chunk["paths"].tolist(), chunk["vectors"], strict=True))
    missing = [i for i, r in enumerate(relpaths) if r not in known]
    describe = DlibDescriber() if missing else None
    started = time.perf_counter()
    for start in range(0, len(missing), DLIB_CHUNK):
        part = missing[start : start + DLIB_CHUNK]
        vectors = np.stack([describe(paths[i]) for i in part])
        names = np.array([relpaths[i] for i in part])
        key = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
        np.savez(cache / f"{key}.npz", paths=names, vectors=vectors)
        known.update(zip(names.tolist(), vectors, strict=True))
        rate = (start + len(part)) / (time.perf_counter() - started)
        print(f"  dlib descriptors: {start + len(part)}/{len(missing)} ({rate:.1f}/s)", flush=True)
    return np.stack([known[r] for r in relpaths])


def dlib_chinese_whispers(descriptors: np.ndarray, distance: float = 0.5) -> np.ndarray:
    import dlib

    vectors = [dlib.vector(v.astype(np.float64).tolist()) for v in descriptors]
    labels = np.asarray(dlib.chinese_whispers_clustering(vectors, distance), dtype=np.int64)
    # face_recognition's example keeps every cluster; a cluster of one face is a lone face.
    counts = np.bincount(labels)
    return np.where(counts[labels] >= 2, labels, -1)


def timed(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    labels = run()
    return labels, time.perf_counter() - started


def row(name: str, s: ClusterScores, seconds: float) -> str:
    return (
        f"| {name} | {s.pairwise_precision:.3f} | {s.pairwise_recall:.3f} | {s.pairwise_f:.3f} "
        f"| {s.bcubed_precision:.3f} | {s.bcubed_recall:.3f} | {s.bcubed_f:.3f} "
        f"| {s.clusters} / {s.true_people} | {s.unclustered:.1%} | {seconds:.1f} |"
    )


HEADER = (
    "| method | pair P | pair R | pair F | BCubed P | BCubed R | BCubed F | clusters / people "
    "| unclustered | seconds |\n|---|" + "---:|" * 9
)


def scored(truth: np.ndarray, found: np.ndarray, labels: np.ndarray) -> ClusterScores:
    """Scores over all photos; photos without a face are unclustered."""
    every = np.full(len(truth), -1, dtype=np.int64)
    every[np.flatnonzero(found)] = labels
    return cluster_scores(truth, every)


def compare(title: str, vectors, found, truth, descriptors, methods) -> None:
    print(f"\n{title}: {len(truth)} photos, {len(np.unique(truth))} people "
          f"({int((np.bincount(np.unique(truth, return_inverse=True)[1]) >= 2).sum())} with "
          f"2+ photos); a face found in {found.mean():.1%}\n")  # fmt: skip
    print(HEADER)
    x = vectors[found]
    for method in methods:
        labels, seconds = timed(lambda m=method: cluster_faces(x, ClusterSettings(method=m)))
        tag = " (default)" if method == DEFAULT_METHOD else ""
        print(row(f"facecls {method}{tag}", scored(truth, found, labels), seconds), flush=True)
    immich = ClusterSettings(method="dbscan", threshold=0.5, min_size=3)
    labels, seconds = timed(lambda: cluster_faces(x, immich))
    print(row("Immich: DBSCAN (min 3, distance 0.5), facecls embeddings",
              scored(truth, found, labels), seconds), flush=True)  # fmt: skip
    if descriptors is not None:
        labels, seconds = timed(lambda: dlib_chinese_whispers(descriptors))
        everyone = np.ones(len(truth), dtype=bool)  # dlib falls back to a central box
        print(row("face_recognition: dlib + Chinese whispers 0.5",
                  scored(truth, everyone, labels), seconds), flush=True)  # fmt: skip


def through_library(vectors: np.ndarray, folder: Path) -> tuple[float, int]:
    """``facecls cluster`` on a fresh SQLite library holding ``vectors`` (one face per photo):
    the seconds it took (reading the faces, clustering, writing every label in one undoable
    action) and the clusters made."""
    import shutil

    from facecls.library.people import cluster
    from facecls.library.store import FileStamp, ModelKey, NewFace, NewPhoto, open_library

    shutil.rmtree(folder, ignore_errors=True)
    with open_library(folder, create=True) as lib:
        lib.claim_model(ModelKey("facenet", "0" * 64, "box", 160, vectors.shape[1]))
        for start in range(0, len(vectors), 2000):
            lib.add_photos([
                NewPhoto(f"{i:064x}", 250, 250, [NewFace((70, 70, 180, 180), None, 1.0, v)],
                         [FileStamp(f"/lfw/{i}.jpg", 1, 1)])
                for i, v in enumerate(vectors[start : start + 2000], start)
            ])  # fmt: skip
        started = time.perf_counter()
        report = cluster(lib, log=lambda _m: None)
        seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return seconds, report.clusters


def on_indexed_library(library: Path, folder: Path) -> tuple[float, int, int]:
    """``facecls cluster`` on a copy (in ``folder``) of the library ``facecls index`` made of
    LFW: every face it found, not only each photo's main one. Answers the seconds, the faces
    and the clusters made."""
    import shutil

    from facecls.library.people import cluster
    from facecls.library.store import open_library

    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(library, folder)
    try:
        with open_library(folder) as lib:
            started = time.perf_counter()
            report = cluster(lib, log=lambda _m: None)
            seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return seconds, report.faces, report.clusters


def sweep(vectors, found, truth, methods) -> None:
    print(f"\nSweep on the {len(truth)} LFW photos outside LFW-8 ({len(np.unique(truth))} people)")
    print(HEADER)
    for method in methods:
        for threshold in SWEEP[method]:
            settings = ClusterSettings(method=method, threshold=threshold)
            labels, seconds = timed(lambda s=settings: cluster_faces(vectors[found], s))
            print(row(f"{method} {threshold:g}", scored(truth, found, labels), seconds), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embeddings", type=Path, help="facecls embed output of all LFW photos")
    parser.add_argument("--model", type=Path, help="else embed LFW with this run (--detect)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS if WEIGHTS.is_file() else None,
                        help="else facecls index LFW with these FaceNet weights (default: "
                        "../shared's, else the weights cache's)")  # fmt: skip
    parser.add_argument("--backbone", default="facenet", choices=["facenet", "sface"],
                        help="the backbone facecls index embeds with (SFace: from the weights "
                        "cache, facecls weights get sface)")  # fmt: skip
    parser.add_argument("--data", default=str(SHARED / "lfw-deepfunneled.tgz"))
    parser.add_argument("--split-file", type=Path, default=SHARED / "lfw-benchmark-splits.csv")
    parser.add_argument("--cache", type=Path, help="embeddings and dlib descriptors (default: "
                        "the facecls cache's benchmarks/ folder)")  # fmt: skip
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sets", default="lfw8,all", help="lfw8 and/or all")
    parser.add_argument("--no-dlib", action="store_true", help="leave out the dlib peer")
    parser.add_argument("--sweep", action="store_true", help="thresholds outside LFW-8")
    parser.add_argument("--library", action="store_true",
                        help="also time facecls cluster on a library of all LFW faces (and on "
                        "the indexed library's every face, when LFW was indexed here)")  # fmt: skip
    args = parser.parse_args()
    cache = args.cache or default_cache_dir() / "benchmarks"
    methods = [m for m in args.methods.split(",") if m]
    relpaths, paths, truth = lfw_photos(args.data, default_cache_dir())
    if args.embeddings is not None:
        file = args.embeddings
    elif args.model is not None:
        file = embed_lfw(args.model, paths, cache, print)
    else:  # facecls index, as a user's library would hold them
        root = paths[0].parents[1]
        weights = args.weights if args.backbone == "facenet" else None
        file = index_lfw(root, relpaths, cache, weights, args.backbone)
    vectors, found = main_faces(file, relpaths)
    in_lfw8 = lfw8_mask(relpaths, args.split_file)
    print(f"Clustering LFW with {file.name}; {hardware()}")
    if args.sweep:
        outside = ~in_lfw8
        sweep(vectors[outside], found[outside], truth[outside], methods)
        return
    for name in args.sets.split(","):
        mask = in_lfw8 if name == "lfw8" else np.ones(len(truth), dtype=bool)
        title = "LFW-8" if name == "lfw8" else "All LFW"
        chosen = np.flatnonzero(mask)
        d = None if args.no_dlib else dlib_descriptors(
            [relpaths[i] for i in chosen], [paths[i] for i in chosen], cache / "dlib"
        )  # fmt: skip
        compare(title, vectors[mask], found[mask], truth[mask], d, methods)
    if args.library:
        seconds, made = through_library(vectors[found], cache / "cluster-library")
        print(f"\nfacecls cluster on a SQLite library of all {int(found.sum())} LFW faces: "
              f"{seconds:.1f} s ({made} clusters), labels written included")  # fmt: skip
        indexed = cache / ("lfw-library" + ("" if args.backbone == "facenet" else "-sface"))
        if args.embeddings is None and args.model is None and indexed.is_dir():
            seconds, faces, made = on_indexed_library(indexed, cache / "cluster-indexed")
            print(f"facecls cluster on a copy of the indexed LFW library (all {faces} faces "
                  f"found): {seconds:.1f} s ({made} clusters), labels written included")  # fmt: skip
    print(f"\nMeasured on {hardware()}")


if __name__ == "__main__":
    main()
