"""The code stays readable: no function longer than a screen unless a comment says why, and none
that takes so many parameters that what travels together has no name.

A function that does not fit on one screen usually holds several steps that want names of their
own (docs/architecture.md). When one really reads better whole (a template, a table), a comment
on the lines right above its `def` (or its decorators) says so: `# Longer than a screen: <why>`.
Both rules cover the library (src/, stages/), the benchmarks and the tests' support code.
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.helpers import REPO

SCREEN_LINES = 60  # def line to last line, docstring included
REASON = "# Longer than a screen:"
MAX_PARAMETERS = 7  # eight or more: what travels together is a named object


def checked_files() -> list[Path]:
    """Every Python file both rules hold in: the library, the stages, the benchmarks, the tests' support code."""
    return (sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "stages").glob("*.py"))
            + sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "tests" / "support").rglob("*.py")))


def functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_functions(path: Path, root: Path = REPO) -> list[str]:
    lines = path.read_text().splitlines()
    found = []
    for node in functions(path):
        length = node.end_lineno - node.lineno + 1
        if length <= SCREEN_LINES:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[first - 2].strip() if first >= 2 else ""
        if not above.startswith(REASON):
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def named_parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Positional (positional-only included) and keyword-only parameters; a leading `self` or `cls`
    is not counted, nor are `*args` and `**kwargs` (they pass things through, they add no names)."""
    positional = [a.arg for a in node.args.posonlyargs + node.args.args]
    if positional[:1] in (["self"], ["cls"]):
        positional = positional[1:]
    return len(positional) + len(node.args.kwonlyargs)


def many_parameters(path: Path, root: Path = REPO) -> list[str]:
    return [f"{path.relative_to(root)}:{node.lineno} {node.name} ({count} parameters)"
            for node in functions(path) if (count := named_parameters(node)) > MAX_PARAMETERS]


def test_functions_fit_on_a_screen_or_say_why():
    files = checked_files()
    assert len(files) > 20  # the glob found the library
    assert any(p.parent.name == "benchmarks" for p in files) and any(p.parent.name == "support" for p in files)
    offenders = [entry for path in files for entry in long_functions(path)]
    assert not offenders, f"functions over {SCREEN_LINES} lines without a '{REASON} …' comment: {offenders}"


def test_no_function_takes_eight_or_more_parameters():
    """Eight or more named parameters (positional and keyword-only; `self`/`cls`, `*args` and
    `**kwargs` not counted) mean that some of them travel together and want a named object."""
    files = checked_files()
    assert len(files) > 20  # the glob found the library
    offenders = [entry for path in files for entry in many_parameters(path)]
    assert not offenders, f"functions with {MAX_PARAMETERS + 1} or more parameters: {offenders}"


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(SCREEN_LINES))
    source = tmp_path / "probe.py"
    source.write_text(f"def long_one():\n{body}\n\n\n{REASON} a generated table\ndef excused():\n{body}\n")
    assert long_functions(source, tmp_path) == [f"probe.py:1 long_one ({SCREEN_LINES + 1} lines)"]


def test_the_check_sees_many_parameters(tmp_path):
    names = ", ".join(f"p{i}" for i in range(MAX_PARAMETERS))
    source = tmp_path / "probe.py"
    source.write_text("\n".join([
        f"def too_many(a, /, {names}, *, last):",  # positional-only and keyword-only parameters count
        "    pass",
        f"def enough({names}, *args, **kwargs):",  # *args and **kwargs do not
        "    pass",
        "class Holder:",
        f"    def method(self, {names}):",  # nor does self
        "        pass",
        f"    def crowded(self, {names}, extra):",
        "        pass",
    ]) + "\n")
    assert many_parameters(source, tmp_path) == [f"probe.py:1 too_many ({MAX_PARAMETERS + 2} parameters)",
                                                 f"probe.py:8 crowded ({MAX_PARAMETERS + 1} parameters)"]
