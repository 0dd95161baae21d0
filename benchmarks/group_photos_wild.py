"""Group photos as people take them, a second generator: does a model trained on LFW-8 name every
face it knows and answer ``unknown`` for strangers, with its default settings?

    PYTHONPATH=src python benchmarks/group_photos_wild.py --run RUN [--photos 200] [--out DIR]
        [--method M] [--threshold T] [--seed 1]

Unlike ``benchmarks/group_photos.py`` (smooth noise, 2-4 faces of 70-220 px, ±25°, JPEG 92),
each photo here is a real scene with no face in it (scikit-learn's and matplotlib's sample
photos: a temple, a flower, a parcel; cropped, scaled, mirrored, recoloured) or a texture
(bricks, planks, terrain from matplotlib's elevation samples, stripes), 900-1400 x 650-1000 px,
with 2-6 faces 40-220 px wide, tilted up to ±30°, each lit differently, the whole photo saved
as JPEG at quality 40-90. About a third of the faces are strangers (LFW people with fewer than 8
photos, never trained on); known faces come from LFW-8's *test* part. The faces never overlap.

``predict`` (every face detected, the model's own pipeline and operating point) answers for
each photo; a detection is matched to the pasted face whose centre it holds (the nearest when
several). Printed: known faces named correctly, strangers answered ``unknown``, detections of
no pasted face named as someone (and all such detections), per face-size band (the detector's
box side; a missed face by its drawn width) the named and stranger rates; the goals of issue 27
(>= 97 %, >= 95 %, <= 1 %). The photos and ``truth.json`` stay in ``--out`` for
``facecls predict RUN DIR --annotate``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from _paths import shared
from facecls.inference.faces import face_items
from facecls.inference.model import load_model
from group_photos import read_photos  # the LFW archive read once for the wanted photos

SHARED = shared()  # ../shared, or $FACECLS_SHARED (benchmarks/_paths.py)
FACE_SHARE = 1 / 2.04  # an LFW deep-funneled photo's face is about 1/2.04 of its side
BANDS = ((0, 60), (60, 100), (100, 160), (160, 10_000))


def band_name(low: int, high: int) -> str:
    return f"< {high} px" if low == 0 else f"> {low} px" if high >= 10_000 else f"{low}-{high} px"


def scenes() -> list[np.ndarray]:
    """Photos of real scenes without faces shipped with scikit-learn and matplotlib."""
    import matplotlib
    import sklearn.datasets

    found = [sklearn.datasets.load_sample_image(n) for n in ("china.jpg", "flower.jpg")]
    parcel = Path(matplotlib.get_data_path()) / "sample_data" / "Minduka_Present_Blue_Pack.png"
    if parcel.is_file():
        found.append(np.asarray(Image.open(parcel).convert("RGB")))
    return found


def terrain(rng: np.random.Generator) -> np.ndarray | None:
    """A colour-mapped elevation sample of matplotlib (a landscape seen from above)."""
    import matplotlib
    from matplotlib import colormaps

    path = Path(matplotlib.get_data_path()) / "sample_data" / "jacksboro_fault_dem.npz"
    if not path.is_file():
        return None
    dem = np.load(path)["elevation"].astype(np.float64)
    dem = (dem - dem.min()) / max(np.ptp(dem), 1e-9)
    cmap = colormaps[str(rng.choice(["terrain", "gist_earth", "copper", "viridis"]))]
    return (cmap(dem)[..., :3] * 255).astype(np.uint8)


def texture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Bricks, planks or stripes with noise: man-made texture with no face."""
    kind = int(rng.integers(3))
    base = rng.integers(60, 200, 3)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in base))
    draw = ImageDraw.Draw(image)
    if kind == 0:  # bricks
        bw, bh = int(rng.integers(40, 120)), int(rng.integers(20, 50))
        for row, y in enumerate(range(0, height, bh)):
            shift = (bw // 2) * (row % 2)
            for x in range(-shift, width, bw):
                tone = np.clip(base + rng.integers(-40, 40, 3), 0, 255)
                draw.rectangle(
                    [x + 2, y + 2, x + bw - 2, y + bh - 2], fill=tuple(int(v) for v in tone)
                )
    elif kind == 1:  # planks with grain
        pw = int(rng.integers(50, 160))
        for x in range(0, width, pw):
            tone = np.clip(base + rng.integers(-30, 30, 3), 0, 255)
            draw.rectangle([x, 0, x + pw - 3, height], fill=tuple(int(v) for v in tone))
            for _ in range(12):
                gx = x + int(rng.integers(0, pw))
                draw.line([gx, 0, gx + int(rng.integers(-20, 20)), height],
                          fill=tuple(int(v) for v in np.clip(tone - 25, 0, 255)), width=1)  # fmt: skip
    else:  # diagonal stripes
        step = int(rng.integers(15, 60))
        other = tuple(int(v) for v in rng.integers(30, 230, 3))
        for k in range(-height, width, step * 2):
            draw.polygon([(k, 0), (k + step, 0), (k + step + height, height), (k + height, height)],
                         fill=other)  # fmt: skip
    noise = rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def background(rng: np.random.Generator, width: int, height: int, photos: list) -> Image.Image:
    """Half the photos a real scene, the other half a texture or terrain."""
    if rng.random() < 0.5:
        scene = photos[int(rng.integers(len(photos)))]
        h, w = scene.shape[:2]
        keep = rng.uniform(0.5, 1.0)
        cw, ch = int(w * keep), int(h * keep)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = Image.fromarray(scene[y : y + ch, x : x + cw]).resize((width, height))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.4))
        return ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.2))
    land = terrain(rng) if rng.random() < 0.3 else None
    if land is not None:
        return Image.fromarray(land).resize((width, height), Image.Resampling.BICUBIC)
    return texture(rng, width, height)


def paste_face(
    canvas: Image.Image, photo: np.ndarray, centre: tuple[int, int], face_width: int,
    angle: float, rng: np.random.Generator,
) -> None:  # fmt: skip
    """The LFW photo's face, cut to a soft ellipse of a random shape, lit and turned."""
    side = round(face_width / FACE_SHARE)
    face = Image.fromarray(photo).resize((side, side), Image.Resampling.BILINEAR)
    face = ImageEnhance.Brightness(face).enhance(rng.uniform(0.65, 1.3))
    face = ImageEnhance.Contrast(face).enhance(rng.uniform(0.7, 1.2))
    mask = Image.new("L", (side, side), 0)
    wide, tall = rng.uniform(0.26, 0.33), rng.uniform(0.36, 0.44)
    ImageDraw.Draw(mask).ellipse(
        [side * (0.5 - wide), side * (0.52 - tall), side * (0.5 + wide), side * (0.52 + tall)],
        fill=255,
    )  # the face with hair and chin, not the LFW photo's background people
    mask = mask.filter(ImageFilter.GaussianBlur(side / 30))
    face = face.rotate(angle, Image.Resampling.BILINEAR)
    mask = mask.rotate(angle, Image.Resampling.BILINEAR)
    canvas.paste(face, (centre[0] - side // 2, centre[1] - side // 2), mask)


def plan_photos(rng: np.random.Generator, count: int, known: list[str], strangers: list[str]):
    """Per photo: its size and its faces ``(key, known, centre, width, angle)``, never
    overlapping (the pasted ellipse of one face keeps clear of the others')."""
    plan = []
    for _ in range(count):
        width, height = int(rng.integers(900, 1401)), int(rng.integers(650, 1001))
        n, faces, tries = int(rng.integers(2, 7)), [], 0
        while len(faces) < n and tries < 500:
            tries += 1
            face_width = int(rng.integers(40, 221))
            half = face_width * 0.75
            cx = int(rng.uniform(half, width - half))
            cy = int(rng.uniform(half, height - half))
            if any(np.hypot(cx - c[0], cy - c[1]) < (half + w * 0.75) for _, _, c, w, _ in faces):
                continue
            is_known = rng.random() >= 1 / 3
            key = str(rng.choice(known if is_known else strangers))
            faces.append((key, is_known, (cx, cy), face_width, float(rng.uniform(-30, 30))))
        plan.append(((width, height), faces))
    return plan


def make(args: argparse.Namespace) -> tuple[list[Path], list]:
    """The photos and their plan, made once per seed and count into ``--out``."""
    truth_file = args.out / "truth.json"
    if truth_file.is_file():
        truth = json.loads(truth_file.read_text())
        if truth["seed"] == args.seed and truth["photos"] == args.photos:
            return [args.out / p for p in truth["files"]], truth["plan"]
    rng = np.random.default_rng(args.seed)
    with open(SHARED / "datasets" / "lfw-benchmark-splits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    known = [r["path"].split("/", 1)[-1] for r in rows if r["lfw8"] == "test"]
    names = (SHARED / "datasets" / "lfw-names.txt").read_text().split("\n")
    counts = Counter({n.split()[0]: int(n.split()[1]) for n in names if len(n.split()) == 2})
    strangers = [
        f"{name}/{name}_{i:04d}.jpg" for name, k in counts.items() if k < 8 for i in range(1, k + 1)
    ]
    plan = plan_photos(rng, args.photos, known, strangers)
    photos = read_photos({f[0] for _, faces in plan for f in faces})
    sample = scenes()
    args.out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, ((width, height), faces) in enumerate(plan):
        canvas = background(rng, width, height, sample)
        for key, _, centre, face_width, angle in faces:
            paste_face(canvas, photos[key], centre, face_width, angle, rng)
        if rng.random() < 0.3:  # a soft or noisy camera
            canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        name = f"wild_{i:04d}.jpg"
        canvas.save(args.out / name, quality=int(rng.integers(40, 91)))
        files.append(name)
    plan_json = [[list(size), [[k, kn, list(c), w, a] for k, kn, c, w, a in faces]]
                 for size, faces in plan]  # fmt: skip
    truth_file.write_text(json.dumps({"seed": args.seed, "photos": args.photos,
                                      "files": files, "plan": plan_json}))  # fmt: skip
    return [args.out / f for f in files], plan_json


def band_of(px: float) -> int:
    return next(i for i, (low, high) in enumerate(BANDS) if low <= px < high)


def best_thresholds(dump: list[dict], allowed: int) -> tuple[float, float]:
    """The most known faces one threshold, and one threshold per face-size band, could name
    with at most ``allowed`` strangers named: both tuned on these photos' own answers, so an
    upper bound on any operating point of this model's score, not a figure to quote as met."""
    rows = [d for d in dump if d["kind"] in ("known", "stranger")]
    score = np.array([d["p"].score for d in rows])
    right = np.array([d["kind"] == "known" and d["p"].closest == d["identity"] for d in rows])
    known = np.array([d["kind"] == "known" for d in rows])
    band = np.array([band_of(d["px"]) for d in rows])
    grid = np.unique(score)
    # per candidate threshold: strangers named and known faces named, in each band
    per_band = [
        [(int(((band == b) & ~known & (score >= t)).sum()),
          int(((band == b) & right & (score >= t)).sum())) for t in grid]
        for b in range(len(BANDS))
    ]  # fmt: skip
    whole = max(
        sum(per_band[b][i][1] for b in range(len(BANDS)))
        for i in range(len(grid))
        if sum(per_band[b][i][0] for b in range(len(BANDS))) <= allowed
    )
    best = {0: 0}  # strangers named so far -> most known faces named, band by band
    for options in per_band:
        step: dict[int, int] = {}
        for used, named in best.items():
            for strangers, names in set(options):
                if used + strangers <= allowed and step.get(used + strangers, -1) < named + names:
                    step[used + strangers] = named + names
        best = step
    return whole / known.sum(), max(best.values()) / known.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a model trained on LFW-8")
    parser.add_argument("--photos", type=int, default=200, help="group photos to make")
    parser.add_argument("--out", type=Path, default=Path("runs") / "benchmark-group-wild")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--method", help="open-set score instead of the model's default")
    parser.add_argument("--threshold", type=float, help="threshold instead of the calibrated one")
    parser.add_argument("--dump", type=Path, help="save every face's outputs and truth (.npz)")
    args = parser.parse_args()
    started = time.perf_counter()
    paths, plan = make(args)
    model = load_model(args.run, device="cpu", method=args.method, threshold=args.threshold)
    made = time.perf_counter()
    answers: dict[str, list] = {}
    outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    # what predict does (the same faces and decisions as predict_files), keeping the outputs
    items = list(face_items(paths, model, detect=True))
    faces = [item for item in items if item.pixels is not None]
    for start in range(0, len(faces), 64):
        chunk = faces[start : start + 64]
        logits, features = model.outputs(np.stack([item.pixels for item in chunk]))
        for item, answer, row in zip(chunk, model.decide(logits, features, top_k=1), range(len(chunk)),
                                     strict=True):  # fmt: skip
            # (the detector's score is in the rows of facecls from issue 27 on)
            seen = {"detection": item.template.detection} if hasattr(answer, "detection") else {}
            p = replace(answer, path=item.template.path, box=item.template.box, **seen)
            outputs[id(p)] = (logits[row], features[row])
            answers.setdefault(p.path, []).append(p)
    seconds = time.perf_counter() - made
    dump: list[dict] = []
    known_total = strangers_total = named = rejected = missed = 0
    answered = ghosts = ghosts_named = 0
    per_band = {i: {"known": [], "stranger": []} for i in range(len(BANDS))}
    for path, (_, faces) in zip(paths, plan, strict=True):
        found = [p for p in answers.get(str(path), []) if p.box is not None]
        answered += len(found)
        used: set[int] = set()
        for key, is_known, (cx, cy), width, _ in faces:
            holding = [
                j for j, p in enumerate(found) if j not in used
                and p.box[0] <= cx <= p.box[0] + p.box[2] and p.box[1] <= cy <= p.box[1] + p.box[3]
            ]  # fmt: skip
            match = min(
                holding,
                key=lambda j: np.hypot(found[j].box[0] + found[j].box[2] / 2 - cx,
                                       found[j].box[1] + found[j].box[3] / 2 - cy),
                default=None,
            )  # fmt: skip
            px = width if match is None else max(found[match].box[2], found[match].box[3])
            if match is not None:
                dump.append({"p": found[match], "kind": "known" if is_known else "stranger",
                             "identity": key.split("/")[0], "px": px})  # fmt: skip
            band = band_of(px)
            if is_known:
                known_total += 1
                right = match is not None and found[match].identity == key.split("/")[0]
                named += right
                per_band[band]["known"].append(right)
            else:
                strangers_total += 1
                ok = match is None or found[match].decision == "unknown"
                rejected += ok
                per_band[band]["stranger"].append(ok)
            missed += match is None
            if match is not None:
                used.add(match)
        for j, p in enumerate(found):
            if j not in used:
                ghosts += 1
                ghosts_named += p.decision == "known"
                dump.append({"p": p, "kind": "ghost", "identity": "", "px": max(p.box[2:])})
    print(f"Group photos (wild): {len(paths)} photos 900-1400 x 650-1000 px, {known_total} known "
          f"faces (LFW-8 test part), {strangers_total} strangers; model "
          f"{model.meta['architecture']} @ {model.image_size} px, face pipeline {model.faces}, "
          f"open set {model.method} >= {model.threshold}, trained in {args.run}")  # fmt: skip
    print(f"  known faces named correctly         {named / known_total:.3f}  (goal >= 0.97)")
    print(f"  strangers answered unknown          {rejected / strangers_total:.3f}  (goal >= 0.95)")
    print(f"  no-face detections named as someone {ghosts_named / max(answered, 1):.3f} of all "
          f"answers ({ghosts_named} of {answered}; goal <= 0.01); detections of no pasted face: "
          f"{ghosts}")  # fmt: skip
    print(f"  pasted faces not detected           {missed} of {known_total + strangers_total}")
    print("  per face size (detector box side)   named (known)       unknown (strangers)")
    for i, (low, high) in enumerate(BANDS):
        k, s = per_band[i]["known"], per_band[i]["stranger"]
        kt = f"{np.mean(k):.3f} of {len(k):>4}" if k else "      —    "
        st = f"{np.mean(s):.3f} of {len(s):>4}" if s else "      —    "
        print(f"    {band_name(low, high):<12}                       {kt}      {st}")
    # How far could a better operating point go with this score? (issue 27: the recognition,
    # not the threshold, is what is left.)
    named_now = sum(d["kind"] == "stranger" and d["p"].decision == "known" for d in dump)
    print("  best any threshold could do on these photos (tuned on them: an upper bound)")
    for allowed in sorted(
        {named_now, round(0.01 * strangers_total), round(0.05 * strangers_total)}
    ):
        one, banded = best_thresholds(dump, allowed)
        print(
            f"    with <= {allowed:>3} of {strangers_total} strangers named: one threshold "
            f"{one:.3f}, one per face-size band {banded:.3f} of known faces named"
        )
    if args.dump:
        names = model.class_names
        np.savez_compressed(
            args.dump,
            logits=np.stack([outputs[id(d["p"])][0] for d in dump]),
            features=np.stack([outputs[id(d["p"])][1] for d in dump]),
            kind=np.array([d["kind"] for d in dump]),
            target=np.array([names.index(d["identity"]) if d["identity"] in names else -1
                             for d in dump]),
            px=np.array([d["px"] for d in dump], float),
            detection=np.array([getattr(d["p"], "detection", np.nan) for d in dump], float),
            centroids=model.centroids if model.centroids is not None else np.zeros((0, 0)),
        )  # fmt: skip
    print(f"  {len(paths) / seconds:.2f} photos/s end to end (detect, cut, embed, decide); "
          f"{platform.machine()} CPU, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}; total {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
