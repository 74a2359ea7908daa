"""Each stage in dvc.yaml depends on exactly the library modules its script imports (transitively).

A missing dep means a library edit would not re-run a stage that uses it (stale results); an
extra one means needless re-runs. Imports are read statically with ast, so the check is cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from support.helpers import REPO
from support.imports import SRC, module_path, tinyclf_imports


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
