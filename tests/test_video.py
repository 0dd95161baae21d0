"""predict --video: CSV rows per sampled frame with frame number and time, an annotated copy,
and clear errors for an unreadable video or a camera that is not there."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facecls
from facecls.cli import main
from tests import serve_fixtures

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures
FPS = 5.0


def make_clip(photos: list[Path], path: Path) -> Path:
    """An MJPG clip, one 64 px frame per photo."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 64))
    for photo in photos:
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((64, 64), Image.BICUBIC))
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    return path


def test_video_rows_and_annotated_copy(tiny_run: Path, people, tmp_path: Path) -> None:
    import cv2

    photos = sorted((people["train"] / "person_02").iterdir())[:10]
    clip = make_clip(photos, tmp_path / "clip.avi")
    out, annotated = tmp_path / "video.csv", tmp_path / "boxes.avi"
    args = ["predict", str(tiny_run), "--video", str(clip), "--every", "3", "--out", str(out)]
    assert main([*args, "--annotate", str(annotated)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == [0, 3, 6, 9]
    assert [float(r["time_s"]) for r in rows] == [0.0, 0.6, 1.2, 1.8]
    assert all(r["box"] == "0 0 64 64" and r["decision"] in ("known", "unknown") for r in rows)
    # Each row says what the library answers for that frame (a contract; how many frames a
    # 20-epoch model names right is what it learned on one CPU's kernels).
    model = facecls.load_model(tiny_run)
    reader = cv2.VideoCapture(str(clip))
    frames = [cv2.cvtColor(reader.read()[1], cv2.COLOR_BGR2RGB) for _ in range(10)]
    reader.release()
    for r in rows:
        (answer,) = model.predict([frames[int(r["frame"])]], top_k=1)
        assert (r["decision"], r["identity"], r["top1"]) == (
            answer.decision, answer.identity, answer.top_k[0][0],
        )  # fmt: skip
        assert float(r["score"]) == pytest.approx(answer.score, abs=1e-5)
    copy = cv2.VideoCapture(str(annotated))
    assert int(copy.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    ok, frame = copy.read()
    copy.release()
    assert ok and frame.shape == (64, 64, 3)
    assert not list(tmp_path.glob(".*partial*"))


def test_rejected_faces_show_their_best_guess(tiny_run: Path, people, tmp_path: Path) -> None:
    """A face the threshold rejects keeps its best guess in the CSV's ``closest`` column, as
    ``facecls predict`` writes it for photos (``NAME score < threshold``)."""
    photos = sorted((people["train"] / "person_02").iterdir())[:3]
    clip = make_clip(photos, tmp_path / "clip.avi")
    out = tmp_path / "video.csv"
    args = ["predict", str(tiny_run), "--video", str(clip), "--out", str(out)]
    assert main([*args, "--threshold", "2", "--annotate", str(tmp_path / "boxes.avi")]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["decision"] == "unknown" for r in rows)
    for r in rows:  # e.g. "person_02 0.81 < 2.00": the top guess, its score, the threshold
        name, score, less, limit = r["closest"].split(" ")
        assert (name, less, float(limit)) == (r["top1"], "<", 2.0)
        assert float(score) == pytest.approx(float(r["score"]), abs=0.01)
    # a CSV written before the closest column is still recognised as an earlier output
    out.write_text(",".join(["frame", "time_s", "face", "faces", "box", "decision", "identity",
                             "score", "top1", "top1_probability"]) + "\n")  # fmt: skip
    assert main(args) == 0
    assert "closest" in out.read_text().splitlines()[0]


def test_bad_video_and_missing_camera(tiny_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "clip.mp4").write_text("not a video")
    for source, expected in (
        (str(tmp_path / "clip.mp4"), "not a video"),
        (str(tmp_path / "missing.mp4"), "no such video file"),
        ("9", "no camera at index 9"),
    ):
        out = tmp_path / "v.csv"
        assert main(["predict", str(tiny_run), "--video", source, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
        assert not out.exists()
    assert main(["predict", str(tiny_run)]) == 2  # neither images nor --video
    assert "--video" in capsys.readouterr().err
