"""Paired tests against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from facecls.paired import (
    balanced_accuracy_of_resamples,
    bootstrap_mean_ci,
    holm,
    mcnemar,
    paired_bootstrap,
)


def correctness(a_only: int, b_only: int, both: int = 3, neither: int = 2):
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    return a, b


def test_mcnemar_by_hand() -> None:
    # b = 1, c = 5: P[Binom(6, 1/2) <= 1] = (1 + 6) / 64, two-sided 14/64; mid-p drops 6/64 / 1.
    result = mcnemar(*correctness(1, 5))
    assert (result.a_only, result.b_only, result.both_right, result.both_wrong) == (1, 5, 3, 2)
    assert result.p_exact == pytest.approx(14 / 64)
    assert result.p_mid == pytest.approx(8 / 64)
    # Continuity-corrected chi-square (|1 - 5| - 1)^2 / 6 = 1.5; P[chi2_1 > x] = erfc(sqrt(x / 2)).
    assert result.chi2 == pytest.approx(1.5)
    assert result.p_chi2 == pytest.approx(math.erfc(math.sqrt(0.75)))


def test_mcnemar_extremes() -> None:
    assert mcnemar(*correctness(0, 10)).p_exact == pytest.approx(2 / 1024)
    assert mcnemar(*correctness(10, 0)).p_exact == pytest.approx(2 / 1024)
    same = mcnemar(*correctness(0, 0))
    assert same.p_exact == same.p_mid == same.p_chi2 == 1.0
    assert mcnemar(*correctness(4, 4)).p_exact == 1.0  # clipped, never above 1
    with pytest.raises(ValueError):
        mcnemar([1, 0], [1])


def test_balanced_accuracy_of_resamples_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 60)
    preds = np.where(rng.random(60) < 0.6, targets, rng.integers(0, 5, 60))
    resamples = rng.integers(0, 60, size=(7, 60))
    got = balanced_accuracy_of_resamples(targets, preds == targets, resamples, 5)
    for r, idx in enumerate(resamples):
        assert got[r] == pytest.approx(balanced_accuracy_score(targets[idx], preds[idx]))


def test_paired_bootstrap() -> None:
    targets = np.repeat(np.arange(4), [20, 10, 5, 5])
    same = paired_bootstrap(targets, targets, targets, 4, n_boot=200)
    assert same.difference == 0.0 and same.low == same.high == 0.0 and same.p_value == 1.0
    wrong = (targets + 1) % 4
    better = paired_bootstrap(targets, targets, wrong, 4, n_boot=200)
    assert (better.value_a, better.value_b, better.difference) == (1.0, 0.0, 1.0)
    assert better.p_value == pytest.approx(1 / 200) and better.low == 1.0
    # A right on the big class only, B on the three small ones: accuracy favours A, balanced
    # accuracy favours B (0.25 vs 0.75).
    preds_a = np.where(targets == 0, targets, wrong)
    preds_b = np.where(targets != 0, targets, wrong)
    result = paired_bootstrap(targets, preds_a, preds_b, 4, n_boot=500, seed=1)
    assert result.difference == pytest.approx(-0.5)
    assert result.high < 0 and result.p_value < 0.01
    again = paired_bootstrap(targets, preds_a, preds_b, 4, n_boot=500, seed=1)
    assert again == result


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.03, 0.04 → 3×0.01, 2×0.03, max(1×0.04, 0.06): monotone step-down.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_bootstrap_mean_ci() -> None:
    assert bootstrap_mean_ci([1.0] * 10) == (1.0, 1.0)
    low, high = bootstrap_mean_ci([0, 1] * 200, n_boot=500)
    assert low < 0.5 < high and high - low < 0.15


def test_corrected_fold_t_by_hand() -> None:
    from facecls.paired import corrected_fold_t

    # d = (0.01, 0.03, 0.02): mean 0.02, s = 0.01; 3 folds → val/train = 1/2.
    result = corrected_fold_t([0.01, 0.03, 0.02], 0.5)
    t = 0.02 / math.sqrt((1 / 3 + 0.5) * 0.01**2)
    assert result.t == pytest.approx(t) and result.df == 2
    # Two-sided p of Student's t with 2 df: 1 - t / sqrt(2 + t^2).
    assert result.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert corrected_fold_t([0.0, 0.0], 1.0).p_value == 1.0
