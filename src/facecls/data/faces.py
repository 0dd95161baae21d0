"""The face pipeline: how a photo becomes the square face a model sees.

One pipeline serves training (at decode time, into the decode cache), prediction, enrollment,
calibration, the stranger check and the ONNX backend, and the bundle's ``model.json`` records
which one a model was trained with:

- ``centre``: the centre square of ``crop`` x the shorter side (LFW-style photos that are
  already face crops); no detector. Bundles written before pipelines existed use it.
- ``align``: MTCNN finds the faces and their five landmarks; a similarity transform puts the
  landmarks on the ArcFace template (:func:`facecls.data.align.align_face`): tilted heads come
  out upright. The face fills :data:`ALIGN_SCALE` of the template, for some context.
- ``arcface``: the same alignment on the ArcFace template itself (eyes to chin, no zoom), the
  framing SFace's weights were trained on.
- ``box``: MTCNN's box plus a margin, resized (:func:`facecls.data.align.box_crop`) — the
  framing FaceNet's CASIA-WebFace weights were trained on; a head tilted 10° or more is cut
  along its eye line, so it comes out upright (:func:`facecls.data.align.upright_box_crop`).

A photo holds any number of faces. They are ordered main face first (:func:`main_first`: the
largest, weighted by closeness to the photo's centre); training keeps the main face (and counts
photos with more), prediction answers for every face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facecls.config import FACES as PIPELINES
from facecls.data.align import align_face, eye_angle, upright_box_crop
from facecls.data.images import _resize_centre_square

if TYPE_CHECKING:
    from facecls.data.mtcnn import MTCNN
from facecls.data.detections import Detections

# Context around the face, measured on LFW's 6,000 pairs with FaceNet (benchmarks/face_pipeline.py,
# 10-fold accuracy): box margin 0.2 0.979, margin 0.1 0.978, align at 0.9 0.973, centre crop
# 0.974. Align zooms the ArcFace template out to this share of the output; box adds this share
# of the output side as margin.
ALIGN_SCALE = 0.9
BOX_MARGIN = 0.2
# MTCNN boxes of LFW's 250 px deep-funneled photos: median longest side 123 px, so the square of
# 2.04 x the box reproduces LFW's framing for ``centre`` models given group photos.
LFW_ENLARGE = 2.04


@dataclass(frozen=True)
class Face:
    """One face cut from a photo.

    Attributes:
        pixels: uint8 ``(size, size, 3)``, what the model sees.
        box: ``(x1, y1, x2, y2)`` in photo pixels (the centre square for ``centre``).
        landmarks: ``(5, 2)`` eyes, nose, mouth corners in photo pixels; ``None`` for ``centre``.
        score: the detector's face probability (1.0 for ``centre``).
    """

    pixels: np.ndarray
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None
    score: float = 1.0


def as_square(image: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` array's centre square of side ``crop`` x the shorter side,
    resized to ``size`` — the same cut as :func:`facecls.data.images.load_rgb`."""
    if image.shape[:2] == (size, size) and crop == 1.0:
        return image
    return np.asarray(_resize_centre_square(Image.fromarray(image), size, crop))


def centre_box(height: int, width: int, crop: float) -> tuple[float, float, float, float]:
    """The centre square ``as_square`` keeps, as a box in photo pixels."""
    side = min(height, width) * crop
    x1, y1 = (width - side) / 2, (height - side) / 2
    return (x1, y1, x1 + side, y1 + side)


def lfw_square(
    photo: np.ndarray,
    box: tuple[int, int, int, int],
    size: int,
    enlarge: float = LFW_ENLARGE,
    crop: float = 1.0,
) -> np.ndarray:
    """The square of side ``enlarge`` x the longer side of ``box`` (``x, y, w, h``), centred on
    it and cut to its centre ``crop``, resized to ``size`` (edges padded by repetition): a face
    anywhere in a photo framed as LFW frames its people, for ``centre`` models.

    Returns:
        uint8 ``(size, size, 3)``, resized as :func:`facecls.data.images.load_rgb` resizes.
    """  # fmt: skip
    x, y, w, h = box
    side = max(1, round(enlarge * crop * max(w, h)))
    cx, cy = x + w / 2, y + h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    height, width = photo.shape[:2]
    pad = max(0, -left, -top, left + side - width, top + side - height)
    if pad:
        photo = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    square = photo[top + pad : top + pad + side, left + pad : left + pad + side]
    return np.asarray(_resize_centre_square(Image.fromarray(square), size))


def box_of(corners: Sequence[float]) -> tuple[int, int, int, int]:
    """``x, y, w, h`` in whole pixels of a detection's ``x1, y1, x2, y2``."""
    x1, y1, x2, y2 = (float(v) for v in corners)
    return round(x1), round(y1), max(1, round(x2 - x1)), max(1, round(y2 - y1))


def check_pipeline(name: str) -> str:
    """``name`` if it is a face pipeline, else a ValueError that lists them."""
    if name not in PIPELINES:
        raise ValueError(f"unknown face pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    return name


# Two boxes are one face when they overlap this much (intersection over union), or when the
# smaller one's centre lies in the larger and this share of the smaller is covered. MTCNN's
# last suppression drops a box only when 70 % of the smaller one is covered, so a face found at
# two scales could come out twice, each answered.
SAME_FACE_IOU = 0.3
SAME_FACE_COVER = 0.5


def merge_overlaps(found: Detections) -> Detections:
    """``found`` with each face found twice kept once: of overlapping boxes (see
    :data:`SAME_FACE_IOU`), the one with the higher detector score stays."""
    if len(found) < 2:
        return found
    boxes = np.asarray(found.boxes, dtype=np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)  # (n, n)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
    smaller = np.minimum(area[:, None], area[None, :])
    cover = inter / np.maximum(smaller, 1e-9)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    # inside[i, j]: the centre of box i lies in box j
    inside = (
        (cx[:, None] >= boxes[None, :, 0]) & (cx[:, None] <= boxes[None, :, 2])
        & (cy[:, None] >= boxes[None, :, 1]) & (cy[:, None] <= boxes[None, :, 3])
    )  # fmt: skip
    small_in_large = np.where(area[:, None] <= area[None, :], inside, inside.T)
    same = (iou >= SAME_FACE_IOU) | ((cover >= SAME_FACE_COVER) & small_in_large)
    keep = np.ones(len(boxes), dtype=bool)
    for i in np.argsort(-np.asarray(found.scores), kind="stable").tolist():
        if keep[i]:
            others = same[i] & keep
            others[i] = False
            keep[others] = False
    if keep.all():
        return found
    return Detections(found.boxes[keep], found.scores[keep], found.landmarks[keep])


def main_first(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Indices of ``boxes`` (``x1, y1, x2, y2``), the photo's main face first.

    A face ranks by its box area minus twice the squared distance of its centre from the photo's
    centre (facenet-pytorch's ``center_weighted_size``): the subject of a portrait is large *and*
    central, while a bystander may be as large at the edge. On LFW's 6,000 pairs this choice beats
    "largest" (10-fold accuracy 0.987 against 0.979 with FaceNet; it picks another face in 70 of
    the 7,701 photos, 1,050 of which hold several faces). Ties keep detection order.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    dy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    return np.argsort(-(area - 2.0 * (dx**2 + dy**2)), kind="stable")


class FaceCutter:
    """Cuts faces out of RGB uint8 photos as a model was trained to see them.

    Args:
        pipeline: ``centre``, ``align`` or ``box`` (see the module notes).
        size: side of the square faces in pixels (the model's input size).
        crop: ``centre`` only: share of the shorter side kept.
        device: where MTCNN runs (``align``/``box``).
        min_face_size: smallest face MTCNN looks for, in pixels.
    """

    def __init__(
        self,
        pipeline: str,
        size: int,
        crop: float = 1.0,
        device: str = "cpu",
        min_face_size: int = 20,
    ) -> None:
        self.pipeline, self.size, self.crop = check_pipeline(pipeline), size, crop
        self.device, self.min_face_size = device, min_face_size
        self._detector: MTCNN | None = None

    @property
    def detects(self) -> bool:
        """Whether this pipeline runs the face detector."""
        return self.pipeline != "centre"

    def detector(self) -> MTCNN:
        """The MTCNN detector, made on first use (its weights load then)."""
        if self._detector is None:
            # imported here, not above: cutting known faces (export, the People page) must not
            # load torch; only detecting needs the network
            from facecls.data.mtcnn import MTCNN

            self._detector = MTCNN(self.device, min_face_size=self.min_face_size)
        return self._detector

    def detect(self, photos: Sequence[np.ndarray]) -> list[Detections]:
        """MTCNN's faces of each photo, a face found twice kept once (:func:`merge_overlaps`;
        any pipeline: ``predict --detect`` uses it too)."""
        return [merge_overlaps(found) for found in self.detector().detect(photos)]

    def cut(self, photos: Sequence[np.ndarray], every_face: bool = True) -> list[list[Face]]:
        """The faces of each photo, the main face first (only the main face without
        ``every_face``); a photo without a face gives an empty list."""
        if not self.detects:
            return [
                [Face(as_square(p, self.size, self.crop), centre_box(*p.shape[:2], self.crop))]
                for p in photos
            ]
        return [
            self.faces_of(photo, found, every_face)
            for photo, found in zip(photos, self.detect(photos), strict=True)
        ]

    def faces_of(self, photo: np.ndarray, found: Detections, every_face: bool) -> list[Face]:
        """Cut the detected faces of one photo, the main face first (:func:`main_first`)."""
        order = main_first(found.boxes, *photo.shape[:2])[: None if every_face else 1]
        faces = []
        for i in order.tolist():
            box, points = found.boxes[i], found.landmarks[i]
            if self.pipeline in ("align", "arcface"):
                scale = ALIGN_SCALE if self.pipeline == "align" else 1.0
                pixels = align_face(photo, points, self.size, scale=scale)
            else:
                pixels = upright_box_crop(
                    photo, box, self.size, BOX_MARGIN * self.size, eye_angle(points)
                )
            faces.append(
                Face(pixels, tuple(float(v) for v in box), points.copy(), float(found.scores[i]))
            )
        return faces

    def cut_known(
        self, photo: np.ndarray, box: Sequence[float], landmarks: np.ndarray | None
    ) -> Face:
        """A face found earlier (a face library's), cut with this pipeline without detecting:
        ``centre`` frames it as LFW does (:func:`lfw_square`)."""
        corners = tuple(float(v) for v in box)
        if not self.detects:
            return Face(lfw_square(photo, box_of(corners), self.size, crop=self.crop), corners)
        if landmarks is None:  # nothing to align on: the box, upright as stored
            pixels = upright_box_crop(photo, corners, self.size, BOX_MARGIN * self.size, 0.0)
            return Face(pixels, corners)
        points = np.asarray(landmarks, dtype=np.float32).reshape(1, 5, 2)
        found = Detections(np.asarray([corners], np.float32), np.ones(1, np.float32), points)
        return self.faces_of(photo, found, every_face=False)[0]

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.pipeline == "centre":
            return "centre crop" + (f" {self.crop:g}" if self.crop != 1.0 else "")
        return {
            "align": "MTCNN + 5-point alignment", "arcface": "MTCNN + ArcFace-template alignment",
            "box": "MTCNN box + margin",
        }[self.pipeline]  # fmt: skip
