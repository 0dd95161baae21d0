"""LFW verification: the standard pairs protocol (10 folds x 300 same + 300 different pairs)
on any facecls model's embeddings.

Each pair is scored by the cosine similarity of the two faces' L2-normalised embeddings (the
input of the model's final Linear layer). For each fold, the threshold that maximises accuracy on
the other 9 folds is applied to it; the mean and standard deviation over the 10 folds are printed
(the "unrestricted, labeled outside data" reporting of the LFW site; published anchors: dlib
99.38 %, FaceNet trained on CASIA-WebFace about 99 %).

    PYTHONPATH=src python benchmarks/lfw_pairs.py --model RUN_OR_BUNDLE
    PYTHONPATH=src python benchmarks/lfw_pairs.py --model RUN --folds 2 --pairs-per-fold 100

``--folds``/``--pairs-per-fold`` take a subset (the first folds, the first same and different
pairs of each) for timing ``FaceModel.embed`` where all 7,701 photos would take too long; the
accuracy of a subset is then leave-one-fold-out over those folds. The embedding time and rate
are printed with the load average, since a shared machine's load moves them.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from _paths import LFW_ARCHIVE, LFW_PAIRS, shared
from facecls.data.faces import as_square
from facecls.data.images import ImageError, load_rgb
from facecls.data.sources import default_cache_dir, scan_source
from facecls.inference.model import load_model


def read_pairs(
    path: Path, folds_kept: int | None = None, per_fold: int | None = None
) -> list[list[tuple[str, str, bool]]]:
    """Folds of ``(identity/file, identity/file, same)`` from LFW's ``pairs.txt``; with
    ``folds_kept``/``per_fold``, the first folds and the first ``per_fold / 2`` same and
    different pairs of each."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    folds_n, per_half = int(lines[0][0]), int(lines[0][1])

    def file(name: str, number: str) -> str:
        return f"{name}/{name}_{int(number):04d}.jpg"

    folds, rows = [], lines[1:]
    for f in range(folds_n):
        chunk = rows[f * 2 * per_half : (f + 1) * 2 * per_half]
        half = per_half if per_fold is None else min(per_half, per_fold // 2)
        fold = [(file(r[0], r[1]), file(r[0], r[2]), True) for r in chunk[:half]]
        fold += [(file(r[0], r[1]), file(r[2], r[3]), False) for r in chunk[per_half:][:half]]
        folds.append(fold)
    return folds[:folds_kept]


def embed_all(model, paths: list[Path], chunk: int = 64) -> tuple[np.ndarray, list[int]]:
    """Unit embeddings of ``paths`` as ``model.embed`` cuts them; a photo where the model's face
    pipeline finds no face gives the embedding of its centre square (0.64), and is listed."""
    out, faceless = [], []
    for s in range(0, len(paths), chunk):
        part = paths[s : s + chunk]
        try:
            out.append(model.embed(part))
            continue
        except ImageError:
            pass
        for i, path in enumerate(part):  # one of them has no face: one at a time
            try:
                out.append(model.embed([path]))
            except ImageError:
                faceless.append(s + i)
                square = as_square(load_rgb(path), model.image_size, 0.64).transpose(2, 0, 1)
                features = model.outputs(square[None])[1]
                out.append(features / np.linalg.norm(features, axis=1, keepdims=True))
    return np.concatenate(out), faceless


def best_threshold(similarity: np.ndarray, same: np.ndarray) -> float:
    """The threshold (between sorted similarities) with the highest accuracy on these pairs."""
    order = np.sort(similarity)
    candidates = np.concatenate(
        [[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]]
    )
    accuracies = [np.mean((similarity > t) == same) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def ten_fold_accuracy(similarity: np.ndarray, same: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Accuracy of each fold at the threshold chosen on the other folds."""
    accuracies = []
    for k in np.unique(fold):
        threshold = best_threshold(similarity[fold != k], same[fold != k])
        accuracies.append(np.mean((similarity[fold == k] > threshold) == same[fold == k]))
    return np.array(accuracies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder or bundle")
    parser.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    parser.add_argument("--pairs", type=Path, default=shared(*LFW_PAIRS))
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--folds", type=int, help="only the first N folds (at least 2)")
    parser.add_argument("--pairs-per-fold", type=int, help="only the first N pairs per fold")
    args = parser.parse_args()
    if args.folds is not None and args.folds < 2:
        parser.error("--folds must be at least 2 (each fold is scored at the others' threshold)")
    started = time.perf_counter()
    model = load_model(args.model, device="auto", backend=args.backend)
    folds = read_pairs(args.pairs, args.folds, args.pairs_per_fold)
    scan = scan_source(args.data, default_cache_dir(), lambda _m: None)
    paths = {ref.relpath: ref.path for ref in scan.refs}
    files = sorted({p for fold in folds for a, b, _ in fold for p in (a, b)})
    missing = [f for f in files if f not in paths]
    if missing:
        raise SystemExit(f"{len(missing)} pair images are not in {args.data}, e.g. {missing[0]}")
    load_before, embed_start = os.getloadavg()[0], time.perf_counter()
    embeddings, faceless = embed_all(model, [paths[f] for f in files])  # (N, D), unit length
    embed_seconds, load_after = time.perf_counter() - embed_start, os.getloadavg()[0]
    if faceless:
        print(f"  no face found in {len(faceless)} photo(s) (their centre square used): "
              + ", ".join(files[i] for i in faceless))  # fmt: skip
    index = {f: i for i, f in enumerate(files)}
    pairs = [(a, b, s, k) for k, fold in enumerate(folds) for a, b, s in fold]
    left = embeddings[[index[a] for a, _, _, _ in pairs]]
    right = embeddings[[index[b] for _, b, _, _ in pairs]]
    similarity = np.sum(left * right, axis=1)
    same = np.array([s for _, _, s, _ in pairs])
    fold = np.array([k for _, _, _, k in pairs])
    accuracies = ten_fold_accuracy(similarity, same, fold)
    trained = set(model.trained_names)
    seen = sum(a.split("/")[0] in trained or b.split("/")[0] in trained for a, b, _, _ in pairs)
    where = (
        torch.cuda.get_device_name(0)
        if args.backend == "torch" and torch.cuda.is_available()
        else f"{platform.machine()} CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"LFW pairs protocol ({len(folds)} folds, {len(pairs)} pairs, {len(files)} images): "
        f"model {model.meta['architecture']} @ {model.image_size} px, embedding dim "
        f"{embeddings.shape[1]}, {args.backend} on {where}"
    )
    print(f"  verification accuracy {accuracies.mean():.4f} ± {accuracies.std(ddof=1):.4f} "
          f"(std over folds; standard error {accuracies.std(ddof=1) / np.sqrt(len(accuracies)):.4f})")  # fmt: skip
    print(f"  per fold: {' '.join(f'{a:.3f}' for a in accuracies)}")
    # the threshold `facecls verify` uses: calibrated at training on validation pairs (FAR 1 %)
    calibrated = (model.meta.get("verify") or {}).get("threshold")
    if calibrated is None:
        print("  calibrated verify threshold: none in this bundle (trained before facecls verify)")
    else:
        decided = similarity >= calibrated
        print(f"  at the calibrated verify threshold {calibrated:.4f} (FAR "
              f"{model.meta['verify']['far']:.1%} on validation pairs): accuracy "
              f"{np.mean(decided == same):.4f}, false accepts {np.mean(decided[~same]):.4f}, "
              f"true accepts {np.mean(decided[same]):.4f} (best-threshold 10-fold: "
              f"{accuracies.mean():.4f})")  # fmt: skip
    print(f"  note: {seen} of {len(pairs)} pairs involve a person this model was trained on "
          f"({len(trained)} identities); LFW's protocol assumes no such overlap, so the figure "
          "is optimistic for models trained on LFW")  # fmt: skip
    print(f"  FaceModel.embed: {len(files)} photos in {embed_seconds:.1f} s "
          f"({len(files) / embed_seconds:.2f} photos/s; face pipeline {model.faces}; load "
          f"average {load_before:.1f} before, {load_after:.1f} after; {os.cpu_count()} cores)")  # fmt: skip
    print(f"  wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
