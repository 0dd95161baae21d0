"""Local only: the commands that work on user data open no network connection and leave the
data folder byte-for-byte as it was; only an explicit download touches the network, and says so.

Every command that reads user data or a run is in ``local_commands``: train, cv, evaluate,
predict (a folder, into a CSV outside it) and report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facecls.data.sources import LFW_URL, scan_source
from facecls.models import create_model
from tests.offline import NetworkUsed, no_network, run_locally

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def local_commands(data: Path, runs: Path) -> list[list[str]]:
    """Every data command, each expected to exit 0, in an order where each can use the last."""
    common = ["--data", str(data), "--image-size", "32", "--epochs", "1", "--runs-dir", str(runs)]
    return [
        ["train", *common, "--name", "t"],
        ["cv", *common, "--folds", "2", "--name", "cv"],
        ["evaluate", str(runs / "t")],
        ["evaluate", str(runs / "cv" / "model" / "model.safetensors")],
        ["predict", str(runs / "t"), str(data), "--out", str(runs / "predictions.csv")],
        ["report", str(runs / "t")],
        ["report", str(runs / "cv")],
    ]


@pytest.mark.slow
def test_data_commands_make_no_connection_and_modify_nothing(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    commands = local_commands(synthetic_folder, runs)
    assert {c[0] for c in commands} >= {"train", "cv", "evaluate", "predict", "report"}
    assert run_locally(commands, synthetic_folder, monkeypatch) == [0] * len(commands)
    rows = (runs / "predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == sum(1 for _ in synthetic_folder.rglob("*.png"))
    assert (runs / "t" / "report.html").is_file() and (runs / "cv" / "report.html").is_file()


def test_the_guard_catches_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle: the guard really sees an attempt, even one the code under test catches."""
    import socket
    import urllib.request

    with no_network(monkeypatch) as attempts:
        with pytest.raises(NetworkUsed):
            socket.create_connection(("192.0.2.1", 80), timeout=1)
        with pytest.raises(NetworkUsed):
            urllib.request.urlopen("http://192.0.2.1/", timeout=1)
    assert len(attempts) == 2


def test_lfw_download_is_explicit_and_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    with no_network(monkeypatch) as attempts, pytest.raises(NetworkUsed):
        scan_source("lfw", tmp_path / "empty-cache", log=said.append)
    assert attempts and any("Downloading LFW" in line and LFW_URL in line for line in said)


def test_pretrained_weights_download_is_explicit_and_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    create_model("mobilenet_v2", num_classes=3, image_size=32)  # not pretrained: no network
    with no_network(monkeypatch) as attempts:
        create_model("mobilenet_v2", num_classes=3, image_size=32)
        assert attempts == []
        with pytest.raises(NetworkUsed):
            create_model("mobilenet_v2", num_classes=3, image_size=32, pretrained=True)
    assert attempts
    said = capsys.readouterr()
    assert "Downloading: " in said.out + said.err  # torch.hub names the URL and the target
