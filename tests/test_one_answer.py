"""One answer shape: photos given as files, arrays or PIL images go through the one photo->faces
reader and come back alike (every face with its box and landmarks); a rejected face carries its
best guess; ``unknown`` has one colour wherever a face is drawn.

The model is never trained (a copy of the untrained bundle, set to find faces): these are
contracts on shapes and on what is compared with what, which cannot depend on what a model
learned. The faces are LFW's (MTCNN does not take the synthetic drawings for faces).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facecls
from facecls.cli import main
from facecls.colours import KNOWN, UNKNOWN, bgr, css
from facecls.data.images import ImageError
from facecls.inference.faces import Prediction, closest_text
from tests.test_detect import lfw_face

FACES = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Abdullah_Gul/Abdullah_Gul_0001.jpg",
         "Aaron_Eckhart/Aaron_Eckhart_0001.jpg")  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bundle(source: Path, folder: Path, **meta_changes: object) -> Path:
    shutil.copytree(source, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta.update(meta_changes)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def finder(untrained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained bundle as a model trained on detected faces (``--faces box``)."""
    return _bundle(untrained_bundle, tmp_path_factory.mktemp("finder") / "model", faces="box")


def group_photo(width: int = 900, height: int = 400) -> np.ndarray:
    """Three LFW photos side by side on a grey canvas (LFW photos hold background faces too)."""
    canvas = np.full((height, width, 3), 90, np.uint8)
    side = min(250, height - 20)
    for i, name in enumerate(FACES):
        left = 20 + i * (width - 40 - side) // 2
        face = Image.fromarray(lfw_face(name)).resize((side, side), Image.Resampling.BILINEAR)
        canvas[10 : 10 + side, left : left + side] = np.asarray(face)
    return canvas


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A group photo, a big one (over the detector's 1600 px: searched on a reduced copy) and a
    faceless one, as PNG files (lossless: the file decodes to the very array)."""
    folder = tmp_path_factory.mktemp("photos")
    made = {"group": group_photo(), "big": group_photo(2400, 900),
            "wall": np.full((200, 300, 3), 160, np.uint8)}  # fmt: skip
    for name, rgb in made.items():
        Image.fromarray(rgb).save(folder / f"{name}.png")
    return {name: folder / f"{name}.png" for name in made}


def _place(p: Prediction) -> tuple:
    return (p.decision, p.face, p.faces, p.box, p.landmarks, p.identity, p.top_k[:1], p.reason)


def test_files_arrays_and_pil_images_give_the_same_faces(finder: Path, photos) -> None:
    model = facecls.load_model(finder, device="cpu")
    files = [photos["group"], photos["big"], photos["wall"]]
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    by_file = model.predict(files)
    by_array = model.predict(arrays)
    by_pil = model.predict([Image.open(f) for f in files])
    tensor = model.predict(torch.from_numpy(np.stack(arrays[:1])).permute(0, 3, 1, 2))
    order = [files.index(Path(p.path)) for p in by_file]
    assert order == sorted(order) and set(order) == {0, 1, 2}  # in the order given
    group = [p for p in by_file if p.path == str(photos["group"])]
    assert len(group) >= 3 and all(p.box is not None and len(p.landmarks) == 5 for p in group)
    assert by_file[-1].decision == "no_face" and by_file[-1].path == str(photos["wall"])
    for answers in (by_array, by_pil):
        assert [_place(a) for a in answers] == [_place(f) for f in by_file]
        assert [a.score for a in answers] == pytest.approx(
            [f.score for f in by_file], abs=1e-5, nan_ok=True
        )
        assert [a.path for a in answers] == [None] * len(answers)
        # each row names its photo by its place among those given
        assert [a.image for a in answers] == order
    assert [_place(a) for a in tensor] == [_place(f) for f in group]


def test_a_centre_model_detects_in_arrays_as_in_files(untrained_bundle: Path, photos) -> None:
    model = facecls.load_model(untrained_bundle, device="cpu")
    rgb = np.asarray(Image.open(photos["group"]))
    detected = model.predict([rgb], detect=True)
    assert len(detected) >= 3 and all(p.box is not None for p in detected)
    assert [_place(p) for p in detected] == [
        _place(p) for p in model.predict([photos["group"]], detect=True)
    ]
    (whole,) = model.predict([rgb])  # without detect: the photo is one face, as a file is
    (from_file,) = model.predict([photos["group"]])
    assert whole.box is None and _place(whole) == _place(from_file)


def test_embed_takes_each_photo_s_main_face_from_files_and_arrays(finder: Path, photos) -> None:
    model = facecls.load_model(finder, device="cpu")
    files = [photos["group"], photos["big"]]
    vectors = model.embed(files)
    assert vectors.shape[0] == 2
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    arrays = [np.asarray(Image.open(f)) for f in files]
    assert np.abs(model.embed(arrays) - vectors).max() < 1e-5
    # the main face is the first face predict lists for the photo
    first = [p for p in model.predict(files[:1]) if p.face == 0][0]
    pixels = [f for f in model.faces_in(arrays[0]) if f.box[0] == pytest.approx(first.box[0], 1)]
    features = model.outputs(pixels[0].pixels.transpose(2, 0, 1)[None])[1]
    assert np.abs(features / np.linalg.norm(features) - vectors[0]).max() < 1e-4
    with pytest.raises(ImageError, match="no face found") as error:
        model.embed([photos["group"], photos["wall"]])
    assert error.value.path == photos["wall"]
    with pytest.raises(ValueError, match="image 1: no face found"):
        model.embed([arrays[0], np.asarray(Image.open(photos["wall"]))])


def test_closest_text_keeps_score_and_threshold_apart() -> None:
    row = Prediction("unknown", "unknown", score=0.95, closest="Tony_Blair", threshold=0.956)
    assert closest_text(row) == "Tony_Blair 0.95 < 0.96"
    assert row.label() == "unknown — closest: Tony_Blair 0.95 < 0.96"
    near = Prediction("unknown", "unknown", score=0.9559, closest="A", threshold=0.956)
    assert closest_text(near) == "A 0.9559 < 0.9560"
    # a float32 score just under the threshold: never "0.956000 < 0.956000"
    close = Prediction("unknown", "unknown", score=float(np.float32(0.956) - np.float32(1e-7)),
                       closest="A", threshold=0.956)  # fmt: skip
    name, score, _, limit = closest_text(close).split()
    assert float(score) < float(limit) and score != limit
    named = Prediction("known", "A", score=0.99, closest="A", threshold=0.956)
    assert closest_text(named) == "" and named.label() == "A"


def test_the_csv_shows_a_rejected_face_s_best_guess(untrained_bundle: Path, photos, tmp_path):
    out = tmp_path / "p.csv"
    args = ["--quiet", "predict", str(untrained_bundle), str(photos["group"]), "--detect",
            "--out", str(out), "--top-k", "2"]  # fmt: skip
    assert main([*args, "--method", "msp", "--threshold", "0.9"]) == 0  # nobody is named
    with out.open(newline="") as f:
        table = list(csv.reader(f))
    header, rows = table[0], [dict(zip(table[0], r, strict=True)) for r in table[1:]]
    assert header[:8] == ["path", "face", "faces", "box", "landmarks", "decision", "identity",
                          "score"]  # the columns of before keep their places  # fmt: skip
    assert header[-2:] == ["reason", "closest"]
    assert len(rows) >= 3
    for row in rows:
        assert row["decision"] == "unknown"
        found = re.fullmatch(r"(\S+) (\S+) < (\S+)", row["closest"])
        assert found, row["closest"]
        name, score, limit = found.groups()
        assert name == row["top1"]  # msp's guess is the most probable identity
        assert float(score) == pytest.approx(float(row["score"]), abs=0.01)
        assert float(score) < float(limit) and float(limit) == pytest.approx(0.9)
    assert main([*args, "--method", "msp", "--threshold", "0"]) == 0  # everybody is named
    with out.open(newline="") as f:
        assert {r["closest"] for r in csv.DictReader(f)} == {""}


def test_unknown_has_one_colour_everywhere(untrained_bundle: Path, photos, tmp_path) -> None:
    from facecls.inference.annotate import draw_answers
    from facecls.inference.video import _draw
    from facecls.service.page import PAGE

    blank = np.full((120, 200, 3), 255, np.uint8)
    for decision, colour in (("unknown", UNKNOWN), ("known", KNOWN)):
        row = Prediction(decision, "a" if decision == "known" else "unknown", score=0.4,
                         box=(100, 60, 50, 50), closest="a", threshold=0.5)  # fmt: skip
        drawn = np.asarray(draw_answers(blank, [row]))
        assert tuple(drawn[85, 100]) == colour  # the box's left edge
    frame = np.full((120, 200, 3), 255, np.uint8)
    import cv2

    _draw(cv2, frame, [((100, 60, 50, 50), "unknown", False)])
    assert tuple(frame[85, 100]) == bgr(UNKNOWN)
    assert css(UNKNOWN) in PAGE and css(KNOWN) in PAGE
    assert "#c00" not in PAGE and "#080" not in PAGE  # the page's old red and green


def test_labels_of_faces_side_by_side_cover_no_other_label() -> None:
    """A long ``unknown`` label beside a face whose own label sits at the same height is moved
    (below its box) instead of covering it; labels stay in the picture and next to their face."""
    from facecls.inference.annotate import _overlap, place_labels

    boxes = [(100, 200, 120, 140), (300, 198, 120, 140), (520, 205, 100, 120)]
    sizes = [(520, 24), (200, 24), (180, 24)]  # the first: "unknown - closest: …" runs long
    spots = place_labels(boxes, sizes, (900, 700))
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(spots, sizes, strict=True)]
    for i, a in enumerate(rects):
        assert a[0] >= 0 and a[2] <= 900 and a[1] >= 0 and a[3] <= 700
        x, y, w, h = boxes[i]
        assert a[0] < x + w and a[2] > x  # over or under its own face
        assert y - 4 * 24 <= a[1] <= y + h + 3 * 24
        for b in rects[i + 1 :]:
            assert _overlap(a, b) == 0
    # a face at the top edge: the label goes inside the picture, below or inside the box
    ((tx, ty),) = place_labels([(10, 0, 80, 80)], [(60, 20)], (200, 200))
    assert ty >= 0 and tx >= 0
    # a label wider than the photo starts at its left edge
    assert place_labels([(50, 50, 40, 40)], [(300, 20)], (200, 200))[0][0] == 0


def test_annotated_faces_side_by_side_show_both_labels(tmp_path: Path) -> None:
    """Drawn: a stranger's long label and a known person's short one beside it both keep their
    colour somewhere (neither is painted over)."""
    from facecls.inference.annotate import draw_answers

    photo = np.full((400, 600, 3), 255, np.uint8)
    rows = [  # drawn in turn, the stranger's label would paint over the known one
        Prediction("known", "Britney_Spears", score=0.8, box=(240, 148, 100, 110)),
        Prediction("unknown", "unknown", score=0.1, box=(60, 150, 100, 110),
                   closest="Michael_Schumacher", threshold=0.37),
    ]  # fmt: skip
    drawn = np.asarray(draw_answers(photo, rows))
    # just above the known face, across its width: its own label's colour, not the stranger's
    row = drawn[143, 242:338]
    assert (row == np.array(KNOWN)).all(axis=1).mean() > 0.5
    assert not (row == np.array(UNKNOWN)).all(axis=1).any()
    assert (drawn.reshape(-1, 3) == np.array(UNKNOWN)).all(axis=1).sum() > 2000


def test_video_names_of_faces_side_by_side_do_not_overlap() -> None:
    """In an annotated video, a long name over one face and a short one over the face beside
    it: the short one moves (here below its face) instead of being written into the long one."""
    import cv2

    from facecls.inference.video import _draw

    frame = np.full((160, 200, 3), 255, np.uint8)
    _draw(cv2, frame, [((20, 60, 40, 40), "Alexandra_Longname", True),
                       ((70, 60, 40, 40), "Bob", False)])  # fmt: skip
    strip = frame[40:59, 70:110].reshape(-1, 3)  # above the second face
    has = {name: bool((strip == np.array(bgr(c))).all(axis=1).any())
           for name, c in (("known", KNOWN), ("unknown", UNKNOWN))}  # fmt: skip
    assert has["known"] and not has["unknown"]  # the long name runs there; Bob is elsewhere
    below = frame[101:130, 60:120].reshape(-1, 3)
    assert (below == np.array(bgr(UNKNOWN))).all(axis=1).any()
