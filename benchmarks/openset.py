"""Open-set and enrollment benchmark on LFW: does the model say ``unknown`` to strangers, and
does enrolling new people without retraining let it name them?

Train on LFW-8's train split (the benchmark split file), then probe with

- knowns: LFW-8's test split (965 images of the 217 trained people);
- strangers: every image of the LFW people with fewer than 8 images (none of them trained on).

For each open-set score (max softmax probability, energy, centroid cosine, margin, fused) it prints
FPIR and FNIR at the run's calibrated threshold (1 % of pseudo-strangers named, each validation
person counted once), the detection-and-identification rate (DIR = 1 - FNIR) at FPIR 1 %, and
writes the DIR/FPIR curve. Then the thresholds ``facecls calibrate --strangers`` would set on real
strangers: set on half of the stranger people (every other name), measured on the other half.

Enrollment: the people with 5-7 images (outside LFW-8) are enrolled from their first 3 images;
their remaining images are then identified among all trained + enrolled people, next to the
trained people's test images under the same nearest-class-mean head, decided by the bundle's
score (``margin``) and by the plain centroid cosine, each at its calibrated thresholds. A
control scores the trained people as the enrolled ones are scored: their centroid from their first
k training photos only (3, 5, 10), at the enrolled threshold for k photos: what the number of
photos alone costs.

    PYTHONPATH=src python benchmarks/openset.py [--run RUN_FOLDER] [--epochs 40] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from _paths import LFW_ARCHIVE, LFW_SPLITS, shared
from facecls import openset, openset_fpir, openset_thresholds
from facecls.bundle import CENTROIDS_NAME
from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.data.cache import decode_cached
from facecls.data.sources import default_cache_dir, scan_source
from facecls.inference.calibration import calibrate_run
from facecls.inference.enroll import enroll
from facecls.inference.model import load_model
from facecls.inference.strangers import open_set_figures
from facecls.report.plots import plot_open_set
from facecls.report.write import save_figure
from facecls.training.run import fit


def calibrated_on_strangers(
    model, k_logits: np.ndarray, k_features: np.ndarray, known_targets: np.ndarray,
    u_logits: np.ndarray, u_features: np.ndarray, people: np.ndarray, fpir: float = 0.01,
) -> None:  # fmt: skip
    """Thresholds at ``fpir`` set on half of the stranger people (``calibrate --strangers``'s
    rule, each person counted once), the real FPIR on the other half beside the run's own."""
    names = np.unique(people)
    first = np.isin(people, names[::2])
    print(f"  thresholds set on real strangers (calibrate --strangers): {first.sum()} photos of "
          f"{len(names[::2])} people set them at FPIR {fpir:.0%}; measured on the other "
          f"{(~first).sum()} photos of {len(names[1::2])} people")  # fmt: skip
    print(f"  {'score':<9} {'threshold':>9} {'FPIR':>6} {'per person':>10} {'DIR':>6}   "
          f"{'(run: threshold':>15} {'FPIR':>6} {'per person':>10})")  # fmt: skip
    predicted = k_logits.argmax(1)
    stored = model.meta["openset"]["thresholds"]
    weights = openset_fpir.person_weights(np.unique(people, return_inverse=True)[1])
    for method in ("msp", "margin", "fused"):
        known = openset.scores(method, k_logits, k_features, model.trained_centroids, predicted,
                               model.fused_weight)  # fmt: skip
        unknown = openset.scores(method, u_logits, u_features, model.trained_centroids,
                                 fused_weight=model.fused_weight)  # fmt: skip
        t = openset_fpir.threshold_at_fpir(unknown[first], fpir, weights[first])
        rest = ~first
        rates = [
            (float(np.mean(unknown[rest] >= x)),
             openset_fpir.stranger_rate(unknown[rest], x, weights[rest]))
            for x in (t, stored[method])
        ]  # fmt: skip
        dir_ = float(np.mean((known >= t) & (predicted == known_targets)))
        print(f"  {method:<9} {t:>9.4f} {rates[0][0]:>6.4f} {rates[0][1]:>10.4f} {dir_:>6.3f}   "
              f"{stored[method]:>15.4f} {rates[1][0]:>6.4f} {rates[1][1]:>10.4f}")  # fmt: skip


def named_at(
    method: str, centroids: np.ndarray, thresholds: np.ndarray, features: np.ndarray,
    truth: np.ndarray | None,
) -> np.ndarray:  # fmt: skip
    """Per face: named (its identity's threshold passed; the right person where ``truth``)."""
    chosen = openset.cosine(features, centroids).argmax(1)
    score = openset.scores(method, np.zeros((len(features), 1)), features, centroids, chosen)
    accepted = score >= thresholds[chosen]
    return accepted if truth is None else accepted & (chosen == truth)


def photos_alone(
    enrolled, refs: list, split_file: str, cache: Path, known: tuple, probes: tuple,
    strangers: np.ndarray, shots: tuple[int, ...] = (3, 5, 10),
) -> None:  # fmt: skip
    """Print what the number of photos alone costs: the trained people decided as enrolled
    people are, by the centroid of their first ``k`` training photos (enrollment takes the
    first) at the enrolled bundle's threshold for ``k`` photos; the enrolled people as before."""
    import csv

    names = enrolled.trained_names
    with open(split_file, newline="") as f:
        train_keys = {
            "/".join(r["path"].split("/")[-2:]) for r in csv.DictReader(f) if r["lfw8"] == "train"
        }
    chosen = []
    for name in names:
        own = sorted((r for r in refs if r.identity == name and r.relpath in train_keys),
                     key=lambda r: r.relpath)  # fmt: skip
        chosen.extend((rank, r) for rank, r in enumerate(own[: max(shots)]))
    images, kept, _, _ = decode_cached(
        [r for _, r in chosen], enrolled.image_size, cache, lambda _m: None,
        crop=enrolled.crop, faces=enrolled.faces,
    )  # fmt: skip
    _, shot_features = enrolled.outputs(images)
    targets = np.array([names.index(chosen[i][1].identity) for i in kept])
    ranks = np.array([chosen[i][0] for i in kept])
    method = openset_thresholds.enrolled_method(enrolled.meta["openset"])
    table = openset_thresholds.enrolled_table(enrolled.meta["openset"], method)
    if not table:
        print("  (no enrolled thresholds in this bundle: the photos-alone control skipped)")
        return
    enrolled_at = openset_thresholds.shot_threshold(table, 3)
    print(f"  control, the number of photos alone: each trained person decided as if enrolled from "
          f"the first k of their training photos, {method} at the threshold for k photos "
          f"(enrolled people: 3 photos, {enrolled_at:.4f})")  # fmt: skip
    print("     k  threshold  trained named  enrolled named  strangers named  (people with "
          "fewer than k training photos)")  # fmt: skip
    for k in shots:
        centroids = enrolled.centroids.copy()
        take = ranks < k
        centroids[: len(names)] = openset.class_centroids(
            shot_features[take], targets[take], len(names)
        )
        at_k = openset_thresholds.shot_threshold(table, k)
        per_id = np.where(np.arange(len(centroids)) < len(names), at_k, enrolled_at)
        fewer = int(np.sum(np.bincount(targets, minlength=len(names)) < k))
        rates = [named_at(method, centroids, per_id, *faces).mean()
                 for faces in (known, probes, (strangers, None))]  # fmt: skip
        print(f"    {k:>2}  {at_k:>9.4f}  {rates[0]:>13.3f}  {rates[1]:>14.3f}  {rates[2]:>15.4f}  "
              f"({fewer})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(shared(*LFW_ARCHIVE)))
    parser.add_argument("--split-file", default=str(shared(*LFW_SPLITS)))
    parser.add_argument("--run", type=Path, help="reuse a run trained on LFW-8 (skip training)")
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-3)
    parser.add_argument("--out", type=Path, default=Path("runs") / "benchmark-openset")
    parser.add_argument("--dump", type=Path, help="save the embeddings and centroids (.npz)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    quiet = lambda _m: None  # noqa: E731

    run = args.run
    if run is None:
        config = RunConfig(
            name="lfw8-openset", runs_dir=str(args.out / "runs"),
            data=DataConfig(source=args.data, image_size=args.image_size, min_images=8,
                            split_file=args.split_file, split_column="lfw8"),
            augment=AugmentConfig(),
            train=TrainConfig(model=args.model, epochs=args.epochs, lr=args.lr,
                              weight_decay=args.weight_decay, device="cpu"),
        )  # fmt: skip
        run = fit(config, log=quiet).run_dir
    train_seconds = time.perf_counter() - started
    stored = json.loads((Path(run) / "model" / "model.json").read_text()).get("openset") or {}
    if not (Path(run) / "model" / CENTROIDS_NAME).is_file() or "margin" not in stored.get(
        "thresholds", {}
    ):
        # train leaves the centroid scores to calibrate (a probe does them; older runs lack margin)
        calibrate_run(Path(run), log=quiet)
    model = load_model(run, device="cpu")
    size = model.image_size
    names = model.trained_names

    cache = default_cache_dir()
    scan = scan_source(args.data, cache, quiet)
    per_person = Counter(ref.identity for ref in scan.refs)
    import csv

    with open(args.split_file, newline="") as f:
        test_keys = {
            "/".join(r["path"].split("/")[-2:]) for r in csv.DictReader(f) if r["lfw8"] == "test"
        }
    known_refs = [r for r in scan.refs if r.relpath in test_keys]
    stranger_refs = [r for r in scan.refs if per_person[r.identity] < 8]
    known_images, kept, _, _ = decode_cached(
        known_refs, size, cache, quiet, crop=model.crop, faces=model.faces
    )
    known_targets = np.array([names.index(known_refs[i].identity) for i in kept])
    stranger_images, stranger_kept, _, _ = decode_cached(
        stranger_refs, size, cache, quiet, crop=model.crop, faces=model.faces
    )

    k_logits, k_features = model.outputs(known_images)
    u_logits, u_features = model.outputs(stranger_images)
    correct = k_logits.argmax(1) == known_targets
    print(f"Open set on LFW: model {model.meta['architecture']} @ {size} px trained on LFW-8 "
          f"train split ({run}); hardware: {platform.machine()} CPU, "
          f"{torch.get_num_threads()} threads, no GPU")  # fmt: skip
    print(f"  knowns: {len(known_targets)} LFW-8 test images (closed-set accuracy "
          f"{correct.mean():.3f}); strangers: {len(stranger_images)} images of "
          f"{len({r.identity for r in stranger_refs})} people with < 8 images")  # fmt: skip
    print(f"  {'score':<9} {'threshold':>9} {'FPIR':>6} {'FNIR':>6}   {'DIR@FPIR1%':>10} "
          f"{'(threshold)':>11}   AUROC")  # fmt: skip
    # The same figures as `facecls evaluate RUN --strangers` (one function computes both).
    figures = open_set_figures(
        k_logits, k_features, known_targets, u_logits, u_features, model.trained_centroids,
        model.meta["openset"]["thresholds"], model.fused_weight,
    )  # fmt: skip
    curves, marks = {}, {}
    for method, row in figures.items():
        curves[method] = (np.array(row["curve"]["fpir"]), np.array(row["curve"]["dir"]))
        marks[method] = (row["fpir"], row["dir"])
        at_1 = row["threshold_at_fpir_1pct"]
        print(f"  {method:<9} {row['threshold']:>9.4f} {row['fpir']:>6.3f} {row['fnir']:>6.3f}   "
              f"{row['dir_at_fpir_1pct']:>10.3f} {at_1 if at_1 is not None else float('inf'):>11.4f}"
              f"   {row['auroc']:.3f}")  # fmt: skip
    ax = plot_open_set(curves, marks)
    ax.set_title(f"LFW-8 knowns vs LFW strangers ({model.meta['architecture']}, {size} px)")
    save_figure(ax.figure, args.out / "openset_curve.png")
    print(f"  curve: {args.out / 'openset_curve.png'} (dots: calibrated thresholds)")
    calibrated_on_strangers(
        model, k_logits, k_features, known_targets, u_logits, u_features,
        np.array([stranger_refs[i].identity for i in stranger_kept]),
    )  # fmt: skip

    # Enrollment: people with 5-7 images, first 3 enrolled, the rest probed.
    new_people = sorted(n for n, c in per_person.items() if 5 <= c <= 7)
    enroll_dir = args.out / "enroll-data"
    shutil.rmtree(enroll_dir, ignore_errors=True)
    probe_refs = []
    for name in new_people:
        refs = sorted((r for r in scan.refs if r.identity == name), key=lambda r: r.relpath)
        (enroll_dir / name).mkdir(parents=True)
        for ref in refs[:3]:
            shutil.copyfile(ref.path, enroll_dir / name / ref.path.name)
        probe_refs.extend(refs[3:])
    t0 = time.perf_counter()
    enrolled_dir = enroll(run, enroll_dir, args.out / "model-enrolled", log=quiet)
    enroll_seconds = time.perf_counter() - t0
    enrolled = load_model(enrolled_dir, device="cpu")
    all_names = enrolled.class_names
    probe_images, kept, _, _ = decode_cached(
        probe_refs, size, cache, quiet, crop=model.crop, faces=model.faces
    )
    probe_targets = np.array([all_names.index(probe_refs[i].identity) for i in kept])
    print(f"Enrollment without retraining: {len(new_people)} LFW people with 5-7 images enrolled "
          f"from 3 images each in {enroll_seconds:.1f} s; nearest-class-mean head over "
          f"{len(names)} trained + {len(new_people)} enrolled identities")  # fmt: skip
    p_logits, p_features = enrolled.outputs(probe_images)
    # strangers: people with < 8 images who were not enrolled
    enrolled_set = set(new_people)
    other = np.array([stranger_refs[i].identity not in enrolled_set for i in stranger_kept], bool)
    # the bundle's score (margin), then the plain cosine it replaced, on the same outputs
    for method in dict.fromkeys((enrolled.method, "centroid", "margin")):
        decider = load_model(enrolled_dir, device="cpu", method=method)
        table = openset_thresholds.enrolled_table(decider.meta["openset"], method)
        print(f"  score {method}{' (the bundle default)' if method == enrolled.method else ''}: "
              f"thresholds trained {decider.threshold:.4f}; enrolled from k photos "
              + (", ".join(f"k={k} {t:.4f}" for k, t in table.items()) or "none (older "
                 "bundle: the trained one)"))  # fmt: skip
        for label, logits, features, targets in (
            # the same network: the trained people's outputs are those computed above
            ("trained people (LFW-8 test)", k_logits, k_features, known_targets),
            ("enrolled people (other images)", p_logits, p_features, probe_targets),
        ):
            top1 = openset.cosine(features, decider.centroids).argmax(1)
            accuracy = float(np.mean(top1 == targets))
            # each face against the threshold of the identity it is given (FaceModel.decide)
            answers = decider.decide(logits, features, top_k=1)
            named = float(
                np.mean([a.identity == all_names[t] for a, t in zip(answers, targets, strict=True)])
            )
            # the trained people's threshold for everyone
            one = float(np.mean([
                a.score >= decider.threshold and top == t
                for a, top, t in zip(answers, top1, targets, strict=True)
            ]))  # fmt: skip
            print(f"    {label:<32} {len(targets):>5} images  top-1 accuracy {accuracy:.3f}  "
                  f"named (DIR) {named:.3f}  (one threshold for all: {one:.3f})")  # fmt: skip
        answers = decider.decide(u_logits[other], u_features[other], top_k=1)
        fpir = float(np.mean([a.decision == "known" for a in answers]))
        print(f"    strangers named as someone (FPIR) {fpir:.4f} of {len(answers)} images of people "
              "neither trained nor enrolled")  # fmt: skip
    print(f"  (trained people with the trained linear head: accuracy {correct.mean():.3f})")
    photos_alone(enrolled, scan.refs, args.split_file, cache, (k_features, known_targets),
                 (p_features, probe_targets), u_features[other])  # fmt: skip
    if args.dump:
        # raw embeddings and the enrolled bundle's centroids, to study decision rules offline
        np.savez_compressed(
            args.dump, known=k_features, known_targets=known_targets, probes=p_features,
            probe_targets=probe_targets, strangers=u_features[other],
            known_logits=k_logits, stranger_logits=u_logits[other],  # for the fused score
            centroids=enrolled.centroids, trained=len(names),
            enrolled_images=np.array(enrolled.meta["enrolled"]["images"]),
            threshold=load_model(enrolled_dir, device="cpu", method="centroid").threshold,
        )  # fmt: skip
        print(f"  embeddings: {args.dump}")
    print(f"Wall time {time.perf_counter() - started:.0f} s (training {train_seconds:.0f} s)")


if __name__ == "__main__":
    main()
