"""Name the faces in a video file or a webcam stream, frame by frame (OpenCV, ``facecls[video]``).

``facecls predict MODEL --video clip.mp4|0 [--every N] [--annotate out.mp4]`` reads every
``N``-th frame, names its faces (every detected face with ``--detect``, else the frame as one
face, cut as training cut its photos) and writes one CSV row per face with the frame number and
its time. ``--annotate`` writes the video again with boxes and names drawn on every frame (a
frame between two read ones shows the last answers). A webcam runs until Ctrl-C; the CSV then
holds every frame read so far.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facecls.atomic import write_csv_stream
from facecls.colours import KNOWN, UNKNOWN, bgr
from facecls.data.sources import DataError
from facecls.inference.annotate import place_labels
from facecls.inference.faces import closest_text
from facecls.inference.model import FaceModel, load_model
from facecls.inference.outputs import (
    check_distinct,
    check_output,
    csv_header,
    record_output,
    recorded_output,
)
from facecls.inference.photos import photo_faces
from facecls.progress import bar as progress_bar

HEADER = ["frame", "time_s", "face", "faces", "box", "decision", "identity", "score", "top1",
          "top1_probability", "closest"]  # fmt: skip
WEBCAM_FPS = 30.0  # when a camera does not say
ANNOTATED = "annotated video"  # the kind facecls records the videos it writes as


def require_cv2() -> Any:
    """Import OpenCV (it reads and writes videos) or explain how to install the extra."""
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            "reading videos needs OpenCV: pip install 'facecls[video]' "
            "(or pip install 'opencv-python-headless<5')"
        ) from error
    return cv2


def open_source(source: str | int | Path) -> tuple[Any, bool]:
    """An opened ``cv2.VideoCapture`` and whether it is a camera (an integer index).

    Raises:
        DataError: the file is missing or not a video OpenCV can read; no camera at that index.
    """
    cv2 = require_cv2()
    # OpenCV's own warnings (a missing camera, a backend it lacks) would precede our one line
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's (read when a file opens)
    text = str(source)
    camera = text.isdigit()
    if not camera and not Path(text).is_file():
        raise DataError(f"{text}: no such video file")
    capture = cv2.VideoCapture(int(text) if camera else text)
    ok = capture.isOpened() and capture.read()[0]
    if not ok:
        capture.release()
        what = f"no camera at index {text}" if camera else "not a video OpenCV can read"
        raise DataError(f"{text}: {what}")
    capture.release()  # read again from the start
    capture = cv2.VideoCapture(int(text) if camera else text)
    return capture, camera


def check_video_outputs(
    source: str | int | Path, out: str | Path, annotate: str | Path | None
) -> None:
    """Refuse, before any work, a CSV or annotated video that would replace the video read, an
    existing file that is not a previous output of the same kind, or one file named twice.

    Raises:
        facecls.inference.outputs.OutputError: naming the option and the path.
    """
    check_distinct({"--out": out, "--annotate": annotate})
    given = [] if str(source).isdigit() else [Path(source)]
    check_output(out, "--out", "video predictions CSV", csv_header(HEADER[:-1]), given)  # also
    # a CSV written before the ``closest`` column: an earlier output all the same
    if annotate is not None:
        check_output(annotate, "--annotate", ANNOTATED, recorded_output(ANNOTATED), given)


def _frames(capture: Any, camera: bool) -> Iterator[np.ndarray]:
    """BGR frames until the end of the stream (or Ctrl-C on a camera)."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    except KeyboardInterrupt:
        if not camera:
            raise


def _draw(cv2: Any, frame: np.ndarray, answers: list[tuple[tuple[int, ...], str, bool]]) -> None:
    thick = max(1, frame.shape[1] // 320)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick
    sizes, heights = [], []
    for (x, y, w, h), name, known in answers:
        colour = bgr(KNOWN if known else UNKNOWN)  # the colours of every drawn answer
        cv2.rectangle(frame, (x, y), (x + w, y + h), colour, thick)
        (tw, th), base = cv2.getTextSize(name, font, scale, thick)
        sizes.append((tw + 2, th + base + 2))
        heights.append(th)
    # names where they cover no other name (the annotated photos' rule)
    spots = place_labels([a[0] for a in answers], sizes, (frame.shape[1], frame.shape[0]))
    for (_, name, known), (tx, ty), th in zip(answers, spots, heights, strict=True):
        origin = (int(tx) + 1, int(ty) + 1 + th)  # putText's origin: the text's baseline
        cv2.putText(frame, name, origin, font, scale, bgr(KNOWN if known else UNKNOWN), thick)


def predict_video(
    model: str | Path | FaceModel,
    source: str | int | Path,
    out: str | Path = "predictions.csv",
    every: int = 1,
    annotate: str | Path | None = None,
    detect: bool = False,
    device: str = "auto",
    log: Callable[[str], None] = print,
    show_progress: bool = False,
    method: str | None = None,
    threshold: float | None = None,
    backend: str = "torch",
    trust_pickle: bool = False,
    require_digest: bool = False,
    batch_size: int = 64,
) -> dict[str, int]:
    """``facecls predict --video``: the faces of every ``every``-th frame into the CSV ``out``.

    Args:
        source: a video file, or a camera index (``0``).
        annotate: write the video with boxes and names here (``.mp4`` or ``.avi``).
        detect: every face MTCNN finds; otherwise the frame is one face (centre crop).
        show_progress: a bar over the frames (a line every 10 % off a terminal; a camera,
            whose length is unknown, a count).
        method: open-set score instead of the bundle's (as ``load_model`` takes it).
        threshold: open-set threshold instead of the calibrated one.
        backend: ``torch`` or ``onnx``.
        trust_pickle: allow ``.pt``/``.pth`` weights beside a ``model.json``.
        require_digest: refuse a bundle whose ``model.json`` records no weights digest.
        batch_size: a frame's faces per forward pass (``--batch-size``).

    Returns:
        Rows per decision, and ``frames`` read.
    """
    if every < 1:
        raise ValueError(f"--every must be at least 1, got {every}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    check_video_outputs(source, out, annotate)
    if not isinstance(model, FaceModel):
        model = load_model(model, device, backend, method, threshold, trust_pickle, require_digest)
    cv2 = require_cv2()
    capture, camera = open_source(source)
    fps = capture.get(cv2.CAP_PROP_FPS) or WEBCAM_FPS
    counts: dict[str, int] = {"frames": 0}
    writer, partial = None, None
    if annotate is not None:
        target = Path(annotate)
        partial = target.with_name(f".{target.stem}.partial{target.suffix}")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        codec = "mp4v" if target.suffix.lower() == ".mp4" else "MJPG"
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*codec), fps,
                                 (width, height))  # fmt: skip
        if not writer.isOpened():
            capture.release()
            raise DataError(f"{target}: OpenCV cannot write this video type (use .mp4 or .avi)")

    length = 0 if camera else max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    counter = progress_bar(length, "video", show_progress, unit="frame")

    def rows() -> Iterator[list[Any]]:
        shown: list[tuple[tuple[int, ...], str, bool]] = []
        for index, frame in enumerate(_frames(capture, camera)):
            counts["frames"] += 1
            counter.update(1)
            if index % every == 0:
                photo = photo_faces(model, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), detect)
                answers = (
                    model.decide(*model.outputs(photo.faces, batch_size), top_k=1)
                    if len(photo.faces)
                    else []
                )
                shown = []
                if not answers:
                    counts["no_face"] = counts.get("no_face", 0) + 1
                    yield [index, f"{index / fps:.3f}", "", 0, "", "no_face", "", "", "", "", ""]
                for i, (box, a) in enumerate(zip(photo.boxes, answers, strict=True)):
                    counts[a.decision] = counts.get(a.decision, 0) + 1
                    # a rejected face shows its best guess, as annotated photos do (Hershey
                    # fonts are ASCII: no em dash)
                    shown.append((box, a.label(dash="-"), a.decision == "known"))
                    top = a.top_k[0]
                    yield [index, f"{index / fps:.3f}", i, len(answers), " ".join(map(str, box)),
                           a.decision, a.identity, f"{a.score:.6f}", top[0], f"{top[1]:.6f}",
                           closest_text(a)]  # fmt: skip
            if writer is not None:
                _draw(cv2, frame, shown)
                writer.write(frame)

    try:
        write_csv_stream(Path(out), HEADER, rows())
    except BaseException:
        if partial is not None:
            partial.unlink(missing_ok=True)  # no half-written video left behind
        raise
    finally:
        counter.close()
        capture.release()
        if writer is not None:
            writer.release()
    if partial is not None:
        os.replace(partial, Path(annotate))  # type: ignore[arg-type]
        record_output(Path(annotate), ANNOTATED)  # so the next run may replace it
    summary = ", ".join(f"{n} {d}" for d, n in sorted(counts.items()) if d != "frames")
    log(f"Video: {counts['frames']} frames read, every {every}: {summary or 'no face'} -> {out}")
    return counts
