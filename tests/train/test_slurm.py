"""docs/multinode.md's sbatch script, submitted to a real Slurm cluster: two slurmd on this machine.

The cluster (tests/support/slurm_cluster.py: munged, slurmctld, `slurmd -N n1`, `slurmd -N n2` on
127.0.0.1) is started for this module and stopped at its end, even on failure. The script is taken
from the doc's code block, so the doc is what runs; only what a machine without GPUs needs is
changed (no --gpus-per-node, one process and one CPU per node), and the partition is given to
sbatch. The submit directory is what the doc asks for: the repository root with params.yaml,
data/prepared, stages/ and .venv (the last two linked to this checkout).

There is no sacct without an accounting database: a job's end state comes from `scontrol show job`
(kept at least MinJobAge, 4 s, after the end; the polls carry the last record seen) and from the
exit code of `sbatch --wait`.
Needs root and the Slurm packages (.ci/run installs them); skipped otherwise.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from support.helpers import REPO, venv_env, write_params
from support.multinode import assert_matches_one_process, output_files, reference_params, run_one_process
from support.slurm_cluster import DEFAULT_DIR, PARTITION, SlurmCluster, missing_requirement
from support.synthetic_prepared import write_prepared

from tinyclf.train import checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

DOC = REPO / "docs" / "multinode.md"
NUM_CLASSES = 4


def documented_script(nodes: int = 2, processes_per_node: int = 1) -> str:
    """The sbatch script of docs/multinode.md (its code block that starts with #!/bin/bash), with
    the GPU lines replaced: `processes_per_node` gloo processes stand for the GPUs of each node."""
    blocks = re.findall(r"```bash\n(#!/bin/bash\n.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, f"{DOC}: expected one sbatch code block, found {len(blocks)}"
    script = blocks[0]
    # (what the doc's script says, what a test node without GPUs needs): each must occur exactly once.
    changes = [
        ("#SBATCH --nodes=2 ", f"#SBATCH --nodes={nodes} "),
        ("#SBATCH --gpus-per-node=8\n", ""),  # no GPUs (GRES) configured on the test nodes
        ("#SBATCH --cpus-per-task=32", "#SBATCH --cpus-per-task=1"),  # each test node has one CPU
        ("GPUS_PER_NODE=8 ", f"GPUS_PER_NODE={processes_per_node} "),
    ]
    for old, new in changes:
        assert script.count(old) == 1, f"{DOC}: the sbatch script no longer has {old.strip()!r} once"
        script = script.replace(old, new)
    return script


@pytest.fixture(scope="module")
def cluster():
    if (why := missing_requirement()) is not None:
        pytest.skip(why)
    # Not under pytest's base directory (where conftest.py points TMPDIR): munged wants every
    # directory above its socket traversable by all, and that one is private. stop() removes it.
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="tinyclf-slurm-", dir=DEFAULT_DIR.parent)))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def submit_dir(root: Path, tree: dict, **script) -> Path:
    """A repository root as the script expects it, on a filesystem both (local) nodes see; `script`:
    documented_script's arguments."""
    write_prepared(root / "data" / "prepared", num_classes=NUM_CLASSES, train_per_class=33, val_per_class=25)
    write_params(root / "params.yaml", tree)
    (root / "stages").symlink_to(REPO / "stages")
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "train.sbatch").write_text(documented_script(**script))
    return root


def sbatch(cluster: SlurmCluster, root: Path, *options: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(["sbatch", "--parsable", f"--partition={PARTITION}", *options, "train.sbatch"], cwd=root,
                          env=cluster.env(venv_env(REPO)), capture_output=True, text=True, timeout=timeout)


def job_id(proc: subprocess.CompletedProcess) -> str:
    # --parsable prints "id" or "id;cluster" on the first line.
    match = re.match(r"(\d+)", proc.stdout)
    assert match, f"sbatch printed no job id (exit {proc.returncode}): {proc.stdout} {proc.stderr}"
    return match.group(1)


def job_fields(cluster: SlurmCluster, job: str, last: dict[str, str] | None = None) -> dict[str, str]:
    """The job's record; once slurmctld has purged an ended job (MinJobAge, 4 s here, checked on its
    own timer), `last`: the record seen before, so a slow poll on a loaded machine still reads its end."""
    proc = cluster.run("scontrol", "show", "job", "--oneliner", job, check=last is None)
    if proc.returncode != 0:
        return last
    return dict(field.split("=", 1) for field in proc.stdout.split() if "=" in field)


def job_log(root: Path, job: str) -> str:
    log = root / f"tinyclf-train-{job}.log"  # --output=%x-%j.log, relative to the submit directory
    return log.read_text(errors="replace") if log.exists() else f"({log.name} missing)"


def describe(cluster: SlurmCluster, root: Path, job: str) -> str:
    return f"--- job {job} log\n{job_log(root, job)[-6000:]}\n{cluster.log_tail()}"


def assert_completed(cluster: SlurmCluster, root: Path, proc: subprocess.CompletedProcess, num_nodes: int) -> str:
    """The job of `proc` (sbatch --wait) completed on `num_nodes` nodes (of n1, n2: a one-node job
    gets either) with two ranks in all, and only rank 0 wrote; returns its log."""
    job = job_id(proc)
    assert proc.returncode == 0, \
        f"sbatch --wait exited {proc.returncode}: {proc.stderr}\n{describe(cluster, root, job)}"
    fields = job_fields(cluster, job)
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), fields
    ran_on = cluster.run("scontrol", "show", "hostnames", fields["NodeList"]).stdout.split()
    assert len(ran_on) == num_nodes, fields
    log = job_log(root, job)
    # The script's echo, from each node's task: each slurmd ran one torchrun, with its node rank.
    for rank, node in enumerate(ran_on):
        assert f"node {rank} of {len(ran_on)}: {node}, rank 0 at 127.0.0.1:" in log, describe(cluster, root, job)
    run_json = json.loads((root / "results" / "train" / "run.json").read_text())
    assert (run_json["world_size"], run_json["nodes"]) == (2, num_nodes), run_json
    # All nodes run in the same (shared) directory; only rank 0 printed and wrote its outputs.
    assert log.count("wrote models/model.pt") == 1, describe(cluster, root, job)
    return log


def test_documented_sbatch_script_trains_on_two_nodes_like_one_process(cluster, tmp_path):
    tree = reference_params()
    root = submit_dir(tmp_path / "repo", tree)
    one = run_one_process(tree, root / "data" / "prepared", tmp_path / "one")

    start = time.monotonic()
    proc = sbatch(cluster, root, "--wait")
    elapsed = time.monotonic() - start
    assert_completed(cluster, root, proc, num_nodes=2)
    # Rank 1 wrote nothing of its own: the outputs are exactly the files one process writes.
    assert output_files(root) == output_files(one)
    assert_matches_one_process(one, root, tree, num_classes=NUM_CLASSES)
    assert elapsed < 120, elapsed  # about 20 s: far from any 600 s rendezvous or collective timeout


def test_the_one_node_variant_starts_a_process_per_gpu_on_one_node_like_one_process(cluster, tmp_path):
    """docs/multinode.md "One node with N GPUs": the same script with --nodes=1 and GPUS_PER_NODE=2."""
    tree = reference_params()
    root = submit_dir(tmp_path / "repo", tree, nodes=1, processes_per_node=2)
    one = run_one_process(tree, root / "data" / "prepared", tmp_path / "one")

    assert_completed(cluster, root, sbatch(cluster, root, "--wait"), num_nodes=1)
    assert output_files(root) == output_files(one)
    assert_matches_one_process(one, root, tree, num_classes=NUM_CLASSES)


def test_a_cancelled_job_resumes_from_its_checkpoint_when_submitted_again(cluster, tmp_path):
    # Enough epochs (about 0.1 s each) that the cancel lands mid-run, after the first epoch's checkpoint.
    tree = reference_params(train__epochs=20)
    epochs = tree["train"]["epochs"]
    root = submit_dir(tmp_path / "repo", tree)
    ck = root / "checkpoints" / "last.pt"

    job = job_id(sbatch(cluster, root))
    deadline = time.monotonic() + 120
    fields = job_fields(cluster, job)
    while not (ck.exists() and _epochs_done(ck) >= 1):
        state = (fields := job_fields(cluster, job, fields))["JobState"]
        assert state in ("PENDING", "RUNNING"), f"job {job} {state} before a checkpoint\n{describe(cluster, root, job)}"
        assert time.monotonic() < deadline, f"no checkpoint after 120 s\n{describe(cluster, root, job)}"
        time.sleep(0.05)
    cluster.run("scancel", job)
    # Until the nodes are idle again: the job's processes have ended (saved, logged) by then.
    while (state := (fields := job_fields(cluster, job, fields))["JobState"]) in ("PENDING", "RUNNING", "COMPLETING") \
            or not cluster.nodes_idle():
        assert time.monotonic() < deadline, f"job {job} still {state} after scancel"
        time.sleep(0.1)
    assert state == "CANCELLED", f"job {job} ended {state}\n{describe(cluster, root, job)}"
    stopped = checkpoint.load(ck)
    assert not stopped["complete"] and stopped["epoch"] < epochs, "the cancel came after the run ended"
    # Training saves at the next step on SIGTERM (what scancel sends first): said so on rank 0.
    assert "stopped by SIGTERM" in job_log(root, job), describe(cluster, root, job)

    one = run_one_process(tree, root / "data" / "prepared", tmp_path / "one")
    log = assert_completed(cluster, root, sbatch(cluster, root, "--wait"), num_nodes=2)
    resumed = re.search(r"resuming from checkpoints/last\.pt at epoch (\d+), optimizer step (\d+)", log)
    assert resumed and int(resumed.group(1)) > 1 and int(resumed.group(2)) > 0, log[-4000:]
    assert checkpoint.load(ck)["complete"]
    # DVCLive continued the interrupted run's history: one row per epoch, none twice.
    rows = (root / "results" / "train" / "plots" / "metrics" / "val" / "top1.tsv").read_text().splitlines()[1:]
    assert [row.split("\t")[0] for row in rows] == [str(e) for e in range(epochs)], rows
    # Same world size: the resumed run continues exactly where it stopped, so it ends where one
    # uninterrupted process does.
    assert output_files(root) == output_files(one)
    assert_matches_one_process(one, root, tree, num_classes=NUM_CLASSES)


def _epochs_done(path: Path) -> int:
    try:
        return checkpoint.load(path)["epoch"]
    except checkpoint.CheckpointError:
        return 0  # os.replace makes a half-written file unreachable; keep polling if it ever shows

