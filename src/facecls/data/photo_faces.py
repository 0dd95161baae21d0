"""Photos -> faces, fast: the one reader for the face library's index, ``predict``, ``embed``,
``search`` and the Python API (``FaceModel.predict``/``embed``).

A 12-megapixel phone photo costs more to decode than to search for faces once it is small, so
each file is read once (its bytes, their sha256) and decoded at a reduced size for the detector
(:func:`facecls.data.images.decode_reduced`: libjpeg's draft mode decodes a JPEG straight at 1/2,
1/4 or 1/8). MTCNN searches each small copy (a photo's faces never depend on the photos read
with it); each face is then cut at the resolution it needs from the same bytes: a small face
from the full photo, a big one from a reduced decode (never smaller than the model's input), so
nothing is lost against detecting and cutting at full size. Each worker thread takes a photo
from its bytes to its faces (Pillow, libjpeg and PyTorch release the GIL), optionally to their
embeddings too.

Photos already in memory (the Python API's arrays and PIL images) take the same way from the
reduced copy on (:meth:`FaceReader.read_arrays`), so they give the faces their files give.

Boxes and landmarks come back in full-resolution pixels of the upright photo (EXIF orientation
applied). A file that cannot be read, or that changes while it is read, comes back with an
``error`` and no faces, in its place: one bad file never stops a run.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facecls.data.faces import Face, main_first, merge_overlaps
from facecls.data.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    decode_reduced,
    decode_reduced_image,
    file_problem,
)
from facecls.data.mtcnn import MTCNN, Detections

Cut = Callable[[np.ndarray, Detections], list[Face]]  # photo + its detections -> faces


@dataclass
class ReadPhoto:
    """One photo file as read: its stamp, content digest, size and faces, or its error.

    Attributes:
        path: the file.
        size, mtime_ns: the file's size and modification time when it was read.
        sha256: hex digest of the bytes read.
        width, height: the upright photo's full size in pixels.
        faces: main face first; boxes and landmarks in full-resolution pixels.
        error: why the file could not be used (then nothing else but the stamp is set).
        known: ``skip`` said the content is known already: neither decoded nor searched.
        embeddings: ``(len(faces), D)`` from the reader's ``embed``, when it has one.
    """

    path: Path
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""
    width: int = 0
    height: int = 0
    faces: list[Face] = field(default_factory=list)
    error: str | None = None
    known: bool = False
    embeddings: np.ndarray | None = None


@dataclass
class _Loaded:
    photo: ReadPhoto
    data: bytes = b""
    copy: np.ndarray | None = None  # the detector's reduced copy
    reduction: int = 1
    pixels: np.ndarray | None = None  # an in-memory photo, whole (``read_arrays``)


def _power_of_two_at_most(value: float) -> int:
    power = 1
    while power * 2 <= value and power < 8:  # libjpeg's draft stops at 1/8
        power *= 2
    return power


class FaceReader:
    """Reads photo files into their faces (see the module notes).

    Args:
        cut: cuts the faces of a photo from its detections (a pipeline's
            ``FaceCutter.faces_of``, or a model's ``cut_detected``).
        face_px: side of the faces ``cut`` makes; a face is cut from a decode where it is at
            least this big (or from the full photo).
        detector: the MTCNN to run (its ``min_face_size`` is set per photo here).
        min_face: smallest face to find, in full-resolution pixels; ``None`` keeps the
            detector's own ``min_face_size`` in a copy of at most ``max_side`` pixels (what
            ``predict`` always did).
        detect_px: the size ``min_face`` has in the detector's copy: 12 is MTCNN's window, so a
            smaller value makes it upsample; a bigger one decodes a bigger copy.
        max_side: longest side of the detector's copy.
        workers: threads, each taking a photo from its bytes to its faces (and embeddings):
            with one PyTorch thread each they use the cores better than one photo at a time
            on several threads (small convolutions scale poorly, worst on a busy machine).
        embed: uint8 faces ``(N, 3, S, S)`` -> embeddings ``(N, D)``, run in the workers.
    """

    def __init__(
        self, cut: Cut, face_px: int, detector: MTCNN, min_face: int | None = 40,
        detect_px: float = 12.0, max_side: int = 1600, workers: int = 2,
        embed: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:  # fmt: skip
        self.cut, self.face_px, self.embed = cut, face_px, embed
        self.min_face, self.detect_px, self.max_side = min_face, detect_px, max_side
        self.workers = max(1, workers)
        self._detector, self._local = detector, threading.local()

    def detector(self) -> MTCNN:
        """This thread's MTCNN: a copy sharing the caller's nets, sized per photo here (the
        caller's own stays as it is)."""
        mine = getattr(self._local, "detector", None)
        if mine is None:
            self._detector.nets()  # load once, before the copies share them
            mine = copy.copy(self._detector)
            mine.max_side = 1 << 20  # the copies are sized by reduction()
            self._local.detector = mine
        return mine

    def reduction(self, width: int, height: int) -> int:
        """How much the detector's copy of a ``width`` x ``height`` photo is shrunk."""
        longest = max(width, height)
        floor = _power_of_two_at_most(max(1.0, -(-longest // self.max_side)))
        while longest / floor > self.max_side and floor < 8:
            floor *= 2
        if self.min_face is None:
            return floor
        return max(floor, _power_of_two_at_most(self.min_face / self.detect_px))

    def read(
        self, files: Iterable[Path], skip: Callable[[str], bool] | None = None
    ) -> Iterator[ReadPhoto]:
        """Each file's :class:`ReadPhoto`, in the order given (streamed, memory bounded).

        ``skip(sha256)``, called from the reading threads once a file is hashed, says a content
        is known already (a copy, a moved or touched photo): it is then not decoded.
        """
        ahead = 3 * self.workers  # photos in flight: the workers never wait for the consumer
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[Future[ReadPhoto]] = deque()
            for path in files:
                pending.append(pool.submit(self._process, Path(path), skip))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def read_arrays(self, photos: Iterable[np.ndarray]) -> Iterator[ReadPhoto]:
        """:meth:`read` for photos already decoded (RGB uint8 ``(H, W, 3)``, upright), in the
        order given: the same reduced copy for the detector, the same cut at full detail, so a
        photo gives the faces and boxes its file gives. Each :class:`ReadPhoto`'s ``path`` is
        ``<image i>`` (its place in ``photos``); nothing is hashed."""
        ahead = 3 * self.workers
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[Future[ReadPhoto]] = deque()
            for i, rgb in enumerate(photos):
                pending.append(pool.submit(self._process_array, i, rgb))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _process_array(self, index: int, rgb: np.ndarray) -> ReadPhoto:
        """One in-memory photo, start to end, in a worker thread."""
        height, width = rgb.shape[:2]
        photo = ReadPhoto(Path(f"<image {index}>"), width=width, height=height)
        reduction = self.reduction(width, height)
        copy = np.asarray(_reduced(Image.fromarray(rgb), reduction))
        return self._search(_Loaded(photo, copy=copy, reduction=reduction, pixels=rgb))

    def _process(self, path: Path, skip: Callable[[str], bool] | None) -> ReadPhoto:
        """One photo, start to end, in a worker thread."""
        return self._search(self._load(path, skip))

    def _search(self, item: _Loaded) -> ReadPhoto:
        """Detect on the reduced copy, cut (and embed) the faces."""
        if item.copy is None:
            return item.photo
        detector = self.detector()
        if self.min_face is None:
            detector.min_face_size = self._detector.min_face_size
        else:
            detector.min_face_size = self.min_face / item.reduction
        # a face MTCNN finds twice (overlapping boxes) is one face, as in training's pipeline
        photo = self._finish(item, merge_overlaps(detector.detect([item.copy])[0]))
        if self.embed is not None and photo.faces:
            pixels = np.stack([face.pixels.transpose(2, 0, 1) for face in photo.faces])
            photo.embeddings = self.embed(pixels)
        return photo

    def _load(self, path: Path, skip: Callable[[str], bool] | None) -> _Loaded:
        """Read a file once: its bytes, stamp and digest, and the detector's reduced copy."""
        photo = ReadPhoto(path)
        problem = file_problem(path)
        if problem is None and path.suffix.lower() not in IMAGE_EXTENSIONS:
            problem = f"unsupported file type: {path.suffix.lower() or '(no extension)'}"
        if problem is not None:
            photo.error = problem
            return _Loaded(photo)
        try:
            with open(path, "rb") as handle:
                before = os.fstat(handle.fileno())
                data = handle.read()
        except OSError as error:
            photo.error = f"cannot read file ({error.strerror or error})"
            return _Loaded(photo)
        photo.size, photo.mtime_ns = before.st_size, before.st_mtime_ns
        photo.sha256 = hashlib.sha256(data).hexdigest()
        photo.known = skip is not None and skip(photo.sha256)
        # A file written to while it was read may be torn: its bytes are not stored. (A change
        # after this point leaves a newer mtime than the stamp kept, so the next run reads it.)
        if _stamp(path) != (len(data), before.st_mtime_ns):
            photo.error = "the file changed while it was read; it is read again next time"
            photo.known = False
            return _Loaded(photo)
        if photo.known:
            return _Loaded(photo)
        try:
            copy, (photo.width, photo.height) = decode_reduced(data, path, self.reduction)
        except ImageError as error:
            photo.error = error.reason
            return _Loaded(photo)
        return _Loaded(photo, data, copy, self.reduction(photo.width, photo.height))

    def _finish(self, item: _Loaded, found: Detections) -> ReadPhoto:
        """Cut the faces, each from a decode where it keeps its full detail."""
        photo, copy = item.photo, item.copy
        assert copy is not None
        if len(found):
            scale = photo.width / copy.shape[1]
            sides = (found.boxes[:, 2:] - found.boxes[:, :2]).max(axis=1) * scale
            cut_at = min(item.reduction, _power_of_two_at_most(sides.min() / self.face_px))
            if cut_at == item.reduction:
                source = Image.fromarray(copy)
            elif item.pixels is not None:
                source = _reduced(Image.fromarray(item.pixels), cut_at)
            else:
                try:
                    source, _ = decode_reduced_image(item.data, photo.path, lambda _w, _h: cut_at)
                except ImageError as error:  # the bytes decoded once already; be safe anyway
                    photo.error = error.reason
                    return photo
            to_x, to_y = source.width / copy.shape[1], source.height / copy.shape[0]
            back_x, back_y = photo.width / source.width, photo.height / source.height
            faces = cut_each(source, _rescale(found, to_x, to_y), self.cut)
            photo.faces = [_rescale_face(face, back_x, back_y) for face in faces]
        item.data, item.copy, item.pixels = b"", None, None  # free them as soon as it is done
        return photo


def _reduced(image: Image.Image, factor: int) -> Image.Image:
    """``image`` box-reduced by ``factor`` (what :func:`decode_reduced_image` does to a photo
    that is not a JPEG)."""
    return image if factor <= 1 else image.reduce(factor)


def cut_each(
    source: Image.Image, found: Detections, cut: Cut, order: list[int] | None = None
) -> list[Face]:
    """The faces of ``found`` in ``order`` (default: main face first), each cut from a region
    around it rather than from the whole photo: a 12-megapixel photo is never copied whole. The
    region (three times the face, within the photo) holds everything any pipeline reads, and
    reaches the photo's border wherever a cut could, so each cut sees what it would see in the
    whole photo. Boxes and landmarks come back in ``source``'s pixels."""
    if order is None:
        order = main_first(found.boxes, source.height, source.width).tolist()
    faces = []
    for i in order:
        x1, y1, x2, y2 = (float(v) for v in found.boxes[i])
        reach = 1.5 * max(x2 - x1, y2 - y1) + 2
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, top = max(0, int(cx - reach)), max(0, int(cy - reach))
        right, bottom = (
            min(source.width, int(cx + reach) + 1),
            min(source.height, int(cy + reach) + 1),
        )
        region = np.asarray(source.crop((left, top, right, bottom)))
        one = Detections(found.boxes[i : i + 1] - np.array([left, top, left, top], np.float32),
                         found.scores[i : i + 1],
                         found.landmarks[i : i + 1] - np.array([left, top], np.float32))  # fmt: skip
        for face in cut(region, one):
            fx1, fy1, fx2, fy2 = face.box
            marks = None if face.landmarks is None else face.landmarks + [left, top]
            faces.append(Face(face.pixels, (fx1 + left, fy1 + top, fx2 + left, fy2 + top), marks,
                              face.score))  # fmt: skip
    return faces


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _rescale(found: Detections, fx: float, fy: float) -> Detections:
    """Detections in a photo ``fx`` x ``fy`` times bigger: box edges scale, landmark pixel
    centres scale about the pixel grid (``x + 0.5``)."""
    boxes = found.boxes * np.array([fx, fy, fx, fy], np.float32)
    marks = (found.landmarks + 0.5) * np.array([fx, fy], np.float32) - 0.5
    return Detections(boxes.astype(np.float32), found.scores, marks.astype(np.float32))


def _rescale_face(face: Face, fx: float, fy: float) -> Face:
    x1, y1, x2, y2 = face.box
    marks = None
    if face.landmarks is not None:
        marks = (np.asarray(face.landmarks) + 0.5) * np.array([fx, fy], np.float32) - 0.5
    return Face(face.pixels, (x1 * fx, y1 * fy, x2 * fx, y2 * fy), marks, face.score)
