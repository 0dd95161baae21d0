"""Find faces in raw photos and crop them the way LFW's training images are cropped.

The detector is OpenCV's frontal-face Haar cascade, the ``facecls[detect]`` extra
(``opencv-python-headless<5``). Chosen over MTCNN (whose weights ship in the ``facenet-pytorch``
wheel) because it installs as a plain wheel with no ``--no-deps`` trick and no torch pin, runs on
the CPU offline (the cascade XML is inside the wheel, ``cv2.data.haarcascades``) and is fast; it
finds frontal faces only, which matches what the classifiers are trained on.

Crops follow LFW's layout: a square centred on the detection, ``ENLARGE`` times its side. On 400
LFW deep-funneled photos the cascade's box is 1/2.17 of the 250 px image (median; 10-90 %
1.98-2.36) and centred within 3 px, so 2.2 x the box reproduces the training framing. Parts of the
square outside the photo are filled by repeating the edge pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from facecls.data.images import _resize_centre_square

ENLARGE = 2.2
CASCADE = "haarcascade_frontalface_default.xml"


def require_cv2() -> Any:
    """Import OpenCV or explain how to install the extra."""
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            "face detection needs OpenCV: pip install 'facecls[detect]' "
            "(or pip install 'opencv-python-headless<5')"
        ) from error
    return cv2


@dataclass(frozen=True)
class Box:
    """A face's detection box in photo pixels: top-left corner, width and height."""

    x: int
    y: int
    w: int
    h: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


class FaceDetector:
    """OpenCV's Haar cascade; call it on an RGB uint8 photo ``(H, W, 3)`` to get its faces.

    Args:
        scale_factor: image pyramid step (smaller finds more, slower).
        min_neighbors: overlapping detections needed to keep a face (higher: fewer false faces).
        min_size: smallest face side in pixels.
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        cv2 = require_cv2()
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load its {CASCADE} cascade")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def __call__(self, photo: np.ndarray) -> list[Box]:
        """Faces of ``photo``, the largest first."""
        grey = self._cv2.cvtColor(np.ascontiguousarray(photo), self._cv2.COLOR_RGB2GRAY)
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )  # fmt: skip
        boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in found]
        return sorted(boxes, key=lambda b: (-b.w * b.h, b.x, b.y))


def crop_face(
    photo: np.ndarray, box: Box, size: int, enlarge: float = ENLARGE, crop: float = 1.0
) -> np.ndarray:
    """The square of side ``enlarge`` x the box's, centred on it, resized to ``size``.

    ``crop`` is the model's training centre crop (``--crop``): the square LFW's layout would
    have, cut to its centre ``crop`` as training cut LFW's photos, so a face in a group photo
    fills the frame as the training faces did.

    Returns:
        uint8 ``(size, size, 3)``, resized as :func:`facecls.data.images.load_rgb` resizes.
    """
    side = max(1, round(enlarge * crop * max(box.w, box.h)))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    height, width = photo.shape[:2]
    pad = max(0, -left, -top, left + side - width, top + side - height)
    if pad:
        photo = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    square = photo[top + pad : top + pad + side, left + pad : left + pad + side]
    return np.asarray(_resize_centre_square(Image.fromarray(square), size))
