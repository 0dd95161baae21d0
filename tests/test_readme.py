"""The README is a guide a newcomer reads top to bottom: short, every link and image there, and
every ``facecls`` command it shows parses as written (the real parser, nothing run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from facecls.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
MAX_LINES = 250  # issue 24: the reader's task first; measured detail lives in docs/


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= MAX_LINES


def test_every_local_link_and_image_exists() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local, "the README links to its docs"
    missing = [t for t in local if not (REPO / t).exists()]
    assert missing == []


def _commands() -> list[list[str]]:
    """Every ``facecls ...`` line of the README's bash blocks, continuation lines joined."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            words = shlex.split(line) if line else []
            for start, word in enumerate(words):
                if word.endswith("facecls") and start + 1 < len(words):
                    rest = words[start + 1 :]
                    if rest[0] in ("-m",):  # torchrun ... -m facecls index
                        continue
                    found.append(rest[: rest.index("&&")] if "&&" in rest else rest)
                    break
                if word == "-m" and start + 1 < len(words) and words[start + 1] == "facecls":
                    found.append(words[start + 2 :])
                    break
    return found


def test_the_readme_shows_the_new_users_path() -> None:
    shown = {c[0] for c in _commands()}
    assert {"weights", "index", "cluster", "serve", "train", "predict"} <= shown


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c)[:60])
def test_every_command_parses_as_written(command: list[str]) -> None:
    parser = build_parser()
    try:
        parser.parse_args(command)
    except SystemExit as stop:  # argparse's way of saying the line is wrong
        pytest.fail(f"facecls {' '.join(command)}: does not parse (exit {stop.code})")
