"""`tinyclf quickstart`, run as a user types it (`python -m tinyclf.commands.cli quickstart`): the whole
pipeline as a DVC experiment on generated data, in a committed copy of the repository.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from support.helpers import make_repo_copy, run, venv_env


def tinyclf(repo: Path, *args, timeout: int = 120):
    return run([sys.executable, "-m", "tinyclf.commands.cli", *map(str, args)], repo, venv_env(repo), check=False,
               timeout=timeout)


def experiment_rows(shown: list) -> list[dict]:
    """`dvc exp show --json`: the workspace and each commit, with their experiments' revisions nested."""
    return [rev for entry in shown for exp in (entry.get("experiments") or []) for rev in (exp.get("revs") or [])]


@pytest.fixture(scope="module")
def quickstarted(tmp_path_factory):
    """(repo, committed params.yaml bytes, the finished `tinyclf quickstart`) in a committed copy of
    the repository with the committed params.yaml, as a fresh clone has."""
    repo = make_repo_copy(tmp_path_factory.mktemp("quickstart") / "repo", params=None)
    committed = (repo / "params.yaml").read_bytes()
    return repo, committed, tinyclf(repo, "quickstart", timeout=900)


@pytest.mark.slow  # the seven stages on generated data: about 1.5 minutes on 2 CPU cores
def test_quickstart_runs_an_experiment_reports_it_and_leaves_the_workspace_alone(quickstarted):
    repo, committed, proc = quickstarted
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\s*report:\s+quickstart/results/summary/report\.md$", proc.stdout, re.M), proc.stdout
    assert "GENERATED data" in proc.stdout
    # DVC's "No file hash info found … It won't be created" for every output of a fresh clone reads
    # like a failure to a newcomer; DVC's note on untracked files after the run likewise.
    assert "No file hash info" not in proc.stderr and "untracked files" not in proc.stderr, proc.stderr

    # The workspace is the committed reference setup: nothing modified, nothing new for git.
    status = run(["git", "status", "--porcelain"], repo, venv_env(repo)).stdout
    assert status == "", status
    assert (repo / "params.yaml").read_bytes() == committed
    assert not (repo / "models").exists() and not (repo / "dvc.lock").exists()

    report = (repo / "quickstart/results/summary/report.md").read_text()
    assert "GENERATED" in report
    assert "**ONNX export:** `models/model.onnx`" in report  # the export stage ran and passed parity
    # The report's figure links resolve inside the copy.
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (repo / "quickstart/results/summary" / link).is_file(), link
    metrics = json.loads((repo / "quickstart/results/evaluate/metrics.json").read_text())
    evaluated = json.loads((repo / "quickstart/results/evaluate/per_class.json").read_text())
    assert evaluated["generated"] is True
    # The generated val set (10 classes × 20) is the test split; val is a fifth of the train split.
    assert evaluated["split"] == "test" and evaluated["num_images"] == 10 * 20
    assert metrics["top1"] >= 0.5  # 10 classes (chance 10%); README quotes ~80% for this run
    # The report names the epoch kept and shows the test figures beside the val ones that chose it.
    selected = json.loads((repo / "quickstart/results/evaluate/val_metrics.json").read_text())
    assert "- **Epoch kept** (`train.keep`): epoch " in report and "(the best val/top1, " in report
    assert "| metric | test | val (chose the epoch) |" in report
    assert f"| top-1 accuracy | {metrics['top1']:.2%} | {selected['top1']:.2%} |" in report

    # An ordinary DVC experiment: `dvc exp show` lists it with the quickstart params and its metrics.
    def shown_rows():
        return experiment_rows(json.loads(run(["dvc", "exp", "show", "--json"], repo, venv_env(repo)).stdout))

    rows = shown_rows()
    assert [row["name"] for row in rows] == ["quickstart"], rows
    data = rows[0]["data"]
    train = data["params"]["params.yaml"]["data"]["train"]
    assert train["epochs"] == 3 and train["model"] == "tiny_resnet50"
    assert data["params"]["params.yaml"]["data"]["download"]["source"] == "generated"
    assert data["metrics"]["results/evaluate/metrics.json"]["data"]["top1"] == metrics["top1"]
    assert yaml.safe_load(committed)["train"]["epochs"] == 150  # the reference setup, untouched


@pytest.mark.slow  # one more experiment (one epoch, then evaluate): about half a minute
def test_a_change_tried_from_a_branch_of_the_quickstart_reads_at_120_columns(quickstarted):
    """README "Experiments", as the quickstart's last line says: branch the quickstart, run one
    `-S train.lr` experiment, and `dvc exp show --only-changed` in a 120-column terminal names the
    runs and shows train.lr, top-1 and top-5, none cut to an ellipsis. The experiment trains one
    epoch and stops at evaluate (README "Sweeps"): the table is what is tested. The train.epochs
    column that this shortcut adds is dropped from it (`--drop`): a user's `-S train.lr` run has no
    such column, and with it the table's fit at 120 columns hung on how many digits the metrics
    happened to print (what the whole run cost: docs/benchmarks.md, "The test suite's time")."""
    repo, _, proc = quickstarted
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hint = next(line for line in proc.stdout.splitlines() if "try a change from this setup:" in line)
    commands = hint.split(":", 1)[1].split(", then ")[0]
    assert commands.strip() == "dvc exp branch quickstart my-setup && git checkout my-setup && dvc checkout", hint
    env = venv_env(repo)
    for command in ("dvc exp branch quickstart my-setup", "git checkout my-setup", "dvc checkout"):
        run(command.split(), repo, env)
    assert run(["dvc", "status", "--quiet"], repo, env, check=False).returncode == 0  # nothing to re-run
    run(["dvc", "exp", "run", "-n", "lower-lr", "-S", "train.lr=0.2", "-S", "train.epochs=1", "evaluate"], repo, env,
        timeout=600)

    out = run(["dvc", "exp", "show", "--only-changed", "--no-pager", "--drop", "train.epochs"], repo,
              {**env, "COLUMNS": "120"}).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120, out
    header = next(line for line in lines if "Experiment" in line).split()
    assert header[:4] == ["Experiment", "Created", "top1", "top5"] and "train.lr" in header, out
    experiments = experiment_rows(json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout))
    lower_lr = next(r["rev"] for r in experiments if r["name"] == "lower-lr")
    for name, rev, lr in (("my-setup", "HEAD", 0.4), ("lower-lr", lower_lr, 0.2)):
        row = next(line for line in lines if f"[{name}]" in line or line.split()[:1] == [name])
        metrics = json.loads(run(["git", "show", f"{rev}:results/evaluate/metrics.json"], repo, env).stdout)
        assert f" {metrics['top1']:g} " in row and f" {metrics['top5']:g} " in row, (row, metrics)
        assert f" {lr:g} " in row, row


# A stand-in for the seven stages, with the outputs the quickstart reads: the quickstart's own
# steps (experiment, replacing it, copying its report) run for real around it in seconds.
FAKE_PIPELINE = """\
stages:
  fake:
    cmd: >-
      python -c "import json, pathlib, yaml;
      p = yaml.safe_load(open('params.yaml'));
      pathlib.Path('results/summary').mkdir(parents=True, exist_ok=True);
      pathlib.Path('results/summary/report.md').write_text('GENERATED run, epochs %s' % p['train']['epochs']);
      pathlib.Path('results/evaluate').mkdir(parents=True, exist_ok=True);
      json.dump(dict(top1=0.9, top5=1.0), open('results/evaluate/metrics.json', 'w'));
      json.dump(dict(num_images=200, generated=True), open('results/evaluate/per_class.json', 'w'))"
    params: [train]
    outs: [results/summary, results/evaluate/per_class.json]
    metrics:
      - results/evaluate/metrics.json:
          cache: false
"""


def fake_quickstart_repo(root: Path) -> Path:
    """A git + DVC repo whose params.yaml has every key the quickstart sets, and FAKE_PIPELINE."""
    from tinyclf.commands.quickstart import OVERRIDES

    root.mkdir()
    env = venv_env(root)
    params: dict = {}
    for dotted in OVERRIDES:
        *parents, leaf = dotted.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = "reference"
    params["train"]["epochs"] = 150
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text(FAKE_PIPELINE)
    (root / ".gitignore").write_text("/results/summary/\n/quickstart/\n/quickstart.tmp/\n")
    run(["git", "init", "-q", "-b", "main"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "fake pipeline"], root, env)
    return root


def test_quickstart_again_replaces_its_experiment_and_its_report(tmp_path):
    from tinyclf.commands.quickstart import OVERRIDES

    expected = f"GENERATED run, epochs {OVERRIDES['train.epochs']}"  # what the stand-in pipeline writes
    repo = fake_quickstart_repo(tmp_path / "repo")
    first = tinyclf(repo, "quickstart")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "replacing" not in first.stdout
    assert (repo / "quickstart/results/summary/report.md").read_text() == expected
    (repo / "quickstart/results/summary/report.md").write_text("stale")

    again = tinyclf(repo, "quickstart")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "replacing the earlier 'quickstart' experiment" in again.stdout
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, venv_env(repo)).stdout)
    assert [row["name"] for row in experiment_rows(shown)] == ["quickstart"]  # one, not two
    assert (repo / "quickstart/results/summary/report.md").read_text() == expected
    assert not (repo / "quickstart.tmp").exists()
    assert run(["git", "status", "--porcelain"], repo, venv_env(repo)).stdout == ""
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"] == 150
