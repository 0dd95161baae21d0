"""Nothing run that the user did not write: model files are safetensors + JSON and never unpickled.

The attack files below create a marker file when unpickled; each test proves the file is live
(plain unpickling does create the marker) and that facecls creates nothing.
"""

from __future__ import annotations

import builtins
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import facecls.bundle
from facecls.bundle import Bundle, BundleError, load_bundle, save_bundle
from facecls.cli import main
from facecls.models import create_model
from facecls.training.checkpoint import CheckpointError, read_checkpoint


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: arbitrary code, harmless here."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (builtins.open, (self.marker, "w"))


def _bundle(folder: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=3, image_size=32)
    save_bundle(Bundle(model, "baseline", ["a", "b", "c"], 32, [0.5] * 3, [0.25] * 3), folder)
    return folder


def _attack_files(folder: Path, marker: Path) -> list[Path]:
    """A raw pickle and a torch.save zip, each beside a valid model.json sidecar."""
    _bundle(folder)
    raw = folder / "evil.pt"
    raw.write_bytes(pickle.dumps({"features.0.weight": _Payload(marker)}, protocol=2))
    zipped = folder / "evil.pth"
    torch.save({"features.0.weight": _Payload(marker)}, zipped)
    return [raw, zipped]


def test_attack_files_are_live(tmp_path: Path) -> None:
    """The oracle: unpickling the test files really does run their code."""
    marker = tmp_path / "marker"
    raw, zipped = _attack_files(tmp_path / "m", marker)
    pickle.loads(raw.read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(zipped, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("trust", [False, True])
def test_pickles_run_nothing(tmp_path: Path, trust: bool) -> None:
    marker = tmp_path / "marker"
    for attack in _attack_files(tmp_path / "m", marker):
        with pytest.raises(BundleError) as caught:
            load_bundle(attack, trust_pickle=trust)
        message = str(caught.value)
        assert str(attack) in message
        if trust:
            assert "weights_only=True" in message and "refused" in message
        else:
            assert "--trust-pickle" in message and "refusing" in message
        assert not marker.exists()


def test_cli_refuses_pickles_wherever_a_model_is_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "marker"
    for attack in _attack_files(tmp_path / "m", marker):
        assert main(["evaluate", str(attack)]) == 2
        assert "--trust-pickle" in capsys.readouterr().err
        assert main(["evaluate", str(attack), "--trust-pickle"]) == 2
        assert "weights_only=True" in capsys.readouterr().err
    assert not marker.exists()


def test_predict_refuses_pickles_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "marker"
    photo = tmp_path / "face.png"
    Image.new("RGB", (32, 32), (90, 60, 40)).save(photo)
    out = tmp_path / "predictions.csv"
    for attack in _attack_files(tmp_path / "m", marker):
        assert main(["predict", str(attack), str(photo), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "--trust-pickle" in err and "refusing" in err and str(attack) in err
        assert main(["predict", str(attack), str(photo), "--out", str(out), "--trust-pickle"]) == 2
        assert "weights_only=True" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_predict_uses_a_trusted_state_dict(tmp_path: Path) -> None:
    """``--trust-pickle`` loads the .pt named, not the safetensors beside it."""
    folder = _bundle(tmp_path / "m")
    photo = tmp_path / "face.png"
    Image.new("RGB", (32, 32), (90, 60, 40)).save(photo)
    state = load_bundle(folder).model.state_dict()
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, folder / "zero.pt")
    rows = {}
    for name, weights in (("safetensors", folder), ("pt", folder / "zero.pt")):
        out = tmp_path / f"{name}.csv"
        assert main(["--quiet", "predict", str(weights), str(photo), "--out", str(out),
                     "--trust-pickle", "--device", "cpu"]) == 0  # fmt: skip
        rows[name] = out.read_text().splitlines()[1]
    assert rows["safetensors"] != rows["pt"]  # zero weights: uniform probabilities
    assert ",0.333333," in rows["pt"]


def test_trusted_state_dict_loads_through_weights_only(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "m")
    reference = load_bundle(folder)
    weights = folder / "model.pt"
    torch.save(reference.model.state_dict(), weights)
    with pytest.raises(BundleError, match="refusing to load a pickle-based file"):
        load_bundle(weights)
    trusted = load_bundle(weights, trust_pickle=True)
    for (name, a), b in zip(
        reference.model.state_dict().items(), trusted.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_trust_pickle_requires_a_torch_without_the_weights_only_bypass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _bundle(tmp_path / "m")
    weights = folder / "model.pt"
    torch.save(load_bundle(folder).model.state_dict(), weights)
    monkeypatch.setattr(facecls.bundle.torch, "__version__", "2.5.1+cpu")
    with pytest.raises(BundleError, match="CVE-2025-32434"):
        load_bundle(weights, trust_pickle=True)


def test_pickle_renamed_to_safetensors_is_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = _bundle(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        load_bundle(folder)
    checkpoint = tmp_path / "checkpoints" / "fold0-last.safetensors"
    checkpoint.parent.mkdir()
    shutil.copy(folder / "model.safetensors", checkpoint)
    with pytest.raises(CheckpointError, match="not a readable facecls checkpoint"):
        read_checkpoint(checkpoint)
    assert not marker.exists()
