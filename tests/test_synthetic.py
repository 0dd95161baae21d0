"""Contracts of the synthetic face generator: determinism, long tail, identity signal, folder layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.data.synthetic import (
    SyntheticSpec,
    class_counts,
    class_names,
    render_synthetic,
    write_synthetic_folder,
)

SMALL = SyntheticSpec(num_classes=5, max_per_class=9, min_per_class=3, image_size=24, seed=3)


@pytest.fixture(scope="module")
def balanced() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Ten identities with sixteen images each at 32 px: enough to measure identity signal."""
    spec = SyntheticSpec(num_classes=10, max_per_class=16, min_per_class=16, image_size=32, seed=0)
    return render_synthetic(spec)


def test_shapes_dtypes_and_targets_follow_counts() -> None:
    images, targets, names = render_synthetic(SMALL)
    counts = class_counts(SMALL)
    assert images.dtype == np.uint8 and images.shape == (sum(counts), 24, 24, 3)
    assert targets.dtype == np.int64 and targets.shape == (sum(counts),)
    assert np.bincount(targets, minlength=SMALL.num_classes).tolist() == counts
    assert names == class_names(SMALL.num_classes)
    # Images use a real range of intensities, not a blank or saturated canvas.
    assert images.std() > 20 and images.min() < 40 and images.max() > 215


def test_same_seed_same_images_other_seed_differs() -> None:
    first, first_targets, _ = render_synthetic(SMALL)
    again, again_targets, _ = render_synthetic(SMALL)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_targets, again_targets)
    other, _, _ = render_synthetic(dataclasses.replace(SMALL, seed=4))
    assert other.shape == first.shape
    assert np.abs(other.astype(int) - first.astype(int)).mean() > 20


def test_identity_does_not_depend_on_number_of_classes() -> None:
    few, few_targets, _ = render_synthetic(SMALL)
    more, more_targets, _ = render_synthetic(dataclasses.replace(SMALL, num_classes=7))
    # Identity 0 gets max_per_class images in both, and they are the same photos.
    np.testing.assert_array_equal(few[few_targets == 0], more[more_targets == 0])


def test_class_counts_are_long_tailed() -> None:
    spec = SyntheticSpec(num_classes=20, max_per_class=60, min_per_class=8)
    counts = class_counts(spec)
    assert len(counts) == 20 and counts[0] == 60 and counts[-1] == 8
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    # A power law is convex: the middle identity sits well below the straight line from max to min,
    # and most identities have fewer images than the mean.
    assert counts[10] < (60 + 8) / 2 - 10
    assert sum(c < np.mean(counts) for c in counts) >= 14


def test_class_counts_equal_when_max_equals_min() -> None:
    spec = SyntheticSpec(num_classes=4, max_per_class=5, min_per_class=5)
    assert class_counts(spec) == [5, 5, 5, 5]


def test_class_names_sort_in_index_order() -> None:
    assert class_names(3) == ["person_00", "person_01", "person_02"]
    names = class_names(120)
    assert names[7] == "person_007" and sorted(names) == names


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "num_classes must be at least 2"),
        ({"min_per_class": 0}, "min_per_class must be at least 1"),
        ({"max_per_class": 4, "min_per_class": 5}, r"max_per_class \(4\) must be at least"),
        ({"image_size": 15}, "image_size must be at least 16"),
        ({"seed": -1}, "seed must be non-negative"),
    ],
)
def test_invalid_spec_raises_a_clear_error(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticSpec(**kwargs)


def test_images_of_one_identity_vary(balanced: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    images, targets, _ = balanced
    for k in range(10):
        group = images[targets == k].astype(int)
        # Every pair differs (pose, lighting, background), and clearly so, not just by noise.
        diffs = np.abs(group[:, None] - group[None]).mean(axis=(2, 3, 4))
        off_diagonal = diffs[~np.eye(len(group), dtype=bool)]
        assert off_diagonal.min() > 5


def _normalised_centre(images: np.ndarray) -> np.ndarray:
    """Flattened centre crops, each scaled to zero mean and unit variance (kills lighting)."""
    margin = images.shape[1] // 5
    x = images[:, margin:-margin, margin:-margin].reshape(len(images), -1).astype(np.float64)
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def test_images_of_one_identity_are_closer_than_other_identities(
    balanced: tuple[np.ndarray, np.ndarray, list[str]],
) -> None:
    images, targets, _ = balanced
    x = _normalised_centre(images)
    distances = ((x[:, None] - x[None]) ** 2).mean(-1)
    same = targets[:, None] == targets[None]
    within = distances[same & ~np.eye(len(x), dtype=bool)].mean()
    between = distances[~same].mean()
    assert within < 0.9 * between


def test_nearest_centroid_is_well_above_chance_but_not_perfect(
    balanced: tuple[np.ndarray, np.ndarray, list[str]],
) -> None:
    """Learnable but not trivial: leave-one-out nearest centroid on raw pixels."""
    images, targets, _ = balanced
    x = _normalised_centre(images)
    sums = np.stack([x[targets == k].sum(0) for k in range(10)])
    sizes = np.bincount(targets, minlength=10).astype(float)
    correct = 0
    for i in range(len(x)):
        own = np.zeros(10)
        own[targets[i]] = 1
        centroids = (sums - own[:, None] * x[i]) / (sizes - own)[:, None]
        correct += int(np.argmin(((centroids - x[i]) ** 2).sum(1)) == targets[i])
    accuracy = correct / len(x)
    assert 0.3 < accuracy < 0.95  # chance is 0.1


def test_write_folder_layout_matches_render(tmp_path: Path) -> None:
    root = write_synthetic_folder(tmp_path / "faces", SMALL)
    images, targets, names = render_synthetic(SMALL)
    assert root == tmp_path / "faces"
    assert sorted(p.name for p in root.iterdir()) == names
    for k, name in enumerate(names):
        files = sorted((root / name).iterdir())
        assert [f.name for f in files] == [f"{name}_{j:04d}.png" for j in range(len(files))]
        assert len(files) == class_counts(SMALL)[k]
        # PNG is lossless: the files hold exactly the rendered arrays.
        for file, image in zip(files, images[targets == k], strict=True):
            np.testing.assert_array_equal(np.asarray(Image.open(file).convert("RGB")), image)


def test_write_folder_into_empty_existing_folder_and_jpeg(tmp_path: Path) -> None:
    (tmp_path / "faces").mkdir()
    root = write_synthetic_folder(tmp_path / "faces", SMALL, fmt="jpg")
    first = root / "person_00" / "person_00_0000.jpg"
    with Image.open(first) as image:
        assert image.format == "JPEG" and image.size == (24, 24)


def test_write_folder_refuses_non_empty_folder(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="faces"):
        write_synthetic_folder(root, SMALL)
    assert [p.name for p in root.iterdir()] == ["keep.txt"]
    assert (root / "keep.txt").read_text() == "mine"


def test_write_folder_rejects_unknown_format_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extension"):
        write_synthetic_folder(tmp_path / "faces", SMALL, fmt="nope")
    assert not (tmp_path / "faces").exists()
