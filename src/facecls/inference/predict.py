"""Predict identities for image files, streamed in chunks, into rows of a CSV.

Paths are expanded lazily and read one chunk at a time with the one image loader
(:func:`facecls.data.images.load_rgb`), so memory does not grow with the number of photos. A file
that cannot be read becomes an ``error`` row with the reason; with ``detect`` every face of a
photo becomes a row with its box, and a photo without a face a ``no_face`` row.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facecls.atomic import write_csv_stream
from facecls.data.sources import DataError
from facecls.inference.annotate import Annotator
from facecls.inference.faces import Prediction, check_top_k, closest_text, expand_paths
from facecls.inference.model import FaceModel, load_model, predict_files
from facecls.inference.outputs import check_output, csv_header
from facecls.progress import bar as progress_bar

# The columns every predictions CSV starts with (then the top-k pairs): how an earlier one is known.
FIRST_COLUMNS = ("path", "face", "faces", "box", "landmarks", "decision", "identity", "score")


def prediction_header(top_k: int) -> list[str]:
    """Columns of ``predictions.csv``: :data:`FIRST_COLUMNS`, the top-k pairs, ``reason``
    and ``closest`` (a rejected face's best guess, score and threshold)."""
    header = list(FIRST_COLUMNS)
    for r in range(1, top_k + 1):
        header += [f"top{r}", f"top{r}_probability"]
    return [*header, "reason", "closest"]


def prediction_row(prediction: Prediction, top_k: int) -> list[Any]:
    """One CSV row; missing top-k cells (error rows, fewer identities than k) are empty."""
    p = prediction
    box = "" if p.box is None else " ".join(str(v) for v in p.box)
    points = "" if p.landmarks is None else " ".join(f"{x:g} {y:g}" for x, y in p.landmarks)
    score = "" if np.isnan(p.score) else f"{p.score:.6f}"
    row: list[Any] = [p.path or "", "" if p.face is None else p.face,
                      "" if p.faces is None else p.faces, box, points, p.decision, p.identity,
                      score]  # fmt: skip
    for r in range(top_k):
        row += [p.top_k[r][0], f"{p.top_k[r][1]:.6f}"] if r < len(p.top_k) else ["", ""]
    return [*row, p.reason, closest_text(p)]


def predict_to_csv(
    model: FaceModel,
    inputs: Sequence[str | Path],
    out: Path,
    top_k: int = 5,
    chunk_size: int = 64,
    detect: bool = False,
    log: Callable[[str], None] = print,
    annotate: Path | None = None,
    show_progress: bool = False,
) -> dict[str, int]:
    """Stream predictions of ``inputs`` into the CSV ``out``; returns counts per decision.

    ``annotate``: a folder that receives each photo with its boxes and names drawn on it. The
    CSV and that folder are never read back when they lie in an input folder.
    """
    annotator = None if annotate is None else Annotator(annotate, inputs)
    photo: list[Prediction] = []  # the rows of the photo being read, for the annotator

    def draw() -> None:
        if annotator is not None and photo and photo[0].path:
            annotator.write(photo[0].path, photo)
        photo.clear()

    k = min(top_k, len(model.class_names))
    counts: dict[str, int] = {}
    multi = 0

    own = [Path(out)] + ([] if annotate is None else [Path(annotate)])
    paths = list(expand_paths(inputs, images_only=False, exclude=own))  # counted, for progress
    bar = progress_bar(len(paths), "predict", show_progress, unit="photo")
    last: str | None = None

    def rows() -> Iterator[list[Any]]:
        nonlocal multi, last
        for prediction in predict_files(model, paths, top_k, chunk_size, detect):
            if prediction.path != last:  # a photo's faces come one after another
                last = prediction.path
                bar.update(1)
            counts[prediction.decision] = counts.get(prediction.decision, 0) + 1
            if prediction.decision == "error":
                log(f"  {prediction.path}: {prediction.reason}")
            if prediction.face == 1:
                multi += 1
            if photo and photo[0].path != prediction.path:
                draw()
            photo.append(prediction)
            yield prediction_row(prediction, k)
        draw()

    try:
        write_csv_stream(Path(out), prediction_header(k), rows())
    finally:
        bar.close()
    summary = ", ".join(f"{n} {d}" for d, n in sorted(counts.items())) or "no images"
    extra = f"; {multi} photo(s) with several faces" if multi else ""
    log(f"Predictions: {summary}{extra} -> {out}")
    if annotator is not None:
        log(f"Annotated photos -> {annotator.folder}")
    return counts


def check_out(out: Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an ``out`` that is a folder, one of the ``inputs``, an existing file that is not
    a predictions CSV, or cannot be written, before any work is done. (A missing photo or
    folder is an ``error`` row, "no such file or folder", like any bad file.)

    Raises:
        DataError: naming the path and the problem.
    """
    check_output(out, "--out", "predictions CSV", csv_header(FIRST_COLUMNS), inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as error:
        raise DataError(f"{out}: cannot write the CSV there ({error.strerror or error})") from error


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
    annotate: str | Path | None = None,
    show_progress: bool = False,
    require_digest: bool = False,
) -> dict[str, int]:
    """``facecls predict``: load a model and write the predictions of files/folders to a CSV.

    Args:
        model: a run folder, a bundle, or a loaded :class:`~facecls.inference.model.FaceModel`.
        threshold: open-set threshold instead of the calibrated one (score >= it is known).
        method: open-set score instead of the bundle's (``msp``, ``energy``, ``centroid``).
        trust_pickle: allow ``.pt``/``.pth`` weights (read with ``torch.load(weights_only=True)``);
            refused otherwise.
        detect: find every face of each photo (MTCNN), also for a ``centre`` model; a model
            trained with the ``align``/``box`` pipeline always does.
        annotate: a folder for copies of the photos with boxes and names drawn on them.
        require_digest: refuse a bundle whose ``model.json`` records no weights digest.

    Returns:
        Rows per decision (``known``, ``unknown``, ``error``, ``no_face``).
    """

    check_top_k(top_k)
    check_out(Path(out), inputs)  # before the model is loaded
    if not isinstance(model, FaceModel):
        model = load_model(model, device, backend, method, threshold, trust_pickle, require_digest)
    log(f"Model: {model!r}")
    if model.calibration_note:
        log(model.calibration_note)
    folder = None if annotate is None else Path(annotate)
    return predict_to_csv(
        model,
        inputs,
        Path(out),
        top_k,
        chunk_size,
        detect,
        log,
        annotate=folder,
        show_progress=show_progress,
    )
