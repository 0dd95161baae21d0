"""Predict identities for image files, streamed in chunks, into rows of a CSV.

Paths are expanded lazily and read one chunk at a time with the one image loader
(:func:`facecls.data.images.load_rgb`), so memory does not grow with the number of photos. A file
that cannot be read becomes an ``error`` row with the reason; with ``detect`` every face of a
photo becomes a row with its box, and a photo without a face a ``no_face`` row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facecls.data.images import IMAGE_EXTENSIONS, ImageError, is_junk, load_rgb

if TYPE_CHECKING:
    from facecls.inference import FaceModel, Prediction


def expand_paths(inputs: Iterable[str | Path], images_only: bool = True) -> Iterator[Path]:
    """Files as given, and the files under folders (recursively, sorted, junk skipped).

    Under folders only image files are yielded, unless ``images_only`` is false: then every
    non-junk file is, so a non-image file is reported (``unsupported file type``) as training
    reports it. A missing path is yielded as it is, so it is reported as an ``error`` row.
    """
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not is_junk(Path(d)))
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if not is_junk(file) and (
                    not images_only or file.suffix.lower() in IMAGE_EXTENSIONS
                ):
                    yield file


@dataclass
class _Item:
    """One face to classify (``pixels``), or a finished row (``template`` alone) to pass on."""

    template: Prediction
    pixels: np.ndarray | None = None  # uint8 (3, S, S)


def _items(
    paths: Iterable[Path], model: FaceModel, detect: Callable[[np.ndarray], list] | None
) -> Iterator[_Item]:
    from facecls.detect import crop_face
    from facecls.inference import Prediction

    for path in paths:
        try:
            if detect is None:
                pixels = model.load_face(path)
                yield _Item(Prediction("", path=str(path)), pixels.transpose(2, 0, 1))
                continue
            photo = load_rgb(path)
        except ImageError as error:
            yield _Item(Prediction("error", path=str(path), reason=str(error)))
            continue
        boxes = detect(photo)
        if not boxes:
            yield _Item(Prediction("no_face", path=str(path), faces=0, reason="no face found"))
        for i, box in enumerate(boxes):
            face = crop_face(photo, box, model.image_size, crop=model.crop)
            row = Prediction("", path=str(path), face=i, faces=len(boxes), box=box.as_tuple())
            yield _Item(row, face.transpose(2, 0, 1))


def predict_files(
    model: FaceModel,
    inputs: Iterable[str | Path],
    top_k: int = 5,
    chunk_size: int = 64,
    detect: bool = False,
) -> Iterator[Prediction]:
    """Predictions for files and folders, in input order, ``chunk_size`` faces at a time.

    Args:
        model: a loaded :class:`~facecls.inference.FaceModel`.
        inputs: files and folders (folders are walked recursively).
        detect: find faces with OpenCV's Haar cascade (the ``facecls[detect]`` extra) and crop
            each as LFW is cropped; otherwise each file is taken to be a face photo.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    detector = None
    if detect:
        from facecls.detect import FaceDetector

        detector = FaceDetector()
    pending: list[_Item] = []

    def flush() -> Iterator[Prediction]:
        faces = [item for item in pending if item.pixels is not None]
        if faces:
            batch = np.stack([item.pixels for item in faces])
            answers = iter(model.decide(*model.outputs(batch), top_k=top_k))
        for item in pending:
            if item.pixels is None:
                yield item.template
            else:
                answer = next(answers)
                yield replace(
                    answer, path=item.template.path, face=item.template.face,
                    faces=item.template.faces, box=item.template.box,
                )  # fmt: skip
        pending.clear()

    paths = expand_paths(inputs, images_only=False)  # other files become error rows
    for item in _items(paths, model, detector):
        pending.append(item)
        if len(pending) >= chunk_size:  # error rows count too, so memory stays bounded
            yield from flush()
    yield from flush()


def prediction_header(top_k: int) -> list[str]:
    """Columns of ``predictions.csv``."""
    header = ["path", "face", "faces", "box", "decision", "identity", "score"]
    for r in range(1, top_k + 1):
        header += [f"top{r}", f"top{r}_probability"]
    return [*header, "reason"]


def prediction_row(prediction: Prediction, top_k: int) -> list[Any]:
    """One CSV row; missing top-k cells (error rows, fewer identities than k) are empty."""
    p = prediction
    box = "" if p.box is None else " ".join(str(v) for v in p.box)
    score = "" if np.isnan(p.score) else f"{p.score:.6f}"
    row: list[Any] = [p.path or "", "" if p.face is None else p.face,
                      "" if p.faces is None else p.faces, box, p.decision, p.identity, score]  # fmt: skip
    for r in range(top_k):
        row += [p.top_k[r][0], f"{p.top_k[r][1]:.6f}"] if r < len(p.top_k) else ["", ""]
    return [*row, p.reason]


def predict_to_csv(
    model: FaceModel,
    inputs: Sequence[str | Path],
    out: Path,
    top_k: int = 5,
    chunk_size: int = 64,
    detect: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Stream predictions of ``inputs`` into the CSV ``out``; returns counts per decision."""
    from facecls.report import write_csv_stream

    k = min(top_k, len(model.class_names))
    counts: dict[str, int] = {}
    multi = 0

    def rows() -> Iterator[list[Any]]:
        nonlocal multi
        for prediction in predict_files(model, inputs, top_k, chunk_size, detect):
            counts[prediction.decision] = counts.get(prediction.decision, 0) + 1
            if prediction.decision == "error":
                log(f"  {prediction.path}: {prediction.reason}")
            if prediction.face == 1:
                multi += 1
            yield prediction_row(prediction, k)

    write_csv_stream(Path(out), prediction_header(k), rows())
    summary = ", ".join(f"{n} {d}" for d, n in sorted(counts.items())) or "no images"
    extra = f"; {multi} photo(s) with several faces" if detect and multi else ""
    log(f"Predictions: {summary}{extra} -> {out}")
    return counts


def predict(
    model: str | Path | FaceModel,
    inputs: Sequence[str | Path],
    out: str | Path = "predictions.csv",
    top_k: int = 5,
    detect: bool = False,
    backend: str = "torch",
    threshold: float | None = None,
    method: str | None = None,
    device: str = "auto",
    chunk_size: int = 64,
    log: Callable[[str], None] = print,
    trust_pickle: bool = False,
) -> dict[str, int]:
    """``facecls predict``: load a model and write the predictions of files/folders to a CSV.

    Args:
        model: a run folder, a bundle, or a loaded :class:`~facecls.inference.FaceModel`.
        threshold: open-set threshold instead of the calibrated one (score >= it is known).
        method: open-set score instead of the bundle's (``msp``, ``energy``, ``centroid``).
        trust_pickle: allow ``.pt``/``.pth`` weights (read with ``torch.load(weights_only=True)``);
            refused otherwise.

    Returns:
        Rows per decision (``known``, ``unknown``, ``error``, ``no_face``).
    """
    from facecls.inference import FaceModel, load_model

    if not isinstance(model, FaceModel):
        model = load_model(model, device, backend, method, threshold, trust_pickle)
    log(f"Model: {model!r}")
    return predict_to_csv(model, inputs, Path(out), top_k, chunk_size, detect, log)
