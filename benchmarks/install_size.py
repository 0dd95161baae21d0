"""How much disk a default install of facecls takes: its core dependencies, summed per package.

Run it with the Python of the environment to measure (any venv where facecls's dependencies are
installed; the environment may hold more, which is left out)::

    /path/to/venv/bin/python benchmarks/install_size.py [--pyproject pyproject.toml]

It reads the core ``dependencies`` of ``pyproject.toml``, follows their requirements through the
installed metadata (environment markers evaluated, extras not followed), and sums the files each
distribution's ``RECORD`` lists. It prints the total, the torch-related share (torch, triton and
NVIDIA's CUDA libraries, which the default PyTorch wheel pulls in on Linux x86-64) and the
largest packages. The standard library only, plus ``packaging`` (or pip's copy of it).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]


def core_requirements(pyproject: Path) -> list[str]:
    text = pyproject.read_text(encoding="utf-8")
    if tomllib is not None:
        return list(tomllib.loads(text)["project"]["dependencies"])
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    return re.findall(r'^\s*"([^"]+)"', block.group(1) if block else "", re.M)


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """Installed distributions needed by ``requirements`` (markers evaluated, no extras)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = _name(req.name)
        if key in found:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            print(f"  (not installed: {req.name})", file=sys.stderr)
            continue
        found[key] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return found


def size_of(dist: metadata.Distribution) -> int:
    total, seen = 0, set()
    for file in dist.files or []:
        path = Path(file.locate()).resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        total += path.stat().st_size
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[1] / "pyproject.toml"
    p.add_argument("--pyproject", type=Path, default=default)
    p.add_argument("--top", type=int, default=12, help="largest packages listed")
    args = p.parse_args()
    dists = closure(core_requirements(args.pyproject))
    sizes = {name: size_of(dist) for name, dist in dists.items()}
    torch_like = {n for n in sizes if n in ("torch", "triton") or n.startswith("nvidia-")}
    total = sum(sizes.values())
    torch_version = dists["torch"].version if "torch" in dists else "not installed"
    print(
        f"Python {platform.python_version()} at {sys.prefix}; torch {torch_version}; "
        f"{len(sizes)} distributions (facecls's core dependencies and theirs)"
    )
    print(f"total {total / 1e9:.2f} GB; torch + triton + nvidia-*: "
          f"{sum(sizes[n] for n in torch_like) / 1e9:.2f} GB")  # fmt: skip
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {name:<32} {dists[name].version:<16} {size / 1e6:>9,.0f} MB")


if __name__ == "__main__":
    main()
