"""Paired tests between two models scored on the same test images, and a bootstrap of a mean.

Two runs evaluated on the same images make paired observations: per image, each model is right or
wrong. The seed report worried that its differences were "caused just from worst learning
sessions"; these tests say whether a difference is larger than the test set's sampling noise:

* :func:`mcnemar` looks only at the discordant images (one model right, the other wrong).
  ``b`` = A right & B wrong, ``c`` = A wrong & B right. Under the null each discordant image is a
  fair coin, so the exact two-sided p-value is ``min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)])``;
  the mid-p value subtracts half the probability of the observed point (less conservative); the
  chi-square statistic with continuity correction is ``(|b - c| - 1)^2 / (b + c)``.
* :func:`paired_bootstrap` resamples test images within each identity, as every interval of
  facecls does (:mod:`facecls.metrics_intervals`), the same resample for both models, and gives
  the distribution of the difference in balanced accuracy, which accuracy-based McNemar cannot see
  on imbalanced data.

Nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from facecls.metrics_intervals import stratified_resamples


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired correctness; see the module docstring."""

    both_right: int
    a_only: int  # b: A right, B wrong
    b_only: int  # c: A wrong, B right
    both_wrong: int
    p_exact: float
    p_mid: float
    chi2: float
    p_chi2: float


@dataclass(frozen=True)
class PairedBootstrap:
    """Balanced accuracy of A and B on the same images and the bootstrap of ``A - B``.

    ``p_value`` is two-sided: twice the smaller share of resamples on either side of zero
    (clipped to 1); with ``n_boot`` resamples it cannot go below ``1 / n_boot``.
    """

    value_a: float
    value_b: float
    difference: float
    low: float
    high: float
    p_value: float
    n_boot: int


def mcnemar(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray
) -> McNemar:
    """McNemar's test of two models' per-image correctness on the same images.

    Args:
        correct_a: (N,) whether model A got image i right.
        correct_b: (N,) the same for model B, on the same images in the same order.

    Raises:
        ValueError: on different lengths or no images.
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"need two equal, non-empty correctness vectors, got {a.size} and {b.size}"
        )
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    if n == 0:  # no discordant image: no evidence of any difference
        p_exact = p_mid = p_chi2 = 1.0
        chi2 = 0.0
    else:
        k = min(a_only, b_only)
        p_exact = min(1.0, 2.0 * float(stats.binom.cdf(k, n, 0.5)))
        p_mid = min(1.0, p_exact - float(stats.binom.pmf(k, n, 0.5)))
        chi2 = max(abs(a_only - b_only) - 1, 0) ** 2 / n
        p_chi2 = float(stats.chi2.sf(chi2, df=1))
    return McNemar(
        both_right=int(np.sum(a & b)),
        a_only=a_only,
        b_only=b_only,
        both_wrong=int(np.sum(~a & ~b)),
        p_exact=p_exact,
        p_mid=p_mid,
        chi2=float(chi2),
        p_chi2=p_chi2,
    )


def balanced_accuracy_of_resamples(
    targets: np.ndarray, correct: np.ndarray, resamples: np.ndarray, num_classes: int
) -> np.ndarray:
    """Balanced accuracy (mean recall over the classes present) of each resample.

    Args:
        targets: (N,) true class indices.
        correct: (N,) bool, whether the prediction of image i is right.
        resamples: (B, N) image indices of B resamples.

    Returns:
        (B,) balanced accuracies, as scikit-learn's ``balanced_accuracy_score`` on each resample.
    """
    b = resamples.shape[0]
    # Offset resample r's class codes by r*K so one bincount gives every (resample, class) count.
    codes = targets[resamples] + (np.arange(b, dtype=np.int64) * num_classes)[:, None]
    support = np.bincount(codes.ravel(), minlength=b * num_classes).reshape(b, num_classes)
    hits = np.bincount(
        codes.ravel(),
        weights=correct[resamples].ravel().astype(np.float64),
        minlength=b * num_classes,
    ).reshape(b, num_classes)
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros(hits.shape), where=present)
    return recall.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def paired_bootstrap(
    targets: Sequence[int] | np.ndarray,
    preds_a: Sequence[int] | np.ndarray,
    preds_b: Sequence[int] | np.ndarray,
    num_classes: int,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedBootstrap:
    """Paired bootstrap of the difference in balanced accuracy, A minus B, resampling the test
    images within each identity (:func:`facecls.metrics_intervals.stratified_resamples`).

    Args:
        targets: (N,) true class indices of the shared test images.
        preds_a: (N,) model A's predicted class indices, image-aligned with ``targets``.
        preds_b: (N,) model B's, likewise.
        num_classes: K.
        n_boot: number of resamples.
        seed: seed of the resampling; the same seed gives the same answer.
        alpha: 1 - coverage of the percentile interval.
    """
    targets = np.asarray(targets, dtype=np.int64).ravel()
    correct_a = np.asarray(preds_a).ravel() == targets
    correct_b = np.asarray(preds_b).ravel() == targets
    n = targets.size
    if n == 0 or correct_a.size != n or correct_b.size != n or n_boot < 1:
        raise ValueError("need equal, non-empty targets and predictions and n_boot >= 1")
    whole = np.arange(n)[None, :]
    value_a = float(balanced_accuracy_of_resamples(targets, correct_a, whole, num_classes)[0])
    value_b = float(balanced_accuracy_of_resamples(targets, correct_b, whole, num_classes)[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, (1 << 22) // max(n, num_classes))  # bounded memory: ~4 M indices per chunk
    diffs = [
        balanced_accuracy_of_resamples(targets, correct_a, idx, num_classes)
        - balanced_accuracy_of_resamples(targets, correct_b, idx, num_classes)
        for idx in stratified_resamples(targets, n_boot, rng, chunk)
    ]
    d = np.concatenate(diffs)
    low, high = np.percentile(d, [50.0 * alpha, 100.0 - 50.0 * alpha])
    # Ties at exactly zero count half to each side, so identical models get p = 1.
    below = np.mean(d < 0) + 0.5 * np.mean(d == 0)
    p_value = min(1.0, 2.0 * min(below, 1.0 - below))
    return PairedBootstrap(
        value_a, value_b, value_a - value_b, float(low), float(high),
        max(float(p_value), 1.0 / n_boot), n_boot,
    )  # fmt: skip


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given), for several pairs at once."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (e.g. of per-image top-5 hits)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    rng = np.random.default_rng(seed)
    # Resampling N Bernoulli-like values B times is one (B, N) gather; chunked to bound memory.
    chunk = max(1, (1 << 22) // x.size)
    means = [
        x[rng.integers(0, x.size, size=(min(chunk, n_boot - s), x.size))].mean(axis=1)
        for s in range(0, n_boot, chunk)
    ]
    low, high = np.percentile(np.concatenate(means), [50.0 * alpha, 100.0 - 50.0 * alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class FoldTest:
    """Corrected resampled t-test over folds shared by two cross-validated runs."""

    mean_difference: float
    std_difference: float
    t: float
    df: int
    p_value: float


def corrected_fold_t(differences: Sequence[float], val_to_train: float) -> FoldTest:
    """Nadeau & Bengio's corrected paired t-test on per-fold score differences.

    Folds share training images, so the plain paired t-test is over-confident; the corrected
    variance is ``(1/k + n_val/n_train) * s^2`` (for k-fold, ``n_val/n_train = 1/(k - 1)``). Unlike
    the tests on the test images, this one sees training randomness: a difference that a lucky or
    unlucky training session could explain is not significant here.

    Args:
        differences: (k,) score of A minus score of B on each fold's validation part.
        val_to_train: validation images over training images in one fold.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    k = d.size
    if k < 2:
        raise ValueError("the fold test needs at least two folds")
    mean, std = float(d.mean()), float(d.std(ddof=1))
    scale = np.sqrt((1.0 / k + val_to_train) * std**2)
    if scale == 0.0:  # every fold moved by exactly the same amount
        return FoldTest(
            mean, std, 0.0 if mean == 0 else float("inf"), k - 1, 1.0 if mean == 0 else 0.0
        )
    t = mean / scale
    return FoldTest(mean, std, float(t), k - 1, float(2.0 * stats.t.sf(abs(t), df=k - 1)))
