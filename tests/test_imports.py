"""The package's import graph stays one that reads top down: no module imports one that imports it
back (a deferred import inside a function counts: it only hides the circle), the subpackages
depend on each other in one direction, and the top level holds only the few modules every stage
shares (docs/architecture.md, "Layout")."""

from __future__ import annotations

from pathlib import Path

from support.helpers import REPO
from support.imports import tinyclf_imports

PACKAGE = "tinyclf"
MAX_TOP_LEVEL_MODULES = 8


def module_files(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under `src`."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (support/imports.py reads them, deferred ones included)."""
    return {name: tinyclf_imports(path, src) - {name} for name, path in module_files(src).items()}


def subpackage_graph(graph: dict[str, set[str]], src: Path) -> dict[str, set[str]]:
    """Which subpackage (tinyclf.train, tinyclf.data, …) imports which other."""
    subpackages = {f"{PACKAGE}.{p.parent.name}" for p in (src / PACKAGE).glob("*/__init__.py")}

    def owner(module: str) -> str | None:
        top = ".".join(module.split(".")[:2])
        return top if top in subpackages else None

    found: dict[str, set[str]] = {name: set() for name in subpackages}
    for module, imported in graph.items():
        for other in imported:
            if owner(module) and owner(other) and owner(module) != owner(other):
                found[owner(module)].add(owner(other))
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert circles(import_graph(REPO / "src")) == []


def test_subpackages_depend_on_each_other_in_one_direction():
    src = REPO / "src"
    assert circles(subpackage_graph(import_graph(src), src)) == []


def test_the_top_level_holds_only_what_every_stage_shares():
    top = sorted(p.stem for p in (REPO / "src" / PACKAGE).glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_the_check_sees_a_circle_hidden_by_a_deferred_import(tmp_path):
    package = tmp_path / PACKAGE
    (package / "a").mkdir(parents=True)
    (package / "b").mkdir()
    for init in (package, package / "a", package / "b"):
        (init / "__init__.py").write_text("")
    (package / "a" / "one.py").write_text("from tinyclf.b.two import helper\n")
    (package / "b" / "two.py").write_text("def helper():\n    from ..a import one  # deferred\n    return one\n")
    graph = import_graph(tmp_path)
    assert circles(graph) == [["tinyclf.a.one", "tinyclf.b.two"]]
    assert circles(subpackage_graph(graph, tmp_path)) == [["tinyclf.a", "tinyclf.b"]]
