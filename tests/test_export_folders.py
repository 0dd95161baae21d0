"""export-folders: one folder per person that facecls itself reads back as a data source, names
made safe for file systems yet kept in people.csv, and nothing of the user's overwritten."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.data.sources import scan_folder
from facecls.library.export import ExportFace, export_folders, folder_names, safe_folder


def _photo(path: Path, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> Path:
    pixels = np.full((120, 160, 3), 30, dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = colour
    Image.fromarray(pixels).save(path, quality=95)
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Ada Lovelace", "Ada Lovelace"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ('a/b\\c:d*e?f"g<h>i|j', "a_b_c_d_e_f_g_h_i_j"),
        ("  .hidden. ", "hidden"),
        ("CON", "CON_"),
        ("line\nbreak\x00", "line_break_"),
        ("...", "_"),
    ],
)
def test_safe_folder(name: str, expected: str) -> None:
    assert safe_folder(name) == expected


def test_folder_names_are_unique_ignoring_case_and_short() -> None:
    folders = folder_names(["Ada", "ada", "a/b", "a_b", "李" * 300])
    assert folders["Ada"] == "Ada" and folders["ada"] == "ada (2)"
    assert {folders["a/b"], folders["a_b"]} == {"a_b", "a_b (2)"}
    assert len(folders["李" * 300].encode()) <= 120
    assert len({f.casefold() for f in folders.values()}) == 5


def test_export_layout_is_a_facecls_source(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    group = _photo(photos / "group.jpg", (200, 40, 40), (20, 30, 60, 80))
    solo = _photo(photos / "solo.jpg", (40, 40, 200), (90, 20, 140, 90))
    faces = [
        ExportFace(1, "Ada Lovelace", group, (20, 30, 60, 80)),
        ExportFace(2, "Grace/Hopper", group, (100, 10, 130, 50)),
        ExportFace(3, "Grace/Hopper", solo, (90, 20, 140, 90)),
    ]
    out = tmp_path / "out"
    counts = export_folders(faces, out, size=64, log=lambda _m: None)
    assert counts == {"people": 2, "faces": 3, "skipped": 0}
    scan = scan_folder(out)
    assert sorted((r.identity, Path(r.relpath).name) for r in scan.refs) == [
        ("Ada Lovelace", "group-1.jpg"), ("Grace_Hopper", "group-2.jpg"),
        ("Grace_Hopper", "solo-3.jpg"),
    ]  # fmt: skip
    with (out / "people.csv").open(newline="") as f:
        people = {row["folder"]: row["name"] for row in csv.DictReader(f)}
    assert people == {"Ada Lovelace": "Ada Lovelace", "Grace_Hopper": "Grace/Hopper"}
    cut = np.asarray(Image.open(out / "Ada Lovelace" / "group-1.jpg"))
    assert cut.shape == (64, 64, 3)
    centre = cut[24:40, 24:40].reshape(-1, 3).mean(axis=0)
    assert centre[0] > 150 and centre[2] < 90  # the face (red) is in the middle
    again = export_folders(faces[:1], out, size=64, log=lambda _m: None)  # an export: replaced
    assert again["faces"] == 1 and not (out / "Grace_Hopper").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_folder_of_the_users_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    photo = _photo(tmp_path / "p.jpg", (200, 0, 0), (10, 10, 50, 50))
    with pytest.raises(ValueError, match="not an earlier facecls export"):
        export_folders([ExportFace(1, "Ada", photo, (10, 10, 50, 50))], mine)
    assert (mine / "notes.txt").read_text() == "keep"


def test_an_unreadable_photo_is_listed_not_fatal(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    good = _photo(tmp_path / "good.jpg", (200, 0, 0), (10, 10, 50, 50))
    said: list[str] = []
    counts = export_folders(
        [ExportFace(1, "Ada", bad, (1, 1, 9, 9)), ExportFace(2, "Ada", good, (10, 10, 50, 50))],
        tmp_path / "out", size=32, log=said.append,
    )  # fmt: skip
    assert counts == {"people": 1, "faces": 1, "skipped": 1}
    assert any("bad.jpg" in line for line in said)
