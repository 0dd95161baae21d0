"""Photos with their answers drawn on them: a box per face, the name above it (below it, or
further off, where another label or face is in the way), or ``unknown`` with the best guess
(``unknown — closest: Tony_Blair 0.95 < 0.956``).

``facecls predict RUN photos/ --annotate out/`` writes one JPEG per photo into ``out/``, never
beside the user's photos; the photo itself is only read. A file already in ``out/`` is never
written over unless it is an annotated photo facecls wrote before (marked by a JPEG comment) and
not one of the inputs: the new copy takes the next free name (``photo-2.jpg``) instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facecls.atomic import atomic_path, file_in_the_way
from facecls.colours import TEXT, colour_of
from facecls.data.images import ImageError, load_rgb
from facecls.inference.faces import Prediction
from facecls.inference.outputs import same_file

# The JPEG comment of every annotated copy: how a later run knows it may replace the file.
MARK = b"facecls predict --annotate"


def is_annotation(path: Path) -> bool:
    """Whether ``path`` is an annotated copy facecls wrote (a JPEG carrying :data:`MARK`)."""
    try:
        with Image.open(path) as image:
            return image.format == "JPEG" and image.info.get("comment") == MARK
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


Rect = tuple[float, float, float, float]  # left, top, right, bottom


def _overlap(a: Rect, b: Rect) -> float:
    """The area two rectangles share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(
    boxes: Sequence[tuple[float, float, float, float]],
    sizes: Sequence[tuple[float, float]],
    image_size: tuple[int, int],
) -> list[tuple[float, float]]:
    """The top-left corner of each face's label (``sizes``: its width and height with padding)
    so that labels cover no other label where there is room, and as little of another face as
    they can.

    Each label tries, in turn: above its box, below it, inside its top edge, then the same
    right-aligned to the box, then further above or below; the first spot that covers nothing
    is taken, else the one covering least (another label weighs ten times a face). Labels stay
    inside the picture (one wider than it starts at its left edge). Faces are placed from the
    top of the photo down, so a label above a face is seldom pushed off by a lower one."""
    width, height = image_size
    faces: list[Rect] = [(x, y, x + w, y + h) for x, y, w, h in boxes]
    placed: list[tuple[float, float]] = [(0.0, 0.0)] * len(boxes)
    labels: list[Rect] = []
    for i in sorted(range(len(boxes)), key=lambda k: (boxes[k][1], boxes[k][0])):
        x, y, w, h = boxes[i]
        tw, th = sizes[i]
        spots: list[tuple[float, float]] = []
        for tx in (x, x + w - tw):
            spots += [(tx, y - th), (tx, y + h), (tx, y)]
        for step in range(1, 4):
            spots += [(x, y - th * (step + 1)), (x, y + h + th * step)]
        best_cost, best = float("inf"), (0.0, 0.0)
        for tx, ty in spots:
            tx = max(0.0, min(tx, width - tw))
            ty = max(0.0, min(ty, height - th))
            rect = (tx, ty, tx + tw, ty + th)
            cost = 0.0  # summed in this order by the page's placeLabels too: the same spots
            for other in labels:
                cost += 10 * _overlap(rect, other)
            for j, face in enumerate(faces):
                if j != i:
                    cost += _overlap(rect, face)
            if cost < best_cost:
                best_cost, best = cost, (tx, ty)
            if cost == 0:
                break
        placed[i] = best
        tx, ty = best
        labels.append((tx, ty, tx + tw, ty + th))
    return placed


def draw_answers(photo: np.ndarray, predictions: Sequence[Prediction]) -> Image.Image:
    """The RGB photo with a box and a label for every prediction that has a box."""
    image = Image.fromarray(photo)
    draw = ImageDraw.Draw(image)
    side = max(image.size)
    width = max(2, side // 250)
    font = ImageFont.load_default(size=max(12, side // 40))
    shown = [p for p in predictions if p.box is not None]
    texts, sizes, offsets = [], [], []
    for p in shown:
        if p.decision == "known" and np.isfinite(p.score):
            label = f"{p.identity} {p.score:.2f}"
        else:  # "unknown - closest: name score < threshold" (the default font has no em dash)
            label = p.label(dash="-")
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        texts.append(label)
        sizes.append((right - left + 2 * width, bottom - top + 2 * width))
        offsets.append((left, top))
    for p in shown:  # every box first, so no label is drawn under a later box's outline
        x, y, w, h = p.box
        draw.rectangle([x, y, x + w, y + h], outline=colour_of(p.decision), width=width)
    spots = place_labels([p.box for p in shown], sizes, image.size)
    for p, label, (lw, lh), (left, top), (tx, ty) in zip(
        shown, texts, sizes, offsets, spots, strict=True
    ):
        # PIL fills both end pixels: the last one inside the placed size
        draw.rectangle([tx, ty, tx + lw - 1, ty + lh - 1], fill=colour_of(p.decision))
        draw.text((tx + width - left, ty + width - top), label, fill=TEXT, font=font)
    return image


class Annotator:
    """Writes annotated copies of photos into one folder, each name used once, never over a
    file the run did not write (see the module doc)."""

    def __init__(self, folder: Path, inputs: Sequence[str | Path] = ()) -> None:
        folder = Path(folder)
        for item in inputs:
            if Path(item).is_dir() and Path(item).resolve() == folder.resolve():
                raise ValueError(
                    f"--annotate {folder}: that is a folder of input photos; choose another folder "
                    "so nothing is written among your photos"
                )
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--annotate {folder}: exists and is not a folder")
        blocking = file_in_the_way(folder)
        if blocking is not None:
            raise ValueError(f"--annotate {folder}: {blocking} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._inputs = [Path(item) for item in inputs if not Path(item).is_dir()]
        self._used: set[str] = set()

    def _free(self, target: Path) -> bool:
        """Whether ``target`` may be written: new, or an earlier annotation that is no input."""
        if target.name in self._used:
            return False
        if not target.exists() and not target.is_symlink():
            return True
        return is_annotation(target) and not any(same_file(target, i) for i in self._inputs)

    def _name(self, path: Path) -> Path:
        stem, n = path.stem, 1
        target = self.folder / f"{stem}.jpg"
        while not self._free(target):
            n += 1
            target = self.folder / f"{stem}-{n}.jpg"
        self._used.add(target.name)
        return target

    def write(self, path: str | Path, predictions: Sequence[Prediction]) -> Path | None:
        """Draw the predictions of one photo; ``None`` when the photo cannot be read.

        Raises:
            facecls.atomic.WriteError: the disk of the folder is full.
        """
        try:
            photo = load_rgb(Path(path))
        except ImageError:
            return None
        target = self._name(Path(path))
        with atomic_path(target, photo.nbytes // 4) as tmp:  # a JPEG is rarely bigger
            draw_answers(photo, predictions).save(tmp, format="JPEG", quality=92, comment=MARK)
        return target
