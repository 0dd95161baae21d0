"""A full disk (issue 23, item 13) is one line naming the folder, the space needed and free and,
for a run, the command that resumes it, whichever library was writing: safetensors and numpy do
not raise Python's OSError(ENOSPC) (their errors below were measured on a full tmpfs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from safetensors import SafetensorError

from facecls.cli import main
from tests.cli_helpers import one_error, photo, train_args

_photo, _one_error, _train_args = photo, one_error, train_args


# What a full disk raises, as measured on a full tmpfs: safetensors (Rust) and numpy's np.save do
# not raise OSError(ENOSPC) as Python's own writes do.
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"
NUMPY_FULL = "1000000 requested and 131056 written"


def _safetensors_full(*_args: Any, **_kwargs: Any) -> None:
    raise SafetensorError(SAFETENSORS_FULL)


def _numpy_full(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(NUMPY_FULL)


def test_full_disk_while_checkpointing_names_folder_space_and_resume(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import facecls.training.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "save_file", _safetensors_full)
    assert main(_train_args(synthetic_folder, tmp_path / "runs")) == 1
    err = _one_error(capsys)
    folder = tmp_path / "runs" / "run" / "checkpoints"
    assert f"no space left on the disk of {folder} while writing fold0-last" in err
    assert "MiB of free space is needed" in err
    assert f"facecls train --resume {tmp_path / 'runs' / 'run'}" in err


def test_full_disk_while_caching_decoded_images_names_the_folder(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import facecls.data.cache as cache_module

    monkeypatch.setattr(cache_module.np, "save", _numpy_full)
    cache = tmp_path / "cache"
    assert main(_train_args(synthetic_folder, tmp_path / "runs", "--cache-dir", str(cache))) == 1
    err = _one_error(capsys)
    assert f"no space left on the disk of {cache / 'decoded'}" in err
    assert "MiB of free space is needed" in err


@pytest.mark.parametrize("what", ["embed", "search"])
def test_full_disk_while_writing_embeddings_names_the_folder(
    what: str, untrained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "save_file", _safetensors_full)
    photo = _photo(tmp_path / "gallery" / "a.png")
    if what == "embed":
        folder = tmp_path / "out"
        args = ["embed", str(untrained_bundle), str(photo), "--out", str(folder / "e.safetensors")]
    else:
        folder = Path(os.environ["FACECLS_CACHE"]) / "gallery"
        args = ["search", str(untrained_bundle), str(photo), "--gallery", str(photo.parent)]
    assert main(args) == 1
    err = _one_error(capsys)
    assert f"no space left on the disk of {folder}" in err and "MiB of free space" in err


def test_full_disk_while_saving_a_bundle_or_its_centroids_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.numpy
    import torch

    import facecls.bundle
    from facecls.atomic import WriteError
    from facecls.bundle import Bundle, save_bundle, write_centroids
    from facecls.models import create_model

    model = create_model("baseline", num_classes=3, image_size=32)
    monkeypatch.setattr(facecls.bundle, "save_file", _safetensors_full)
    with pytest.raises(WriteError, match=f"no space left on the disk of {tmp_path / 'm'}"):
        save_bundle(Bundle(model, "baseline", ["a", "b", "c"], 32, [0.5] * 3, [0.25] * 3),
                    tmp_path / "m")  # fmt: skip
    monkeypatch.setattr(safetensors.numpy, "save_file", _safetensors_full)
    with pytest.raises(WriteError, match="MiB of free space is needed"):
        write_centroids(tmp_path / "c", {"trained": torch.zeros(3, 4).numpy()})
    assert not list((tmp_path / "c").iterdir())


def test_full_disk_while_annotating_names_the_annotate_folder(
    untrained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    def full(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    photo = _photo(tmp_path / "a.png")
    monkeypatch.setattr(Image.Image, "save", full)
    drawn, out = tmp_path / "drawn", tmp_path / "p.csv"
    args = ["predict", str(untrained_bundle), str(photo), "--out", str(out)]
    assert main([*args, "--annotate", str(drawn)]) == 1
    err = _one_error(capsys)
    assert f"no space left on the disk of {drawn} while writing a.jpg" in err
    assert "p.csv" not in err and not out.exists()
