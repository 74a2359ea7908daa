"""Which tinyclf modules a file imports, read statically with ast (nothing is imported): the reading
behind tests/pipeline/test_stage_deps.py (a stage's deps in dvc.yaml) and tests/test_imports.py
(the import graph has no circle)."""

from __future__ import annotations

import ast
from pathlib import Path

from support.helpers import REPO

SRC = REPO / "src"


def module_path(name: str, src: Path = SRC) -> Path | None:
    """The file of module `name` under `src`, or None when it is not one."""
    base = src / Path(*name.split("."))
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


def _package_of(path: Path, src: Path) -> list[str]:
    """The package a relative import in `path` starts from, as name parts (none outside `src`)."""
    try:
        parts = list(path.relative_to(src).parts)
    except ValueError:
        return []
    return parts[:-1]


def tinyclf_imports(path: Path, src: Path = SRC) -> set[str]:
    """Names of tinyclf modules imported anywhere in a file (function-level imports included:
    deferring an import does not remove the dependency), and the format modules it loads through
    the dataset registry (`registry.implementation(name)`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "registry"
                and node.func.attr in ("implementation", "stand_in")):
            found |= format_modules(node.func.attr)
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            package = _package_of(path, src)
            parent = package[:len(package) - node.level + 1] if node.level else []
            base = ".".join(parent + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "tinyclf" and module_path(n, src)}
    return found
