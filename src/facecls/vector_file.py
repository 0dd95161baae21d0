"""A vector index saved to one file, trusted only when it proves what it was built from.

The file (written atomically) holds a header (format, engine and build settings, the embedding
model's key, a digest of the embeddings and ids the index was built from), the ids, the FAISS
index, and a SHA-256 of all of that at the end. :func:`load_or_build` checks the checksum before
parsing anything, then the model key and the digest; a damaged file, or one built by another
model or from other embeddings, is rebuilt from the embeddings (and saved again), never used.

Layout: ``MAGIC``, header length (u32 LE), header (UTF-8 JSON), ids (int64 LE), removed
flags (packed bits), the arrays kept with it (as the header lists them), the FAISS index
(``faiss.write_index``), SHA-256 of everything before.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from facecls.atomic import atomic_path
from facecls.vector_index import CHUNK, IndexSettings, VectorIndex, check_memory

MAGIC = b"FACECLS-VECTORS\n"
FORMAT = 1
# what shapes the index when it is built; the other settings only steer searches
BUILD_SETTINGS = ("engine", "exact_up_to", "approximate", "hnsw_m", "ef_construction", "nlist",
                  "pq_m")  # fmt: skip


class IndexFileError(ValueError):
    """A saved index cannot be used: damaged, or from another model or other embeddings."""


def embeddings_digest(vectors: np.ndarray, ids: np.ndarray) -> str:
    """SHA-256 of the ids (int64) and the float32 vectors, read a chunk at a time (so a memory
    map is never read whole into memory)."""
    digest = hashlib.sha256()
    ids = np.ascontiguousarray(ids, dtype="<i8")
    digest.update(struct.pack("<QQ", len(ids), vectors.shape[1] if vectors.ndim == 2 else 0))
    digest.update(ids.tobytes())
    for start in range(0, len(vectors), CHUNK):
        digest.update(np.ascontiguousarray(vectors[start : start + CHUNK], dtype="<f4").data)
    return digest.hexdigest()


class _HashingWriter:
    """A binary file that hashes what is written through it."""

    def __init__(self, file) -> None:  # noqa: ANN001 (an open binary file)
        self.file, self.sha = file, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.file.write(data)


def save_index(
    index: VectorIndex, path: str | Path, model_key: str, digest: str,
    extra: dict[str, Any] | None = None, arrays: dict[str, np.ndarray] | None = None,
) -> Path:  # fmt: skip
    """Write ``index`` to ``path`` atomically, stamped with the model key and the digest of the
    embeddings it holds (:func:`embeddings_digest` of its vectors and ids).

    Args:
        extra: more header entries (JSON), read back by :func:`read_saved`.
        arrays: named 1-d arrays kept with it (e.g. a checksum per face).
    """
    path = Path(path)
    arrays = {name: np.ascontiguousarray(a).reshape(-1) for name, a in (arrays or {}).items()}
    header = {
        "format": FORMAT, "dim": index.dim, "engine": index.engine,
        "settings": asdict(index.settings), "model_key": model_key, "embeddings": digest,
        "count": len(index._ids), "trained_on": index._trained_on, "extra": extra or {},
        "arrays": {n: [a.dtype.str, len(a)] for n, a in arrays.items()},
    }  # fmt: skip
    head = json.dumps(header).encode()
    with atomic_path(path, size=index.memory_bytes()) as tmp, tmp.open("wb") as raw:
        out = _HashingWriter(raw)
        out.write(MAGIC + struct.pack("<I", len(head)) + head)
        out.write(np.ascontiguousarray(index._ids, dtype="<i8").tobytes())
        out.write(np.packbits(index._removed, bitorder="little").tobytes())
        for array in arrays.values():
            out.write(array.tobytes())
        faiss.write_index(index._index, faiss.PyCallbackIOWriter(out.write))
        raw.write(out.sha.digest())
    return path


def _checksum_ok(path: Path) -> bool:
    sha = hashlib.sha256()
    size = path.stat().st_size
    if size < len(MAGIC) + 4 + 32:
        return False
    with path.open("rb") as f:
        left = size - 32
        while left:
            block = f.read(min(left, 1 << 22))
            if not block:
                return False
            sha.update(block)
            left -= len(block)
        return f.read(32) == sha.digest()


@dataclass
class Saved:
    """A saved index as read back: the index, its header and the arrays kept with it."""

    index: VectorIndex
    header: dict[str, Any]
    arrays: dict[str, np.ndarray]


def read_saved(
    path: str | Path, model_key: str, digest: str | None = None,
    settings: IndexSettings | None = None,
) -> Saved:  # fmt: skip
    """The index saved at ``path``, if it is whole and was built by ``model_key`` (from the
    embeddings of ``digest``, when given: else the caller checks them) with the build settings
    of ``settings`` (whose search settings it then takes).

    Raises:
        IndexFileError: the file is missing, damaged, or built otherwise (the reason).
        MemoryLimitError: it would not fit in memory.
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFileError("no saved index")
    if not _checksum_ok(path):
        raise IndexFileError("the file is damaged (its checksum does not match)")
    with path.open("rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise IndexFileError("not a facecls vector index")
        (length,) = struct.unpack("<I", f.read(4))
        try:
            header = json.loads(f.read(length))
        except ValueError as error:
            raise IndexFileError("its header is not readable") from error
        if header.get("format") != FORMAT:
            raise IndexFileError(f"format {header.get('format')} (this facecls reads {FORMAT})")
        if header.get("model_key") != model_key:
            raise IndexFileError("it was built from another model's embeddings")
        if digest is not None and header.get("embeddings") != digest:
            raise IndexFileError("it was built from other embeddings (their digest differs)")
        saved = IndexSettings(**header["settings"])
        wanted = settings or saved
        if any(getattr(saved, k) != getattr(wanted, k) for k in BUILD_SETTINGS):
            raise IndexFileError("it was built with other index settings")
        index = VectorIndex(int(header["dim"]), replace(saved, **_search_part(wanted)))
        count = int(header["count"])
        check_memory(header["engine"], count, index.dim, index.settings)
        index._ids = np.frombuffer(f.read(8 * count), dtype="<i8").astype(np.int64)
        bits = np.frombuffer(f.read((count + 7) // 8), dtype=np.uint8)
        index._removed = np.unpackbits(bits, count=count, bitorder="little").astype(bool)
        arrays = {}
        for name, (dtype, size) in header["arrays"].items():
            kind = np.dtype(dtype)
            arrays[name] = np.frombuffer(f.read(kind.itemsize * size), dtype=kind).copy()
        index._index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
    if index._index.ntotal != count or index._index.d != index.dim:
        raise IndexFileError("its FAISS index does not match its ids")
    index.engine, index._trained_on = str(header["engine"]), int(header["trained_on"])
    index._sorted_ids = np.sort(index.ids)
    return Saved(index, header, arrays)


def read_index(
    path: str | Path, model_key: str, digest: str, settings: IndexSettings | None = None
) -> VectorIndex:
    """The index saved at ``path`` if it is whole and was built by ``model_key`` from the
    embeddings of ``digest`` (:func:`read_saved`).

    Raises:
        IndexFileError: the file is missing, damaged, or built otherwise (the reason).
    """
    return read_saved(path, model_key, digest, settings).index


def _search_part(settings: IndexSettings) -> dict[str, object]:
    return {k: v for k, v in asdict(settings).items() if k not in BUILD_SETTINGS}


def load_or_build(
    path: str | Path,
    vectors: np.ndarray,
    ids: np.ndarray,
    model_key: str,
    settings: IndexSettings | None = None,
    log: Callable[[str], None] = print,
) -> VectorIndex:
    """The index of ``vectors`` (unit, ``(N, D)``) under ``ids``: read from ``path`` when that
    file is whole and was built from exactly these embeddings by ``model_key``; otherwise
    built (the reason logged) and saved to ``path``."""
    digest = embeddings_digest(vectors, ids)
    try:
        return read_index(path, model_key, digest, settings)
    except IndexFileError as error:
        if Path(path).exists():
            log(f"{path}: {error}; rebuilding the vector index")
    index = VectorIndex(vectors.shape[1], settings).add(vectors, ids)
    save_index(index, path, model_key, digest)
    return index
