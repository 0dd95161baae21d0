"""Measure a run's ``unknown`` decision against photos of people it was never trained on.

``facecls evaluate RUN --strangers DIR`` scores the run's test part (the known people) and every
photo under ``DIR`` (the strangers) with each open-set score of :mod:`facecls.openset`, and
reports in ISO/IEC 19795-1 terms:

- FPIR, the share of strangers given a name, and FNIR, the share of known test faces not named
  correctly, at the run's calibrated thresholds;
- DIR (= 1 - FNIR) at FPIR 1 %, and the whole DIR/FPIR curve;
- AUROC of known-versus-stranger on the score alone.

The result is written to ``openset.json`` in the run folder, where the report shows it as a
curve. Photos in folders named like a trained identity are left out (they are not strangers),
as are files that cannot be read; both are counted and the unreadable ones listed with why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facecls import openset
from facecls.data.images import ImageError

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
) -> dict[str, dict[str, Any]]:
    """Per open-set method: rates at the calibrated threshold and at FPIR 1 %, AUROC, curve.

    ``centroid`` is left out when the model has no centroids.
    """
    predicted = known_logits.argmax(axis=1)
    correct = predicted == known_targets
    out: dict[str, dict[str, Any]] = {}
    for method in openset.METHODS:
        if method == "centroid" and centroids is None:
            continue
        known = openset.scores(method, known_logits, known_features, centroids, predicted)
        unknown = openset.scores(method, stranger_logits, stranger_features, centroids)
        row: dict[str, Any] = {}
        if method in thresholds:
            at = openset.rates_at(thresholds[method], known, correct, unknown)
            row.update(threshold=at.threshold, fpir=at.fpir, fnir=at.fnir, dir=at.dir)
        at_target = openset.dir_at_fpir(known, correct, unknown, TARGET_FPIR)
        row.update(
            dir_at_fpir_1pct=at_target.dir,
            threshold_at_fpir_1pct=at_target.threshold,
            auroc=openset.auroc(known, unknown),
            curve=_thin(openset.open_set_curve(known, correct, unknown)),
        )
        out[method] = row
    return out


def _stranger_files(
    model: Any, inputs: Sequence[str | Path], log: Callable[[str], None]
) -> tuple[np.ndarray, list[dict[str, str]], int]:
    """Decoded stranger faces ``(N, 3, S, S)``, the unreadable files with why, and how many
    files were left out for sitting in a folder named like a trained identity."""
    from facecls.predict import expand_paths

    trained = set(model.trained_names)
    faces, skipped, known_named = [], [], 0
    for path in expand_paths(inputs):
        if path.parent.name in trained:
            known_named += 1
            continue
        try:
            faces.append(model.load_face(path).transpose(2, 0, 1))
        except ImageError as error:
            skipped.append({"path": str(path), "reason": str(error)})
    for row in skipped[:5]:
        log(f"Strangers: skipped {row['path']}: {row['reason']}")
    if len(skipped) > 5:
        log(f"Strangers: ... and {len(skipped) - 5} more unreadable file(s)")
    if known_named:
        log(
            f"Strangers: left out {known_named} photo(s) in folders named like a trained identity "
            "(they are not strangers)"
        )
    size = model.image_size
    images = np.stack(faces) if faces else np.zeros((0, 3, size, size), np.uint8)
    return images, skipped, known_named


def _outputs(model: Any, images: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    parts = [model.outputs(images[s : s + batch]) for s in range(0, len(images), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def evaluate_strangers(
    run_dir: Path,
    strangers: Sequence[str | Path],
    known_images: np.ndarray,
    known_targets: np.ndarray,
    log: Callable[[str], None] = print,
    device: str = "auto",
) -> dict[str, Any]:
    """Open-set figures of a run's model: its test part as knowns, ``strangers`` as unknowns.

    Args:
        run_dir: the run folder (its ``model/`` bundle must be calibrated: train and cv do it).
        strangers: photo files and folders (walked recursively) of people not trained on.
        known_images: the run's test images, uint8 ``(N, 3, S, S)`` as the model takes them.
        known_targets: their class indices in the model's order.

    Returns:
        The content of ``openset.json`` (also written into ``run_dir``).

    Raises:
        ValueError: no readable stranger photo, or the model was never calibrated.
    """
    from facecls.atomic import write_json
    from facecls.inference import load_model

    model = load_model(Path(run_dir) / "model", device=device)
    calibrated = model.meta.get("openset") or {}
    if not calibrated.get("thresholds"):
        raise ValueError(
            f"{run_dir}: the model has no calibrated open-set thresholds; run facecls calibrate"
        )
    images, skipped, known_named = _stranger_files(model, strangers, log)
    if len(images) == 0:
        where = ", ".join(str(s) for s in strangers)
        raise ValueError(f"{where}: no readable stranger photo found")
    k_logits, k_features = _outputs(model, known_images)
    s_logits, s_features = _outputs(model, images)
    methods = open_set_figures(
        k_logits, k_features, known_targets, s_logits, s_features,
        model.trained_centroids, calibrated["thresholds"],
    )  # fmt: skip
    result = {
        "knowns": {
            "images": len(known_targets),
            "accuracy": float(np.mean(k_logits.argmax(axis=1) == known_targets)),
        },
        "strangers": {
            "images": len(images),
            "skipped": skipped,
            "left_out_named_like_trained": known_named,
        },
        "method": calibrated.get("method", openset.DEFAULT_METHOD),
        "acceptance": calibrated.get("acceptance"),
        "target_fpir": TARGET_FPIR,
        "methods": methods,
    }
    write_json(Path(run_dir) / OPENSET_FILE, result)
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
            f"  {method:<9} {row.get('threshold', float('nan')):>9.4f} "
            f"{row.get('fpir', float('nan')):>6.3f} {row.get('fnir', float('nan')):>6.3f}  "
            f"{row['dir_at_fpir_1pct']:>10.3f}  {row['auroc']:.3f}{mark}"
        )
    return lines
