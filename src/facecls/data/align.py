"""Face crops from detections: 5-point similarity alignment and the plain box-with-margin crop.

Point coordinates follow OpenCV and insightface: ``x, y`` in pixels with pixel centres on whole
numbers, so the template below is used as published. Pillow's transforms put centres at ``+0.5``;
:func:`align_face` converts.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# ArcFace / insightface 112 x 112 template: left eye, right eye, nose, left and right mouth corner.
TEMPLATE_112: np.ndarray = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) src -> dst.

    Umeyama 1991 closed form. ``src`` and ``dst`` are ``(n, 2)`` corresponding points, n >= 2.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (n, 2) point arrays, n >= 2; got {src.shape}, {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    cov = dst_c.T @ src_c / len(src)  # (2, 2)
    u, sigma, vt = np.linalg.svd(cov)
    # A reflection would fit better for mirrored point sets; force det(R) = +1 instead.
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum(1).mean()
    scale = (sigma * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_dst - scale * rotation @ mu_src
    return matrix


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    return Image.fromarray(image)


def align_face(
    image: np.ndarray, landmarks: np.ndarray, size: int, scale: float = 1.0
) -> np.ndarray:
    """Warp a face so its five landmarks land on :data:`TEMPLATE_112` scaled to ``size``.

    Args:
        image: RGB uint8 ``(H, W, 3)`` photo.
        landmarks: ``(5, 2)`` points in the order of :class:`facecls.data.mtcnn.Detections`.
        size: output side in pixels; the template is scaled by ``size / 112``.
        scale: zoom of the face inside the output, about the output's centre. 1.0 is the ArcFace
            framing (eyes to chin); 0.8 shrinks the face to 80 % so more hair, ears and
            background show. Parts of the output beyond the photo are black.

    Returns:
        ``(size, size, 3)`` uint8 aligned face, bilinear sampling.
    """
    pil = _to_pil(image)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    centre = size / 2 - 0.5  # centre of the output in pixel-centre coordinates
    target = (TEMPLATE_112 * (size / 112) - centre) * scale + centre
    matrix = similarity_transform(points, target)  # photo -> output
    zoom = math.hypot(*matrix[:, 0])
    # Bilinear warping aliases when shrinking by more than 2x: box-filter the photo down first.
    reduce = int(1 / zoom) if zoom < 0.5 else 1
    if reduce > 1:
        pil = pil.reduce(reduce)
        points = (points + 0.5) / reduce - 0.5
        matrix = similarity_transform(points, target)
    # Pillow wants output -> input with pixel centres at +0.5: x_in = A (x_out - 0.5) + t + 0.5.
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    linear, shift = inverse[:, :2], inverse[:, 2]
    shift = shift + 0.5 - linear @ np.array([0.5, 0.5])
    coeffs = (*linear[0], shift[0], *linear[1], shift[1])
    out = pil.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(out)


def box_crop(image: np.ndarray, box: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    """FaceNet-style crop: the detection box plus a margin, resized to ``size x size``.

    Matches facenet-pytorch's ``extract_face`` (the framing its CASIA-WebFace FaceNet weights
    expect with their MTCNN): ``margin`` is in *output* pixels, so the box fills
    ``size - margin`` of the output and ``margin / 2`` px of context surround it on each side. The
    box is not made square, so a tall box is squeezed as in facenet-pytorch. One difference: where
    the enlarged box reaches past the photo, facenet-pytorch clips it (shifting and stretching
    the face); here the missing part is black so the framing stays the same.

    Args:
        image: RGB uint8 ``(H, W, 3)`` photo.
        box: ``x1, y1, x2, y2`` in pixels (an MTCNN box).
        size: output side in pixels.
        margin: context in output pixels, ``0 <= margin < size``.

    Returns:
        ``(size, size, 3)`` uint8 crop (bilinear, antialiased when shrinking).
    """
    if not 0 <= margin < size:
        raise ValueError(f"margin must be in [0, size), got {margin} for size {size}")
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    grow_x = margin * (x2 - x1) / (size - margin) / 2
    grow_y = margin * (y2 - y1) / (size - margin) / 2
    corners = [round(x1 - grow_x), round(y1 - grow_y), round(x2 + grow_x), round(y2 + grow_y)]
    corners[2], corners[3] = max(corners[2], corners[0] + 1), max(corners[3], corners[1] + 1)
    # Image.crop fills whatever lies outside the photo with zeros.
    crop = _to_pil(image).crop(tuple(corners))
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))


# Tilts below this many degrees are cut as they are: a resampling costs sharpness, and the
# CASIA-WebFace faces FaceNet was trained on lean this much too.
UPRIGHT_FROM = 10.0


def eye_angle(points: np.ndarray) -> float:
    """Degrees the line from the left to the right eye (landmarks 0 and 1, ``x, y`` in image
    pixels, y down) turns clockwise from horizontal: 0 for an upright face."""
    (lx, ly), (rx, ry) = np.asarray(points, dtype=np.float64)[:2]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def upright_box_crop(
    image: np.ndarray, box: np.ndarray, size: int, margin: float, angle: float
) -> np.ndarray:
    """:func:`box_crop` of a face turned upright: the box plus margin is cut along the eye line
    (``angle``, :func:`eye_angle`), so a head tilted in the photo comes out level, framed as
    the untilted box would frame it. Tilts under :data:`UPRIGHT_FROM` degrees use
    :func:`box_crop` unchanged."""
    if abs(angle) < UPRIGHT_FROM:
        return box_crop(image, box, size, margin)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    width = (x2 - x1) * size / (size - margin)  # the box plus margin, as box_crop frames it
    height = (y2 - y1) * size / (size - margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    pil = _to_pil(image)
    # Shrink large faces first (box filter), so the rotation below never samples sparsely.
    factor = max(1, int(max(width, height) / size / 1.5))
    if factor > 1:
        reach = int(max(width, height))  # covers the rotated box
        left, top = int(cx) - reach, int(cy) - reach
        pil = pil.crop((left, top, left + 2 * reach, top + 2 * reach)).reduce(factor)
        cx, cy = (cx - left) / factor, (cy - top) / factor
        width, height = width / factor, height / factor
    sx, sy = width / size, height / size
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # output (u, v) -> source: the point of the unrotated box turned by ``angle`` about its centre
    a, b, d, e = cos * sx, -sin * sy, sin * sx, cos * sy
    c = cx + cos * (-width / 2) - sin * (-height / 2)
    f = cy + sin * (-width / 2) + cos * (-height / 2)
    out = pil.transform(
        (size, size), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR
    )
    return np.asarray(out)
