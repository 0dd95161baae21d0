"""Faces from real photos, measured: the detector on LFW and FaceNet verification per face crop.

    PYTHONPATH=src python benchmarks/face_pipeline.py detect [--limit N]
    PYTHONPATH=src python benchmarks/face_pipeline.py pairs [--folds 10] [--variants ...]

``detect`` runs MTCNN over LFW's photos (all 13,233 unless ``--limit``) and prints the share with
a face found and photos per second at 250 px, then for a 900 x 650 group photo. Detections are
kept in the cache folder, so ``pairs`` does not detect again.

``pairs`` scores LFW's standard 6,000 pairs (10 folds, threshold chosen on the other 9 folds)
with the FaceNet CASIA-WebFace weights and mirror-averaged, L2-normalised embeddings, for each
face crop: the centre crop used so far (0.64 of the photo, 160 px), MTCNN's box with a margin
(the framing the weights were trained on) and the landmark-aligned crop. Photos where MTCNN
finds no face fall back to the centre crop (counted). The figures are the goal of issue 14
(>= 0.990, 0.974 before).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _paths import FACENET_WEIGHTS, LFW_ARCHIVE, LFW_PAIRS, shared
from facecls.data.align import align_face, box_crop
from facecls.data.faces import as_square, main_first
from facecls.data.mtcnn import MTCNN
from facecls.data.sources import default_cache_dir
from facecls.models import create_model
from facecls.models.embedding import forward_tta

ARCHIVE = shared(*LFW_ARCHIVE)
WEIGHTS = shared(*FACENET_WEIGHTS)


def read_lfw(names: set[str] | None = None, limit: int | None = None) -> dict[str, np.ndarray]:
    """``identity/file.jpg`` -> RGB photo, in archive order."""
    photos: dict[str, np.ndarray] = {}
    with tarfile.open(ARCHIVE) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".jpg"):
                continue
            key = member.name.split("/", 1)[1]
            if names is not None and key not in names:
                continue
            data = tar.extractfile(member).read()
            photos[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            if limit is not None and len(photos) >= limit:
                break
    return photos


def detections_path() -> Path:
    return default_cache_dir() / "benchmarks" / f"lfw-mtcnn-main-{ARCHIVE.stat().st_size}.npz"


def detect_all(photos: dict[str, np.ndarray], chunk: int = 32) -> tuple[dict, float]:
    """The main face's box and landmarks per photo (``None`` when none); photos per second."""
    detector = MTCNN()
    found: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    keys = list(photos)
    started = time.perf_counter()
    for s in range(0, len(keys), chunk):
        part = keys[s : s + chunk]
        for key, d in zip(part, detector.detect([photos[k] for k in part]), strict=True):
            if len(d) == 0:
                found[key] = None
                continue
            # LFW's person is the photo's main face: large and central (facecls's own rule).
            i = int(main_first(d.boxes, *photos[key].shape[:2])[0])
            found[key] = (d.boxes[i], d.landmarks[i])
        if s // chunk % 20 == 0:
            print(f"  {s + len(part)}/{len(keys)} photos", flush=True)
    return found, len(keys) / (time.perf_counter() - started)


def save_detections(found: dict) -> None:
    path = detections_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(found)
    ok = np.array([found[k] is not None for k in keys])
    boxes = np.array([found[k][0] if found[k] is not None else np.zeros(4) for k in keys])
    points = np.array([found[k][1] if found[k] is not None else np.zeros((5, 2)) for k in keys])
    np.savez(path, keys=np.array(keys), ok=ok, boxes=boxes, points=points)


def load_detections() -> dict:
    data = np.load(detections_path())
    return {
        str(k): (b, p) if ok else None
        for k, ok, b, p in zip(data["keys"], data["ok"], data["boxes"], data["points"], strict=True)
    }


def machine() -> str:
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load:.1f} at the end"
    )


def cmd_detect(args: argparse.Namespace) -> None:
    photos = read_lfw(limit=args.limit)
    print(f"MTCNN on {len(photos)} LFW photos (250 x 250) ...", flush=True)
    found, rate = detect_all(photos)
    hits = sum(v is not None for v in found.values())
    if args.limit is None:
        save_detections(found)
    print(f"face found in {hits} of {len(found)} photos: {hits / len(found):.4f} "
          f"({rate:.1f} photos/s at 250 px, batches of 32)")  # fmt: skip
    canvas = np.full((650, 900, 3), 90, np.uint8)
    faces = list(photos.values())[:4]
    for (left, top, side), face in zip(
        [(30, 60, 200), (300, 300, 150), (500, 50, 220), (700, 400, 110)], faces, strict=True
    ):
        small = Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR)
        canvas[top : top + side, left : left + side] = np.asarray(small)
    detector = MTCNN()
    detector.detect([canvas])  # weights loaded
    started, n = time.perf_counter(), 10
    for _ in range(n):
        count = len(detector.detect([canvas])[0])
    print(f"900 x 650 group photo with 4 pasted faces: {n / (time.perf_counter() - started):.1f} "
          f"photos/s, {count} faces found")  # fmt: skip
    print(f"machine: {machine()}")


def read_pairs(path: Path) -> list[tuple[str, str, bool, int]]:
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    folds, per = int(lines[0][0]), int(lines[0][1])
    rows, pairs = lines[1:], []
    for f in range(folds):
        chunk = rows[f * 2 * per : (f + 1) * 2 * per]
        for r in chunk[:per]:
            pairs.append(
                (
                    f"{r[0]}/{r[0]}_{int(r[1]):04d}.jpg",
                    f"{r[0]}/{r[0]}_{int(r[2]):04d}.jpg",
                    True,
                    f,
                )
            )
        for r in chunk[per:]:
            pairs.append(
                (
                    f"{r[0]}/{r[0]}_{int(r[1]):04d}.jpg",
                    f"{r[2]}/{r[2]}_{int(r[3]):04d}.jpg",
                    False,
                    f,
                )
            )
    return pairs


def ten_fold(similarity: np.ndarray, same: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Accuracy of each fold at the threshold that is best on the other folds."""
    accuracies = []
    for k in np.unique(fold):
        s, y = similarity[fold != k], same[fold != k]
        order = np.sort(s)
        candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2])
        best = candidates[int(np.argmax([np.mean((s > t) == y) for t in candidates]))]
        accuracies.append(np.mean((similarity[fold == k] > best) == same[fold == k]))
    return np.array(accuracies)


def cut(variant: str, photo: np.ndarray, found, size: int = 160) -> np.ndarray:
    if variant == "centre" or found is None:
        return as_square(photo, size, 0.64)
    box, points = found
    if variant.startswith("box"):
        return box_crop(photo, box, size, margin=float(variant[3:]) * size)
    return align_face(photo, points, size, scale=float(variant[5:]))


@torch.inference_mode()
def embed(model: torch.nn.Module, faces: np.ndarray, bf16: bool, batch: int = 64) -> np.ndarray:
    out = []
    for s in range(0, len(faces), batch):
        x = torch.from_numpy(faces[s : s + batch]).permute(0, 3, 1, 2).float()
        x = ((x - 127.5) / 128.0).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, features = forward_tta(model, x, True)
        out.append(torch.nn.functional.normalize(features.float(), dim=1).numpy())
    return np.concatenate(out)


def cmd_pairs(args: argparse.Namespace) -> None:
    pairs = [p for p in read_pairs(shared(*LFW_PAIRS)) if p[3] < args.folds]
    files = sorted({f for a, b, _, _ in pairs for f in (a, b)})
    photos = read_lfw(set(files))
    found = load_detections() if detections_path().exists() else None
    if found is None:
        print("no stored detections (run `detect` first for all of LFW): detecting the pair photos")
        found, _ = detect_all(photos)
    missing = sum(found.get(f) is None for f in files)
    model = create_model("facenet", num_classes=2, image_size=160, weights=str(WEIGHTS)).eval()
    model = model.to(memory_format=torch.channels_last)
    index = {f: i for i, f in enumerate(files)}
    same = np.array([s for _, _, s, _ in pairs])
    fold = np.array([k for _, _, _, k in pairs])
    print(f"LFW pairs: {len(pairs)} pairs ({args.folds} folds), {len(files)} photos, FaceNet "
          f"CASIA-WebFace @ 160 px, {args.precision}, mirror-averaged; MTCNN found no face in {missing} "
          "(centre crop used for those)")  # fmt: skip
    for variant in args.variants:
        started = time.perf_counter()
        faces = np.stack([cut(variant, photos[f], found.get(f)) for f in files])
        vectors = embed(model, faces, args.precision == "bf16")
        similarity = np.sum(
            vectors[[index[a] for a, _, _, _ in pairs]]
            * vectors[[index[b] for _, b, _, _ in pairs]],
            axis=1,
        )
        acc = ten_fold(similarity, same, fold)
        print(f"  {variant:<10} accuracy {acc.mean():.4f} ± {acc.std(ddof=1):.4f}  "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    print(f"machine: {machine()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("detect")
    p.add_argument("--limit", type=int, help="only the first N photos (not stored)")
    p = sub.add_parser("pairs")
    p.add_argument("--folds", type=int, default=10, help="use the first N of the 10 folds")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument(
        "--variants", nargs="+", default=["centre", "box0.1", "align0.9"],
        help="centre, boxM (margin M x size) or alignS (template scale S)",
    )  # fmt: skip
    args = parser.parse_args()
    {"detect": cmd_detect, "pairs": cmd_pairs}[args.command](args)


if __name__ == "__main__":
    main()
