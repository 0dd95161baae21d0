"""How far can thresholds alone bring enrolled people to trained ones? A study of the embeddings
``benchmarks/openset.py --dump FILE`` saves (not a product setting: it sets thresholds on the
test images themselves, so its figures are upper bounds).

For the trained people's test photos, the enrolled people's other photos and the strangers it
prints, for each decision rule, the share named correctly and the share of strangers named
(FPIR): the bundle's rule (one threshold for trained identities, one per enrolled photo count),
one threshold for all, one threshold set at FPIR 1 % on the strangers, the best pair of
thresholds (trained, enrolled) at FPIR <= 1 %, and Z-norm (each centroid's cosine standardised
by its scores against a cohort of 1,500 of the stranger photos, the rest evaluated).

    PYTHONPATH=src python benchmarks/enroll_thresholds.py DUMP.npz ENROLLED_BUNDLE/model.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facecls.openset_thresholds import enrolled_table


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dump", type=Path)
    p.add_argument("meta", type=Path, help="model.json of the enrolled bundle")
    args = p.parse_args()
    d = np.load(args.dump)
    table = enrolled_table(json.loads(args.meta.read_text())["openset"], "centroid")
    known, probes, centroids = unit(d["known"]), unit(d["probes"]), d["centroids"]
    known_t, probe_t, trained = d["known_targets"], d["probe_targets"], int(d["trained"])
    threshold = float(d["threshold"])
    order = np.random.default_rng(0).permutation(len(d["strangers"]))
    cohort, strangers = unit(d["strangers"][order[:1500]]), unit(d["strangers"][order[1500:]])
    groups = (
        ("trained", known, known_t),
        ("enrolled", probes, probe_t),
        ("strangers", strangers, None),
    )

    def rates(scores, limit) -> dict[str, float]:
        out = {}
        for name, x, targets in groups:
            s = scores(x)
            chosen = s.argmax(1)
            ok = s[np.arange(len(chosen)), chosen] >= limit(chosen)
            out[name] = float(ok.mean() if targets is None else (ok & (chosen == targets)).mean())
        return out

    def show(label: str, r: dict[str, float]) -> None:
        print(f"  {label:<52} trained {r['trained']:.3f}  enrolled {r['enrolled']:.3f}  "
              f"FPIR {r['strangers']:.4f}")  # fmt: skip

    cosine = lambda x: x @ centroids.T  # noqa: E731
    enrolled_limit = table.get("3", threshold)
    print(f"{len(known)} trained-people photos, {len(probes)} enrolled-people photos, "
          f"{len(strangers)} strangers (+{len(cohort)} as the Z-norm cohort)")  # fmt: skip
    show("bundle: trained threshold, enrolled k=3 threshold",
         rates(cosine, lambda c: np.where(c < trained, threshold, enrolled_limit)))  # fmt: skip
    show("one threshold for all", rates(cosine, lambda c: np.full(len(c), threshold)))
    at_1 = float(np.quantile(cosine(strangers).max(1), 0.99))
    show(f"one threshold at FPIR 1 % ({at_1:.3f})", rates(cosine, lambda c: np.full(len(c), at_1)))
    best = None
    grid = np.linspace(0.3, 0.9, 61)
    for t_trained in grid:
        for t_enrolled in grid:
            r = rates(cosine, lambda c, a=t_trained, b=t_enrolled: np.where(c < trained, a, b))
            if r["strangers"] <= 0.01:
                gap = min(r["enrolled"], r["trained"] - 0.03)
                if best is None or gap > best[0]:
                    best = (gap, t_trained, t_enrolled, r)
    if best is not None:
        show(f"best pair at FPIR <= 1 % ({best[1]:.2f}, {best[2]:.2f})", best[3])
    scores = cohort @ centroids.T
    mean, std = scores.mean(0), scores.std(0)
    znorm = lambda x: (x @ centroids.T - mean) / std  # noqa: E731
    z_1 = float(np.quantile(znorm(strangers).max(1), 0.99))
    show(
        f"Z-norm, one threshold at FPIR 1 % ({z_1:.2f})",
        rates(znorm, lambda c: np.full(len(c), z_1)),
    )


if __name__ == "__main__":
    main()
