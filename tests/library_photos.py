"""A small photo collection for the face library's tests, built from LFW faces.

Faces from LFW photos known to hold exactly one face are pasted into larger photos; the
collection holds single-face photos in nested folders, a group photo, a PNG, a byte-for-byte
copy, a zip archive, a broken JPEG and a file that is no photo. ``PASTED`` says where each face
went, so tests check the index against where the faces really are.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import LFW_ARCHIVE

ONE_FACE = ("AJ_Cook_0001", "Aaron_Eckhart_0001", "Aaron_Peirsol_0001", "Aaron_Sorkin_0001")


def lfw_faces() -> list[Image.Image]:
    """The :data:`ONE_FACE` photos (250 x 250 px, the face about 110 px in the middle)."""
    wanted = {f"{n.rsplit('_', 1)[0]}/{n}.jpg": n for n in ONE_FACE}
    found: dict[str, Image.Image] = {}
    with tarfile.open(LFW_ARCHIVE, "r:gz") as archive:
        for member in archive:
            name = wanted.get(member.name.split("/", 1)[-1])
            if name is not None:
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                found[name] = Image.open(io.BytesIO(data)).convert("RGB")
            if len(found) == len(wanted):
                break
    return [found[n] for n in ONE_FACE]


def canvas(width: int, height: int, seed: int) -> Image.Image:
    """A smooth coloured background with a little sensor noise (no faces in it)."""
    rng = np.random.default_rng(seed)
    grid = (rng.random((3, 4, 3)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
    noisy = smooth.astype(np.int16) + rng.integers(-3, 4, smooth.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def paste(photo: Image.Image, face: Image.Image, x: int, y: int, scale: float) -> tuple:
    """Paste an LFW photo at ``(x, y)`` scaled by ``scale``; answers its face's centre."""
    side = round(250 * scale)
    photo.paste(face.resize((side, side), Image.Resampling.BICUBIC), (x, y))
    return (x + side / 2, y + side / 2)


def write_photo(path: Path, width: int, height: int, seed: int,
                faces: list[tuple[Image.Image, int, int, float]]) -> list[tuple]:  # fmt: skip
    """A photo with ``faces`` pasted; answers their centres."""
    photo = canvas(width, height, seed)
    centres = [paste(photo, face, x, y, s) for face, x, y, s in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    photo.save(path, quality=92)
    return centres


def build_collection(root: Path) -> dict[str, list[tuple]]:
    """Write the collection under ``root``; answers each photo's name -> pasted face centres
    (names as the library keeps them; the copy and the broken file have none listed)."""
    a, b, c, d = lfw_faces()
    pasted: dict[str, list[tuple]] = {}

    def put(relative: str, *args: object) -> None:
        pasted[str(root / relative)] = write_photo(root / relative, *args)  # type: ignore[arg-type]

    put("trip/day1/beach.jpg", 900, 700, 1, [(a, 300, 200, 1.2)])
    put("trip/day1/hotel.jpg", 800, 600, 2, [(b, 80, 120, 1.0)])
    put("trip/day2/dinner.jpg", 1400, 800, 3, [(a, 60, 250, 1.0), (c, 520, 120, 1.6),
                                               (d, 1050, 380, 0.8)])  # fmt: skip
    put("phone/IMG_0001.png", 1600, 1200, 4, [(d, 700, 400, 1.5)])
    put("phone/IMG_0002.jpg", 640, 640, 5, [])  # a landscape: no face
    copy = root / "trip" / "copy of beach.jpg"
    copy.write_bytes((root / "trip/day1/beach.jpg").read_bytes())
    pasted[str(copy)] = pasted[str(root / "trip/day1/beach.jpg")]
    inner = canvas(700, 500, 6)
    paste(inner, b, 200, 100, 1.1)
    packed = io.BytesIO()
    inner.save(packed, "JPEG", quality=92)
    with zipfile.ZipFile(root / "old.zip", "w") as archive:
        archive.writestr("scans/1998.jpg", packed.getvalue())
    pasted[str(root / "old.zip") + "/scans/1998.jpg"] = [(200 + 137.5, 100 + 137.5)]
    (root / "broken.jpg").write_bytes(packed.getvalue()[:300])  # a truncated JPEG
    (root / "notes.txt").write_text("not a photo\n")
    return pasted
