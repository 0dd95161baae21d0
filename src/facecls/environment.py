"""What a run ran on: versions, hardware, seed and the facecls git commit, for every run folder."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from facecls.bundle import facecls_version
from facecls.runtime import cpu_has_native_bf16

# Distributions whose versions change results; recorded as installed (None when absent).
LIBRARIES = (
    "torch", "torchvision", "numpy", "pillow", "safetensors", "scikit-learn", "scipy",
    "pyyaml", "matplotlib",
)  # fmt: skip


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout facecls runs from, or nulls.

    Nulls when git is missing, or facecls is not running from its own checkout (an installed
    wheel inside some other repository must not report that repository's commit).
    """
    unknown: dict[str, Any] = {"commit": None, "dirty": None}
    package = Path(__file__).resolve().parent
    if shutil.which("git") is None:
        return unknown
    top = _git(["rev-parse", "--show-toplevel"], package)
    if top is None or not (Path(top) / "src" / "facecls" / "__init__.py").is_file():
        return unknown
    commit = _git(["rev-parse", "HEAD"], package)
    status = _git(["status", "--porcelain", "--untracked-files=no"], package)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _version_or_none(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Installed versions of :data:`LIBRARIES`."""
    return {name: _version_or_none(name) for name in LIBRARIES}


def environment(seed: int | None = None) -> dict[str, Any]:
    """Versions, hardware, seed and git commit, as recorded in ``environment.json`` and
    ``metrics.json``."""
    git = git_commit()
    return {
        "facecls": facecls_version(),
        "seed": seed,
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _version_or_none("torchvision"),
        "numpy": _version_or_none("numpy"),
        "libraries": library_versions(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        # Decides what --precision auto means on the CPU (optimization.autocast_dtype).
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
