"""Start-up: the command line parses, lists models and reports argument errors without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

_PROBE = """
import sys
import facecls.cli
try:
    code = facecls.cli.main({argv!r})
except SystemExit as stop:
    code = stop.code
print("exit", code)
print("torch imported" if "torch" in sys.modules else "no torch")
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"], ["--version"], ["models"], ["train", "--help"], ["cv", "--bogus"],
        ["predict"], ["completion", "bash"], ["completion", "zsh"], ["weights", "--help"],
        ["report", "/no/such/run"], ["compare", "/no/such/run", "/tmp"],
        ["predict", "/no/such/run", "/tmp"], ["export", "/no/such/run"],
        ["search", "/tmp/a.jpg", "--library", "/tmp/lib", "--model", "/no/such/run"],
        ["train", "--data", "/no/such/data"], ["cv", "--data", "/no/such/data"],
    ],
)  # fmt: skip
def test_the_command_line_answers_without_torch(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120,
    )  # fmt: skip
    assert done.stdout.strip().endswith("no torch"), done.stdout + done.stderr
    if argv == ["models"]:
        assert "facenet" in done.stdout and "exit 0" in done.stdout
    elif argv[0] == "completion":  # the shell waits for it: it must not load torch (issue 24)
        assert "exit 0" in done.stdout and "facecls" in done.stdout and "weights" in done.stdout
    elif argv == ["--version"]:
        assert done.stdout.startswith("facecls ")
    else:
        assert "exit 0" in done.stdout or "exit 2" in done.stdout  # help, or an argument error


def test_the_static_model_table_matches_the_registry() -> None:
    from facecls.catalog import MODELS
    from facecls.models import list_models

    assert list(MODELS) == [(info.name, info.description) for info in list_models()]


def test_every_public_name_resolves_lazily() -> None:
    import facecls
    from facecls.inference.model import load_model
    from facecls.training.run import fit

    assert facecls.train is fit and facecls.load_model is load_model
    for name in facecls.__all__:
        assert getattr(facecls, name) is not None, name
        assert name in dir(facecls)
    from facecls import RunConfig, demo

    assert callable(demo) and RunConfig().name
    with pytest.raises(AttributeError):
        facecls.no_such_name  # noqa: B018


@pytest.mark.parametrize("command", [["people"], ["cluster"], ["people", "suggest"]])
def test_library_commands_that_need_no_network_answer_without_torch(
    command: list[str], tmp_path: Path
) -> None:
    """Listing, clustering and the next question come from the stored vectors: the People
    workflow's commands answer in a fraction of a second, without loading torch."""
    from facecls.library.store import open_library

    library = tmp_path / "lib"
    open_library(library, create=True).close()
    argv = [command[0], str(library), *command[1:]]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120,
    )  # fmt: skip
    assert done.stdout.strip().endswith("no torch"), done.stdout + done.stderr
    assert "exit 0" in done.stdout, done.stdout + done.stderr


def test_weights_list_answers_without_torch(tmp_path: Path) -> None:
    """`facecls weights list` reads names, checksums and files: it loads no network."""
    cache = tmp_path / "cache"
    argv = ["weights", "list"]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "FACECLS_CACHE": str(cache)},
        timeout=120,
    )  # fmt: skip
    assert done.stdout.strip().endswith("no torch"), done.stdout + done.stderr
    assert "exit 0" in done.stdout and "facenet: not stored" in done.stdout, done.stdout


@pytest.mark.parametrize(
    "argv",
    [["predict", "four", "."], ["serve", "four"], ["calibrate", "four"], ["enroll", "four", "--data", "."]],
)  # fmt: skip
def test_a_mistyped_model_is_named_in_one_line(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A model that is no file or folder is told at once, with the runs folder when it is there."""
    import facecls.cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "four").mkdir(parents=True)
    assert facecls.cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no run folder or model named four" in err and "did you mean runs/four" in err, err


@pytest.mark.parametrize("command", ["train", "cv", "tune", "lr-find", "demo"])
def test_missing_data_is_named_in_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import facecls.cli

    assert facecls.cli.main([command, "--data", "/no/such/photos"]) == 2
    assert (
        capsys.readouterr().err.strip() == "facecls: error: /no/such/photos: no such file or folder"
    )
