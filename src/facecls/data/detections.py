"""What a face detector found in one image, in a module of its own: the face pipeline and the
readers handle detections without loading the detector's network (and torch) until they detect."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """The faces found in one image, best score first.

    Attributes:
        boxes: ``(n, 4)`` float32 ``x1, y1, x2, y2`` in image pixels (may reach past the border).
        scores: ``(n,)`` float32 O-Net face probabilities.
        landmarks: ``(n, 5, 2)`` float32 ``x, y`` of left eye, right eye, nose, left and right
            mouth corner, "left" meaning the image's left.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)
