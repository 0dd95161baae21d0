"""Run the network and the face detector for many requests at once: worker threads that batch
what arrives together.

The service's handlers never run a model on the event loop. Each submits its work and awaits a
future; a worker thread takes every submission waiting in its queue (up to a limit), runs them
as one batch, and hands each caller its share. Under load this turns eight single-face requests
into one forward pass of eight faces (:class:`Batcher`), and eight uploads into one run of the
face detector over eight photos (:class:`PhotoBatcher`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import numpy as np

Outputs = tuple[np.ndarray, np.ndarray]
Item = TypeVar("Item")
Result = TypeVar("Result")


class _Worker(Generic[Item, Result]):
    """A thread running ``run_many`` over the submissions waiting together.

    Args:
        run_many: the results of a list of submissions, in order.
        limit: the most work per batch, counted by ``size`` (a single larger submission runs
            alone).
    """

    def __init__(
        self,
        run_many: Callable[[list[Item]], list[Result]],
        limit: int,
        size: Callable[[Item], int],
        name: str,
    ) -> None:
        self._run_many, self._limit, self._size = run_many, limit, size
        self._queue: queue.Queue[tuple[Item, Future] | None] = queue.Queue()
        self.batches = 0  # batches run, for the record (benchmarks, tests)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> Future:
        """Queue ``item``; the future's result is its share of the batch's results."""
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def close(self) -> None:
        """Stop the worker once the queue is done."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, size, stop = [first], self._size(first[0]), False
            while size < self._limit:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
                size += self._size(item[0])
            # callers that gave up (a cancelled await) are dropped before the work is done
            waiting = [(item, f) for item, f in group if f.set_running_or_notify_cancel()]
            if waiting:
                self._run_group(waiting)
            if stop:
                return

    def _run_group(self, group: list[tuple[Item, Future]]) -> None:
        """Run a group and answer every caller; the worker outlives any error."""
        try:
            results = self._run_many([item for item, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} submissions")
            self.batches += 1
        except Exception as error:
            if len(group) > 1:
                # one bad submission must not fail the others batched with it (nor show them
                # its error): each runs alone
                for one in group:
                    self._run_group([one])
                return
            group[0][1].set_exception(error)
            return
        for (_, future), result in zip(group, results, strict=True):
            future.set_result(result)


class Batcher(_Worker[np.ndarray, Outputs]):
    """The network for many requests: ``run`` maps uint8 faces ``(N, 3, S, S)`` to logits
    ``(N, C)`` and embeddings ``(N, D)`` (``FaceModel.outputs``); up to ``max_faces`` faces
    run in one pass, and each caller gets the rows of its own faces."""

    def __init__(self, run: Callable[[np.ndarray], Outputs], max_faces: int = 32) -> None:
        def run_many(groups: list[np.ndarray]) -> list[Outputs]:
            logits, features = run(np.concatenate(groups))
            bounds = np.cumsum([0] + [len(g) for g in groups])
            return [(logits[a:b], features[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]

        super().__init__(run_many, max_faces, len, "facecls-batcher")


class PhotoBatcher(_Worker[np.ndarray, Any]):
    """The face detector for many uploads: ``detect`` maps a list of RGB photos to their faces
    (``FaceModel.faces_in_photos``); up to ``max_photos`` photos run as one batch.

    MTCNN's later stages run on the candidate boxes of every photo at once, so a batch of photos
    costs less than the photos one by one (``predict`` detects in chunks of 8 for that reason).
    """

    def __init__(
        self, detect: Callable[[list[np.ndarray]], list[Any]], max_photos: int = 8
    ) -> None:
        super().__init__(detect, max_photos, lambda _photo: 1, "facecls-detector")
