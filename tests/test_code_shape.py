"""The library stays readable: no function longer than a screen unless a comment says why.

A function that does not fit on one screen usually holds several steps that want names of their
own (docs/architecture.md). When one really reads better whole (a template, a table), a comment
on the lines right above its `def` (or its decorators) says so: `# Longer than a screen: <why>`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.helpers import REPO

SCREEN_LINES = 60  # def line to last line, docstring included
REASON = "# Longer than a screen:"


def long_functions(path: Path, root: Path = REPO) -> list[str]:
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= SCREEN_LINES:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[first - 2].strip() if first >= 2 else ""
        if not above.startswith(REASON):
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_functions_fit_on_a_screen_or_say_why():
    files = sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "stages").glob("*.py"))
    assert len(files) > 20  # the glob found the library
    offenders = [entry for path in files for entry in long_functions(path)]
    assert not offenders, f"functions over {SCREEN_LINES} lines without a '{REASON} …' comment: {offenders}"


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(SCREEN_LINES))
    source = tmp_path / "probe.py"
    source.write_text(f"def long_one():\n{body}\n\n\n{REASON} a generated table\ndef excused():\n{body}\n")
    assert long_functions(source, tmp_path) == [f"probe.py:1 long_one ({SCREEN_LINES + 1} lines)"]
