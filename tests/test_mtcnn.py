"""MTCNN detector and landmark alignment: packaged weights, LFW photos, edge cases, geometry."""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from facecls.data.align import TEMPLATE_112, align_face, box_crop, similarity_transform
from facecls.data.mtcnn import MTCNN, Detections
from facecls.data.mtcnn_nets import load_nets

ARCHIVE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "lfw-deepfunneled.tgz"
)
# Early in the (alphabetical) archive, so reading stops after a few dozen members; one face each.
SINGLE = ("AJ_Cook_0001", "Aaron_Eckhart_0001", "Aaron_Peirsol_0001", "Aaron_Sorkin_0001")
GROUP = ("Aaron_Guiel_0001", "Aaron_Patterson_0001", "Abba_Eban_0001")

# Outputs of facenet-pytorch 2.6.0's own PNet/RNet/ONet (models/mtcnn.py with its .pt weights) on
# torch.manual_seed(0); torch.rand(2, 3, s, s) * 2 - 1, recorded once outside the repository.
# Per net: for each output, the first six flattened values (or all, if fewer).
REFERENCE = {
    "pnet": (
        16,
        [
            [0.145315, 0.088579, 0.109446, 0.130265, 0.039796, 0.193005],  # regression
            [0.993156, 0.992004, 0.999401, 0.991989, 0.995896, 0.995803],  # probabilities
        ],
    ),
    "rnet": (
        24,
        [
            [0.140932, 0.050079, -0.03193, 0.099042, 0.216263, 0.019531],
            [0.99055, 0.00945, 0.707245, 0.292755],
        ],
    ),
    "onet": (
        48,
        [
            [0.143304, -0.027625, -0.120992, -0.079224, 0.10129, -0.007411],
            [0.375555, 0.726865, 0.557384, 0.403488, 0.676106, 0.307809],  # landmarks
            [0.999825, 0.000175, 0.999883, 0.000117],
        ],
    ),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lfw() -> dict[str, np.ndarray]:
    """The SINGLE and GROUP photos as RGB arrays, read straight from the archive."""
    if not ARCHIVE.exists():
        pytest.fail(f"{ARCHIVE} is missing: tests read LFW from ../shared/datasets")
    wanted = {f"{name.rsplit('_', 1)[0]}/{name}.jpg": name for name in SINGLE + GROUP}
    photos: dict[str, np.ndarray] = {}
    with tarfile.open(ARCHIVE, "r:gz") as archive:
        for member in archive:
            name = wanted.get(member.name.split("/", 1)[-1])
            if name is not None:
                data = archive.extractfile(member).read()
                photos[name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            if len(photos) == len(wanted):
                break
    return photos


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN(device="cpu")


def assert_upright_face(found: Detections, width: int, height: int) -> None:
    """One face, roughly centred, landmarks in reading order."""
    assert len(found) == 1, found
    box, marks = found.boxes[0], found.landmarks[0]
    assert found.boxes.dtype == np.float32 and found.landmarks.shape == (1, 5, 2)
    assert (
        abs((box[0] + box[2]) / 2 - width / 2) < 30 and abs((box[1] + box[3]) / 2 - height / 2) < 40
    )
    left_eye, right_eye, nose, left_mouth, right_mouth = marks
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def test_packaged_weights_load_strictly() -> None:
    pnet, rnet, onet = load_nets()  # load_state_dict(strict=True) inside
    assert sum(p.numel() for p in pnet.parameters()) == 6632
    assert not any(p.requires_grad for net in (pnet, rnet, onet) for p in net.parameters())


@pytest.mark.parametrize("name", ["pnet", "rnet", "onet"])
def test_nets_reproduce_facenet_pytorch(name: str) -> None:
    net = dict(zip(("pnet", "rnet", "onet"), load_nets(), strict=True))[name]
    side, expected = REFERENCE[name]
    torch.manual_seed(0)
    x = torch.rand(2, 3, side, side) * 2 - 1
    with torch.inference_mode():
        outputs = net(x)
    assert len(outputs) == len(expected)
    for output, values in zip(outputs, expected, strict=True):
        got = output.flatten()[: len(values)]
        torch.testing.assert_close(got, torch.tensor(values), atol=1e-4, rtol=0)


def test_one_face_per_lfw_photo(detector: MTCNN, lfw: dict[str, np.ndarray]) -> None:
    photos = [lfw[name] for name in SINGLE]
    for found in detector.detect(photos):
        assert_upright_face(found, 250, 250)
        assert found.scores[0] > 0.95


def test_exif_rotated_photo_is_found_after_transpose(
    detector: MTCNN, lfw: dict[str, np.ndarray], tmp_path: Path
) -> None:
    # Stored turned 90 deg counter-clockwise; Orientation 6 says "rotate 90 deg clockwise to show".
    stored = Image.fromarray(lfw[SINGLE[1]][:, 20:]).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[274] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    with Image.open(path) as image:
        assert image.getexif()[274] == 6 and image.size == (250, 230)
        shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert shown.shape == (250, 230, 3)
    assert_upright_face(detector.detect([shown])[0], 230, 250)


def test_no_face_no_crash(detector: MTCNN) -> None:
    images = [
        np.full((200, 300, 3), 255, np.uint8),
        np.zeros((120, 120, 3), np.uint8),
        np.full((10, 10, 3), 128, np.uint8),
        np.zeros((0, 0, 3), np.uint8),
    ]
    for found in detector.detect(images):
        assert found.boxes.shape == (0, 4) and found.scores.shape == (0,)
        assert found.landmarks.shape == (0, 5, 2) and len(found) == 0
    assert detector.detect([]) == []
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect([np.zeros((20, 20), np.uint8)])
    with pytest.raises(TypeError, match=r"\[image\]"):
        detector.detect(np.zeros((20, 20, 3), np.uint8))


def test_similarity_transform_recovers_scale_angle_shift() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    s, angle, shift = 1.7, 0.6, np.array([12.0, -5.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = s * src @ rotation.T + shift
    matrix = similarity_transform(src, dst)
    assert math.hypot(*matrix[:, 0]) == pytest.approx(s, abs=1e-9)
    assert math.atan2(matrix[1, 0], matrix[0, 0]) == pytest.approx(angle, abs=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    np.testing.assert_allclose(src @ matrix[:, :2].T + matrix[:, 2], dst, atol=1e-9)
    # A mirrored point set is fitted without reflection.
    assert np.linalg.det(similarity_transform(src, src * [-1, 1])[:, :2]) > 0


def test_align_face_uprights_a_tilted_face(detector: MTCNN, lfw: dict[str, np.ndarray]) -> None:
    tilted = np.asarray(Image.fromarray(lfw[SINGLE[0]]).rotate(25, Image.Resampling.BILINEAR))
    found = detector.detect([tilted])[0]
    left_eye, right_eye = found.landmarks[0, :2]
    assert right_eye[1] - left_eye[1] < -20  # the tilt is there before aligning
    aligned = align_face(tilted, found.landmarks[0], 112)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    again = detector.detect([aligned])[0]
    assert len(again) == 1
    left_eye, right_eye = again.landmarks[0, :2]
    assert abs(left_eye[1] - right_eye[1]) < 3
    np.testing.assert_allclose(again.landmarks[0], TEMPLATE_112, atol=6)
    # scale < 1 keeps more context: the eyes move towards the centre.
    wide = detector.detect([align_face(tilted, found.landmarks[0], 112, scale=0.7)])[0]
    assert len(wide) == 1
    assert wide.landmarks[0, 1, 0] - wide.landmarks[0, 0, 0] < 0.85 * (right_eye[0] - left_eye[0])


def test_box_crop_margin_and_border(lfw: dict[str, np.ndarray]) -> None:
    photo = lfw[SINGLE[0]]
    crop = box_crop(photo, np.array([80, 60, 170, 190]), 160, margin=32)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    # A box at the corner: the part beyond the photo is black, not clipped.
    corner = box_crop(photo, np.array([-50, -50, 50, 50]), 100)
    assert corner[:40, :40].max() == 0 and corner[60:, 60:].mean() > 10


def test_group_photo_and_mixed_sizes(detector: MTCNN, lfw: dict[str, np.ndarray]) -> None:
    canvas = np.full((650, 900, 3), 120, np.uint8)
    placed = []
    for name, side, (x, y) in zip(
        GROUP, (70, 130, 200), ((80, 400), (380, 90), (620, 330)), strict=True
    ):
        face = Image.fromarray(lfw[name][60:190, 60:190]).resize(
            (side, side), Image.Resampling.BILINEAR
        )
        canvas[y : y + side, x : x + side] = np.asarray(face)
        placed.append(np.array([x, y, x + side, y + side], np.float32))
    # Different sizes in one call: the group photo and a 250 px photo.
    group, single = detector.detect([canvas, lfw[SINGLE[2]]])
    assert_upright_face(single, 250, 250)
    assert len(group) == 3, group
    for region in placed:
        assert max(iou(box, region) for box in group.boxes) > 0.3
    assert list(group.scores) == sorted(group.scores, reverse=True)


def test_huge_photo_is_capped_and_scaled_back(detector: MTCNN, lfw: dict[str, np.ndarray]) -> None:
    photo = lfw[SINGLE[3]]
    big = np.asarray(Image.fromarray(photo).resize((2000, 2000), Image.Resampling.BILINEAR))
    small, large = detector.detect([photo, big])  # the 2000 px photo runs at 1600 px
    assert len(large) == 1
    side = small.boxes[0, 2] - small.boxes[0, 0]
    np.testing.assert_allclose(large.boxes[0] / 8, small.boxes[0], atol=0.1 * side)
    np.testing.assert_allclose(large.landmarks[0] / 8, small.landmarks[0], atol=0.05 * side)
    # align_face box-filters the big photo down 14x before warping; the geometry must not move:
    # the same crop as from the 250 px photo at the same points (centres: (p + 0.5) * 8 - 0.5).
    from_big = align_face(big, large.landmarks[0], 112).astype(np.float32)
    same_points = (large.landmarks[0] + 0.5) / 8 - 0.5
    from_small = align_face(photo, same_points, 112).astype(np.float32)
    assert np.abs(from_big - from_small).mean() < 4
