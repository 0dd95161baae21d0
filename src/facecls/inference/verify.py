"""Embeddings of the faces in photos, and 1:1 verification: "is this the same person?".

``facecls embed`` writes one L2-normalised embedding per face (the model's own face pipeline:
the training centre crop, or ``--detect``) to safetensors plus a CSV index. ``facecls verify``
compares two photos by the cosine similarity of their faces' embeddings, against a threshold
calibrated when the model was trained: on every pair of validation-part images, the lowest
similarity that accepts at most ``far`` (1 % by default) of the pairs of different people. It is
stored as the ``verify`` entry of the bundle's ``model.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import numpy as safetensors_numpy

from facecls.atomic import atomic_path, write_csv_stream
from facecls.bundle import WEIGHTS_NAME, BundleError
from facecls.data.sources import DataError
from facecls.inference.faces import Prediction, expand_paths, face_items
from facecls.inference.model import FaceModel, load_model
from facecls.inference.outputs import OutputError, check_output, csv_header, safetensors_format
from facecls.numbers import finite
from facecls.openset import l2_normalize
from facecls.progress import bar as progress_bar

# model.json entries that change embeddings (enrolling people or recalibrating does not)
EMBEDDING_KEYS = ("architecture", "image_size", "crop", "mean", "std", "flip_tta")


def model_key(model: FaceModel) -> str:
    """What embeddings depend on: the weights file (inode, size, mtime; the service's enrolled
    versions share it as a hard link) and the preprocessing in ``model.json``."""
    digest = hashlib.sha256()
    digest.update(json.dumps([model.meta.get(k) for k in EMBEDDING_KEYS]).encode())
    weights = model.folder / WEIGHTS_NAME
    if weights.exists():
        stat = weights.stat()
        digest.update(f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(model.backend.encode())
    return digest.hexdigest()


# What ``facecls embed`` writes: the safetensors ``format`` and the index CSV's columns.
EMBEDDINGS_FORMAT = "facecls-embeddings"
INDEX_HEADER = ("row", "photo", "face", "box")


@dataclass
class FaceEmbeddings:
    """Faces found in photos and their unit embeddings.

    Attributes:
        faces: one ``Prediction`` row per face (``path``, ``face``, ``box``; no decision).
        vectors: float32 ``(len(faces), D)``, L2-normalised.
        skipped: ``error``/``no_face`` rows of photos without a usable face.
    """

    faces: list[Prediction]
    vectors: np.ndarray
    skipped: list[Prediction]


def embed_photos(
    model: FaceModel,
    inputs: Iterable[str | Path],
    detect: bool = False,
    chunk_size: int = 64,
    images_only: bool = True,
    show_progress: bool = False,
    desc: str = "embed",
) -> FaceEmbeddings:
    """Embed every face of the photos and folders ``inputs``, ``chunk_size`` faces per pass.

    Args:
        detect: every face MTCNN finds (always so for a model trained with ``--faces
            align``/``box``); otherwise a photo is one face, cut as training cut it.
        images_only: under folders, skip files without an image extension silently (otherwise
            they become ``skipped`` rows).
        show_progress: a bar over the photos (a line every 10 % off a terminal), named ``desc``.
    """
    faces: list[Prediction] = []
    chunks: list[np.ndarray] = []
    skipped: list[Prediction] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            chunks.append(l2_normalize(model.outputs(np.stack(pending))[1]).astype(np.float32))
            pending.clear()

    paths = list(expand_paths(inputs, images_only))  # counted, for the progress bar
    counter = progress_bar(len(paths), desc, show_progress, unit="photo")
    for item in face_items(paths, model, detect or model.detects):
        if not item.template.face:  # a photo's first row: its main face, or why it has none
            counter.update(1)
        if item.pixels is None:
            skipped.append(item.template)
            continue
        faces.append(item.template)
        pending.append(item.pixels)
        if len(pending) >= chunk_size:
            flush()
    flush()
    counter.close()
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return FaceEmbeddings(faces, vectors, skipped)


def box_text(box: tuple[int, int, int, int] | None) -> str:
    """``"x y w h"`` of a detection box, empty for a whole-photo face."""
    return "" if box is None else " ".join(str(v) for v in box)


def compared_text(
    faces: int, face: int | None, box: tuple[int, int, int, int] | None, option: str
) -> str:
    """Which face of a photo with several was compared and how to choose another, ``option``
    being the way to ask (``--face N``, the service's ``face_a=N``)."""
    return (
        f"{faces} faces; compared face {face} (box {box_text(box)}); another one: {option} "
        "(0 = the main face)"
    )


def write_embeddings(
    found: FaceEmbeddings, out: Path, model: str | None = None
) -> tuple[Path, Path]:
    """``out`` (safetensors, tensor ``embeddings``) and ``out`` with ``.csv``: one row per face
    (``row, photo, face, box``), row *i* of the CSV being row *i* of the tensor. ``model`` (the
    :func:`model_key` of the model that embedded them) lets ``search`` use the file as a
    gallery for that model only."""
    out = Path(out)
    index = out.with_suffix(".csv")
    metadata = {"format": EMBEDDINGS_FORMAT, "index": index.name}
    if model is not None:
        metadata["model"] = model
    with atomic_path(out, found.vectors.nbytes) as tmp:
        safetensors_numpy.save_file(
            {"embeddings": np.ascontiguousarray(found.vectors, dtype=np.float32)}, str(tmp),
            metadata=metadata,
        )  # fmt: skip
    rows = (
        [i, f.path, "" if f.face is None else f.face, box_text(f.box)]
        for i, f in enumerate(found.faces)
    )
    write_csv_stream(index, INDEX_HEADER, rows)
    return out, index


def embed(
    model: str | Path | FaceModel,
    photos: Sequence[str | Path],
    out: str | Path,
    detect: bool = False,
    device: str = "auto",
    log: Callable[[str], None] = print,
    require_digest: bool = False,
    show_progress: bool = False,
) -> FaceEmbeddings:
    """``facecls embed``: embed the faces of ``photos`` into ``out`` (+ a ``.csv`` index).

    Unreadable files are listed and skipped. ``show_progress``: a bar over the photos (a line
    every 10 % off a terminal). Raises :class:`DataError` when no face is left, and
    :class:`~facecls.inference.outputs.OutputError` (before any work) when ``out`` or its index
    would replace an input or a file that is not an earlier ``embed`` output.
    """
    check_embed_out(Path(out), photos)
    from_model = model if isinstance(model, FaceModel) else _load(model, device, require_digest)
    found = embed_photos(from_model, photos, detect, images_only=True,
                         show_progress=show_progress)  # fmt: skip
    for row in found.skipped:
        log(f"  skipped {row.path}: {row.reason}")
    if not found.faces:
        raise DataError(f"no face to embed in {', '.join(map(str, photos))}")
    vectors, index = write_embeddings(found, Path(out), model_key(from_model))
    log(
        f"Embedded {len(found.faces)} face(s) ({found.vectors.shape[1]} dimensions, "
        f"{len(found.skipped)} skipped) -> {vectors} + {index.name}"
    )
    return found


def check_embed_out(out: Path, photos: Sequence[str | Path]) -> None:
    """Refuse an ``out`` whose index would be itself, or that would replace what the user gave."""
    index = out.with_suffix(".csv")
    if index == out:
        raise OutputError(
            f"--out {out}: the embeddings need a file of their own (e.g. "
            f"{out.with_suffix('.safetensors')}); their CSV index is written beside it"
        )
    check_output(out, "--out", "embeddings", safetensors_format(EMBEDDINGS_FORMAT), photos)
    check_output(index, "--out", "embeddings index CSV", csv_header(INDEX_HEADER), photos)


def _load(path: str | Path, device: str, require_digest: bool = False) -> FaceModel:
    return load_model(path, device=device, require_digest=require_digest)


# ---- 1:1 verification ----------------------------------------------------------------------


@dataclass
class Verification:
    """The answer of :func:`verify`: similarity, the threshold used and the decision.

    ``found``: the faces found in each photo; ``faces`` the two compared (their ``face`` is the
    index in the photo, main face first).
    """

    similarity: float
    threshold: float
    same: bool
    far: float | None
    faces: tuple[Prediction, Prediction]
    found: tuple[int, int] = (1, 1)

    def line(self) -> str:
        """One human line, and one more per photo with several faces (which one was compared)."""
        answer = "same person" if self.same else "different people"
        at = f" (FAR {self.far:.1%})" if self.far is not None else ""
        lines = [f"{answer}: similarity {self.similarity:.4f}, threshold {self.threshold:.4f}{at}"]
        for face, count in zip(self.faces, self.found, strict=True):
            if count > 1:
                lines.append(
                    f"  {face.path}: {compared_text(count, face.face, face.box, '--face N')}"
                )
        return "\n".join(lines)


def stored_threshold(
    model: FaceModel, threshold: float | None, what: str = "--threshold"
) -> tuple[float, float | None]:
    """``threshold`` if given, else the bundle's calibrated one with its FAR.

    Args:
        what: how the message names a given threshold (the service: its ``threshold`` field).

    Raises:
        NumberError: the given threshold is not a finite number (with -inf every pair would be
            "the same person").
        BundleError: no threshold given and none calibrated in the bundle (the message says
            what was missing).
    """
    if threshold is not None:
        return finite(threshold, what), None
    entry = model.meta.get("verify") or {}
    if "threshold" not in entry:
        why = entry.get("missing") or (
            "the model was calibrated before every model got one; facecls calibrate RUN_FOLDER "
            "sets it from the impostor pairs of its validation part"
        )
        raise BundleError(
            f"{model.folder}: no calibrated verification threshold in model.json: {why}; or "
            "give --threshold (the service: a threshold field)"
        )
    limit = finite(entry["threshold"], f"{model.folder / 'model.json'} verify threshold")
    return limit, entry.get("far")


def check_photo(photo: str | Path) -> None:
    """Refuse a folder where one photo is expected (its first photo is not silently used).

    Raises:
        DataError: naming the folder.
    """
    if Path(photo).is_dir():
        raise DataError(f"{photo}: is a folder; give one photo (its main face is compared)")


def photo_face(
    model: FaceModel, photo: str | Path, detect: bool, face: int | None = None,
    any_photo: bool = False,
) -> tuple[Prediction, np.ndarray, int]:  # fmt: skip
    """Face ``face`` of one photo (default the main face, 0), its unit embedding, and how many
    faces the photo holds; with ``any_photo`` a photo of one face gives it whatever ``face``.

    Raises:
        DataError: the photo is a folder, cannot be read, holds no face, or fewer than
            ``face + 1`` (the message names it).
    """
    check_photo(photo)
    found = embed_photos(model, [photo], detect, images_only=False)
    if not found.faces:
        reason = found.skipped[0].reason if found.skipped else "no face found"
        raise DataError(f"{photo}: {reason}")
    index = 0 if face is None or (any_photo and len(found.faces) == 1) else int(face)
    if not 0 <= index < len(found.faces):
        raise DataError(
            f"{photo}: --face {index}: the photo holds {len(found.faces)} face(s), numbered "
            f"0 to {len(found.faces) - 1} (0 = the main face)"
        )
    return found.faces[index], found.vectors[index], len(found.faces)


def verify(
    model: str | Path | FaceModel,
    a: str | Path,
    b: str | Path,
    threshold: float | None = None,
    detect: bool = False,
    device: str = "auto",
    face: Sequence[int] | None = None,
    require_digest: bool = False,
) -> Verification:
    """``facecls verify``: are the faces of photos ``a`` and ``b`` the same person?

    Args:
        threshold: cosine similarity at or above which they are; default the bundle's calibrated
            one (``model.json`` ``verify``).
        detect: compare detected faces (always so for a model trained on detected faces).
        face: which face of a photo with several to compare: one index for both photos (a
            photo with one face uses it), or one for each; default the main face (0).
    """
    check_photo(a)
    check_photo(b)
    model = model if isinstance(model, FaceModel) else _load(model, device, require_digest)
    limit, far = stored_threshold(model, threshold)
    picks = list(face or [])
    if len(picks) > 2 or any(int(i) < 0 for i in picks):
        raise ValueError("--face takes one face index for both photos, or one for each (0 = main)")
    wanted = (picks + picks[-1:] if len(picks) == 1 else picks) or [None, None]
    both = len(picks) == 1
    face_a, vec_a, count_a = photo_face(model, a, detect, wanted[0], both)
    face_b, vec_b, count_b = photo_face(model, b, detect, wanted[1], both)
    similarity = float(np.dot(vec_a.astype(np.float64), vec_b.astype(np.float64)))
    return Verification(
        similarity, limit, similarity >= limit, far, (face_a, face_b), (count_a, count_b)
    )
