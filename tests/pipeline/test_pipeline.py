"""The pipeline as users drive it: real `dvc repro`, `dvc exp run`, `dvc exp show`, plots, in a temp copy.

One shrunk pipeline run (tiny generated data, a couple of CPU epochs) per module, reused by the
tests below in order; each test states which DVC behaviour a user relies on.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from support.helpers import REAL_SUBSET_MD5, make_repo_copy, run, shrunk_params, venv_env

STAGES = ["download", "preprocess", "train", "evaluate", "export", "summarize"]
pytestmark = pytest.mark.slow


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    repo = make_repo_copy(tmp_path_factory.mktemp("pipeline") / "repo", shrunk_params())
    env = venv_env(repo)
    first = run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "baseline run"], repo, env)
    return repo, env, first.stdout + first.stderr


def test_repro_runs_all_six_stages_in_order(pipeline):
    repo, _, output = pipeline
    assert ran_stages(output) == STAGES
    for path in ["data/raw/tiny-imagenet-200.zip", "data/prepared/train/images.npy", "models/model.pt", "models/model.onnx",
                 "results/export/parity.json", "results/train/metrics.json", "results/evaluate/metrics.json", "results/summary/report.md"]:
        assert (repo / path).is_file(), path


def test_outputs_say_the_data_is_generated(pipeline):
    repo, _, _ = pipeline
    metrics = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert metrics["generated"] is True
    assert metrics["num_images"] == 4 * 8
    assert "GENERATED" in (repo / "results/summary/report.md").read_text()


def test_second_repro_runs_nothing(pipeline):
    repo, env, _ = pipeline
    out = run(["dvc", "repro"], repo, env)
    assert ran_stages(out.stdout + out.stderr) == []
    assert "didn't change" in out.stdout or "up to date" in out.stdout.lower()


def test_library_edit_reruns_only_what_it_affects(pipeline):
    repo, env, _ = pipeline
    report = repo / "src/tinyclf/report/results_sections.py"
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
    ("model/file.py", ["evaluate", "export", "summarize", "train"]),
    ("environment.py", ["evaluate", "train"]),
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


def test_exp_run_reruns_only_train_evaluate_export_summarize_and_show_lists_both(pipeline):
    repo, env, _ = pipeline
    out = run(["dvc", "exp", "run", "-n", "lower-lr", "-S", "train.lr=0.01"], repo, env)
    assert ran_stages(out.stdout + out.stderr) == ["train", "evaluate", "export", "summarize"]
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


def test_queued_experiment_runs_with_queue_start(pipeline):
    repo, env, _ = pipeline
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], repo, env)
    # an evaluate-only change keeps the queued run short (evaluate + summarize)
    run(["dvc", "exp", "run", "--queue", "-n", "queued-tta", "-S", "evaluate.tta_flip=true"], repo, env)
    run(["dvc", "queue", "start", "-j", "1"], repo, env)
    # `dvc queue start` returns at once; the worker runs the experiment in the background.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        if "queued-tta" in status and re.search(r"queued-tta\s.*Success", status):
            break
        if re.search(r"queued-tta\s.*Failed", status):
            logs = run(["dvc", "queue", "logs", "queued-tta"], repo, env, check=False)
            raise AssertionError(f"queued experiment failed:\n{status}\n{logs.stdout}{logs.stderr}")
        time.sleep(2)
    else:
        raise AssertionError(f"queued experiment did not finish:\n{status}")
    shown = run(["dvc", "exp", "show", "--json"], repo, env).stdout
    assert "queued-tta" in shown


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
