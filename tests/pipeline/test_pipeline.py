"""The pipeline as users drive it: real `dvc repro`, `dvc exp run`, `dvc exp show`, plots, in a temp copy.

One shrunk pipeline run (tiny generated data, a couple of CPU epochs), the one test_remote.py and
test_reproducibility.py start from too (support/dvc_flow.py), reused by the tests below in order;
each test states which DVC behaviour a user relies on.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from support.dvc_flow import published_copy
from support.helpers import REAL_SUBSET_MD5, make_repo_copy, run, shrunk_params, venv_env

STAGES = ["download", "preprocess", "train", "evaluate", "audit", "export", "summarize"]
pytestmark = pytest.mark.slow


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The shrunk pipeline after `dvc repro`, committed (support/dvc_flow.py: run once per test run),
    in a copy of its own: these tests run experiments and edit the library in it."""
    pub = published_copy(tmp_path_factory)
    return pub.repo, venv_env(pub.repo), pub.log


def test_repro_runs_all_seven_stages_in_order(pipeline):
    repo, _, output = pipeline
    assert ran_stages(output) == STAGES
    for path in ["data/raw/tiny-imagenet-200.zip", "data/prepared/train/images.npy", "models/model.pt", "models/model.onnx",
                 "results/export/parity.json", "results/train/metrics.json", "results/evaluate/metrics.json", "results/audit/summary.json",
                 "results/summary/report.md"]:
        assert (repo / path).is_file(), path


def test_outputs_say_the_data_is_generated(pipeline):
    repo, _, _ = pipeline
    evaluated = json.loads((repo / "results/evaluate/per_class.json").read_text())
    assert evaluated["generated"] is True
    assert evaluated["num_images"] == 4 * 8
    assert "GENERATED" in (repo / "results/summary/report.md").read_text()


def test_second_repro_runs_nothing(pipeline):
    repo, env, _ = pipeline
    out = run(["dvc", "repro"], repo, env)
    assert ran_stages(out.stdout + out.stderr) == []
    assert "didn't change" in out.stdout or "up to date" in out.stdout.lower()


def test_library_edit_reruns_only_what_it_affects(pipeline):
    repo, env, _ = pipeline
    report = repo / "src/tinyclf/report/sections/results.py"
    original = report.read_text()
    report.write_text(original + "\n# an edit a developer makes\n")
    try:
        out = run(["dvc", "repro"], repo, env)
        assert ran_stages(out.stdout + out.stderr) == ["summarize"]
    finally:
        report.write_text(original)
        run(["dvc", "repro"], repo, env)  # back to the committed state


def changed_stages(repo, env) -> dict:
    return json.loads(run(["dvc", "status", "--json"], repo, env).stdout or "{}")


@pytest.mark.parametrize("module, stages", [
    ("model/summary.py", ["summarize"]),  # the report's layer table must not re-run a training
    ("model/file.py", ["audit", "evaluate", "export", "summarize", "train"]),
    ("environment.py", ["audit", "evaluate", "train"]),
])
def test_model_module_edit_changes_only_its_stages(pipeline, module, stages):
    repo, env, _ = pipeline
    assert changed_stages(repo, env) == {}
    path = repo / "src/tinyclf" / module
    original = path.read_text()
    path.write_text(original + "\n# an edit a developer makes\n")
    try:
        changed = changed_stages(repo, env)
        assert sorted(changed) == stages, changed
        for stage in stages:
            assert changed[stage] == [{"changed deps": {f"src/tinyclf/{module}": "modified"}}], changed
    finally:
        path.write_text(original)
    assert changed_stages(repo, env) == {}


def test_a_corrections_edit_reruns_preprocess_only(pipeline):
    """corrections.csv (data.corrections) is a preprocess dependency: an added line makes `dvc status`
    name preprocess alone. (What preprocess then does with the line, read from the working directory
    as dvc runs it, and that removing it restores the data: tests/data/test_corrections.py.)"""
    repo, env, _ = pipeline
    assert changed_stages(repo, env) == {}
    path = repo / "corrections.csv"
    original = path.read_text()
    first = json.loads((repo / "data/prepared/train/sources.json").read_text())[0]
    path.write_text(original + f"{first},drop\n")
    try:
        assert changed_stages(repo, env) == {"preprocess": [{"changed deps": {"corrections.csv": "modified"}}]}
    finally:
        path.write_text(original)


def test_exp_run_reruns_train_and_what_follows_and_show_lists_both(pipeline):
    repo, env, _ = pipeline
    out = run(["dvc", "exp", "run", "-n", "lower-lr", "-S", "train.lr=0.01"], repo, env)
    assert ran_stages(out.stdout + out.stderr) == ["train", "evaluate", "audit", "export", "summarize"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    # rows: the workspace, then each commit with its experiments' revisions nested under it
    revs = [entry for entry in shown] + [rev for entry in shown for exp in (entry.get("experiments") or [])
                                         for rev in (exp.get("revs") or [])]
    found = {}
    for rev in revs:
        data = rev.get("data") or {}
        metrics = data.get("metrics", {}).get("results/evaluate/metrics.json", {}).get("data")
        lr = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("train", {}).get("lr")
        if metrics and lr is not None:
            found[(rev.get("name") or rev.get("rev"), lr)] = metrics
    assert ("lower-lr", 0.01) in found and any(lr == 0.2 for _, lr in found), found
    baseline = next(m for (_, lr), m in found.items() if lr == 0.2)
    assert found[("lower-lr", 0.01)]["loss"] != baseline["loss"]  # two rows, different metrics
    diff = json.loads(run(["dvc", "exp", "diff", "--json"], repo, env).stdout or "{}")
    # the workspace holds the experiment now; against HEAD it differs in train.lr
    assert diff["params"]["params.yaml"]["train.lr"] == {"old": 0.2, "new": 0.01, "diff": pytest.approx(-0.19)}


def test_exp_show_only_changed_fits_120_columns(pipeline):
    """What a user sees after one experiment (the run above): `dvc exp show --only-changed` in a
    120-column terminal names the runs and shows the param that changed and top-1 (and top-5 when it
    differs between the runs; --only-changed hides a column that does not), none cut to an ellipsis:
    the compared numbers come first and nothing else is a metric."""
    repo, env, _ = pipeline
    out = run(["dvc", "exp", "show", "--only-changed", "--no-pager"], repo, {**env, "COLUMNS": "120"}).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = next(line for line in lines if "Experiment" in line).split()
    assert header[:3] == ["Experiment", "Created", "top1"] and "train.lr" in header, header
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    top5 = set()
    for name, lr in (("lower-lr", 0.01), ("main", 0.2)):
        row = next(line for line in lines if f"[{name}]" in line or line.split()[:1] == [name]).split()
        metrics = next(json.loads(run(["git", "show", f"{rev}:results/evaluate/metrics.json"], repo, env).stdout)
                       for rev in _revs(shown, name))
        top5.add(metrics["top5"])
        assert f"{metrics['top1']:g}" in row and f"{lr:g}" in row, row
    assert ("top5" in header) == (len(top5) > 1), header


def _revs(shown: list, name: str) -> list[str]:
    """The git revision of the run called `name` (an experiment, or the baseline's branch) in
    `dvc exp show --json`."""
    found = []
    for entry in shown:
        if entry.get("name") == name:
            found.append(entry["rev"])
        for exp in entry.get("experiments") or []:
            found += [rev["rev"] for rev in exp.get("revs") or [] if rev.get("name") == name]
    return found


SWEEP = {"train.lr": [0.1, 0.3], "train.weight_decay": [0.0001, 0.0005]}


def wait_for_queue(repo, env, count: int, timeout: float = 400) -> str:
    """`dvc queue start` returns at once and a worker runs the queue: wait until `count` experiments
    succeeded (a failed one fails the test with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        failed = re.findall(r"^(\S+)\s.*Failed", status, re.M)
        if failed:
            logs = run(["dvc", "queue", "logs", failed[0]], repo, env, check=False)
            raise AssertionError(f"queued experiment failed:\n{status}\n{logs.stdout}{logs.stderr}")
        if len(re.findall(r"\sSuccess", status)) >= count:
            return status
        time.sleep(5)  # each `dvc queue status` costs half a CPU-second, taken from the experiments
    raise AssertionError(f"queued experiments did not finish:\n{status}")


@pytest.fixture(scope="module")
def sweep(pipeline):
    """README "Sweeps": a 2×2 grid queued with DVC's own syntax, run by `dvc queue start`. Each run
    stops at `evaluate`, as the README's tip for a sweep says (export and summarize run in every other
    pipeline test here; what four more of each cost: docs/benchmarks.md, "The test suite's time")."""
    repo, env, _ = pipeline
    # Back to the committed baseline (an earlier test left an experiment in the workspace).
    run(["git", "checkout", "--", "."], repo, env)
    run(["dvc", "checkout", "--force"], repo, env)
    grid = [f"{key}={','.join(map(str, values))}" for key, values in SWEEP.items()]
    queued = run(["dvc", "exp", "run", "--queue", "-S", grid[0], "-S", grid[1], "-S", "train.epochs=1", "evaluate"],
                 repo, env)
    assert queued.stdout.count("Queued experiment") == 4, queued.stdout
    run(["dvc", "queue", "start", "-j", "1"], repo, env)
    wait_for_queue(repo, env, 4)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    runs = {}
    for entry in shown:
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                params = (rev.get("data") or {}).get("params", {}).get("params.yaml", {}).get("data", {})
                if params.get("train", {}).get("epochs") == 1:
                    runs[rev["name"]] = (rev["rev"], params["train"]["lr"], params["train"]["weight_decay"])
    assert sorted((lr, wd) for _, lr, wd in runs.values()) == [(lr, wd) for lr in SWEEP["train.lr"]
                                                            for wd in SWEEP["train.weight_decay"]]
    return repo, env, runs


def test_a_queued_grid_runs_every_combination(sweep):
    repo, env, runs = sweep
    for name, (rev, _, _) in runs.items():
        metrics = json.loads(run(["git", "show", f"{rev}:results/evaluate/metrics.json"], repo, env).stdout)
        assert list(metrics) == ["top1", "top5", "mean_class_accuracy", "loss", "ece", "macro_f1"], name


def test_compare_ranks_the_runs_by_top1_with_the_params_that_differ(sweep, tmp_path):
    repo, env, runs = sweep
    out = run(["tinyclf", "compare", "--format", "json"], repo, env)
    rows = json.loads(out.stdout)
    by_name = {row["name"]: row for row in rows}
    assert set(runs) <= set(by_name)
    for name, (rev, lr, wd) in runs.items():
        metrics = json.loads(run(["git", "show", f"{rev}:results/evaluate/metrics.json"], repo, env).stdout)
        row = by_name[name]
        assert row["metrics"]["top1"] == metrics["top1"] and row["metrics"]["top5"] == metrics["top5"], name
        assert row["params"]["train.lr"] == lr and row["params"]["train.weight_decay"] == wd, name
        record = json.loads(run(["git", "show", f"{rev}:results/train/run.json"], repo, env).stdout)
        assert row["metrics"]["train_minutes"] == pytest.approx(record["train_seconds"] / 60) and record["train_seconds"] > 0
        assert row["metrics"]["images_per_s"] == record["images_per_s"] and row["metrics"]["cost_usd"] is None
    assert [row["metrics"]["top1"] for row in rows] == sorted((row["metrics"]["top1"] for row in rows), reverse=True)
    table = run(["tinyclf", "compare", *runs], repo, env).stdout.splitlines()
    assert table[0].split()[:3] == ["run", "train.lr", "train.weight_decay"] and len(table) == 2 + len(runs)
    png, page = tmp_path / "compare.png", tmp_path / "compare.html"
    run(["tinyclf", "compare", "--plot", str(png)], repo, env)
    run(["tinyclf", "compare", "--format", "md", "--plot", str(page)], repo, env)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(name in page.read_text() for name in runs) and "data:image/png;base64," in page.read_text()
    missing = run(["tinyclf", "compare", "no-such-run"], repo, env, check=False)
    assert missing.returncode == 1 and "no run with metrics named 'no-such-run'" in missing.stderr


def test_plots_show_renders_training_curves_and_evaluation_plots(pipeline):
    repo, env, _ = pipeline
    out = run(["dvc", "plots", "show", "--json"], repo, env)
    plots = json.loads(out.stdout)["data"]
    assert {"loss", "accuracy", "learning_rate"} <= set(plots)
    accuracy_files = {row["filename::field"] for row in plots["accuracy"][0]["content"]["data"]["values"]}
    assert accuracy_files == {"train/acc.tsv::acc", "val/top1.tsv::top1", "val/top5.tsv::top5"}
    assert "results/evaluate/plots/confusion_matrix.png" in plots
    html = run(["dvc", "plots", "show", "-o", str(repo / "plots_html")], repo, env)
    assert (repo / "plots_html" / "index.html").is_file(), html.stdout


def test_real_subset_preprocesses_through_exp_run(tmp_path, real_subset):
    """The issue's acceptance: the real archive via `-S download.source=<path> -S download.md5=<md5>`."""
    repo = make_repo_copy(tmp_path / "repo", shrunk_params(preprocess__workers=0))
    env = venv_env(repo)
    out = run(["dvc", "exp", "run", "preprocess", "-S", "data.image_size=0",
               "-S", f"download.source={real_subset}", "-S", f"download.md5={REAL_SUBSET_MD5}"], repo, env)
    assert ran_stages(out.stdout + out.stderr) == ["download", "preprocess"]
    prepared = repo / "data/prepared"
    train = np.load(prepared / "train/images.npy", mmap_mode="r")
    val = np.load(prepared / "val/images.npy", mmap_mode="r")
    assert train.shape == (20000, 64, 64, 3) and val.shape == (10000, 64, 64, 3)
    assert train.dtype == np.uint8
    classes = json.loads((prepared / "classes.json").read_text())
    assert classes["generated"] is False and len(classes["classes"]) == 200
