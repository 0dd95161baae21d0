"""Face detection and LFW-style cropping on composed photos (OpenCV's Haar cascade)."""

from __future__ import annotations

import csv
import functools
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.data.faces import LFW_ENLARGE
from facecls.inference.detect import Box, crop_face

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lfw_archive_path() -> Path:
    """LFW in ../shared beside the repository (or one level up, from a git worktree)."""
    for base in (REPO.parent, REPO.parent.parent):
        path = base / "shared" / "datasets" / "lfw-deepfunneled.tgz"
        if path.exists():
            return path
    pytest.fail("lfw-deepfunneled.tgz is missing: tests read LFW from ../shared/datasets")


@functools.cache
def lfw_face(name: str = "Aaron_Peirsol/Aaron_Peirsol_0001.jpg") -> np.ndarray:
    """One LFW photo, read by walking the archive only up to it (both defaults are near the
    start; ``extractfile(name)`` would first read every header of the 110 MB archive)."""
    with tarfile.open(lfw_archive_path()) as tar:
        for member in tar:
            if member.name == f"lfw-deepfunneled/{name}":
                data = tar.extractfile(member).read()
                return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    raise FileNotFoundError(name)


def test_crop_is_centred_square_and_pads_outside() -> None:
    photo = np.zeros((100, 200, 3), np.uint8)
    photo[40:60, 90:110] = 255  # a white 20 px square "face" centred at (100, 50)
    crop = crop_face(photo, Box(90, 40, 20, 20), size=44, enlarge=2.2)
    assert crop.shape == (44, 44, 3)
    white = np.argwhere(crop[..., 0] > 128)
    assert white.mean(0) == pytest.approx([21.5, 21.5], abs=1.0)  # still centred
    assert len(white) == pytest.approx((44 / 2.2) ** 2, rel=0.2)  # 1/2.2 of the side
    photo[:20, :20] = 255  # a face in the corner: the square reaches outside, edge-padded
    corner = crop_face(photo, Box(0, 0, 20, 20), size=44)
    assert corner.shape == (44, 44, 3) and corner[:5, :5].min() > 200


def test_mtcnn_boxes_frame_a_pasted_lfw_face_as_lfw_does() -> None:
    from facecls.data.mtcnn import MTCNN
    from facecls.inference.detect import lfw_faces

    face = lfw_face()
    canvas = np.full((600, 800, 3), 90, np.uint8)
    top, left = 220, 430
    canvas[top : top + 250, left : left + 250] = face
    (found,) = MTCNN().detect([canvas])
    assert len(found) == 1
    box = Box.from_corners(found.boxes[0])
    centre = (box.x + box.w / 2, box.y + box.h / 2)
    assert centre == pytest.approx((left + 125, top + 125), abs=12)
    # The crop frames the face as LFW does: a square about as large as the 250 px photo.
    (cut,) = lfw_faces(canvas, found, 250)
    assert cut.pixels.shape == (250, 250, 3)
    assert np.abs(cut.pixels.astype(int) - face.astype(int)).mean() < 40
    assert len(MTCNN().detect([np.full((300, 300, 3), 128, np.uint8)])[0]) == 0


def test_predict_detect_rows(tmp_path: Path) -> None:
    # A tiny model bundle is enough: detection and rows are under test, not accuracy.
    from facecls.bundle import Bundle, save_bundle
    from facecls.cli import main
    from facecls.models import create_model

    bundle = save_bundle(
        Bundle(create_model("baseline", 3, 32).eval(), "baseline", ["a", "b", "c"], 32,
               [0.5] * 3, [0.25] * 3),
        tmp_path / "model",
    )  # fmt: skip
    face = lfw_face()
    two = np.full((400, 900, 3), 90, np.uint8)
    two[100:350, 50:300] = face
    two[120:370, 600:850] = lfw_face("Abdullah_Gul/Abdullah_Gul_0001.jpg")
    Image.fromarray(two).save(tmp_path / "two.jpg")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    out = tmp_path / "p.csv"
    code = main(["--quiet", "predict", str(bundle), str(tmp_path / "two.jpg"),
                 str(tmp_path / "blank.png"), "--detect", "--out", str(out)])  # fmt: skip
    assert code == 0
    with out.open() as f:
        table = list(csv.DictReader(f))
    by_file: dict[str, list[dict[str, str]]] = {}
    for row in table:
        by_file.setdefault(Path(row["path"]).name, []).append(row)
    assert [r["decision"] for r in by_file["blank.png"]] == ["no_face"]
    faces = by_file["two.jpg"]
    assert len(faces) == 2 and {r["faces"] for r in faces} == {"2"}
    centres = sorted(int(x) + int(w) / 2 for x, _, w, _ in (r["box"].split() for r in faces))
    assert centres == pytest.approx([175, 725], abs=15)


def test_enroll_detect_crops_the_largest_face(tmp_path: Path) -> None:
    import facecls
    from facecls.bundle import Bundle, save_bundle, write_centroids
    from facecls.models import create_model

    folder = save_bundle(
        Bundle(create_model("baseline", 2, 32).eval(), "baseline", ["a", "b"], 32,
               [0.5] * 3, [0.25] * 3),
        tmp_path / "model",
    )  # fmt: skip
    write_centroids(folder, {"trained": np.eye(2, 300, dtype=np.float32)})
    person = tmp_path / "new" / "Aaron_Peirsol"
    person.mkdir(parents=True)
    canvas = np.full((500, 600, 3), 90, np.uint8)
    canvas[150:400, 200:450] = lfw_face()
    Image.fromarray(canvas).save(person / "party.jpg")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(person / "blank.png")
    messages: list[str] = []
    out = facecls.enroll(folder, tmp_path / "new", detect=True, log=messages.append)
    model = facecls.load_model(out)
    assert model.enrolled_names == ["Aaron_Peirsol"]
    assert model.meta["enrolled"]["images"] == [1]
    assert any("blank.png" in m and "no face" in m for m in messages)


def test_crop_face_applies_the_training_crop() -> None:
    """``crop`` cuts the LFW-layout square to its centre, as ``--crop`` cut the training photos."""
    photo = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    box = Box(80, 70, 40, 40)
    assert np.array_equal(
        crop_face(photo, box, 32, crop=0.5), crop_face(photo, box, 32, enlarge=0.5 * LFW_ENLARGE)
    )
    assert not np.array_equal(crop_face(photo, box, 32, crop=0.5), crop_face(photo, box, 32))
