"""Cartoon faces: an identity's fixed traits, and one photo of it drawn with signed distances.

Shapes are drawn as approximate signed distance fields (SDFs) on a numpy grid, so edges are
anti-aliased without supersampling. Coordinates are normalised: the image spans [-1, 1] on both
axes, y points down, and a face is about 0.8 wide.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from numpy.random import Generator
from numpy.typing import ArrayLike
from PIL import Image, ImageFilter

_SIBLING_FRACTION = 0.35
# Trait groups a sibling re-draws (two of them); the rest it copies from its parent.
_TRAIT_GROUPS = (
    ("face_w", "face_h", "chin", "ear_r"),
    ("skin",),
    ("hair",),
    ("hair_volume", "fringe_y", "fringe_slope", "fringe_wave", "side_bottom", "long_hair", "bald"),
    ("eye_dx", "eye_y", "eye_r", "iris"),
    ("brow_len", "brow_thick", "brow_angle", "brow_gap"),
    ("nose_len", "nose_w", "mouth_w", "mouth_y", "lip"),
    ("glasses", "glasses_power", "frame", "beard", "moustache"),
)
_SKIN_LIGHT, _SKIN_DARK = np.array([0.96, 0.80, 0.69]), np.array([0.33, 0.20, 0.13])
_HAIR = np.array(
    [[0.08, 0.07, 0.07], [0.25, 0.15, 0.08], [0.47, 0.31, 0.16], [0.86, 0.72, 0.42],
     [0.72, 0.33, 0.12], [0.58, 0.58, 0.58], [0.92, 0.91, 0.88], [0.25, 0.35, 0.80]]
)  # fmt: skip
_HAIR_P = np.array([0.22, 0.22, 0.16, 0.12, 0.09, 0.08, 0.05, 0.06])
_IRIS = np.array([[0.35, 0.20, 0.08], [0.20, 0.45, 0.75], [0.25, 0.55, 0.30], [0.50, 0.52, 0.55]])


@dataclass(frozen=True)
class Identity:
    """Fixed traits of one person, in normalised image units (a face is about 0.8 wide)."""

    face_w: float
    face_h: float
    chin: float
    ear_r: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_volume: float
    fringe_y: float
    fringe_slope: float
    fringe_wave: float
    side_bottom: float
    long_hair: float
    bald: bool
    eye_dx: float
    eye_y: float
    eye_r: float
    iris: tuple[float, float, float]
    brow_len: float
    brow_thick: float
    brow_angle: float
    brow_gap: float
    nose_len: float
    nose_w: float
    mouth_w: float
    mouth_y: float
    lip: tuple[float, float, float]
    glasses: bool
    glasses_power: float
    frame: tuple[float, float, float]
    beard: bool
    moustache: bool


def make_identities(num_classes: int, seed: int) -> list[Identity]:
    """The traits of identities ``0 .. num_classes - 1``; about a third are siblings of an earlier
    one (two trait groups re-drawn). Identity k depends only on ``seed`` and the ones before it."""
    identities: list[Identity] = []
    for k in range(num_classes):
        rng = np.random.default_rng([seed, 0, k])
        fresh = _draw_identity(rng)
        if k > 0 and rng.random() < _SIBLING_FRACTION:
            parent = identities[int(rng.integers(k))]
            redrawn = rng.choice(len(_TRAIT_GROUPS), size=2, replace=False)
            fields = [name for g in redrawn for name in _TRAIT_GROUPS[g]]
            fresh = dataclasses.replace(parent, **{f: getattr(fresh, f) for f in fields})
        identities.append(fresh)
    return identities


def _colour(values: np.ndarray) -> tuple[float, float, float]:
    r, g, b = np.clip(values, 0.0, 1.0).tolist()
    return (r, g, b)


def _draw_identity(rng: Generator) -> Identity:
    u = rng.uniform
    skin = _SKIN_LIGHT + u(0, 1) * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 0.025, 3)
    hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)] * u(0.85, 1.15) + rng.normal(0, 0.03, 3)
    face_w, face_h = u(0.33, 0.45), u(0.44, 0.58)
    bald = u() < 0.1
    lip = 0.6 * skin + 0.4 * np.array([0.75, 0.25, 0.28]) + rng.normal(0, 0.03, 3)
    return Identity(
        face_w=face_w, face_h=face_h, chin=u(0.0, 0.35), ear_r=u(0.07, 0.12),
        skin=_colour(skin), hair=_colour(hair), hair_volume=u(1.02, 1.25),
        fringe_y=u(-0.8, -0.25) * face_h, fringe_slope=u(-0.45, 0.45), fringe_wave=u(0.0, 0.04),
        side_bottom=u(-0.2, 0.5) * face_h, long_hair=u(0.0, 1.0) if u() < 0.4 else 0.0, bald=bald,
        eye_dx=u(0.28, 0.45) * face_w, eye_y=u(-0.2, 0.05) * face_h, eye_r=u(0.055, 0.09),
        iris=_colour(_IRIS[rng.integers(len(_IRIS))] + rng.normal(0, 0.04, 3)),
        brow_len=u(0.06, 0.11), brow_thick=u(0.012, 0.035), brow_angle=u(-0.35, 0.35),
        brow_gap=u(0.07, 0.12), nose_len=u(0.07, 0.16), nose_w=u(0.035, 0.07),
        mouth_w=u(0.1, 0.2), mouth_y=u(0.45, 0.62) * face_h, lip=_colour(lip),
        glasses=u() < 0.25, glasses_power=float(rng.choice([2.0, 4.0])),
        frame=_colour(rng.uniform(0.0, 0.6, 3)), beard=u() < 0.2, moustache=u() < 0.2,
    )  # fmt: skip


# --- signed distance fields: negative inside, roughly in normalised image units ---


def _ellipse(x: np.ndarray, y: np.ndarray, a: float, b: float, power: float = 2.0) -> np.ndarray:
    """Approximate SDF of an axis-aligned (super)ellipse with half-axes a, b centred at the origin."""
    if power == 2.0:
        f = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    else:
        f = (np.abs(x / a) ** power + np.abs(y / b) ** power) ** (1.0 / power)
    # (f - 1) * min(a, b) alone underestimates distance along the long axis, which smears thin
    # ellipses (closed eyes) sideways; the distance to the bounding box is a lower bound that fixes it.
    return np.maximum((f - 1.0) * min(a, b), np.maximum(np.abs(x) - a, np.abs(y) - b))


def _rotated(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return c * x + s * y, -s * x + c * y


def _paint(
    canvas: np.ndarray, sdf: np.ndarray, colour: ArrayLike, px: float, alpha: float = 1.0
) -> None:
    """Blends ``colour`` into ``canvas`` (H, W, 3) where ``sdf`` < 0, with a one-pixel soft edge."""
    cover = np.clip(0.5 - sdf / px, 0.0, 1.0)
    if alpha != 1.0:
        cover *= alpha
    canvas += cover[..., None] * (np.asarray(colour, dtype=np.float32) - canvas)


def render_image(
    ident: Identity, rng: Generator, grid_x: np.ndarray, grid_y: np.ndarray
) -> np.ndarray:
    """One photo of ``ident``: a uint8 (H, W, 3) array."""
    size = grid_x.shape[0]
    canvas = _background(rng, grid_x, grid_y, px=2.0 / size)
    angle = math.radians(rng.uniform(-15, 15))
    scale = rng.uniform(0.88, 1.12)
    shift_x, shift_y = rng.uniform(-0.1, 0.1), rng.uniform(-0.06, 0.1)
    # Face coordinates: undo translation, rotation and scale, so features are drawn upright.
    x, y = _rotated(grid_x - shift_x, grid_y - shift_y, angle)
    x, y = x / scale, y / scale
    px = 2.0 / (size * scale)
    yaw = rng.uniform(-1.0, 1.0) * 0.06 * ident.face_w / 0.4  # sideways shift of inner features
    _draw_head(canvas, ident, rng, x, y, px, yaw)
    _draw_features(canvas, ident, rng, x - yaw, y, px, yaw)
    return _finish(canvas, rng, grid_x, grid_y)


def _background(rng: Generator, gx: np.ndarray, gy: np.ndarray, px: float) -> np.ndarray:
    first, second = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    direction = rng.uniform(0, 2 * math.pi)
    mix = np.clip(0.5 + 0.5 * (gx * math.cos(direction) + gy * math.sin(direction)), 0, 1)
    canvas = (first + mix[..., None] * (second - first)).astype(np.float32)
    for _ in range(int(rng.integers(0, 5))):
        cx, cy = rng.uniform(-1, 1, 2)
        a, b = rng.uniform(0.08, 0.45, 2)
        power = 2.0 if rng.random() < 0.5 else 8.0  # disc or rounded box
        sdf = _ellipse(*_rotated(gx - cx, gy - cy, rng.uniform(0, math.pi)), a, b, power)
        _paint(canvas, sdf, rng.uniform(0, 1, 3), px, alpha=rng.uniform(0.4, 1.0))
    return canvas


def _jitter(rng: Generator, colour: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour) * (1 + rng.normal(0, amount, 3)), 0, 1)


def _draw_head(
    canvas: np.ndarray,
    ident: Identity,
    rng: Generator,
    x: np.ndarray,
    y: np.ndarray,
    px: float,
    yaw: float,
) -> None:
    """Long hair, neck, clothes, ears, face, beard and hair cap, back to front."""
    w, h = ident.face_w, ident.face_h
    skin, hair = _jitter(rng, ident.skin, 0.04), _jitter(rng, ident.hair, 0.06)
    hair_y = y + 0.15 * h  # the hair ellipse sits a little above the face centre
    hair_sdf = _ellipse(x + 0.3 * yaw, hair_y, w * ident.hair_volume, h * ident.hair_volume)
    if ident.long_hair > 0 and not ident.bald:
        bottom = h * (0.2 + 1.2 * ident.long_hair)
        back = np.minimum(hair_sdf, _ellipse(x, y - 0.4 * bottom, w * ident.hair_volume, bottom))
        _paint(canvas, np.maximum(back, y - bottom), hair * 0.85, px)
    _paint(canvas, np.maximum(np.abs(x) - 0.4 * w, np.abs(y - 1.1 * h) - 0.3 * h), skin * 0.85, px)
    _paint(canvas, _ellipse(x, y - 1.55 * h, 2.0 * w, 0.7 * h), rng.uniform(0.05, 0.95, 3), px)
    if ident.bald:  # a fringe of hair around the back of the head, showing at the sides
        tufts = np.maximum(hair_sdf, np.abs(y + 0.05 * h) - 0.25 * h)
        _paint(canvas, tufts, hair, px)
    ear_y = y - ident.eye_y - 0.04
    for side in (-1.0, 1.0):
        ear_x = x - side * (w * 0.97 - 0.5 * side * yaw)
        _paint(canvas, _ellipse(ear_x, ear_y, 0.55 * ident.ear_r, ident.ear_r), skin * 0.92, px)
    # The chin taper narrows the lower half of the face ellipse.
    taper = 1.0 - ident.chin * np.clip(y / h, 0.0, 1.0)
    face_sdf = _ellipse(x / taper, y, w, h)
    _paint(canvas, face_sdf, skin, px)
    if ident.beard:
        beard = np.maximum(face_sdf - 0.01, ident.mouth_y - 0.03 * h - y)
        _paint(canvas, beard, hair * 0.9, px, alpha=0.85)
    if ident.bald:
        return
    fringe = ident.fringe_y + ident.fringe_slope * x + ident.fringe_wave * np.sin(40 * x)
    sides = np.maximum(w * 0.78 - np.abs(x - yaw), y - ident.side_bottom)
    _paint(canvas, np.maximum(hair_sdf, np.minimum(y - fringe, sides)), hair, px)


def _draw_features(
    canvas: np.ndarray,
    ident: Identity,
    rng: Generator,
    x: np.ndarray,
    y: np.ndarray,
    px: float,
    yaw: float,
) -> None:
    """Eyes, brows, nose, mouth and glasses; ``x`` is already shifted by the yaw."""
    skin, hair = np.asarray(ident.skin), np.asarray(ident.hair)
    openness = 0.1 if rng.random() < 0.07 else rng.uniform(0.55, 1.1)
    gaze_x, gaze_y = rng.uniform(-0.35, 0.35) * ident.eye_r, rng.uniform(-0.2, 0.2) * ident.eye_r
    brow_raise = rng.uniform(-0.01, 0.025)
    for side in (-1.0, 1.0):
        # The eye nearer the camera looks a little larger when the head turns.
        r = ident.eye_r * (1.0 + side * yaw * 2.0)
        ex, ey = x - side * ident.eye_dx, y - ident.eye_y
        sclera = _ellipse(ex, ey, r, r * 0.62 * openness)
        _paint(canvas, sclera, (0.95, 0.95, 0.93), px)
        iris = np.maximum(sclera, _ellipse(ex - gaze_x, ey - gaze_y, 0.5 * r, 0.5 * r))
        _paint(canvas, iris, ident.iris, px)
        _paint(canvas, np.maximum(sclera, np.hypot(ex - gaze_x, ey - gaze_y) - 0.22 * r), 0.05, px)
        bx, by = _rotated(ex, ey + ident.brow_gap + brow_raise, side * ident.brow_angle)
        _paint(canvas, _ellipse(bx, by, ident.brow_len, ident.brow_thick), hair * 0.8, px)
    nx, ny = x - 0.5 * yaw, y - ident.eye_y - 0.05 - 0.5 * ident.nose_len
    _paint(canvas, _ellipse(nx, ny, ident.nose_w, ident.nose_len), skin * 0.8, px, alpha=0.55)
    for side in (-1.0, 1.0):
        nostril = _ellipse(nx - side * 0.5 * ident.nose_w, ny - 0.8 * ident.nose_len, 0.018, 0.011)
        _paint(canvas, nostril, skin * 0.45, px, alpha=0.8)
    _draw_mouth(canvas, ident, rng, x, y, px)
    if ident.glasses:
        _draw_glasses(canvas, ident, x, y, px)


def _draw_mouth(
    canvas: np.ndarray, ident: Identity, rng: Generator, x: np.ndarray, y: np.ndarray, px: float
) -> None:
    half = ident.mouth_w * rng.uniform(0.85, 1.15)
    smile = rng.uniform(-0.025, 0.06)  # positive lifts the corners (y points down)
    t = np.clip(x / half, -1.0, 1.0)
    curve = y - ident.mouth_y + smile * t**2
    if rng.random() < 0.3:
        opening = rng.uniform(0.015, 0.045)
        _paint(
            canvas, _ellipse(x, curve - 0.3 * opening, 0.7 * half, opening), (0.25, 0.05, 0.07), px
        )
    if ident.moustache:
        stache = _ellipse(x, y - ident.mouth_y + 0.045 + 0.5 * smile, 0.8 * half, 0.022)
        _paint(canvas, stache, np.asarray(ident.hair) * 0.8, px)
    thickness = 0.018 * (1.0 - 0.6 * t**2)
    _paint(canvas, np.maximum(np.abs(curve) - thickness, np.abs(x) - half), ident.lip, px)


def _draw_glasses(
    canvas: np.ndarray, ident: Identity, x: np.ndarray, y: np.ndarray, px: float
) -> None:
    half_w, half_h = ident.eye_r * 1.5, ident.eye_r * 1.15
    lenses = []
    for side in (-1.0, 1.0):
        lens = _ellipse(
            x - side * ident.eye_dx, y - ident.eye_y, half_w, half_h, ident.glasses_power
        )
        lenses.append(lens)
        _paint(canvas, lens, (0.7, 0.8, 0.85), px, alpha=0.18)  # slightly tinted glass
        _paint(canvas, np.abs(lens) - 0.008, ident.frame, px)
    gap = max(ident.eye_dx - half_w, 0.01)
    bridge = np.maximum(np.abs(x) - gap - 0.01, np.abs(y - ident.eye_y + 0.3 * half_h) - 0.007)
    _paint(canvas, bridge, ident.frame, px)


def _finish(canvas: np.ndarray, rng: Generator, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Lighting gradient, colour cast, contrast, sensor noise and a slight blur; returns uint8."""
    direction = rng.uniform(0, 2 * math.pi)
    gradient = rng.uniform(0.0, 0.35) * (gx * math.cos(direction) + gy * math.sin(direction))
    canvas *= (rng.uniform(0.7, 1.2) * (1.0 + gradient))[..., None]
    canvas *= (1.0 + rng.normal(0, 0.05, 3)).astype(np.float32)
    mean = canvas.mean()
    canvas = (canvas - mean) * rng.uniform(0.75, 1.15) + mean
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(0.005, 0.03)
    image = Image.fromarray((np.clip(canvas, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))
    radius = rng.uniform(0.0, 0.8) * canvas.shape[0] / 64
    if radius > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image)
