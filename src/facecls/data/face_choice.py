"""Which face of a training photo is the person its folder names.

A photo with several faces used to keep "the main face": the largest, weighted by closeness to the
centre. On phone photos of 12 people that face was a bystander in 11 of 423 training photos
(2.6 %), and a person whose few photos include a bystander gets a stranger's face in the model.
Here the faces of such photos are compared with the identity's other photos instead:

1. embed every face of the photos with several faces, and the identity's single-face photos;
2. the identity's centroid starts from its single-face photos;
3. each photo keeps the face nearest the centroid (cosine); the centroid is recomputed with the
   kept faces, and step 3 runs again (:data:`ROUNDS` in all).

An identity without a single-face photo keeps the main face (the rule above). Each choice
records the cosine of the face kept and of the runner-up: a choice is *doubtful* when the two
are close or the kept face agrees poorly (:func:`doubtful`), and the run's report shows those.

:class:`FacesFound` is what detection found in a source's photos (the decode cache stores it):
each kept photo's face box and detector score, and every face of photos with several.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecls.atomic import write_text

# Faces of one photo kept as candidates (main face first); a crowd's faces beyond are not.
MAX_CANDIDATES = 6
# Single-face photos per identity its starting centroid is made from (evenly spread).
MAX_REFERENCES = 12
ROUNDS = 3
# A choice is sure when the kept face leads the runner-up by this cosine and agrees by this much:
# on LFW-8 a person's photos sit at cosine 0.5-0.9 to their centroid, a bystander's at -0.2-0.3.
SURE_MARGIN = 0.15
SURE_COSINE = 0.35

MAIN_RULE = "main face (no single-face photo of the identity)"

# uint8 faces (N, 3, S, S) -> embeddings (N, D); ``key`` names the network for caches.
Embed = Callable[[np.ndarray], np.ndarray]


@dataclass
class FaceEmbedder:
    """A face embedding network to compare faces with, and a key that names it (for caches)."""

    embed: Embed
    key: str
    name: str


@dataclass
class FacesFound:
    """What face detection found in the kept photos of a source.

    Attributes:
        boxes: ``(K, 5)`` float32 ``x1, y1, x2, y2, score`` of the face kept from each photo.
        rows: ``(P,)`` the photos (indices into the K kept) with several faces.
        offsets: ``(P + 1,)`` where each such photo's faces start in ``pixels``.
        pixels: uint8 ``(F, 3, S, S)``: each such photo's faces, main face first (at most
            :data:`MAX_CANDIDATES`).
        candidate_boxes: ``(F, 5)`` their boxes and detector scores.
        found: ``(P,)`` faces the detector found in each such photo.
    """

    boxes: np.ndarray
    rows: np.ndarray
    offsets: np.ndarray
    pixels: np.ndarray
    candidate_boxes: np.ndarray
    found: np.ndarray

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **self.__dict__)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> FacesFound:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    def subset(self, keep: np.ndarray) -> FacesFound:
        """The same for the photos ``keep`` (indices into the K kept, increasing)."""
        keep = np.asarray(keep, dtype=np.int64)
        new_index = np.full(len(self.boxes), -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        still = [p for p, row in enumerate(self.rows.tolist()) if new_index[row] >= 0]
        sizes = np.diff(self.offsets)[still]
        take = [np.arange(self.offsets[p], self.offsets[p + 1]) for p in still]
        take = np.concatenate(take) if take else np.zeros(0, np.int64)
        return FacesFound(
            self.boxes[keep], new_index[self.rows[still]],
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            self.pixels[take], self.candidate_boxes[take], self.found[still],
        )  # fmt: skip


@dataclass
class Choice:
    """The face kept from each photo with several faces (in ``FacesFound.rows`` order)."""

    kept: np.ndarray  # (P,) index of the candidate kept
    agreement: np.ndarray  # (P,) its cosine to the identity's centroid (NaN: main-face rule)
    runner_up: np.ndarray  # (P,) the best other candidate's (NaN: main-face rule)
    rule: list[str] = field(default_factory=list)


def doubtful(agreement: float, runner_up: float) -> bool:
    """Whether a choice by agreement should be checked by a person (see :data:`SURE_MARGIN`)."""
    if not np.isfinite(agreement):
        return True
    second = runner_up if np.isfinite(runner_up) else -1.0
    return agreement - second < SURE_MARGIN or agreement < SURE_COSINE


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def references(targets: np.ndarray, found: FacesFound) -> np.ndarray:
    """Single-face photos (row indices) that start the centroids of identities with several-face
    photos: at most :data:`MAX_REFERENCES` each, evenly spread over the identity's photos."""
    several = np.zeros(len(targets), dtype=bool)
    several[found.rows] = True
    wanted = set(np.asarray(targets)[found.rows].tolist())
    picked: list[np.ndarray] = []
    for identity in sorted(wanted):
        single = np.flatnonzero((targets == identity) & ~several)
        if len(single) > MAX_REFERENCES:
            single = single[np.linspace(0, len(single) - 1, MAX_REFERENCES).round().astype(int)]
        picked.append(single)
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def agree(owner: np.ndarray, candidates: list[np.ndarray], base: dict[int, np.ndarray]) -> Choice:
    """The core of the choice: photo ``p`` of identity ``owner[p]`` keeps the row of
    ``candidates[p]`` (unit embeddings ``(F_p, D)``) nearest its identity's centroid, which
    starts as ``base[identity]`` (a sum of unit embeddings of single-face photos) and takes in
    the kept faces after the first round. Identities without a ``base`` keep the main face."""
    count = len(owner)
    kept = np.zeros(count, dtype=np.int64)
    agreement = np.full(count, np.nan)
    runner_up = np.full(count, np.nan)
    for round_ in range(ROUNDS):
        # the first round asks the single-face photos alone; later ones add the kept faces
        sums = {identity: vector.copy() for identity, vector in base.items()}
        if round_:
            for p in range(count):
                if owner[p] in sums:
                    sums[owner[p]] += candidates[p][kept[p]]
        for p in range(count):
            if owner[p] not in base:
                continue
            own = candidates[p][kept[p]] if round_ else 0.0
            centroid = _unit(sums[owner[p]] - own)  # never the photo's own face
            cos = candidates[p] @ centroid
            order = np.argsort(-cos, kind="stable")
            kept[p] = int(order[0])
            agreement[p] = float(cos[order[0]])
            runner_up[p] = float(cos[order[1]]) if len(order) > 1 else np.nan
    rule = ["agreement" if owner[p] in base else MAIN_RULE for p in range(count)]
    return Choice(kept, agreement, runner_up, rule)


def choose(
    targets: np.ndarray, found: FacesFound, reference_rows: np.ndarray,
    reference_vectors: np.ndarray, candidate_vectors: np.ndarray,
) -> Choice:  # fmt: skip
    """Each several-face photo's face that agrees with its identity's other photos (:func:`agree`).

    Args:
        targets: ``(K,)`` identity of every photo.
        reference_rows: single-face photos (:func:`references`) and ``reference_vectors``
            their embeddings ``(R, D)``.
        candidate_vectors: ``(F, D)`` embeddings of ``found.pixels``.
    """
    targets = np.asarray(targets)
    refs, cands = _unit(reference_vectors), _unit(candidate_vectors)
    owner = targets[found.rows]
    base: dict[int, np.ndarray] = {}
    for identity in np.unique(owner).tolist():
        mine = targets[reference_rows] == identity
        if mine.any():
            base[identity] = refs[mine].sum(axis=0)
    pieces = [cands[found.offsets[p] : found.offsets[p + 1]] for p in range(len(owner))]
    return agree(owner, pieces, base)


def embed_and_choose(
    images: np.ndarray, targets: np.ndarray, found: FacesFound, embedder: FaceEmbedder
) -> Choice:
    """:func:`choose` with the embeddings of ``embedder`` (reference photos and candidates)."""
    rows = references(targets, found)
    vectors = embedder.embed(np.concatenate([images[rows], found.pixels]))
    return choose(targets, found, rows, vectors[: len(rows)], vectors[len(rows) :])


def records(paths: list[str], found: FacesFound, choice: Choice) -> list[dict[str, Any]]:
    """One entry per several-face photo for ``data_report.json``: the face kept, its box, how
    sure the choice is."""
    out = []
    for p, row in enumerate(found.rows.tolist()):
        k = int(choice.kept[p])
        box = found.candidate_boxes[found.offsets[p] + k]
        agreement, second = float(choice.agreement[p]), float(choice.runner_up[p])
        out.append({
            "path": paths[row], "faces": int(found.found[p]), "kept": k,
            "box": [round(float(v), 1) for v in box[:4]],
            "agreement": None if np.isnan(agreement) else round(agreement, 4),
            "runner_up": None if np.isnan(second) else round(second, 4),
            "rule": choice.rule[p] if p < len(choice.rule) else "agreement",
            "doubtful": bool(choice.rule[p] == "agreement" and doubtful(agreement, second)),
        })  # fmt: skip
    return out


def apply_choice(images: np.ndarray, found: FacesFound, kept: np.ndarray) -> None:
    """Put each several-face photo's kept face (``kept[p]``, a candidate index) in ``images``
    (uint8 ``(K, 3, S, S)``, changed in place) and its box in ``found.boxes``."""
    for p, row in enumerate(found.rows.tolist()):
        k = int(kept[p])
        if 0 < k < found.offsets[p + 1] - found.offsets[p]:
            images[row] = found.pixels[found.offsets[p] + k]
            found.boxes[row] = found.candidate_boxes[found.offsets[p] + k]


def kept_faces_of(run_dir: Path) -> list[dict[str, Any]] | None:
    """The faces a run kept from its photos with several (``data_report.json``'s
    ``several_faces``), for loading its data as it trained on it; ``None`` when not listed."""
    try:
        report = json.loads((Path(run_dir) / "data_report.json").read_text())
    except (OSError, ValueError):
        return None
    entries = report.get("several_faces") if isinstance(report, dict) else None
    return entries if isinstance(entries, list) else None


def main_faces(found: FacesFound, rule: str = MAIN_RULE) -> Choice:
    """The main face of every photo (the rule before the choice by agreement)."""
    count = len(found.rows)
    nan = np.full(count, np.nan)
    return Choice(np.zeros(count, np.int64), nan, nan.copy(), [rule] * count)


def choice_from(entries: list[dict[str, Any]], paths: list[str], found: FacesFound) -> Choice:
    """The choice a run made, from its ``data_report.json`` entries (:func:`records`); photos
    they do not list keep the main face."""
    by_path = {e.get("path"): e for e in entries if isinstance(e, dict)}
    choice = main_faces(found, "main face")
    for p, row in enumerate(found.rows.tolist()):
        entry = by_path.get(paths[row])
        if entry is None:
            continue
        size = int(found.offsets[p + 1] - found.offsets[p])
        choice.kept[p] = min(max(int(entry.get("kept", 0)), 0), size - 1)
        for name, values in (("agreement", choice.agreement), ("runner_up", choice.runner_up)):
            value = entry.get(name)
            values[p] = np.nan if value is None else float(value)
        choice.rule[p] = str(entry.get("rule", "agreement"))
    return choice


def cached_choice(
    images: np.ndarray, targets: np.ndarray, found: FacesFound, embedder: FaceEmbedder,
    path: Path, log: Callable[[str], None] = print,
) -> Choice:  # fmt: skip
    """:func:`embed_and_choose`, read from ``path`` (JSON) when it was made before."""
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return Choice(
                np.asarray(data["kept"], np.int64),
                np.asarray([np.nan if v is None else v for v in data["agreement"]], float),
                np.asarray([np.nan if v is None else v for v in data["runner_up"]], float),
                list(data["rule"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            pass  # damaged: made again
    log(f"Faces: comparing the faces of {len(found.rows)} photos with several with their "
        f"identity's other photos ({embedder.name})")  # fmt: skip
    choice = embed_and_choose(images, targets, found, embedder)

    def plain(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values]

    write_text(path, json.dumps({"kept": choice.kept.tolist(), "rule": choice.rule,
                                 "agreement": plain(choice.agreement),
                                 "runner_up": plain(choice.runner_up)}))  # fmt: skip
    return choice
