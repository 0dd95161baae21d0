"""Everyday comfort (issue 16): --version, completion, run.log, progress, model card, live curves."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
from importlib.metadata import version
from pathlib import Path

import pytest

from facecls.cli import main
from facecls.logs import logger
from facecls.progress import bar

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "baseline", "--image-size", "32", "--batch-size", "16"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


@pytest.fixture(scope="module")
def run(synthetic_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny `facecls train --tensorboard` run; what its console printed and its folder."""
    runs = tmp_path_factory.mktemp("runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([
            "train", "--data", str(synthetic_folder), *TINY, "--epochs", "2",
            "--runs-dir", str(runs), "--name", "t", "--tensorboard",
        ])  # fmt: skip
    assert code == 0
    return {"dir": runs / "t", "console": out.getvalue()}


def test_version_imports_nothing_more() -> None:
    """--version answers from the package metadata before the command's imports (torch): it
    imports no module beyond what importing the CLI itself does."""
    code = (
        "import sys\nfrom facecls.cli import main\nbefore = set(sys.modules)\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(('torch', 'facecls'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    first, new_modules = done.stdout.splitlines()
    assert first == f"facecls {version('facecls')}" and new_modules == "[]"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_names_commands_and_options(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("train", "predict", "tune", "--image-size", "--tensorboard"):
        assert word in script


def test_run_log_holds_what_the_console_printed(run: dict) -> None:
    console = [line for line in run["console"].splitlines() if line.strip()]
    assert any(line.startswith("fold 0 epoch") for line in console)
    text = (run["dir"] / "run.log").read_text()
    for line in console:
        assert line in text, line
    assert "DEBUG" in text and '"image_size": 32' in text  # the resolved config
    # every record carries a timestamp
    assert all(line[:4].isdigit() for line in text.splitlines() if " INFO " in line)


def test_quiet_prints_nothing_but_keeps_run_log(
    synthetic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "--quiet", "train", "--data", str(synthetic_folder), *TINY, "--epochs", "1",
        "--runs-dir", str(tmp_path), "--name", "q",
    ])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    text = (tmp_path / "q" / "run.log").read_text()
    assert "fold 0 epoch   1/1" in text and "95 % intervals): accuracy" in text


def test_model_card_names_the_numbers_of_metrics_json(run: dict) -> None:
    card = (run["dir"] / "model" / "MODEL_CARD.md").read_text()
    test = json.loads((run["dir"] / "metrics.json").read_text())["test"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert f"{test['summary'][key]:.3f}" in card
        low, high = test["intervals_95"][key]
        assert f"[{low:.3f}, {high:.3f}]" in card
    for group, recall in test["groups"]["recall"].items():
        assert f"| {group} | {test['groups']['identities'][group]} | {recall:.3f} |" in card
    model = json.loads((run["dir"] / "model" / "model.json").read_text())
    assert f"threshold {model['openset']['threshold']:.4f}" in card
    for name in model["class_names"]:
        assert f"| {name} |" in card
    assert "random initialisation" in card  # baseline from scratch: no third-party weights


def test_tensorboard_events_hold_the_scalars_of_history(run: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run["dir"] / "tensorboard" / "fold0"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "loss/train",
        "loss/val",
        "accuracy/val",
        "balanced_accuracy/val",
        "learning_rate",
    } <= tags
    assert any(tag.startswith("recall/") for tag in tags)
    history = (run["dir"] / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in history[1:]]
    val_loss = events.Scalars("loss/val")
    assert [e.step for e in val_loss] == [int(r["epoch"]) for r in rows]
    assert [e.value for e in val_loss] == pytest.approx([float(r["val_loss"]) for r in rows])


def _on_pty(args: list[str]) -> str:
    """Run ``python -m facecls ARGS`` with stderr and stdout on a pseudo-terminal."""
    leader, follower = pty.openpty()
    # a real terminal has a size (a fresh pty reports 0 columns, and tqdm draws nothing there)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "facecls", *args], stdout=follower, stderr=follower,
        stdin=subprocess.DEVNULL, env=_env(), close_fds=True,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=120)
    os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert code == 0, shown[-3000:]
    return shown


def test_progress_shows_on_a_terminal_and_not_when_quiet(
    run: dict, synthetic_folder: Path, tmp_path: Path
) -> None:
    args = ["predict", str(run["dir"]), str(synthetic_folder), "--out", str(tmp_path / "p.csv")]
    shown = _on_pty(args)
    assert "predict:" in shown and "photo/s" in shown and "%|" in shown  # bar, rate, ETA
    quiet = _on_pty(["--quiet", *args])
    assert "photo/s" not in quiet and "%" not in quiet


def test_off_a_terminal_a_line_every_tenth() -> None:
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger().addHandler(handler)
    level = logger().level
    logger().setLevel(logging.INFO)
    try:
        counter = bar(200, "embedding", True, terminal=False)
        for _ in range(200):
            counter.update(1)
        counter.close()
        silent = bar(200, "epoch", True, lines=False, terminal=False)
        silent.update(200)
    finally:
        logger().removeHandler(handler)
        logger().setLevel(level)
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == [
        str(p) for p in range(10, 101, 10)
    ]
    assert "ETA" in lines[0] and "img/s" in lines[0]


@pytest.mark.parametrize(
    ("command", "label"), [("export", "ONNX parity check:"), ("report", "report:")]
)
def test_export_check_and_report_show_progress_unless_quiet(
    command: str, label: str, run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The ONNX parity check and report writing draw a bar on a terminal (tqdm on stderr);
    ``--quiet`` draws none."""
    monkeypatch.setattr("facecls.progress._terminal", lambda: True)
    where = ["--out", str(tmp_path / ("m.onnx" if command == "export" else "report"))]
    assert main([command, str(run["dir"]), *where]) == 0
    shown = capsys.readouterr().err
    assert label in shown and "%|" in shown
    assert ("img/s" if command == "export" else "step/s") in shown
    assert main(["--quiet", command, str(run["dir"]), *where]) == 0
    quiet = capsys.readouterr().err
    assert label not in quiet and "%|" not in quiet
