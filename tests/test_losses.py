"""Long-tail losses against hand-computed cases, samplers against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facecls.config import ConfigError, TrainConfig, imbalance_of
from facecls.config_io import from_dict
from facecls.config_rules import resolve
from facecls.data.samplers import SampledBatches, class_probabilities
from facecls.training.losses import build_loss, class_weights, log_prior, posthoc_adjust

# Two samples, three classes with 6, 3 and 1 training images.
LOGITS = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
TARGETS = [0, 2]
COUNTS = np.array([6, 3, 1])


def _nll(row: list[float], target: int) -> float:
    """−log softmax(row)[target], by hand."""
    return math.log(sum(math.exp(v) for v in row)) - row[target]


def _loss(imbalance: str, **train: object) -> torch.nn.Module:
    config = TrainConfig(imbalance=imbalance, **train)  # type: ignore[arg-type]
    return build_loss(config, COUNTS, torch.device("cpu"))


def _value(loss: torch.nn.Module) -> float:
    return float(loss(torch.tensor(LOGITS), torch.tensor(TARGETS)))


def test_none_is_plain_cross_entropy() -> None:
    expected = (_nll(LOGITS[0], 0) + _nll(LOGITS[1], 2)) / 2
    assert _value(_loss("none")) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("scheme", "raw"),
    [
        ("inverse", [1 / 6, 1 / 3, 1.0]),
        ("sqrt", [1 / math.sqrt(6), 1 / math.sqrt(3), 1.0]),
        # Cui et al.: (1 − β) / (1 − β^n) with β = 0.5: 0.5/(1 − 1/64), 0.5/(1 − 1/8), 0.5/0.5.
        ("effective", [0.5 / (63 / 64), 0.5 / (7 / 8), 1.0]),
    ],
)
def test_weighted_losses_by_hand(scheme: str, raw: list[float]) -> None:
    weights = [w * 3 / sum(raw) for w in raw]  # scaled to average 1 over the 3 classes
    assert class_weights(COUNTS, scheme, beta=0.5).tolist() == pytest.approx(weights, rel=1e-6)
    # Weighted mean, as PyTorch's CE: Σ w_y·ℓ / Σ w_y.
    w0, w2 = weights[0], weights[2]
    expected = (w0 * _nll(LOGITS[0], 0) + w2 * _nll(LOGITS[1], 2)) / (w0 + w2)
    assert _value(_loss(scheme, beta=0.5)) == pytest.approx(expected, rel=1e-6)


def test_inverse_alias_class_weights_is_the_same_remedy() -> None:
    config = TrainConfig(class_weights="inverse")
    assert imbalance_of(config) == "inverse"
    alias = build_loss(config, COUNTS, torch.device("cpu"))
    assert _value(alias) == pytest.approx(_value(_loss("inverse")))


def test_effective_limits() -> None:
    counts = np.array([50, 7, 2, 1])
    none = torch.ones(4)
    assert torch.allclose(class_weights(counts, "effective", beta=0.0), none)
    assert torch.allclose(class_weights(counts, "effective", beta=1e-9), none)
    inverse = class_weights(counts, "inverse")
    near_one = class_weights(counts, "effective", beta=1 - 1e-7)
    assert torch.allclose(near_one, inverse, rtol=1e-4)
    # In between, strictly between the two (more weight to rare classes than none, less than 1/n).
    mid = class_weights(counts, "effective", beta=0.9)
    assert mid[0] > inverse[0] and mid[-1] < inverse[-1]


def test_balanced_softmax_is_cross_entropy_on_prior_adjusted_logits() -> None:
    logits = torch.tensor(LOGITS)
    prior = torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32)
    expected = F.cross_entropy(logits + prior.log(), torch.tensor(TARGETS))
    assert _value(_loss("balanced-softmax")) == pytest.approx(float(expected), rel=1e-6)
    # By hand for the first sample: −log( π_0 e^2 / Σ π_j e^z_j ).
    p = COUNTS / COUNTS.sum()
    first = -math.log(p[0] * math.e**2 / (p[0] * math.e**2 + p[1] + p[2] * math.e**-1))
    single = _loss("balanced-softmax")(logits[:1], torch.tensor([0]))
    assert float(single) == pytest.approx(first, rel=1e-5)  # float32


def test_logit_adjust_tau() -> None:
    logits = torch.tensor(LOGITS)
    for tau in (0.0, 0.5, 1.0, 2.0):
        expected = F.cross_entropy(logits + tau * log_prior(COUNTS), torch.tensor(TARGETS))
        assert _value(_loss("logit-adjust", tau=tau)) == pytest.approx(float(expected), rel=1e-6)
    assert _value(_loss("logit-adjust", tau=0.0)) == pytest.approx(_value(_loss("none")))
    assert _value(_loss("logit-adjust", tau=1.0)) == pytest.approx(
        _value(_loss("balanced-softmax"))
    )


def test_drw_switches_to_effective_weights_at_its_epoch() -> None:
    loss = _loss("drw", epochs=9, beta=0.5)  # default start: the last third, epoch 7
    assert loss.switch_epoch == 7
    plain, weighted = _value(_loss("none")), _value(_loss("effective", beta=0.5))
    for epoch, expected in [(1, plain), (6, plain), (7, weighted), (9, weighted)]:
        loss.set_epoch(epoch)
        assert _value(loss) == pytest.approx(expected, rel=1e-6), epoch
    # Validation during every epoch uses the final (weighted) loss.
    assert _value(loss.selection_loss()) == pytest.approx(weighted, rel=1e-6)
    assert _loss("drw", epochs=9, drw_epoch=3).switch_epoch == 3


def test_posthoc_adjustment() -> None:
    logits = np.array(LOGITS, dtype=np.float32)
    assert np.array_equal(posthoc_adjust(logits, COUNTS, 0.0), logits)
    adjusted = posthoc_adjust(logits, COUNTS, 1.0)
    np.testing.assert_allclose(adjusted, logits - np.log(COUNTS / COUNTS.sum()), rtol=1e-6)
    # Rare class 2 gains most: sample 2 (logits 0, 1, 0) still says class 1 (+log 10/3 vs +log 10).
    assert adjusted.argmax(1).tolist() == [0, 2]


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"train": {"imbalance": "focal"}}, "train.imbalance"),
        ({"train": {"class_weights": "inverse", "imbalance": "drw"}}, "contradicts"),
        ({"train": {"sampler": "sqrt", "imbalance": "balanced-softmax"}}, "one imbalance remedy"),
        ({"train": {"sampler": "sqrt", "class_weights": "inverse"}}, "one imbalance remedy"),
        ({"train": {"beta": 1.0}}, "train.beta"),
        ({"train": {"tau": -1.0}}, "train.tau"),
        ({"train": {"epochs": 5, "drw_epoch": 6}}, "drw_epoch"),
        ({"train": {"freeze": "all"}}, "train.freeze"),
        ({"train": {"backbone_lr_scale": 0.0}}, "backbone_lr_scale"),
        ({"data": {"crop": 1.5}}, "data.crop"),
    ],
)
def test_invalid_remedies_are_refused(values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        from_dict(values)


def test_fast_recipe_learning_rates_for_fine_tuning() -> None:
    def lr(**train: object) -> float | None:
        return resolve(from_dict({"train": train})).train.lr

    assert lr() == 2e-3
    assert lr(weights="w.safetensors") == lr(pretrained=True) == 1e-3
    assert lr(weights="w.safetensors", freeze="backbone") == 1e-2  # a linear probe
    assert lr(weights="w.safetensors", freeze="backbone", lr=5e-4) == 5e-4  # given wins
    assert lr(recipe="report", freeze="backbone") == 1e-4


def test_consistent_alias_is_accepted() -> None:
    config = from_dict({"train": {"class_weights": "inverse", "imbalance": "inverse"}})
    assert imbalance_of(config.train) == "inverse"


# ---- samplers ---------------------------------------------------------------------------------

SAMPLER_COUNTS = [100, 25, 4, 1]


def _sampler(scheme: str) -> SampledBatches:
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(SAMPLER_COUNTS)])
    images = torch.zeros(len(targets), 3, 2, 2, dtype=torch.uint8)
    indices = torch.arange(len(targets))
    return SampledBatches(images, targets, indices, 10, torch.device("cpu"), scheme, 5)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [("class-balanced", [0.25] * 4), ("sqrt", [10 / 18, 5 / 18, 2 / 18, 1 / 18])],
)
def test_sampler_class_frequencies_match_definition(scheme: str, expected: list[float]) -> None:
    assert class_probabilities(np.array([*SAMPLER_COUNTS, 0]), scheme) == pytest.approx(
        [*expected, 0.0]
    )
    sampler = _sampler(scheme)
    draws = torch.cat([sampler.draw(seed) for seed in range(400)])  # 52,000 draws
    assert len(draws) == 400 * sum(SAMPLER_COUNTS)
    classes = sampler.targets[draws]
    freq = torch.bincount(classes, minlength=5).double() / len(classes)
    np.testing.assert_allclose(freq[:4].numpy(), expected, atol=0.01)
    assert freq[4] == 0
    # Within a class every image is equally likely: class 0's 100 images each ≈ 1 %.
    within = torch.bincount(draws[classes == 0], minlength=100)[:100].double()
    assert (within / within.sum()).sub(0.01).abs().max() < 0.006


def test_sampler_epochs_depend_only_on_the_seed() -> None:
    sampler = _sampler("sqrt")
    assert torch.equal(sampler.draw(7), _sampler("sqrt").draw(7))
    assert not torch.equal(sampler.draw(7), sampler.draw(8))
    batches = list(sampler.epoch(3))
    assert len(batches) == len(sampler) == 13
    assert torch.equal(torch.cat([t for _, t in batches]), sampler.targets[sampler.draw(3)])
