"""Installed like a Python tool: ``python -m build`` makes an sdist and a wheel (the wheel built
from the sdist, so both are complete), the wheel carries every file facecls reads at run time,
and once installed into a fresh virtual environment the ``facecls`` command works from outside
the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about 30 s: a build, a venv, a tiny training run
REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "facecls"


def _data_files() -> set[str]:
    """Every file of the package that is not Python source: what must travel as package data."""
    return {
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: the build's egg-info and build/ folders never land in the checkout.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (setuptools, a dev dependency) comes from this
    # environment, so the test needs no index; users' `python -m build` fetches it.
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_wheel_and_sdist_carry_the_package_data(dist: Path) -> None:
    [wheel] = dist.glob("facecls-*-py3-none-any.whl")
    [sdist] = dist.glob("facecls-*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = _data_files()
    assert {"facecls/weights/mtcnn.safetensors", "facecls/report/templates/run.html.j2"} <= wanted
    assert wanted <= names, sorted(wanted - names)
    sources = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "facecls = facecls.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    with tarfile.open(sdist) as tar:
        inside = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md"} <= inside
    assert {f"src/{name}" for name in wanted} <= inside


def test_the_installed_wheel_runs_outside_the_source_tree(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("*.whl")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout in sight
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, env=env, check=True,
        ).stdout.strip()
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        env=env, check=True, timeout=300,
    )  # fmt: skip
    # Then the dependencies (torch...) come from this environment instead of being downloaded
    # again: a path line in a .pth file, written after the install so that pip did not see this
    # environment's editable facecls (the .pth files found there are not run, so its import
    # hook stays out of sight; this venv's own site-packages comes first on sys.path).
    (site / "shared-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    facecls = venv / "bin" / "facecls"

    def run(*args: str) -> str:
        done = subprocess.run(
            [*args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    where = run(str(python), "-c", "import facecls; print(facecls.__file__)")
    assert Path(where.strip()).is_relative_to(site)  # the wheel's copy, not the checkout's
    assert run(str(facecls), "--version").strip() == "facecls 0.1.0"
    # The face detector's weights and the report templates are read from the installed package.
    check = (
        "from facecls.data.mtcnn_nets import load_nets; load_nets(); "
        "from importlib import resources; "
        "print(resources.files('facecls').joinpath('report/templates/run.html.j2').is_file())"
    )
    assert run(str(python), "-c", check).strip() == "True"
    run(
        str(facecls), "--quiet", "train", "--data", "synthetic", "--model", "baseline",
        "--image-size", "32", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
        "--runs-dir", str(elsewhere / "runs"), "--name", "tiny",
    )  # fmt: skip
    run_dir = elsewhere / "runs" / "tiny"
    for name in ("model/model.json", "metrics.json", "report.html"):
        assert (run_dir / name).is_file(), name
