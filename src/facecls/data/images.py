"""Decode one face photo into a uint8 RGB array: the only image loader in facecls.

Training, the decode cache and prediction all call :func:`load_rgb`, so a photo is turned into pixels
the same way everywhere: EXIF orientation applied, every Pillow mode mapped to RGB, transparency
composited over a fixed grey, optional centre-square resize. Phone photos in HEIC/HEIF are read
through pillow-heif (registered with Pillow on first use), AVIF through Pillow's own plugin where
the installed Pillow has one (11.3 and later). Files are opened read-only and never
modified; anything that cannot be decoded raises :class:`ImageError` with a short reason that the
data checks can list next to the file name.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
    | {".heic", ".heif", ".hif", ".avif"}
)
MAX_PIXELS: int = 64_000_000

# Pillow plugins allowed to parse a file. Content is sniffed, so a PNG saved as .jpg still loads,
# but exotic formats (EPS runs Ghostscript, for one) are never reached through a renamed file.
# (Multi-picture JPEGs, "MPO", come through the JPEG plugin.)
_PIL_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
# Grey that transparent pixels are composited over: neutral, so it biases no colour channel.
_BACKGROUND: tuple[int, int, int] = (128, 128, 128)
_SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "LA", "PA", "RGBa"})
_JUNK_NAMES: frozenset[str] = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx"})
# Pillow's bomb messages read "Image size (N pixels) exceeds limit of M pixels, ...".
_PILLOW_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# Errors Pillow raises for damaged data while decoding pixels.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


@functools.cache
def image_formats() -> tuple[str, ...]:
    """The Pillow formats facecls decodes: :data:`_PIL_FORMATS`, HEIF (pillow-heif, registered
    with Pillow on the first call) and AVIF when this Pillow was built with it."""
    from pillow_heif import register_heif_opener  # here: its import and registration cost 0.1 s

    register_heif_opener()  # also applies HEIF's own rotation, leaving EXIF orientation at 1
    return (*_PIL_FORMATS, "HEIF", *(("AVIF",) if features.check("avif") else ()))


class ImageError(Exception):
    """A file that cannot be used as an image.

    ``str(error)`` is the short human reason alone (for example ``"empty file (0 bytes)"``), so a
    caller can print ``f"{path}: {error}"`` without repeating the path.

    Attributes:
        reason: The short human reason.
        path: The offending file, when known.
    """

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


def is_junk(path: Path) -> bool:
    """Say whether a file or folder is operating-system clutter that scans silently skip.

    Only the final name is inspected, so callers walking a tree should prune junk folders (such as
    ``__MACOSX``) rather than test every file's ancestors; a dotted folder above the data root
    (``~/.local/...``) must not make the whole data set junk.

    Args:
        path: A file or folder path.

    Returns:
        True for hidden names (leading ``.``, which covers ``.DS_Store``, ``._*`` AppleDouble files
        and ``.ipynb_checkpoints``) and for ``Thumbs.db``, ``desktop.ini`` and ``__MACOSX``.
    """
    name = path.name
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def printable(text: str) -> str:
    """``text`` safe to print and write as UTF-8: bytes of a non-UTF-8 file name (kept by
    Python as surrogate escapes) are shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, before opening it, or ``None``.

    Catches what would otherwise stop a run or block it: a name that is not valid UTF-8, a
    dangling symlink, a symlink loop, a folder, a FIFO or device (opening a FIFO waits forever).
    """
    path = Path(path)
    if printable(path.name) != path.name:
        return "file name is not valid UTF-8 (rename the file)"
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink loop (the link points to itself)"
        if path.is_symlink():
            return f"dangling symlink (its target {printable(os.readlink(path))} does not exist)"
        if error.errno == errno.ENOENT:
            return "no such file or folder"
        return f"cannot read file ({error.strerror or error})"
    if stat.S_ISDIR(mode):
        return "a folder, not an image file"
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, socket or device)"
    return None


def load_rgb(path: Path, size: int | None = None, crop: float = 1.0) -> np.ndarray:
    """Decode one image file into RGB pixels.

    Args:
        path: The image file; opened read-only, never modified.
        size: If given, the centre square of the image is resized (bicubic) to ``size`` x ``size``.
        crop: With ``size``, keep only the centre square of side ``crop`` × the shorter side
            before resizing (1.0 keeps the largest square; 0.64 keeps LFW's central face).

    Returns:
        A writable uint8 array of shape (H, W, 3), or (size, size, 3) when ``size`` is given.

    Raises:
        ImageError: The file is missing, empty, of an unsupported type, not an image, too large,
            truncated or corrupt.
        ValueError: ``size`` is not a positive integer (a programming error, not a bad file).
    """
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], got {crop!r}")
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise ImageError(problem, path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ImageError(f"unsupported file type: {suffix or '(no extension)'}", path)
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)", path)
        with path.open("rb") as handle:
            return _decode(handle, path, size, crop)
    except OSError as error:
        # Missing file, permission denied, a folder named like an image...
        raise ImageError(f"cannot read file ({error.strerror or error})", path) from error


def rgb_of(image: Image.Image) -> np.ndarray:
    """An in-memory PIL image as :func:`load_rgb` decodes a file: upright by its EXIF
    orientation (a no-op once applied), 8-bit RGB ``(H, W, 3)``.

    Raises:
        ValueError: a colour mode that cannot be turned into RGB.
    """
    try:
        return np.array(_to_rgb(_apply_exif_orientation(image)), dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"unsupported colour mode: {image.mode}") from error


def decode_bytes(data: bytes, name: str = "upload", size: int | None = None) -> np.ndarray:
    """Decode an image held in memory (an upload) as :func:`load_rgb` decodes a file: the
    content decides the format, never the name (``name`` only labels errors)."""
    if not data:
        raise ImageError("empty file (0 bytes)", Path(name))
    return _decode(io.BytesIO(data), Path(name), size)


def decode_reduced(
    data: bytes, path: Path, reduction: Callable[[int, int], int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_reduced_image` as a uint8 ``(h, w, 3)`` array."""
    image, full = decode_reduced_image(data, path, reduction)
    return np.array(image, dtype=np.uint8), full


def decode_reduced_image(
    data: bytes, path: Path, reduction: Callable[[int, int], int]
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode a photo held in memory at a reduced size, as :func:`load_rgb` decodes it
    otherwise (EXIF orientation, colour modes, size limit).

    Args:
        data: the file's bytes.
        path: names the file in errors.
        reduction: ``(width, height)`` of the full, upright photo -> the factor ``r`` (a power
            of two) to shrink it by. A JPEG is decoded straight at about 1/r (libjpeg's draft
            mode: several times faster than a full decode); other formats are decoded whole
            and box-reduced.

    Returns:
        The RGB photo, upright, and the full upright ``(width, height)``.

    Raises:
        ImageError: as :func:`load_rgb`.
    """
    if not data:
        raise ImageError("empty file (0 bytes)", path)
    try:
        image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except UnidentifiedImageError as error:
        raise ImageError("not an image (cannot identify format)", path) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(_pillow_bomb_reason(error), path) from error
    except _DECODE_ERRORS as error:
        raise ImageError(f"truncated or corrupt image data ({error})", path) from error
    with image:
        _check_pixel_count(image, path)
        width, height = image.size
        try:
            turned = image.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientation: 90° turns
        except Exception:  # malformed EXIF: as _apply_exif_orientation, keep the pixels
            turned = False
        full = (height, width) if turned else (width, height)
        factor = max(1, int(reduction(*full)))
        if factor > 1 and image.format == "JPEG":
            image.draft(image.mode, (-(-width // factor), -(-height // factor)))
        try:
            image.load()
        except (*_DECODE_ERRORS, Image.DecompressionBombError) as error:
            raise ImageError(f"truncated or corrupt image data ({error})", path) from error
        image = _apply_exif_orientation(image)
        try:
            rgb = _to_rgb(image)
        except (ValueError, OSError) as error:
            raise ImageError(f"unsupported colour mode: {image.mode}", path) from error
    achieved = max(1, round(full[0] / max(rgb.width, 1)))
    if achieved < factor:  # not a JPEG, or the draft stopped short: box-reduce the rest
        rgb = rgb.reduce(factor // achieved)
    return rgb, full


def _decode(handle: BinaryIO, path: Path, size: int | None, crop: float = 1.0) -> np.ndarray:
    """Open, check, decode and convert the image in an already opened binary file."""
    try:
        image = Image.open(handle, formats=image_formats())
    except UnidentifiedImageError as error:
        if path.suffix.lower() == ".avif" and "AVIF" not in image_formats():
            raise ImageError("AVIF needs Pillow 11.3 or later built with AVIF", path) from error
        raise ImageError("not an image (cannot identify format)", path) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # The warning arrives as an exception only where warnings are errors (pytest -W error).
        raise ImageError(_pillow_bomb_reason(error), path) from error
    except _DECODE_ERRORS as error:
        raise ImageError(f"truncated or corrupt image data ({error})", path) from error

    with image:
        _check_pixel_count(image, path)
        if size is not None and image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while both sides stay >= size: big camera
            # photos decode several times faster and the centre crop below still has enough pixels.
            # With a crop the kept square must still reach ``size`` after drafting.
            drafted = int(np.ceil(size / crop))
            image.draft(None, (drafted, drafted))
        try:
            image.load()
        except (*_DECODE_ERRORS, Image.DecompressionBombError) as error:
            raise ImageError(f"truncated or corrupt image data ({error})", path) from error
        # Some formats only know their final size after load(); check again, it costs nothing.
        _check_pixel_count(image, path)
        image = _apply_exif_orientation(image)
        try:
            rgb = _to_rgb(image)
        except (ValueError, OSError) as error:
            raise ImageError(f"unsupported colour mode: {image.mode}", path) from error

    if size is not None:
        rgb = _resize_centre_square(rgb, size, crop)
    return np.array(rgb, dtype=np.uint8)


def _check_pixel_count(image: Image.Image, path: Path) -> None:
    """Refuse images over MAX_PIXELS, or over Pillow's own (warning) limit, before decoding."""
    width, height = image.size
    pixels = width * height
    # Pillow only warns above Image.MAX_IMAGE_PIXELS; we refuse instead. Reading the attribute
    # (never setting it) honours a limit the user lowered without touching global state.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    limit = MAX_PIXELS if pillow_limit is None else min(MAX_PIXELS, pillow_limit)
    if pixels > limit:
        raise ImageError(
            f"image too large: {width}x{height} pixels exceeds the {limit:,}-pixel limit", path
        )


def _pillow_bomb_reason(error: Exception) -> str:
    """Phrase Pillow's decompression-bomb error (raised before we see the size) like our own."""
    match = _PILLOW_BOMB_PIXELS.search(str(error))
    if match is None:
        return f"image too large ({error})"
    return f"image too large: {int(match.group(1)):,} pixels exceeds the {MAX_PIXELS:,}-pixel limit"


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says, so faces are upright as cameras show them."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Malformed EXIF is common in edited photos; the pixels themselves are still good, so keep
        # them as stored rather than refusing the photo.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Map any Pillow mode to 8-bit RGB."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_grey_to_uint8(image)).convert("RGB")
    if mode in _ALPHA_MODES or image.has_transparency_data:
        # Palette/grey/RGB images with a transparency key go through RGBA too.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGB


def _grey_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float greyscale to uint8 (H, W), keeping relative contrast.

    16-bit data is divided by 257 (65535 -> 255, 32896 -> 128) rather than clipped, which is what
    Pillow's own convert("L") would do and would turn most 16-bit photos white.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode == "F" or (image.mode == "I" and (values.min() < 0 or values.max() > 65535)):
        low, high = float(values.min()), float(values.max())
        # A flat image carries no contrast to keep; map it to black rather than divide by zero.
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    else:
        # I;16* and 'I' holding 16-bit samples (how older Pillow opened 16-bit PNGs).
        scaled = values / 257.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _resize_centre_square(image: Image.Image, size: int, crop: float = 1.0) -> Image.Image:
    """Resize the centred square of side ``crop`` × the shorter side to size x size (bicubic)."""
    width, height = image.size
    if (width, height) == (size, size) and crop == 1.0:
        return image
    side = max(1, round(min(width, height) * crop))
    left, top = (width - side) // 2, (height - side) // 2
    # Crop first: resize(box=...) would let the bicubic kernel reach pixels outside the square.
    square = image.crop((left, top, left + side, top + side))
    # reducing_gap makes large downscales fast (box-reduce first) with no visible loss.
    return square.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
