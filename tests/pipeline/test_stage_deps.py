"""Each stage in dvc.yaml depends on exactly the library modules its script imports (transitively).

A missing dep means a library edit would not re-run a stage that uses it (stale results); an
extra one means needless re-runs. Imports are read statically with ast, so the check is cheap.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import yaml
from support.helpers import REPO

SRC = REPO / "src"


def module_path(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def format_modules(dispatch: str) -> set[str]:
    """The modules `registry.<dispatch>(name)` may load: every format's for `implementation`, those
    of the formats with a generated stand-in for `stand_in`."""
    from tinyclf.data.formats import registry

    formats = [f for f in registry.FORMATS if dispatch == "implementation" or f.stand_in_classes]
    return {f"tinyclf.data.formats.{f.module}" for f in formats}


def tinyclf_imports(path: Path) -> set[str]:
    """Names of tinyclf modules imported anywhere in a file (function-level imports included), and
    the format modules it loads through the dataset registry (`registry.implementation(name)`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "registry"
                and node.func.attr in ("implementation", "stand_in")):
            found |= format_modules(node.func.attr)
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "tinyclf" and module_path(n)}
    return found


def closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in tinyclf_imports(todo.pop()):
            path = module_path(name)
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_deps_match_its_imports(stage):
    wdir = STAGES[stage].get("wdir", ".")
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]
    # Paths relative to the repo (a stage with a wdir names them from there); ${…} deps are data.
    deps = [os.path.normpath(os.path.join(wdir, d)) for d in deps if "${" not in d]
    script = REPO / "stages" / f"{stage}.py"
    assert f"stages/{stage}.py" in deps
    # Subpackage __init__.py files are empty (test below) and the package's imports nothing, so
    # importing through them uses nothing.
    used = {p for p in closure(script) if p.name != "__init__.py"}
    missing = sorted(p.relative_to(REPO).as_posix() for p in used if not covered(p, deps))
    assert not missing, f"stage {stage} imports these but does not depend on them: {missing}"
    lib_deps = [d for d in deps if d.startswith("src/")]
    unused = [d for d in lib_deps if not any(covered(p, [d]) for p in used)]
    assert not unused, f"stage {stage} depends on library files it does not import: {unused}"


def test_package_init_files_are_empty():
    """Every subpackage's `__init__.py` is empty: importing `tinyclf.data.arrays` runs only that
    module, so a stage depends on exactly the modules it imports (and no shim re-exports old paths).
    (The package's own holds its docstring and version, and imports nothing.)"""
    inits = sorted(p for p in (SRC / "tinyclf").rglob("__init__.py") if p.parent != SRC / "tinyclf")
    assert len(inits) > 5  # the package and its stage folders
    filled = [p.relative_to(REPO).as_posix() for p in inits if p.read_text().strip()]
    assert not filled, f"__init__.py files with content: {filled}"
