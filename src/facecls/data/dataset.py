"""Load a data source into memory once: uint8 images, integer targets, identity names, a report."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecls.atomic import file_in_the_way
from facecls.config import DataConfig
from facecls.data.cache import cache_key, decode_cached, read_faces_found
from facecls.data.duplicates import find_duplicates, find_duplicates_cached
from facecls.data.face_choice import (
    FaceEmbedder,
    FacesFound,
    apply_choice,
    cached_choice,
    choice_from,
    main_faces,
    records,
)
from facecls.data.library_source import scan_data
from facecls.data.sources import DataError, default_cache_dir, log_skipped
from facecls.data.synthetic import SyntheticSpec, render_synthetic


@dataclass
class FaceDataset:
    """Decoded images of one source at one size.

    Attributes:
        images: uint8 ``(N, 3, S, S)`` on the CPU.
        targets: int64 ``(N,)`` indices into ``class_names``.
        class_names: identity names, sorted.
        paths: ``identity/file`` of each image (``split/identity/file`` for pre-split sources).
        presplit: per-image ``train``/``val``/``test`` of a pre-split source, else ``None``.
        skipped: ``{"path", "reason"}`` for every file that could not be used.
        info: what the source was (kind, location, counts) for the data report.
        groups: ``(N,)`` duplicate-group id of each image (``data/duplicates.py``); splits keep
            a group together. ``None`` means every image is its own group.
        duplicates: the duplicate report (``Duplicates.report``) for ``data_report.json``.
        files: each image's file (folders and archives; the calibration views re-read them).
        faces_found: what detection found (``align``/``box``): each image's face box and
            detector score, every face of photos with several (``data/face_choice.py``).
        several_faces: per photo with several faces, the face kept and how sure the choice
            is (for ``data_report.json`` and the report).
        sizes: the size in bytes of each image's file (``None`` for the synthetic source); with
            the pixels it fingerprints the data a run resumes on.
    """

    images: torch.Tensor
    targets: torch.Tensor
    class_names: list[str]
    paths: list[str]
    presplit: list[str | None] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None
    duplicates: dict[str, Any] | None = None
    files: list[Path] | None = None
    faces_found: FacesFound | None = None
    several_faces: list[dict[str, Any]] = field(default_factory=list)
    sizes: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.targets.numel())

    def class_counts(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Images per identity, over ``indices`` (all images when ``None``)."""
        targets = self.targets.numpy() if indices is None else self.targets.numpy()[indices]
        return np.bincount(targets, minlength=self.num_classes)


def _synthetic(config: DataConfig) -> FaceDataset:
    spec = SyntheticSpec(
        num_classes=config.synthetic_classes,
        max_per_class=config.synthetic_max,
        min_per_class=config.synthetic_min,
        image_size=config.image_size,
    )
    images, targets, names = render_synthetic(spec)
    counts = Counter(targets.tolist())
    keep = [c for c in range(len(names)) if counts[c] >= config.min_images]
    remap = {old: new for new, old in enumerate(keep)}
    mask = np.isin(targets, keep)
    images, targets = images[mask], targets[mask]
    per_class: Counter[int] = Counter()
    paths = []
    for t in targets.tolist():
        per_class[t] += 1
        paths.append(f"{names[t]}/{names[t]}_{per_class[t]:04d}")
    return FaceDataset(
        images=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        targets=torch.tensor([remap[t] for t in targets.tolist()], dtype=torch.int64),
        class_names=[names[c] for c in keep],
        paths=paths,
        info={"kind": "synthetic", "location": "synthetic", "spec": spec.__dict__},
    )


def _choose_faces(
    dataset: FaceDataset, embedder: Callable[[], FaceEmbedder | None] | None,
    kept_faces: list[dict[str, Any]] | None, cache_dir: Path, log: Callable[[str], None],
) -> None:  # fmt: skip
    """Keep, in each photo with several faces, the face of its identity (see load_dataset)."""
    found = dataset.faces_found
    assert found is not None
    images = dataset.images.numpy()  # shares memory: rows are replaced in place
    if kept_faces is not None:
        choice = choice_from(kept_faces, dataset.paths, found)
        how = "the faces the run kept (its data_report.json)"
    else:
        made = embedder() if embedder is not None else None
        if made is None:
            choice = main_faces(found, "main face")
            how = "the main face: largest, most central (no face embedding network to compare)"
        else:
            key = f"{dataset.info['decode_key']}-{made.key}"
            path = cache_dir / "faces_kept" / f"{key}.json"
            choice = cached_choice(images, dataset.targets.numpy(), found, made, path, log)
            how = f"agreement with the identity's other photos ({made.name})"
    apply_choice(images, found, choice.kept)
    dataset.several_faces = records(dataset.paths, found, choice)
    changed = int(np.count_nonzero(choice.kept))
    doubtful = sum(entry["doubtful"] for entry in dataset.several_faces)
    dataset.info["faces_chosen_by"] = how
    dataset.info["photos_with_another_face_kept"] = changed
    if changed:  # later caches (duplicates, embeddings) are keyed by the faces kept
        digest = hashlib.sha256(choice.kept.tobytes()).hexdigest()[:12]
        dataset.info["decode_key"] = f"{dataset.info['decode_key']}-k{digest}"
    log(f"Faces: {len(found.rows)} photos with several faces; kept by {how}: not the main "
        f"face in {changed}, doubtful in {doubtful} (data_report.json lists them)")  # fmt: skip


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # removed since it was decoded: the fingerprint differs, as it should
        return -1


def load_dataset(
    config: DataConfig,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
    device: str = "cpu",
    embedder: Callable[[], FaceEmbedder | None] | None = None,
    kept_faces: list[dict[str, Any]] | None = None,
) -> FaceDataset:
    """Scan, check and decode a source (from the decode cache when current).

    ``device``: where the face detector runs when ``config.faces`` detects faces.

    A photo with several faces keeps the face that agrees with its identity's other photos
    when ``embedder`` makes a face embedding network (``data/face_choice.py``; its choices are
    cached), the faces a run kept when ``kept_faces`` (its ``data_report.json`` entries) is
    given, and otherwise the main face (largest, most central).

    Files that cannot be read are skipped and listed, never fatal. Identities with fewer than
    ``config.min_images`` usable images are dropped.

    Raises:
        DataError: when no usable image remains, naming the source and what to do.
    """
    if config.source == "synthetic":
        dataset = _synthetic(config)
    else:
        cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
        blocking = file_in_the_way(cache_dir)
        if blocking is not None:
            option = "--cache-dir" if config.cache_dir else "$FACECLS_CACHE (or ~/.cache/facecls)"
            raise DataError(
                f"{option} {cache_dir}: {blocking} is a file, not a folder; give a folder for "
                "the decode cache"
            )
        scan = scan_data(config.source, cache_dir, log)
        # Filter by file count first so LFW-20 decodes 3,023 images, not 13,233; bad files can
        # still drop an identity below the threshold, so it is applied again after decoding.
        files_per_identity = Counter(ref.identity for ref in scan.refs)
        refs = [r for r in scan.refs if files_per_identity[r.identity] >= config.min_images]
        decode_key = cache_key(refs, config.image_size, config.crop, config.faces)
        images, kept, skipped, several = decode_cached(
            refs,
            config.image_size,
            cache_dir,
            log,
            show_progress,
            config.crop,
            config.faces,
            device,
        )
        found = read_faces_found(cache_dir, decode_key) if config.faces != "centre" else None
        refs = [refs[i] for i in kept]
        usable = Counter(r.identity for r in refs)
        keep_mask = np.array([usable[r.identity] >= config.min_images for r in refs], dtype=bool)
        if not keep_mask.all():
            images = images[keep_mask]
            refs = [r for r, k in zip(refs, keep_mask, strict=True) if k]
            if found is not None:
                found = found.subset(np.flatnonzero(keep_mask))
        names = sorted({r.identity for r in refs})
        index = {n: i for i, n in enumerate(names)}
        is_presplit = any(r.split for r in refs)
        dataset = FaceDataset(
            images=torch.from_numpy(np.ascontiguousarray(images)),
            targets=torch.tensor([index[r.identity] for r in refs], dtype=torch.int64),
            class_names=names,
            paths=[r.relpath for r in refs],
            sizes=[_size(r.path) for r in refs],
            presplit=[r.split for r in refs] if is_presplit else None,
            skipped=scan.skipped + skipped,
            info={
                "kind": scan.kind,
                "location": scan.location,
                "files_found": len(scan.refs),
                "photos_with_several_faces": several,
                # what later caches (duplicates, embeddings) are keyed by
                "decode_key": decode_key,
            },  # fmt: skip
            files=[r.path for r in refs],
            faces_found=found,
        )
        if found is not None and len(found.rows):
            _choose_faces(dataset, embedder, kept_faces, cache_dir, log)
    if len(dataset) == 0 or dataset.num_classes < 2:
        log_skipped(dataset.skipped, log, limit=len(dataset.skipped))  # before saying so
    if len(dataset) == 0 or dataset.num_classes == 0:
        hint = f" with at least {config.min_images} images" if config.min_images > 1 else ""
        raise DataError(
            f"{config.source}: no usable image of any identity{hint}. Expected "
            "root/<identity>/<image> (or root/train/…, root/test/…)"
            + (f"; {len(dataset.skipped)} file(s) skipped, listed above" if dataset.skipped else "")
        )
    if dataset.num_classes < 2:
        raise DataError(
            f"{config.source}: only one identity ({dataset.class_names[0]!r}) has usable images; "
            "a classifier needs at least two. Add identities or lower --min-images."
        )
    targets = dataset.targets.numpy()
    if dataset.info.get("decode_key"):  # a folder or archive: cached while its files are unchanged
        found = find_duplicates_cached(
            dataset.images, targets, config.duplicate_distance, cache_dir,
            f"{dataset.info['decode_key']}:{config.min_images}",
        )  # fmt: skip
    else:
        found = find_duplicates(dataset.images, targets, config.duplicate_distance)
    dataset.groups = found.groups
    identities = [dataset.class_names[t] for t in dataset.targets.tolist()]
    dataset.duplicates = found.report(dataset.paths, identities)
    dataset.info.update(
        image_size=config.image_size,
        crop=config.crop,
        faces=config.faces,
        min_images=config.min_images,
        images=len(dataset),
        identities=dataset.num_classes,
        skipped=len(dataset.skipped),
    )
    return dataset


def the_models_identities(dataset: FaceDataset, names: list[str], run_dir: Path) -> FaceDataset:
    """``dataset`` as the model of ``run_dir`` (its identities ``names``) knows it: a face
    library's people named since training left out (:func:`keep_identities`).

    Raises:
        ValueError: the identities still differ; the message says how (one line).
    """
    if dataset.info.get("kind") == "library":
        dataset = keep_identities(dataset, names)
    if dataset.class_names != names:
        raise ValueError(
            f"{run_dir}: the data's identities differ from the model's: "
            + identity_difference(dataset.class_names, names)
        )
    return dataset


def identity_difference(data: list[str], model: list[str], limit: int = 5) -> str:
    """What sets the data's identities apart from a model's, for a one-line refusal: the
    model's people the data lacks (a library where they were forgotten or renamed since
    training), the data's people the model lacks, or their order."""
    in_data, in_model = set(data), set(model)
    missing = [n for n in model if n not in in_data]
    extra = [n for n in data if n not in in_model]

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more

    if missing:
        return (
            f"the model knows {listed(missing)}, whom the data no longer holds (forgotten or "
            "renamed since training?): bring them back, or train a new model"
        )
    if extra:
        return f"the data holds {listed(extra)}, whom the model does not know"
    return "the same people in another order"


def keep_identities(dataset: FaceDataset, names: list[str]) -> FaceDataset:
    """``dataset`` restricted to the identities ``names`` (in that order), when it holds them
    all: a face library gains people after a model was trained on it, and the model's own
    calibration and evaluation read the library again. Anything else is returned unchanged
    (the caller's check then says the identities differ)."""
    if dataset.class_names == names or not set(names) <= set(dataset.class_names):
        return dataset
    old = np.array([dataset.class_names.index(n) for n in names])
    remap = np.full(dataset.num_classes, -1)
    remap[old] = np.arange(len(names))
    new_targets = remap[dataset.targets.numpy()]
    keep = np.flatnonzero(new_targets >= 0)
    return FaceDataset(
        images=dataset.images[torch.from_numpy(keep)],
        targets=torch.from_numpy(new_targets[keep]).to(torch.int64),
        class_names=list(names),
        paths=[dataset.paths[i] for i in keep],
        presplit=None if dataset.presplit is None else [dataset.presplit[i] for i in keep],
        skipped=dataset.skipped,
        info=dict(dataset.info, identities=len(names), images=len(keep)),
        groups=None if dataset.groups is None else dataset.groups[keep],
        duplicates=dataset.duplicates,
    )
