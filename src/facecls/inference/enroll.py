"""Enroll new people into a trained model without retraining: one embedding centroid each.

``facecls enroll MODEL --data NEW_PEOPLE/`` reads a class-per-folder tree (``<name>/<photo>``),
embeds every photo with the model (the input of its final Linear layer, see ``embedding.py``)
and stores the unit mean of each person's unit embeddings in a copy of the bundle. The copy then
predicts with a nearest-class-mean head over the trained identities' centroids (from their
training part, stored by calibration) and the enrolled ones; the original bundle is untouched.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facecls.atomic import atomic_path, write_json
from facecls.bundle import (
    META_NAME,
    WEIGHTS_NAME,
    BundleError,
    read_centroids,
    refuse_pickle,
    write_centroids,
)
from facecls.data.face_choice import MAX_CANDIDATES, agree, doubtful
from facecls.data.faces import Face
from facecls.data.images import ImageError, load_rgb
from facecls.data.library_source import is_library, scan_data
from facecls.data.sources import DataError, default_cache_dir
from facecls.inference.calibration import ensure_centroids
from facecls.inference.model import load_model
from facecls.inference.outputs import OutputError
from facecls.openset import l2_normalize
from facecls.progress import bar as progress_bar


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target, source.stat().st_size) as tmp:
        shutil.copyfile(source, tmp)


def _embed_identities(
    model: Any,
    data: str | Path,
    chunk_size: int,
    detect: bool,
    log: Callable[[str], None],
    show_progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, int], list[dict[str, str]]]:
    """Sum of unit embeddings and image count per identity, streamed ``chunk_size`` at a time.

    A photo with several faces adds the face that agrees with the person's other enrollment
    photos (:func:`facecls.data.face_choice.agree`; the main face when the person has no
    single-face photo); each such choice is logged, the doubtful ones marked.
    """
    scan = scan_data(str(data), default_cache_dir(), log)
    skipped = list(scan.skipped)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    several: list[tuple[str, str, np.ndarray, list[Face]]] = []
    detect = detect or model.detects  # a model trained on detected faces always detects
    bar = progress_bar(len(scan.refs), "enroll", show_progress)
    for start in range(0, len(scan.refs), chunk_size):
        part = scan.refs[start : start + chunk_size]
        bar.update(len(part))
        pixels: list[np.ndarray] = []
        photos: list[tuple[Any, list[Face] | None, int]] = []  # ref, faces, first row
        for ref in part:
            try:
                if ref.face is not None:  # a face library's face: cut where it was found
                    box, points = ref.known_face()
                    photos.append((ref, None, len(pixels)))
                    pixels.append(model.cutter.cut_known(load_rgb(ref.path), box, points).pixels)
                    continue
                if not detect:
                    photos.append((ref, None, len(pixels)))
                    pixels.append(model.load_face(ref.path))
                    continue
                found = model.faces_in(load_rgb(ref.path))[:MAX_CANDIDATES]
            except ImageError as error:
                skipped.append({"path": ref.relpath, "reason": str(error)})
                continue
            if not found:
                skipped.append({"path": ref.relpath, "reason": "no face found"})
                continue
            photos.append((ref, found, len(pixels)))
            pixels += [face.pixels for face in found]
        if not pixels:
            continue
        batch = np.stack(pixels).transpose(0, 3, 1, 2)
        unit = l2_normalize(model.outputs(batch)[1].astype(np.float64))
        for ref, found, first in photos:
            if found is not None and len(found) > 1:
                several.append((ref.identity, ref.relpath, unit[first : first + len(found)], found))
                continue
            sums[ref.identity] = sums.get(ref.identity, 0.0) + unit[first]
            counts[ref.identity] += 1
    bar.close()
    _add_chosen_faces(several, sums, counts, log)
    return sums, dict(counts), skipped


def _add_chosen_faces(
    several: list[tuple[str, str, np.ndarray, list[Face]]], sums: dict[str, np.ndarray],
    counts: dict[str, int], log: Callable[[str], None],
) -> None:  # fmt: skip
    """Add each several-face photo's chosen face to its person's sum, and say which it was."""
    if not several:
        return
    names = sorted({name for name, *_ in several})
    number = {name: i for i, name in enumerate(names)}
    base = {number[name]: np.asarray(sums[name]) for name in names if name in sums}
    owner = np.array([number[name] for name, *_ in several])
    choice = agree(owner, [vectors for *_, vectors, _ in several], base)
    for p, (name, relpath, vectors, found) in enumerate(several):
        k = int(choice.kept[p])
        sums[name] = sums.get(name, 0.0) + vectors[k]
        counts[name] += 1
        x1, y1, x2, y2 = (round(v) for v in found[k].box)
        how = (
            f"agrees {choice.agreement[p]:.2f} with {name}'s other photos, the next face "
            f"{choice.runner_up[p]:.2f}"
            if choice.rule[p] == "agreement"
            else "the main face: no single-face photo of this person to compare with"
        )
        unsure = choice.rule[p] == "agreement" and doubtful(
            choice.agreement[p], choice.runner_up[p]
        )
        log(f"  {relpath}: {len(found)} faces, kept face {k} (box {x1} {y1} {x2 - x1} "
            f"{y2 - y1}; {how}){' - doubtful, check this photo' if unsure else ''}")  # fmt: skip


# Photos a person enrolled from which their centroid names them about as often as a trained
# person's (on LFW-8: 0.967 named from 5 photos, 0.949 from 3, 0.972 from a whole training part;
# benchmarks/openset.py).
ENOUGH_PHOTOS = 5
# What enroll and the service's /enroll say of people enrolled from fewer photos.
FEW_PHOTOS = (
    f"they will be named less often than people with {ENOUGH_PHOTOS} photos or more "
    "(docs/serve.md): enroll them again with more photos where you can"
)


def enroll(
    model_path: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    detect: bool = False,
    chunk_size: int = 64,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
) -> Path:
    """Write a copy of a bundle with the identities of ``data`` enrolled; returns its folder.

    Args:
        model_path: a run folder or bundle. A run's model without trained centroids (``train``
            and ``cv`` leave them out) is calibrated first, once, as ``facecls calibrate``.
        data: a folder or archive ``<name>/<photo>``, or a face library (its named people the
            model was not trained on); unreadable photos are listed and skipped.
        out: the new bundle folder (default ``<bundle folder>-enrolled`` beside the original).
            Enrolling into a bundle that already has enrolled people keeps them; a name enrolled
            again is replaced.
        detect: find the faces of each photo first (MTCNN); always so for a model trained
            with the ``align``/``box`` face pipeline. A photo with several faces adds the one
            that agrees with the person's other photos.

    Raises:
        BundleError: when the bundle has no trained centroids.
        DataError: when no usable photo is found or a name is one of the trained identities.
    """
    # enroll copies model.safetensors into the new bundle, so a pickle can never be enrolled
    refuse_pickle(Path(model_path), False, "Give enroll the run folder or bundle folder as MODEL.")
    if out is not None:
        check_bundle_out(Path(out))
    model = load_model(model_path, device="auto")
    folder = model.folder
    if "trained" not in read_centroids(folder) and ensure_centroids(folder, log):
        model = load_model(model_path, device="auto")
    centroids = read_centroids(folder)
    if "trained" not in centroids:
        raise BundleError(
            f"{folder}: no trained-identity centroids; run facecls calibrate RUN_FOLDER first"
        )
    sums, counts, skipped = _embed_identities(model, data, chunk_size, detect, log)
    for item in skipped:
        log(f"  skipped {item['path']}: {item['reason']}")
    if not sums:
        raise DataError(f"{data}: no usable photo to enroll (expected <name>/<photo> folders)")
    clash = sorted(set(sums) & set(model.trained_names))
    if clash and is_library(str(data)):  # a library names everyone: enroll the newcomers
        log(f"Left out {len(clash)} people the model was trained on: {', '.join(clash)}")
        sums = {n: v for n, v in sums.items() if n not in clash}
        counts = {n: c for n, c in counts.items() if n not in clash}
        if not sums:
            raise DataError(f"{data}: every named person is one the model was trained on")
    elif clash:
        raise DataError(
            f"{data}: {clash[0]!r} is already one of the model's trained identities "
            f"({len(clash)} such); rename the folder or leave it out"
        )
    target = Path(out) if out is not None else folder.with_name(folder.name + "-enrolled")
    if target.resolve() == folder.resolve():
        raise ValueError(f"{target}: enroll writes a copy; choose another --out than the model")
    names = write_enrolled(model, sums, counts, target)
    log(
        f"Enrolled {len(sums)} identit{'y' if len(sums) == 1 else 'ies'} "
        f"({sum(counts.values())} photos, {len(skipped)} skipped) into {target}; it now names "
        f"{len(model.trained_names)} trained + {len(names)} enrolled identities"
    )
    few = sorted((n for n in counts if counts[n] < ENOUGH_PHOTOS), key=lambda n: (counts[n], n))
    if few:
        shown = ", ".join(f"{n} ({counts[n]})" for n in few[:3]) + (", ..." if len(few) > 3 else "")
        log(f"{len(few)} enrolled from fewer than {ENOUGH_PHOTOS} photos: {shown}; " + FEW_PHOTOS)
    return target


def check_bundle_out(target: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding files that are not a facecls
    bundle (enroll writes model.json and model.safetensors there, never among a user's files).

    Raises:
        OutputError: naming the folder.
    """
    if target.exists() and not target.is_dir():
        raise OutputError(f"--out {target}: is a file; --out names the new bundle's folder")
    if target.is_dir() and any(target.iterdir()) and not (target / META_NAME).is_file():
        raise OutputError(
            f"--out {target}: this folder holds files and is not a facecls model bundle; choose "
            "a new folder (facecls never writes over a file you gave it)"
        )


def write_enrolled(
    model: Any,
    sums: dict[str, np.ndarray],
    counts: dict[str, int],
    target: Path,
    link_weights: bool = False,
) -> list[str]:
    """Write the bundle ``target``: ``model``'s bundle with the identities of ``sums`` (sum of
    unit embeddings per name) enrolled besides those it already has; returns the enrolled names.

    ``link_weights`` hard-links the unchanged weights instead of copying them where the file
    system allows (the service's bundle versions share one weights file).
    """
    folder = model.folder
    centroids = read_centroids(folder)
    names = list(model.enrolled_names)
    vectors = list(centroids.get("enrolled", np.zeros((0, centroids["trained"].shape[1]))))
    previous = dict(model.meta.get("enrolled") or {})
    images = dict(zip(names, previous.get("images", [0] * len(names)), strict=True))
    for name in sorted(sums):
        vector = l2_normalize(sums[name][None])[0].astype(np.float32)
        if name in names:
            vectors[names.index(name)] = vector
        else:
            names.append(name)
            vectors.append(vector)
        images[name] = counts[name]
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_NAME, "model.onnx"):  # the graph does not change
        if (folder / name).exists():
            _link_or_copy(folder / name, target / name, link_weights)
    write_centroids(target, {"trained": centroids["trained"], "enrolled": np.stack(vectors)})
    meta = dict(model.meta)
    meta["enrolled"] = {
        "names": names,
        "images": [images[n] for n in names],
        "head": "nearest class mean (cosine) over trained and enrolled centroids",
    }
    write_json(target / META_NAME, meta)
    return names


def _link_or_copy(source: Path, target: Path, link: bool) -> None:
    if link:
        try:
            os.link(source.resolve(), target)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy
    _copy(source, target)
