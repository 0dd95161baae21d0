"""Re-embed a library with another model: every stored face cut again from its photo, by the
box and landmarks the library keeps, and embedded with the new backbone; then the embeddings and
the model's key are swapped in one transaction, so a library never holds two models'
embeddings. People, names and labels stay (they belong to the faces, not to the vectors).

``facecls index … --reembed`` does it when the library was indexed with another model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from facecls.data.archive import extract_archive, is_archive
from facecls.data.detections import Detections
from facecls.data.images import ImageError, decode_reduced_image, printable
from facecls.data.photo_faces import cut_each
from facecls.data.sources import default_cache_dir
from facecls.library.embedder import Embedder
from facecls.library.store import Face, Library, LibraryError
from facecls.progress import bar


def photo_file(name: str, cache_dir: Path | None = None) -> Path:
    """Where to read the library's photo ``name``: the file itself, or for ``ARCHIVE/member``
    the member extracted from the archive (once, into the cache)."""
    path = Path(name)
    if path.exists():
        return path
    for parent in path.parents:
        if parent.is_file() and is_archive(parent):
            return extract_archive(parent, cache_dir or default_cache_dir()) / path.relative_to(
                parent
            )
    return path


def _photo_bytes(sha256: str, names: list[str], cache_dir: Path | None) -> bytes | None:
    """The content of the first path still holding it (its sha256 checked), else ``None``."""
    for name in names:
        try:
            data = photo_file(name, cache_dir).read_bytes()
        except (OSError, ValueError):
            continue
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
    return None


def _embed_photo(
    embedder: Embedder, sha256: str, names: list[str], faces: list[Face], cache_dir: Path | None
) -> np.ndarray | str:
    """The new embeddings of one photo's faces (rank order), or why it cannot be read."""
    data = _photo_bytes(sha256, names, cache_dir)
    if data is None:
        return "no file holds this photo any more"
    try:
        image, _ = decode_reduced_image(data, Path(names[0]), lambda _w, _h: 1)
    except ImageError as error:
        return error.reason
    found = Detections(
        np.array([f.box for f in faces], np.float32).reshape(-1, 4),
        np.array([f.score for f in faces], np.float32),
        np.stack([f.landmarks if f.landmarks is not None else np.zeros((5, 2), np.float32)
                  for f in faces]).astype(np.float32),
    )  # fmt: skip
    cut = cut_each(image, found, embedder.cut, order=list(range(len(faces))))
    return embedder.embed(np.stack([f.pixels.transpose(2, 0, 1) for f in cut]))


def reembed_library(
    lib: Library, embedder: Embedder, workers: int | None = None,
    log: Callable[[str], None] = print, show_progress: bool = False,
    cache_dir: Path | None = None,
) -> int:  # fmt: skip
    """Re-embed every face of ``lib`` with ``embedder`` (see the module notes); answers the
    number of faces.

    Raises:
        LibraryError: photos with faces that can no longer be read (named; index their
            folders first, which forgets deleted photos).
    """
    by_photo: dict[int, list[Face]] = {}
    for face in lib.faces():
        by_photo.setdefault(face.photo_id, []).append(face)
    paths = lib.photo_paths()
    log(f"Re-embedding {sum(map(len, by_photo.values()))} face(s) of {len(by_photo)} photo(s) "
        f"with {embedder.key.describe()}")  # fmt: skip
    counter = bar(len(by_photo), "re-embed", show_progress, unit="photo")
    ids, vectors, missing = [], [], []
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        jobs = {
            pid: pool.submit(
                _embed_photo,
                embedder,
                paths[pid][0],
                paths[pid][1],
                sorted(faces, key=lambda f: f.rank),
                cache_dir,
            )  # fmt: skip
            for pid, faces in by_photo.items()
        }
        for pid, job in jobs.items():
            result = job.result()
            counter.update(1)
            if isinstance(result, str):
                missing.append(f"{printable(paths[pid][1][0] if paths[pid][1] else '?')}: {result}")
                continue
            ids.extend(f.id for f in sorted(by_photo[pid], key=lambda f: f.rank))
            vectors.append(result)
    counter.close()
    if missing:
        raise LibraryError(
            f"{lib.location}: {len(missing)} photo(s) with faces cannot be read to re-embed "
            f"them (first: {missing[0]}); index their folders first (gone photos are "
            "forgotten), then re-embed"
        )
    dim = embedder.key.dim
    lib.replace_embeddings(
        embedder.key, np.asarray(ids, np.int64),
        np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
    )  # fmt: skip
    return len(ids)
