"""Faces in group photos for ``centre`` models: MTCNN boxes cut the way LFW's photos are cut.

A model trained with the ``centre`` pipeline saw LFW-style photos: a face in the middle of a
square about twice its size. Given a photo with faces anywhere (``predict --detect``,
``enroll --detect``), each MTCNN box is grown to that square (:data:`LFW_ENLARGE`) and cut as
training cut its photos. Models trained with ``align``/``box`` cut their faces with their own
pipeline (:class:`facecls.data.faces.FaceCutter`) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecls.data.detections import Detections
from facecls.data.faces import LFW_ENLARGE, Face, lfw_square, main_first


@dataclass(frozen=True)
class Box:
    """A face's detection box in photo pixels: top-left corner, width and height."""

    x: int
    y: int
    w: int
    h: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    @classmethod
    def from_corners(cls, corners: np.ndarray | tuple[float, ...]) -> Box:
        """A box from MTCNN's ``x1, y1, x2, y2``."""
        x1, y1, x2, y2 = (float(v) for v in corners)
        return cls(round(x1), round(y1), max(1, round(x2 - x1)), max(1, round(y2 - y1)))


def crop_face(
    photo: np.ndarray, box: Box, size: int, enlarge: float = LFW_ENLARGE, crop: float = 1.0
) -> np.ndarray:
    """The square of side ``enlarge`` x the box's, centred on it, resized to ``size``.

    ``crop`` is the model's training centre crop (``--crop``): the square LFW's layout would
    have, cut to its centre ``crop`` as training cut LFW's photos, so a face in a group photo
    fills the frame as the training faces did.

    Returns:
        uint8 ``(size, size, 3)``, resized as :func:`facecls.data.images.load_rgb` resizes.
    """
    return lfw_square(photo, box.as_tuple(), size, enlarge, crop)


def lfw_faces(
    photo: np.ndarray, found: Detections, size: int, crop: float = 1.0, every_face: bool = True
) -> list[Face]:
    """The detected faces of ``photo`` cut LFW-style (main face first) for a ``centre`` model."""
    order = main_first(found.boxes, *photo.shape[:2])[: None if every_face else 1]
    return [
        Face(
            crop_face(photo, Box.from_corners(found.boxes[i]), size, crop=crop),
            tuple(float(v) for v in found.boxes[i]),
            found.landmarks[i].copy(),
            float(found.scores[i]),
        )  # fmt: skip
        for i in order.tolist()
    ]
