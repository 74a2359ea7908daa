"""Helpers the tests import: the real params.yaml shrunk for tests, repository copies, subprocesses.

Tests build the real configuration and then shrink it (tiny generated data, few epochs, CPU),
so a key renamed in params.yaml breaks the tests instead of passing unnoticed. Fixtures live in
conftest.py (pytest advises against importing from it).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]  # tests/support/helpers.py -> the repository
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_SUBSET = SHARED_DATA / "tiny-imagenet-200-subset.zip"
REAL_SUBSET_MD5 = "ae26e0a9e328f431f5ea014adfc1170b"

# What a test pipeline runs on: a tiny generated Tiny-ImageNet-format dataset, 32x32, a few CPU
# epochs of timm's test_resnet (373k parameters, BatchNorm; what these tests exercise is the
# pipeline's work, not the model's: its 1.5 MB files against resnet18's 45 MB cut a shrunk `dvc
# repro` from 24.5 to 19.4 s). Learnable enough to show real learning in seconds.
SHRINK = {
    "data.image_size": 32,
    "download.source": "generated",
    "download.generated.num_classes": 4,
    "download.generated.train_per_class": 24,
    "download.generated.val_per_class": 8,
    "download.generated.test_images": 4,
    "preprocess.workers": 1,
    "train.model": "test_resnet",
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.lr": 0.2,
    "train.warmup_epochs": 0,
    "train.mixup": 0.0,
    "train.cutmix": 0.0,
    "train.ema": False,
    "train.save_weights": "raw",
    "train.workers": 0,
    "evaluate.workers": 0,
    "evaluate.batch_size": 32,
    "evaluate.misclassified_examples": 4,
}


def real_params() -> dict:
    """The working copy's params.yaml as a nested dict (the params the code beside it expects)."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def committed_text(path: str, repo: Path = REPO) -> str:
    """A file as committed (HEAD), not as edited in the working copy: checks of committed files
    must not fail because a user tried a change. Outside a git checkout, the file on disk."""
    proc = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=repo, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else (repo / path).read_text()


def set_dotted(tree: dict, dotted: str, value) -> None:
    """Set tree['a']['b'] for 'a.b'; the key must already exist so typos fail loudly."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"{dotted} is not a key of params.yaml")
    node[leaf] = value


def shrunk_params(**overrides) -> dict:
    """The real params with SHRINK applied, then `overrides` (dotted keys, '__' for '.')."""
    tree = copy.deepcopy(real_params())
    for key, value in {**SHRINK, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
        set_dotted(tree, key, value)
    return tree


def write_params(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def run(cmd, cwd, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """Run a command, capture output; on failure show it (the assertion message is the log)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def venv_env(repo: Path) -> dict:
    """Environment for subprocesses in a repo copy: the venv's tools first, that copy's src importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    # Tests must not depend on the developer's git identity (CI has none).
    env.update(GIT_AUTHOR_NAME="tinyclf-test", GIT_AUTHOR_EMAIL="test@tinyclf.invalid",
               GIT_COMMITTER_NAME="tinyclf-test", GIT_COMMITTER_EMAIL="test@tinyclf.invalid")
    return env


PROJECT_FILES = ["dvc.yaml", "params.yaml", "corrections.csv", "stages", "src", ".dvc/config", ".dvc/.gitignore",
                 ".dvcignore", ".gitignore", "pyproject.toml"]


def make_repo_copy(dest: Path, params: dict | None = None) -> Path:
    """A git + DVC repository in `dest` with the project's pipeline files, committed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if not src.exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, target)
    if params is not None:
        write_params(dest / "params.yaml", params)
    env = venv_env(dest)
    run(["git", "init", "-q", "-b", "main"], dest, env)
    run(["git", "config", "user.name", "tinyclf-test"], dest, env)
    run(["git", "config", "user.email", "test@tinyclf.invalid"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "-m", "pipeline"], dest, env)
    return dest


def load_stage(name: str):
    """The stage script as a module, so tests call its real main() in-process (torch imports once)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def params_file(tmp: Path, **overrides) -> Path:
    return write_params(tmp / "params.yaml", shrunk_params(**overrides))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def torchvision_cifar_splits(archive: Path, dataset: str, root: Path):
    """(train, test) as torchvision's own CIFAR10 or CIFAR100 dataset class ("CIFAR10", "CIFAR100")
    reads the gzip tar `archive`, extracted into `root`. torchvision checks each batch against the md5
    of the REAL files, which synthetic images cannot match: that check alone is skipped; the meta
    check (its md5), the unpickling and the reshape are torchvision's own code."""
    import tarfile

    import pytest

    torchvision = pytest.importorskip("torchvision")
    with tarfile.open(archive, "r:gz") as tf:
        tf.extractall(root, filter="data")

    class Generated(getattr(torchvision.datasets, dataset)):
        def _check_integrity(self) -> bool:
            return True

    return Generated(root, train=True, download=False), Generated(root, train=False, download=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
