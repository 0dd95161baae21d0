"""The calibration views of a run's validation part: its faces as real photos show them.

Each validation photo is read again from its file (the decoded face is what training saw; the
view needs the whole photo), rendered smaller, tilted, off-centre, blurred and compressed
(:mod:`facecls.data.views`) and cut by the model's own face pipeline; the model's outputs on the
views join the validation part's in calibration (:mod:`facecls.openset_calibration`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from facecls.data.dataset import FaceDataset
from facecls.data.faces import FaceCutter
from facecls.data.images import ImageError, load_rgb
from facecls.data.views import Views, make_views
from facecls.openset_calibration import ScoredViews

# Views made at most (evenly spread over the validation part): enough pseudo-strangers for a
# threshold at FPIR 1 % with room, at a bounded cost (a detector pass and a forward each).
MAX_VIEWS = 2000
VIEW_SEED = 0
# Photos read and rendered together (the detector takes them as one batch).
CHUNK = 16

# (uint8 faces (N, 3, S, S)) -> (logits (N, C), embeddings (N, D))
Outputs = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def face_sizes(dataset: FaceDataset, rows: np.ndarray) -> np.ndarray | None:
    """The longer side of the face box each of ``rows`` was cut from (``None`` without
    detection)."""
    found = dataset.faces_found
    if found is None or len(found.boxes) != len(dataset):
        return None
    boxes = found.boxes[np.asarray(rows, dtype=np.int64)]
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).astype(np.float32)


def validation_views(
    dataset: FaceDataset, rows: np.ndarray, cutter: FaceCutter, seed: int = VIEW_SEED,
    log: Callable[[str], None] = print,
) -> tuple[Views, np.ndarray]:  # fmt: skip
    """One view of each of ``rows`` (at most :data:`MAX_VIEWS`, evenly spread), and the rows
    the views' ``source`` indices refer to.

    Photos are re-read from ``dataset.files``; a source without files (synthetic) renders the
    decoded faces themselves.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > MAX_VIEWS:
        rows = rows[np.linspace(0, len(rows) - 1, MAX_VIEWS).round().astype(np.int64)]
    found = dataset.faces_found
    # Re-reading and detecting every photo again takes minutes on a CPU: say so before it starts.
    log(f"Calibration views: rendering {len(rows)} validation faces as photos show them "
        "(each photo read and its face found again) ...")  # fmt: skip
    parts: list[Views] = []
    offset = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        photos, boxes, kept = [], [], []
        for j, row in enumerate(chunk.tolist()):
            try:
                if dataset.files is not None:
                    photos.append(load_rgb(Path(dataset.files[row])))
                else:
                    photos.append(dataset.images[row].permute(1, 2, 0).numpy())
            except ImageError as error:  # changed since it was decoded: no view of it
                log(f"Calibration views: skipped {dataset.paths[row]}: {error}")
                continue
            has_box = found is not None and dataset.files is not None
            boxes.append(found.boxes[row, :4] if has_box else None)
            kept.append(start + j)
        views = make_views(photos, boxes, cutter, seed, first_index=start)
        views.source = np.asarray(kept, dtype=np.int64)[views.source]
        parts.append(views)
        offset += len(chunk)
    if not parts:
        size = cutter.size
        empty = np.zeros(0, np.float32)
        return Views(np.zeros((0, 3, size, size), np.uint8), np.zeros(0, np.int64), empty,
                     empty.copy(), 0), rows  # fmt: skip
    return Views(
        np.concatenate([v.faces for v in parts]),
        np.concatenate([v.source for v in parts]),
        np.concatenate([v.face_px for v in parts]),
        np.concatenate([v.detector_score for v in parts]),
        sum(v.lost for v in parts),
    ), rows


def scored_views(
    dataset: FaceDataset, val_idx: np.ndarray, cutter: FaceCutter, outputs: Outputs,
    log: Callable[[str], None] = print, seed: int = VIEW_SEED,
) -> ScoredViews:  # fmt: skip
    """The model's outputs on the views of the validation part ``val_idx``."""
    views, rows = validation_views(dataset, val_idx, cutter, seed, log)
    targets = dataset.targets.numpy()[rows][views.source]
    if len(views.faces) == 0:
        empty = np.zeros((0, 0), np.float32)
        return ScoredViews(empty, None, targets, views.face_px, views.lost)
    logits, features = outputs(views.faces)
    log(
        f"Calibration views: {len(views.faces)} validation faces rendered as photos show them "
        f"(40-120 px, ±25°, blurred, JPEG 30-70, off-centre); the detector missed "
        f"{views.lost}"
    )
    return ScoredViews(logits, features, targets, views.face_px, views.lost)
