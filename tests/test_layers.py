"""Imports inside ``cpd`` flow one way, and no two files import each other, however indirectly.

Every module (a top-level file, or a package with everything under it) has a floor; a module imports only
from lower floors (or from inside its own package).  Imports made inside functions count as well: a lazy
import is still a dependency.  ``docs/design.md`` draws the same map.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cpd"

#: module -> floor.  The core: files <- graph <- surgery <- importance <- prune, with comb above graph and
#: surgery; the edges (export, pipeline, check, mm, cli) above the core.
FLOORS = {
    "cpd.files": 0, "cpd.safe_load": 0.5,
    "cpd.graph": 1, "cpd.data": 1, "cpd.distill": 1,
    "cpd.flops": 2, "cpd.surgery": 2,
    "cpd.importance": 3, "cpd.combing": 3,
    "cpd.prune": 4,
    "cpd": 5, "cpd.export": 5, "cpd.pipeline": 5,
    "cpd.check": 6,
    "cpd.mm": 7,
    "cpd.cli": 8,
}


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _unit(module: str) -> str:
    """The floor-holding module of ``module`` (``cpd.prune.pruner`` -> ``cpd.prune``)."""
    return ".".join(module.split(".")[:2])


def _imported(path: Path) -> set[str]:
    """Every ``cpd`` module ``path`` imports, at module level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "cpd":
            out.add(node.module)
            # ``from cpd.x import y`` may name the submodule ``cpd.x.y``
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").is_file()
                       or (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/") / "__init__.py").is_file())
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "cpd")
    return out


def _file_of(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_floor() -> None:
    units = {_unit(_module_of(p)) for p in SOURCES}
    assert units <= set(FLOORS), f"give these a floor in FLOORS (and in docs/design.md): {sorted(units - set(FLOORS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_down(path: Path) -> None:
    here = _unit(_module_of(path))
    upward = sorted(m for m in _imported(path) if _unit(m) != here and FLOORS[_unit(m)] >= FLOORS[here])
    assert upward == [], f"{here} (floor {FLOORS[here]}) imports from floors at or above it: {upward}"


def test_no_import_cycle_between_files() -> None:
    graph: dict[Path, set[Path]] = {}
    for path in SOURCES:
        targets = {_file_of(m) for m in _imported(path)}
        graph[path] = {t for t in targets if t is not None and t != path}
    # Tarjan's strongly connected components: any component of two or more files is a cycle
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    cycles: list[list[str]] = []

    def visit(v: Path) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(str(w.relative_to(ROOT)))
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_layering_test_catches_an_upward_import(tmp_path: Path) -> None:
    """The rule bites: graph importing surgery (what comb used to do) is an upward import."""
    fake = tmp_path / "comb.py"
    fake.write_text("from cpd.surgery.cut import cut_\n")
    assert _imported(fake) == {"cpd.surgery.cut"}
    assert FLOORS[_unit("cpd.surgery.cut")] >= FLOORS["cpd.graph"]
