from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facecls.config import DataConfig
from facecls.data.dataset import FaceDataset
from facecls.data.sources import DataError
from facecls.data.splits import (
    folds_document,
    folds_from_document,
    holdout,
    split_test,
    stratified_folds,
)


def make_dataset(counts: list[int]) -> FaceDataset:
    targets = np.repeat(np.arange(len(counts)), counts)
    names = [f"id{c}" for c in range(len(counts))]
    paths = [f"{names[t]}/{i:04d}.jpg" for i, t in enumerate(targets)]
    return FaceDataset(
        images=torch.zeros(len(targets), 3, 4, 4, dtype=torch.uint8),
        targets=torch.from_numpy(targets),
        class_names=names,
        paths=paths,
    )


def test_folds_stratified_disjoint_covering() -> None:
    ds = make_dataset([40, 23, 11, 5, 5])
    targets = ds.targets.numpy()
    pool = np.arange(len(ds))
    folds = stratified_folds(targets, pool, 5, seed=1, class_names=ds.class_names)
    joined = np.concatenate(folds)
    assert len(joined) == len(pool) and set(joined) == set(pool)  # disjoint and covering
    for c, n in enumerate([40, 23, 11, 5, 5]):
        per_fold = [int((targets[f] == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)  # stratified
        assert sum(per_fold) == n


def test_folds_refuse_small_identity_by_name() -> None:
    ds = make_dataset([10, 10, 3])
    with pytest.raises(DataError, match=r"'id2' has only 3 .*--folds 3"):
        stratified_folds(ds.targets.numpy(), np.arange(len(ds)), 5, 0, ds.class_names)


def test_test_split_is_stratified_and_seeded() -> None:
    ds = make_dataset([50, 20, 10])
    a = split_test(ds, DataConfig(test_fraction=0.2), seed=0)
    b = split_test(ds, DataConfig(test_fraction=0.2), seed=0)
    c = split_test(ds, DataConfig(test_fraction=0.2), seed=1)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)
    assert np.intersect1d(a.pool, a.test).size == 0 and len(a.pool) + len(a.test) == len(ds)
    assert np.bincount(ds.targets.numpy()[a.test]).tolist() == [10, 4, 2]


def test_test_split_names_singleton_identity() -> None:
    with pytest.raises(DataError, match="'id1' has only 1 image"):
        split_test(make_dataset([5, 1]), DataConfig(), seed=0)


def test_split_file_by_identity_and_file(tmp_path: Path) -> None:
    ds = make_dataset([3, 3])
    csv = tmp_path / "split.csv"
    lines = ["path,identity,lfw8"]
    for i, p in enumerate(ds.paths):
        lines.append(f"root/{p},{p.split('/')[0]},{'test' if i % 3 == 0 else 'train'}")
    csv.write_text("\n".join(lines[:-1]) + "\n")  # the last image is not listed: left out
    split = split_test(ds, DataConfig(split_file=str(csv), min_images=8), seed=0)
    assert split.test.tolist() == [0, 3]
    assert split.pool.tolist() == [1, 2, 4]


def test_holdout_keeps_singletons_in_training() -> None:
    ds = make_dataset([10, 1, 4])
    val = holdout(ds.targets.numpy(), np.arange(len(ds)), 0.2, seed=0)
    assert np.bincount(ds.targets.numpy()[val], minlength=3).tolist() == [2, 0, 1]


def test_folds_document_round_trip() -> None:
    ds = make_dataset([10, 10])
    split = split_test(ds, DataConfig(), seed=0)
    folds = stratified_folds(ds.targets.numpy(), split.pool, 2, 0, ds.class_names)
    split2, folds2 = folds_from_document(ds, folds_document(ds, split, folds))
    assert np.array_equal(split2.test, split.test)
    assert all(np.array_equal(a, b) for a, b in zip(folds, folds2, strict=True))
