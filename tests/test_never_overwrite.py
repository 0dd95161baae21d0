"""facecls never writes over a file you gave it (issue 23, items 1 and 2).

An output that would replace an input, or an existing file that is not an earlier output of the
same kind, is refused in one line before any work; annotated copies take the next free name; an
output folder inside an input folder is never read back.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.cli import main


@pytest.fixture
def bundle(untrained_bundle: Path) -> Path:
    return untrained_bundle


def _photo(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- item 1: --annotate ------------------------------------------------------------------------


def test_annotate_into_the_folder_of_the_inputs_writes_beside_them(
    bundle: Path, tmp_path: Path
) -> None:
    """``predict RUN a.jpg b.jpg --annotate DIR`` with DIR holding a.jpg and b.jpg (and a user's
    c.jpg, the name c.png's copy would take) leaves all three as they were."""
    folder = tmp_path / "photos"
    a, b = _photo(folder / "a.jpg", 1), _photo(folder / "b.jpg", 2)
    _photo(folder / "c.jpg", 3)  # not an input, but the name c.png's annotated copy would take
    c = _photo(tmp_path / "elsewhere" / "c.png", 4)
    before = _digests(folder)
    out = tmp_path / "p.csv"
    args = ["--quiet", "predict", str(bundle), str(a), str(b), str(c)]
    assert main([*args, "--out", str(out), "--annotate", str(folder)]) == 0
    after = _digests(folder)
    assert {name: after[name] for name in before} == before  # nothing of the user's changed
    assert sorted(set(after) - set(before)) == ["a-2.jpg", "b-2.jpg", "c-2.jpg"]
    assert len(_rows(out)) == 3


def test_annotating_twice_into_a_subfolder_never_reads_the_annotations(
    bundle: Path, tmp_path: Path
) -> None:
    """The second run into ``photos/annotated`` predicts the same photos as the first (not
    its annotations) and replaces its own annotated copies instead of adding ``-2`` ones."""
    photos = tmp_path / "photos"
    for i in range(3):
        _photo(photos / f"p{i}.png", i)
    out, drawn = tmp_path / "p.csv", photos / "annotated"
    args = ["--quiet", "predict", str(bundle), str(photos), "--out", str(out)]
    assert main([*args, "--annotate", str(drawn)]) == 0
    first = _rows(out)
    assert sorted(p.name for p in drawn.iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert main([*args, "--annotate", str(drawn)]) == 0
    assert [r["path"] for r in _rows(out)] == [r["path"] for r in first]
    assert sorted(p.name for p in drawn.iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg"]


# --- item 2: --out -----------------------------------------------------------------------------


def test_embed_out_csv_would_write_its_index_over_itself(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = _photo(tmp_path / "a.png", 1)
    out = tmp_path / "x.csv"
    assert main(["embed", str(bundle), str(photo), "--out", str(out)]) == 2
    err = _one_error(capsys)
    assert f"--out {out}: the embeddings need a file of their own" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_out_naming_an_input_photo_is_refused_before_any_work(
    command: str, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = _photo(tmp_path / "a.jpg", 1)
    other = _photo(tmp_path / "b.jpg", 2)
    before = photo.read_bytes()
    assert main([command, str(bundle), str(photo), str(other), "--out", str(photo)]) == 2
    err = _one_error(capsys)
    assert f"--out {photo}: that is one of the inputs" in err
    assert photo.read_bytes() == before


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_out_naming_a_file_facecls_did_not_write_is_refused(
    command: str, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = _photo(tmp_path / "a.png", 1)
    notes = tmp_path / "notes.safetensors" if command == "embed" else tmp_path / "notes.csv"
    notes.write_text("the user's own file\n")
    assert main([command, str(bundle), str(photo), "--out", str(notes)]) == 2
    assert f"--out {notes}: exists and is not a facecls" in _one_error(capsys)
    assert notes.read_text() == "the user's own file\n"


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_an_earlier_output_of_the_same_kind_is_replaced(
    command: str, bundle: Path, tmp_path: Path
) -> None:
    photo = _photo(tmp_path / "a.png", 1)
    out = tmp_path / ("e.safetensors" if command == "embed" else "p.csv")
    for _ in range(2):
        assert main(["--quiet", command, str(bundle), str(photo), "--out", str(out)]) == 0


def _clip(path: Path) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (48, 48))
    for seed in range(4):
        pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        writer.write(pixels)
    writer.release()
    return path


@pytest.mark.parametrize("option", ["--annotate", "--out"])
def test_video_outputs_never_replace_the_video(
    option: str, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clip = _clip(tmp_path / "v.avi")
    before = clip.read_bytes()
    args = ["predict", str(bundle), "--video", str(clip), "--out", str(tmp_path / "v.csv")]
    assert main([*args, option, str(clip)]) == 2
    assert f"{option} {clip}: that is one of the inputs" in _one_error(capsys)
    assert clip.read_bytes() == before


def test_an_annotated_video_is_replaced_only_when_facecls_wrote_it(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clip = _clip(tmp_path / "v.avi")
    drawn = tmp_path / "drawn.avi"
    args = [
        "--quiet",
        "predict",
        str(bundle),
        "--video",
        str(clip),
        "--out",
        str(tmp_path / "v.csv"),
    ]
    for _ in range(2):  # the second run replaces the first run's video
        assert main([*args, "--annotate", str(drawn)]) == 0
    mine = _clip(tmp_path / "mine.avi")  # a video of the user's own
    before = mine.read_bytes()
    assert main([*args, "--annotate", str(mine)]) == 2
    assert f"--annotate {mine}: exists and is not a facecls annotated video" in _one_error(capsys)
    assert mine.read_bytes() == before


def test_enroll_never_writes_into_a_folder_of_other_files(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from facecls.bundle import write_centroids

    model = tmp_path / "model"  # a copy with trained centroids, so enroll gets as far as writing
    shutil.copytree(bundle, model)
    write_centroids(model, {"trained": np.eye(3, 300, dtype=np.float32)})
    people = tmp_path / "people"
    _photo(people / "dora" / "1.png", 1)
    folder = tmp_path / "mine"  # a folder of the user's own, not a bundle
    (folder / "notes.txt").parent.mkdir()
    (folder / "notes.txt").write_text("the user's own file\n")
    before = _digests(folder)
    assert main(["enroll", str(model), "--data", str(people), "--out", str(folder)]) == 2
    assert f"--out {folder}: this folder holds files and is not a facecls" in _one_error(capsys)
    assert _digests(folder) == before
