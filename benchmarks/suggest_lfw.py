"""Labelling LFW-8 in ``people suggest``'s order against random order: a simulated user.

The library is LFW-8's train part (the split file's ``lfw8`` column; each photo's main face,
FaceNet embeddings as in ``cluster_lfw.py``), clustered once with the default settings. The
simulated user knows everyone and answers the first question ``facecls people LIB suggest``
asks (:func:`facecls.library.questions.rank_questions`), one action per answer:

- *who is this cluster?* — names it after most of its faces (a name already given merges it
  into that person); the faces of someone else in it are then moved to their person, one
  action per person (the People page moves all the faces selected at once);
- *is this cluster Ada?* — yes (merge) or the right name, plus the same corrections;
- *is this face Ada?* — yes, or the face is moved to its person.

Random order: one action labels one face drawn at random. After each action, a nearest-class-
mean classifier on the labelled faces (cosine to each named person's centroid) names the test
part; balanced accuracy counts every one of the 217 people (nobody named yet: recall 0).
Printed: the learning curves and the actions each order needs to reach 0.80 / 0.90 / 0.95, and
the names given and faces corrected when every cluster has been named.

    PYTHONPATH=src python benchmarks/suggest_lfw.py --embeddings lfw-all-facenet.safetensors
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from cluster_lfw import SHARED, hardware, lfw_photos, main_faces
from facecls.data.sources import default_cache_dir
from facecls.library.cluster import ClusterSettings, cluster_faces
from facecls.library.questions import rank_questions
from facecls.openset import l2_normalize

TARGETS = (0.80, 0.90, 0.95)


def balanced_accuracy(x_train, truth_train, labelled, x_test, truth_test, people: int) -> float:
    """Nearest named centroid on the labelled faces; recall averaged over all ``people``."""
    known = np.flatnonzero(labelled >= 0)
    if not len(known):
        return 0.0
    names = np.unique(labelled[known])
    sums = np.zeros((len(names), x_train.shape[1]))
    np.add.at(sums, np.searchsorted(names, labelled[known]), x_train[known])
    guess = names[(x_test @ l2_normalize(sums).T).argmax(axis=1)]
    recalls = [np.mean(guess[truth_test == p] == p) for p in range(people)]
    return float(np.mean(recalls))


def suggested(x, truth, clusters, threshold, evaluate, max_actions):
    """The user answering the questions in order; answers (curve, names, corrections)."""
    labelled = np.full(len(x), -1)  # the true person a face was given (the user is right)
    open_clusters = clusters.copy()
    curve, names, corrected, actions = [evaluate(labelled)], 0, 0, 0
    person_of = {}  # true identity -> person index the library has (the named people)
    while actions < max_actions:
        named = np.array([person_of.get(int(t), -1) if lab >= 0 else -1
                          for t, lab in zip(truth, labelled, strict=True)])  # fmt: skip
        asked = rank_questions(x, named, np.where(labelled >= 0, -1, open_clusters), threshold, 1)
        if not asked:
            break
        q = asked[0]
        faces = np.array(q.faces)
        if q.kind in ("name", "merge"):
            majority = int(np.bincount(truth[faces]).argmax())
            right = faces[truth[faces] == majority]
            labelled[right] = majority
            person_of.setdefault(majority, len(person_of))
            names += 1
            actions += 1
            curve.append(evaluate(labelled))
            wrong = faces[truth[faces] != majority]
            for who in np.unique(truth[wrong]):  # one move per person the odd faces are
                moved = wrong[truth[wrong] == who]
                labelled[moved] = who
                person_of.setdefault(int(who), len(person_of))
                corrected += len(moved)
                actions += 1
                curve.append(evaluate(labelled))
            open_clusters[faces] = -1
        else:
            face = int(faces[0])
            labelled[face] = truth[face]
            person_of.setdefault(int(truth[face]), len(person_of))
            corrected += int(person_of[int(truth[face])] != q.target)
            actions += 1
            curve.append(evaluate(labelled))
    return curve, names, corrected


def random_order(x, truth, evaluate, max_actions, seed):
    labelled = np.full(len(x), -1)
    curve = [evaluate(labelled)]
    for face in np.random.default_rng(seed).permutation(len(x))[:max_actions]:
        labelled[face] = truth[face]
        curve.append(evaluate(labelled))
    return curve


def reached(curve: list[float], target: float) -> str:
    hit = next((i for i, v in enumerate(curve) if v >= target), None)
    return "not reached" if hit is None else str(hit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embeddings", type=Path, required=True, help="facecls embed output")
    parser.add_argument("--data", default=str(SHARED / "lfw-deepfunneled.tgz"))
    parser.add_argument("--split-file", type=Path, default=SHARED / "lfw-benchmark-splits.csv")
    parser.add_argument("--max-actions", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    relpaths, _, truth_all = lfw_photos(args.data, default_cache_dir())
    vectors, found = main_faces(args.embeddings, relpaths)
    with args.split_file.open(newline="") as f:
        part = {"/".join(r["path"].split("/")[-2:]): r["lfw8"] for r in csv.DictReader(f)}
    split = np.array([part.get(r, "") for r in relpaths])
    keep = found & (split != "")
    people = np.unique(truth_all[keep], return_inverse=True)[1].ravel()
    train, test = split[keep] == "train", split[keep] == "test"
    x = l2_normalize(vectors[keep])
    count = int(people.max()) + 1

    def evaluate(labelled: np.ndarray) -> float:
        return balanced_accuracy(x[train], people[train], labelled, x[test], people[test], count)

    settings = ClusterSettings()
    clusters = cluster_faces(x[train], settings)
    curve, names, corrected = suggested(x[train], people[train], clusters, settings.cut,
                                        evaluate, args.max_actions)  # fmt: skip
    randomly = random_order(x[train], people[train], evaluate, args.max_actions, args.seed)
    print(f"LFW-8 train part: {int(train.sum())} faces of {count} people, test part "
          f"{int(test.sum())}; {hardware()}")  # fmt: skip
    print("\n| order | " + " | ".join(f"actions to {t:.2f}" for t in TARGETS)
          + " | balanced acc. at 100 / 250 / 500 actions |")  # fmt: skip
    print("|---|" + "---:|" * (len(TARGETS) + 1))
    for label, c in (("people suggest", curve), ("random faces", randomly)):
        at = " / ".join(f"{c[min(n, len(c) - 1)]:.3f}" for n in (100, 250, 500))
        print(f"| {label} | " + " | ".join(reached(c, t) for t in TARGETS) + f" | {at} |")
    print(
        f"\nEvery cluster answered: {names} names or merges for {count} people "
        f"({names / count:.2f} per person), {corrected} faces corrected "
        f"({corrected / int(train.sum()):.1%} of the faces); {len(curve) - 1} actions in all"
    )


if __name__ == "__main__":
    main()
