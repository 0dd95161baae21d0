"""One face pipeline from training to prediction: raw photos in, faces found once, cut alike.

Real faces are needed (the synthetic faces are drawings MTCNN does not take for faces), so the
photos are LFW's, pasted at random places and sizes onto larger canvases: "raw" photos with the
face anywhere in the frame.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facecls
from facecls.cli import main
from facecls.data.faces import FaceCutter, centre_box
from tests.test_detect import lfw_archive_path

PEOPLE = {"Abdullah_Gul": 8, "Adrien_Brody": 8, "Al_Gore": 8}
STRANGER = "Al_Sharpton"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lfw_photos() -> dict[str, list[np.ndarray]]:
    """The first photos of a few people near the start of the archive (read once)."""
    wanted = {**PEOPLE, STRANGER: 2}
    photos: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    with tarfile.open(lfw_archive_path()) as tar:
        for member in tar:
            parts = member.name.split("/")
            person = parts[1] if len(parts) == 3 else ""
            if member.isfile() and person in wanted and len(photos[person]) < wanted[person]:
                data = tar.extractfile(member).read()
                photos[person].append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            if all(len(photos[n]) >= k for n, k in wanted.items()):
                break
    return photos


def paste(face: np.ndarray, canvas: np.ndarray, left: int, top: int, side: int) -> None:
    canvas[top : top + side, left : left + side] = np.asarray(
        Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR)
    )


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory: pytest.TempPathFactory, lfw_photos) -> Path:
    """root/<person>/<photo>.jpg: each face somewhere on a 420 x 320 grey canvas."""
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    for name in PEOPLE:
        (root / name).mkdir()
        for i, face in enumerate(lfw_photos[name]):
            canvas = np.full((320, 420, 3), 100, np.uint8)
            side = int(rng.integers(200, 300))
            paste(
                face,
                canvas,
                int(rng.integers(0, 420 - side)),
                int(rng.integers(0, 320 - side)),
                side,
            )
            Image.fromarray(canvas).save(root / name / f"{name}_{i}.jpg", quality=95)
    # A photo with no face at all is skipped and listed, never fatal.
    Image.fromarray(np.full((200, 300, 3), 160, np.uint8)).save(root / "Al_Gore" / "wall.jpg")
    return root


@pytest.fixture(scope="module")
def run(raw_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("runs")
    code = main([
        "--quiet", "train", "--data", str(raw_folder), "--faces", "align", "--image-size", "32",
        "--model", "baseline", "--epochs", "3", "--batch-size", "8", "--test-fraction", "0.25",
        "--cache-dir", str(base / "cache"), "--runs-dir", str(base), "--name", "raw",
    ])  # fmt: skip
    assert code == 0
    return base / "raw"


def test_training_from_raw_photos_detects_once_and_records_the_pipeline(run: Path) -> None:
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["faces"] == "align"
    report = json.loads((run / "data_report.json").read_text())
    assert report["faces"] == "align"
    assert report["images"] == sum(PEOPLE.values())  # every pasted face was found
    assert [s["reason"] for s in report["skipped_files"]] == ["no face found"]
    assert report["skipped_files"][0]["path"].endswith("wall.jpg")


def test_predict_names_every_face_of_a_group_photo_and_draws_them(
    run: Path, lfw_photos, tmp_path: Path
) -> None:
    group = np.full((400, 900, 3), 90, np.uint8)
    spots = [(30, 60, 220), (330, 120, 150), (560, 40, 300)]  # left, top, side
    faces = [
        lfw_photos["Abdullah_Gul"][-1],
        lfw_photos["Adrien_Brody"][-1],
        lfw_photos[STRANGER][0],
    ]
    for face, (left, top, side) in zip(faces, spots, strict=True):
        paste(face, group, left, top, side)
    Image.fromarray(group).save(tmp_path / "group.jpg")
    out, drawn = tmp_path / "p.csv", tmp_path / "annotated"
    assert main(["--quiet", "predict", str(run), str(tmp_path / "group.jpg"),
                 "--out", str(out), "--annotate", str(drawn)]) == 0  # fmt: skip
    with out.open() as f:
        rows = list(csv.DictReader(f))
    # LFW photos hold background people too: every face found lies in a pasted photo, and each
    # pasted photo's largest face is centred in it.
    assert len(rows) >= 3 and {r["faces"] for r in rows} == {str(len(rows))}
    assert [r["face"] for r in rows] == [str(i) for i in range(len(rows))]
    boxes = [tuple(int(v) for v in r["box"].split()) for r in rows]
    for left, top, side in spots:
        inside = [
            (w * h, (x + w / 2, y + h / 2))
            for x, y, w, h in boxes
            if left <= x + w / 2 <= left + side and top <= y + h / 2 <= top + side
        ]
        assert inside, f"no face found in the photo pasted at {left, top}"
        assert max(inside)[1] == pytest.approx((left + side / 2, top + side / 2), abs=0.12 * side)
    assert sum(len(b) for b in boxes) == 4 * len(rows)
    assert all(len(r["landmarks"].split()) == 10 for r in rows)
    assert {r["decision"] for r in rows} <= {"known", "unknown"}
    picture = np.asarray(Image.open(drawn / "group.jpg"))
    assert picture.shape == group.shape
    assert np.abs(picture.astype(int) - group.astype(int)).max() > 100  # boxes were drawn


def test_the_service_finds_every_face_of_uploads_arriving_together(
    run: Path, lfw_photos, tmp_path: Path
) -> None:
    """A model trained on detected faces: /predict answers for every face of a group photo, and
    uploads arriving together go through the detector as one batch, each getting its own faces."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from facecls.service.app import Settings, create_app
    from facecls.service.model_store import ModelStore

    group = np.full((400, 900, 3), 90, np.uint8)
    spots = [(30, 60, 220), (330, 120, 150), (560, 40, 300)]
    for face, (left, top, side) in zip(
        [lfw_photos["Abdullah_Gul"][-1], lfw_photos["Adrien_Brody"][-1], lfw_photos[STRANGER][0]],
        spots,
        strict=True,
    ):
        paste(face, group, left, top, side)
    single = np.full((300, 400, 3), 100, np.uint8)
    paste(lfw_photos["Al_Gore"][-1], single, 80, 30, 240)
    uploads = []
    for picture in (group, single, group, single):
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG", quality=95)
        uploads.append(buffer.getvalue())
    store = ModelStore(run, tmp_path / "store", device="cpu")
    with TestClient(create_app(store, Settings())) as client:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(
                lambda data: client.post("/predict", files={"file": ("p.jpg", data)}), uploads
            ))  # fmt: skip
        batches = client.app.state.service.detector.batches
    assert [a.status_code for a in answers] == [200] * 4
    faces = [a.json()["faces"] for a in answers]
    # the same photo, the same answer (scores to float noise: batches differ in composition)
    for a, b in ((faces[0], faces[2]), (faces[1], faces[3])):
        assert [(f["box"], f["identity"]) for f in a] == [(f["box"], f["identity"]) for f in b]
        assert [f["score"] for f in a] == pytest.approx([f["score"] for f in b], abs=1e-4)
    assert len(faces[0]) >= 3 and len(faces[1]) >= 1
    centres = [(f["box"][0] + f["box"][2] / 2, f["box"][1] + f["box"][3] / 2) for f in faces[0]]
    for left, top, side in spots:
        assert any(left <= x <= left + side and top <= y <= top + side for x, y in centres)
    assert 1 <= batches <= 4


def test_a_photo_rotated_by_exif_is_found(run: Path, lfw_photos, tmp_path: Path) -> None:
    face = lfw_photos["Adrien_Brody"][0]
    canvas = np.full((300, 400, 3), 100, np.uint8)
    paste(face, canvas, 90, 30, 240)
    sideways = Image.fromarray(np.rot90(canvas, k=1).copy())  # stored as a camera would
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90° clockwise to view": undoes the rotation above
    sideways.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    model = facecls.load_model(run, device="cpu")
    found = model.faces_in(np.asarray(Image.open(tmp_path / "phone.jpg")))
    assert found == []  # sideways, as stored, MTCNN finds no upright face
    assert model.load_face(tmp_path / "phone.jpg").shape == (32, 32, 3)  # EXIF applied: found


def test_a_bundle_without_a_pipeline_uses_the_centre_crop(run: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run / "model", old)
    meta = json.loads((old / "model.json").read_text())
    del meta["faces"]
    (old / "model.json").write_text(json.dumps(meta))
    model = facecls.load_model(old, device="cpu")
    assert model.faces == "centre" and not model.detects
    photo = np.random.default_rng(1).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    assert np.array_equal(model.face(photo), FaceCutter("centre", 32).cut([photo])[0][0].pixels)


def test_centre_box_is_the_square_the_centre_crop_keeps() -> None:
    assert centre_box(100, 200, 1.0) == (50.0, 0.0, 150.0, 100.0)
    assert centre_box(100, 100, 0.5) == (25.0, 25.0, 75.0, 75.0)


def test_faces_detect_resolves_to_the_pipeline_that_suits_the_model() -> None:
    """FaceNet's weights were trained on box crops (better than alignment on LFW pairs)."""
    from facecls.config import DataConfig, RunConfig, TrainConfig
    from facecls.config_rules import resolve

    def faces(model: str) -> str:
        config = RunConfig(data=DataConfig(faces="detect"), train=TrainConfig(model=model))
        return resolve(config).data.faces

    assert faces("facenet") == "box"
    assert faces("sface") == "arcface"  # the ArcFace template its weights were trained on
    assert faces("tronnet") == "align"
    assert resolve(RunConfig()).data.faces == "centre"


def test_the_main_face_is_large_and_central_not_only_large() -> None:
    from facecls.data.faces import main_first

    # 250 x 250 photo: a bystander at the edge slightly larger than the subject in the middle
    bystander = [0, 0, 110, 110]  # area 12,100, centre 70 px off in x and y
    subject = [75, 75, 175, 175]  # area 10,000, centred
    assert main_first(np.array([bystander, subject]), 250, 250).tolist() == [1, 0]
    # both centred: the larger one first; far from the centre both, the larger still wins
    small, big = [100, 100, 150, 150], [50, 50, 200, 200]
    assert main_first(np.array([small, big]), 250, 250).tolist() == [1, 0]
    assert main_first(np.zeros((0, 4)), 250, 250).tolist() == []


def test_a_tilted_head_is_cut_upright_and_a_small_tilt_is_left_alone() -> None:
    from facecls.data.align import box_crop, eye_angle, upright_box_crop

    y, x = np.mgrid[0:300, 0:300]
    base = np.zeros((300, 300, 3), np.uint8)
    base[..., 0] = (x * 255 / 299).astype(np.uint8)  # left-right and up-down gradients
    base[..., 1] = (y * 255 / 299).astype(np.uint8)
    base[120:135, 110:190] = 255  # a bright "eye line"
    box = np.array([100.0, 100.0, 200.0, 200.0])
    reference = box_crop(base, box, 64).astype(float)
    # rotated 25° counter-clockwise about the face centre: the right eye rises
    tilted = np.asarray(
        Image.fromarray(base).rotate(25, resample=Image.Resampling.BILINEAR, center=(150, 150))
    )
    eyes = np.array([[120.0, 150.0], [180.0, 150.0]])
    turn = np.radians(25)
    rotated_eyes = [
        (150 + (px - 150) * np.cos(turn) + (py - 150) * np.sin(turn),
         150 - (px - 150) * np.sin(turn) + (py - 150) * np.cos(turn))
        for px, py in eyes
    ]  # fmt: skip
    angle = eye_angle(np.array(rotated_eyes))
    assert angle == pytest.approx(-25.0, abs=1e-6)
    upright = upright_box_crop(tilted, box, 64, 0.0, angle).astype(float)
    plain = box_crop(tilted, box, 64).astype(float)
    centre = (slice(12, 52), slice(12, 52))  # the corners hold what the rotation brought in
    assert (
        np.abs(upright - reference)[centre].mean() < 0.25 * np.abs(plain - reference)[centre].mean()
    )
    # under UPRIGHT_FROM degrees the plain box crop is returned as it is
    assert np.array_equal(upright_box_crop(base, box, 64, 0.0, 5.0), box_crop(base, box, 64))
