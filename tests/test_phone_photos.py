"""Phone photos: HEIC/HEIF (pillow-heif) and AVIF (Pillow) read wherever images are read, upright
as the camera's orientation tag says. The HEIC files are real ones, written by pillow-heif."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from facecls.config import DataConfig
from facecls.data.dataset import load_dataset
from facecls.data.images import IMAGE_EXTENSIONS, ImageError, decode_bytes, image_formats, load_rgb
from facecls.data.sources import scan_folder
from facecls.service.uploads import decode_upload

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _sideways() -> Image.Image:
    """60 wide x 40 tall as stored: left half red, right half blue, a green top band."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30], pixels[:, 30:], pixels[:6] = RED, BLUE, GREEN
    return Image.fromarray(pixels)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _heic(path: Path, orientation: int = 6) -> Path:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    _sideways().save(path, format="HEIF", exif=_exif(orientation), quality=95)
    return path


def _assert_upright_for_orientation_6(rgb: np.ndarray) -> None:
    # Orientation 6: rotate 90 degrees clockwise to display. The upright photo is 40 wide and
    # 60 tall: red (the stored left) on top, blue below, the green band (stored top) on the right.
    assert rgb.shape == (60, 40, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[10, 10].astype(int), RED, atol=16)
    np.testing.assert_allclose(rgb[50, 10].astype(int), BLUE, atol=16)
    np.testing.assert_allclose(rgb[30, 38].astype(int), GREEN, atol=16)


def test_a_real_heic_photo_loads_upright(tmp_path: Path) -> None:
    path = _heic(tmp_path / "IMG_0001.HEIC")
    assert path.read_bytes()[4:12] == b"ftypheic"  # a real HEIF container, HEVC-coded
    assert "HEIF" in image_formats()
    _assert_upright_for_orientation_6(load_rgb(path))
    face = load_rgb(path, size=32)  # the centre square, resized, as training cuts it
    assert face.shape == (32, 32, 3)
    # The same bytes as an upload (the service) decode alike.
    _assert_upright_for_orientation_6(decode_bytes(path.read_bytes(), "IMG_0001.HEIC"))
    _assert_upright_for_orientation_6(decode_upload(path.read_bytes(), "IMG_0001.HEIC"))
    # Upright without the tag too: orientation 1 keeps the stored layout.
    plain = load_rgb(_heic(tmp_path / "plain.heif", orientation=1))
    assert plain.shape == (40, 60, 3)
    np.testing.assert_allclose(plain[20, 10].astype(int), RED, atol=16)


def test_heic_photos_are_found_in_a_folder_of_people(tmp_path: Path) -> None:
    assert {".heic", ".heif", ".avif"} <= IMAGE_EXTENSIONS
    for person in ("ann", "bob"):
        (tmp_path / person).mkdir()
        for i in range(2):
            _heic(tmp_path / person / f"IMG_{i}.heic")
    scan = scan_folder(tmp_path)
    assert sorted(ref.path.name for ref in scan.refs) == ["IMG_0.heic"] * 2 + ["IMG_1.heic"] * 2
    assert not scan.skipped
    # Training's decode step reads them: every photo decoded, none skipped.
    dataset = load_dataset(
        DataConfig(source=str(tmp_path), image_size=24, min_images=1), log=lambda _: None
    )
    assert tuple(dataset.images.shape) == (4, 3, 24, 24)


def test_avif_where_pillow_reads_it_and_a_clear_reason_where_not(tmp_path: Path) -> None:
    path = tmp_path / "photo.avif"
    if features.check("avif"):
        _sideways().save(path, format="AVIF", exif=_exif(6), quality=95)
        _assert_upright_for_orientation_6(load_rgb(path))
        assert "AVIF" in image_formats()
    else:  # an older Pillow: the file is refused with the reason, not as "not an image"
        path.write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(64))
        with pytest.raises(ImageError, match="AVIF needs Pillow 11.3"):
            load_rgb(path)


def test_a_renamed_heic_is_still_read_by_its_content(tmp_path: Path) -> None:
    heic = _heic(tmp_path / "a.heic")
    renamed = tmp_path / "a.jpg"
    renamed.write_bytes(heic.read_bytes())
    _assert_upright_for_orientation_6(load_rgb(renamed))
    with pytest.raises(ImageError, match="not an image"):
        decode_bytes(io.BytesIO(b"ftypheic but not really").getvalue(), "x.heic")
