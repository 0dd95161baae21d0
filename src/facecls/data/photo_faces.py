"""Photos -> faces, fast: the one reader for the face library's index and ``predict``.

A 12-megapixel phone photo costs more to decode than to search for faces once it is small, so
each file is read once (its bytes, their sha256) and decoded at a reduced size for the detector
(:func:`facecls.data.images.decode_reduced`: libjpeg's draft mode decodes a JPEG straight at 1/2,
1/4 or 1/8). MTCNN searches these small copies one by one (so a photo's faces never depend on
the photos read with it); each face is then cut at the resolution it needs from the same
bytes: a small face from the full photo, a big one from a reduced decode (never smaller than
the model's input), so nothing is lost against detecting and cutting at full size. Files are
read and faces cut in a thread pool (Pillow and libjpeg release the GIL) while the detector
works on the photos read before.

Boxes and landmarks come back in full-resolution pixels of the upright photo (EXIF orientation
applied). A file that cannot be read, or that changes while it is read, comes back with an
``error`` and no faces, in its place: one bad file never stops a run.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecls.data.faces import Face
from facecls.data.images import IMAGE_EXTENSIONS, ImageError, decode_reduced, file_problem
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


@dataclass
class _Loaded:
    photo: ReadPhoto
    data: bytes = b""
    copy: np.ndarray | None = None  # the detector's reduced copy
    reduction: int = 1


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
        batch: photos read ahead and searched between two waits for the reading threads.
        workers: threads that read, decode and cut.
    """

    def __init__(
        self, cut: Cut, face_px: int, detector: MTCNN, min_face: int | None = 40,
        detect_px: float = 12.0, max_side: int = 1600, batch: int = 8, workers: int = 2,
    ) -> None:  # fmt: skip
        self.cut, self.face_px = cut, face_px
        # A copy (sharing the nets): its sizes are set per photo here, the caller's stay as they are.
        self.detector = copy.copy(detector)
        self.min_face, self.detect_px, self.max_side = min_face, detect_px, max_side
        self.batch, self.workers = max(1, batch), max(1, workers)
        self.detector.max_side = 1 << 20  # the copies are sized here
        self._copy_min_face = float(detector.min_face_size)

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
        source = iter(files)
        with ThreadPoolExecutor(self.workers) as pool:
            loading: deque[Future[_Loaded]] = deque()
            done: deque[Future[ReadPhoto]] = deque()

            def fill() -> None:
                for path in source:
                    loading.append(pool.submit(self._load, Path(path), skip))
                    if len(loading) >= 2 * self.batch:
                        return

            fill()
            while loading:
                batch = [loading.popleft().result() for _ in range(min(self.batch, len(loading)))]
                fill()  # the next files load while this batch is searched
                found = self._detect([b for b in batch if b.copy is not None])
                for item in batch:
                    if item.copy is None:
                        done.append(_ready(item.photo))
                    else:
                        done.append(pool.submit(self._finish, item, found[id(item)]))
                while len(done) > self.batch:
                    yield done.popleft().result()
            while done:
                yield done.popleft().result()

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

    def _detect(self, items: list[_Loaded]) -> dict[int, Detections]:
        """MTCNN over the copies (its ``min_face_size`` follows each copy's reduction)."""
        found: dict[int, Detections] = {}
        for reduction in sorted({item.reduction for item in items}):
            group = [item for item in items if item.reduction == reduction]
            if self.min_face is None:
                self.detector.min_face_size = self._copy_min_face
            else:
                self.detector.min_face_size = self.min_face / reduction
            # One photo per pass: R-Net and O-Net then see the same candidates whatever the
            # batch, so a photo's faces never depend on which photos were read with it (an
            # interrupted index resumes to the same library). Batching saved little on the CPU.
            for item in group:
                assert item.copy is not None
                found[id(item)] = self.detector.detect([item.copy])[0]
        return found

    def _finish(self, item: _Loaded, found: Detections) -> ReadPhoto:
        """Cut the faces, each from a decode where it keeps its full detail."""
        photo, copy = item.photo, item.copy
        assert copy is not None
        if len(found):
            scale = photo.width / copy.shape[1]
            sides = (found.boxes[:, 2:] - found.boxes[:, :2]).max(axis=1) * scale
            cut_at = min(item.reduction, _power_of_two_at_most(sides.min() / self.face_px))
            source = copy
            if cut_at != item.reduction:
                try:
                    source, _ = decode_reduced(item.data, photo.path, lambda _w, _h: cut_at)
                except ImageError as error:  # the bytes decoded once already; be safe anyway
                    photo.error = error.reason
                    return photo
            to_x, to_y = source.shape[1] / copy.shape[1], source.shape[0] / copy.shape[0]
            back_x, back_y = photo.width / source.shape[1], photo.height / source.shape[0]
            faces = self.cut(source, _rescale(found, to_x, to_y))
            photo.faces = [_rescale_face(face, back_x, back_y) for face in faces]
        item.data, item.copy = b"", None  # free the bytes as soon as the photo is done
        return photo


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _ready(photo: ReadPhoto) -> Future[ReadPhoto]:
    future: Future[ReadPhoto] = Future()
    future.set_result(photo)
    return future


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
