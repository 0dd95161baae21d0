"""A synthetic dataset: procedural cartoon faces of N identities, a long-tailed number each.

The embedded dataset behind ``facecls demo`` and the tests: nothing is downloaded. Every identity has
fixed traits (face shape, skin, hair colour and style, eyes, brows, nose, mouth, glasses, beard); about
a third of identities are "siblings" of an earlier one that differ in only two trait groups, so some
pairs are easy to confuse. Every image varies pose, yaw, scale, expression, lighting, background,
clothing, noise and blur.

The faces themselves are drawn by :mod:`facecls.data.synthetic_faces`. Random streams are keyed
by (seed, identity, image), so an identity looks the same whatever ``num_classes`` is, and image j
of identity k never depends on others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facecls.data.synthetic_faces import make_identities, render_image


@dataclass(frozen=True)
class SyntheticSpec:
    """What to render: how many identities, how many images each, at what size.

    Attributes:
        num_classes: Number of identities (at least 2).
        max_per_class: Images of identity 0, the most frequent.
        min_per_class: Images of the last identity; counts between follow a power law.
        image_size: Height and width in pixels (at least 16).
        seed: Non-negative seed; the same spec always gives the same images.
    """

    num_classes: int = 20
    max_per_class: int = 60
    min_per_class: int = 8
    image_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        _check_num_classes(self.num_classes)
        if self.min_per_class < 1:
            raise ValueError(f"min_per_class must be at least 1, got {self.min_per_class}")
        if self.max_per_class < self.min_per_class:
            raise ValueError(
                f"max_per_class ({self.max_per_class}) must be at least "
                f"min_per_class ({self.min_per_class})"
            )
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")


def class_counts(spec: SyntheticSpec) -> list[int]:
    """Images per identity: a power law from ``max_per_class`` down to ``min_per_class``.

    Identity i gets ``round(max * (i + 1) ** -alpha)`` with alpha chosen so the last gets exactly
    ``min_per_class``; the list is therefore non-increasing, and most identities sit near the minimum.
    """
    alpha = math.log(spec.max_per_class / spec.min_per_class) / math.log(spec.num_classes)
    counts = [round(spec.max_per_class * (i + 1) ** -alpha) for i in range(spec.num_classes)]
    counts[-1] = spec.min_per_class  # guard against float error in the last power
    return counts


def class_names(num_classes: int) -> list[str]:
    """Names ``person_00``, ``person_01``, ...; zero-padded so sorted order equals index order."""
    _check_num_classes(num_classes)
    width = max(2, len(str(num_classes - 1)))
    return [f"person_{i:0{width}d}" for i in range(num_classes)]


def render_synthetic(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Renders the whole dataset in memory.

    Returns:
        ``images`` uint8 of shape (N, H, W, 3) with H = W = ``image_size``, ``targets`` int64 of
        shape (N,) grouped by identity (identity 0 first), and the class names. Deterministic for a
        given spec.
    """
    counts = class_counts(spec)
    identities = make_identities(spec.num_classes, spec.seed)
    size = spec.image_size
    coords = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    grid_x, grid_y = np.meshgrid(coords, coords)  # (H, W) each, image coordinates in [-1, 1]
    images = np.empty((sum(counts), size, size, 3), dtype=np.uint8)
    targets = np.repeat(np.arange(spec.num_classes, dtype=np.int64), counts)
    index = 0
    for k, (identity, count) in enumerate(zip(identities, counts, strict=True)):
        for j in range(count):
            rng = np.random.default_rng([spec.seed, 1, k, j])
            images[index] = render_image(identity, rng, grid_x, grid_y)
            index += 1
    return images, targets, class_names(spec.num_classes)


def write_synthetic_folder(root: Path, spec: SyntheticSpec, fmt: str = "png") -> Path:
    """Writes the dataset as ``root/<class_name>/<class_name>_NNNN.<fmt>`` (class-per-folder).

    Args:
        root: Folder to create; it may exist only if it is empty.
        spec: What to render.
        fmt: A file extension Pillow can write, such as ``png`` (lossless) or ``jpg``.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists and is not an empty folder; nothing is written.
        ValueError: Pillow cannot write ``fmt``.
    """
    root = Path(root)
    extension = "." + fmt.lower().lstrip(".")
    if extension not in Image.registered_extensions():
        raise ValueError(f"cannot write images with extension {fmt!r}; try 'png' or 'jpg'")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; not writing into it")
    images, targets, names = render_synthetic(spec)
    root.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        (root / name).mkdir()
        for j, image in enumerate(images[targets == k]):
            Image.fromarray(image).save(root / name / f"{name}_{j:04d}{extension}")
    return root
