"""A photo's faces as the model cuts them: every detected face, or the photo as one face.

Shared by the service's uploads and by video frames (both hand over decoded RGB pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facecls.inference.model import FaceModel


@dataclass
class Photo:
    """A decoded upload: RGB pixels ``(H, W, 3)`` and the faces to classify with their boxes."""

    rgb: np.ndarray
    faces: np.ndarray  # uint8 (F, 3, S, S)
    boxes: list[tuple[int, int, int, int]]


def centre_box(width: int, height: int, crop: float) -> tuple[int, int, int, int]:
    """The square the model's centre crop takes from a ``width`` × ``height`` photo."""
    side = max(1, round(min(width, height) * crop))
    return ((width - side) // 2, (height - side) // 2, side, side)


def finds_faces(model: FaceModel, detect: bool) -> bool:
    """Whether uploads go through the face detector (``detect``, or a model trained on
    detected faces) rather than being taken as one face each."""
    return detect or model.detects


def photo_faces(model: FaceModel, rgb: np.ndarray, detect: bool) -> Photo:
    """Every face of a photo (:func:`finds_faces`), else the photo as one face (the model's
    centre crop)."""
    if not finds_faces(model, detect):
        height, width = rgb.shape[:2]
        face = model.face(rgb).transpose(2, 0, 1)[None]
        return Photo(rgb, np.ascontiguousarray(face), [centre_box(width, height, model.crop)])
    return photo_of(model, rgb, model.faces_in(rgb))


def photo_of(model: FaceModel, rgb: np.ndarray, found: list[Any]) -> Photo:
    """A photo with the faces the detector ``found`` in it (``FaceModel.faces_in``)."""
    size = model.image_size
    faces = np.zeros((len(found), 3, size, size), np.uint8)
    boxes = []
    for i, face in enumerate(found):
        faces[i] = face.pixels.transpose(2, 0, 1)
        x1, y1, x2, y2 = face.box
        boxes.append((round(x1), round(y1), round(x2 - x1), round(y2 - y1)))
    return Photo(rgb, faces, boxes)
