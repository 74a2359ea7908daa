"""`tinyclf remote-check`'s own checks of a DVC remote, run as a user types them
(`python -m tinyclf.commands.cli remote-check …`): a working local remote, a missing directory DVC
will create, a remote that points at a file, one that is not configured, and the configuration
mistakes explained without a pipeline. What needs a real S3-compatible server and a pushed pipeline
(an unreachable endpoint, a missing bucket, refused credentials) is in pipeline/test_remote.py,
which builds that pipeline once for all its tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.dvc_flow import dvc
from support.helpers import run, venv_env


def tinyclf(repo: Path, *args, timeout: int = 120):
    return run([sys.executable, "-m", "tinyclf.commands.cli", *map(str, args)], repo, venv_env(repo), check=False,
               timeout=timeout)


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A git + DVC repository with one tracked file and local remotes of every kind checked below."""
    root = tmp_path_factory.mktemp("remotes")
    repo = root / "repo"
    repo.mkdir()
    env = venv_env(repo)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    (repo / "data.txt").write_text("some data\n")
    run(["dvc", "add", "-q", "data.txt"], repo, env)
    (root / "storage").mkdir()
    (root / "a-file").write_text("not a directory\n")
    remotes = {"storage": root / "storage", "fresh": root / "not-yet" / "store", "afile": root / "a-file"}
    for name, url in remotes.items():
        run(["dvc", "remote", "add", name, str(url)], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "data and remotes"], repo, env)
    return repo, remotes


def test_remote_check_passes_for_a_working_local_remote(dvc_repo):
    repo, remotes = dvc_repo
    proc = tinyclf(repo, "remote-check", "-r", "storage")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"remote 'storage' ({remotes['storage']}): ok"


def test_remote_check_passes_for_a_missing_directory_dvc_will_create(dvc_repo):
    """A local remote whose directory does not exist yet is fine when its nearest existing parent is
    writable: `dvc push` creates it. The check says ok, and the push then really works."""
    repo, remotes = dvc_repo
    target = remotes["fresh"]
    assert not target.parent.exists()
    proc = tinyclf(repo, "remote-check", "-r", "fresh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"remote 'fresh' ({target}): ok"
    assert not target.parent.exists()  # the check never writes to the remote
    run(["dvc", "push", "-q", "-r", "fresh"], repo, venv_env(repo))
    assert [p for p in target.rglob("*") if p.is_file()]


def test_remote_check_names_a_remote_that_points_at_a_file(dvc_repo):
    repo, remotes = dvc_repo
    proc = tinyclf(repo, "remote-check", "-r", "afile")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"tinyclf remote-check: remote 'afile' ({remotes['afile']}): {remotes['afile']} is a file, not a directory; "
        "fix the remote's url"]


def test_remote_check_names_a_remote_that_is_not_configured(dvc_repo):
    repo, _ = dvc_repo
    proc = tinyclf(repo, "remote-check", "-r", "nope")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("tinyclf remote-check: remote 'nope' is not configured "
                               "(configured: afile, fresh, storage)")


def test_remote_check_explains_configuration_mistakes(tmp_path):
    """No pipeline needed: a bare DVC repository with a misconfigured local remote."""
    from tinyclf.commands.remote_check import RemoteProblem, check_remote

    repo = tmp_path / "bare"
    repo.mkdir()
    env = venv_env(repo)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q", env=env)
    with pytest.raises(RemoteProblem, match=r"no default DVC remote: add one with `dvc remote add -d storage <url>`"):
        check_remote(repo)
    with pytest.raises(RemoteProblem, match=r"remote 'storage' is not configured \(configured: none\)"):
        check_remote(repo, "storage")
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    dvc(repo, "remote", "add", "-d", "storage", str(not_a_dir), env=env)
    with pytest.raises(RemoteProblem, match=rf"remote 'storage' \({not_a_dir}\): .* is a file, not a directory"):
        check_remote(repo)
    dvc(repo, "remote", "modify", "storage", "url", str(tmp_path / "new" / "dir"), env=env)
    assert check_remote(repo).name == "storage"  # missing directories are fine: DVC creates them
