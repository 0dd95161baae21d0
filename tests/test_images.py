"""Contracts of the one image loader: every mode to RGB, EXIF upright, bad files refused with reasons."""

from __future__ import annotations

import hashlib
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, is_junk, load_rgb


def _save(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, **params)
    return path


def _mode(path: Path) -> str:
    """The mode Pillow opens a file in, to prove a test exercises the conversion it names."""
    with Image.open(path) as image:
        return image.mode


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """Write a PNG whose IHDR declares width x height, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    # 8-bit RGB, deflate, adaptive filtering, no interlace.
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# ---- modes -------------------------------------------------------------------------------------


def test_rgb_roundtrip_is_exact_for_png(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    out = load_rgb(_save(Image.fromarray(pixels), tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, pixels)
    assert out.flags.writeable


def test_grey_l_is_replicated_to_three_channels(tmp_path: Path) -> None:
    grey = np.array([[0, 77], [200, 255]], dtype=np.uint8)
    out = load_rgb(_save(Image.fromarray(grey), tmp_path / "g.png"))
    assert out.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


def test_bilevel_1_maps_to_black_and_white(tmp_path: Path) -> None:
    image = Image.new("1", (4, 2), 0)
    image.putpixel((1, 0), 1)
    path = _save(image, tmp_path / "b.png")
    assert _mode(path) == "1"
    out = load_rgb(path)
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 0]


def test_palette_without_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putdata([0, 1, 1])
    path = _save(image, tmp_path / "p.png")
    assert _mode(path) == "P"
    out = load_rgb(path)
    assert out[0].tolist() == [[10, 20, 30], [200, 100, 50], [200, 100, 50]]


def test_palette_with_transparency_is_composited_over_grey(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putdata([0, 1])
    path = _save(image, tmp_path / "pt.png", transparency=0)  # index 0 fully transparent
    assert _mode(path) == "P"
    out = load_rgb(path)
    assert out[0, 0].tolist() == [128, 128, 128]
    assert out[0, 1].tolist() == [0, 0, 255]


def test_rgba_is_composited_over_mid_grey(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 128), (0, 0, 0, 0), (10, 20, 30, 255)])
    out = load_rgb(_save(image, tmp_path / "rgba.png")).astype(int)
    # alpha 128/255 of red over (128,128,128): 255*a + 128*(1-a) = 191.75, 128*(1-a) = 63.75.
    np.testing.assert_allclose(out[0, 0], [191.75, 63.75, 63.75], atol=1)
    assert out[0, 1].tolist() == [128, 128, 128]
    assert out[0, 2].tolist() == [10, 20, 30]


def test_grey_with_alpha_la(tmp_path: Path) -> None:
    image = Image.new("LA", (1, 1), (0, 0))  # black, fully transparent
    assert load_rgb(_save(image, tmp_path / "la.png"))[0, 0].tolist() == [128, 128, 128]


def test_cmyk_is_converted_to_rgb(tmp_path: Path) -> None:
    image = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(image, tmp_path / "c.tiff")
    assert _mode(path) == "CMYK"
    np.testing.assert_array_equal(load_rgb(path)[0, 0], [255, 0, 0])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    out = load_rgb(path).astype(int)
    np.testing.assert_allclose(out[8, 8], [255, 0, 0], atol=6)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[65535, 32896], [0, 257]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "16.png")
    assert _mode(path) == "I;16"
    out = load_rgb(path)
    np.testing.assert_array_equal(out[..., 0], [[255, 128], [0, 1]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_sixteen_bit_big_endian_tiff(tmp_path: Path) -> None:
    values = np.array([[65535, 32896, 0]], dtype=">u2")
    image = Image.frombytes("I;16B", (3, 1), values.tobytes())
    path = _save(image, tmp_path / "16b.tif")
    assert _mode(path) == "I;16B"
    np.testing.assert_array_equal(load_rgb(path)[0, :, 1], [255, 128, 0])


def test_float_image_is_scaled_by_its_range(tmp_path: Path) -> None:
    values = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    path = _save(Image.fromarray(values), tmp_path / "f.tif")
    assert _mode(path) == "F"
    np.testing.assert_array_equal(load_rgb(path)[0, :, 0], [0, 128, 255])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # 40 wide x 20 tall: left half red, right half blue. Orientation 6 = "rotate 90 degrees
    # clockwise to display", so the upright picture is 20 wide x 40 tall with red on top.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.fromarray(pixels), tmp_path / "rot.jpg", exif=exif, quality=95)
    with Image.open(path) as stored:
        assert stored.size == (40, 20)  # stored sideways
    out = load_rgb(path).astype(int)
    assert out.shape == (40, 20, 3)
    np.testing.assert_allclose(out[5, 10], [255, 0, 0], atol=12)
    np.testing.assert_allclose(out[34, 10], [0, 0, 255], atol=12)


def test_exif_orientation_8_rotates_the_other_way(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display: red ends at the bottom
    out = load_rgb(_save(Image.fromarray(pixels), tmp_path / "r8.jpg", exif=exif, quality=95))
    assert out.shape == (40, 20, 3)
    np.testing.assert_allclose(out[34, 10].astype(int), [255, 0, 0], atol=12)


def test_resize_takes_the_centre_square(tmp_path: Path) -> None:
    # 30 wide x 10 tall: outer thirds black, centre third white -> the centre square is all white.
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, 10:20] = 255
    out = load_rgb(_save(Image.fromarray(pixels), tmp_path / "wide.png"), size=6)
    assert out.shape == (6, 6, 3)
    assert out.min() == 255


def test_resize_of_a_large_jpeg_gives_the_requested_size(tmp_path: Path) -> None:
    image = Image.new("RGB", (800, 600), (30, 60, 90))
    out = load_rgb(_save(image, tmp_path / "big.jpg", quality=95), size=64)
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out[32, 32].astype(int), [30, 60, 90], atol=4)


def test_size_must_be_positive(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError):
        load_rgb(path, size=0)


def test_file_is_not_modified(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.new("RGB", (8, 4)), tmp_path / "keep.jpg", exif=exif)
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    load_rgb(path, size=4)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


# ---- bad files -------------------------------------------------------------------------------


def test_truncated_jpeg(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    whole = _save(Image.fromarray(noise), tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt") as caught:
        load_rgb(path)
    assert caught.value.path == path


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(caught.value) == "empty file (0 bytes)"


def test_text_renamed_to_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"^not an image \(cannot identify format\)$"):
        load_rgb(path)


def test_png_saved_as_jpg_still_loads(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (3, 3), (1, 2, 3)), tmp_path / "mislabelled.jpg", format="PNG")
    assert load_rgb(path)[0, 0].tolist() == [1, 2, 3]


def test_unsupported_extension(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "face.xyz", format="PNG")
    with pytest.raises(ImageError, match=r"^unsupported file type: \.xyz$"):
        load_rgb(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="^no such file or folder$"):
        load_rgb(tmp_path / "gone.png")


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageError, match=r"^image too large: .*64,000,000-pixel limit$"):
        load_rgb(path)


def test_bomb_refused_by_our_own_check_when_pillow_limit_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(caught.value) == (
        "image too large: 30000x30000 pixels exceeds the 64,000,000-pixel limit"
    )


def test_just_over_our_limit_but_under_pillows(tmp_path: Path) -> None:
    width, height = 8001, 8000
    assert MAX_PIXELS < width * height < Image.MAX_IMAGE_PIXELS
    path = _png_header_only(tmp_path / "big.png", width, height)
    with pytest.raises(ImageError, match=r"^image too large: 8001x8000 pixels"):
        load_rgb(path)


def test_pillow_bomb_warning_becomes_image_error(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "warn.png", 10000, 10000)  # between Pillow's two limits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="image too large"):
            load_rgb(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="image too large"):
            load_rgb(path)


# ---- junk --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [".DS_Store", "Thumbs.db", "thumbs.db", "desktop.ini", "__MACOSX", ".ipynb_checkpoints",
     "._face.jpg", ".hidden.png"],
)  # fmt: skip
def test_junk_names(name: str) -> None:
    assert is_junk(Path("people/alice") / name)


@pytest.mark.parametrize("name", ["face.jpg", "Alice_Smith", "img.01.png", "MACOSX", "_face.jpg"])
def test_real_names_are_not_junk(name: str) -> None:
    assert not is_junk(Path("people") / name)


def test_only_the_final_name_counts() -> None:
    assert not is_junk(Path("/home/u/.local/share/faces/alice/1.jpg"))


def test_extensions_are_lower_case_with_dot() -> None:
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)
    assert {".jpg", ".png", ".pgm", ".tiff"} <= IMAGE_EXTENSIONS
