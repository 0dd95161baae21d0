"""Data checks of a run: the data report (counts, split, skipped files, duplicates) and the
problems logged before training (unreadable files, duplicates straddling the test split)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from facecls.data.dataset import FaceDataset
from facecls.data.sources import log_skipped
from facecls.data.splits import (
    TestSplit,
)


def data_report(dataset: FaceDataset, split: TestSplit) -> dict[str, Any]:
    counts = dataset.class_counts()
    report = {
        **dataset.info,
        "split": split.how,
        "train_pool_images": int(len(split.pool)),
        "test_images": int(len(split.test)),
        "images_per_identity": {
            n: int(c) for n, c in zip(dataset.class_names, counts, strict=True)
        },
        "skipped_files": dataset.skipped,
    }
    if dataset.several_faces:
        # every photo with several faces: the face kept, its box, how sure the choice is
        report["several_faces"] = dataset.several_faces
    if dataset.duplicates is not None:
        report["duplicates"] = {
            **dataset.duplicates,
            "groups_across_test_split": groups_across(dataset, split),
        }
    return report


def groups_across(dataset: FaceDataset, split: TestSplit) -> int:
    """Duplicate groups with images on both sides of the test split (leaks; a split file or a
    pre-split folder can cause them, the stratified split never does)."""
    if dataset.groups is None:
        return 0
    in_test = np.zeros(len(dataset), dtype=bool)
    in_test[split.test] = True
    in_pool = np.zeros(len(dataset), dtype=bool)
    in_pool[split.pool] = True
    test_groups = set(dataset.groups[in_test].tolist())
    return len(test_groups & set(dataset.groups[in_pool].tolist()))


def report_data_problems(
    dataset: FaceDataset, split: TestSplit, log: Callable[[str], None]
) -> None:
    log_skipped(dataset.skipped, log)
    d = dataset.duplicates
    if d is not None:
        across = groups_across(dataset, split)
        log(
            f"Duplicates: {d['exact_groups']} group(s) of identical images, {d['near_groups']} "
            f"of near duplicates, {d['label_conflicts']} filed under more than one identity"
            + (f"; {across} group(s) straddle the test split" if across else "")
            + (" (listed in data_report.json)" if d["exact_groups"] + d["near_groups"] else "")
        )
        for group in d["conflicts"][:5]:
            log("  label conflict: " + ", ".join(f"{m['path']}" for m in group))
