from __future__ import annotations

import numpy as np
import torch

from facecls.config import AugmentConfig
from facecls.data.augment import augment, channel_stats, normalize

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (4, 3, 24, 24), generator=g, dtype=torch.uint8)


def test_channel_stats_match_numpy() -> None:
    x = images()
    mean, std = channel_stats(x, chunk=3)
    arr = x.numpy().astype(np.float64) / 255
    assert np.allclose(mean, arr.mean(axis=(0, 2, 3)))
    assert np.allclose(std, arr.std(axis=(0, 2, 3)))


def test_normalize_is_eq6() -> None:
    x = images()
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    assert torch.allclose(normalize(x, MEAN, STD), expected, atol=1e-5)


def test_identity_warp_changes_nothing() -> None:
    x = images()
    config = AugmentConfig(rotation=0, hflip=False, scale=0, translate=0)
    assert torch.allclose(augment(x, MEAN, STD, config), normalize(x, MEAN, STD), atol=1e-4)


def test_flip_only_mirrors_some_images() -> None:
    x = images()
    config = AugmentConfig(rotation=0, hflip=True, scale=0, translate=0)
    out = augment(x, MEAN, STD, config, torch.Generator().manual_seed(0))
    plain = normalize(x, MEAN, STD)
    flipped = [torch.allclose(out[i], plain[i].flip(2), atol=1e-4) for i in range(4)]
    same = [torch.allclose(out[i], plain[i], atol=1e-4) for i in range(4)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))


def test_augmentation_is_seeded_and_random() -> None:
    x = images()
    config = AugmentConfig()
    a = augment(x, MEAN, STD, config, torch.Generator().manual_seed(5))
    b = augment(x, MEAN, STD, config, torch.Generator().manual_seed(5))
    c = augment(x, MEAN, STD, config, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == (4, 3, 24, 24) and torch.isfinite(a).all()


def test_disabled_is_plain_normalisation() -> None:
    x = images()
    out = augment(x, MEAN, STD, AugmentConfig(enabled=False))
    assert torch.equal(out, normalize(x, MEAN, STD))
