"""Face pictures for a run's report: pair examples, the error gallery and Grad-CAM panels.

The run's data is reloaded from its ``config.yaml`` (the decode cache makes this fast) and test
images are found by their ``predictions.csv`` path. Pictures become base64 PNG data URIs so the
page needs no other file. Nothing here is used by a shareable report, which shows no face.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from facecls.bundle import load_bundle
from facecls.data.augment import normalize
from facecls.data.dataset import FaceDataset, load_dataset
from facecls.data.face_choice import kept_faces_of
from facecls.report.run_data import Prediction, RunData
from facecls.report.saliency import explained_layer, grad_cam, overlay

THUMB_SIDE = 96  # larger images are shrunk; a page of ~100 thumbnails stays well under 2 MB
ROW_THUMB_SIDE = 40  # one per row of the per-identity table: ~2 kB each
MAX_ROW_THUMBS = 400  # past this many identities the table shows names only


def png_data_uri(image: np.ndarray, max_side: int = THUMB_SIDE) -> str:
    """A uint8 ``(H, W, 3)`` picture as a ``data:image/png;base64,…`` URI, at most ``max_side``."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class FaceImages:
    """The run's images, looked up by path or identity.

    Args:
        run: the run whose test images are shown.
        dataset: the data already in memory (``fit`` passes it); reloaded from the config if None.
    """

    def __init__(
        self, run: RunData, dataset: FaceDataset | None = None, log: Callable[[str], None] = print
    ) -> None:
        self.run = run
        self.dataset = (
            dataset
            if dataset is not None
            else load_dataset(run.config.data, log, kept_faces=kept_faces_of(run.run_dir))
        )
        self.index = {path: i for i, path in enumerate(self.dataset.paths)}

    def picture(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(H, W, 3)``."""
        return self.dataset.images[i].permute(1, 2, 0).numpy()

    def uri_of_path(self, path: str) -> str | None:
        i = self.index.get(path)
        return None if i is None else png_data_uri(self.picture(i))

    def example_of(self, identity: str) -> str | None:
        """One picture of ``identity``: a test image the model got right, else any of its images."""
        for p in self.run.predictions:
            if p.true == identity and p.correct:
                uri = self.uri_of_path(p.path)
                if uri:
                    return uri
        if identity in self.dataset.class_names:
            target = self.dataset.class_names.index(identity)
            hits = np.flatnonzero(self.dataset.targets.numpy() == target)
            if len(hits):
                return png_data_uri(self.picture(int(hits[0])))
        return None

    def first_images(self) -> dict[str, int]:
        """Each identity's first image (dataset order), as a dataset index."""
        targets = self.dataset.targets.numpy()
        classes, first = np.unique(targets, return_index=True)
        return {self.dataset.class_names[c]: int(i) for c, i in zip(classes, first, strict=True)}


# The report's Figure 1 shows 64 faces; the grid shows one per identity up to that many.
FACE_GRID = 64


def face_grid(faces: FaceImages, n: int = FACE_GRID) -> list[dict[str, Any]]:
    """One face per identity, the report's Figure 1: every identity up to ``n``, most images
    first.

    With more than ``n`` identities, the ``n // 2`` with the most images and the rest from those
    with the fewest, so the page shows both ends of the long tail. Each tile: ``name``,
    ``images`` (the identity's images in the data) and ``uri``.
    """
    counts = np.bincount(faces.dataset.targets.numpy(), minlength=faces.dataset.num_classes)
    order = np.argsort(-counts, kind="stable").tolist()
    if len(order) > n:
        order = order[: n // 2] + order[len(order) - (n - n // 2) :]
    first = faces.first_images()
    names = faces.dataset.class_names
    return [
        {"name": names[c], "images": int(counts[c]),
         "uri": png_data_uri(faces.picture(first[names[c]]))}
        for c in order if names[c] in first
    ]  # fmt: skip


def row_thumbnails(faces: FaceImages) -> dict[str, str]:
    """A small face for each identity of the per-identity table (none past MAX_ROW_THUMBS)."""
    first = faces.first_images()
    if len(first) > MAX_ROW_THUMBS:
        return {}
    return {name: png_data_uri(faces.picture(i), ROW_THUMB_SIDE) for name, i in first.items()}


def pair_examples(faces: FaceImages, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each confused pair with a test image of the true identity that was taken for the other
    (``true_uri``) and an image of the identity it was taken for (``predicted_uri``)."""
    out = []
    for pair in pairs:
        mistake = next(
            (p for p in faces.run.predictions
             if p.true == pair["true"] and p.predicted == pair["predicted"]),
            None,
        )  # fmt: skip
        out.append({
            **pair,
            "true_uri": faces.uri_of_path(mistake.path) if mistake else None,
            "true_path": mistake.path if mistake else "",
            "predicted_uri": faces.example_of(pair["predicted"]),
        })  # fmt: skip
    return out


def _card(faces: FaceImages, p: Prediction, uri: str | None = None) -> dict[str, Any]:
    return {
        "path": p.path, "true": p.true, "predicted": p.predicted,
        "probability": p.probability, "correct": p.correct,
        "uri": uri if uri is not None else faces.uri_of_path(p.path),
    }  # fmt: skip


def error_gallery(faces: FaceImages, cap: int = 24) -> list[dict[str, Any]]:
    """The misclassified test images, most confident mistakes first (at most ``cap``)."""
    wrong = sorted(
        (p for p in faces.run.predictions if not p.correct), key=lambda p: (-p.probability, p.path)
    )
    cards = [_card(faces, p) for p in wrong if p.path in faces.index]
    return cards[:cap]


def _distinct(predictions: list[Prediction], n: int) -> list[Prediction]:
    """The n most confident predictions, one per true identity where possible."""
    ranked = sorted(predictions, key=lambda p: (-p.probability, p.path))
    chosen, seen = [], set()
    for p in ranked:
        if p.true not in seen:
            chosen.append(p)
            seen.add(p.true)
        if len(chosen) == n:
            return chosen
    return chosen + [p for p in ranked if p not in chosen][: n - len(chosen)]


def saliency_panels(
    faces: FaceImages, n_correct: int = 4, n_wrong: int = 4
) -> list[dict[str, Any]]:
    """Grad-CAM of the predicted class for a few confident right and wrong test images.

    Each panel holds the image (``uri``) and the map over it (``cam_uri``).
    """

    bundle = load_bundle(faces.run.run_dir)
    usable = [p for p in faces.run.predictions if p.path in faces.index]
    chosen = _distinct([p for p in usable if p.correct], n_correct) + _distinct(
        [p for p in usable if not p.correct], n_wrong
    )
    if not chosen:
        return []
    rows = torch.tensor([faces.index[p.path] for p in chosen])
    inputs = normalize(faces.dataset.images[rows], bundle.mean, bundle.std)
    classes = [bundle.class_names.index(p.predicted) for p in chosen]
    layer_name, layer = explained_layer(bundle.model, bundle.image_size)
    cams = grad_cam(bundle.model, inputs, classes, layer)
    panels = []
    for p, i, cam in zip(chosen, rows.tolist(), cams, strict=True):
        card = _card(faces, p)
        card["cam_uri"] = png_data_uri(overlay(faces.picture(i), cam))
        card["layer"] = layer_name
        panels.append(card)
    return panels


def doubtful_faces(faces: FaceImages, several: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The doubtful face choices of photos with several faces (``content.several_faces``),
    each with a thumbnail of every face of its photo (``uris``, main face first)."""
    found = faces.dataset.faces_found
    if not several or not several.get("doubtful") or found is None:
        return []
    position = {row: p for p, row in enumerate(found.rows.tolist())}
    out = []
    for entry in several["doubtful"][:24]:
        p = position.get(faces.index.get(entry["path"], -1))
        if p is None:
            continue
        pixels = found.pixels[found.offsets[p] : found.offsets[p + 1]]
        out.append({**entry, "uris": [png_data_uri(face.transpose(1, 2, 0)) for face in pixels]})
    return out
