"""The house's plan: seven wings over a shared floor, imports running one way, and no circle.

Every ``import``/``from … import`` of ``facecls`` in ``src/facecls`` counts, function-local ones
included. The top (``cli/``, the public API, ``demo``) may import anything; ``service/`` sits
above ``inference/`` and ``library/``; training may use inference and report; ``library/`` may
use inference; inference and report use no other wing; the shared floor, ``data/`` and
``models/`` import no wing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "facecls"
TOP = {"facecls", "facecls.__main__", "facecls.cli", "facecls.demo"}
WINGS = ("training", "inference", "report", "library", "service")
# The wings each wing may import (besides itself, the floor, data/ and models/).
MAY_USE: dict[str, set[str]] = {
    "service": {"inference", "library"},
    "training": {"inference", "report"},
    "library": {"inference"},
    "inference": set(),
    "report": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The facecls modules ``path`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [sub for sub in subs if sub in modules]
            if len(names) < len(subs):  # some names are defined in the module itself
                names.append(node.module)
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that ends where it started), else ``None``."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _top(module: str) -> bool:
    return module in TOP or module.startswith("facecls.cli.")


def test_the_layout_is_what_the_test_expects() -> None:
    modules = _modules()
    for wing in WINGS + ("data", "models"):
        assert f"facecls.{wing}" in modules, f"facecls/{wing}/ is missing"
    assert len(_graph()) > 40  # the walk saw the whole package


def test_no_import_circle() -> None:
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


@pytest.mark.parametrize("lower", ["floor", "data", "models"])
def test_floor_data_and_models_import_no_wing(lower: str) -> None:
    bad = []
    for module, targets in _graph().items():
        if _top(module) or _wing(module) is not None:
            continue
        kind = module.split(".")[1] if module.count(".") >= 2 else "floor"
        if kind != lower:
            continue
        bad += [f"{module} -> {t}" for t in sorted(targets) if _wing(t) is not None]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_imports_only_the_wings_below_it(wing: str) -> None:
    bad = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _wing(module) == wing
        for target in sorted(targets)
        if _wing(target) not in (None, wing) and _wing(target) not in MAY_USE[wing]
    ]
    assert not bad, "\n".join(bad)


def test_no_rule_lets_a_wing_reach_back_up() -> None:
    """The allowed imports form no circle between wings (service on top, then training and
    library, then inference and report)."""
    assert _cycle({wing: set(MAY_USE[wing]) for wing in WINGS}) is None


def test_the_test_sees_function_local_imports_and_circles() -> None:
    """The walk is not blind: a local import is found, and a planted circle is reported."""
    source = "def f():\n    from facecls.training.run import fit\n"
    tree_imports = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert tree_imports == {"facecls.training.run"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# DESIGN.md: a module a stranger can read in one sitting. Past this, split it by what it owns.
MAX_LINES = 400


def test_no_source_file_is_longer_than_the_house_allows() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in sorted(SRC.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"
