"""End-to-end ``predict`` speed on a laptop CPU: facecls beside the dlib peer, same photo files.

N LFW-8 test photos (the benchmark split; a seeded choice) are copied as JPEG files into a
temporary folder. Each system reads and decodes every file, finds and cuts the face, describes it
and decides, timed over all N photos after a warm-up on the first few, one after the other in one
process:

* facecls, PyTorch backend: ``facecls.load_model(RUN).predict(paths, batch_size=B)``, the call
  ``facecls predict`` makes (for a ``--faces detect`` run: MTCNN finds every face of a photo, each
  is cut as in training, FaceNet embeds it (with its mirror image when the run has flip TTA) and
  the open-set decision names it), for each batch size and torch thread count, in fp32 (what
  ``facecls predict`` runs on a CPU) and, where the CPU has native bf16, in bf16 autocast too
  (``--precisions auto``; bf16 is this benchmark's setting, switched on the loaded model);
* facecls, ONNX Runtime backend: the run's bundle copied to a temporary folder, exported there
  with ``facecls.export_onnx`` and loaded with ``backend="onnx"``; the same batch sizes; the
  thread count is torch's (MTCNN still runs in PyTorch), ONNX Runtime keeps its default thread
  pool (facecls exposes no session options);
* dlib peer (``benchmarks/peers.py``, what a ``face_recognition`` user gets): read, HOG
  detection, 5 landmarks, 128-d descriptor per photo, then logistic regression (C by 3-fold CV)
  fitted beforehand on the LFW-8 train part's descriptors, which are cached in
  ``<cache>/benchmarks/`` with the chosen C, so only the first run pays for them (3,857 photos,
  about 10 minutes on one core); ``--dlib-classifier centroid``: nearest class centroid instead. Skipped, with the reason, when ``facecls[peers]`` is not installed.

It prints photos/s and CPU seconds per photo of each setting, the share of photos named
correctly (the largest face's answer for facecls, whose open-set decision may also say
``unknown``; dlib's classifier always names someone), facecls/dlib speed ratios, the load average
at the start and the end, the cores and the library versions.

    PYTHONPATH=src python benchmarks/predict_speed.py --model runs/lfw8-facenet-detect
    PYTHONPATH=src python benchmarks/predict_speed.py --model RUN --limit 40 \\
        --dlib-train-per-person 3          # a quick check of the code paths, not a figure
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import facecls
import peers
from _paths import LFW_ARCHIVE, LFW_SPLITS, shared
from facecls.bundle import bundle_folder
from facecls.data.sources import ImageRef, default_cache_dir, scan_source
from facecls.inference.model import FaceModel
from facecls.runtime import cpu_has_native_bf16


@dataclass
class Timing:
    """One system's pass over the photos."""

    label: str
    seconds: float
    cpu_seconds: float
    photos: int
    correct: int
    notes: str = ""

    @property
    def rate(self) -> float:
        return self.photos / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        return (
            f"  {self.label:<54} {self.rate:7.2f} photos/s  ({self.photos} photos in "
            f"{self.seconds:.1f} s, {self.cpu_seconds / max(self.photos, 1):.3f} CPU s/photo; "
            f"named correctly {self.correct}/{self.photos}){self.notes}"
        )


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads (a busy machine slows the wall time, not
    this)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def lfw8_parts(split_file: Path) -> dict[str, str]:
    """``identity/file`` → ``train``/``test`` of the split file's ``lfw8`` column."""
    with split_file.open(newline="", encoding="utf-8") as f:
        return {
            "/".join(row["path"].split("/")[-2:]): row["lfw8"]
            for row in csv.DictReader(f)
            if row["lfw8"] in ("train", "val", "test")
        }


def copy_photos(refs: list[ImageRef], folder: Path) -> list[Path]:
    """The photos' JPEG files copied byte for byte to ``folder/<identity>/<file>``."""
    paths = []
    for ref in refs:
        target = folder / ref.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ref.path, target)
        paths.append(target)
    return paths


def timed(label: str, run: Callable[[], int], photos: int, notes: str = "") -> Timing:
    """Wall and CPU time of ``run()``, which returns how many photos it named correctly."""
    start, cpu = time.perf_counter(), cpu_seconds()
    correct = run()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return Timing(label, wall, cpu, photos, correct, notes)


def facecls_correct(model: FaceModel, paths: list[Path], truth: list[str], batch: int) -> int:
    """``model.predict`` over the files; photos whose largest face was named as its person."""
    answers = model.predict(paths, batch_size=batch)
    first = {a.path: a for a in answers if a.face in (None, 0)}  # the largest face of a photo
    return sum(
        first.get(str(p)) is not None and first[str(p)].identity == name
        for p, name in zip(paths, truth, strict=True)
    )


def set_precision(model: FaceModel, precision: str) -> None:
    """Switch the PyTorch runner's autocast dtype, ``fp32`` or ``bf16`` (a benchmark setting:
    on a CPU ``facecls predict`` runs fp32)."""
    if precision not in ("fp32", "bf16"):
        raise SystemExit(f"--precisions: fp32 or bf16, not {precision!r}")
    runner: Any = model._runner  # the benchmark reaches in: facecls exposes no precision option
    dtype = torch.bfloat16 if precision == "bf16" else None
    runner.runtime = dataclasses.replace(runner.runtime, dtype=dtype)


def facecls_timings(
    args: argparse.Namespace, run: Path, paths: list[Path], truth: list[str], backend: str
) -> list[Timing]:
    """One :class:`Timing` per (precision, threads, batch) of one backend."""
    model = facecls.load_model(run, device="cpu", backend=backend)
    if not model.detects:
        print(f"  note: {run} was trained with --faces {model.faces}: predict cuts the centre "
              "crop, no face detection is timed (use a --faces detect run)")  # fmt: skip
    if backend == "onnx":
        precisions = ["fp32"]
    elif args.precisions == "auto":  # facecls predict's own fp32, and bf16 where it is native
        precisions = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    else:
        precisions = args.precisions.split(",")
    out = []
    for precision in precisions:
        if backend == "torch":
            set_precision(model, precision)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batch_sizes:
                facecls_correct(model, paths[: args.warmup], truth[: args.warmup], batch)
                label = (
                    f"facecls torch {precision}, batch {batch}, {threads} threads"
                    if backend == "torch"
                    else f"facecls onnx, batch {batch}, {threads} threads (MTCNN; ORT default)"
                )
                run_all = functools.partial(facecls_correct, model, paths, truth, batch)
                out.append(timed(label, run_all, len(paths)))
                print(out[-1].line(), flush=True)
    return out


def export_copy(run: Path, work: Path, check: list[Path]) -> Path:
    """The run's bundle copied into ``work`` and exported to ONNX there (the run is untouched)."""
    copy = work / "bundle"
    shutil.copytree(bundle_folder(run), copy)
    result = facecls.export_onnx(copy, check_images=[str(p) for p in check])
    print(f"  exported {result.path.name}: max |ONNX - PyTorch| {result.max_abs_diff:.2e}, top-1 "
          f"agreement {result.top1_agreement:.3f} on {result.checked_on}")  # fmt: skip
    return copy


def dlib_classifier(args: argparse.Namespace, train_refs: list[ImageRef]) -> tuple[Any, str]:
    """The decision on dlib descriptors, fitted on the LFW-8 train part's descriptors (computed
    once into the benchmark cache)."""
    import dlib

    digest = hashlib.sha256(f"dlib {dlib.__version__}".encode())
    for ref in train_refs:
        digest.update(f"\n{ref.relpath}\0{ref.path.stat().st_size}".encode())
    cache = default_cache_dir() / "benchmarks" / f"dlib-lfw8-train-{digest.hexdigest()[:16]}.npy"
    print(f"dlib descriptors of {len(train_refs)} LFW-8 train photos "
          f"({'cached' if cache.exists() else 'computing, once'}: {cache})", flush=True)  # fmt: skip
    x, seconds = peers.dlib_descriptors([r.path for r in train_refs], cache, log=print)
    if seconds:
        print(f"  computed in {seconds:.0f} s ({len(train_refs) / seconds:.1f} photos/s)")
    y = np.array([r.identity for r in train_refs])
    start = time.perf_counter()
    if args.dlib_classifier == "centroid":
        from sklearn.neighbors import NearestCentroid

        fitted: Any = NearestCentroid().fit(x, y)
        what = "nearest class centroid (Euclidean) of the train descriptors"
    else:
        # The CV choice of C is kept beside the descriptors: a rerun fits one model, not ten.
        chosen = cache.with_suffix(".logreg.json")
        if chosen.exists():
            c = float(json.loads(chosen.read_text())["C"])
            fitted = peers.fit_logistic_regression(x, y, c)
            what = f"logistic regression, C {c:g} (chosen by 3-fold CV on the train part, cached)"
        else:
            fitted = peers.fit_logistic_regression(x, y)
            # with under 3 photos per person there is no CV: the C chosen on all of LFW-8
            c = float(fitted.best_params_["C"]) if hasattr(fitted, "best_params_") else fitted.C
            chosen.write_text(json.dumps({"C": c}))
            what = (
                f"logistic regression, C {c:g} (3-fold CV on the train part, or 100 when too few)"
            )
    print(f"  decision: {what} (fitted in {time.perf_counter() - start:.1f} s)")
    return fitted, what


def dlib_timing(
    args: argparse.Namespace, train_refs: list[ImageRef], paths: list[Path], truth: list[str]
) -> Timing:
    classifier, what = dlib_classifier(args, train_refs)
    describe = peers.DlibDescriber()

    def run(files: list[Path], names: list[str]) -> int:
        descriptors = np.stack([describe(p) for p in files])
        return int(np.sum(classifier.predict(descriptors) == np.array(names)))

    run(paths[: args.warmup], truth[: args.warmup])
    describe.fallbacks = 0
    label = f"dlib HOG + 5 points + ResNet + {args.dlib_classifier}"
    timing = timed(label, lambda: run(paths, truth), len(paths))
    timing.notes = f"; no HOG face in {describe.fallbacks} (central box used)"
    print(timing.line(), flush=True)
    return timing


def number_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True,
                   help="a run folder (or bundle) trained with --faces detect")  # fmt: skip
    p.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    p.add_argument("--split-file", type=Path, default=shared(*LFW_SPLITS))
    p.add_argument("--photos", "--limit", dest="photos", type=int, default=300,
                   help="LFW-8 test photos to time (default 300)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=8, help="photos run before each timing")
    p.add_argument("--batch-sizes", type=number_list, default=[8, 32])
    p.add_argument("--threads", type=number_list, default=[1, 2], help="torch threads")
    p.add_argument("--precisions", default="auto",
                   help="PyTorch autocast: auto (fp32, and bf16 too on CPUs with native bf16), "
                   "fp32, bf16 or fp32,bf16")  # fmt: skip
    p.add_argument("--systems", default="torch,onnx,dlib", help="any of torch,onnx,dlib")
    p.add_argument("--dlib-classifier", choices=["logreg", "centroid"], default="logreg")
    p.add_argument("--dlib-train-per-person", type=int,
                   help="fit dlib's decision on at most this many train photos per person "
                   "(a quick check; default all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    systems = set(args.systems.split(","))
    if systems - {"torch", "onnx", "dlib"}:
        p.error(f"--systems: unknown {sorted(systems - {'torch', 'onnx', 'dlib'})}")
    if not args.model.exists():
        p.error(f"--model {args.model}: no such run folder or bundle")
    threads_before = torch.get_num_threads()
    print(f"start: {load()}", flush=True)

    scan = scan_source(args.data, default_cache_dir(), lambda _m: None)
    parts = lfw8_parts(args.split_file)
    test_refs = sorted((r for r in scan.refs if parts.get(r.relpath) == "test"),
                       key=lambda r: r.relpath)  # fmt: skip
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(test_refs), min(args.photos, len(test_refs)), replace=False))
    refs = [test_refs[i] for i in chosen]
    truth = [r.identity for r in refs]
    args.warmup = min(args.warmup, len(refs))
    work = Path(tempfile.mkdtemp(prefix="facecls-predict-speed-"))
    timings: list[Timing] = []
    try:
        paths = copy_photos(refs, work / "photos")
        print(f"{len(paths)} LFW-8 test photos of {len(set(truth))} people (seed {args.seed}) "
              f"copied to {work / 'photos'}; warm-up on {args.warmup} before each timing")  # fmt: skip
        if "torch" in systems:
            timings += facecls_timings(args, args.model, paths, truth, "torch")
        if "onnx" in systems:
            torch.set_num_threads(threads_before)
            copy = export_copy(args.model, work, paths[: args.warmup])
            timings += facecls_timings(args, copy, paths, truth, "onnx")
        dlib = None
        if "dlib" in systems:
            if not peers.dlib_available():
                print("dlib peer skipped: dlib is not installed (pip install 'facecls[peers]': "
                      "dlib-bin, face-recognition-models)")  # fmt: skip
            else:
                train_refs = sorted((r for r in scan.refs if parts.get(r.relpath) in
                                     ("train", "val")), key=lambda r: r.relpath)  # fmt: skip
                if args.dlib_train_per_person:
                    seen: dict[str, int] = {}
                    kept = []
                    for ref in train_refs:
                        seen[ref.identity] = seen.get(ref.identity, 0) + 1
                        if seen[ref.identity] <= args.dlib_train_per_person:
                            kept.append(ref)
                    train_refs = kept
                dlib = dlib_timing(args, train_refs, paths, truth)
                timings.append(dlib)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nSummary: {len(refs)} photos, each system read and decoded every file")
    for t in timings:
        ratio = f"   facecls/dlib {t.rate / dlib.rate:5.2f}x" if dlib and t is not dlib else ""
        print(f"  {t.label:<54} {t.rate:7.2f} photos/s{ratio}")
    versions = [f"torch {torch.__version__}"]
    for package in ("onnxruntime", "dlib"):
        with contextlib.suppress(ImportError):
            versions.append(f"{package} {importlib.import_module(package).__version__}")
    print(f"{cpu_name()}, {os.cpu_count()} cores, native bf16: {cpu_has_native_bf16()}; "
          f"{', '.join(versions)}")  # fmt: skip
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
