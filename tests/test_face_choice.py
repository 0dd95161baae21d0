"""Photos with several faces: training keeps the face of the person its folder names (not the
largest, most central one), a face found twice is answered once, enroll keeps the face that agrees
with the person's other photos, and verify says which face it compared."""

from __future__ import annotations

import json
import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFilter

import facecls
from facecls.bundle import Bundle, read_centroids, save_bundle, write_centroids
from facecls.config import DataConfig, TrainConfig
from facecls.data.checks import data_report
from facecls.data.dataset import load_dataset
from facecls.data.face_choice import MAIN_RULE, Choice, FacesFound, choose, records, references
from facecls.data.faces import FaceCutter, merge_overlaps
from facecls.data.mtcnn import Detections
from facecls.data.sources import DataError
from facecls.data.splits import split_test
from facecls.inference.faces import _detected
from facecls.inference.verify_threshold import calibrate_verification
from facecls.models.face_embedder import choice_embedder
from facecls.models.facenet import NORMALIZATION, WEIGHTS_FILE, facenet
from facecls.report.content import several_faces
from facecls.service.app import Settings, create_app
from facecls.service.model_store import ModelStore, chosen_faces
from tests.conftest import SHARED

WEIGHTS = SHARED / "weights" / WEIGHTS_FILE
FACE_SHARE = 1 / 2.04


@pytest.fixture(scope="module")
def lfw(lfw_archive: Path) -> dict[str, list[np.ndarray]]:
    """Four photos each of two people and one of a stranger, from LFW."""
    wanted = {"George_W_Bush": 5, "Colin_Powell": 4, "Abdullah_Gul": 1}
    photos: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    with tarfile.open(lfw_archive) as tar:
        for member in tar:
            name = member.name.split("/")[-2] if member.isfile() else ""
            if name in wanted and len(photos[name]) < wanted[name]:
                data = tar.extractfile(member).read()
                photos[name].append(np.asarray(Image.open(BytesIO(data)).convert("RGB")))
            if all(len(photos[n]) == k for n, k in wanted.items()):
                break
    return photos


def _paste(canvas: Image.Image, photo: np.ndarray, centre: tuple[int, int], width: int) -> None:
    side = round(width / FACE_SHARE)
    face = Image.fromarray(photo).resize((side, side))
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).ellipse([side * 0.2, side * 0.12, side * 0.8, side * 0.92], fill=255)
    canvas.paste(face, (centre[0] - side // 2, centre[1] - side // 2),
                 mask.filter(ImageFilter.GaussianBlur(2)))  # fmt: skip


def _group(subject: np.ndarray, bystander: np.ndarray) -> Image.Image:
    """The subject small at the left edge, a stranger large in the middle."""
    canvas = Image.new("RGB", (640, 440), (120, 140, 110))
    _paste(canvas, subject, (90, 220), 80)
    _paste(canvas, bystander, (330, 220), 170)
    return canvas


def _folder(root: Path, lfw: dict[str, list[np.ndarray]]) -> Path:
    for name in ("George_W_Bush", "Colin_Powell"):
        (root / name).mkdir(parents=True)
        for i, photo in enumerate(lfw[name][:4]):
            Image.fromarray(photo).save(root / name / f"{i}.jpg", quality=95)
    _group(lfw["George_W_Bush"][4], lfw["Abdullah_Gul"][0]).save(
        root / "George_W_Bush" / "group.jpg", quality=95
    )
    return root


def test_training_keeps_the_subject_not_the_larger_more_central_bystander(
    lfw: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} is missing: tests read the FaceNet weights from ../shared")
    folder = _folder(tmp_path / "people", lfw)
    config = DataConfig(source=str(folder), image_size=160, faces="box",
                        cache_dir=str(tmp_path / "cache"), duplicate_distance=-1)  # fmt: skip
    # without a face embedding to compare with: the main face, the stranger in the middle
    plain = load_dataset(config, log=lambda _m: None)
    (entry,) = [e for e in plain.several_faces if e["path"] == "George_W_Bush/group.jpg"]
    assert entry["kept"] == 0 and entry["box"][0] > 200  # the old rule keeps the bystander
    embedder = choice_embedder(TrainConfig(model="facenet", weights=str(WEIGHTS)), 160)
    chosen = load_dataset(config, log=lambda _m: None, embedder=embedder)
    (entry,) = [e for e in chosen.several_faces if e["path"] == "George_W_Bush/group.jpg"]
    x1, y1, x2, y2 = entry["box"]
    assert x1 <= 90 <= x2 and y1 <= 220 <= y2, entry  # the subject, small at the edge
    assert entry["kept"] > 0 and entry["rule"] == "agreement" and not entry["doubtful"]
    assert entry["agreement"] > entry["runner_up"] + 0.15
    row = chosen.paths.index("George_W_Bush/group.jpg")
    assert not np.array_equal(chosen.images[row].numpy(), plain.images[row].numpy())
    assert chosen.info["decode_key"] != plain.info["decode_key"]  # later caches follow it
    report = data_report(chosen, split_test(chosen, config, 0))
    listed = {e["path"]: e for e in report["several_faces"]}
    assert listed["George_W_Bush/group.jpg"]["kept"] == entry["kept"]
    # a run's data reloaded with the faces it kept (calibrate, evaluate, report)
    again = load_dataset(config, log=lambda _m: None, kept_faces=report["several_faces"])
    assert np.array_equal(again.images[row].numpy(), chosen.images[row].numpy())


def test_choice_starts_from_single_face_photos_and_falls_back_to_the_main_face() -> None:
    rng = np.random.default_rng(0)
    people = rng.normal(size=(3, 16))
    targets = np.array([0, 0, 0, 0, 1, 1, 2])  # identity 2 has no single-face photo
    vectors = people[targets] + 0.3 * rng.normal(size=(7, 16))
    rows = np.array([3, 6])
    found = FacesFound(np.zeros((7, 5), np.float32), rows, np.array([0, 2, 4]),
                       np.zeros((4, 3, 2, 2), np.uint8), np.zeros((4, 5), np.float32),
                       np.array([2, 2]))  # fmt: skip
    candidates = np.stack([people[1], vectors[3], people[0], vectors[6]])
    refs = references(targets, found)
    assert set(refs.tolist()) == {0, 1, 2}  # only identities with several-face photos
    choice = choose(targets, found, refs, vectors[refs], candidates)
    assert choice.kept.tolist() == [1, 0]
    assert choice.rule[1].startswith("main face") and np.isnan(choice.agreement[1])


def test_a_face_found_twice_is_one_row() -> None:
    box = np.array([100.0, 100.0, 180.0, 190.0])
    marks = np.tile(np.array([[120.0, 130.0]]), (5, 1))
    twice = Detections(
        np.array([box, [110.0, 120.0, 170.0, 185.0], [300.0, 100.0, 380.0, 190.0]], np.float32),
        np.array([0.99, 0.8, 0.97], np.float32),
        np.stack([marks, marks, marks + [200.0, 0.0]]).astype(np.float32),
    )
    merged = merge_overlaps(twice)
    assert len(merged) == 2 and merged.scores.tolist() == pytest.approx([0.99, 0.97])
    photo = np.full((300, 480, 3), 128, np.uint8)
    rows = list(_detected(FaceCutter("box", 64).faces_of(photo, merged, True), path="p.jpg"))
    assert [r.template.faces for r in rows] == [2, 2]
    apart = Detections(twice.boxes[[0, 2]], twice.scores[[0, 2]], twice.landmarks[[0, 2]])
    assert len(merge_overlaps(apart)) == 2  # two faces side by side stay two


def test_verify_needs_no_same_person_pair() -> None:
    """One validation photo per person: no genuine pair, still a FAR threshold."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(60, 16))
    entry = calibrate_verification(vectors, np.arange(60), far=0.01)
    assert entry["calibration"]["true_accept_rate"] is None
    assert entry["calibration"]["impostor_pairs"] == 60 * 59 // 2
    assert entry["calibration"]["false_accept_rate"] <= 0.01
    few = calibrate_verification(vectors[:6], np.arange(6), 0.01, vectors[6:], np.arange(54))
    assert few["calibration"]["part"] == "validation and training parts"
    none = calibrate_verification(vectors[:1], np.arange(1))
    assert "threshold" not in none and "different people" in none["missing"]


@pytest.fixture(scope="module")
def facenet_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FaceNet bundle (CASIA-WebFace weights, two trained people) that detects faces."""
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} is missing: tests read the FaceNet weights from ../shared")
    torch.manual_seed(0)
    model = facenet(num_classes=2, weights=WEIGHTS).eval()
    folder = tmp_path_factory.mktemp("facenet") / "model"
    mean, std = NORMALIZATION
    save_bundle(Bundle(model, "facenet", ["a", "b"], 160, list(mean), list(std),
                       extra={"faces": "box"}), folder)  # fmt: skip
    unit = np.random.default_rng(0).normal(size=(2, 512)).astype(np.float32)
    write_centroids(folder, {"trained": unit / np.linalg.norm(unit, axis=1, keepdims=True)})
    meta = json.loads((folder / "model.json").read_text())
    meta["verify"] = {"threshold": 0.45, "far": 0.01}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_enroll_keeps_the_face_that_agrees_with_the_other_photos(
    facenet_bundle: Path, lfw: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    person = tmp_path / "new" / "George_W_Bush"
    person.mkdir(parents=True)
    for i, photo in enumerate(lfw["George_W_Bush"][:3]):
        Image.fromarray(photo).save(person / f"{i}.jpg")
    _group(lfw["George_W_Bush"][4], lfw["Abdullah_Gul"][0]).save(person / "group.jpg")
    said: list[str] = []
    facecls.enroll(facenet_bundle, tmp_path / "new", tmp_path / "out", log=said.append)
    (line,) = [s for s in said if "group.jpg" in s]
    assert "kept face 1" in line and "doubtful" not in line, line  # face 0: the stranger
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["enrolled"]["images"] == [4]


def test_verify_says_which_face_it_compared(
    facenet_bundle: Path, lfw: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    group, portrait = tmp_path / "group.jpg", tmp_path / "portrait.jpg"
    _group(lfw["George_W_Bush"][4], lfw["Abdullah_Gul"][0]).save(group)
    Image.fromarray(lfw["George_W_Bush"][0]).save(portrait)
    main = facecls.verify(facenet_bundle, group, portrait)
    assert main.found == (2, 1) and main.faces[0].face == 0
    assert "2 faces; compared face 0" in main.line() and "--face N" in main.line()
    chosen = facecls.verify(facenet_bundle, group, portrait, face=[1])
    assert chosen.faces[0].face == 1 and chosen.similarity > main.similarity
    assert chosen.same  # the subject, small at the edge, against a portrait of him
    with pytest.raises(DataError, match="holds 2 face"):
        facecls.verify(facenet_bundle, group, portrait, face=[5])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_enrollment_adds_the_face_of_each_photo_that_agrees_with_the_others() -> None:
    """The service's rule (``chosen_faces``): a photo with several faces adds the face nearest
    the person's single-face photos, even when a stranger is its main face."""
    rng = np.random.default_rng(2)
    person, stranger = _unit(rng.normal(size=(2, 32)))
    near = _unit(person + 0.4 * rng.normal(size=(4, 32)))
    group = np.stack([stranger, near[3]])  # the stranger is the main face
    kept = chosen_faces([near[:1], group, near[1:2], near[2:3]])
    assert kept.shape == (4, 32)
    assert any(np.array_equal(row, near[3]) for row in kept)
    assert not any(np.array_equal(row, stranger) for row in kept)
    # one face a photo: each as given; no single-face photo: the main face of each
    assert np.array_equal(chosen_faces([near[:1], near[1:2]]), near[:2])
    only_groups = chosen_faces([group, np.stack([near[0], stranger])])
    assert np.array_equal(only_groups, np.stack([stranger, near[0]]))


def test_the_report_lists_the_doubtful_choices_for_a_person_to_check() -> None:
    found = FacesFound(
        np.zeros((5, 5), np.float32), np.array([1, 3, 4]), np.array([0, 2, 5, 7]),
        np.zeros((7, 3, 2, 2), np.uint8),
        np.arange(35, dtype=np.float32).reshape(7, 5), np.array([2, 3, 2]),
    )  # fmt: skip
    choice = Choice(
        np.array([1, 2, 0]), np.array([0.8, 0.5, np.nan]), np.array([0.1, 0.45, np.nan]),
        ["agreement", "agreement", MAIN_RULE],
    )  # fmt: skip
    paths = [f"p{i}.jpg" for i in range(5)]
    entries = records(paths, found, choice)
    assert [e["path"] for e in entries] == ["p1.jpg", "p3.jpg", "p4.jpg"]
    assert [e["faces"] for e in entries] == [2, 3, 2] and [e["kept"] for e in entries] == [1, 2, 0]
    assert entries[0]["box"] == [5.0, 6.0, 7.0, 8.0]  # the kept candidate's box (row 0 + 1)
    assert entries[1]["box"] == [20.0, 21.0, 22.0, 23.0]  # row 2 + 2
    # sure: far ahead of the next face; doubtful: 0.05 ahead of it
    assert [e["doubtful"] for e in entries[:2]] == [False, True]
    assert entries[2]["rule"] == MAIN_RULE and entries[2]["agreement"] is None
    report = {"several_faces": entries, "faces_chosen_by": "FaceNet"}
    shown = several_faces(report, shareable=False)
    assert shown["photos"] == 3 and shown["not_main"] == 2 and shown["doubtful_count"] == 1
    assert [e["path"] for e in shown["doubtful"]] == ["p3.jpg"]
    shared = several_faces(report, shareable=True)
    assert shared["doubtful_count"] == 1 and shared["doubtful"] == []  # no paths when shared
    assert several_faces({"several_faces": []}, shareable=False) is None


def _canvas(*faces: tuple[np.ndarray, tuple[int, int], int]) -> bytes:
    canvas = Image.new("RGB", (640, 440), (120, 140, 110))
    for photo, centre, width in faces:
        _paste(canvas, photo, centre, width)
    buffer = BytesIO()
    canvas.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_the_service_enrolls_the_face_that_agrees_not_the_main_face(
    facenet_bundle: Path, lfw: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    """/enroll with three portraits and a group photo whose main face is a stranger: the
    person's centroid is the one made with the subject's face of that photo."""
    subject, bystander = lfw["George_W_Bush"][4], lfw["Abdullah_Gul"][0]
    portraits = []
    for i, photo in enumerate(lfw["George_W_Bush"][:3]):
        buffer = BytesIO()
        Image.fromarray(photo).save(buffer, format="JPEG", quality=95)
        portraits.append(("files", (f"{i}.jpg", buffer.getvalue(), "image/jpeg")))
    fourth = {
        "Group": _canvas((subject, (90, 220), 80), (bystander, (330, 220), 170)),
        "Subject": _canvas((subject, (90, 220), 80)),  # the group photo without the stranger
        "Stranger": _canvas((bystander, (330, 220), 170)),  # ... and without the subject
    }
    store = ModelStore(facenet_bundle, tmp_path / "store", device="cpu", log=lambda _m: None)
    with TestClient(create_app(store, Settings())) as client:
        faces = client.post("/predict", files={"file": ("g.jpg", fourth["Group"], "image/jpeg")})
        assert len(faces.json()["faces"]) == 2  # one box a face
        for name, photo in fourth.items():
            extra = ("files", ("4.jpg", photo, "image/jpeg"))
            answer = client.post("/enroll", data={"name": name}, files=[*portraits, extra])
            assert answer.status_code == 200, answer.text
            assert answer.json()["photos"] == 4
    model = store.model
    vectors = dict(zip(model.enrolled_names, read_centroids(model.folder)["enrolled"], strict=True))
    group, alone, wrong = (_unit(vectors[n].astype(np.float64)) for n in fourth)
    same, other = float(group @ alone), float(group @ wrong)
    assert same > 0.99 and same > other + 0.02, (same, other)  # the main face's: 0.934


def test_the_service_verifies_the_face_asked_for_and_says_which(
    facenet_bundle: Path, lfw: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    """/verify of a group photo (a large stranger as main face, the subject small at the edge)
    against a portrait: the main face unless ``face_a`` chooses, as ``facecls verify --face``
    compares them; the answer gives each photo's face, count and ``/predict``'s box."""
    group, portrait = tmp_path / "group.jpg", tmp_path / "portrait.jpg"
    _group(lfw["George_W_Bush"][4], lfw["Abdullah_Gul"][0]).save(group, quality=95)
    Image.fromarray(lfw["George_W_Bush"][0]).save(portrait, quality=95)
    files = {"a": ("g.jpg", group.read_bytes()), "b": ("p.jpg", portrait.read_bytes())}
    store = ModelStore(facenet_bundle, tmp_path / "store", device="cpu", log=lambda _m: None)
    with TestClient(create_app(store, Settings())) as client:
        boxes = [
            f["box"] for f in client.post("/predict", files={"file": files["a"]}).json()["faces"]
        ]
        main = client.post("/verify", files=files).json()
        chosen = client.post("/verify", files=files, data={"face_a": "1", "face_b": "0"}).json()
        beyond = client.post("/verify", files=files, data={"face_a": "2"})
        alone = client.post("/verify", files=files, data={"face_b": "1"})
    assert len(boxes) == 2
    assert main["a"] == {"face": 0, "faces": 2, "box": boxes[0]}  # the stranger, in the middle
    assert chosen["a"] == {"face": 1, "faces": 2, "box": boxes[1]}
    x, y, w, h = chosen["a"]["box"]
    assert x <= 90 <= x + w and y <= 220 <= y + h  # the subject, small at the left edge
    assert main["b"]["faces"] == chosen["b"]["faces"] == 1 and main["b"]["box"] is not None
    expected = {0: facecls.verify(facenet_bundle, group, portrait),
                1: facecls.verify(facenet_bundle, group, portrait, face=[1, 0])}  # fmt: skip
    assert main["similarity"] == pytest.approx(expected[0].similarity, abs=1e-3)
    assert chosen["similarity"] == pytest.approx(expected[1].similarity, abs=1e-3)
    assert chosen["similarity"] > main["similarity"] and chosen["same"]
    # the line facecls verify prints, with the form's field for --face; nothing on photo b
    box = " ".join(map(str, boxes[0]))
    assert main["message"] == (
        f"a: 2 faces; compared face 0 (box {box}); another one: face_a=N (0 = the main face)"
    )
    assert chosen["message"].startswith("a: 2 faces; compared face 1 (box ")
    for answer, field, count in ((beyond, "face_a", 2), (alone, "face_b", 1)):
        assert answer.status_code == 422
        assert answer.json()["error"] == {
            "code": "invalid_request",
            "message": f"{field}: the photo holds {count} face(s), numbered 0 to {count - 1} "
            "(0 = the main face)",
        }
