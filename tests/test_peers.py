"""The peers of the benchmarks (``benchmarks/peers.py``): the logistic-regression decision and
dlib's per-photo pipeline that ``predict_speed.py`` times."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _peers():
    """``benchmarks/peers.py`` (a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("peers", REPO / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logistic_regression_chooses_c_by_cv_or_takes_the_given_one() -> None:
    peers = _peers()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    targets = np.repeat(np.arange(3), 12)
    features = centres[targets] + rng.normal(size=(36, 8))
    train, test = np.arange(36)[np.arange(36) % 4 != 0], np.arange(36)[::4]
    preds, chosen = peers.logistic_regression(features, targets, train, test)
    assert np.array_equal(preds, targets[test])
    assert chosen["best_params"]["C"] in (1.0, 10.0, 100.0)
    fixed = peers.fit_logistic_regression(features[train], targets[train], c=10.0)
    assert fixed.C == 10.0
    assert np.array_equal(fixed.predict(features[test]), targets[test])


def test_dlib_describer_falls_back_to_the_central_box(tmp_path: Path) -> None:
    peers = _peers()
    assert peers.dlib_available(), "the dev install brings dlib-bin (pip install -e '.[dev]')"
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(blank)
    describe = peers.DlibDescriber()
    descriptor = describe(blank)
    assert descriptor.shape == (128,) and descriptor.dtype == np.float32
    assert np.isfinite(descriptor).all()
    assert describe.fallbacks == 1  # no face in a grey square: the central box was used
