"""The "published" pipeline that test_remote.py and test_reproducibility.py share, and DVC helpers.

Running the real pipeline costs most of these tests' time, so it runs once per test process:
`published(tmp_path_factory)` builds a repository copy on shrunk params with
`train.deterministic: true`, runs `dvc repro`, commits the result the way a user would
(`git add -A`), adds a local directory remote as the default remote (committed, as docs/remotes.md
says), runs `dvc push` and pushes git to a bare repository ("origin"). Tests never change that
repository's workspace: they clone it (`clone_and_pull`) and work in the clone.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
# Committed to git (cache: false outputs), compared too.
GIT_FILES = ["results/evaluate/metrics.json", "results/export/parity.json", "results/train/metrics.json", "dvc.lock"]
STAGES = ["download", "preprocess", "train", "evaluate", "export", "summarize"]


@dataclass(frozen=True)
class Published:
    repo: Path          # the repository that ran the pipeline (do not modify its workspace)
    origin: Path        # bare git repository it was pushed to (branch main)
    storage: Path       # the local directory DVC remote "storage" (the committed default remote)
    digests: dict       # md5 of each of PULLED_FILES + GIT_FILES in `repo`


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
    """The pipeline run and published once per test process (see the module docstring)."""
    if "published" in _CACHE:
        return _CACHE["published"]
    root = tmp_path_factory.mktemp("published")
    repo = make_repo_copy(root / "repo", shrunk_params(train__deterministic=True))
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Run the pipeline")
    storage = root / "storage"
    dvc(repo, "remote", "add", "-d", "storage", str(storage))
    git(repo, "commit", "-q", "-am", "Add the default DVC remote")
    dvc(repo, "push")
    origin = root / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], root)
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    _CACHE["published"] = Published(repo=repo, origin=origin, storage=storage, digests=digests(repo))
    return _CACHE["published"]


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

    Hidden `.<random>.tmp` files are DVC's partial downloads (an interrupted pull leaves one behind);
    they are not objects, DVC never reads them, so they are skipped here."""
    problems = []
    for path in sorted((repo / ".dvc" / "cache" / "files" / "md5").rglob("*")):
        if path.is_file() and not path.name.startswith("."):
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
