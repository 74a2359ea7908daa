"""The "published" pipeline that test_pipeline.py, test_remote.py and test_reproducibility.py share,
and DVC helpers.

Running the real pipeline costs most of these tests' time, so it runs once per test run, whatever
the number of xdist workers: `published(tmp_path_factory)` builds, under a file lock in the run's
shared temp folder, a repository copy on shrunk params with `train.deterministic: true`, runs
`dvc repro`, commits the result the way a user would (`git add -A`), adds a local directory remote
as the default remote (committed, as docs/remotes.md says), runs `dvc push` and pushes git to a bare
repository ("origin"). Each test process then gets its own copy of all three (tests push, add
remotes, run experiments), its remotes pointed at that copy. Tests that must not change the
published workspace clone it (`clone_and_pull`) and work in the clone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from support.helpers import make_repo_copy, run, shrunk_params, venv_env

# What a fresh clone must get back byte for byte: raw archive, prepared arrays, model, evaluation.
PULLED_FILES = [
    "data/raw/tiny-imagenet-200.zip",
    "data/prepared/train/images.npy",
    "data/prepared/train/labels.npy",
    "data/prepared/val/images.npy",
    "data/prepared/val/labels.npy",
    "data/prepared/classes.json",
    "data/prepared/stats.json",
    "models/model.pt",
    "models/model.onnx",
    "results/evaluate/predictions.csv",
    "results/evaluate/per_class.json",
    "results/evaluate/plots/confusion_matrix.png",
    "results/summary/report.md",
]
OBJECT_NAME = re.compile(r"[0-9a-f]{30}(\.dir)?")  # a cache object's file name in its 2-digit folder
# Committed to git (cache: false outputs), compared too.
GIT_FILES = ["results/evaluate/metrics.json", "results/export/parity.json", "results/train/metrics.json", "dvc.lock"]
STAGES = ["download", "preprocess", "train", "evaluate", "audit", "export", "summarize"]


@dataclass(frozen=True)
class Published:
    repo: Path          # the repository that ran the pipeline (do not modify its workspace)
    origin: Path        # bare git repository it was pushed to (branch main)
    storage: Path       # the local directory DVC remote "storage" (the committed default remote)
    digests: dict       # md5 of each of PULLED_FILES + GIT_FILES in `repo`
    log: str            # what the first `dvc repro` printed


_CACHE: dict[str, Published] = {}


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def digests(repo: Path, files=PULLED_FILES + GIT_FILES) -> dict:
    return {name: md5_of(repo / name) for name in files}


def dvc(repo: Path, *args, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    return run(["dvc", *args], repo, env or venv_env(repo), check=check, timeout=timeout)


def git(repo: Path, *args, env=None) -> subprocess.CompletedProcess:
    return run(["git", *args], repo, env or venv_env(repo))


def published(tmp_path_factory) -> Published:
    """This test process's copy of the pipeline run and published once per test run (see the module
    docstring)."""
    if "published" in _CACHE:
        return _CACHE["published"]
    _CACHE["published"] = published_copy(tmp_path_factory)
    return _CACHE["published"]


def published_copy(tmp_path_factory) -> Published:
    """A copy of its own of the published pipeline, for tests that change its workspace."""
    built = _built_once(tmp_path_factory)
    root = tmp_path_factory.mktemp("published")
    shutil.copytree(built, root, symlinks=True, dirs_exist_ok=True)
    repo, origin, storage = root / "repo", root / "origin.git", root / "storage"
    # The copy's own remotes: origin in git's config, the DVC remote in the committed config.
    git(repo, "remote", "set-url", "origin", str(origin))
    dvc(repo, "remote", "modify", "storage", "url", str(storage))
    git(repo, "commit", "-q", "--amend", "-a", "--no-edit")
    git(repo, "push", "-q", "-f", "origin", "main")
    return Published(repo=repo, origin=origin, storage=storage, digests=digests(repo),
                     log=(root / "repro.log").read_text())


def _built_once(tmp_path_factory) -> Path:
    """The published pipeline, built by whichever test process asks first (xdist workers share the
    run's temp folder, the parent of their own)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "published-pipeline"
    with FileLock(f"{shared}.lock"):
        if not (shared / "built").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            _build(shared)
            (shared / "built").touch()
    return shared


def _build(root: Path) -> None:
    repo = make_repo_copy(root / "repo", shrunk_params(train__deterministic=True))
    (root / "repro.log").write_text(_output(dvc(repo, "repro")))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Run the pipeline")
    dvc(repo, "remote", "add", "-d", "storage", str(root / "storage"))
    git(repo, "commit", "-q", "-am", "Add the default DVC remote")
    dvc(repo, "push")
    run(["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], root)
    git(repo, "remote", "add", "origin", str(root / "origin.git"))
    git(repo, "push", "-q", "origin", "main")


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def clone(pub: Published, dest: Path) -> Path:
    """`git clone` of origin into `dest` (no data yet), with a git identity for commits there."""
    run(["git", "clone", "-q", "-b", "main", str(pub.origin), str(dest)], dest.parent)
    git(dest, "config", "user.name", "tinyclf-test")
    git(dest, "config", "user.email", "test@tinyclf.invalid")
    return dest


def clone_and_pull(pub: Published, dest: Path, *pull_args, env=None) -> Path:
    clone(pub, dest)
    dvc(dest, "pull", *pull_args, env=env)
    return dest


def cache_problems(repo: Path) -> list[str]:
    """Cache objects whose content does not hash to their name (DVC 3 names objects by md5,
    .dir listings included); an empty list means the cache verifies.

    Files named otherwise than an object (30 hex digits after the 2 of their folder, `.dir` for a
    listing) are DVC's partial downloads, `.<random>.tmp` or `<name>.<random>.tmp` by the transfer
    that was cut (an interrupted pull leaves one behind); DVC never reads them, so they are skipped."""
    problems = []
    for path in sorted((repo / ".dvc" / "cache" / "files" / "md5").rglob("*")):
        if path.is_file() and OBJECT_NAME.fullmatch(path.name):
            expected = path.parent.name + path.name.removesuffix(".dir")
            if md5_of(path) != expected:
                problems.append(str(path.relative_to(repo)))
    return problems


def cache_objects(repo: Path) -> list[Path]:
    base = repo / ".dvc" / "cache" / "files" / "md5"
    return sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []


def assert_up_to_date(repo: Path, env=None) -> None:
    """`dvc status` reports nothing changed and `dvc repro` runs no stage."""
    status = dvc(repo, "status", env=env)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout + status.stderr
    repro = dvc(repo, "repro", env=env)
    out = repro.stdout + repro.stderr
    assert "Running stage" not in out, out
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in out, out
