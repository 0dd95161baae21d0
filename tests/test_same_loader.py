"""Image modes reach every model as the expected RGB pixels, through one loader.

``tests/test_images.py`` checks ``load_rgb`` mode by mode; this checks that what training sees
(the decode cache built by ``load_dataset``) is exactly ``load_rgb``'s output for the same files.
``predict`` is held to the same contract: its entry in ``LOADERS`` is the uint8 batch that
``predict_files`` hands the model (``FaceModel.outputs``), captured by a stand-in model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecls.config import DataConfig
from facecls.data.dataset import load_dataset
from facecls.data.images import load_rgb

SIZE = 32
ORIENTATION = 0x0112


def _write_modes(root: Path) -> dict[str, tuple[int, int, int] | None]:
    """One file per mode under two identities → the RGB colour it must decode to (``None``:
    checked separately)."""
    a, b = root / "alice", root / "bob"
    a.mkdir(parents=True)
    b.mkdir()
    square = (SIZE, SIZE)
    Image.new("L", square, 77).save(a / "grey.png")
    palette = Image.new("P", square, 0)
    palette.putpalette([200, 30, 40] + [0] * 765)
    palette.save(a / "palette.png")
    Image.new("RGBA", square, (255, 0, 0, 0)).save(a / "transparent.png")
    Image.new("CMYK", square, (0, 255, 255, 0)).save(b / "cmyk.tif")
    Image.fromarray(np.full(square, 32896, dtype=np.uint16)).save(b / "sixteen.png")
    # Stored 2S wide and S high, left half red and right half blue, with EXIF "rotate 90° CW":
    # upright it is S wide and 2S high with red on top, blue below.
    stored = Image.new("RGB", (2 * SIZE, SIZE), (255, 0, 0))
    stored.paste((0, 0, 255), (SIZE, 0, 2 * SIZE, SIZE))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored.save(b / "rotated.jpg", exif=exif, quality=95)
    return {
        "alice/grey.png": (77, 77, 77),
        "alice/palette.png": (200, 30, 40),
        "alice/transparent.png": (128, 128, 128),  # composited on the fixed grey
        "bob/cmyk.tif": (255, 0, 0),
        "bob/sixteen.png": (128, 128, 128),  # 32896 / 257: scaled, not clipped to 255
        "bob/rotated.jpg": None,
    }


def _training_pixels(root: Path, cache: Path) -> dict[str, np.ndarray]:
    dataset = load_dataset(
        DataConfig(source=str(root), image_size=SIZE, cache_dir=str(cache)), log=lambda _m: None
    )
    return {
        path: dataset.images[i].permute(1, 2, 0).numpy() for i, path in enumerate(dataset.paths)
    }


class _CapturingModel:
    """Stands in for a :class:`~facecls.inference.model.FaceModel`: records every batch it is fed."""

    image_size = SIZE
    crop = 1.0
    class_names = ["alice", "bob"]

    def __init__(self) -> None:
        from facecls.data.faces import FaceCutter
        from facecls.inference.model import FaceModel

        self.cutter = FaceCutter("centre", SIZE)
        self.detects = False

        # The real file reader of FaceModel, so the test covers predict's own path to pixels.
        self.load_face = FaceModel.load_face.__get__(self)
        self.batches: list[np.ndarray] = []

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(images.copy())
        return np.zeros((len(images), 2), np.float32), np.zeros((len(images), 4), np.float32)

    def decide(self, logits: np.ndarray, features: np.ndarray, top_k: int = 5) -> list:
        from facecls.inference.faces import Prediction

        return [Prediction("known", "alice") for _ in logits]


def _predict_pixels(root: Path, cache: Path) -> dict[str, np.ndarray]:
    from facecls.inference.model import predict_files

    model = _CapturingModel()
    rows = list(predict_files(model, [root], chunk_size=4))  # type: ignore[arg-type]
    assert all(row.decision == "known" for row in rows), rows
    fed = np.concatenate(model.batches)
    assert fed.dtype == np.uint8 and fed.shape == (len(rows), 3, SIZE, SIZE)
    return {
        Path(row.path).relative_to(root).as_posix(): fed[i].transpose(1, 2, 0)
        for i, row in enumerate(rows)
    }


# name → function(folder, cache) giving {relative path: (S, S, 3) uint8} as that command sees it.
LOADERS: dict[str, Callable[[Path, Path], dict[str, np.ndarray]]] = {
    "train/cv/evaluate (decode cache)": _training_pixels,
    "predict (batch fed to the model)": _predict_pixels,
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_mode_gives_the_expected_rgb_through_the_one_loader(
    loader: str, tmp_path: Path
) -> None:
    expected = _write_modes(tmp_path / "modes")
    pixels = LOADERS[loader](tmp_path / "modes", tmp_path / "cache")
    assert set(pixels) == set(expected)
    for path, colour in expected.items():
        image = pixels[path]
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, load_rgb(tmp_path / "modes" / path, SIZE))
        if colour is not None:
            assert (image == np.array(colour, dtype=np.uint8)).all(), (path, image[0, 0])
    # Upright and centre-cropped: the square's upper half is red, its lower half blue.
    rotated = pixels["bob/rotated.jpg"].astype(int)
    top, bottom = rotated[2:12].mean(axis=(0, 1)), rotated[20:30].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_predict_feeds_the_model_what_training_decodes(tmp_path: Path) -> None:
    _write_modes(tmp_path / "modes")
    trained = _training_pixels(tmp_path / "modes", tmp_path / "cache")
    predicted = _predict_pixels(tmp_path / "modes", tmp_path / "cache")
    assert set(predicted) == set(trained)
    for path, pixels in trained.items():
        np.testing.assert_array_equal(predicted[path], pixels, err_msg=path)


def test_predict_loads_through_the_one_loader_at_the_bundle_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    # predict reads face photos through FaceModel.load_face, which calls the one loader with
    # the bundle's size and training crop.
    module = importlib.import_module("facecls.inference.model_inputs")
    _write_modes(tmp_path / "modes")
    calls: list[tuple[str, int | None, float]] = []

    def spy(path: Path, size: int | None = None, crop: float = 1.0) -> np.ndarray:
        calls.append((Path(path).name, size, crop))
        return load_rgb(path, size, crop)

    monkeypatch.setattr(module, "load_rgb", spy)
    _predict_pixels(tmp_path / "modes", tmp_path / "cache")
    expected = [(Path(p).name, SIZE, 1.0) for p in _write_modes(tmp_path / "x")]
    assert sorted(calls) == sorted(expected)
