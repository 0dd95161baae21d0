"""Photos → faces: walk the inputs, read each photo, cut its faces as training did.

The one reader that ``predict``, ``enroll``, ``evaluate --strangers`` and ``export`` share; a
file that cannot be read becomes an ``error`` row instead of stopping the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from facecls.data.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    is_junk,
    load_rgb,
    printable,
)
from facecls.inference.detect import crop_face


@dataclass
class Prediction:
    """The answer for one face.

    Attributes:
        decision: ``known`` (named), ``unknown`` (rejected by the open-set threshold), ``error``
            (the file could not be read) or ``no_face`` (``--detect`` found none).
        identity: the name when known, ``unknown`` when rejected, empty otherwise.
        score: the open-set score (higher = more like a known person); NaN without a face.
        top_k: ``(name, probability)`` pairs, most likely first.
        path: the file, when the input was a file.
        face: index of the face in its photo (``--detect``; largest first), else ``None``.
        faces: faces found in the photo (``--detect``), else ``None``.
        box: ``(x, y, w, h)`` of the detected face in the photo's pixels (``--detect``).
        reason: why there is no answer (``error``/``no_face``).
    """

    decision: str
    identity: str = ""
    score: float = float("nan")
    top_k: list[tuple[str, float]] = field(default_factory=list)
    path: str | None = None
    face: int | None = None
    faces: int | None = None
    box: tuple[int, int, int, int] | None = None
    reason: str = ""


def expand_paths(inputs: Iterable[str | Path], images_only: bool = True) -> Iterator[Path]:
    """Files as given, and the files under folders (recursively, sorted, junk skipped).

    Under folders only image files are yielded, unless ``images_only`` is false: then every
    non-junk file is, so a non-image file is reported (``unsupported file type``) as training
    reports it. A missing path is yielded as it is, so it is reported as an ``error`` row.
    """
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not is_junk(Path(d)))
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if not is_junk(file) and (
                    not images_only or file.suffix.lower() in IMAGE_EXTENSIONS
                ):
                    yield file


class FaceSource(Protocol):
    """What cutting faces needs of a loaded model: its input size, training crop and loader."""

    image_size: int
    crop: float

    def load_face(self, path: Path) -> np.ndarray: ...


@dataclass
class FaceItem:
    """One face to classify (``pixels``), or a finished row (``template`` alone) to pass on."""

    template: Prediction
    pixels: np.ndarray | None = None  # uint8 (3, S, S)


def face_items(
    paths: Iterable[Path], model: FaceSource, detect: Callable[[np.ndarray], list] | None
) -> Iterator[FaceItem]:
    """Each photo as the faces to classify, or as a finished ``error``/``no_face`` row.

    Without ``detect`` a photo is one face, cut as training cut it (``model.load_face``);
    with it every detected face is cut from the photo.
    """
    for path in paths:
        shown = printable(str(path))  # a non-UTF-8 name, escaped for the CSV and the log
        try:
            if detect is None:
                pixels = model.load_face(path)
                yield FaceItem(Prediction("", path=shown), pixels.transpose(2, 0, 1))
                continue
            photo = load_rgb(path)
        except ImageError as error:
            yield FaceItem(Prediction("error", path=shown, reason=str(error)))
            continue
        boxes = detect(photo)
        if not boxes:
            yield FaceItem(Prediction("no_face", path=shown, faces=0, reason="no face found"))
        for i, box in enumerate(boxes):
            face = crop_face(photo, box, model.image_size, crop=model.crop)
            row = Prediction("", path=shown, face=i, faces=len(boxes), box=box.as_tuple())
            yield FaceItem(row, face.transpose(2, 0, 1))
