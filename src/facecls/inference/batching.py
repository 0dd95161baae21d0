"""Run the network for many requests at once: a worker thread that batches what arrives together.

The service's handlers never run the network on the event loop. Each submits its faces and
awaits a future; one worker thread takes every submission waiting in the queue (up to
``max_faces``), runs them as one batch, and hands each caller its rows. Under load this turns
eight single-face requests into one forward pass of eight faces.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

Outputs = tuple[np.ndarray, np.ndarray]


class Batcher:
    """A worker thread around ``run``, a function of uint8 faces ``(N, 3, S, S)`` → outputs.

    Args:
        run: returns logits ``(N, C)`` and embeddings ``(N, D)`` (``FaceModel.outputs``).
        max_faces: the most faces put in one batch (a single larger submission runs alone).
    """

    def __init__(self, run: Callable[[np.ndarray], Outputs], max_faces: int = 32) -> None:
        self._run, self.max_faces = run, max_faces
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self.batches = 0  # forward passes run, for the record (benchmarks, tests)
        self._thread = threading.Thread(target=self._work, name="facecls-batcher", daemon=True)
        self._thread.start()

    def submit(self, faces: np.ndarray) -> Future:
        """Queue faces; the future's result is their ``(logits, embeddings)``."""
        future: Future = Future()
        self._queue.put((faces, future))
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
            group, size, stop = [first], len(first[0]), False
            while size < self.max_faces:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
                size += len(item[0])
            self._run_group(group)
            if stop:
                return

    def _run_group(self, group: list[tuple[np.ndarray, Future]]) -> None:
        try:
            logits, features = self._run(np.concatenate([faces for faces, _ in group]))
            self.batches += 1
        except Exception as error:  # every waiting caller gets the error, the worker lives on
            for _, future in group:
                future.set_exception(error)
            return
        start = 0
        for faces, future in group:
            end = start + len(faces)
            future.set_result((logits[start:end], features[start:end]))
            start = end
