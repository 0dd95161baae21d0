"""Open-set scores, calibration and rates against brute-force and scikit-learn oracles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.special import logsumexp as scipy_logsumexp
from scipy.special import softmax as scipy_softmax

from facecls import openset, openset_calibration, openset_rates, openset_thresholds


def test_scores_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 5)) * 4
    features = rng.normal(size=(20, 8))
    centroids = openset.l2_normalize(rng.normal(size=(5, 8))).astype(np.float32)
    assert openset.scores("msp", logits) == pytest.approx(scipy_softmax(logits, 1).max(1))
    assert openset.scores("energy", logits) == pytest.approx(scipy_logsumexp(logits, 1))
    chosen = logits.argmax(1)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = np.sum(unit * centroids[chosen], axis=1)
    got = openset.scores("centroid", logits, features, centroids)
    assert got == pytest.approx(expected, abs=1e-5)
    # margin: the chosen cosine minus half the best other one (brute force)
    cos = unit @ centroids.T
    second = np.array([max(np.delete(row, c)) for row, c in zip(cos, chosen, strict=True)])
    margin = openset.scores("margin", logits, features, centroids)
    assert margin == pytest.approx(expected - openset.MARGIN_WEIGHT * second, abs=1e-5)
    # fused: the margin plus the weighted softmax probability of the same (chosen) identity
    fused = openset.scores("fused", logits, features, centroids)
    probability = scipy_softmax(logits, 1)[np.arange(20), chosen]
    assert fused == pytest.approx(margin + openset.FUSED_WEIGHT * probability, abs=1e-5)
    # a bundle's own weight (a model with a tuned last stage stores a smaller one)
    light = openset.scores("fused", logits, features, centroids, fused_weight=0.1)
    assert light == pytest.approx(margin + 0.1 * probability, abs=1e-5)
    # one identity has no runner-up: the margin is the cosine
    one = openset.scores("margin", logits[:, :1], features, centroids[:1])
    assert one == pytest.approx(unit @ centroids[0], abs=1e-5)
    with pytest.raises(ValueError, match="unknown open-set method"):
        openset.scores("odin", logits)


def test_class_centroids_are_unit_means_of_unit_embeddings() -> None:
    features = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, -2.0], [5.0, 5.0]])
    targets = np.array([0, 0, 1, 1])
    c = openset.class_centroids(features, targets, 3)
    assert c[0] == pytest.approx(np.array([1, 1]) / np.sqrt(2))
    assert c[1] == pytest.approx(
        openset.l2_normalize(np.array([[np.sqrt(0.5), np.sqrt(0.5) - 1]]))[0]
    )
    assert c[2] == pytest.approx([0, 0])  # no image: zero row


@pytest.mark.parametrize("acceptance", [0.5, 0.9, 0.95, 1.0])
def test_threshold_accepts_at_least_the_target(acceptance: float) -> None:
    scores = np.random.default_rng(1).normal(size=101)
    t = openset_thresholds.threshold_at_acceptance(scores, acceptance)
    accepted = np.mean(scores >= t)
    assert accepted >= acceptance
    # and it is the largest such threshold: any higher score accepts too few
    higher = scores[scores > t]
    if len(higher):
        assert np.mean(scores >= higher.min()) < acceptance


def test_open_set_curve_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    known = rng.normal(1.0, 1.0, 200)
    correct = rng.random(200) < 0.8
    unknown = rng.normal(-0.5, 1.0, 300)
    curve = openset_rates.open_set_curve(known, correct, unknown)
    for i in range(0, len(curve["threshold"]), 37):
        r = openset_rates.rates_at(curve["threshold"][i], known, correct, unknown)
        assert curve["fpir"][i] == pytest.approx(r.fpir)
        assert curve["dir"][i] == pytest.approx(r.dir)
    at = openset_rates.dir_at_fpir(known, correct, unknown, 0.01)
    assert at.fpir <= 0.01
    # the next lower threshold would exceed the FPIR target
    lower = curve["threshold"][curve["threshold"] < at.threshold]
    assert openset_rates.rates_at(lower.max(), known, correct, unknown).fpir > 0.01


def test_auroc_like_separation_from_rates() -> None:
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    known, unknown = rng.normal(1, 1, 50), rng.normal(0, 1, 60)
    correct = np.ones(50, dtype=bool)
    curve = openset_rates.open_set_curve(known, correct, unknown)
    fpr, tpr, thresholds = roc_curve(
        np.r_[np.ones(50), np.zeros(60)], np.r_[known, unknown], drop_intermediate=False
    )
    # With every known answer correct, DIR/FPIR is the ROC curve.
    for f, t, th in zip(fpr[1:], tpr[1:], thresholds[1:], strict=True):
        i = np.flatnonzero(curve["threshold"] == th)[0]
        assert (curve["fpir"][i], curve["dir"][i]) == pytest.approx((f, t))


def test_fit_scale_minimises_nll() -> None:
    rng = np.random.default_rng(4)
    targets = rng.integers(0, 4, 300)
    cos = rng.normal(0, 0.1, (300, 4))
    cos[np.arange(300), targets] += 0.3
    best = openset_calibration.fit_scale(cos, targets)

    def nll(s: float) -> float:
        z = s * cos
        return float(np.mean(scipy_logsumexp(z, 1) - z[np.arange(300), targets]))

    assert nll(best) <= min(nll(best * 0.8), nll(best * 1.25)) + 1e-9


def test_calibrate_sets_thresholds_on_correct_validation_answers() -> None:
    rng = np.random.default_rng(5)
    num_classes, dim = 4, 6
    means = rng.normal(size=(num_classes, dim)) * 3
    train_t = np.repeat(np.arange(num_classes), 20)
    val_t = np.repeat(np.arange(num_classes), 10)
    train_f = means[train_t] + rng.normal(size=(80, dim))
    val_f = means[val_t] + rng.normal(size=(40, dim))
    val_logits = val_f @ means.T
    cal = openset_calibration.calibrate(train_f, train_t, val_logits, val_f, val_t, num_classes)
    correct = val_logits.argmax(1) == val_t
    for method in openset.METHODS:
        s = openset.scores(method, val_logits, val_f, cal.centroids)[correct]
        assert np.mean(s >= cal.thresholds[method]) >= 0.95
    meta = cal.meta()
    assert meta["method"] == "msp" and meta["threshold"] == cal.thresholds["msp"]
    assert meta["calibration"]["validation_correct"] == int(correct.sum())


def test_auroc_matches_scikit_learn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    known = rng.integers(0, 20, 300).astype(float)  # many ties, within and across the groups
    unknown = rng.integers(-5, 15, 500).astype(float)
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(500)], np.r_[known, unknown])
    assert openset_rates.auroc(known, unknown) == pytest.approx(expected, abs=1e-12)
    assert openset_rates.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0


def _photos_of(
    centres: np.ndarray, rng: np.random.Generator
) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """``sample(ids, n)``: ``n`` embeddings of each person in ``ids`` (their centre plus unit
    Gaussian noise) and who each shows."""

    def sample(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        targets = np.repeat(ids, n)
        return centres[targets] + rng.normal(size=(len(targets), centres.shape[1])), targets

    return sample


def test_margin_thresholds_for_enrolled_people_and_older_bundles() -> None:
    """Margin thresholds per k accept about the target share of fresh people's photos that
    their centroid names; older bundles' flat tables read as centroid tables."""
    rng = np.random.default_rng(3)
    classes, dim = 30, 32
    sample = _photos_of(rng.normal(size=(classes + 30, dim)) * 1.5, rng)

    train, train_t = sample(np.arange(classes), 30)
    val, val_t = sample(np.arange(classes), 10)
    centroids = openset.class_centroids(train, train_t, classes)
    table = openset_thresholds.few_shot_thresholds(
        val, val_t, None, 0.95, method="margin", centroids=centroids
    )
    assert set(table) == {"1", "2", "3", "5"}  # 10 photos a person: no k=10 probes left
    with pytest.raises(ValueError, match="trained centroids"):
        openset_thresholds.few_shot_thresholds(val, val_t, None, 0.95, method="margin")
    fresh, fresh_t = sample(np.arange(classes, classes + 30), 10)
    # 30 new people, each enrolled from 3 photos beside the trained people, probed with 7 others
    accepted = []
    for c in range(classes, classes + 30):
        rows = fresh_t == c
        shot = openset.l2_normalize(openset.l2_normalize(fresh[rows][:3]).sum(0, keepdims=True))
        cos = openset.cosine(fresh[rows][3:], np.concatenate([centroids, shot.astype(np.float32)]))
        chosen = cos.argmax(1)
        own = cos[np.arange(len(chosen)), chosen]
        score = openset.margin_score(own, openset.runner_up(cos, chosen))[chosen == classes]
        accepted.extend(score >= openset_thresholds.shot_threshold(table, 3))
    assert abs(np.mean(accepted) - 0.95) < 0.05
    flat = {"threshold": 0.5, "enrolled_thresholds": {"1": 0.4, "3": 0.6}}
    assert openset_thresholds.enrolled_table(flat, "centroid") == {"1": 0.4, "3": 0.6}
    assert openset_thresholds.enrolled_table(flat, "margin") == {}
    nested = {"enrolled_thresholds": {"centroid": {"3": 0.6}, "margin": {"3": 0.3}}}
    assert openset_thresholds.enrolled_table(nested, "margin") == {"3": 0.3}


def test_enrolled_thresholds_by_the_stranger_rate_draw_strangers_like_trained_people() -> None:
    """Every face shares a component (they are all faces), so a centroid of few photos, further
    from everyone, draws fewer strangers at the trained threshold than a trained person's does.
    At the per-k thresholds set by the stranger rate (lower), people enrolled from 1 or 3 photos
    (fresh ones, not the validation people the thresholds were simulated on) draw about as many
    real strangers each as a trained person does at the trained threshold."""
    from facecls.openset_fpir import person_weights, pseudo_stranger_answers, threshold_at_fpir

    rng = np.random.default_rng(2)
    classes, dim, fresh_n = 80, 64, 120
    centres = openset.l2_normalize(rng.normal(size=(classes + fresh_n + 600, dim))) * 6
    centres += 6 * openset.l2_normalize(rng.normal(size=(1, dim)))  # what all faces share
    sample = _photos_of(centres, rng)
    train, train_t = sample(np.arange(classes), 20)
    val, val_t = sample(np.arange(classes), 6)
    centroids = openset.class_centroids(train, train_t, classes)
    weights = person_weights(val_t)
    pseudo, _ = pseudo_stranger_answers(
        "margin", np.zeros((len(val_t), classes)), val, centroids, val_t
    )
    trained_t = threshold_at_fpir(pseudo, 0.05, weights)
    table = openset_thresholds.few_shot_fpir_thresholds(
        val, val_t, centroids, {"margin": trained_t}, val, val_t, weights
    )["margin"]
    assert set(table) == {"1", "2", "3", "5"}  # 6 photos a person: no 10-photo centroid
    assert table["1"] < trained_t - 0.02 and table["3"] < trained_t
    sampled = openset_thresholds.few_shot_fpir_thresholds(
        val, val_t, centroids, {"margin": trained_t}, val, val_t, weights, max_people=20
    )["margin"]  # a quarter of the people simulated: the same rule, a rougher estimate
    assert set(sampled) == set(table)

    strangers, _ = sample(np.arange(classes + fresh_n, len(centres)), 4)
    fresh, fresh_t = sample(np.arange(classes, classes + fresh_n), 3)
    unit_c = openset.l2_normalize(centroids)
    cos = openset.cosine(strangers, unit_c)
    first = cos.argmax(1)
    trained_score = openset.margin_score(cos.max(1), openset.runner_up(cos, first))
    per_trained = np.mean([np.mean((first == c) & (trained_score >= trained_t))
                           for c in range(classes)])  # fmt: skip

    def drawn(k: int, limit: float) -> float:
        """The share of strangers each fresh person enrolled from ``k`` photos draws."""
        rates = []
        for c in range(classes, classes + fresh_n):
            shot = openset.l2_normalize(fresh[fresh_t == c][:k].sum(0, keepdims=True))
            cos = openset.cosine(strangers, np.concatenate([unit_c, shot]))
            chosen = cos.argmax(1)
            score = openset.margin_score(cos.max(1), openset.runner_up(cos, chosen))
            rates.append(np.mean((chosen == classes) & (score >= limit)))
        return float(np.mean(rates))

    for k in (1, 3):
        assert 0.5 * per_trained < drawn(k, table[str(k)]) < 2.0 * per_trained, k
    assert drawn(1, trained_t) < 0.4 * per_trained  # what the trained threshold would give
    with pytest.raises(ValueError, match="decided by"):
        openset_thresholds.few_shot_fpir_thresholds(
            val, val_t, centroids, {"msp": trained_t}, val, val_t, weights
        )
    # calibrate stores them, in order and below the trained threshold, and says which rule
    logits = np.zeros((len(val_t), classes))
    logits[np.arange(len(val_t)), val_t] = 1.0
    cal = openset_calibration.calibrate(train, train_t, logits, val, val_t, classes, fpir=0.05)
    assert cal.thresholds["margin"] == pytest.approx(trained_t)
    assert cal.enrolled_thresholds["margin"] == openset_thresholds.settled(table, trained_t)
    assert cal.stats["enrolled_rule"] == "stranger_rate"
    by_share = openset_calibration.calibrate(train, train_t, logits, val, val_t, classes, fpir=None)
    assert by_share.stats["enrolled_rule"] == "acceptance"


def test_enrolled_thresholds_by_the_stranger_rate_skip_what_draws_no_stranger() -> None:
    """A real stranger nearest a trained person, whom that person's few-photo centroid (made
    of unlike photos) never draws: nothing to match, so no threshold for that k (was: an
    error that stopped calibration)."""
    centroids = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    val = np.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    stranger = np.array([[0.9, 0.1, 0.4]])
    tables = openset_thresholds.few_shot_fpir_thresholds(
        val, np.array([0, 1]), centroids, {"margin": 0.0, "centroid": 0.0}, stranger,
        np.array([-1]), np.ones(1), shots=(1,),
    )  # fmt: skip
    assert tables == {"margin": {}, "centroid": {}}


def test_settled_thresholds_never_fall_with_more_photos_nor_pass_the_trained_one() -> None:
    raw = {"1": 0.22, "2": 0.33, "3": 0.39, "5": 0.46, "10": 0.38}
    assert openset_thresholds.settled(raw, 0.40) == {
        "1": 0.22, "2": 0.33, "3": 0.39, "5": 0.40, "10": 0.40,
    }  # fmt: skip
    assert openset_thresholds.settled(raw) == {
        "1": 0.22, "2": 0.33, "3": 0.39, "5": 0.46, "10": 0.46,
    }  # fmt: skip
    assert openset_thresholds.settled({}, 0.4) == {}


def test_calibration_keeps_few_tight_people_from_raising_the_five_photo_threshold() -> None:
    """Most validation people have 2 photos, three have 8 alike ones: the raw 5-photo threshold
    is theirs alone and passes the trained one; the stored table stays below it, in order."""
    rng = np.random.default_rng(8)
    classes, dim = 40, 32
    centres = openset.l2_normalize(rng.normal(size=(classes, dim))) * 4
    per_val = np.full(classes, 2)
    per_val[:3] = 8
    val_t = np.repeat(np.arange(classes), per_val)
    noise = np.where(val_t[:, None] < 3, 0.1, 0.6)  # the three: alike photos
    val_f = centres[val_t] + rng.normal(size=(len(val_t), dim)) * noise
    train_t = np.repeat(np.arange(classes), 15)
    train_f = centres[train_t] + rng.normal(size=(len(train_t), dim)) * 0.6
    logits = val_f @ centres.T
    cal = openset_calibration.calibrate(
        train_f, train_t, logits, val_f, val_t, classes, method="margin", fpir=None
    )
    correct = logits.argmax(1) == val_t
    raw = openset_thresholds.few_shot_thresholds(  # as calibrate simulates them (acceptance rule)
        val_f, val_t, correct, cal.acceptance, method="margin", centroids=cal.centroids
    )
    assert raw["5"] > cal.thresholds["margin"]  # the case this guards against
    table = cal.enrolled_thresholds["margin"]
    values = [table[k] for k in sorted(table, key=int)]
    assert values == sorted(values) and max(values) <= cal.thresholds["margin"]
    assert table["1"] == pytest.approx(raw["1"])  # many people: kept as simulated


def test_fused_pseudo_strangers_leave_their_own_identity_out() -> None:
    """A pseudo-stranger's fused score is the score of a face whose identity is gone from both
    the head and the centroids: the brute force on the reduced logits and centroids."""
    from facecls.openset_fpir import pseudo_stranger_answers

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(12, 4)) * 3
    features = rng.normal(size=(12, 6))
    centroids = openset.l2_normalize(rng.normal(size=(4, 6))).astype(np.float32)
    targets = rng.integers(0, 4, size=12)
    for weight in (openset.FUSED_WEIGHT, openset.TOP_FUSED_WEIGHT):
        got, _ = pseudo_stranger_answers("fused", logits, features, centroids, targets, weight)
        for i, own in enumerate(targets):
            keep = [c for c in range(4) if c != own]
            alone = openset.scores(
                "fused", logits[i : i + 1, keep], features[i : i + 1], centroids[keep],
                fused_weight=weight,
            )  # fmt: skip
            assert got[i] == pytest.approx(alone[0], abs=1e-5)


def test_the_fused_weight_is_the_bundles() -> None:
    """A run with a tuned last stage calibrates and decides with its lighter weight, stored in
    the bundle; a bundle calibrated before the weight was stored keeps the one it used."""
    from facecls.openset_calibration import calibrate
    from facecls.openset_fpir import pseudo_stranger_answers, threshold_at_fpir

    assert openset.fused_weight_for("top") == openset.TOP_FUSED_WEIGHT
    assert openset.fused_weight_for("backbone") == openset.FUSED_WEIGHT
    assert openset.fused_weight_of({"method": "fused", "threshold": 0.5}) == openset.FUSED_WEIGHT
    rng = np.random.default_rng(2)
    targets = np.repeat(np.arange(6), 40)
    centres = rng.normal(size=(6, 16))
    features = centres[targets] + rng.normal(size=(240, 16))
    logits = (features @ centres.T) * 0.5
    calibration = calibrate(
        features, targets, logits, features, targets, 6, "fused", fpir=0.05,
        fused_weight=openset.TOP_FUSED_WEIGHT,
    )  # fmt: skip
    meta = calibration.meta()
    assert openset.fused_weight_of(meta) == openset.TOP_FUSED_WEIGHT
    strangers, _ = pseudo_stranger_answers(
        "fused", logits, features, calibration.centroids, targets, openset.TOP_FUSED_WEIGHT
    )
    assert meta["thresholds"]["fused"] == pytest.approx(threshold_at_fpir(strangers, 0.05))


def test_a_trained_face_model_decides_by_fused_and_an_enrolled_one_by_margin() -> None:
    assert openset.default_method("facenet") == "fused"
    assert openset.default_method("facenet", has_centroids=False) == "msp"  # not calibrated yet
    assert openset.default_method("tronnet") == "msp"
    # enrolling into a model that decides by fused: everyone is then decided on the centroids
    calibrated = {"method": "fused", "thresholds": {"msp": 0.5, "margin": 0.4, "fused": 0.5}}
    assert openset_thresholds.enrolled_method(calibrated) == "margin"


def test_pseudo_strangers_are_named_as_the_reduced_model_would_name_them() -> None:
    """Beside each pseudo-stranger's score, the identity it would be named as is the one the
    model without the own identity chooses (brute force on the reduced logits and centroids:
    the head for ``msp``, ``energy``, ``fused``; the nearest centroid for ``centroid``,
    ``margin``)."""
    from facecls.openset_fpir import pseudo_stranger_answers

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(15, 5)) * 3
    features = rng.normal(size=(15, 6))
    centroids = openset.l2_normalize(rng.normal(size=(5, 6))).astype(np.float32)
    targets = rng.integers(0, 5, size=15)
    for method in openset.METHODS:
        got, chosen = pseudo_stranger_answers(method, logits, features, centroids, targets)
        for i, own in enumerate(targets):
            keep = np.array([c for c in range(5) if c != own])
            reduced_logits, reduced_centroids = logits[i : i + 1, keep], centroids[keep]
            named = reduced_logits.argmax()
            predicted = None
            if method in ("centroid", "margin"):  # named by the nearest centroid, not the head
                named = openset.cosine(features[i : i + 1], reduced_centroids).argmax()
                predicted = np.array([named])
            alone = openset.scores(
                method, reduced_logits, features[i : i + 1], reduced_centroids, predicted
            )
            assert got[i] == pytest.approx(alone[0], abs=1e-5)
            assert chosen[i] == keep[named] and chosen[i] != own


def test_look_alikes_name_the_people_above_the_threshold() -> None:
    """Two people who look alike (twins: nearly the same centre) are, with their own identity
    left out, named as each other above a threshold set at FPIR 5 %: calibration records the
    pair, both ways, strongest first, and nobody whose pseudo-stranger scores stay below it."""
    from facecls.openset_fpir import look_alikes, pseudo_stranger_answers

    rng = np.random.default_rng(6)
    classes, dim = 30, 32
    centres = openset.l2_normalize(rng.normal(size=(classes, dim))) * 5
    centres[1] = centres[0] + 0.3 * rng.normal(size=dim)  # 0 and 1 are twins
    sample = _photos_of(centres, rng)
    train, train_t = sample(np.arange(classes), 10)
    val, val_t = sample(np.arange(classes), 4)
    cal = openset_calibration.calibrate(
        train, train_t, val @ centres.T, val, val_t, classes, method="centroid", fpir=0.05
    )
    pairs = cal.rates["centroid"]["look_alikes"]
    assert {(p["person"], p["as"]) for p in pairs[:2]} == {(0, 1), (1, 0)}
    assert [p["score"] for p in pairs] == sorted((p["score"] for p in pairs), reverse=True)
    scores, chosen = pseudo_stranger_answers("centroid", None, val, cal.centroids, val_t)
    threshold = cal.thresholds["centroid"]
    for p in pairs:
        mine = (val_t == p["person"]) & (chosen == p["as"])
        assert p["photos"] == int(np.sum(scores[mine] >= threshold)) > 0
        assert p["score"] == pytest.approx(scores[mine].max())
    assert look_alikes(scores, chosen, val_t, threshold, limit=1) == pairs[:1]
    assert all(p["views"] == 0 for p in pairs)  # no calibration views given
    # the same photos, the second half marked as views: counted apart, the pairs unchanged
    half = np.arange(len(val_t)) >= len(val_t) // 2
    split = look_alikes(scores, chosen, val_t, threshold, is_view=half)
    assert [(p["person"], p["as"]) for p in split] == [(p["person"], p["as"]) for p in pairs]
    assert [p["photos"] + p["views"] for p in split] == [p["photos"] for p in pairs]
    assert look_alikes(scores, chosen, val_t, float(scores.max()) + 1) == []
