"""XMP sidecars: well-formed, names round-trip whatever they hold, and each region lies on its
face in the stored pixels for all eight Exif orientations (MWG: regions apply to the stored
image)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from facecls.library.xmp import FaceRegion, sidecar_path, write_sidecar

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "mwg-rs": "http://www.metadataworkinggroup.com/schemas/regions/",
    "stArea": "http://ns.adobe.com/xmp/sType/Area#",
    "stDim": "http://ns.adobe.com/xap/1.0/sType/Dimensions#",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
}
# What undoes Pillow's exif_transpose for each orientation (turns a displayed image into the
# stored one).
UNDO = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _regions(sidecar: Path) -> tuple[tuple[int, int], list[dict]]:
    root = ET.parse(sidecar).getroot()  # raises on a packet that is not well-formed XML
    regions = root.find(".//mwg-rs:Regions", NS)
    dims = regions.find("mwg-rs:AppliedToDimensions", NS)
    size = (int(dims.find("stDim:w", NS).text), int(dims.find("stDim:h", NS).text))
    found = []
    for li in regions.findall("mwg-rs:RegionList/rdf:Bag/rdf:li", NS):
        area = li.find("mwg-rs:Area", NS)
        found.append(
            {
                "name": li.find("mwg-rs:Name", NS).text,
                "type": li.find("mwg-rs:Type", NS).text,
                **{k: float(area.find(f"stArea:{k}", NS).text) for k in "xywh"},
                "unit": area.find("stArea:unit", NS).text,
            }
        )
    return size, found


@pytest.mark.parametrize("orientation", range(1, 9))
def test_regions_lie_on_the_faces_in_the_stored_pixels(tmp_path: Path, orientation: int) -> None:
    shown = np.zeros((90, 140, 3), dtype=np.uint8)  # the photo as displayed: 140 x 90
    boxes = {"Ada": (10, 20, 40, 60), "Grace": (90, 5, 130, 35)}
    colours = {"Ada": (255, 0, 0), "Grace": (0, 0, 255)}
    for name, (x1, y1, x2, y2) in boxes.items():
        shown[y1:y2, x1:x2] = colours[name]
    image = Image.fromarray(shown)
    stored = image if UNDO[orientation] is None else image.transpose(UNDO[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = tmp_path / "photo.png"
    stored.save(photo, exif=exif)
    with Image.open(photo) as check:  # the construction is what a viewer shows
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(check)), shown)
    regions = [FaceRegion(name, box) for name, box in boxes.items()]
    assert write_sidecar(photo, regions, sidecar_path(photo)) is None
    size, found = _regions(tmp_path / "photo.png.xmp")
    assert size == stored.size
    pixels = np.asarray(Image.open(photo).convert("RGB"))  # stored, orientation not applied
    width, height = size
    for region in found:
        assert region["type"] == "Face" and region["unit"] == "normalized"
        x1 = round((region["x"] - region["w"] / 2) * width)
        y1 = round((region["y"] - region["h"] / 2) * height)
        x2 = round((region["x"] + region["w"] / 2) * width)
        y2 = round((region["y"] + region["h"] / 2) * height)
        colour = colours[region["name"]]
        assert (pixels[y1:y2, x1:x2] == colour).all()  # the whole region is the face
        painted = (pixels == colour).all(axis=2)
        assert painted.sum() == (x2 - x1) * (y2 - y1)  # and the whole face is the region


def test_any_name_round_trips_and_the_photo_is_untouched(tmp_path: Path) -> None:
    photo = tmp_path / "group.jpg"
    Image.new("RGB", (64, 48), (90, 90, 90)).save(photo)
    before = photo.read_bytes()
    names = ['<b>Ada</b> & "Bob"', "Zoë Ørsted-李小龍 👩‍🔬", "]]> ' <!-- x -->"]
    regions = [FaceRegion(n, (i * 10, 5, i * 10 + 8, 15)) for i, n in enumerate(names)]
    assert write_sidecar(photo, regions, sidecar_path(photo)) is None
    _, found = _regions(sidecar_path(photo))
    assert [r["name"] for r in found] == names
    people = (
        ET.parse(sidecar_path(photo)).getroot().findall(".//Iptc4xmpExt:PersonInImage//rdf:li", NS)
    )
    assert sorted(li.text for li in people) == sorted(names)
    assert photo.read_bytes() == before


def test_a_sidecar_someone_else_wrote_is_left_alone(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (32, 32)).save(photo)
    theirs = sidecar_path(photo)
    theirs.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'>darktable history</x:xmpmeta>")
    reason = write_sidecar(photo, [FaceRegion("Ada", (1, 1, 9, 9))], theirs)
    assert reason is not None and "left as it is" in reason
    assert "darktable history" in theirs.read_text()
    ours = sidecar_path(photo, tmp_path / "out", tmp_path)
    assert ours == tmp_path / "out" / "p.jpg.xmp"
    assert write_sidecar(photo, [FaceRegion("Ada", (1, 1, 9, 9))], ours) is None
    assert write_sidecar(photo, [FaceRegion("Grace", (1, 1, 9, 9))], ours) is None  # ours: replaced
    assert _regions(ours)[1][0]["name"] == "Grace"


def test_a_photo_changed_since_indexing_gets_no_sidecar(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (64, 48)).save(photo)
    regions = [FaceRegion("Ada", (1, 1, 9, 9))]
    reason = write_sidecar(photo, regions, sidecar_path(photo), shown=(48, 64))
    assert reason is not None and "changed" in reason and not sidecar_path(photo).exists()
    assert write_sidecar(photo, regions, sidecar_path(photo), shown=(64, 48)) is None
