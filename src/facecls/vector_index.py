"""One vector index over unit embeddings: inner-product (cosine) search by integer id.

Search, enrollment matching, clustering and the face library all look up faces here. Vectors are
L2-normalised float32 ``(N, D)``; ids are int64, unique; scores are inner products (cosine).
Engines (FAISS, in-process):

- ``exact``: ``IndexFlatIP``, every vector compared; the answers of brute force.
- ``hnsw``: a graph (``IndexHNSWSQ``, vectors kept as float16), searched greedily.
- ``ivfpq``: inverted lists of product-quantised codes (``IndexIVFPQ``), the best candidates
  re-ranked with float16 copies of the vectors (``IndexRefine``).
- ``auto`` (default): ``exact`` up to :attr:`IndexSettings.exact_up_to` vectors, the approximate
  :attr:`IndexSettings.approximate` engine above (figures in ``docs/library.md``).

Answers come best first; equal scores in ascending id order, so a search is deterministic.
Before an index grows, its memory is estimated and compared with what the machine has free (or
a given limit): past it, :class:`MemoryLimitError` says so instead of a swap storm.
"""

from __future__ import annotations

import os
from dataclasses import replace

import faiss
import numpy as np

from facecls.vector_settings import (
    CHUNK,
    ENGINES,
    FEW_QUERIES,
    GRAPH_CHUNK,
    IVF_MIN_TRAIN,
    TRAIN_MAX,
    TRAIN_PER_LIST,
    IndexSettings,
    MemoryLimitError,
    bytes_per_vector,
    check_memory,
    size_note,
)

__all__ = [
    "ENGINES", "IndexSettings", "MemoryLimitError", "VectorIndex", "brute_force_search",
    "size_note",
]  # fmt: skip


def unit_rows(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """``vectors`` as C-contiguous float32 ``(N, D)``; refuses non-finite or non-unit rows."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"vectors must be a {want} array, not of shape {array.shape}")
    if array.size and not np.isfinite(array).all():
        raise ValueError("vectors must be finite (a NaN or infinite embedding was given)")
    if len(array) and np.abs(np.einsum("nd,nd->n", array, array) - 1.0).max() > 1e-3:
        raise ValueError("vectors must be L2-normalised (unit length) for cosine search")
    return array


def _ordered(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row best first, equal scores by ascending id, empty slots (id -1) last; ``k`` kept."""
    missing = ids < 0
    key_scores = np.where(missing, np.inf, -scores)
    key_ids = np.where(missing, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_ids, key_scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def brute_force_search(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The numpy oracle (facecls's search before FAISS): every inner product, then sort."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    scores = queries @ np.asarray(vectors, np.float32).T
    ids = np.broadcast_to(np.asarray(ids, np.int64), scores.shape)
    return _ordered(scores, ids, min(k, scores.shape[1]))


class VectorIndex:
    """A FAISS index of unit vectors under int64 ids (module docstring).

    Args:
        dim: the embeddings' dimension.
        settings: engine and its parameters.
    """

    def __init__(self, dim: int, settings: IndexSettings | None = None) -> None:
        if dim <= 0:
            raise ValueError(f"the dimension must be positive, not {dim}")
        self.dim, self.settings = dim, settings or IndexSettings()
        self.engine = "exact"  # the engine in use (settings.engine_for(len) after each change)
        self._index: faiss.Index = faiss.IndexFlatIP(dim)
        self._ids = np.zeros(0, np.int64)  # FAISS position -> id
        self._sorted_ids = np.zeros(0, np.int64)  # the live ids, sorted: duplicate checks
        self._removed = np.zeros(0, bool)  # positions removed but still in the FAISS index
        self._trained_on = 0  # vectors the IVF lists were trained on

    @property
    def ids(self) -> np.ndarray:
        """The ids in the index, in the order they were added (removed ones left out)."""
        return self._ids[~self._removed]

    def __len__(self) -> int:
        return int(len(self._ids) - self._removed.sum())

    def memory_bytes(self) -> int:
        """What the index holds in memory, estimated as :func:`check_memory` estimates it."""
        return int(bytes_per_vector(self.engine, self.dim, self.settings) * len(self._ids))

    # ---- building ----------------------------------------------------------------------------

    def _empty(self, engine: str, train: np.ndarray, count: int) -> faiss.Index:
        """A new FAISS index for ``count`` vectors (IVF lists trained on a sample of ``train``)."""
        d, s, ip = self.dim, self.settings, faiss.METRIC_INNER_PRODUCT
        if engine == "exact":
            return faiss.IndexFlatIP(d)
        if engine == "hnsw":
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, s.hnsw_m, ip)
            index.hnsw.efConstruction = s.ef_construction
            return index
        pq_m = s.pq_m or max(1, d // 8)
        if d % pq_m:
            raise ValueError(f"pq_m ({pq_m}) must divide the dimension ({d})")
        nlist = s.nlist or int(min(65_536, np.sqrt(count)))
        nlist = max(1, min(nlist, len(train) // 39))  # k-means wants ~39 points per centroid
        quantizer = faiss.IndexFlatIP(d)  # ranks the lists exactly: ~sqrt(N) products
        # 4-bit codes scanned in SIMD registers ("fast scan"): a quarter of the lists in a ms
        ivf = faiss.IndexIVFPQFastScan(quantizer, d, nlist, pq_m, 4, ip)
        ivf.own_fields = True
        quantizer.this.disown()
        ivf.cp.niter = 10  # k-means rounds: lists good enough for search, in a tenth of the time
        sample, size = train, max(TRAIN_PER_LIST * nlist, IVF_MIN_TRAIN)
        if len(train) > size:  # a fixed sample: the same vectors train the same index
            sample = train[np.sort(np.random.default_rng(0).choice(len(train), size, False))]
        ivf.train(unit_rows(sample, d))
        refine = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, ip)
        index = faiss.IndexRefine(ivf, refine)
        index.own_fields = index.own_refine_index = True
        ivf.this.disown()
        refine.this.disown()
        self._trained_on = count
        return index

    def add(self, vectors: np.ndarray, ids: np.ndarray | list[int]) -> VectorIndex:
        """Add unit ``vectors`` ``(M, D)`` (an array or a memory map) under new unique ``ids``.

        The index is rebuilt once in another engine when its size asks for one (``auto`` past
        ``exact_up_to``; ``ivfpq`` once it has enough vectors to train on, or 8x more).

        Raises:
            ValueError: bad shapes, non-unit or non-finite vectors, ids already present.
            MemoryLimitError: the grown index would not fit in memory.
        """
        if len(vectors) <= CHUNK:  # larger arrays are checked chunk by chunk as they are added
            vectors = unit_rows(vectors, self.dim)
        elif vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (N, {self.dim}), not of shape {vectors.shape}")
        new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(new_ids) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(new_ids)} ids")
        if (new_ids < 0).any():
            raise ValueError("ids must be non-negative")
        merged = np.concatenate([self._sorted_ids, new_ids])
        merged.sort()
        twice = merged[1:][merged[1:] == merged[:-1]]
        if len(twice):
            raise ValueError(f"id {twice[0]} is given twice or is already in the index")
        total = len(self) + len(new_ids)
        engine = self.settings.engine_for(total)
        retrain = engine == "ivfpq" and total > 8 * max(self._trained_on, IVF_MIN_TRAIN)
        copies = 2 * 4 * self.dim * min(len(new_ids), CHUNK)  # float32 chunks handed to FAISS
        if engine != self.engine or retrain:
            # the old index and a float32 copy of its vectors live until the new one is built
            working = copies + self.memory_bytes() + 4 * self.dim * len(self)
            check_memory(engine, total, self.dim, self.settings, working=working)
            old, keep = self._live_vectors(), self.ids
            sample = np.concatenate([old, unit_rows(vectors[: max(0, TRAIN_MAX - len(old))])])
            self.engine, self._index = engine, self._empty(engine, sample, total)
            self._ids, self._removed = np.zeros(0, np.int64), np.zeros(0, bool)
            self._append(old, keep)
        else:
            grown = len(self._ids) + len(new_ids)
            check_memory(engine, grown, self.dim, self.settings, self.memory_bytes(), copies)
        self._append(vectors, new_ids)
        self._sorted_ids = merged
        return self

    def _append(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        for start in range(0, len(vectors), CHUNK):
            self._index.add(unit_rows(vectors[start : start + CHUNK], self.dim))
        self._ids = np.concatenate([self._ids, ids])
        self._removed = np.concatenate([self._removed, np.zeros(len(ids), bool)])

    def _live_vectors(self) -> np.ndarray:
        """The stored vectors of the live ids (float16-rounded by the approximate engines)."""
        if not len(self._ids):
            return np.zeros((0, self.dim), np.float32)
        store = (
            faiss.downcast_index(self._index.refine_index)
            if self.engine == "ivfpq"
            else self._index
        )
        return store.reconstruct_n(0, len(self._ids))[~self._removed]

    def remove(self, ids: np.ndarray | list[int]) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were removed.

        Searches skip removed vectors at once; they leave memory when a tenth of the index is
        removed (it is rebuilt from what it stores).
        """
        gone = np.isin(self._ids, np.asarray(ids, np.int64)) & ~self._removed
        if not gone.any():
            return 0
        self._removed |= gone
        self._sorted_ids = np.sort(self.ids)
        if self._removed.sum() * 10 >= len(self._ids):
            self.compact()
        return int(gone.sum())

    def compact(self) -> None:
        """Rebuild without the removed vectors (in the engine the remaining size asks for)."""
        vectors, ids = self._live_vectors(), self.ids
        self.engine = self.settings.engine_for(len(ids))
        self._index = self._empty(self.engine, vectors[:TRAIN_MAX], len(ids))
        self._ids, self._removed = np.zeros(0, np.int64), np.zeros(0, bool)
        self._append(vectors, ids)

    # ---- searching ---------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best ids for each query, best first (equal scores: ascending id).

        Args:
            queries: unit vectors ``(Q, D)`` (or one ``(D,)``, answered as ``(1, k)``).

        Returns:
            scores float32 ``(Q, k)`` and ids int64 ``(Q, k)``; where fewer than ``k`` vectors
            are found the slots left are ``-inf`` and ``-1``.
        """
        queries = unit_rows(np.atleast_2d(queries), self.dim)
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        live, found = len(self), min(k, len(self))
        if not found:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1)
        if self.engine == "exact":  # widen past ties at the k-th score: the lower ids make the cut
            wide = min(live, found + 1)
            scores, ids = self._search(queries, wide)
            while wide < live and (scores[:, found - 1] == scores[:, -1]).any():
                wide = min(live, 2 * wide)
                scores, ids = self._search(queries, wide)
            scores, ids = scores[:, :found], ids[:, :found]
        else:
            scores, ids = self._search(queries, found)
        if k > found:
            pad = ((0, 0), (0, k - found))
            scores = np.pad(scores, pad, constant_values=-np.inf)
            ids = np.pad(ids, pad, constant_values=-1)
        return scores, ids

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = self._params()
        threads = faiss.omp_get_max_threads()  # this thread's setting (OpenMP keeps one each)
        if len(queries) < FEW_QUERIES:
            # a few queries gain nothing from threads, and on a busy CPU their spin-waits
            # cost 10x (measured: 1.5 ms alone, 15-70 ms with 2 threads at load 20)
            faiss.omp_set_num_threads(1)
        try:
            parts = [
                self._index.search(queries[s : s + CHUNK], k, params=params)
                for s in range(0, len(queries), CHUNK)
            ]
        finally:
            faiss.omp_set_num_threads(threads)
        positions = np.concatenate([p[1] for p in parts])
        found = positions >= 0
        ids = np.where(found, self._ids[np.where(found, positions, 0)], -1)
        scores = np.where(found, np.concatenate([p[0] for p in parts]), -np.inf)
        return _ordered(scores.astype(np.float32), ids, k)

    def _params(self) -> faiss.SearchParameters | None:
        selector = None
        if self._removed.any():
            bitmap = np.packbits(~self._removed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self._removed), faiss.swig_ptr(bitmap))
            selector.referenced_bitmap = bitmap  # the bits live as long as the selector
        if self.engine == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.settings.ef_search)
        if self.engine == "ivfpq":
            nlist = faiss.extract_index_ivf(self._index.base_index).nlist
            nprobe = min(nlist, self.settings.nprobe or max(1, nlist // 4))
            ivf = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            params = faiss.IndexRefineSearchParameters(k_factor=float(self.settings.refine))
            params.base_index_params = ivf
            params.referenced_base = ivf
            return params
        return None if selector is None else faiss.SearchParameters(sel=selector)

    def knn_graph(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each vector's ``k`` nearest others, for clustering.

        Returns:
            ids ``(N,)`` (as :attr:`ids`), neighbour ids ``(N, k)`` and scores ``(N, k)``, best
            first, the vector itself left out (``-1``/``-inf`` where fewer than ``k`` others).
        """
        ids, vectors = self.ids, self._live_vectors()
        neighbours = np.empty((len(ids), k), np.int64)
        scores = np.empty((len(ids), k), np.float32)
        for start in range(0, len(ids), GRAPH_CHUNK):
            part = slice(start, start + GRAPH_CHUNK)
            found_scores, found_ids = self.search(vectors[part], k + 1)
            own = found_ids == ids[part, None]
            # the vector itself (or, when more than k copies of it hide it, the last one) goes
            drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
            keep = np.ones(own.shape, bool)
            keep[np.arange(len(own)), drop] = False
            neighbours[part] = found_ids[keep].reshape(-1, k)
            scores[part] = found_scores[keep].reshape(-1, k)
        return ids, neighbours, scores

    def tune(self, **changes: int) -> VectorIndex:
        """Change search-time settings (``ef_search``, ``nprobe``, ``refine``) in place."""
        if set(changes) - {"ef_search", "nprobe", "refine"}:
            raise ValueError("only ef_search, nprobe and refine change after building")
        self.settings = replace(self.settings, **changes)  # type: ignore[arg-type]
        return self


def faiss_threads(threads: int | None) -> None:
    """Let FAISS use ``threads`` OpenMP threads (``None``: every CPU this process may use)."""
    faiss.omp_set_num_threads(threads or len(os.sched_getaffinity(0)))
