"""Small helpers the command-line tests share: a photo on disk, the one error line a user's
mistake must give, and the arguments of a tiny training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def photo(path: Path, seed: int = 0) -> Path:
    """A 40 × 40 random-noise PNG/JPEG at ``path`` (its folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def one_error(capsys: pytest.CaptureFixture) -> str:
    """The stderr of a refused command: exactly one ``facecls: error:`` line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("facecls: error: ") and "run with --debug" not in err, err
    return err


def train_args(data: Path, runs: Path, *extra: str) -> list[str]:
    """``facecls --quiet train`` on ``data``: 32 px, one epoch, batches of 8, on the CPU."""
    return [
        "--quiet", "train", "--data", str(data), "--image-size", "32", "--epochs", "1",
        "--batch-size", "8", "--runs-dir", str(runs), "--name", "run", "--device", "cpu", *extra,
    ]  # fmt: skip
