"""``facecls calibrate RUN --strangers LIB`` measured: the people a user forgot in a face library
set the ``unknown`` thresholds, and the stranger rate is measured on other strangers.

LFW's people with fewer than 8 photos (none of them in LFW-8, which the run was trained on) are
split by name in two halves (every other name). Half A's photos are indexed into a face library
with the run's backbone (``facecls index --backbone``), clustered (``facecls cluster``), and every
cluster is forgotten (``people forget``: not people the user cares about), as a user with a pile
of photos of strangers would; faces clustering left alone stay out, as they would for the user.
A copy of the run is calibrated with ``--strangers LIB`` and another is left as trained; both are
measured on half B's photos (``facecls evaluate --strangers``, one folder per person) at the
target ``--fpir``. Each step is the command a user types, run as a subprocess.

    PYTHONPATH=src python benchmarks/strangers_library.py --run runs/lfw8-sface --out /tmp/sl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from collections import Counter
from pathlib import Path

from _paths import LFW_ARCHIVE, shared
from facecls.data.sources import default_cache_dir, scan_source
from facecls.library import people
from facecls.library.store import open_library
from pile_to_people import facecls


def link_people(refs: list, folder: Path) -> int:
    """``folder/<person>/<photo>`` as symbolic links to ``refs``' files (nothing is copied);
    answers the number of photos."""
    for ref in refs:
        (folder / ref.identity).mkdir(parents=True, exist_ok=True)
        target = folder / ref.identity / ref.path.name
        if not target.exists():
            os.symlink(ref.path, target)
    return len(refs)


def fpir_of(run: Path) -> dict[str, float]:
    """The share of strangers named per score, at the run's thresholds (``openset.json``)."""
    table = json.loads((run / "openset.json").read_text())
    methods = table.get("methods") or table.get("openset", {}).get("methods", {})
    return {method: float(row["fpir"]) for method, row in methods.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run trained on LFW-8")
    parser.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    parser.add_argument("--out", type=Path, default=Path("runs") / "benchmark-strangers-library")
    parser.add_argument("--fpir", type=float, default=0.01)
    args = parser.parse_args()
    out = args.out
    if out.exists() and any(out.iterdir()):  # never someone's folder: the library is made anew
        raise SystemExit(f"{out}: not empty; give --out a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    meta = json.loads((args.run / "model" / "model.json").read_text())
    backbone = meta["architecture"]
    started = time.perf_counter()

    scan = scan_source(args.data, default_cache_dir(), lambda _m: None)
    count = Counter(ref.identity for ref in scan.refs)
    names = sorted(n for n, c in count.items() if c < 8)
    half_a, half_b = set(names[::2]), set(names[1::2])
    pile = out / "pile-a"
    photos_a = link_people([r for r in scan.refs if r.identity in half_a], pile)
    photos_b = link_people([r for r in scan.refs if r.identity in half_b], out / "strangers-b")
    print(f"Strangers of LFW-8 (LFW people with fewer than 8 photos): half A {photos_a} photos of "
          f"{len(half_a)} people (the library), half B {photos_b} photos of {len(half_b)} people "
          f"(measured); run {args.run} ({backbone}); {platform.machine()} CPU, no GPU")  # fmt: skip

    library = out / "library"
    t0 = time.perf_counter()
    facecls(log, "--quiet", "index", str(pile), "--library", str(library), "--backbone", backbone)
    facecls(log, "--quiet", "cluster", str(library))
    with open_library(str(library)) as lib:
        clusters = [p for p in lib.people() if p.name is None]
        for person in clusters:
            people.forget(lib, person.id)
        forgotten = sum(p.faces for p in lib.people(hidden=True) if p.hidden)
        total = len(lib.faces())
    print(f"  library: {total} faces indexed and clustered in {time.perf_counter() - t0:.0f} s; "
          f"{len(clusters)} clusters forgotten ({forgotten} faces; the other "
          f"{total - forgotten} faces, left unclustered, stay out)")  # fmt: skip

    as_trained, calibrated = out / "run-as-trained", out / "run-library"
    for copy in (as_trained, calibrated):
        shutil.copytree(args.run, copy)
    t0 = time.perf_counter()
    facecls(log, "--quiet", "calibrate", str(calibrated), "--strangers", str(library),
            "--fpir", str(args.fpir))  # fmt: skip
    seconds = time.perf_counter() - t0
    thresholds = json.loads((calibrated / "model" / "model.json").read_text())["openset"]
    print(f"  calibrate --strangers LIB: {seconds:.0f} s; "
          f"{json.dumps(thresholds['calibration'].get('strangers'))}")  # fmt: skip
    for copy in (as_trained, calibrated):
        facecls(log, "--quiet", "evaluate", str(copy), "--strangers", str(out / "strangers-b"))
    before, after = fpir_of(as_trained), fpir_of(calibrated)
    trained_at = meta["openset"]["thresholds"]
    print(f"  half B named at the {args.fpir:.0%} target (per photo):")
    print(f"    {'score':<9} {'as trained':>21} {'--strangers LIB':>21}")
    for method in after:
        print(f"    {method:<9} {trained_at[method]:>9.4f} {before[method]:>10.2%}  "
              f"{thresholds['thresholds'][method]:>9.4f} {after[method]:>10.2%}")  # fmt: skip
    print(f"Wall time {time.perf_counter() - started:.0f} s; commands in {log}")


if __name__ == "__main__":
    main()
