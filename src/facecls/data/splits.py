"""Test split, validation hold-out and stratified k-fold; saved by path so runs can reuse them.

The test part is split off once (stratified and seeded, or taken from a pre-split source or a
split file such as LFW's benchmark CSV); validation and folds come from the rest only. Where the
data holds duplicate groups (``data/duplicates.py``), every group stays on one side of each split.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from facecls.config import DataConfig
from facecls.data.dataset import FaceDataset
from facecls.data.sources import DataError


@dataclass
class TestSplit:
    """Indices into a dataset: the pool that training and folds use, the test part, and an
    optional validation part that a pre-split source or split file fixed."""

    pool: np.ndarray
    test: np.ndarray
    val: np.ndarray | None
    how: str


def _key(path: str) -> str:
    """``identity/file``: the last two components, shared by every layout of one image."""
    return "/".join(Path(path).as_posix().split("/")[-2:])


def _from_split_file(dataset: FaceDataset, config: DataConfig) -> dict[str, str]:
    path = Path(config.split_file or "")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; --split-file names the CSV file of the split")
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            column = config.split_column or f"lfw{config.min_images}"
            if "path" not in columns or column not in columns:
                raise DataError(
                    f"{path}: needs a 'path' column and the split column {column!r} "
                    f"(columns: {columns}); choose one with --split-column"
                )
            return {_key(row["path"] or ""): (row[column] or "").strip() for row in reader}
    except (UnicodeDecodeError, csv.Error) as error:  # a binary file given as --split-file
        raise DataError(f"{path}: not a CSV text file ({error})") from error


def _has_groups(groups: np.ndarray | None, indices: np.ndarray) -> bool:
    """Whether any two of ``indices`` share a duplicate group."""
    if groups is None or len(indices) == 0:
        return False
    return len(np.unique(groups[indices])) < len(indices)


def follow_first_member(chosen: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Put every image on the side of the first image of its group.

    Args:
        chosen: ``(M,)`` bool, one side of a split (test, validation) of M images in order.
        groups: ``(M,)`` group id of the same images.

    Returns:
        The corrected ``(M,)`` bool; unchanged where every group is a single image.
    """
    ids, first = np.unique(groups, return_index=True)
    return chosen[first[np.searchsorted(ids, groups)]]


def split_test(dataset: FaceDataset, config: DataConfig, seed: int) -> TestSplit:
    """Split off the test part once.

    Order of precedence: a split file, a pre-split source, else a stratified random split, in
    which duplicates of one image (``dataset.groups``) all go to the side of the first of them.

    Raises:
        DataError: when an identity is too small to be stratified, naming it.
    """
    n = len(dataset)
    if config.split_file:
        table = _from_split_file(dataset, config)
        assigned = np.array([table.get(_key(p), "") for p in dataset.paths])
        bad = sorted(set(assigned) - {"", "train", "val", "test"})
        if bad:
            raise DataError(f"{config.split_file}: unknown split value(s) {bad}")
        return TestSplit(
            pool=np.flatnonzero((assigned == "train") | (assigned == "val")),
            test=np.flatnonzero(assigned == "test"),
            val=np.flatnonzero(assigned == "val") if (assigned == "val").any() else None,
            how=f"split file {config.split_file} (images not listed there are left out: "
            f"{int((assigned == '').sum())})",
        )
    if dataset.presplit is not None:
        parts = np.array([s or "" for s in dataset.presplit])
        return TestSplit(
            pool=np.flatnonzero(parts != "test"),
            test=np.flatnonzero(parts == "test"),
            val=np.flatnonzero(parts == "val") if (parts == "val").any() else None,
            how="pre-split source (train/ val/ test/ folders)",
        )
    counts = dataset.class_counts()
    small = [dataset.class_names[c] for c in np.flatnonzero(counts < 2)]
    if small:
        raise DataError(
            f"identity {small[0]!r} has only {counts[dataset.class_names.index(small[0])]} image; "
            f"a stratified test split needs at least 2 per identity ({len(small)} such). "
            "Use --min-images 2 (or more), or give a pre-split folder."
        )
    _check_test_fraction(config.test_fraction, n, dataset.num_classes)
    _, test = train_test_split(
        np.arange(n),
        test_size=config.test_fraction,
        stratify=dataset.targets.numpy(),
        random_state=seed,
    )
    is_test = np.isin(np.arange(n), test)
    how = f"stratified {config.test_fraction:.0%}"
    if _has_groups(dataset.groups, np.arange(n)):
        is_test = follow_first_member(is_test, dataset.groups)
        how += ", duplicates kept together"
    return TestSplit(np.flatnonzero(~is_test), np.flatnonzero(is_test), None, how)


def _check_test_fraction(fraction: float, n: int, num_classes: int) -> None:
    """Say in facecls's words when a stratified test part cannot hold one image per identity
    (scikit-learn takes ``ceil(fraction × n)`` test images)."""
    n_test = math.ceil(fraction * n)
    if n_test < num_classes:
        raise DataError(
            f"--test-fraction {fraction:g} gives {n_test} test images for {num_classes} "
            f"identities; a stratified split needs one per identity: use --test-fraction "
            f"{math.ceil(100 * num_classes / n) / 100:g} or more, or fewer identities "
            "(--min-images)"
        )
    if n - n_test < num_classes:
        raise DataError(
            f"--test-fraction {fraction:g} leaves {n - n_test} training images for "
            f"{num_classes} identities; use a smaller --test-fraction"
        )


def holdout(
    targets: np.ndarray,
    indices: np.ndarray,
    fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """A stratified validation subset of ``indices``: about ``fraction`` of each identity.

    Identities with a single image stay entirely in training. With ``groups`` (one id per
    dataset image), duplicates follow the first of them into validation or training.
    """
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(targets[indices]):
        members = indices[targets[indices] == c]
        if len(members) < 2:
            continue
        take = min(len(members) - 1, max(1, round(len(members) * fraction)))
        val.extend(rng.choice(members, size=take, replace=False).tolist())
    val_array = np.sort(np.array(val, dtype=np.int64))
    if groups is not None and _has_groups(groups, indices):
        ordered = np.sort(indices)
        val_array = ordered[follow_first_member(np.isin(ordered, val_array), groups[ordered])]
    return val_array


def stratified_folds(
    targets: np.ndarray,
    indices: np.ndarray,
    k: int,
    seed: int,
    class_names: list[str],
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Validation indices of each of ``k`` stratified folds over ``indices``.

    With ``groups`` (one id per dataset image) holding duplicates, scikit-learn's
    ``StratifiedGroupKFold`` keeps each group in one fold; otherwise ``StratifiedKFold``.

    Raises:
        DataError: when an identity has fewer images than folds, naming it and what to do.
    """
    counts = np.bincount(targets[indices], minlength=len(class_names))
    present = counts > 0
    if (counts[present] < k).any():
        c = int(np.flatnonzero(present & (counts < k))[np.argmin(counts[present & (counts < k)])])
        raise DataError(
            f"identity {class_names[c]!r} has only {counts[c]} training images, fewer than the "
            f"{k} folds asked for: use --folds {max(2, int(counts[c]))} or --min-images with a "
            "higher value to drop small identities."
        )
    if groups is not None and _has_groups(groups, indices):
        distinct = len(np.unique(groups[indices]))
        if distinct < k:
            raise DataError(
                f"{k} folds need at least {k} distinct images, but the {len(indices)} training "
                f"images hold only {distinct} after near-duplicates are grouped: use --folds "
                f"{max(2, distinct)} or fewer"
            )
        grouped = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = grouped.split(indices, targets[indices], groups[indices])
        return [np.sort(indices[val]) for _, val in parts]
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [indices[val] for _, val in splitter.split(indices, targets[indices])]


def folds_document(dataset: FaceDataset, split: TestSplit, folds: list[np.ndarray]) -> dict:
    """The split and fold assignment by image path, as written to ``folds.json``."""
    paths = dataset.paths
    return {
        "how": split.how,
        "test": [paths[i] for i in split.test],
        "pool": [paths[i] for i in split.pool],
        "folds": [[paths[i] for i in fold] for fold in folds],
    }


def folds_from_document(
    dataset: FaceDataset, document: dict[str, Any]
) -> tuple[TestSplit, list[np.ndarray]]:
    """Map a saved ``folds.json`` back onto a dataset's indices.

    Raises:
        DataError: when a saved path is not in the dataset (the data changed).
    """
    index = {p: i for i, p in enumerate(dataset.paths)}

    def lookup(paths: list[str]) -> np.ndarray:
        missing = [p for p in paths if p not in index]
        if missing:
            raise DataError(
                f"folds.json names {len(missing)} image(s) not in the data, e.g. {missing[0]!r}; "
                "the data changed since the split was saved"
            )
        return np.array([index[p] for p in paths], dtype=np.int64)

    split = TestSplit(lookup(document["pool"]), lookup(document["test"]), None, document["how"])
    return split, [lookup(f) for f in document["folds"]]
