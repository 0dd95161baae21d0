"""How a loaded model cuts photos into its uint8 inputs: files, arrays, PIL images, tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facecls.data.faces import Face, FaceCutter, as_square
from facecls.data.images import ImageError, load_rgb, rgb_of
from facecls.inference.detect import lfw_faces


def in_memory_photos(images: Sequence[Any] | np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Photos given in memory as RGB uint8 ``(H, W, 3)`` arrays, upright: arrays as they are,
    PIL images as :func:`facecls.data.images.load_rgb` decodes a file (EXIF orientation, RGB),
    a uint8 tensor ``(N, 3, H, W)`` one photo per row.

    Raises:
        ValueError: an array or tensor of another type or shape.
    """
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError("a tensor of photos must be uint8 (N, 3, H, W)")
        return list(np.ascontiguousarray(images.permute(0, 2, 3, 1).cpu().numpy()))
    photos = []
    for item in images:
        rgb = rgb_of(item) if isinstance(item, Image.Image) else np.asarray(item)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            raise ValueError("an image array must be uint8 RGB (H, W, 3)")
        photos.append(rgb)
    return photos


class PhotoInputs:
    """The photo side of :class:`~facecls.inference.model.FaceModel`: every photo is cut
    (centre crop, or the model's detecting pipeline) and resized as training cut its photos."""

    image_size: int
    crop: float
    cutter: FaceCutter

    def to_batch(self, images: Sequence[Any] | np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 ``(N, 3, S, S)`` from face photos: paths, RGB arrays ``(H, W, 3)``, PIL images
        or a uint8 tensor ``(N, 3, H, W)``. Each is cut (``crop``) and resized as training cut
        its photos; images already prepared that way go to :meth:`outputs` directly."""
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
                raise ValueError("a tensor of photos must be uint8 (N, 3, H, W)")
            images = [self.face(x) for x in images.permute(0, 2, 3, 1).numpy()]
        out = np.empty((len(images), 3, self.image_size, self.image_size), dtype=np.uint8)
        for i, item in enumerate(images):
            if isinstance(item, (str, Path)):
                rgb = self.load_face(Path(item))
            elif isinstance(item, Image.Image):
                rgb = self.face(rgb_of(item))
            else:
                rgb = np.asarray(item)
                if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                    raise ValueError("an image array must be uint8 RGB (H, W, 3)")
                rgb = self.face(rgb)
            out[i] = rgb.transpose(2, 0, 1)
        return out

    def load_face(self, path: Path) -> np.ndarray:
        """A photo file's face as the model saw its training images: RGB uint8 ``(S, S, 3)``
        (the main face, for a model trained with a detecting pipeline).

        Raises:
            ImageError: the file cannot be read as an image, or holds no face (the message
                names it).
        """
        if not self.cutter.detects:
            return load_rgb(path, self.image_size, self.crop)
        faces = self.faces_in(load_rgb(path), every_face=False)
        if not faces:
            raise ImageError("no face found", path)
        return faces[0].pixels

    def face(self, rgb: np.ndarray) -> np.ndarray:
        """An in-memory photo (RGB uint8 ``(H, W, 3)``) cut and resized as in training.

        Raises:
            ValueError: a detecting pipeline found no face in it.
        """
        if not self.cutter.detects:
            return as_square(rgb, self.image_size, self.crop)
        faces = self.faces_in(rgb, every_face=False)
        if not faces:
            raise ValueError("no face found in the image")
        return faces[0].pixels

    @property
    def detects(self) -> bool:
        """Whether the model's own face pipeline finds faces (``align``/``box``)."""
        return self.cutter.detects

    def faces_in(self, photo: np.ndarray, every_face: bool = True) -> list[Face]:
        """The faces of an RGB uint8 photo, the main face first (the largest, weighted by closeness to
        the centre), cut as this model needs them:
        with its own pipeline when it detects, else MTCNN boxes cut LFW-style (a ``centre``
        model given group photos)."""
        return self.faces_in_photos([photo], every_face)[0]

    def faces_in_photos(
        self, photos: list[np.ndarray], every_face: bool = True
    ) -> list[list[Face]]:
        """:meth:`faces_in` for several photos, the detector running on them as one batch."""
        if self.cutter.detects:
            return self.cutter.cut(photos, every_face)
        return [
            lfw_faces(photo, found, self.image_size, self.crop, every_face)
            for photo, found in zip(photos, self.cutter.detect(photos), strict=True)
        ]
