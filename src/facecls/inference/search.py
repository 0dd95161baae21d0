"""1:N search: the gallery faces closest to a photo's face, by cosine similarity.

A gallery is a folder of photos (:class:`~facecls.inference.gallery.Gallery`, embedded once and
cached) or the file ``facecls embed`` wrote (:class:`~facecls.inference.gallery_file.GalleryFile`);
both are searched through a FAISS vector index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facecls.bundle import BundleError
from facecls.data.sources import DataError
from facecls.inference.faces import Prediction, check_top_k
from facecls.inference.gallery import Gallery, Match, marked, matches_of
from facecls.inference.gallery_file import GalleryFile, open_gallery
from facecls.inference.model import FaceModel, load_model
from facecls.inference.verify import (
    check_photo,
    model_key,
    photo_face,
    stored_threshold,
)
from facecls.vector_index import size_note

__all__ = [
    "Gallery",
    "GalleryFile",
    "Match",
    "SearchResult",
    "marked",
    "matches_of",
    "model_key",
    "open_gallery",
    "search",
    "verify_threshold",
]


@dataclass
class SearchResult:
    """The query's face, the closest gallery faces (most similar first), the gallery files
    that were skipped (``(path, reason)``), and the verify threshold the matches were marked
    against with its false-accept rate (``None``: the model has none; nothing is marked)."""

    query: Prediction
    matches: list[Match]
    gallery_faces: int
    skipped: list[tuple[str, str]]
    threshold: float | None = None
    far: float | None = None


def verify_threshold(model: FaceModel) -> tuple[float | None, float | None]:
    """The model's calibrated verify threshold and its false-accept rate, ``(None, None)``
    when it has none (bundles from before ``facecls verify``).

    Raises:
        facecls.numbers.NumberError: the stored threshold is not a finite number.
    """
    try:
        return stored_threshold(model, None)
    except BundleError:
        return None, None


def search(
    model: str | Path | FaceModel,
    photo: str | Path,
    gallery: str | Path | Gallery,
    top_k: int = 5,
    detect: bool = False,
    device: str = "auto",
    log: Callable[[str], None] = print,
    require_digest: bool = False,
    show_progress: bool = False,
) -> SearchResult:
    """``facecls search``: the ``top_k`` gallery faces closest to the (main) face of ``photo``,
    each marked ``same`` when its similarity reaches the model's verify threshold (the one
    ``facecls verify`` decides with).

    ``show_progress``: a bar over the gallery photos embedded (all of them the first time).

    Raises:
        DataError: the photo cannot be read or has no face; the gallery is not a folder.
        ValueError: ``top_k`` below 1.
    """
    check_top_k(top_k)
    check_photo(photo)
    if not isinstance(model, FaceModel):
        model = load_model(model, device=device, require_digest=require_digest)
    if not isinstance(gallery, Gallery):
        gallery = open_gallery(model, gallery, detect)
    gallery.refresh(show_progress)  # the first search embeds the whole gallery: minutes
    if gallery.discarded:
        log(f"Gallery cache {gallery.cache}: {gallery.discarded} damaged embedding(s) discarded "
            "and embedded again")  # fmt: skip
    for path, reason in gallery.skipped:
        log(f"  skipped {path}: {reason}")
    if not gallery.faces:
        raise DataError(f"{gallery.folder}: no usable face photo in the gallery")
    query, vector, _ = photo_face(model, photo, detect)
    threshold, far = verify_threshold(model)
    matches = marked(gallery.nearest(vector, top_k), threshold)
    if note := size_note(len(gallery.faces), gallery.index_settings):
        log(f"{gallery.folder}: {note}")
    return SearchResult(query, matches, len(gallery.faces), gallery.skipped, threshold, far)
