"""Phone photos: index 12-megapixel JPEGs, and how many of their faces each detector finds.

Builds ``--photos`` 4032 x 3024 JPEGs (quality 90) of a smooth noisy background with 1 to 4 LFW
photos pasted so that their faces are 40 to 400 px (log-uniform; the face is about 110 of an
LFW photo's 250 px), writes where each face went, then in one run:

1. ``facecls index`` at each ``--min-face`` (the library path: the shared reader decodes a reduced copy for MTCNN,
   cuts each face at the resolution it needs, FaceNet embeds): photos/s and faces found;
2. MTCNN on the full-resolution decode with the same smallest face (the reference the reader
   must not lose a face against), photos/s and faces found;
3. MTCNN as ``predict`` used it before the reader (the photo shrunk to 1600 px, faces from
   20 px there: 50 px in these photos);
4. dlib's HOG detector (``get_frontal_face_detector``, face_recognition's default) on the
   full-resolution photos, with ``--hog-upsample`` (0 finds faces from about 80 px).

A pasted face counts as found when a detection's centre lies in its box and the sizes agree
within a factor of 2. Prints recall by face size, photos/s and CPU seconds per photo (all
threads; on a busy shared machine the wall-clock rate understates an idle one), the hardware
and the load average.

    nice -n 10 python benchmarks/library_phone.py --photos 40 --weights W.safetensors
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from _paths import FACENET_WEIGHTS, LFW_ARCHIVE, shared
from facecls.data.archive import extract_archive
from facecls.data.images import load_rgb
from facecls.data.mtcnn import MTCNN
from facecls.data.sources import default_cache_dir
from facecls.library.embedder import facenet_embedder
from facecls.library.index import index_photos
from facecls.library.store import open_library

SIZE = (4032, 3024)
BUCKETS = ((40, 80), (80, 160), (160, 401))


def build(folder: Path, count: int, seed: int) -> list[list[tuple[float, float, float]]]:
    """``count`` phone photos in ``folder``; answers each photo's faces (cx, cy, side)."""
    lfw = sorted((extract_archive(shared(*LFW_ARCHIVE),
                                  default_cache_dir()) / "lfw-deepfunneled").glob("*/*_0001.jpg"))  # fmt: skip
    rng = np.random.default_rng(seed)
    truth = []
    for n in range(count):
        grid = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
        back = np.asarray(Image.fromarray(grid).resize(SIZE, Image.Resampling.BICUBIC), np.float32)
        back += rng.normal(0, 4, back.shape).astype(np.float32)
        photo = Image.fromarray(np.clip(back, 0, 255).astype(np.uint8))
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(1, 5))):
            side = float(np.exp(rng.uniform(np.log(40), np.log(400))))
            width = round(250 * side / 110)
            for _try in range(50):  # no two pasted photos overlap
                x, y = int(rng.integers(0, SIZE[0] - width)), int(rng.integers(0, SIZE[1] - width))
                if all(abs(x + width / 2 - cx) > (width + 250 * s / 110) / 2 or
                       abs(y + width / 2 - cy) > (width + 250 * s / 110) / 2
                       for cx, cy, s in placed):  # fmt: skip
                    break
            else:
                continue
            face = Image.open(lfw[int(rng.integers(len(lfw)))]).convert("RGB")
            mask = Image.new("L", (width, width), 0)
            ImageDraw.Draw(mask).ellipse((width * 0.1, width * 0.04, width * 0.9, width * 0.98),
                                         fill=255)  # fmt: skip
            mask = mask.filter(ImageFilter.GaussianBlur(max(1, width // 40)))
            photo.paste(face.resize((width, width), Image.Resampling.BICUBIC), (x, y), mask)
            placed.append((x + width / 2, y + width / 2, side))
        photo.save(folder / f"IMG_{n:04d}.jpg", quality=90)
        truth.append(placed)
    return truth


def matched(truth: list[tuple[float, float, float]], boxes: np.ndarray) -> list[bool]:
    """Which true faces a box finds (centre inside, size within a factor of 2)."""
    out = []
    for cx, cy, side in truth:
        hit = False
        for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
            size = max(x2 - x1, y2 - y1)
            if x1 < cx < x2 and y1 < cy < y2 and 0.5 < size / side < 2:
                hit = True
        out.append(hit)
    return out


def recall_line(name: str, truth: list, found: list[np.ndarray], seconds: float, cpu: float) -> str:
    sides = np.array([s for photo in truth for _, _, s in photo])
    hits = np.array([h for photo, boxes in zip(truth, found, strict=True)
                     for h in matched(photo, boxes)])  # fmt: skip
    parts = [f"{lo}-{min(hi, 400)} px {hits[(sides >= lo) & (sides < hi)].mean():.3f}"
             for lo, hi in BUCKETS]  # fmt: skip
    boxes = sum(len(np.asarray(b).reshape(-1, 4)) for b in found)
    return (f"{name:<34} {len(truth) / seconds:6.2f} photos/s ({cpu / len(truth):.2f} CPU s/photo)"
            f"  recall {hits.mean():.3f} "
            f"({hits.sum()}/{len(hits)}; {', '.join(parts)}); {boxes} boxes")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--weights", type=Path,
                   default=shared(*FACENET_WEIGHTS))  # fmt: skip
    p.add_argument("--min-face", type=int, nargs="+", default=[40, 60, 80])
    p.add_argument("--hog-upsample", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", type=Path, help="keep the photos here (default: a temp folder)")
    args = p.parse_args()
    print(f"Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} on {torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="phone-") as scratch:
        folder = args.folder or Path(scratch) / "photos"
        folder.mkdir(parents=True, exist_ok=True)
        truth = build(folder, args.photos, args.seed)
        faces = sum(len(t) for t in truth)
        print(f"{args.photos} photos of {SIZE[0]} x {SIZE[1]} px, {faces} faces of 40-400 px")
        embedder = facenet_embedder(args.weights, "cpu")
        files = sorted(folder.glob("*.jpg"))
        for min_face in args.min_face:
            library = Path(scratch) / f"library-{min_face}"
            start, cpu = time.perf_counter(), time.process_time()
            index_photos([folder], library, embedder=embedder, min_face=min_face,
                         log=lambda _m: None)  # fmt: skip
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            with open_library(library) as lib:
                by_path = lib.files()
                found = [np.array([f.box for f in lib.faces(photo_id=by_path[str(f)].photo_id)])
                         for f in files]  # fmt: skip
            print(recall_line(f"facecls index --min-face {min_face}", truth, found, seconds, cpu))
        torch.set_num_threads(1)  # as the index's workers: two spinning threads lose on a busy VM
        detector = MTCNN("cpu", min_face_size=min(args.min_face), max_side=1 << 20, fast=True)
        start, cpu = time.perf_counter(), time.process_time()
        found = [detector.detect([load_rgb(f)])[0].boxes for f in files]
        name = f"MTCNN full size, min {min(args.min_face)} px"
        print(recall_line(name, truth, found, time.perf_counter() - start,
                          time.process_time() - cpu))  # fmt: skip
        before = MTCNN("cpu")  # facecls's default MTCNN: 1600 px cap, 20 px faces, area pyramid
        start, cpu = time.perf_counter(), time.process_time()
        found = [before.detect([load_rgb(f)])[0].boxes for f in files]
        print(recall_line("MTCNN as predict before (1600 px)", truth, found,
                          time.perf_counter() - start, time.process_time() - cpu))  # fmt: skip
        import dlib

        hog = dlib.get_frontal_face_detector()
        start, cpu = time.perf_counter(), time.process_time()
        found = []
        for f in files:
            rects = hog(load_rgb(f), args.hog_upsample)
            found.append(np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects]))
        name = f"dlib HOG full size, upsample {args.hog_upsample}"
        print(recall_line(name, truth, found, time.perf_counter() - start,
                          time.process_time() - cpu))  # fmt: skip
    print(f"Load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
