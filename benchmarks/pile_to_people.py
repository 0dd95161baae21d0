"""The whole path as a new user: from an unsorted pile of photos to a model that names the people.

    nice -n 10 python benchmarks/pile_to_people.py [--people 40 --photos 2000] [--out DIR]

The pile is built from LFW (``_paths.shared()``): the ``--people`` people with the most LFW
photos, each capped so that the pile holds about ``--photos`` photos; ``--hold-out`` photos of
each person are kept apart for testing. Most of the pile are LFW photos as they are
(some hold other people in the background); ``--groups`` of it are group photos of 2-4 faces
pasted on a background (``group_photos.py``'s ``background``/``paste_face``), a quarter of those
faces strangers (people with fewer than 5 LFW photos). Everything is shuffled into ONE folder
under meaningless names (``IMG_0001.jpg``...).

Then the real commands, each a subprocess as a user would type it: ``facecls index PILE
--library LIB``, ``facecls cluster LIB``, a simulated user who knows everyone (the truth of a
face: the pasted or LFW face whose centre its box holds) and works like one at the People page:

- looks at each unnamed cluster (``facecls people LIB faces C``'s text, a look, not an action) and,
  when most of its faces are one of the people, names it (``people LIB name C NAME``: one
  action; a name already given merges the cluster into that person); clusters of strangers
  and background faces are left alone;
- looks at each named person's faces and corrects the wrong ones: ``move FACES --to NAME`` (one
  action per person they belong to; a person not named yet is split off and named: two),
  ``remove FACES`` for the rest (one action);
- runs ``facecls cluster LIB`` again (unlabelled faces join the named people they match, the
  rest are clustered afresh) and does the same once more (``--rounds``).

Faces left unclustered or in clusters of strangers are what a user would not bother with: they
stay unlabelled. Then ``facecls train --data LIB --model facenet --faces detect --image-size 160
--freeze top`` (the README's command; the figures in docs/people.md were measured with ``--freeze backbone``, the linear probe it gave before) and ``facecls predict RUN HELD-OUT`` on the
held-out photos: balanced accuracy of the name given to the face in each photo's centre.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from _paths import FACENET_WEIGHTS, LFW_ARCHIVE, REPO, shared
from facecls.data.archive import extract_archive
from facecls.data.sources import default_cache_dir
from facecls.library.people_commands import listing, people_command
from facecls.library.store import open_library
from group_photos import background, paste_face

HARDWARE = "2-core AMD EPYC VM, no GPU"
Truth = dict[str, list[tuple[float, float, str | None]]]  # file name -> (centre x, y, person)


def lfw_people() -> dict[str, int]:
    lines = shared("datasets", "lfw-names.txt").read_text().split("\n")
    return {n.split()[0]: int(n.split()[1]) for n in lines if len(n.split()) == 2}


def spoken(name: str) -> str:
    """The name as a user types it (LFW's folder names have underscores)."""
    return name.replace("_", " ")


def build(args: argparse.Namespace, pile: Path, held: Path) -> tuple[Truth, Truth, list[str]]:
    """Write the pile and the held-out photos; answers their truth and the people chosen."""
    rng = np.random.default_rng(args.seed)
    root = extract_archive(shared(*LFW_ARCHIVE), default_cache_dir()) / "lfw-deepfunneled"
    counts = lfw_people()
    chosen = sorted(counts, key=lambda n: (-counts[n], n))[: args.people]
    groups = round(args.photos * args.groups)
    wanted = args.photos - groups + groups * 3 * 0.75 + args.hold_out * len(chosen)
    caps = [
        c
        for c in range(1, counts[chosen[0]] + 1)
        if sum(min(counts[n], c) for n in chosen) >= wanted
    ]
    cap = caps[0] if caps else counts[chosen[0]]  # not enough photos: all of them
    print(f"People: the {len(chosen)} with most LFW photos ({counts[chosen[-1]]} to "
          f"{counts[chosen[0]]}), each up to {cap} photos, {args.hold_out} of them held out")  # fmt: skip
    alone, pool, held_out = [], {}, []
    for name in chosen:
        files = [f"{name}/{name}_{k:04d}.jpg" for k in range(1, counts[name] + 1)]
        files = [files[i] for i in rng.permutation(len(files))[:cap]]
        keep = args.hold_out
        held_out += [(f, spoken(name)) for f in files[:keep]]
        pool[name] = files[keep:]
    strangers = [
        f"{n}/{n}_{k:04d}.jpg" for n, c in counts.items() if c < 5 for k in range(1, c + 1)
    ]
    plan = []
    for _ in range(groups):
        faces = []
        for slot in rng.permutation(4)[: int(rng.integers(2, 5))]:
            left = [n for n in chosen if len(pool[n]) > 3]
            if rng.random() < 0.25 or not left:
                key, who = str(rng.choice(strangers)), None
            else:
                who = str(rng.choice(left, p=np.array([len(pool[n]) for n in left]) / sum(
                    len(pool[n]) for n in left)))  # fmt: skip
                key = pool[who].pop()
            centre = (int(1000 * (slot + 0.5) / 4 + rng.integers(-20, 21)),
                      int(rng.integers(245, 406)))  # fmt: skip
            faces.append(
                (
                    key,
                    who and spoken(who),
                    centre,
                    int(rng.integers(70, 221)),
                    float(rng.uniform(-15, 15)),
                )
            )
        plan.append(faces)
    alone = [(f, spoken(n)) for n in chosen for f in pool[n]]
    order = rng.permutation(len(alone) + len(plan))
    pile.mkdir(parents=True)
    truth: Truth = {}
    for k, i in enumerate(order, 1):
        target = pile / f"IMG_{k:04d}.jpg"
        if i < len(alone):
            shutil.copyfile(root / alone[i][0], target)
            truth[target.name] = [(125.0, 125.0, alone[i][1])]
        else:
            canvas = background(rng, 1000, 650)
            for key, _, centre, width, angle in plan[i - len(alone)]:
                paste_face(canvas, np.asarray(Image.open(root / key).convert("RGB")), centre,
                           width, angle)  # fmt: skip
            canvas.save(target, quality=92)
            truth[target.name] = [(*f[2], f[1]) for f in plan[i - len(alone)]]
    held.mkdir(parents=True)
    tests: Truth = {}
    for k, i in enumerate(rng.permutation(len(held_out)), 1):
        target = held / f"TEST_{k:04d}.jpg"
        shutil.copyfile(root / held_out[i][0], target)
        tests[target.name] = [(125.0, 125.0, held_out[i][1])]
    return truth, tests, [spoken(n) for n in chosen]


def who(truth: Truth, photo: str, box: tuple[float, ...]) -> str | None:
    """The person whose face centre the box holds (nearest the box's centre); None: nobody
    the user names (a stranger, a background face, no face)."""
    x1, y1, x2, y2 = box
    inside = [(abs(cx - (x1 + x2) / 2) + abs(cy - (y1 + y2) / 2), person)
              for cx, cy, person in truth.get(Path(photo).name, [])
              if x1 <= cx <= x2 and y1 <= cy <= y2]  # fmt: skip
    return min(inside, key=lambda t: t[0])[1] if inside else None


class User:
    """A new user: every action is a ``facecls people`` command of its own; a look (the list,
    a cluster's faces: what the People page shows) is the same command's text, read in-process
    (a ``facecls`` process spends seconds importing PyTorch on this loaded CPU)."""

    def __init__(self, library: Path, truth: Truth, chosen: list[str], log: Path) -> None:
        self.library, self.truth, self.chosen, self.log = str(library), truth, set(chosen), log
        self.names = self.merges = self.corrections = self.corrected = self.looks = 0

    def act(self, kind: str, *args: str) -> str:
        """An action: ``facecls people LIB ARGS``, a command of its own."""
        setattr(self, kind, getattr(self, kind) + 1)
        return facecls(self.log, "people", self.library, *args)

    def listing(self) -> list[tuple[int, int, str]]:
        self.looks += 1
        rows = re.findall(r"^\s*(\d+)\s+(\d+)  ?(.*)$", listing(self.library), re.MULTILINE)
        rows = [(int(i), int(n), "" if name.strip() == "(unnamed)" else name.strip())
                for i, n, name in rows]  # fmt: skip
        return sorted(rows,
                      key=lambda r: (-r[1], r[0]))  # fmt: skip

    def faces(self, person: int) -> list[tuple[int, str | None]]:
        """(face id, the person it truly is) for each face of a cluster or person."""
        self.looks += 1
        found = []
        for line in people_command(self.library, "faces", person=person).splitlines():
            m = re.match(r"\s*(\d+)\s+(.+?)\s+\[([-\d. ]+)\]", line)
            if m:
                box = tuple(float(v) for v in m.group(3).split())
                found.append((int(m.group(1)), who(self.truth, m.group(2), box)))
        return found

    def name_clusters(self, named: set[str]) -> None:
        for pid, size, name in self.listing():
            if name or size < 2:
                continue
            faces = self.faces(pid)
            person, count = Counter(p for _, p in faces).most_common(1)[0]
            if person in self.chosen and count * 2 > len(faces):
                self.act("merges" if person in named else "names", "name", str(pid), person)
                named.add(person)

    def correct(self, named: set[str]) -> None:
        for pid, _, name in self.listing():
            if name not in named:
                continue
            wrong: dict[str | None, list[int]] = {}
            for face, person in self.faces(pid):
                if person != name:
                    wrong.setdefault(person, []).append(face)
            for person, ids in sorted(wrong.items(), key=lambda kv: str(kv[0])):
                self.corrected += len(ids)
                if person is None:
                    self.act("corrections", "remove", *map(str, ids))
                elif person in named:
                    self.act("corrections", "move", *map(str, ids), "--to", person)
                else:  # someone not named yet: split them off, name the new cluster
                    self.act("corrections", "split", str(pid), *map(str, ids))
                    newest = max(i for i, _, n in self.listing() if not n)
                    self.act("names", "name", str(newest), person)
                    named.add(person)


def facecls(log: Path, *args: str) -> str:
    """``python -m facecls ARGS`` as a user runs it; answers its standard output."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "facecls", *args], capture_output=True,
                          text=True, env=env)  # fmt: skip
    with log.open("a") as f:
        f.write(f"$ facecls {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        raise SystemExit(f"facecls {' '.join(args)} failed ({done.returncode}): see {log}")
    return done.stdout


def held_out_accuracy(predictions: Path, tests: Truth, chosen: list[str]) -> tuple[float, float]:
    """Balanced accuracy of the name given to each held-out photo's face (the one at its
    centre): the top-1 name, and the name only where the model did not answer unknown."""
    answers: dict[str, list[dict]] = {}
    with predictions.open(newline="") as f:
        for row in csv.DictReader(f):
            answers.setdefault(Path(row["path"]).name, []).append(row)
    right: dict[str, list[tuple[bool, bool]]] = {n: [] for n in chosen}
    for photo, [(_, _, person)] in tests.items():
        best = None
        for row in answers.get(photo, []):
            if row["box"] and who(tests, photo, box_corners(row["box"])) == person:
                best = row
        top = best is not None and best["top1"] == person  # "identity" says unknown
        right[person].append((top, top and best["decision"] != "unknown"))
    closed = float(np.mean([np.mean([r[0] for r in v]) for v in right.values()]))
    opened = float(np.mean([np.mean([r[1] for r in v]) for v in right.values()]))
    return closed, opened


def box_corners(text: str) -> tuple[float, ...]:
    x, y, w, h = (float(v) for v in re.findall(r"[-\d.]+", text))
    return x, y, x + w, y + h


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--people", type=int, default=40, help="people (those with most LFW photos)")
    p.add_argument("--photos", type=int, default=2000, help="photos in the pile (about)")
    p.add_argument("--hold-out", type=int, default=5, help="photos of each person held out")
    p.add_argument("--groups", type=float, default=0.05, help="share of group photos in the pile")
    p.add_argument("--rounds", type=int, default=2, help="cluster, name, correct: how often")
    p.add_argument("--epochs", type=int, default=10, help="probe epochs")
    p.add_argument("--out", type=Path, default=Path("runs") / "pile-to-people",
                   help="scratch folder (replaced)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    weights = str(shared(*FACENET_WEIGHTS))
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    out, log, loads = args.out.resolve(), args.out.resolve() / "commands.log", []
    library, run = out / "library", out / "runs" / "pile"
    times: dict[str, float] = {}

    def step(label: str, *command: str) -> str:
        loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        answer = facecls(log, *command) if command else ""
        times[label] = times.get(label, 0.0) + time.perf_counter() - start
        loads.append(os.getloadavg()[0])
        return answer

    start = time.perf_counter()
    truth, tests, chosen = build(args, out / "pile", out / "held-out")
    times["build the pile"] = time.perf_counter() - start
    with (out / "truth.csv").open("w", newline="") as f:  # for a look at the answers after
        csv.writer(f).writerows(
            [("photo", "x", "y", "person")]
            + [(k, *face) for part in (truth, tests) for k, v in part.items() for face in v]
        )
    groups = sum(len(t) > 1 for t in truth.values())
    print(f"Pile: {len(truth)} photos ({groups} group photos with "
          f"{sum(len(t) for t in truth.values() if len(t) > 1)} faces) of {len(chosen)} people; "
          f"{len(tests)} held-out photos; {HARDWARE}, {platform.machine()}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    step("index", "index", str(out / "pile"), "--library", str(library), "--weights", weights,
         "--device", "cpu")  # fmt: skip
    user, named = User(library, truth, chosen, log), set()
    for _ in range(args.rounds):
        step("cluster", "cluster", str(library))
        loads.append(os.getloadavg()[0])
        begin = time.perf_counter()
        user.name_clusters(named)
        user.correct(named)
        times["naming (the user's commands)"] = (
            times.get("naming (the user's commands)", 0.0) + time.perf_counter() - begin
        )
    step("train", "train", "--data", str(library), "--model", "facenet", "--weights", weights,
         "--faces", "detect", "--image-size", "160", "--freeze", "top",
         "--epochs", str(args.epochs),
         "--runs-dir", str(run.parent), "--name", run.name, "--device", "cpu")  # fmt: skip
    step("predict", "predict", str(run), str(out / "held-out"), "--top-k", "1",
         "--out", str(out / "predictions.csv"), "--device", "cpu")  # fmt: skip
    closed, opened = held_out_accuracy(out / "predictions.csv", tests, chosen)
    report(library, truth, chosen, user, named, times, closed, opened, loads)


def report(library, truth, chosen, user, named, times, closed, opened, loads) -> None:  # noqa: ANN001
    with open_library(str(library)) as lib:
        counts, people = lib.counts(), {p.id: p.name for p in lib.people(hidden=True)}
        paths = {fid: path for path, rec in lib.files().items() if rec.photo_id
                 for fid in [f.id for f in lib.faces(photo_id=rec.photo_id)]}  # fmt: skip
        faces = lib.faces()
    labelled = wrong = theirs = 0
    for face in faces:
        person = who(truth, paths.get(face.id, ""), face.box)
        name = people.get(face.person_id) if face.person_id else None
        theirs += person is not None
        if name is not None and face.source != "suggestion":
            labelled += 1
            wrong += name != person
    total = counts["faces"]
    print(f"Faces indexed: {total:,} ({theirs:,} of the {len(chosen)} people, the rest strangers "
          f"and background faces)")  # fmt: skip
    for label, seconds in times.items():
        print(f"  {label:<30} {seconds:8.1f} s")
    print(f"Naming: {user.names} names + {user.merges} merges = "
          f"{(user.names + user.merges) / len(chosen):.2f} actions per person "
          f"({len(named)} of {len(chosen)} people named); {user.corrections} correction actions "
          f"for {user.corrected} faces ({user.corrected / total:.1%} of the faces indexed); "
          f"{user.looks} looks (listings, a cluster's faces)")  # fmt: skip
    naming, actions = user.names + user.merges, user.names + user.merges + user.corrections
    print(f"  goal <= 1 naming action per person: {'met' if naming <= len(chosen) else 'not met'}; "
          f"<= 5 % of faces corrected: {'met' if user.corrected <= 0.05 * total else 'not met'}; "
          f"all {actions} actions against people + 5 % of faces = "
          f"{len(chosen) + 0.05 * total:.0f}")  # fmt: skip
    print(f"Library at the end: {labelled:,} faces labelled ({wrong} wrong), "
          f"{theirs - labelled + wrong:,} faces of the people left unlabelled")  # fmt: skip
    print(f"Held-out photos: balanced accuracy {closed:.3f} (top-1 name); {opened:.3f} counting "
          f"'unknown' answers as wrong")  # fmt: skip
    print(f"Load average during the run: {min(loads):.1f} to {max(loads):.1f}; {HARDWARE}")


if __name__ == "__main__":
    main()
