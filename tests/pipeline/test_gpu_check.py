"""benchmarks/gpu_check.py, the one command for whoever has a GPU, runs end to end on this CPU
(`--device cpu --quick`), so it cannot rot between the sessions that have a GPU; it keeps to its
`--budget`, and a run killed or stopped midway leaves valid files with what it had measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from support.helpers import REAL_SUBSET, REPO, run, venv_env

PARTS = ("cuda_tests", "throughput", "real_run")
STARTUP = 5.0  # s: the interpreter's start and exit around the budget's clock, on a quiet machine
KILL = 2.0  # s: a part killed at the end of its share stops this much later at most (kill, last lines)


def gpu_check(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out), *extra]


def timed_run(out: Path, budget: int) -> tuple[subprocess.CompletedProcess, float, dict]:
    """The run, and its wall time less what a bare interpreter that loads torch takes right now: the
    clock starts after the interpreter has, and a busy machine (a second test suite beside this one)
    slows that start and the exit several times over, which no budget can hold."""
    start = time.monotonic()
    run([sys.executable, "-c", "import torch"], REPO, venv_env(REPO), timeout=120)
    interpreter = time.monotonic() - start
    start = time.monotonic()
    proc = run(gpu_check(out, "--budget", str(budget)), REPO, venv_env(REPO), timeout=budget + 120)
    return proc, time.monotonic() - start - interpreter, json.loads((out / "gpu_check.json").read_text())


def assert_kept_to(results: dict, budget: int, wall: float) -> None:
    assert wall < budget + STARTUP, f"{wall:.1f} s (beyond the interpreter's start) for a budget of {budget} s"
    assert results.get("complete") is True and results["budget_seconds"] == budget
    assert results["elapsed_seconds"] <= budget
    assert sum(results[name]["seconds"] for name in PARTS) <= budget
    for name in PARTS:  # each part within its own share
        assert results[name]["seconds"] <= results[name]["share_seconds"] + KILL, (name, results[name])


def test_gpu_check_runs_end_to_end_on_a_cpu(tmp_path):
    proc, wall, results = timed_run(tmp_path, 300)  # room for every part on a loaded 2-core machine
    assert_kept_to(results, 300, wall)
    assert results["cuda_tests"]["status"] == "ok"
    assert results["cuda_tests"]["counts"] == {"skipped": results["cuda_tests"]["counts"]["skipped"]}  # all skip here
    assert results["throughput"]["status"] == "ok" and results["throughput"]["not_measured"] == []
    rows = results["throughput"]["rows"]
    assert [r["config"].split(" (")[0] for r in rows] == [
        "default", "train.device_data=host", "train.aug_backend=workers", "train.compile=false",
        "train.channels_last=false", "train.precision=fp32"]
    assert all(r["images_per_s"] > 0 and 0 <= r["data_share"] < 1 and r["mfu"] is None for r in rows)
    real = results["real_run"]
    if REAL_SUBSET.exists():
        assert real["status"] == "ok", real
        assert real["train_images"] == 400 and real["run"]["generated"] is False  # real bytes, said so
        # Sized from a measured probe: 2 epochs timed, then a fresh run of the epochs that fit (--quick: 3).
        assert real["probe"]["epochs"] == 2 and real["probe"]["epoch_seconds"] > 0
        assert real["epochs_planned"] == real["epochs"] == 3 and real["run"]["epochs"] == 3
    else:
        assert real["status"] == "skipped" and "no Tiny ImageNet archive" in real["why"]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| train.device_data=host" in report and "## real_run:" in report
    assert "Partial result" not in report and "Cut short" not in report
    assert "gpu_check: throughput: ok" in proc.stdout


def test_a_budget_too_small_for_the_work_is_kept_and_what_was_cut_says_so(tmp_path):
    # Far too little for the quick run's processes: parts are killed at their shares, not let run on.
    _, wall, results = timed_run(tmp_path, 16)
    assert_kept_to(results, 16, wall)
    statuses = {name: results[name]["status"] for name in PARTS}
    if not REAL_SUBSET.exists():  # a fresh clone without ../shared: no archive to run on, said so
        assert statuses["real_run"] in ("skipped", "cut short"), results["real_run"]
        statuses = {name: status for name, status in statuses.items() if status != "skipped"}
    assert set(statuses.values()) <= {"ok", "cut short"}, results
    cut = [name for name, status in statuses.items() if status == "cut short"]
    assert cut, statuses
    assert all("share ran out" in results[name]["why"] or "budget was spent" in results[name]["why"] for name in cut)
    throughput = results["throughput"]
    if statuses["throughput"] == "cut short" and "budget was spent" in throughput["why"]:
        assert "rows" not in throughput  # a busy machine can spend the budget before it begins
    elif statuses["throughput"] == "cut short":  # every row is either measured or listed as not measured
        assert len(throughput["rows"]) + len(throughput["not_measured"]) == 6, throughput
    report = (tmp_path / "gpu_check.md").read_text()
    assert report.splitlines()[2].startswith("**Cut short**: " + ", ".join(cut))
    assert all(f"## {name}: cut short" in report for name in cut)


def start_and_wait(out: Path, ready, what: str) -> tuple[subprocess.Popen, dict]:
    """gpu_check in a session of its own, once its files show `ready`; polled, as a watcher would."""
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as sink:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen(gpu_check(out, "--budget", "300"), cwd=REPO, env=venv_env(REPO), stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "gpu_check.json").exists():
            results = json.loads((out / "gpu_check.json").read_text())  # never half-written: atomic
            if ready(results):
                return proc, results
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"gpu_check never showed {what} (exit {proc.poll()}): {log.read_text()}")


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(child) for child in (task / "children").read_text().split()}
            except OSError:
                continue  # it ended meanwhile
            todo += children - found
            found |= children
    return found


def alive(pid: int) -> bool:
    """Running or stopped; a zombie (dead, not yet reaped by whoever adopted it) does not count."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_run_killed_midway_leaves_valid_files_with_what_it_measured(tmp_path):
    out = tmp_path / "out"
    proc, _ = start_and_wait(out, lambda r: r["throughput"].get("rows"), "a throughput row")
    os.killpg(proc.pid, signal.SIGKILL)  # as a scheduler's hard limit: the script and its children, no warning
    proc.wait()
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["real_run"]["status"] in ("running", "not reached"), "a file written only at the end"
    assert results.get("complete") is False and "stopped_by" not in results
    statuses = [results[name]["status"] for name in PARTS]
    assert statuses[0] == "ok" and len(results["throughput"]["rows"]) >= 1
    # The parts done, at most one under way, and the rest not reached.
    done = statuses.count("ok")
    assert statuses[:done] == ["ok"] * done and statuses[done] in ("running", "not reached"), statuses
    assert statuses[done + 1:] == ["not reached"] * (len(PARTS) - done - 1), statuses
    report = (out / "gpu_check.md").read_text()
    assert report.splitlines()[2].startswith("**Partial result**") and "not reached" in report
    assert "| default (compile skipped: --quick on CPU) |" in report  # the row measured before the kill


def test_a_stopped_run_kills_what_it_started_and_says_so(tmp_path):
    out = tmp_path / "out"
    proc, _ = start_and_wait(out, lambda r: r["cuda_tests"]["status"] == "running", "the CUDA tests begun")
    deadline = time.monotonic() + 30
    while not (children := descendants(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children, "the part runs in a child process"
    proc.send_signal(signal.SIGTERM)  # a scheduler's polite stop, to the script only
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["complete"] is False and results["stopped_by"] == "SIGTERM"
    statuses = [results[name]["status"] for name in PARTS]
    stopped = statuses.index("cut short")  # the part under way (the CUDA tests, unless they had just ended)
    assert "stopped by SIGTERM" in results[PARTS[stopped]]["why"]
    assert statuses == ["ok"] * stopped + ["cut short"] + ["not reached"] * (len(PARTS) - stopped - 1), statuses
    assert not [pid for pid in children | descendants(proc.pid) if alive(pid)], "a child outlived the stop"
    assert "it was stopped by SIGTERM" in (out / "gpu_check.md").read_text()


def test_the_reduced_archive_keeps_the_official_layout(tmp_path):
    if not REAL_SUBSET.exists():
        import pytest

        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_check import reduced_archive

    from tinyclf.data.formats.tiny_imagenet import read_index

    out = reduced_archive(REAL_SUBSET, tmp_path / "r.zip", 3, 5, 2)
    index = read_index(out)
    assert len(index.classes) == 3 and len(index.members["train"]) == 15 and len(index.members["val"]) == 6
    assert index.labels["val"].count(0) == 2
    with zipfile.ZipFile(out) as zf:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
