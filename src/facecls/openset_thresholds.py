"""Open-set thresholds: at a target acceptance rate, and per photo count for enrolled people
(by the acceptance rule or by the stranger rate)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from facecls.openset import DEFAULT_ACCEPTANCE, l2_normalize, margin_score, runner_up
from facecls.openset_fpir import threshold_at_share


def threshold_at_acceptance(
    known_scores: np.ndarray, acceptance: float, weights: np.ndarray | None = None
) -> float:
    """The largest threshold that accepts (score >= threshold) at least ``acceptance`` of scores
    (of their total ``weights`` when given: each score counts by its weight)."""
    if not 0.0 < acceptance <= 1.0:
        raise ValueError(f"acceptance must be in (0, 1], got {acceptance}")
    if len(known_scores) == 0:
        raise ValueError("no scores to calibrate a threshold on")
    order = np.argsort(known_scores, kind="stable")
    ordered = np.asarray(known_scores)[order]
    if weights is None:
        # Rejecting the floor((1 - acceptance) * n) lowest scores keeps at least acceptance.
        return float(ordered[int(np.floor((1.0 - acceptance) * len(ordered) + 1e-9))])
    share = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    share /= share[-1]
    # the lowest scores whose weight together stays within 1 - acceptance are rejected
    rejected = int(np.searchsorted(share, 1.0 - acceptance + 1e-9, side="right"))
    return float(ordered[min(rejected, len(ordered) - 1)])


# Photos per person an enrolled centroid is simulated from (``few_shot_thresholds``).
SHOTS: tuple[int, ...] = (1, 2, 3, 5, 10)
# The scores a model with enrolled people can decide by (its nearest-class-mean head's).
ENROLLED_METHODS: tuple[str, ...] = ("centroid", "margin")


def few_shot_thresholds(
    features: np.ndarray,
    targets: np.ndarray,
    probes: np.ndarray | None = None,
    acceptance: float = DEFAULT_ACCEPTANCE,
    shots: tuple[int, ...] = SHOTS,
    draws: int = 5,
    seed: int = 0,
    method: str = "centroid",
    centroids: np.ndarray | None = None,
) -> dict[str, float]:
    """``centroid`` (or ``margin``) thresholds for identities enrolled from ``k`` photos, per ``k``.

    A centroid of a few photos is noisier than one of a whole training part, so the person's
    other photos sit at a lower cosine to it; one threshold for both would reject enrolled
    people more often than trained ones. Enrollment is simulated on the validation part (photos
    the model never trained on, as enrolled photos are): for each person, ``k`` photos make a
    centroid, and the cosines of the person's other photos to it set the threshold that accepts
    ``acceptance`` of them, as :func:`calibrate` sets the trained one. Every person counts
    equally (their photos' weights sum to one per draw): only people with more than ``k``
    validation photos take part, and the few with dozens of similar photos (LFW's politicians)
    would otherwise set the threshold for everyone (on LFW-8's validation part, the FaceNet
    probe's 3-photo cosine threshold moved from 0.671 to 0.667). ``probes`` (a boolean
    mask) limits the photos scored to those the trained threshold is set on (the correctly
    named ones), so both thresholds answer the same question. ``k`` with fewer than 10 scored
    photos is left out.

    ``margin`` needs the trained ``centroids`` (``targets`` index them): a probe's runner-up is
    its nearest trained centroid other than its own person's (whom the simulated centroid
    stands in for), and only probes the simulated centroid would name (above that runner-up)
    set the threshold, as the trained one is set on correctly named images.

    Returns:
        ``{str(k): threshold}`` (string keys: it is stored in JSON).
    """
    if method not in ENROLLED_METHODS:
        raise ValueError(f"enrolled people are decided by {ENROLLED_METHODS}, not {method!r}")
    if method == "margin" and centroids is None:
        raise ValueError("the margin thresholds need the trained centroids")
    rng = np.random.default_rng(seed)
    unit = l2_normalize(np.asarray(features, dtype=np.float64))
    targets = np.asarray(targets)
    scored = np.ones(len(targets), bool) if probes is None else np.asarray(probes, bool)
    second = None
    if method == "margin":
        second = runner_up(unit @ np.asarray(centroids, dtype=np.float64).T, targets)
    table: dict[str, float] = {}
    for k in shots:
        accepted: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        for c in np.unique(targets):
            members = np.flatnonzero(targets == c)
            if len(members) < k + 1:
                continue
            for _ in range(draws):
                order = rng.permutation(members)
                shot = l2_normalize(unit[order[:k]].sum(axis=0, keepdims=True))[0]
                rest = order[k:][scored[order[k:]]]
                own = unit[rest] @ shot
                if second is not None:
                    named = own > second[rest]
                    own = margin_score(own[named], second[rest][named])
                if len(own):
                    accepted.append(own)
                    weights.append(np.full(len(own), 1.0 / len(own)))
        scores_k = np.concatenate(accepted) if accepted else np.zeros(0)
        if len(scores_k) >= 10:
            table[str(k)] = threshold_at_acceptance(scores_k, acceptance, np.concatenate(weights))
    return table


def few_shot_fpir_thresholds(
    features: np.ndarray,
    targets: np.ndarray,
    centroids: np.ndarray,
    trained_thresholds: Mapping[str, float],
    strangers: np.ndarray,
    stranger_own: np.ndarray,
    stranger_weights: np.ndarray,
    shots: tuple[int, ...] = SHOTS,
    draws: int = 5,
    seed: int = 0,
    max_people: int = 300,
) -> dict[str, dict[str, float]]:
    """For each score of ``trained_thresholds`` (``centroid``, ``margin``: the trained people's
    threshold), the thresholds for identities enrolled from ``k`` photos, per ``k``, that let
    each enrolled person draw as many strangers as a trained person does.

    Where the trained threshold is set by the stranger rate, the acceptance rule of
    :func:`few_shot_thresholds` has nothing to match: that threshold names every validation face
    (SFace on LFW-8), and "accept them all" on the simulated few-shot probes is the lowest of a
    handful of politicians' scores, above the trained threshold. Here the operating point is
    matched instead: a centroid of ``k`` photos is simulated for each validation person with
    ``k`` or more (``draws`` times), standing in for that person's trained centroid, and the
    ``strangers`` are scored against it as an enrolled person would be scored (named when it is
    nearer than every trained centroid but the stranger's own, ``stranger_own``, -1 for real
    strangers). The threshold for ``k`` is the lowest at which the simulated centroids draw, on
    average, no larger share of the strangers (``stranger_weights``: each person weighs the same)
    than the same people's trained centroids draw at the trained threshold. A noisier centroid
    sits further from everyone, strangers included, so its threshold is lower where the
    acceptance rule would keep it at the trained one. At most ``max_people`` people (drawn at
    random) are simulated per ``k``. Strangers are named by the nearest centroid throughout, as
    a model with enrolled people names everyone (a threshold set on real strangers was set on
    the trained head's choice, whose score is at most the nearest centroid's: there the target
    is the lenient side of ``--fpir``).

    Returns:
        ``{score: {str(k): threshold}}``; ``k`` with no eligible person, or whose trained or
        simulated centroids draw no stranger at all, is left out.
    """
    for method in trained_thresholds:
        if method not in ENROLLED_METHODS:
            raise ValueError(f"enrolled people are decided by {ENROLLED_METHODS}, not {method!r}")
    rng = np.random.default_rng(seed)
    unit = l2_normalize(np.asarray(features, dtype=np.float64))
    targets = np.asarray(targets)
    others = l2_normalize(np.asarray(strangers, dtype=np.float64))
    own = np.asarray(stranger_own)
    w = np.asarray(stranger_weights, dtype=np.float64)
    cos = others @ l2_normalize(np.asarray(centroids, dtype=np.float64)).T
    rows = np.arange(len(others))
    cos[rows[own >= 0], own[own >= 0]] = -np.inf  # a pseudo-stranger's own centroid is gone
    first = cos.argmax(axis=1)
    best = cos[rows, first]
    cos[rows, first] = -np.inf
    second = cos.max(axis=1) if cos.shape[1] > 1 else np.full(len(rows), -np.inf)
    # a score from the nearest centroid's cosine and its rival's (no rival: 0, as
    # pseudo_stranger_answers has it)
    score_of = {
        "centroid": lambda near, rival: near,
        "margin": lambda near, rival: margin_score(near, _or_zero(rival)),
    }
    tables: dict[str, dict[str, float]] = {m: {} for m in trained_thresholds}
    # each stranger's score as the trained identity it is nearest to
    trained = {m: score_of[m](best, second) for m in tables}
    for k in shots:
        people = [c for c in np.unique(targets) if np.sum(targets == c) >= k and w[own != c].sum()]
        if len(people) > max_people:  # a sample of them is enough, and bounds the work
            people = sorted(rng.choice(people, size=max_people, replace=False))
        if not people:
            continue
        owners = np.repeat(people, draws)
        shots_ = l2_normalize(np.stack([
            unit[rng.permutation(np.flatnonzero(targets == c))[:k]].sum(0) for c in owners
        ]))  # fmt: skip
        near_all = others @ shots_.T  # (strangers, people x draws): cosines to the centroids
        target_rates: dict[str, list[float]] = {m: [] for m in tables}
        scores: dict[str, list[np.ndarray]] = {m: [] for m in tables}
        weights: list[np.ndarray] = []
        for p, c in enumerate(people):
            outside = own != c  # the person's own photos are no strangers to them
            total = w[outside].sum()
            mine = outside & (first == c)  # the person's trained centroid at the trained threshold
            for m, limit in trained_thresholds.items():
                target_rates[m].append(w[mine][trained[m][mine] >= limit].sum() / total)
            # the nearest trained centroid once c's own is replaced by a simulated one
            rival = np.where(first == c, second, best)[outside]
            for near in near_all[outside, p * draws : (p + 1) * draws].T:
                named = near > rival  # no rival at all (-inf): named whatever the cosine
                for m in tables:
                    scores[m].append(score_of[m](near, rival)[named])
                weights.append(w[outside][named] / total)
        shares = np.concatenate(weights) / len(owners)
        for m, table in tables.items():
            drawn = np.concatenate(scores[m])
            if not np.mean(target_rates[m]) > 0 or not len(drawn):
                continue  # no stranger drawn at all: nothing to match
            table[str(k)] = threshold_at_share(drawn, shares, float(np.mean(target_rates[m])))
    return tables


def _or_zero(values: np.ndarray) -> np.ndarray:
    """``values`` with the missing (not finite) ones as 0."""
    return np.where(np.isfinite(values), values, 0.0)


def settled(table: dict[str, float], ceiling: float | None = None) -> dict[str, float]:
    """``table`` (:func:`few_shot_thresholds`) made what more photos must give: a threshold that
    never falls as ``k`` grows and never passes ``ceiling`` (the trained people's, whose
    centroids are made of every training photo). The larger ``k`` are simulated on the few
    people with more than ``k`` validation photos (on LFW-8's: 33 people for ``k=3``, 14 for
    ``k=5``, 5 for ``k=10``), mostly the politicians with dozens of alike photos, whose tight
    centroids put the 5-photo threshold (0.461) above the trained one (0.390): without this, a
    person enrolled from 5 photos was named less often than one enrolled from 3."""
    out: dict[str, float] = {}
    floor = -np.inf
    for k in sorted(table, key=int):
        value = float(table[k]) if ceiling is None else min(float(table[k]), float(ceiling))
        floor = max(floor, value)
        out[k] = floor
    return out


def enrolled_method(openset: dict[str, Any]) -> str:
    """The score a model with enrolled people decides by, from its bundle's ``openset`` entry:
    the one ``facecls calibrate --method`` chose, else ``margin`` where calibration set its
    thresholds (bundles calibrated before it: ``centroid``)."""
    chosen = openset.get("method")
    if chosen in ENROLLED_METHODS:
        return str(chosen)
    return "margin" if "margin" in openset.get("thresholds", {}) else "centroid"


def enrolled_table(openset: dict[str, Any], method: str) -> dict[str, float]:
    """The ``{str(k): threshold}`` table of ``method`` in a bundle's ``openset`` entry
    (``model.json``); bundles calibrated before ``margin`` hold one flat ``centroid`` table."""
    stored = openset.get("enrolled_thresholds") or {}
    if stored and all(str(key).isdigit() for key in stored):
        return dict(stored) if method == "centroid" else {}
    return dict(stored.get(method, {}))


def shot_threshold(table: dict[str, float], photos: int) -> float | None:
    """The threshold of ``table`` (:func:`few_shot_thresholds`) for an identity enrolled from
    ``photos`` photos: that of the largest simulated ``k`` not above it (the smallest ``k``
    when it is below all); ``None`` for an empty table."""
    if not table:
        return None
    ks = sorted(int(k) for k in table)
    fitting = [k for k in ks if k <= photos]
    return float(table[str(fitting[-1] if fitting else ks[0])])
