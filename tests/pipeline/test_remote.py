"""DVC remotes against real servers: a local directory remote and an S3 server on 127.0.0.1 (moto).

The pipeline runs once (tests/support/dvc_flow.py: generated data, shrunk params) and is pushed; every test
clones it into a fresh directory the way a new user would (`git clone` + `dvc pull`) and checks
that nothing needs to run again, that experiments travel with `dvc exp push/pull`, and what
happens when a remote is unreachable, a pull is interrupted, or a pulled output was edited.
`tinyclf remote-check`'s checks that need no server or pipeline are in tests/commands/test_remote_check.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from support.dvc_flow import (PULLED_FILES, assert_up_to_date, cache_objects, cache_problems, clone, clone_and_pull,
                              digests, dvc, published)
from support.helpers import REPO, venv_env
from support.s3_server import AuthS3Server, S3Server, closed_port

BUCKET = "tinyclf-test"


@pytest.fixture(scope="module")
def pub(tmp_path_factory):
    return published(tmp_path_factory)


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        server.create_bucket(BUCKET)
        yield server


def s3_remote(repo, s3, env, name="s3store", bucket=BUCKET, endpoint=None):
    """An S3 remote configured the way docs/remotes.md says for an S3-compatible endpoint: url and
    endpoint in .dvc/config.local (this test server's port changes every run), keys in env vars."""
    dvc(repo, "remote", "add", "--local", "-f", name, f"s3://{bucket}/store", env=env)
    dvc(repo, "remote", "modify", "--local", name, "endpointurl", endpoint or s3.endpoint_url, env=env)


@pytest.fixture(scope="module")
def pushed_to_s3(pub, s3):
    env = s3.env(venv_env(pub.repo))
    s3_remote(pub.repo, s3, env)
    out = dvc(pub.repo, "push", "-r", "s3store", env=env)
    return out


def test_checkpoints_are_not_dvc_outputs_so_a_clone_lacks_nothing():
    """A declared output that is not pushed (`push: false`) makes `dvc pull` in a fresh clone fail
    and `dvc repro` there re-run training (measured with DVC 3.67, see docs/remotes.md); every
    cache: false output must be committable to git for the same reason."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    unpushed, cache_false = [], []
    for name, stage in stages.items():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            if opts.get("push") is False:
                unpushed.append(f"{name}: {path}")
            if opts.get("cache") is False:
                cache_false.append(path)
    assert not unpushed, f"outputs with push: false break `dvc pull` + `dvc repro` in a fresh clone: {unpushed}"
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *cache_false], cwd=REPO,
                             capture_output=True, text=True).stdout.split()
    assert not ignored, f"cache: false outputs must be committed to git but .gitignore ignores them: {ignored}"


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_local_remote_fresh_clone_pulls_everything_and_runs_nothing(pub, tmp_path):
    # What `dvc push` put in the remote directory: one object per file plus the .dir listings.
    assert len(list(pub.storage.rglob("*.dir"))) >= 4
    repo = clone_and_pull(pub, tmp_path / "clone")
    assert digests(repo) == pub.digests
    assert_up_to_date(repo)
    assert cache_problems(repo) == []


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_s3_remote_fresh_clone_pulls_everything_and_runs_nothing(pub, s3, pushed_to_s3, tmp_path):
    keys = s3.list_keys(BUCKET, "store/files/md5/")
    local_objects = sorted(str(p.relative_to(pub.storage)) for p in pub.storage.rglob("*") if p.is_file())
    assert sorted(k.removeprefix("store/") for k in keys) == local_objects

    repo = clone(pub, tmp_path / "clone")
    env = s3.env(venv_env(repo))
    s3_remote(repo, s3, env)
    dvc(repo, "pull", "-r", "s3store", env=env)
    assert digests(repo) == pub.digests
    assert_up_to_date(repo, env)
    assert cache_problems(repo) == []


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_experiment_travels_with_exp_push_and_exp_pull(pub, tmp_path):
    # An evaluate-only experiment: re-runs evaluate and summarize (not training, to keep this fast);
    # its metrics and its DVC-cached outputs (predictions, plots) differ from the baseline.
    author = clone_and_pull(pub, tmp_path / "author")
    dvc(author, "exp", "run", "-n", "tta-flip", "-S", "evaluate.tta_flip=true")
    exp_files = ["results/evaluate/metrics.json", "results/evaluate/predictions.csv", "params.yaml", "dvc.lock"]
    exp_digests = digests(author, exp_files)
    assert exp_digests["results/evaluate/metrics.json"] != pub.digests["results/evaluate/metrics.json"]
    dvc(author, "exp", "push", "origin", "tta-flip")  # git refs to origin, outputs to the default DVC remote

    reader = clone_and_pull(pub, tmp_path / "reader")
    dvc(reader, "exp", "pull", "origin", "tta-flip")
    assert "tta-flip" in dvc(reader, "exp", "list", "--name-only").stdout
    dvc(reader, "exp", "apply", "tta-flip")
    assert yaml.safe_load((reader / "params.yaml").read_text())["evaluate"]["tta_flip"] is True
    assert digests(reader, exp_files) == exp_digests
    # Everything the experiment's dvc.lock names is present: nothing to re-run.
    assert "Data and pipelines are up to date." in dvc(reader, "status").stdout


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_push_to_unreachable_remote_fails_names_it_and_keeps_workspace(pub, s3):
    # Pushing reads the workspace and cache only, so the published repository itself can push.
    repo = pub.repo
    before = digests(repo)
    objects = cache_objects(repo)
    env = s3.env(venv_env(repo))
    s3_remote(repo, s3, env, name="dead", endpoint=f"http://127.0.0.1:{closed_port()}")

    push = dvc(repo, "push", "-r", "dead", env=env, check=False)
    assert push.returncode != 0
    # DVC names the endpoint URL but not the remote (DVC 3.67: "unexpected error - Could not connect…").
    assert "Could not connect to the endpoint URL" in push.stderr, push.stderr

    check = subprocess.run([sys.executable, "-m", "tinyclf.commands.remote_check", "-r", "dead"], cwd=repo, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 1
    assert "remote 'dead'" in check.stderr and "cannot connect to 127.0.0.1" in check.stderr, check.stderr

    assert digests(repo) == before
    assert cache_objects(repo) == objects and cache_problems(repo) == []
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_push_to_missing_bucket_fails_and_the_check_says_which(pub, s3):
    repo = pub.repo
    env = s3.env(venv_env(repo))
    s3_remote(repo, s3, env, name="nobucket", bucket="tinyclf-no-such-bucket")
    wrapped = subprocess.run([sys.executable, "-m", "tinyclf.commands.remote_check", "-r", "nobucket", "push"],
                             cwd=repo, env=env, capture_output=True, text=True)
    assert wrapped.returncode != 0
    assert "NoSuchBucket" in wrapped.stderr  # DVC's own message
    assert "remote 'nobucket'" in wrapped.stderr and "bucket 'tinyclf-no-such-bucket' does not exist" in wrapped.stderr
    assert digests(repo) == pub.digests and cache_problems(repo) == []
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_a_rejected_key_fails_the_push_changes_nothing_and_the_check_names_it(pub):
    """An S3 server that checks signatures (moto with IAM authentication on): a wrong secret or an
    unknown key id fails `dvc push`, leaves the workspace, the cache and the remote as they were, and
    `tinyclf remote-check push` says in one line that the credentials were refused."""
    repo = pub.repo
    before, objects = digests(repo), cache_objects(repo)
    with AuthS3Server() as server:
        env = server.env(venv_env(repo))
        s3_remote(repo, server, env, name="authed", bucket=server.bucket)
        # The server's reason (s3fs passes on its message, not its code), for a wrong secret and an unknown key.
        wrong = {"signature we calculated does not match": server.env(venv_env(repo), secret="not-the-secret"),
                 "Access Key Id you provided does not exist": server.env(venv_env(repo),
                                                                         access_key="AKIANOSUCHKEY00000000")}
        for reason, bad_env in wrong.items():
            push = dvc(repo, "push", "-r", "authed", env=bad_env, check=False)
            # DVC 3.67 says only "Forbidden … (403) … HeadObject": a HEAD reply carries no error code.
            assert push.returncode != 0 and "Forbidden" in push.stderr, push.stderr
            assert server.objects() == {}  # nothing reached the remote
            wrapped = subprocess.run([sys.executable, "-m", "tinyclf.commands.cli", "remote-check", "-r", "authed",
                                      "push"], cwd=repo, env=bad_env, capture_output=True, text=True)
            assert wrapped.returncode != 0
            ours = [line for line in wrapped.stderr.splitlines() if line.startswith("tinyclf remote-check:")]
            assert len(ours) == 1, wrapped.stderr
            assert f"dvc push failed: remote 'authed' (s3://{server.bucket}/store via {server.endpoint_url})" in ours[0]
            assert f"access to bucket '{server.bucket}' denied" in ours[0] and reason in ours[0], ours[0]
            assert "check the credentials" in ours[0]

        # The server does accept the right key: the refusals above were the credentials'.
        dvc(repo, "push", "-r", "authed", env=env)
        pushed = server.objects()
        assert pushed and "in sync" in dvc(repo, "status", "-c", "-r", "authed", env=env).stdout
        push = dvc(repo, "push", "-r", "authed", env=wrong["signature we calculated does not match"], check=False)
        assert push.returncode != 0
        assert server.objects() == pushed  # the remote is intact
        check = subprocess.run([sys.executable, "-m", "tinyclf.commands.cli", "remote-check", "-r", "authed"], cwd=repo,
                               env=env, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout.strip().endswith("ok"), check.stderr

    assert digests(repo) == before
    assert cache_objects(repo) == objects and cache_problems(repo) == []
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_remote_check_passes_for_working_remotes(pub, s3, pushed_to_s3):
    env = s3.env(venv_env(pub.repo))
    for name in ("storage", "s3store"):
        check = subprocess.run([sys.executable, "-m", "tinyclf.commands.remote_check", "-r", name], cwd=pub.repo,
                               env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        assert f"remote '{name}'" in check.stdout and check.stdout.strip().endswith("ok")


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_interrupted_pull_completes_when_run_again(pub, s3, pushed_to_s3, tmp_path):
    repo = clone(pub, tmp_path / "clone")
    env = s3.env(venv_env(repo))
    s3_remote(repo, s3, env)
    proc = subprocess.Popen(["dvc", "pull", "-r", "s3store"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Kill it as soon as the download has started (first file in the cache), like a dropped
        # connection or Ctrl-C; checkout into the workspace comes after every download.
        deadline = time.monotonic() + 120
        while proc.poll() is None and not cache_objects(repo) and time.monotonic() < deadline:
            time.sleep(0.005)
        interrupted = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert interrupted, "dvc pull finished before it could be interrupted"
    assert not (repo / "models" / "model.pt").exists()

    dvc(repo, "pull", "-r", "s3store", env=env)
    assert digests(repo) == pub.digests
    assert cache_problems(repo) == []  # a partial download may remain as a .tmp file: harmless
    assert "Data and pipelines are up to date." in dvc(repo, "status", env=env).stdout


@pytest.mark.slow  # runs the pipeline once per module (tests/support/dvc_flow.py)
def test_pull_refuses_to_overwrite_a_locally_modified_output(pub, tmp_path):
    repo = clone_and_pull(pub, tmp_path / "clone")
    model = repo / "models" / "model.pt"
    edited = model.read_bytes() + b"local edit"
    model.write_bytes(edited)  # the pulled file is a copy (cache.type default), not the cache object
    metrics = repo / "results" / "evaluate" / "metrics.json"
    metrics.write_text('{"edited": true}\n')

    pull = dvc(repo, "pull", check=False)
    assert pull.returncode == 1
    assert "Can't remove the following unsaved files without confirmation. Use `--force` to force." in pull.stderr
    assert str(model) in pull.stderr
    assert model.read_bytes() == edited  # not silently lost
    assert metrics.read_text() == '{"edited": true}\n'  # git-tracked metrics: dvc pull never touches them
    assert cache_problems(repo) == []
    status = dvc(repo, "status").stdout
    assert "modified:" in status and "models/model.pt" in status, status

    dvc(repo, "pull", "--force")  # the documented way to discard the edit
    assert digests(repo, PULLED_FILES) == {k: pub.digests[k] for k in PULLED_FILES}
    assert cache_problems(repo) == []
