"""`tinyclf compare`: runs side by side, best top-1 first, from DVC's own records.

    tinyclf compare                        every experiment of this commit, and the workspace when it ran
    tinyclf compare lower-lr sweep-3       the runs named (experiment names or revisions)
    tinyclf compare --format md            table (default), md, csv or json
    tinyclf compare --plot compare.png     top-1 against training time, and the val top-1 curves (.png, .html)

Each row is a run that has metrics: its name, the params that differ between the runs shown, top-1,
top-5, training minutes, images/s, and the cost where it is known (a GPU run with
`summarize.price_per_gpu_hour` set). Everything comes from DVC: `dvc.api.exp_show` for params and
metrics, and each run's train record (`results/train/run.json`: time, images/s, GPU-hours) and
DVCLive history read through DVC at its revision; nothing is copied or cached here. Queued,
running and failed experiments have no metrics and are named below the table instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyclf.errors import ArgumentParser, TinyclfError, run_command

FORMATS = ("table", "md", "csv", "json")
# (metrics key, column title, how a value reads) in column order; keys as the stages write them.
COLUMNS = (
    ("top1", "top-1", lambda v: f"{v:.2%}"),
    ("top5", "top-5", lambda v: f"{v:.2%}"),
    ("train_minutes", "train min", lambda v: f"{v:.1f}"),
    ("images_per_s", "images/s", lambda v: f"{v:,.0f}"),
    ("cost_usd", "cost", lambda v: f"${v:,.2f}"),
)
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


def render(runs: list[Run], fmt: str) -> str:
    """The runs (from `compare`) as a table, markdown, CSV or JSON."""
    if fmt == "json":
        return json.dumps([{"name": r.name, "rev": r.rev, "params": r.differing,
                            "metrics": {key: r.metrics.get(key) for key, _, _ in COLUMNS}} for r in runs], indent=2)
    if fmt == "csv":
        params = list(runs[0].differing) if runs else []
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run", *params, *(key for key, _, _ in COLUMNS)])
        writer.writerows([r.name, *r.differing.values(), *(r.metrics.get(key) for key, _, _ in COLUMNS)] for r in runs)
        return out.getvalue().rstrip("\n")
    header, rows = table_cells(runs)
    return _markdown(header, rows) if fmt == "md" else _aligned(header, rows)


def table_cells(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table as text: run, the differing params, then the compared numbers."""
    params = list(runs[0].differing) if runs else []
    header = ["run", *params, *(title for _, title, _ in COLUMNS)]
    rows = [[r.name, *(_param_text(v) for v in r.differing.values()),
             *("—" if r.metrics.get(key) is None else show(r.metrics[key]) for key, _, show in COLUMNS)] for r in runs]
    return header, rows


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _aligned(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    # The run name and params read left to right; numbers line up on the right.
    left = 1 + (len(header) - 1 - len(COLUMNS))

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    cells = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in cells)


def val_top1_history(repo: str | Path, run: Run) -> tuple[list[int], list[float]]:
    """(epochs, val top-1) of a run's DVCLive history, read through DVC at its revision; empty when
    the run logged none."""
    text = _read(repo, run, HISTORY)
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t")) if text else []
    return [int(r["step"]) + 1 for r in rows], [float(r["top1"]) for r in rows]


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="tinyclf compare", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="experiment names or revisions (default: all of this commit)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    parser.add_argument("--plot", type=Path, help="also draw the runs: a .png, or an .html page with the table")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository (default: here)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command("tinyclf compare", lambda: _compare_and_show(args))


def _compare_and_show(args: argparse.Namespace) -> None:
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".html"):
        raise CompareError(f"{args.plot}: --plot writes a .png or an .html file")
    runs, notes = collect_runs(args.repo, args.runs or None)
    if not runs:
        raise CompareError("no run with metrics yet: run the pipeline (dvc repro, dvc exp run, make quickstart)")
    runs = compare(runs)
    print(render(runs, args.format))
    for note in notes:
        print(f"(not shown) {note}", file=sys.stderr)
    if args.plot is not None:
        from tinyclf.compare_plot import write_plot

        write_plot(args.plot, runs, {r.name: val_top1_history(args.repo, r) for r in runs})
        print(f"wrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
