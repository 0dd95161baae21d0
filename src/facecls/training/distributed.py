"""Several processes, one run: PyTorch's own process group under ``torchrun``, and nothing else.

``torchrun --nproc-per-node N -m facecls train …`` starts N copies of facecls with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` in their environment. :func:`context`
reads them into a frozen :class:`DistContext` and starts the process group (NCCL on CUDA, gloo
on the CPU) when there is more than one process and none is running yet. A process group cannot
be started again in the same process once destroyed, so it lives as long as the process (or
the caller's :func:`process_group` block: the CLI wraps every command in one). Everything that
differs between ranks is decided from the context passed down by ``training/run.py``: there is no
module-level state.

The rules the rest of facecls follows with it:

* Every rank draws the same seeded global batch and keeps its rows (``data/batches.py``), so
  DistributedDataParallel's averaged gradient is the one-process gradient of the global batch.
* Evaluation is sharded in contiguous blocks and the logits are gathered back in order
  (:func:`gather_rows`) before any confusion matrix is built.
* Only rank 0 creates folders, writes files, logs and shows progress; the others wait at a
  barrier (:meth:`DistContext.main_writes`) and then read what it wrote.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from facecls.data.batches import Shard

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Which process this is among the ranks of a run, and its device.

    Attributes:
        rank: 0 … world_size - 1 over all machines.
        world_size: processes in the run (1 without torchrun).
        local_rank: index of this process on its machine (picks ``cuda:<local_rank>``).
        local_world_size: processes on this machine (they share its CPU cores).
        device: where this rank trains.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank with side effects (folders, files, logs, progress bars)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process takes part, so collectives are needed."""
        return self.world_size > 1

    def shard(self) -> Shard:
        """This rank's share of batches (``Shard()`` — everything — in one process)."""
        return Shard(self.rank, self.world_size)

    def alone(self) -> DistContext:
        """A context for work this process does by itself (one fold under ``--parallel-folds``)."""
        return dataclasses.replace(self, rank=0, world_size=1)

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def main_writes(self, write: Callable[[], T]) -> T | None:
        """Run ``write`` on rank 0 only, then a barrier: afterwards every rank may read it.

        The single place where "rank 0 writes, everyone reads" happens (run folders,
        checkpoints). Returns what ``write`` returned on rank 0, ``None`` elsewhere.
        """
        result = write() if self.is_main else None
        self.barrier()
        return result


def env_ranks(env: Mapping[str, str]) -> tuple[int, int, int, int]:
    """``(rank, world_size, local_rank, local_world_size)`` from torchrun's variables.

    Absent variables mean one process. Raises ValueError on inconsistent values.
    """
    world = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local_rank = int(env.get("LOCAL_RANK", "0"))
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < max(local_world, 1)):
        raise ValueError(
            f"inconsistent launcher environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}"
        )
    return rank, world, local_rank, local_world


def rank_device(name: str, local_rank: int, world_size: int) -> torch.device:
    """The device of a rank: ``auto`` → CUDA when available else CPU; several processes on CUDA
    each take ``cuda:<local_rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use cpu")
        if world_size > 1:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"local rank {local_rank} has no GPU: this machine has "
                    f"{torch.cuda.device_count()}; start at most that many processes per node"
                )
            device = torch.device("cuda", local_rank)
    return device


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def context(device_name: str = "auto") -> DistContext:
    """This process's place in the run; under torchrun, joins the process group first.

    With one process nothing is started. With several, the group is started on the first call
    (a later call reuses it, as does a group the caller started) and CPU processes get
    cores // (processes on this machine) threads each, so they do not oversubscribe the cores.

    Args:
        device_name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the config's ``train.device``).
    """
    rank, world, local_rank, local_world = env_ranks(os.environ)
    device = rank_device(device_name, local_rank, world)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    if world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, cpu_cores() // max(local_world, 1)))
    return DistContext(rank, world, local_rank, local_world, device)


@contextmanager
def process_group() -> Iterator[None]:
    """Ends the process group (if one was started inside the block) when the block ends.

    For the owner of the process: the CLI, or a user's own torchrun script around its facecls
    calls. Library functions never end the group, because it cannot be started again.
    """
    running = dist.is_available() and dist.is_initialized()
    try:
        yield
    except BaseException:
        if not running:
            end_group(failed=True)
        raise
    if not running:
        end_group(failed=False)


def end_group(failed: bool) -> None:
    """End the process group, if one runs: at once after a failure, else after every rank has
    arrived (the end of :func:`process_group`; the CLI calls it when a command started one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not failed:
        # Every rank reaches this point before any tears its connections down: a rank that
        # destroyed the group while a peer was still finishing made gloo abort that peer.
        # Bounded, so a peer that died cannot hold the others here for gloo's 30 minutes.
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=120))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a peer is gone; ending the group is all that is left to do
    dist.destroy_process_group()


def sum_over_ranks(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Element-wise sum over ranks (the tensor is returned unchanged in one process)."""
    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def average_buffers(model: nn.Module, world_size: int) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks in place.

    Without synchronised BatchNorm each rank's running statistics come from its own rows of
    each batch; averaging them (timm's ``distribute_bn(reduce=True)``) makes every replica
    identical again before it is evaluated or saved.
    """
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world_size)


def gather_rows(local: torch.Tensor, total: int, shard: Shard) -> torch.Tensor:
    """Concatenate every rank's block of rows (``shard.bounds`` of ``total``) in rank order.

    Blocks may differ in length by one; they are padded to equal length for ``all_gather``
    (every rank knows every block's length, so nothing but the rows travels).

    Args:
        local: ``(n_rank, ...)`` rows of this rank.
        total: rows over all ranks.
    """
    sizes = [Shard(r, shard.world_size).bounds(total) for r in range(shard.world_size)]
    longest = max(stop - start for start, stop in sizes)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(shard.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat(
        [part[: stop - start] for part, (start, stop) in zip(parts, sizes, strict=True)]
    )


def broadcast_text(text: str | None, context: DistContext, src: int = 0) -> str:
    """Rank ``src``'s string on every rank (e.g. the run folder it chose), as UTF-8 bytes."""
    if not context.distributed:
        assert text is not None
        return text
    data = (text or "").encode() if context.rank == src else b""
    length = torch.tensor([len(data)], dtype=torch.int64, device=context.device)
    dist.broadcast(length, src)
    buffer = torch.zeros(int(length), dtype=torch.uint8, device=context.device)
    if context.rank == src:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src)
    return bytes(buffer.cpu().tolist()).decode()


def broadcast_array(
    array: np.ndarray | None,
    shape: tuple[int, ...],
    dtype: np.dtype,
    context: DistContext,
    src: int,
) -> np.ndarray:
    """Rank ``src``'s array (whose shape and dtype every rank knows) on every rank."""
    if context.rank == src:
        assert array is not None
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype)).to(context.device)
    else:
        tensor = torch.from_numpy(np.empty(shape, dtype=dtype)).to(context.device)
    if context.distributed:
        dist.broadcast(tensor, src)
    return tensor.cpu().numpy()


def broadcast_object(value: Any, context: DistContext, src: int) -> Any:
    """A small JSON-like value (history rows, numbers) from rank ``src``.

    ``broadcast_object_list`` pickles between facecls's own processes of one run; it is never
    used for anything read from the user's files.
    """
    if not context.distributed:
        return value
    box = [value if context.rank == src else None]
    dist.broadcast_object_list(box, src, device=context.device)
    return box[0]


def broadcast_module(module: nn.Module, context: DistContext, src: int) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place.

    Every rank holds the same architecture, so ``state_dict`` keys come in the same order and
    the tensors go one by one, without pickling.
    """
    if not context.distributed:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            staged = tensor.detach().to(context.device).contiguous()
            dist.broadcast(staged, src)
            if context.rank != src:
                tensor.copy_(staged)
