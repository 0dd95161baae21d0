"""Calibration views: a validation face as real photos show it.

A validation part holds photos like the training ones (LFW: full-size, centred, sharp faces), and a
threshold fitted there rejects the smaller, softer, tilted faces of real photos. Each view takes a
validation photo and renders it as a photo would show it, then cuts it with the model's own face
pipeline:

- smaller: the photo is scaled so the face is 40-120 px wide (the pipeline brings it back to
  the model's input size; a face already smaller keeps its size);
- tilted up to ±25° about the face's centre;
- off-centre: pasted somewhere on a larger canvas of smooth texture (no face in it), so the
  detector has to find it;
- softer: a Gaussian blur of up to 1.5 px and JPEG at quality 30-70.

Every random draw comes from ``numpy.random.default_rng([seed, index])``: a photo's view depends
on the seed and its index alone, never on batching, so views are the same for a seed.
The ``centre`` pipeline finds no face: its view is the degraded photo, centre-cropped as training
cropped it. Detecting pipelines take the detection nearest the face's known place (a face the
detector misses gives no view, as it gives no answer in a real photo).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from facecls.data.detections import Detections
from facecls.data.faces import LFW_ENLARGE, FaceCutter, as_square

# Bump when views are rendered differently (cached figures keyed by it are then recomputed).
VIEW_VERSION = 1


@dataclass(frozen=True)
class ViewSpec:
    """The ranges a view's draws come from (uniform)."""

    face_px: tuple[int, int] = (40, 120)
    angle: float = 25.0
    blur: tuple[float, float] = (0.0, 1.5)
    jpeg: tuple[int, int] = (30, 70)


@dataclass
class Views:
    """The views of some photos, cut as the model cuts faces.

    Attributes:
        faces: uint8 ``(V, 3, S, S)``.
        source: ``(V,)`` index of the photo each view was made from.
        face_px: ``(V,)`` side of the face's box in the rendered photo (the detector's box, or
            the drawn size for ``centre``), the size a real photo would show.
        detector_score: ``(V,)`` the detector's face probability (1 for ``centre``).
        lost: photos whose face the detector did not find in their view.
    """

    faces: np.ndarray
    source: np.ndarray
    face_px: np.ndarray
    detector_score: np.ndarray
    lost: int = 0


def texture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth coloured noise: a background with nothing a detector takes for a face."""
    small = rng.integers(30, 230, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return image.filter(ImageFilter.GaussianBlur(4))


def _jpeg(image: Image.Image, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def face_box_of(photo: np.ndarray, box: Sequence[float] | None) -> tuple[float, ...]:
    """``box`` (``x1, y1, x2, y2``) when known and finite, else the face LFW's layout puts in
    the middle of a photo (a square of the shorter side / 2.04)."""
    if box is not None and np.all(np.isfinite(box)) and box[2] > box[0] and box[3] > box[1]:
        return tuple(float(v) for v in box)
    h, w = photo.shape[:2]
    side = min(h, w) / LFW_ENLARGE
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def render_view(
    photo: np.ndarray, box: Sequence[float] | None, rng: np.random.Generator,
    spec: ViewSpec = ViewSpec(), placed: bool = True,
) -> tuple[np.ndarray, tuple[float, float], float]:  # fmt: skip
    """One photo rendered as a real photo shows its face.

    Args:
        photo: RGB uint8 ``(H, W, 3)``.
        box: the face's ``x1, y1, x2, y2`` in ``photo`` (``None``: LFW's centred face).
        placed: paste it off-centre on a larger textured canvas (for detecting pipelines);
            otherwise the photo keeps its frame, scaled and turned about its centre.

    Returns:
        The rendered RGB uint8 photo, the face's centre in it and its drawn width in pixels.
    """
    x1, y1, x2, y2 = face_box_of(photo, box)
    width = int(rng.integers(spec.face_px[0], spec.face_px[1] + 1))
    angle = float(rng.uniform(-spec.angle, spec.angle))
    radius = float(rng.uniform(*spec.blur))
    quality = int(rng.integers(spec.jpeg[0], spec.jpeg[1] + 1))
    # never enlarged: a photo cannot show a face sharper than it holds it
    scale = min(1.0, width / max(x2 - x1, 1.0))
    width = round(scale * (x2 - x1))
    h, w = photo.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR)  # antialiased
    if placed:
        fx, fy = (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
        reach = math.hypot(*size)
        cw = round(reach * rng.uniform(1.2, 2.2))
        ch = round(reach * rng.uniform(1.1, 1.8))
        qx = float(rng.uniform(width, max(width + 1, cw - width)))
        qy = float(rng.uniform(width, max(width + 1, ch - width)))
        background = texture(rng, cw, ch)
    else:  # the photo's own frame: turned about its centre, edges filled with texture
        fx, fy = size[0] / 2, size[1] / 2
        cw, ch, qx, qy = size[0], size[1], fx, fy
        background = texture(rng, cw, ch)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # canvas (u, v) -> source: (fx, fy) + R(-angle) ((u, v) - (qx, qy))
    a, b, d, e = cos, -sin, sin, cos
    matrix = (a, b, fx - a * qx - b * qy, d, e, fy - d * qx - e * qy)
    layer = small.convert("RGBA").transform(
        (cw, ch), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR
    )
    canvas = Image.alpha_composite(background.convert("RGBA"), layer).convert("RGB")
    if radius > 0.05:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius))
    return _jpeg(canvas, quality), (qx, qy), float(width)


def nearest(found: Detections, centre: tuple[float, float], width: float) -> int | None:
    """The detection whose centre is nearest ``centre``, within half the face's ``width``."""
    if len(found) == 0:
        return None
    boxes = found.boxes
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    distance = np.hypot(cx - centre[0], cy - centre[1])
    best = int(np.argmin(distance))
    return best if distance[best] <= 0.5 * width else None


def make_views(
    photos: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None], cutter: FaceCutter,
    seed: int = 0, spec: ViewSpec = ViewSpec(), chunk: int = 16, first_index: int = 0,
) -> Views:  # fmt: skip
    """One view of each photo (:func:`render_view`), cut by ``cutter`` as the model cuts faces.

    Args:
        boxes: each photo's face box (``None`` or NaN: LFW's centred face).
        first_index: the index of ``photos[0]`` in the whole set (the views' seeds use it, so
            a set made in parts equals one made at once).
    """
    size = cutter.size
    faces, source, face_px, scores = [], [], [], []
    lost = 0
    for start in range(0, len(photos), chunk):
        rendered = []
        for i in range(start, min(start + chunk, len(photos))):
            rng = np.random.default_rng([int(seed), first_index + i])
            rendered.append((i, *render_view(photos[i], boxes[i], rng, spec, cutter.detects)))
        if not cutter.detects:
            for i, canvas, _, width in rendered:
                faces.append(as_square(canvas, size, cutter.crop).transpose(2, 0, 1))
                source.append(i)
                face_px.append(width)
                scores.append(1.0)
            continue
        found_all = cutter.detect([canvas for _, canvas, _, _ in rendered])
        for (i, canvas, centre, width), found in zip(rendered, found_all, strict=True):
            k = nearest(found, centre, width)
            if k is None:
                lost += 1
                continue
            one = Detections(found.boxes[k : k + 1], found.scores[k : k + 1],
                             found.landmarks[k : k + 1])  # fmt: skip
            (face,) = cutter.faces_of(canvas, one, every_face=False)
            x1, y1, x2, y2 = face.box
            faces.append(face.pixels.transpose(2, 0, 1))
            source.append(i)
            face_px.append(max(x2 - x1, y2 - y1))
            scores.append(face.score)
    return Views(
        np.stack(faces) if faces else np.zeros((0, 3, size, size), np.uint8),
        np.asarray(source, dtype=np.int64),
        np.asarray(face_px, dtype=np.float32),
        np.asarray(scores, dtype=np.float32),
        lost,
    )
