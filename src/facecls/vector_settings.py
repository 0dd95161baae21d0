"""How a vector index is built and searched, and what memory it needs.

:class:`IndexSettings` chooses the engine (``exact``, ``hnsw``, ``ivfpq``, or ``auto``: exact up
to a size, approximate above) and its parameters. :func:`check_memory` estimates an index's
memory before it is built or grown and refuses, with :class:`MemoryLimitError`, one that would
not fit in the memory free now (or a given limit): a clear message instead of a swap storm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENGINES = ("auto", "exact", "hnsw", "ivfpq")
APPROXIMATE = ("hnsw", "ivfpq")
CHUNK = 65_536  # vectors added or searched per FAISS call: bounds the float32 copies made
FEW_QUERIES = 20  # fewer queries are searched on one thread (FAISS's BLAS threshold too)
GRAPH_CHUNK = 4096  # vectors searched at once for a k-nearest-neighbour graph
IVF_MIN_TRAIN = 10_000  # ivfpq trains once it holds this many vectors (exact until then)
TRAIN_MAX = 262_144  # vectors an IVF index may be trained on (a sample of them is used)
TRAIN_PER_LIST = 64  # training vectors per inverted list


class MemoryLimitError(ValueError):
    """An index would need more memory than the machine has free (or the limit given)."""


@dataclass(frozen=True)
class IndexSettings:
    """How an index is built and searched.

    Attributes:
        engine: ``auto``, ``exact``, ``hnsw`` or ``ivfpq`` (module docstring).
        exact_up_to: ``auto`` uses ``exact`` up to this many vectors.
        approximate: the engine ``auto`` uses above ``exact_up_to``.
        hnsw_m: graph links per vector (HNSW's ``M``).
        ef_construction: candidates kept while linking a new vector (HNSW).
        ef_search: candidates kept while searching (HNSW); higher: better recall, slower.
        nlist: inverted lists (IVF); ``None``: about sqrt(N) of the vectors it is trained on.
        nprobe: lists visited per query (IVF); ``None``: a quarter of them.
        pq_m: 4-bit codes per vector (IVF-PQ); ``None``: one per 8 dimensions (32 bytes at 512).
        refine: candidates re-ranked with float16 vectors per answer wanted (IVF-PQ).
        memory_limit: bytes the index may use; ``None``: 80 % of the memory free now.
        tested_up_to: the largest index measured (``docs/library.md``); past it
            :func:`size_note` says so.
    """

    engine: str = "auto"
    exact_up_to: int = 50_000
    approximate: str = "ivfpq"
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    refine: int = 64
    memory_limit: int | None = None
    tested_up_to: int = 1_000_000

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(
                f"unknown vector index engine {self.engine!r}; choose one of {ENGINES}"
            )
        if self.approximate not in APPROXIMATE:
            raise ValueError(f"the approximate engine must be one of {APPROXIMATE}")
        if self.memory_limit is not None and self.memory_limit <= 0:
            raise ValueError(f"the memory limit must be positive, not {self.memory_limit}")

    def engine_for(self, count: int) -> str:
        """The engine an index of ``count`` vectors uses."""
        engine = self.engine
        if engine == "auto":
            engine = "exact" if count <= self.exact_up_to else self.approximate
        # IVF lists are trained on the vectors: until there are enough, every one is compared
        return "exact" if engine == "ivfpq" and count < IVF_MIN_TRAIN else engine


def size_note(count: int, settings: IndexSettings) -> str | None:
    """One line for an index of ``count`` faces past the largest size measured, else ``None``."""
    if count <= settings.tested_up_to:
        return None
    return (
        f"the vector index holds {count:,} faces, more than the {settings.tested_up_to:,} "
        "measured (docs/library.md): recall and speed are not vouched for; memory is still "
        "checked before it grows"
    )


def bytes_per_vector(engine: str, dim: int, settings: IndexSettings) -> float:
    """Memory an index holds per vector (its codes, graph links or lists, and the id map)."""
    ids = 8 + 1 / 8  # the position -> id map and the removed-bit
    if engine == "exact":
        return 4 * dim + ids
    if engine == "hnsw":
        # float16 vectors; level 0 has 2M links, higher levels M each for 1/M of the vectors
        return 2 * dim + 4 * (2 * settings.hnsw_m + settings.hnsw_m / (settings.hnsw_m - 1)) + ids
    codes = (settings.pq_m or dim // 8) / 2  # 4-bit codes
    return codes + 8 + 2 * dim + ids  # codes, list ids, float16 copies for re-ranking


def available_memory() -> int | None:
    """Bytes of memory free for a new index (``MemAvailable``, within a cgroup limit)."""
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max" and free is not None:
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def check_memory(
    engine: str, count: int, dim: int, settings: IndexSettings, held: int = 0, working: int = 0
) -> None:
    """Refuse to grow an index to ``count`` vectors when it would not fit.

    Args:
        held: bytes the index holds already (they need no new memory).
        working: bytes needed only while it grows (float32 copies, the index it replaces).

    Raises:
        MemoryLimitError: the estimate exceeds the limit (``settings.memory_limit``, or 80 % of
            the memory free now).
    """
    need = int(bytes_per_vector(engine, dim, settings) * count) + working
    if settings.memory_limit is not None:
        limit, what = settings.memory_limit, "the memory limit"
    else:
        free = available_memory()
        if free is None:
            return
        limit, what = int(0.8 * free) + held, "80 % of the memory free now"
    if need > limit:
        raise MemoryLimitError(
            f"an {engine} vector index of {count:,} faces ({dim} dimensions) needs about "
            f"{need / 2**30:.2f} GiB, more than {what} ({limit / 2**30:.2f} GiB); free memory, "
            "choose a smaller engine (ivfpq needs the least), or search a smaller library"
        )
