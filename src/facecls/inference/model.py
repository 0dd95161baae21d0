"""A trained model ready to use: ``facecls.load_model(path)`` and what it can do.

:class:`FaceModel` wraps a bundle with its preprocessing, its open-set calibration and its enrolled
identities, and runs on PyTorch (CPU or GPU) or on an exported ONNX file through onnxruntime.
Both backends return the same two things for a uint8 batch, logits and embeddings; everything
after that (top-k, nearest-class-mean head, the ``unknown`` decision) is shared numpy code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecls.bundle import (
    META_NAME,
    BundleError,
    bundle_folder,
    read_centroids,
    read_sidecar,
    refuse_pickle,
)
from facecls.bundle_meta import refuse_unverified
from facecls.data.faces import FaceCutter
from facecls.data.images import ImageError
from facecls.inference.backends import OnnxRunner, TorchRunner
from facecls.inference.faces import (
    FaceItem,
    Prediction,
    expand_paths,
    face_items,
    main_faces,
    photo_items,
)
from facecls.inference.identities import (
    INDEXED_FROM,
    centroid_head,
    centroid_index,
    classifier_head,
)
from facecls.inference.model_inputs import PhotoInputs, in_memory_photos
from facecls.numbers import finite
from facecls.openset import CENTROID_METHODS, METHODS, fused_weight_of, l2_normalize
from facecls.openset_thresholds import (
    ENROLLED_METHODS,
    enrolled_method,
    enrolled_table,
    shot_threshold,
)
from facecls.runtime import resolve_device
from facecls.vector_index import VectorIndex

ONNX_NAME = "model.onnx"
BACKENDS = ("torch", "onnx")


class FaceModel(PhotoInputs):
    """A loaded model bundle: predict, embed, enroll and export.

    Build it with :func:`load_model`. ``class_names`` are the trained identities followed by the
    enrolled ones. Once identities are enrolled, predictions come from the nearest-class-mean
    head over every identity's embedding centroid (cosine, softmax with a fitted scale) and the
    open-set score is ``margin`` on those cosines (``centroid`` for bundles calibrated before
    it); otherwise from the trained classifier.
    """

    def __init__(
        self,
        folder: Path,
        meta: dict[str, Any],
        runner: Any,
        centroids: dict[str, np.ndarray],
        backend: str,
        method: str | None = None,
        threshold: float | None = None,
        device: str = "cpu",
    ) -> None:
        self.folder, self.meta, self.backend = folder, meta, backend
        self._runner = runner
        self.trained_names: list[str] = list(meta["class_names"])
        self.enrolled_names: list[str] = list((meta.get("enrolled") or {}).get("names", []))
        self.image_size: int = int(meta["image_size"])
        # The centre crop of training (``--crop``): every photo is cut the same way here.
        self.crop: float = float(meta.get("crop", 1.0))
        if not 0.0 < self.crop <= 1.0:
            raise BundleError(f"{folder}: crop in model.json must be in (0, 1], not {self.crop}")
        # The face pipeline of training; bundles from before pipelines existed used the crop.
        self.faces: str = str(meta.get("faces", "centre"))
        try:
            self.cutter = FaceCutter(self.faces, self.image_size, self.crop, device)
        except ValueError as error:
            raise BundleError(f"{folder}: faces in model.json: {error}") from error
        self._trained_centroids = centroids.get("trained")
        enrolled = centroids.get("enrolled")
        if self.enrolled_names and (enrolled is None or len(enrolled) != len(self.enrolled_names)):
            raise BundleError(f"{folder}: enrolled names and centroids do not match")
        if self._trained_centroids is not None and enrolled is not None:
            self._all_centroids = np.concatenate([self._trained_centroids, enrolled])
        else:
            self._all_centroids = self._trained_centroids
        openset = meta.get("openset") or {}
        if self.enrolled_names and method not in (None, *ENROLLED_METHODS):
            raise ValueError(
                "a model with enrolled identities decides by its centroids: use the method "
                f"{' or '.join(ENROLLED_METHODS)}, or drop the method option"
            )
        default = enrolled_method(openset) if self.enrolled_names else openset.get("method", "msp")
        self.method: str = method or default
        if self.method not in METHODS:
            raise ValueError(f"unknown open-set method {self.method!r}; choose one of {METHODS}")
        if self.method in CENTROID_METHODS and self._trained_centroids is None:
            raise BundleError(
                f"{folder}: the {self.method} method needs class centroids; run facecls calibrate"
            )
        # an explicit threshold applies to everyone; else enrolled people get their own
        by_hand = threshold is not None or openset.get("set_by_hand", False)
        self._enrolled_thresholds = {} if by_hand else enrolled_table(openset, self.method)
        self._enrolled_images = list((meta.get("enrolled") or {}).get("images", []))
        self.fused_weight: float = fused_weight_of(openset)
        if threshold is None and openset:
            stored = openset.get("thresholds", {})
            same = openset.get("method") == self.method and "threshold" in openset
            threshold = openset["threshold"] if same else stored.get(self.method)
            if threshold is None and stored:
                # a calibrated bundle without this score's threshold would accept everyone
                raise BundleError(
                    f"{folder}: no calibrated {self.method} threshold; run facecls calibrate on "
                    "the run folder, or give a threshold"
                )
        if threshold is not None:
            threshold = finite(threshold, "the open-set threshold (--threshold)")
        self.threshold: float | None = None if threshold is None else float(threshold)
        self.ncm_scale: float = float(openset.get("ncm_scale", 16.0))
        # from this many identities the centroids are searched through a vector index
        self.indexed_from: int = INDEXED_FROM
        self._centroid_index: VectorIndex | None = None

    @property
    def calibration_note(self) -> str | None:
        """What to do about an open-set calibration older than the operating point by the
        stranger rate (it keeps deciding as before), else ``None``."""
        openset = self.meta.get("openset") or {}
        if not openset or openset.get("version", 1) >= 2 or openset.get("set_by_hand"):
            return None
        return (
            f"{self.folder}: the unknown threshold was calibrated by an older facecls (on "
            "clean validation faces, by acceptance); it decides as before. `facecls calibrate "
            "RUN_FOLDER` sets it at 1 % of strangers named, on faces as photos show them"
        )

    def threshold_of(self, index: int) -> float | None:
        """The open-set threshold for a face named ``class_names[index]``: an identity enrolled
        from *k* photos has its own (calibrated for *k*-photo centroids, when the bundle has
        ``enrolled_thresholds``); the others share :attr:`threshold`."""
        trained = len(self.trained_names)
        if index < trained or not self._enrolled_thresholds or self.threshold is None:
            return self.threshold
        photos = (
            self._enrolled_images[index - trained]
            if index - trained < len(self._enrolled_images)
            else 1
        )
        return shot_threshold(self._enrolled_thresholds, int(photos))

    def with_bundle(self, folder: Path) -> FaceModel:
        """The same network with the identities of another bundle folder of the same weights
        (an enrolled version): nothing but its JSON and centroids is read."""
        folder, meta = read_meta(folder)
        return FaceModel(folder, meta, self._runner, read_centroids(folder), self.backend)

    @property
    def class_names(self) -> list[str]:
        """Every identity the model can name: trained, then enrolled."""
        return self.trained_names + self.enrolled_names

    @property
    def centroids(self) -> np.ndarray | None:
        """Unit embedding centroids ``(C, D)`` of every identity in ``class_names`` order, or
        ``None`` when the bundle was never calibrated."""
        return self._all_centroids

    @property
    def trained_centroids(self) -> np.ndarray | None:
        """Unit centroids of the trained identities (from their training part)."""
        return self._trained_centroids

    def __repr__(self) -> str:
        return (
            f"FaceModel({self.meta['architecture']}, {len(self.trained_names)} trained + "
            f"{len(self.enrolled_names)} enrolled identities, {self.image_size} px, "
            f"{self.backend}, open set: {self.method} >= {self.threshold})"
        )

    def outputs(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(N, C)`` and raw embeddings ``(N, D)`` of uint8 images ``(N, 3, S, S)``,
        prepared as :meth:`to_batch` prepares photos; run ``batch_size`` at a time."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if len(images) <= batch_size:
            return self._runner(images)
        parts = [
            self._runner(images[s : s + batch_size]) for s in range(0, len(images), batch_size)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def decide(self, logits: np.ndarray, features: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """Top-k names, open-set score and decision for each row of model outputs."""
        if self.enrolled_names:
            many = len(self._all_centroids) >= self.indexed_from
            if many and self._centroid_index is None:  # built once: centroids never change
                self._centroid_index = centroid_index(self._all_centroids)
            head = centroid_head(features, self._all_centroids, self.ncm_scale,
                                 self.method == "margin", top_k,
                                 self._centroid_index if many else None)  # fmt: skip
        else:
            head = classifier_head(
                logits, features, self._trained_centroids, self.method, top_k, self.fused_weight
            )
        names, results = self.class_names, []
        for i, chosen in enumerate(head.chosen):
            limit = self.threshold_of(int(chosen))
            known = limit is None or bool(head.score[i] >= limit)
            top = [(names[c], float(p)) for c, p in zip(head.order[i], head.probs[i], strict=True)]
            results.append(Prediction("known" if known else "unknown",
                                      names[chosen] if known else "unknown",
                                      float(head.score[i]), top, closest=names[chosen],
                                      threshold=limit))  # fmt: skip
        return results

    def predict(
        self,
        images: Sequence[Any] | np.ndarray | torch.Tensor | str | Path,
        top_k: int = 5,
        batch_size: int = 64,
        detect: bool = False,
    ) -> list[Prediction]:
        """Name the faces of photos given as files or folders (streamed; a bad file comes back
        as an ``error`` row) or in memory (RGB uint8 arrays ``(H, W, 3)``, PIL images, a uint8
        tensor ``(N, 3, H, W)``).

        Both give the same rows through the same reader as ``facecls predict``: with ``detect``
        (always so for a model trained on detected faces) every face of each photo, main face
        first, with its ``box`` and ``landmarks``, or one ``no_face`` row; otherwise one row per
        photo, cut as training cut its photos. Rows of in-memory photos carry ``image`` (their
        place in ``images``) where rows of files carry ``path``.
        """
        if isinstance(images, (str, Path)):
            images = [images]
        if not isinstance(images, torch.Tensor) and all(isinstance(x, (str, Path)) for x in images):
            return list(predict_files(self, images, top_k, batch_size, detect))
        items = photo_items(in_memory_photos(images), self, detect or self.detects)
        return list(predict_items(self, items, top_k, batch_size))

    def embed(
        self, images: Sequence[Any] | np.ndarray | torch.Tensor | str | Path, batch_size: int = 64
    ) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)`` float32, one per photo: its main face as the
        model cuts it (files through the shared reader of ``facecls predict``; ``facecls.embed``
        gives every face). Photos are files or in-memory, as for :meth:`predict`.

        Raises:
            facecls.data.images.ImageError: a file cannot be read, or holds no face (a model
                trained on detected faces); the message names it.
            ValueError: an in-memory photo without a face (idem).
        """
        if isinstance(images, (str, Path)):
            images = [images]
        if not isinstance(images, torch.Tensor) and all(isinstance(x, (str, Path)) for x in images):
            items = face_items([Path(p) for p in images], self, self.detects)
        else:
            items = photo_items(in_memory_photos(images), self, self.detects)
        chunks, pending = [], []
        for item in main_faces(items):
            if item.pixels is None:
                where = item.template
                if where.path is not None:
                    raise ImageError(where.reason, Path(where.path))
                raise ValueError(f"image {where.image}: {where.reason}")
            pending.append(item.pixels)
            if len(pending) == batch_size:
                chunks.append(l2_normalize(self.outputs(np.stack(pending))[1]))
                pending = []
        if pending:
            chunks.append(l2_normalize(self.outputs(np.stack(pending))[1]))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def read_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A bundle's folder and its ``model.json`` content, validated by
    :func:`facecls.bundle.validate_meta` (the one check every loader shares)."""
    folder = bundle_folder(Path(path))
    return folder, read_sidecar(folder / META_NAME)


def load_model(
    path: str | Path,
    device: str = "auto",
    backend: str = "torch",
    method: str | None = None,
    threshold: float | None = None,
    trust_pickle: bool = False,
    require_digest: bool = False,
) -> FaceModel:
    """Load a run folder or model bundle for prediction.

    Args:
        path: a run folder, a bundle folder, ``model.safetensors`` or ``model.json``.
        device: ``auto``, ``cpu``, ``cuda`` (torch backend; onnx: ``auto``/``cpu`` only).
        backend: ``torch``, or ``onnx`` to run ``model.onnx`` (see ``facecls export``) through
            onnxruntime.
        method: open-set score to use instead of the bundle's (``msp``, ``energy``, ``centroid``).
        threshold: open-set threshold instead of the calibrated one.
        trust_pickle: allow ``.pt``/``.pth`` weights beside a ``model.json``; they are refused
            otherwise, and even then read with ``torch.load(weights_only=True)``.
        require_digest: refuse a bundle whose ``model.json`` records no weights digest
            (otherwise it loads with a :class:`~facecls.bundle.BundleWarning`).

    Raises:
        BundleError: when the bundle or its ONNX file cannot be used.
        ValueError: an unknown backend, or a device the onnx backend does not run on.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "onnx" and device not in ("auto", "cpu"):
        raise ValueError(f"--device {device} is for --backend torch; onnx runs on the CPU")
    refuse_pickle(Path(path), trust_pickle)  # before anything else is read
    folder, meta = read_meta(path)
    if require_digest:
        refuse_unverified(meta, folder / META_NAME)
    if backend == "onnx":
        runner: Any = OnnxRunner(folder / ONNX_NAME, meta)
    else:
        # the path as given: a trusted .pt is loaded, not the folder's safetensors
        runner = TorchRunner(Path(path), resolve_device(device), trust_pickle)
    # The face detector runs where the model does (the ONNX backend: on the CPU).
    where = str(runner.device) if backend == "torch" else "cpu"
    return FaceModel(
        folder, meta, runner, read_centroids(folder), backend, method, threshold, where
    )


def predict_files(
    model: FaceModel,
    inputs: Iterable[str | Path],
    top_k: int = 5,
    chunk_size: int = 64,
    detect: bool = False,
) -> Iterator[Prediction]:
    """Predictions for files and folders, in input order, ``chunk_size`` faces at a time.

    Args:
        model: a loaded :class:`~facecls.inference.model.FaceModel`.
        inputs: files and folders (folders are walked recursively).
        detect: find every face of each photo (MTCNN) even when the model's own pipeline is the
            centre crop; a model trained with ``align``/``box`` always does.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    paths = expand_paths(inputs, images_only=False)  # other files become error rows
    yield from predict_items(model, face_items(paths, model, detect or model.detects), top_k,
                             chunk_size)  # fmt: skip


# What a row says about where its face is, kept from the reader's row.
PLACE = ("path", "face", "faces", "box", "landmarks", "detection", "image")


def predict_items(
    model: FaceModel, items: Iterable[FaceItem], top_k: int = 5, chunk_size: int = 64
) -> Iterator[Prediction]:
    """The answers for the faces of ``items`` (:func:`~facecls.inference.faces.face_items`,
    :func:`~facecls.inference.faces.photo_items`), in their order, ``chunk_size`` rows a pass;
    rows without a face pass through."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    pending: list[FaceItem] = []

    def flush() -> Iterator[Prediction]:
        faces = [item for item in pending if item.pixels is not None]
        if faces:
            batch = np.stack([item.pixels for item in faces])
            answers = iter(model.decide(*model.outputs(batch), top_k=top_k))
        for item in pending:
            if item.pixels is None:
                yield item.template
            else:
                place = {key: getattr(item.template, key) for key in PLACE}
                yield replace(next(answers), **place)
        pending.clear()

    for item in items:
        pending.append(item)
        if len(pending) >= chunk_size:  # error rows count too, so memory stays bounded
            yield from flush()
    yield from flush()
