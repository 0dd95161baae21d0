"""What a comparison page shows: runs side by side, and paired tests for runs on the same images.

Two runs are paired only when their ``predictions.csv`` hold exactly the same test images with the
same identities; otherwise the page says why they cannot be paired. For each paired couple there
are two tests on the test images (McNemar on accuracy, a paired bootstrap on balanced accuracy)
and, when both are ``cv`` runs on the same folds, a corrected t-test over folds that also sees
training randomness. With more than two runs the p-values of each test are Holm-adjusted across
couples. Every sentence follows the sign of its test and names its metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from itertools import combinations
from typing import Any

import numpy as np

from facecls import metrics_classes
from facecls.config_io import to_dict
from facecls.paired import corrected_fold_t, holm, mcnemar, paired_bootstrap
from facecls.report import plots
from facecls.report.content import RunPage
from facecls.report.render import format_p, md_escape
from facecls.report.run_data import RunData
from facecls.report.scores import class_average_rows, headline_rows
from facecls.report.settings import PATH_KEYS, WITHHELD, loss_labels

ALPHA = 0.05
WRONG_RECALL = 0.2  # an identity "every run gets wrong": recall at most this in each run


def pairing(a: RunData, b: RunData) -> tuple[bool, str]:
    """Whether two runs were tested on the same images, and a sentence saying so."""
    truth_a = {p.path: p.true for p in a.predictions}
    truth_b = {p.path: p.true for p in b.predictions}
    if truth_a == truth_b:
        return True, f"the same {len(truth_a)} test images"
    shared = len(truth_a.keys() & truth_b.keys())
    if shared == len(truth_a) == len(truth_b):
        return False, "the same test files but with different identity labels; cannot be paired"
    return False, (
        f"different test images ({len(truth_a)} and {len(truth_b)}, {shared} shared): the runs "
        "used another split, seed or data, so they cannot be paired and no paired test is made"
    )


def _fold_test(a: RunData, b: RunData) -> dict[str, Any] | None:
    """The corrected fold t-test on validation balanced accuracy, for cv runs on the same folds."""
    if a.command != "cv" or b.command != "cv" or a.folds.get("folds") != b.folds.get("folds"):
        return None
    fa, fb = a.metrics["cv"]["folds"], b.metrics["cv"]["folds"]
    sizes = [len(f) for f in a.folds["folds"]]
    pool = len(a.folds.get("pool", [])) or sum(sizes)
    ratio = float(np.mean([s / max(pool - s, 1) for s in sizes]))
    # B minus A, as everywhere on the page: a positive difference means B did better.
    diffs = [y["balanced_accuracy"] - x["balanced_accuracy"] for x, y in zip(fa, fb, strict=True)]
    return asdict(corrected_fold_t(diffs, ratio))


def paired_tests(a: RunData, b: RunData, seed: int = 0) -> dict[str, Any]:
    """McNemar and the paired bootstrap of balanced accuracy on shared test images.

    The bootstrap's ``difference`` is A minus B as :func:`facecls.paired.paired_bootstrap` gives
    it; the page shows B minus A (``delta``, ``delta_low``, ``delta_high``), the change from the
    first run to the second, as do the per-identity recall changes (``moved``).
    """
    names = sorted(set(a.class_names) | set(b.class_names))
    index = {n: i for i, n in enumerate(names)}
    by_path = {p.path: p for p in b.predictions}
    targets = np.array([index[p.true] for p in a.predictions])
    preds_a = np.array([index[p.predicted] for p in a.predictions])
    preds_b = np.array([index[by_path[p.path].predicted] for p in a.predictions])
    recall_a, recall_b = (
        _recalls(targets, preds_a, len(names)),
        _recalls(targets, preds_b, len(names)),
    )
    support = np.bincount(targets, minlength=len(names))
    moved = [
        {"name": names[c], "support": int(support[c]), "a": float(recall_a[c]),
         "b": float(recall_b[c]), "delta": float(recall_b[c] - recall_a[c])}
        for c in np.argsort(-np.abs(recall_a - recall_b), kind="stable")[:10]
        if support[c] and recall_a[c] != recall_b[c]
    ]  # fmt: skip
    boot = asdict(paired_bootstrap(targets, preds_a, preds_b, len(names), seed=seed))
    # + 0.0 turns -0.0 into 0.0, so an unchanged score does not read "-0.000".
    boot.update(delta=-boot["difference"] + 0.0, delta_low=-boot["high"] + 0.0,
                delta_high=-boot["low"] + 0.0)  # fmt: skip
    return {
        "mcnemar": asdict(mcnemar(preds_a == targets, preds_b == targets)),
        "bootstrap": boot,
        "folds": _fold_test(a, b),
        "moved": moved,
    }


def _recalls(targets: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    support = np.bincount(targets, minlength=k)
    hits = np.bincount(targets[preds == targets], minlength=k)
    return np.divide(hits, support, out=np.zeros(k), where=support > 0)


def _p(p: float) -> str:
    text = format_p(p)
    return text if text.startswith("<") else f"= {text}"


def _name(escape: bool) -> Callable[[str], str]:
    return md_escape if escape else str


def verdict(a: str, b: str, tests: dict[str, Any], markdown: bool = False) -> str:
    """One plain sentence: do the runs differ, by which test, at the 5 % level (adjusted p).

    ``markdown``: run names escaped for a Markdown page (the HTML page escapes it whole)."""
    name = _name(markdown)
    mc, boot = tests["mcnemar"], tests["bootstrap"]
    findings = []
    if mc["p_adjusted"] < ALPHA:
        better = a if mc["a_only"] > mc["b_only"] else b
        findings.append(f"{name(better)} is more accurate (McNemar p {_p(mc['p_adjusted'])})")
    if boot["p_adjusted"] < ALPHA:
        better = a if boot["difference"] > 0 else b
        findings.append(
            f"{name(better)} has the higher balanced accuracy (bootstrap p "
            f"{_p(boot['p_adjusted'])})"
        )
    if findings:
        return "Significant difference: " + "; ".join(findings) + "."
    return (
        f"No significant difference between {name(a)} and {name(b)} at the 5 % level: what "
        "separates them is within what another draw of test images could give."
    )


def _test_favours(a: str, b: str, tests: dict[str, Any]) -> set[str]:
    """The runs the tests on the test images call better (significant ones only)."""
    mc, boot = tests["mcnemar"], tests["bootstrap"]
    out = set()
    if mc["p_adjusted"] < ALPHA:
        out.add(a if mc["a_only"] > mc["b_only"] else b)
    if boot["p_adjusted"] < ALPHA:
        out.add(a if boot["difference"] > 0 else b)
    return out


def fold_note(a: str, b: str, tests: dict[str, Any], markdown: bool = False) -> str:
    """What the fold test adds to the verdict, following its own sign: which run the folds'
    validation balanced accuracy favours, whether beyond training randomness, and whether
    that agrees with the tests on the test images."""
    name, fold_test = _name(markdown), tests.get("folds")
    if fold_test is None:
        return (
            "These tests take both trained models as fixed and ask whether the test images can "
            "tell them apart. Whether retraining keeps the order is a question for two cv runs "
            "with the same seed, which also get a test over folds."
        )
    # With more than two runs the verdict uses the Holm-adjusted p: the sentence says which.
    adjusted = fold_test.get("p_adjusted")
    holm = adjusted is not None and format_p(adjusted) != format_p(fold_test["p_value"])
    p = (
        f"{_p(fold_test['p_value'])}, Holm-adjusted {_p(adjusted)}"
        if holm
        else _p(fold_test["p_value"] if adjusted is None else adjusted)
    )
    diff = fold_test["mean_difference"]  # B minus A
    if diff == 0:
        return f"Over the folds the validation balanced accuracy is the same for both (p {p})."
    higher, lower = (b, a) if diff > 0 else (a, b)
    said = (
        f"Over the folds, validation balanced accuracy is higher for {name(higher)} than for "
        f"{name(lower)} by {abs(diff):.3f} on average (corrected t-test p {p})"
    )
    significant = fold_test.get("p_adjusted", fold_test["p_value"]) < ALPHA
    favoured = _test_favours(a, b, tests)
    if significant and favoured and higher not in favoured:
        return (
            f"{said}: the opposite of the test part's verdict. Training randomness or the "
            "choice of images decides the order here; more folds or repeated runs would settle it."
        )
    if significant:
        agree = " as on the test part" if higher in favoured else ""
        return f"{said}: beyond training randomness{agree}."
    return (
        f"{said}, within what another training session could give: the seed report's "
        '"worst learning sessions" could explain it. More folds or repeated runs would settle it.'
    )


def _config_differences(runs: list[RunData], shareable: bool) -> list[dict[str, Any]]:
    flat = []
    for run in runs:
        values = {}
        for section, body in to_dict(run.config).items():
            items = body.items() if isinstance(body, dict) else [(None, body)]
            for key, value in items:
                name, where = (section, "") if key is None else (f"{section}.{key}", section)
                hidden = shareable and (where, key or section) in PATH_KEYS and value not in (
                    "synthetic", "lfw", None)  # fmt: skip
                values[name] = WITHHELD if hidden else value
        flat.append(values)
    keys = [k for k in flat[0] if k != "name" and len({repr(f.get(k)) for f in flat}) > 1]
    return [{"key": k, "cells": [f.get(k) for f in flat]} for k in keys]


def always_wrong(runs: list[RunData], n: int = 20) -> list[dict[str, Any]]:
    """Identities every run gets wrong: tested in all runs and recalled at most 0.2 by each
    (the seed report's §5.2, "all three also struggled to identify Theo Epstein"), worst first."""
    recalls: list[dict[str, tuple[float, int]]] = []
    for run in runs:
        rows = metrics_classes.per_class(run.confusion(), run.class_names)
        recalls.append({r.name: (r.recall, r.support) for r in rows if r.support > 0})
    shared = set.intersection(*(set(r) for r in recalls))
    out = [
        {"name": name, "support": recalls[0][name][1], "recalls": [r[name][0] for r in recalls]}
        for name in shared if all(r[name][0] <= WRONG_RECALL for r in recalls)
    ]  # fmt: skip
    return sorted(out, key=lambda r: (sum(r["recalls"]), -r["support"], r["name"]))[:n]


def group_rows(runs: list[RunData]) -> list[dict[str, Any]]:
    """Mean recall of head / medium / few identities per run (``metrics.json``'s groups)."""
    groups = [r.metrics["test"].get("groups") or {} for r in runs]
    rows = []
    for g in ("head", "medium", "few"):
        cells = [
            {"recall": x.get("recall", {}).get(g), "identities": x.get("identities", {}).get(g)}
            for x in groups
        ]
        if any(c["recall"] is not None for c in cells):
            rows.append({"group": g, "cells": cells})
    return rows


def build_comparison(runs: list[RunData], shareable: bool) -> RunPage:
    """Tables, tests and the interval figure of a comparison page."""
    names = [r.name for r in runs]
    headlines = [{row["key"]: row for row in headline_rows(r)} for r in runs]
    rows = [
        {"label": label, "key": key, "cells": [h[key] for h in headlines]}
        for label, key in ((row["label"], row["key"]) for row in headline_rows(runs[0]))
    ]
    # Per-identity tables from each run's predictions: the current definitions for every run.
    tables = [metrics_classes.metrics_table(r.confusion(), r.class_names) for r in runs]
    per_run = [class_average_rows(r, t["summary"]) for r, t in zip(runs, tables, strict=True)]
    averages = [
        {"label": first["label"], "key": first["key"], "cells": [rows[i] for rows in per_run]}
        for i, first in enumerate(per_run[0])
    ]
    couples = []
    for i, j in combinations(range(len(runs)), 2):
        ok, why = pairing(runs[i], runs[j])
        tests = paired_tests(runs[i], runs[j], runs[i].config.train.seed) if ok else None
        couples.append({"a": names[i], "b": names[j], "paired": ok, "why": why, "tests": tests})
    tested = [c for c in couples if c["tests"]]
    for test, key in (("mcnemar", "p_exact"), ("bootstrap", "p_value"), ("folds", "p_value")):
        having = [c for c in tested if c["tests"][test] is not None]
        adjusted = holm([c["tests"][test][key] for c in having]) if having else []
        for couple, p in zip(having, adjusted, strict=True):
            couple["tests"][test]["p_adjusted"] = p
    for couple in tested:
        a, b, tests = couple["a"], couple["b"], couple["tests"]
        couple["verdict"] = verdict(a, b, tests)
        couple["verdict_md"] = verdict(a, b, tests, markdown=True)
        couple["fold_note"] = fold_note(a, b, tests)
        couple["fold_note_md"] = fold_note(a, b, tests, markdown=True)
        couple["significant"] = {
            "bootstrap": tests["bootstrap"]["p_adjusted"] < ALPHA,
            "folds": tests["folds"] is not None and tests["folds"]["p_adjusted"] < ALPHA,
        }
    context = {
        "names": names,
        "shareable": shareable,
        "run_dirs": None if shareable else [str(r.run_dir.resolve()) for r in runs],
        "commands": [r.command for r in runs],
        "models": [r.config.train.model for r in runs],
        "test_images": [len(r.predictions) for r in runs],
        "rows": rows,
        "averages": averages,
        "top5": [t["top5"] for t in tables],
        "worst5": [t["worst5"] for t in tables],
        "rankings": [t["ranking"] for t in tables],
        "aggregated": [t["aggregated"] for t in tables],
        "groups": group_rows(runs),
        "always_wrong": always_wrong(runs),
        "wrong_recall": WRONG_RECALL,
        # Each run's own page, relative to where comparison.html is written (write.py sets it).
        "run_pages": [None] * len(runs),
        "differences": _config_differences(runs, shareable),
        "couples": couples,
        "holm": len(tested) > 1,
    }
    intervals = {
        row["label"]: [(c["value"], c["low"], c["high"]) for c in row["cells"]]
        for row in rows
        if all(c["low"] is not None for c in row["cells"])
    }
    ax = plots.plot_interval_comparison(names, intervals)
    figures = {"intervals": (ax.figure, "Test scores with 95 % bootstrap intervals")}
    if any(r.history for r in runs):
        tested = {r.name: int(r.metrics.get("final_model", {}).get("fold", 0)) for r in runs}
        labels = {r.name: loss_labels(to_dict(r.config)) for r in runs}
        ax = plots.plot_loss_overlay({r.name: r.history for r in runs}, tested, labels)
        figures["losses"] = (ax.figure, "Loss curves of the runs together (each run's tested fold)")
    return RunPage(context, figures)
