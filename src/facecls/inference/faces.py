"""Photos → faces: walk the inputs, read each photo, cut its faces as training did.

The one reader that ``predict``, ``enroll``, ``evaluate --strangers`` and ``export`` share; a
file that cannot be read becomes an ``error`` row instead of stopping the run.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from facecls.data.faces import Face, FaceCutter
from facecls.data.images import IMAGE_EXTENSIONS, ImageError, is_junk, printable
from facecls.data.photo_faces import Cut, FaceReader
from facecls.inference.detect import lfw_faces


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
        face: index of the face in its photo (when faces are detected; main face first).
        faces: faces found in the photo (when faces are detected), else ``None``.
        box: ``(x, y, w, h)`` of the detected face in the photo's pixels.
        landmarks: eyes, nose and mouth corners ``((x, y), ...)`` in the photo's pixels.
        reason: why there is no answer (``error``/``no_face``).
        image: the photo's place among in-memory photos given to ``FaceModel.predict`` (arrays,
            PIL images; ``path`` is then ``None``).
        closest: the identity the model found closest, also when it said ``unknown`` (its best
            guess; :func:`closest_text` shows it).
        threshold: the open-set threshold ``score`` was compared with (``None``: no threshold,
            every face is named).
        detection: the detector's face probability of a detected face.
    """

    decision: str
    identity: str = ""
    score: float = float("nan")
    top_k: list[tuple[str, float]] = field(default_factory=list)
    path: str | None = None
    face: int | None = None
    faces: int | None = None
    box: tuple[int, int, int, int] | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None
    reason: str = ""
    image: int | None = None
    closest: str = ""
    threshold: float | None = None
    detection: float | None = None

    def label(self, dash: str = "—") -> str:
        """What a person reads beside the face: the name, or ``unknown`` with the best guess
        (``unknown — closest: Tony_Blair 0.95 < 0.956``; ``dash`` for a font without one)."""
        if self.decision != "unknown":
            return self.identity
        guess = closest_text(self)
        return f"unknown {dash} closest: {guess}" if guess else "unknown"


def closest_text(prediction: Prediction) -> str:
    """A rejected face's best guess with the decision's score and threshold
    (``Tony_Blair 0.95 < 0.956``); empty for any other row.

    Both numbers get the fewest decimals (two at least) that keep them apart, so the text never
    reads ``0.96 < 0.96``.
    """
    p = prediction
    if p.decision != "unknown" or not p.closest:
        return ""
    if p.threshold is None or not np.isfinite(p.score) or not np.isfinite(p.threshold):
        return f"{p.closest} {p.score:.2f}" if np.isfinite(p.score) else p.closest
    for digits in range(2, 18):  # 17 decimals part any two different doubles of such size
        score, limit = f"{p.score:.{digits}f}", f"{p.threshold:.{digits}f}"
        if float(score) < float(limit):
            break
    return f"{p.closest} {score} < {limit}"


def check_top_k(top_k: int) -> None:
    """Refuse a ``--top-k`` below 1 (``search --top-k 0`` listed nothing,
    ``-3`` two faces).

    Raises:
        ValueError: naming the option.
    """
    try:
        whole = operator.index(top_k)  # int, numpy integers; not 2.5, "3" or True
    except TypeError:
        whole = None
    if whole is None or isinstance(top_k, bool) or whole < 1:
        raise ValueError(f"--top-k must be a whole number of at least 1, got {top_k!r}")


def expand_paths(
    inputs: Iterable[str | Path], images_only: bool = True, exclude: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Files as given, and the files under folders (recursively, sorted, junk skipped).

    Under folders only image files are yielded, unless ``images_only`` is false: then every
    non-junk file is, so a non-image file is reported (``unsupported file type``) as training
    reports it. A missing path is yielded as it is, so it is reported as an ``error`` row.
    ``exclude``: the command's own outputs (files, folders), never read back from a folder.
    """
    skip = {Path(p).resolve() for p in exclude}
    skip_names = {p.name for p in skip}
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(
                d for d in dirnames
                if not is_junk(Path(d)) and not (d in skip_names and _within(dirpath, d, skip))
            )  # fmt: skip
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if is_junk(file) or (name in skip_names and file.resolve() in skip):
                    continue
                if not images_only or file.suffix.lower() in IMAGE_EXTENSIONS:
                    yield file


def _within(dirpath: str, name: str, skip: set[Path]) -> bool:
    return (Path(dirpath) / name).resolve() in skip


class FaceSource(Protocol):
    """What cutting faces needs of a loaded model: its input size, training crop, face
    pipeline and loader."""

    image_size: int
    crop: float
    cutter: FaceCutter

    def load_face(self, path: Path) -> np.ndarray: ...

    def face(self, rgb: np.ndarray) -> np.ndarray: ...

    def faces_in(self, photo: np.ndarray, every_face: bool = True) -> list[Face]: ...

    def faces_in_photos(
        self, photos: list[np.ndarray], every_face: bool = True
    ) -> list[list[Face]]: ...


@dataclass
class FaceItem:
    """One face to classify (``pixels``), or a finished row (``template`` alone) to pass on."""

    template: Prediction
    pixels: np.ndarray | None = None  # uint8 (3, S, S)


# Photos read and searched for faces together: decoding runs in a thread pool (Pillow releases
# the GIL) and the detector takes the chunk as one batch (same-size photos share its passes).
CHUNK = 8


def _read(path: Path, model: FaceSource) -> np.ndarray | ImageError:
    """The one face of a photo cut as training cut it; the error when unreadable."""
    try:
        return model.load_face(path)
    except ImageError as error:
        return error


def model_cut(model: FaceSource) -> Cut:
    """How a model cuts a photo's detected faces (every face, main face first): its own
    pipeline, or MTCNN boxes cut LFW-style for a ``centre`` model."""
    if model.cutter.detects:
        cutter = model.cutter
        return lambda photo, found: cutter.faces_of(photo, found, every_face=True)
    return lambda photo, found: lfw_faces(photo, found, model.image_size, model.crop, True)


def face_items(
    paths: Iterable[Path], model: FaceSource, detect: bool, chunk: int = CHUNK
) -> Iterator[FaceItem]:
    """Each photo as the faces to classify, or as a finished ``error``/``no_face`` row, in the
    order of ``paths`` (streamed ``chunk`` photos at a time).

    Without ``detect`` a photo is one face, cut as training cut it (``model.load_face``);
    with it every face found in the photo is cut (:class:`facecls.data.photo_faces.FaceReader`
    with the model's pipeline, :func:`model_cut`), main face first.
    """
    workers = max(1, min(4, os.cpu_count() or 1))
    if detect:  # the shared reader: read once, detect on a reduced copy, cut at full detail
        for photo in face_reader(model).read(paths):
            shown = printable(str(photo.path))  # a non-UTF-8 name, escaped for the CSV and log
            if photo.error is not None:
                yield FaceItem(Prediction("error", path=shown, reason=photo.error))
            else:
                yield from _detected(photo.faces, path=shown)
        return
    with ThreadPoolExecutor(workers) as pool:
        for part in _chunks(paths, chunk):
            read = list(pool.map(lambda p: _read(p, model), part))
            for path, item in zip(part, read, strict=True):
                shown = printable(str(path))  # a non-UTF-8 name, escaped for the CSV and log
                if isinstance(item, ImageError):
                    yield FaceItem(Prediction("error", path=shown, reason=str(item)))
                else:
                    yield FaceItem(Prediction("", path=shown), item.transpose(2, 0, 1))


def face_reader(model: FaceSource) -> FaceReader:
    """The shared photo -> faces reader cutting as ``model`` does (:func:`model_cut`)."""
    # Photos in parallel, each on the PyTorch threads left: cores are not oversubscribed.
    searchers = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
    return FaceReader(model_cut(model), model.image_size, model.cutter.detector(),
                      min_face=None, workers=searchers)  # fmt: skip


def photo_items(
    photos: Iterable[np.ndarray], model: FaceSource, detect: bool
) -> Iterator[FaceItem]:
    """:func:`face_items` for photos in memory (RGB uint8 ``(H, W, 3)``, upright): each photo's
    faces with their boxes and landmarks (or one ``no_face`` row) through the same reader, or,
    without ``detect``, the photo as one face cut as training cut it. Rows carry ``image``, the
    photo's place in ``photos``."""
    if detect:
        for i, photo in enumerate(face_reader(model).read_arrays(photos)):
            yield from _detected(photo.faces, image=i)
        return
    for i, rgb in enumerate(photos):
        yield FaceItem(Prediction("", image=i), model.face(rgb).transpose(2, 0, 1))


def main_faces(items: Iterable[FaceItem]) -> Iterator[FaceItem]:
    """Of each photo's items, its main face (face 0, or its only face) or its
    ``error``/``no_face`` row: one item per photo."""
    for item in items:
        if not item.template.face:  # None (one face per photo, an error row) or 0
            yield item


def _chunks(paths: Iterable[Path], size: int) -> Iterator[list[Path]]:
    part: list[Path] = []
    for path in paths:
        part.append(path)
        if len(part) == size:
            yield part
            part = []
    if part:
        yield part


def _detected(faces: list[Face], **where: Any) -> Iterator[FaceItem]:
    """A row per face of one photo, or one ``no_face`` row; ``where``: its ``path`` or
    ``image``."""
    if not faces:
        yield FaceItem(Prediction("no_face", faces=0, reason="no face found", **where))
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = face.box
        box = (round(x1), round(y1), round(x2 - x1), round(y2 - y1))
        points = None
        if face.landmarks is not None:
            points = tuple((round(float(x), 1), round(float(y), 1)) for x, y in face.landmarks)
        row = Prediction("", face=i, faces=len(faces), box=box, landmarks=points,
                         detection=round(float(face.score), 6), **where)  # fmt: skip
        yield FaceItem(row, face.pixels.transpose(2, 0, 1))
