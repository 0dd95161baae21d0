"""Decode once: images are decoded a single time per (files, image size, face pipeline) into a
uint8 cache.

The cache key covers every file's relative path, byte size and modification time, the image size,
the face pipeline and the loader version, so editing, adding or removing a file rebuilds it.
Face detection (``align``/``box`` pipelines) runs here, once, not in training. Entries live in
the cache directory (never beside the user's data) and are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from facecls.atomic import atomic_path, write_text
from facecls.data.face_choice import MAX_CANDIDATES, FacesFound
from facecls.data.faces import ALIGN_SCALE, BOX_MARGIN, FaceCutter
from facecls.data.images import ImageError, load_rgb
from facecls.data.sources import ImageRef
from facecls.progress import bar, track

# Bump when decoding changes (resize filter, mode handling) so stale caches are not reused.
LOADER_VERSION = 1
# Bump when the choice of a photo's face changes (2: main face instead of the
# largest; 3: tilted heads cut upright by the box pipeline; 4: a face found twice is one, and
# every face of a photo with several is kept for the choice by agreement).
FACE_CHOICE_VERSION = 4


def cache_key(
    refs: Sequence[ImageRef], image_size: int, crop: float = 1.0, faces: str = "centre"
) -> str:
    """A digest of the file list (path, size, mtime), the image size, the face pipeline (centre
    crop or detector) and the loader version (a centre crop of 1.0 keeps the keys of caches made
    before crops and pipelines existed)."""
    tag = f"v{LOADER_VERSION}:{image_size}" + (f":crop{crop!r}" if crop != 1.0 else "")
    if faces != "centre":
        tag += f":faces-{faces}-a{ALIGN_SCALE!r}-m{BOX_MARGIN!r}-c{FACE_CHOICE_VERSION}"
    h = hashlib.sha256(tag.encode())
    for ref in refs:
        stat = ref.path.stat()
        h.update(f"\n{ref.relpath}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        if ref.face is not None:  # a library's face: where it is counts too
            h.update(("\0" + ",".join(f"{v:.2f}" for v in ref.face)).encode())
    return h.hexdigest()[:24]


def _decode_one(ref: ImageRef, image_size: int, crop: float = 1.0) -> np.ndarray | str:
    try:
        return load_rgb(ref.path, image_size, crop).transpose(2, 0, 1)  # (3, S, S)
    except ImageError as error:
        return str(error)


def _decode_all(
    refs: Sequence[ImageRef], image_size: int, show_progress: bool, crop: float = 1.0
) -> tuple[np.ndarray, list[int], list[dict[str, str]]]:
    """Decode in threads (Pillow releases the GIL) straight into one preallocated array."""
    images = np.empty((len(refs), 3, image_size, image_size), dtype=np.uint8)
    ok = np.zeros(len(refs), dtype=bool)
    skipped: list[dict[str, str]] = []
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda r: _decode_one(r, image_size, crop), refs, chunksize=32)
        bar = track(results, len(refs), "decoding", show_progress)
        for i, result in enumerate(bar):
            if isinstance(result, str):
                skipped.append({"path": refs[i].relpath, "reason": result})
            else:
                images[i] = result
                ok[i] = True
    kept = np.flatnonzero(ok)
    # Compact in place (kept[j] >= j) so the cache never needs a second full-size copy.
    for j, i in enumerate(kept):
        if i != j:
            images[j] = images[i]
    return images[: len(kept)], kept.tolist(), skipped


def _photo(ref: ImageRef) -> np.ndarray | str:
    try:
        return load_rgb(ref.path)
    except ImageError as error:
        return str(error)


def _detect_all(
    refs: Sequence[ImageRef], cutter: FaceCutter, show_progress: bool, chunk: int = 16
) -> tuple[np.ndarray, list[int], list[dict[str, str]], FacesFound]:
    """Find and cut the main face of each photo, ``chunk`` photos per detector batch; the other
    faces of photos with several are cut too (:class:`FacesFound`), for the choice by
    agreement (:mod:`facecls.data.face_choice`).

    Returns ``_decode_all``'s three results and what was found in the kept photos.
    """
    size = cutter.size
    images = np.empty((len(refs), 3, size, size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    boxes: list[list[float]] = []
    rows, counts, found_counts, extra, extra_boxes = [], [], [], [], []
    workers = max(1, min(8, os.cpu_count() or 1))
    counter = bar(len(refs), "finding faces", show_progress)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(refs), chunk):
            part = list(range(start, min(start + chunk, len(refs))))
            photos = list(pool.map(lambda i: _photo(refs[i]), part))
            readable = [i for i, p in zip(part, photos, strict=True) if not isinstance(p, str)]
            for i, p in zip(part, photos, strict=True):
                if isinstance(p, str):
                    skipped.append({"path": refs[i].relpath, "reason": p})
            known = [i for i in readable if refs[i].face is not None]
            for i in known:  # a library's face: cut where it was found, no detection
                box, points = refs[i].known_face()
                cut = cutter.cut_known(photos[i - start], box, points)
                images[len(kept)] = cut.pixels.transpose(2, 0, 1)
                boxes.append([*cut.box, cut.score])
                kept.append(i)
            readable = [i for i in readable if refs[i].face is None]
            arrays = [photos[i - start] for i in readable]
            detected = cutter.detect(arrays) if arrays else []
            for i, photo, found in zip(readable, arrays, detected, strict=True):
                if len(found) == 0:
                    skipped.append({"path": refs[i].relpath, "reason": "no face found"})
                    continue
                faces = cutter.faces_of(photo, found, every_face=len(found) > 1)
                faces = faces[:MAX_CANDIDATES]
                images[len(kept)] = faces[0].pixels.transpose(2, 0, 1)
                boxes.append([*faces[0].box, faces[0].score])
                if len(found) > 1:
                    rows.append(len(kept))
                    counts.append(len(faces))
                    found_counts.append(len(found))
                    extra += [face.pixels.transpose(2, 0, 1) for face in faces]
                    extra_boxes += [[*face.box, face.score] for face in faces]
                kept.append(i)
            counter.update(len(part))
    counter.close()
    skipped.sort(key=lambda item: item["path"])
    found_all = FacesFound(
        np.asarray(boxes, np.float32).reshape(-1, 5),
        np.asarray(rows, np.int64),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.stack(extra) if extra else np.zeros((0, 3, size, size), np.uint8),
        np.asarray(extra_boxes, np.float32).reshape(-1, 5),
        np.asarray(found_counts, np.int64),
    )
    return images[: len(kept)], kept, skipped, found_all


def _checksum(array: np.ndarray) -> int:
    """crc32 of the pixels: cheap (about 1 GB/s) and catches a damaged or truncated entry."""
    return zlib.crc32(np.ascontiguousarray(array, dtype=np.uint8).reshape(-1))


def _read_entry(
    array_path: Path, meta_path: Path, image_size: int, log: Callable[[str], None]
) -> tuple[np.ndarray, list[int], list[dict[str, str]], int] | None:
    """A cache entry when it is whole, else ``None`` after discarding it (so it is rebuilt)."""
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, allow_pickle=False)
        whole = (
            images.dtype == np.uint8
            and images.shape == (len(meta["kept"]), 3, image_size, image_size)
            and "crc32" in meta  # an entry without its checksum cannot be checked: rebuilt
            and meta["crc32"] == _checksum(images)
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        whole = False
    if whole:
        return images, meta["kept"], meta["skipped"], meta.get("several_faces", 0)
    log(f"Decode cache entry {array_path} is damaged; discarding it and decoding again")
    array_path.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)
    return None


def decode_cached(
    refs: Sequence[ImageRef],
    image_size: int,
    cache_dir: Path,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
    crop: float = 1.0,
    faces: str = "centre",
    device: str = "cpu",
) -> tuple[np.ndarray, list[int], list[dict[str, str]], int]:
    """Decoded faces of ``refs`` at ``image_size``, from the cache when current.

    Args:
        crop: the ``centre`` pipeline's share of the shorter side.
        faces: the face pipeline (:mod:`facecls.data.faces`); ``align`` and ``box`` run the
            detector once here and keep each photo's main face (the largest, weighted by
            closeness to the centre); every face of a photo with several, and each face's box,
            go beside the entry (:func:`read_faces_found`) for the choice by agreement.
        device: where the detector runs.

    Returns:
        ``(images, kept, skipped, several)``: uint8 images ``(K, 3, S, S)`` of the usable files,
        the indices into ``refs`` they come from, ``{"path", "reason"}`` for each file skipped
        (unreadable, or no face found), and how many photos held several faces.
    """
    key = cache_key(refs, image_size, crop, faces)
    folder = cache_dir / "decoded"
    array_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    detects = faces != "centre"
    if (
        array_path.exists()
        and meta_path.exists()
        and (not detects or faces_path(cache_dir, key).is_file())
    ):
        entry = _read_entry(array_path, meta_path, image_size, log)
        if entry is not None:
            return entry
    cutter = FaceCutter(faces, image_size, crop, device)
    log(
        f"Decoding {len(refs)} images at {image_size} px ({cutter.describe()}) once into the "
        f"cache ({folder}) ..."
    )
    found = None
    if cutter.detects or any(ref.face is not None for ref in refs):
        images, kept, skipped, found = _detect_all(refs, cutter, show_progress)
        log(f"Faces: found in {len(kept)} of {len(refs)} photos; {len(found.rows)} with several "
            "faces")  # fmt: skip
        with atomic_path(faces_path(cache_dir, key)) as tmp:
            tmp.write_bytes(found.to_bytes())
    else:
        images, kept, skipped = _decode_all(refs, image_size, show_progress, crop)
    several = 0 if found is None else len(found.rows)
    # atomic_path leaves no temporary file behind, and names the folder on a full disk
    with atomic_path(array_path, images.nbytes) as tmp, tmp.open("wb") as f:
        np.save(f, images)
    meta = {"kept": kept, "skipped": skipped, "image_size": image_size, "count": len(refs),
            "crop": crop, "faces": faces, "several_faces": several,
            "crc32": _checksum(images)}  # fmt: skip
    write_text(meta_path, json.dumps(meta))
    return images, kept, skipped, several


def faces_path(cache_dir: Path, key: str) -> Path:
    """Where a decode cache entry keeps what detection found (:class:`FacesFound`)."""
    return Path(cache_dir) / "decoded" / f"{key}.faces.npz"


def read_faces_found(cache_dir: Path, key: str) -> FacesFound | None:
    """What detection found in the photos of the decode cache entry ``key``; ``None`` for a
    pipeline without detection (or an entry without the file)."""
    path = faces_path(cache_dir, key)
    try:
        return FacesFound.load(path) if path.is_file() else None
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
