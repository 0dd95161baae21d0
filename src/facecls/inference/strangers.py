"""Measure a run's ``unknown`` decision against photos of people it was never trained on.

``facecls evaluate RUN --strangers DIR`` scores the run's test part (the known people) and every
photo under ``DIR`` (the strangers) with each open-set score of :mod:`facecls.openset`, and
reports in ISO/IEC 19795-1 terms:

- FPIR, the share of strangers given a name, and FNIR, the share of known test faces not named
  correctly, at the run's calibrated thresholds;
- DIR (= 1 - FNIR) at FPIR 1 %, and the whole DIR/FPIR curve;
- AUROC of known-versus-stranger on the score alone.

``evaluate`` writes the result to ``openset.json`` in the run folder, where the report shows it
as a curve. It is a snapshot: after ``facecls calibrate`` changes a threshold, run it again.
Photos in folders named like a trained identity are left out (they are not strangers), as are
files that cannot be read; both are counted and the unreadable ones listed with why. A face
library given as ``DIR`` gives the faces of the people forgotten in it (``facecls people LIB
forget``), each cut where the library found it; a forgotten person is one stranger.

``facecls calibrate RUN --strangers DIR`` scores such photos the same way
(:func:`real_strangers`) and sets the thresholds on them (``openset_calibration.calibrate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facecls import openset, openset_rates
from facecls.atomic import write_json
from facecls.data.cache import decode_cached
from facecls.data.images import ImageError, printable
from facecls.data.library_source import is_library, scan_library
from facecls.data.library_tables import redact
from facecls.data.sources import default_cache_dir
from facecls.inference.faces import expand_paths
from facecls.inference.model import load_model
from facecls.openset_calibration import RealStrangers, check_strangers
from facecls.progress import track

OPENSET_FILE = "openset.json"
TARGET_FPIR = 0.01
CURVE_POINTS = 300  # enough for a smooth plot, small enough for a JSON file


def _thin(curve: dict[str, np.ndarray], points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """At most ``points`` points of a curve, its two ends kept, rounded for the JSON file."""
    n = len(curve["fpir"])
    keep = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return {key: [round(float(v), 6) for v in curve[key][keep]] for key in ("fpir", "dir")}


def open_set_figures(
    known_logits: np.ndarray,
    known_features: np.ndarray,
    known_targets: np.ndarray,
    stranger_logits: np.ndarray,
    stranger_features: np.ndarray,
    centroids: np.ndarray | None,
    thresholds: dict[str, float],
    fused_weight: float = openset.FUSED_WEIGHT,
) -> dict[str, dict[str, Any]]:
    """Per open-set method: rates at its threshold in ``thresholds`` (if any) and at FPIR 1 %,
    AUROC and the DIR/FPIR curve.

    The scores on centroids (``openset.CENTROID_METHODS``) are left out when the model has none.
    """
    predicted = known_logits.argmax(axis=1)
    correct = predicted == known_targets
    out: dict[str, dict[str, Any]] = {}
    for method in openset.METHODS:
        if method in openset.CENTROID_METHODS and centroids is None:
            continue
        known = openset.scores(
            method, known_logits, known_features, centroids, predicted, fused_weight
        )
        unknown = openset.scores(
            method, stranger_logits, stranger_features, centroids, fused_weight=fused_weight
        )
        row: dict[str, Any] = {}
        if method in thresholds:
            at = openset_rates.rates_at(thresholds[method], known, correct, unknown)
            row.update(threshold=at.threshold, fpir=at.fpir, fnir=at.fnir, dir=at.dir)
        at_target = openset_rates.dir_at_fpir(known, correct, unknown, TARGET_FPIR)
        row.update(
            dir_at_fpir_1pct=at_target.dir,
            # No threshold keeps FPIR that low when a stranger has the top score: accept nothing.
            threshold_at_fpir_1pct=at_target.threshold
            if np.isfinite(at_target.threshold)
            else None,
            auroc=openset_rates.auroc(known, unknown),
            curve=_thin(openset_rates.open_set_curve(known, correct, unknown)),
        )
        out[method] = row
    return out


@dataclass
class StrangerOutputs:
    """A model's outputs on photos of people it does not know.

    Attributes:
        logits: ``(N, C)``; ``features``: ``(N, D)``.
        folders: each photo's folder (a folder of one person's photos stands for that person).
        skipped: the unreadable files, with why.
        known_named: files left out for sitting in a folder named like a trained identity
            (or faces of a forgotten person so named).
    """

    logits: np.ndarray
    features: np.ndarray
    folders: list[str]
    skipped: list[dict[str, str]]
    known_named: int


def _forgotten_faces(
    model: Any, library: str, trained: set[str], parts: list[tuple[np.ndarray, np.ndarray]],
    folders: list[str], skipped: list[dict[str, str]], chunk: int,
) -> int:  # fmt: skip
    """Add the model's outputs on the faces of the people forgotten in ``library`` (each cut
    where the library found it, by the model's pipeline, as ``train --data LIB`` cuts them) to
    ``parts``, each person or cluster one stranger in ``folders``; returns how many faces were
    left out for a name the model was trained on."""
    cache = default_cache_dir()
    scan = scan_library(library, cache, forgotten=True)
    skipped.extend(scan.skipped)
    refs = [r for r in scan.refs if r.identity not in trained]
    quiet = lambda _m: None  # noqa: E731 - decode_cached's log: its progress is not ours to show
    for start in range(0, len(refs), chunk):
        some = refs[start : start + chunk]
        images, kept, unread, _ = decode_cached(
            some, model.image_size, cache, quiet, crop=model.crop, faces=model.faces
        )
        skipped.extend(unread)
        if kept:
            parts.append(model.outputs(images))
            folders.extend(f"{redact(library)}#{some[i].identity}" for i in kept)
    return len(scan.refs) - len(refs)


def stranger_outputs(
    model: Any,
    inputs: Sequence[str | Path],
    log: Callable[[str], None],
    chunk: int = 128,
    show_progress: bool = False,
) -> StrangerOutputs:
    """The model's outputs on the stranger photos under ``inputs``, decoded ``chunk`` at a time
    (memory does not grow with their number). An input that is a face library (a folder or a
    ``postgresql://`` URL) gives the faces of the people forgotten in it.

    Raises:
        ValueError: no readable stranger photo (the message counts what was left out).
    """

    trained = set(model.trained_names)
    faces: list[np.ndarray] = []
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    folders: list[str] = []
    skipped: list[dict[str, str]] = []
    known_named = 0
    libraries = [str(s) for s in inputs if is_library(str(s))]
    for library in libraries:
        known_named += _forgotten_faces(model, library, trained, parts, folders, skipped, chunk)
    paths = list(expand_paths([s for s in inputs if str(s) not in libraries]))
    for path in track(paths, len(paths), "strangers", show_progress):
        if path.parent.name in trained:
            known_named += 1
            continue
        try:
            faces.append(model.load_face(path).transpose(2, 0, 1))
            folders.append(str(path.parent))
        except ImageError as error:
            skipped.append({"path": printable(str(path)), "reason": str(error)})
        if len(faces) == chunk:
            parts.append(model.outputs(np.stack(faces)))
            faces.clear()
    if faces:
        parts.append(model.outputs(np.stack(faces)))
    for row in skipped[:5]:
        log(f"Strangers: skipped {row['path']}: {row['reason']}")
    if len(skipped) > 5:
        log(f"Strangers: ... and {len(skipped) - 5} more unreadable file(s)")
    if known_named:
        log(
            f"Strangers: left out {known_named} photo(s) of folders or people named like a trained "
            "identity (they are not strangers)"
        )
    if not parts:
        where = ", ".join(redact(str(s)) for s in inputs)  # never a server URL's password
        raise ValueError(
            f"{where}: no stranger photo to score ({len(skipped)} unreadable, {known_named} in "
            "folders or people named like a trained identity)"
        )
    return StrangerOutputs(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        folders,
        skipped,
        known_named,
    )


def evaluate_strangers(
    model_path: Path,
    strangers: Sequence[str | Path],
    known_images: np.ndarray,
    known_targets: np.ndarray,
    log: Callable[[str], None] = print,
    device: str = "auto",
    out: Path | None = None,
    trust_pickle: bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Open-set figures of a model: its run's test part as knowns, ``strangers`` as unknowns.

    The threshold ``predict`` uses (calibrated, or set by hand with ``facecls calibrate
    --threshold``) gives the in-use method's FPIR and FNIR; the other methods use their
    calibrated thresholds. DIR at FPIR 1 %, AUROC and the curve need no threshold, so an
    uncalibrated model gets those alone.

    Args:
        model_path: the run folder, bundle or weights file that was evaluated.
        strangers: photo files and folders (walked recursively) of people not trained on.
        known_images: the run's test images, uint8 ``(N, 3, S, S)`` as the model takes them.
        known_targets: their class indices in the model's order.
        out: where to write ``openset.json`` (default: not written).

    Returns:
        The content of ``openset.json``.

    Raises:
        ValueError: no readable stranger photo.
    """

    model = load_model(model_path, device=device, trust_pickle=trust_pickle)
    calibrated = model.meta.get("openset") or {}
    thresholds = dict(calibrated.get("thresholds") or {})
    if model.threshold is not None:
        thresholds[model.method] = model.threshold  # what predict applies, hand-set or not
    found = stranger_outputs(model, strangers, log, show_progress=show_progress)
    s_logits, s_features, skipped, known_named = (
        found.logits,
        found.features,
        found.skipped,
        found.known_named,
    )
    if len(s_logits) < 1 / TARGET_FPIR:
        log(
            f"Strangers: only {len(s_logits)} photos, so FPIR 1 % means no stranger accepted; "
            f"give at least {round(1 / TARGET_FPIR)} for a meaningful DIR at FPIR 1 %"
        )
    k_logits, k_features = model.outputs(known_images)
    methods = open_set_figures(
        k_logits, k_features, known_targets, s_logits, s_features,
        model.trained_centroids, thresholds, model.fused_weight,
    )  # fmt: skip
    result = {
        "knowns": {
            "images": len(known_targets),
            "accuracy": float(np.mean(k_logits.argmax(axis=1) == known_targets)),
        },
        "strangers": {
            "images": len(s_logits),
            "skipped": skipped,
            "left_out_named_like_trained": known_named,
        },
        "method": model.method,
        "threshold_set_by_hand": bool(calibrated.get("set_by_hand", False)),
        "acceptance": calibrated.get("acceptance"),
        "target_fpir": TARGET_FPIR,
        "methods": methods,
    }
    if out is not None:
        write_json(Path(out), result)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The printed table of :func:`evaluate_strangers`'s result."""
    lines = [
        f"Open set: {result['knowns']['images']} known test images (closed-set accuracy "
        f"{result['knowns']['accuracy']:.3f}) vs {result['strangers']['images']} stranger photos",
        f"  {'score':<9} {'threshold':>9} {'FPIR':>6} {'FNIR':>6}  {'DIR@FPIR1%':>10}  AUROC",
    ]
    for method, row in result["methods"].items():
        mark = " (in use)" if method == result["method"] else ""
        lines.append(
            f"  {method:<9} {row.get('threshold', float('nan')):>9.4g} "
            f"{row.get('fpir', float('nan')):>6.3f} {row.get('fnir', float('nan')):>6.3f}  "
            f"{row['dir_at_fpir_1pct']:>10.3f}  {row['auroc']:.3f}{mark}"
        )
    return lines


def real_strangers(
    model_path: Path, inputs: Sequence[str | Path], fpir: float | None,
    log: Callable[[str], None] = print, device: str = "auto", show_progress: bool = False,
) -> RealStrangers:  # fmt: skip
    """The outputs ``facecls calibrate --strangers`` sets thresholds on: the model's on the
    photos under ``inputs``, each folder standing for one person.

    Raises:
        ValueError: no readable photo, no ``fpir``, or too few photos for it.
    """
    model = load_model(model_path, device=device)
    found = stranger_outputs(model, inputs, log, show_progress=show_progress)
    people = np.asarray(found.folders)
    strangers = RealStrangers(found.logits, found.features, people)
    check_strangers(strangers, fpir)  # before the minutes of the training part's pass
    log(f"Strangers: {len(people)} photos of {len(np.unique(people))} people (a folder, or a "
        "person forgotten in a face library, counts as one) set the thresholds")  # fmt: skip
    return strangers
