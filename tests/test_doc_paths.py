"""What the Makefile, the README and docs/ name exists, and what the code's docstrings and comments
name in backticks: files and folders of the repository, the
package's modules (`tinyclf.train.setup`, `python -m tinyclf.commands.quickstart`) and the names
they point into (`train.cost.PEAK_BF16_TFLOPS`). A moved module or a renamed function otherwise
leaves the text a newcomer reads pointing at nothing.

Three forms are checked:
- repository paths: `src/…`, `tests/…`, `benchmarks/…`, `stages/…`, `docs/…`;
- paths inside the package or the tests, as docs/architecture.md's tables write them
  (`train/cost.py`, `train/test_cost.py`): any backticked `…/….py`;
- dotted names whose first part is the package (`tinyclf.…`) or one of its subpackages or
  top-level modules (`train.…`, `params.…`): the longest prefix that is a module must exist, and a
  rest must be a name defined there (a class, function or assignment) or a member of such a class.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from functools import cache
from pathlib import Path

import yaml
from support.helpers import REPO

PACKAGE = REPO / "src" / "tinyclf"
DOCUMENTS = ("Makefile", "README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
REPO_PATH = re.compile(r"(?<![\w/.])(?:src|tests|benchmarks|stages|docs)/[\w./-]*[\w/]")
RELATIVE_PY = re.compile(r"`([\w/]+/[\w.]+\.py)`")
DOTTED = re.compile(r"(?<![\w./-])((?:tinyclf\.)?[a-z_]+(?:\.[A-Za-z_]\w*)+)")
# Where a backticked relative path may live.
ROOTS = (REPO, REPO / "src", PACKAGE, REPO / "tests", REPO / "benchmarks", REPO / "stages")
# Written like the package's names and meant otherwise: said to be gone, or keys of a file.
NOT_NAMES = {
    "tinyclf.preprocessing": "README's Changes: an import path that is gone",
    "tinyclf.datasets": "README's Changes: an import path that is gone",
    "tinyclf.serving": "README's Changes: an import path that is gone",
    "tinyclf.models": "README's Changes: an import path that is gone",
    "environment.device": "a key of the model file's meta",
}
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".pt", ".onnx", ".txt", ".zip", ".npy", ".tar", ".gz",
                 ".png", ".html", ".csv", ".tsv", ".jpg", ".JPEG", ".lock", ".toml", ".safetensors", ".pth", ".bin")


def top_names() -> set[str]:
    """The package's subpackages and top-level modules: what a dotted name may start with."""
    return {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}


@cache
def defined_names(module: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(names a module defines or imports at its top level, `Class.member` for its classes' members)."""
    names, members = set(), set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                members |= {f"{node.name}.{m.name}" for m in node.body if hasattr(m, "name")}
                members |= {f"{node.name}.{t.target.id}" for t in node.body
                            if isinstance(t, ast.AnnAssign) and isinstance(t.target, ast.Name)}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names), frozenset(members)


def module_file(parts: list[str]) -> Path | None:
    path = PACKAGE.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def dotted_problem(name: str) -> str | None:
    """Why `name` (tinyclf.a.b.C or a.b.C) names nothing, or None when it does. A class's member
    is checked one level down; an attribute of anything else is not followed."""
    parts = name.removeprefix("tinyclf.").split(".")
    for cut in range(len(parts), 0, -1):
        module = module_file(parts[:cut])
        if module is None:
            continue
        rest = parts[cut:]
        names, members = defined_names(module)
        classes = {member.split(".")[0] for member in members}
        if not rest or (rest[0] in names and (len(rest) == 1 or rest[0] not in classes
                                              or f"{rest[0]}.{rest[1]}" in members)):
            return None
        return f"{module.relative_to(REPO)} defines no {'.'.join(rest)!r}"
    return f"no module tinyclf.{parts[0]}"


@cache
def param_keys() -> frozenset[str]:
    """params.yaml's dotted keys (`train.lr`, `download.generated.num_classes`): written like
    module names, and not ones."""
    def walk(tree: dict, prefix: str):
        for key, value in tree.items():
            yield prefix + key
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
    return frozenset(walk(yaml.safe_load((REPO / "params.yaml").read_text()), ""))


@cache
def module_stems() -> dict[str, list[str]]:
    """A module's name -> its dotted path(s) in the package, for short forms (`recipe.scaled_lr`)."""
    stems: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] != "__init__":
            stems.setdefault(parts[-1], []).append(".".join(parts))
    return stems


def problems_in(text: str) -> list[str]:
    found = []
    for match in REPO_PATH.finditer(text):
        path = match.group().rstrip(".,/")
        pattern = text[match.end():match.end() + 1] in ("<", "{", "*")  # tests/data/formats/test_<module>.py
        if not pattern and not (REPO / path).exists():
            found.append(f"{path}: no such file or folder")
    for path in RELATIVE_PY.findall(text):
        if not REPO_PATH.fullmatch(path) and not any((root / path).exists() for root in ROOTS):
            found.append(f"{path}: not in the repository, the package or the tests")
    for name in DOTTED.findall(text):
        problem = dotted_name_problem(name)
        if problem:
            found.append(f"{name}: {problem}")
    return found


def dotted_name_problem(name: str) -> str | None:
    """`dotted_problem` for a name that looks like the package's (not a file, not a params key)."""
    if name.endswith(FILE_SUFFIXES) or name in NOT_NAMES:
        return None
    if any(name == key or name.startswith(key + ".") for key in param_keys()):
        return None
    first = name.removeprefix("tinyclf.").split(".")[0]
    if name.startswith("tinyclf.") or first in top_names():
        return dotted_problem(name)
    homes = module_stems().get(first, [])
    if len(homes) == 1:  # a short form: the module's name, unique in the package
        return dotted_problem(homes[0] + name[len(first):])
    return None


def test_what_the_makefile_readme_and_docs_name_exists():
    problems = {doc: problems_in((REPO / doc).read_text()) for doc in DOCUMENTS}
    problems = {doc: sorted(set(found)) for doc, found in problems.items() if found}
    assert not problems, problems


def test_the_check_sees_what_is_gone():
    text = ("see `src/tinyclf/nowhere.py`, `train/test_nothing.py`, `tinyclf.train.run.no_such_function`, "
            "`recipe.BatchPreparer` and `python -m tinyclf.no_module`; but `train/cost.py`, "
            "`tinyclf.train.cost.PEAK_BF16_TFLOPS`, `train.checkpoint.RunCheckpoint.restore` and "
            "tests/test_doc_paths.py exist")
    assert sorted(p.split(":")[0] for p in problems_in(text)) == [
        "recipe.BatchPreparer", "src/tinyclf/nowhere.py", "tinyclf.no_module", "tinyclf.train.run.no_such_function",
        "train/test_nothing.py"]


def prose(source: str) -> str:
    """A module's docstrings and comments: where code names other code in words."""
    parts = [ast.get_docstring(node, clean=False) or "" for node in ast.walk(ast.parse(source))
             if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    parts += [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT]
    return "\n".join(parts)


def test_what_the_codes_docstrings_and_comments_name_in_backticks_exists():
    """Only backticked words: in code, `params.train` or `images.shape` are often variables."""
    files = [*PACKAGE.rglob("*.py"), *(REPO / "stages").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    problems = {}
    for path in sorted(files):
        found = {p for token in re.findall(r"`([^`\s]+)`", prose(path.read_text())) for p in problems_in(f"`{token}`")}
        if found:
            problems[str(path.relative_to(REPO))] = sorted(found)
    assert not problems, problems



def module_map() -> dict[str, str]:
    """docs/architecture.md's module map: each module row's first cell -> its tests cell. A row may
    name two modules (`serve/demo.py`, `serve/webui.py`) or a folder (`report/sections/`)."""
    rows = {}
    for line in (REPO / "docs" / "architecture.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0]] = cells[3]
    return rows


def unmapped(modules: list[str], rows: dict[str, str]) -> list[str]:
    named = {name for cell in rows for name in re.findall(r"`([\w/]+(?:\.py|/))`", cell)}
    return [module for module in modules
            if module not in named and not any(module.startswith(name) for name in named if name.endswith("/"))]


def test_every_module_has_a_row_in_the_map_that_names_its_tests():
    """Where a contributor finds a module's tests: the map's tests column (its paths are checked to
    exist above). Only atomic.py is tested through every stage's tests rather than a file of its own."""
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    rows = module_map()
    assert not unmapped(modules, rows), "modules missing from docs/architecture.md's map"
    untested = [cell for cell, tests in rows.items() if not re.search(r"`[\w/]*test_\w+\.py`", tests)]
    assert untested == ["`atomic.py`"], untested
    assert unmapped(["train/new_part.py", "report/sections/new.py"], rows) == ["train/new_part.py"]
