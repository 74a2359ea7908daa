"""The stages as a benchmark runs them: one process per stage, on a params.yaml derived from the
repository's (what `dvc repro` would run, without a DVC repository around it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def params_file(path: Path, dataset: str, overrides: dict) -> Path:
    """The repository's params.yaml with `data.dataset` and the dotted `overrides` set, written to `path`."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in {"data.dataset": dataset, **overrides}.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"{Path(sys.argv[0]).stem}: {dotted} is not a key of params.yaml")
        node[leaf] = value
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def stage(name: str, params: Path, *args: str, quiet: bool = False) -> str:
    """Run stages/<name>.py on `params`; print its last line (unless `quiet`) and return its stderr."""
    cmd = [sys.executable, str(REPO / "stages" / f"{name}.py"), "--params", str(params), "--no-progress", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{Path(sys.argv[0]).stem}: {name} failed:\n{proc.stderr}")
    said = (proc.stdout + proc.stderr).strip().splitlines()
    if not quiet:
        print(said[-1] if said else f"{name}: done", flush=True)
    return proc.stderr
