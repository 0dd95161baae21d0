"""The documentation site: it builds with ``mkdocs build --strict`` (no broken link or anchor, every
page in the navigation), its index lists every page, and every public name of ``import facecls``
has a docstring and a place in the API reference."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import facecls

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _pages() -> set[str]:
    return {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "WARNING" not in output, output[-4000:]
    # mkdocstrings rendered the reference: the weights call's own docstring is on its page.
    models = (tmp_path / "site" / "api" / "models" / "index.html").read_text()
    assert "Fetch, convert, verify and store the weights" in models


def test_the_index_and_the_navigation_list_every_page() -> None:
    index = (DOCS / "index.md").read_text()
    linked = set(re.findall(r"\]\(([^)#]+\.md)", index))
    assert _pages() - {"index.md"} <= linked, sorted(_pages() - {"index.md"} - linked)
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.M))
    assert nav == _pages(), (sorted(_pages() - nav), sorted(nav - _pages()))
    assert "make docs" in (REPO / "README.md").read_text()  # the README points at the site


def _undocumented(name: str, obj: object) -> list[str]:
    doc = (obj.__doc__ or "").strip()
    # A dataclass without a docstring gets one made from its signature: that is not documentation.
    generated = dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}(")  # type: ignore[union-attr]
    missing = [name] if not doc or generated else []
    # A class's public methods and properties, its facecls base classes' included.
    for klass in obj.__mro__ if inspect.isclass(obj) else ():
        if not klass.__module__.startswith("facecls"):
            continue
        for attr, value in vars(klass).items():
            target = (
                value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            )
            if not attr.startswith("_") and callable(target) and not (target.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    return missing


def test_every_public_name_is_documented_and_in_the_reference() -> None:
    reference = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    overview = (DOCS / "api" / "index.md").read_text()
    missing, unreferenced = [], []
    for name in facecls.__all__:
        obj = getattr(facecls, name)
        missing += _undocumented(name, obj)
        where = f"{obj.__module__}.{obj.__qualname__}"  # where it is defined, not re-exported
        if f"::: {where}" not in reference or f"`{name}`" not in overview:
            unreferenced.append(name)
    assert not missing, f"public names without a docstring: {missing}"
    assert not unreferenced, f"public names missing from docs/api: {unreferenced}"
