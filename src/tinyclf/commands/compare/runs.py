"""The runs `tinyclf compare` shows, read from DVC's own records: nothing is copied or cached here.

`dvc.api.exp_show` gives each run's params and metrics; each run's train record
(`results/train/run.json`: time, images/s, GPU-hours) and DVCLive history are read through DVC at
its revision. `compare` then orders the runs and finds the params that differ between them.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyclf.errors import TinyclfError

METRICS_FILE = "results/evaluate/metrics.json"  # the DVC metrics (dvc.yaml): top1, top5, …
RUN_RECORD = "results/train/run.json"  # the train stage's time, images/s and GPU-hours
HISTORY = "results/train/plots/metrics/val/top1.tsv"  # DVCLive's val/top1, one row per epoch


class CompareError(TinyclfError):
    """Nothing to compare, or a run that does not exist; the message says which."""


@dataclass
class Run:
    name: str  # the experiment's name, or "workspace" / the commit's branch
    rev: str  # what DVC reads it at ("workspace" for the working tree)
    params: dict[str, Any]
    metrics: dict[str, Any]
    differing: dict[str, Any] = field(default_factory=dict)  # filled by `compare`: params that differ

    @property
    def top1(self) -> float:
        return float(self.metrics["top1"])


def collect_runs(repo: str | Path = ".", names: list[str] | None = None) -> tuple[list[Run], list[str]]:
    """(runs with metrics, one note per experiment without: queued, running or failed) of the repo's
    HEAD and its experiments; with `names`, only those (CompareError for a name that is none)."""
    import dvc.api

    from tinyclf.params import Params
    from tinyclf.report.markdown import flatten

    param_keys = list(flatten(Params().to_dict()))  # the dotted names dvc exp show gives params
    if not (Path(repo) / "dvc.yaml").is_file():
        raise CompareError(f"{Path(repo).resolve()}: not a tinyclf repository (no dvc.yaml); run it from the "
                           "repository root or give --repo")
    runs, notes = [], []
    for row in dvc.api.exp_show(repo=str(repo)):
        name = row.get("Experiment") or row.get("rev")
        metrics = {key: _value(row, key, METRICS_FILE) for key in ("top1", "top5")}
        if not isinstance(metrics["top1"], (int, float)):
            if row.get("Experiment"):  # a commit that never ran is not news; an experiment is
                notes.append(f"{name}: {str(row.get('State') or 'no metrics').lower()}")
            continue
        params = {key: _value(row, key, "params.yaml") for key in param_keys}
        runs.append(Run(name, str(row.get("rev")), params, metrics))
    runs = _without_unchanged_workspace(runs)
    if names:
        missing = [n for n in names if not any(n in (r.name, r.rev) for r in runs)]
        if missing:
            known = ", ".join(r.name for r in runs) or "none"
            raise CompareError(f"no run with metrics named {missing[0]!r} (runs with metrics: {known})")
        runs, notes = [r for r in runs if r.name in names or r.rev in names], []
    for run in runs:
        run.metrics.update(_training_cost(repo, run))
    return runs, notes


def _training_cost(repo: str | Path, run: Run) -> dict[str, Any]:
    """train_minutes, images_per_s and cost_usd of a run, from its train record read through DVC
    (all None for a run without one); the cost is its GPU-hours at its summarize.price_per_gpu_hour."""
    from tinyclf.report.facts import cost_usd

    record = _read_json(repo, run, RUN_RECORD) or {}
    seconds = record.get("train_seconds")
    return {"train_minutes": None if seconds is None else seconds / 60, "images_per_s": record.get("images_per_s"),
            "cost_usd": cost_usd(record, run.params.get("summarize.price_per_gpu_hour") or 0.0)}


def _read_json(repo: str | Path, run: Run, path: str) -> dict | None:
    text = _read(repo, run, path)
    return None if text is None else json.loads(text)


def _read(repo: str | Path, run: Run, path: str) -> str | None:
    """A file of a run, read through DVC at the run's revision (the working tree for the workspace);
    None when the run has no such file."""
    import dvc.api

    try:
        return dvc.api.read(path, repo=str(repo), rev=None if run.rev == "workspace" else run.rev)
    except Exception:  # noqa: BLE001 - a run without the file (an older pipeline) has no such figure
        return None


def _without_unchanged_workspace(runs: list[Run]) -> list[Run]:
    """The workspace row only when it differs from every other run (after `dvc repro` of a committed
    pipeline, or `dvc exp apply`, it repeats that run)."""
    others = [(r.params, r.metrics) for r in runs if r.rev != "workspace"]
    return [r for r in runs if r.rev != "workspace" or (r.params, r.metrics) not in others]


def _value(row: dict, key: str, path: str) -> Any:
    value = row.get(key, row.get(f"{path}:{key}"))
    return None if value in ("-", "!") else value


def compare(runs: list[Run]) -> list[Run]:
    """The runs best top-1 first, each with the params whose values differ between them."""
    differing = [key for key in (runs[0].params if runs else {})
                 if len({json.dumps(r.params.get(key), sort_keys=True) for r in runs}) > 1]
    for run in runs:
        run.differing = {key: run.params.get(key) for key in differing}
    return sorted(runs, key=lambda r: (-r.top1, r.name))


def val_top1_history(repo: str | Path, run: Run) -> tuple[list[int], list[float]]:
    """(epochs, val top-1) of a run's DVCLive history, read through DVC at its revision; empty when
    the run logged none."""
    text = _read(repo, run, HISTORY)
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t")) if text else []
    return [int(r["step"]) + 1 for r in rows], [float(r["top1"]) for r in rows]
