"""1:N search on LFW: recall@1 and recall@5 of ``facecls search``'s gallery.

Gallery: one photo (the first) of each LFW-8 person (people with at least 8 photos) plus one
photo each of ``--distractors`` people with fewer photos (seeded choice); probes: the other
photos of the LFW-8 people. A probe is a hit at k when a photo of its person is among the k
most similar gallery faces. The gallery is built as a folder of links and embedded through
:class:`facecls.inference.search.Gallery` (its cache included); the time of a cached re-open is
printed too.

    PYTHONPATH=src python benchmarks/search_lfw.py --model RUN_OR_BUNDLE [--distractors 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from _paths import LFW_ARCHIVE, shared
from facecls.data.sources import default_cache_dir, scan_source
from facecls.inference.model import load_model
from facecls.inference.search import Gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder or bundle")
    parser.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    parser.add_argument("--distractors", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    model = load_model(args.model, device="auto")
    scan = scan_source(args.data, default_cache_dir(), lambda _m: None)
    photos: dict[str, list[Path]] = defaultdict(list)
    for ref in sorted(scan.refs, key=lambda r: r.relpath):
        photos[ref.identity].append(ref.path)
    known = sorted(n for n, p in photos.items() if len(p) >= 8)
    others = sorted(n for n, p in photos.items() if len(p) < 8)
    rng = np.random.default_rng(args.seed)
    distractors = list(rng.choice(others, min(args.distractors, len(others)), replace=False))
    work = Path(tempfile.mkdtemp(prefix="facecls-search-lfw-"))
    try:
        for name in [*known, *distractors]:
            (work / name).mkdir()
            os.symlink(photos[name][0], work / name / photos[name][0].name)
        t0 = time.perf_counter()
        gallery = Gallery(model, work, cache_dir=work.parent / f"{work.name}-cache").refresh()
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        Gallery(model, work, cache_dir=work.parent / f"{work.name}-cache").refresh()
        reopen = time.perf_counter() - t0
        owner = [Path(f.path or "").parent.name for f in gallery.faces]
        probes = [(name, p) for name in known for p in photos[name][1:]]
        vectors = model.embed([p for _, p in probes])
        t0 = time.perf_counter()
        similarity = vectors @ gallery.vectors.T
        query = (time.perf_counter() - t0) / len(probes)
        order = np.argsort(-similarity, axis=1)[:, :5]
        hits = np.array([[owner[j] == name for j in row] for (name, _), row in zip(probes, order,
                                                                                strict=True)])  # fmt: skip
        where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (
            f"{platform.machine()} CPU ({torch.get_num_threads()} threads)"
        )  # fmt: skip
        print(f"Search on LFW: model {model.meta['architecture']} @ {model.image_size} px on "
              f"{where}; gallery {len(gallery.faces)} faces ({len(known)} LFW-8 people + "
              f"{len(distractors)} distractor people), {len(probes)} probes")  # fmt: skip
        print(f"  recall@1 {hits[:, 0].mean():.4f}  recall@5 {hits.any(axis=1).mean():.4f}")
        print(f"  gallery embedded in {build:.1f} s, re-opened from its cache in {reopen:.2f} s; "
              f"brute-force search {query * 1e3:.3f} ms per probe")  # fmt: skip
        print(
            f"  note: {sum(n in set(model.trained_names) for n in known)} of the {len(known)} "
            "LFW-8 people were trained on by this model; recall is optimistic for them"
        )
        print(f"  wall time {time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(work.parent / f"{work.name}-cache", ignore_errors=True)


if __name__ == "__main__":
    main()
