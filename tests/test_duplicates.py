"""Leakage: exact and near duplicates are found and reported, kept on one side of every split,
and a photo filed under two identities is reported as a label conflict."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facecls.cli import main
from facecls.config import DataConfig
from facecls.data.dataset import FaceDataset, load_dataset
from facecls.data.duplicates import NEAR_DISTANCE, find_duplicates, near_pairs, phash
from facecls.data.splits import holdout, split_test, stratified_folds


def _faces(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random pictures (blurred noise), unlike each other: ``(n, 3, size, size)``."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(n, 3, 6, 6))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    return smooth.clamp(0, 255).round().to(torch.uint8)


def _reencoded(image: torch.Tensor, quality: int = 80) -> torch.Tensor:
    """The same picture after a JPEG round trip: different pixels, the same photo."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded).permute(2, 0, 1).contiguous()


def test_exact_near_and_conflicting_duplicates_are_found() -> None:
    images = _faces(12)
    images[5] = images[1]  # an exact copy, same identity
    images[7] = _reencoded(images[2])  # a near copy, same identity
    images[9] = images[3]  # an exact copy under another identity: a label conflict
    assert not torch.equal(images[7], images[2])
    targets = np.array([0, 0, 0, 1, 1, 0, 1, 0, 2, 2, 2, 2])
    found = find_duplicates(images, targets)
    assert found.exact == [[1, 5], [3, 9]]
    assert found.near == [[2, 7]]
    assert found.conflicts == [[3, 9]]
    groups = found.groups
    assert groups[1] == groups[5] and groups[2] == groups[7] and groups[3] == groups[9]
    assert len(set(groups.tolist())) == 12 - 3
    names = [f"id{t}/{i}.jpg" for i, t in enumerate(targets)]
    report = found.report(names, [f"id{t}" for t in targets])
    assert (report["exact_groups"], report["near_groups"], report["label_conflicts"]) == (2, 1, 1)
    assert report["conflicts"] == [
        [{"path": "id1/3.jpg", "identity": "id1"}, {"path": "id2/9.jpg", "identity": "id2"}]
    ]


def test_distinct_pictures_are_not_duplicates() -> None:
    images = _faces(200, seed=1)
    found = find_duplicates(images, np.zeros(200, dtype=np.int64))
    assert found.exact == [] and found.near == []
    # and the pHash tolerates a resize, which exact hashing cannot
    small = torch.nn.functional.interpolate(images[:20].float(), size=(24, 24), mode="area")
    apart = phash(small.round().to(torch.uint8)) ^ phash(images[:20])
    assert max(bin(int(d)).count("1") for d in apart) <= NEAR_DISTANCE


def test_near_pairs_match_a_brute_force_oracle() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=150, dtype=np.uint64)
    hashes[10] = hashes[3] ^ np.uint64(0b1011)  # 3 bits apart
    pairs = {tuple(p) for p in near_pairs(hashes, 4).tolist()}
    brute = {
        (i, j)
        for i in range(150)
        for j in range(i + 1, 150)
        if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 4
    }
    assert pairs == brute and (3, 10) in pairs


def _grouped_dataset() -> FaceDataset:
    """60 images of 3 identities in which groups of 2–3 images are duplicates."""
    targets = np.repeat(np.arange(3), 20)
    groups = np.arange(60)
    for members in ([0, 1, 2], [3, 4], [20, 21], [22, 23, 24], [40, 41], [50, 51]):
        groups[members] = members[0]
    return FaceDataset(
        images=torch.zeros(60, 3, 4, 4, dtype=torch.uint8),
        targets=torch.from_numpy(targets),
        class_names=["a", "b", "c"],
        paths=[f"{i}.jpg" for i in range(60)],
        groups=groups,
    )


def _sides(groups: np.ndarray, parts: list[np.ndarray]) -> dict[int, set[int]]:
    """Which parts each group's images fall in."""
    where: dict[int, set[int]] = {}
    for k, part in enumerate(parts):
        for i in part.tolist():
            where.setdefault(int(groups[i]), set()).add(k)
    return where


@pytest.mark.parametrize("seed", range(8))
def test_splits_keep_duplicate_groups_together(seed: int) -> None:
    ds = _grouped_dataset()
    targets = ds.targets.numpy()
    split = split_test(ds, DataConfig(test_fraction=0.2), seed)
    assert all(len(s) == 1 for s in _sides(ds.groups, [split.pool, split.test]).values())
    val = holdout(targets, split.pool, 0.2, seed, ds.groups)
    train = np.setdiff1d(split.pool, val)
    assert all(len(s) == 1 for s in _sides(ds.groups, [train, val]).values())
    folds = stratified_folds(targets, split.pool, 4, seed, ds.class_names, ds.groups)
    assert all(len(s) == 1 for s in _sides(ds.groups, folds).values())
    assert sorted(np.concatenate(folds).tolist()) == split.pool.tolist()
    for c in range(3):  # still stratified: every identity in every fold
        assert all((targets[f] == c).any() for f in folds)


def test_without_duplicates_splits_are_unchanged() -> None:
    ds = _grouped_dataset()
    singletons = FaceDataset(ds.images, ds.targets, ds.class_names, ds.paths)
    a = split_test(singletons, DataConfig(), 0)
    b = split_test(
        FaceDataset(ds.images, ds.targets, ds.class_names, ds.paths, groups=np.arange(60)),
        DataConfig(),
        0,
    )
    assert np.array_equal(a.test, b.test) and a.how == "stratified 20%"


def test_data_report_lists_duplicates_and_conflicts(synthetic_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "faces"
    shutil.copytree(synthetic_folder, data)
    alice, bob = sorted(p for p in data.iterdir())[:2]
    photos = sorted(alice.glob("*.png"))
    shutil.copy(photos[0], alice / "copy_of_0.png")  # exact, same identity
    Image.open(photos[1]).save(alice / "resaved_1.jpg", quality=90)  # near, same identity
    shutil.copy(photos[2], bob / "misfiled.png")  # exact, another identity
    code = main([
        "--quiet", "train", "--data", str(data), "--image-size", "32", "--epochs", "1",
        "--runs-dir", str(tmp_path / "runs"), "--name", "dup",
    ])  # fmt: skip
    assert code == 0
    run = tmp_path / "runs" / "dup"
    report = json.loads((run / "data_report.json").read_text())["duplicates"]
    a, b = alice.name, bob.name
    exact = [set(group) for group in report["exact"]]
    assert {f"{a}/{photos[0].name}", f"{a}/copy_of_0.png"} in exact
    assert {f"{a}/{photos[2].name}", f"{b}/misfiled.png"} in exact
    assert any({f"{a}/resaved_1.jpg", f"{a}/{photos[1].name}"} <= set(g) for g in report["near"])
    (conflict,) = report["conflicts"]
    assert sorted((m["path"], m["identity"]) for m in conflict) == [
        (f"{a}/{photos[2].name}", a),
        (f"{b}/misfiled.png", b),
    ]
    assert report["label_conflicts"] == 1 and report["groups_across_test_split"] == 0
    folds = json.loads((run / "folds.json").read_text())
    for group in report["exact"] + report["near"]:
        sides = {
            "test" if p in folds["test"] else "val" if p in folds["folds"][0] else "train"
            for p in group
        }
        assert len(sides) == 1, group


@pytest.mark.slow
def test_lfw8_data_report_counts_duplicates(lfw_archive: Path) -> None:
    dataset = load_dataset(
        DataConfig(source=str(lfw_archive), image_size=64, min_images=8), log=lambda _m: None
    )
    report = dataset.duplicates
    assert report is not None and len(dataset) == 4822
    # Measured at 64 px: no identical images, 11 near-duplicate pairs (re-crops of one photo),
    # none across identities.
    assert report["exact_groups"] == 0 and report["label_conflicts"] == 0
    assert 5 <= report["near_groups"] <= 30
    assert all(len({p.split("/")[0] for p in group}) == 1 for group in report["near"])


def test_duplicate_check_is_cached_until_a_file_changes(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facecls.data.duplicates as duplicates

    folder = tmp_path / "faces"
    shutil.copytree(synthetic_folder, folder)
    calls = []
    original = duplicates.find_duplicates

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(duplicates, "find_duplicates", counted)
    config = DataConfig(source=str(folder), image_size=32, cache_dir=str(tmp_path / "cache"))
    first = load_dataset(config, log=lambda _m: None)
    again = load_dataset(config, log=lambda _m: None)
    assert len(calls) == 1  # the second load read the cached groups
    np.testing.assert_array_equal(first.groups, again.groups)
    assert first.duplicates == again.duplicates
    photo = sorted(folder.rglob("*.png"))[0]
    photo.write_bytes(sorted(folder.rglob("*.png"))[1].read_bytes())  # now an exact copy
    changed = load_dataset(config, log=lambda _m: None)
    assert len(calls) == 2
    assert changed.duplicates["exact_groups"] == first.duplicates["exact_groups"] + 1
