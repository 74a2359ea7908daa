"""What the summarize stage reads, read once and checked: `read_inputs` returns an `Inputs`.

Reads only what earlier stages wrote: the prepared `classes.json`/`stats.json`, the model file,
the train stage's DVCLive directory (+ `run.json`), the evaluate stage's outputs and, when the
export and audit stages ran, the parity figures and the audit's summary. A missing or unreadable file is a `ReportError` (or the
`PreparedDataError` / `ModelFileError` of the module that owns the format) whose one-line message
names the file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyclf.data import arrays
from tinyclf.errors import TinyclfError
from tinyclf.model.file import load_model_file
from tinyclf.model.summary import model_table
from tinyclf.params import Params


class ReportError(TinyclfError, ValueError):
    """An input the report needs is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class Sources:
    """Where the earlier stages' outputs are (the summarize stage's paths in dvc.yaml)."""

    prepared: Path  # data/prepared
    model: Path  # models/model.pt
    train: Path  # results/train: DVCLive and run.json
    evaluate: Path  # results/evaluate
    export: Path | None = None  # results/export/parity.json, when the export stage ran
    audit: Path | None = None  # results/audit/summary.json, when the audit stage ran

    def __post_init__(self):
        for name in ("prepared", "model", "train", "evaluate", "export", "audit"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


@dataclass
class Inputs:
    """Everything the report is made of, read once."""

    params: Params
    classes: dict
    stats: dict
    meta: dict
    table: dict
    train_summary: dict
    series: dict[str, tuple[np.ndarray, np.ndarray]]
    run: dict | None
    metrics: dict
    speed: dict
    per_class: dict
    export: dict | None = None  # results/export/parity.json, when the export stage ran
    val_metrics: dict | None = None  # val's figures when a test split was evaluated (metrics.json holds test's)
    audit: dict | None = None  # results/audit/summary.json, when the audit stage ran
    audit_dir: Path | None = None  # its folder (the contact sheets are in sheets/)

    @property
    def evaluated_split(self) -> str:
        """"test" or "val": the split metrics.json describes (per_class.json `split`; val before it existed)."""
        return self.per_class.get("split", "val")


def read_inputs(sources: Sources, params: Params) -> Inputs:
    """Read and check every input; raises ReportError / PreparedDataError / ModelFileError naming the file."""
    prepared_dir, train_dir, evaluate_dir = sources.prepared, sources.train, sources.evaluate
    classes = arrays.load_classes(prepared_dir)
    stats = arrays.load_stats(prepared_dir)
    model, meta = load_model_file(sources.model)
    table = model_table(model, int(meta["image_size"]))
    if not train_dir.is_dir():
        raise ReportError(f"{train_dir}: missing (the train stage's DVCLive directory)")
    train_summary = _read_json(train_dir / "metrics.json", "the train stage's DVCLive summary")
    run_path = train_dir / "run.json"
    run = _read_json(run_path, "training timing and hardware") if run_path.exists() else None
    # Read in this order so that a missing evaluate directory is reported by its metrics.json.
    metrics = _read_json(evaluate_dir / "metrics.json", "the evaluate stage's metrics")
    speed = _read_json(evaluate_dir / "speed.json", "the evaluate stage's timing")
    per_class_path = evaluate_dir / "per_class.json"
    per_class = _read_json(per_class_path, "the evaluate stage's per-class accuracy")
    _check_groups(classes, prepared_dir / arrays.CLASSES_FILE, per_class, per_class_path)
    export = None if sources.export is None else _read_json(sources.export, "the export stage's parity figures")
    val_metrics = None
    if per_class.get("split", "val") != "val":
        val_metrics = _read_json(evaluate_dir / "val_metrics.json", "the evaluate stage's val figures")
    audit = None if sources.audit is None else _read_json(sources.audit, "the audit stage's summary")
    return Inputs(params=params, classes=classes, stats=stats, meta=meta, table=table,
                  train_summary=train_summary, series=read_dvclive_series(train_dir), run=run,
                  metrics=metrics, speed=speed, per_class=per_class, export=export, val_metrics=val_metrics,
                  audit=audit, audit_dir=None if sources.audit is None else sources.audit.parent)


def read_dvclive_series(train_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every DVCLive metric series under `<train_dir>/plots/metrics/` as {"val/top1": (steps, values)}.

    DVCLive writes one TSV per metric, named after it (`val/top1` -> `val/top1.tsv`), with a `step`
    column and a column named after the metric's last part.
    """
    base = Path(train_dir) / "plots" / "metrics"
    series = {}
    for tsv in sorted(base.rglob("*.tsv")):
        name = tsv.relative_to(base).with_suffix("").as_posix()
        with tsv.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        value_key = name.rsplit("/", 1)[-1]
        if value_key not in rows[0]:
            continue
        steps = np.array([int(r["step"]) for r in rows])
        values = np.array([float(r[value_key]) for r in rows])
        series[name] = (steps, values)
    return series


def epochs_from_steps(steps: np.ndarray) -> np.ndarray:
    """DVCLive steps as 1-based epochs: training logs one step per epoch, DVCLive counts from 0."""
    return steps + 1 if len(steps) and steps.min() == 0 else steps


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ReportError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def _check_groups(classes: dict, classes_path: Path, per_class: dict, per_class_path: Path) -> None:
    """Class groups (classes.json `groups`, e.g. CIFAR-100's superclasses): every class names a known
    group and has a per-class result to add up. Without `groups` there is nothing to check."""
    if "groups" not in classes:
        return
    known = {g.get("index") for g in classes["groups"]} - {None}
    unknown = [c["index"] for c in classes["classes"] if c.get("group") not in known]
    if unknown:
        raise ReportError(f"{classes_path}: class {unknown[0]} has no group of `groups` "
                          f"({len(unknown)} classes without one)")
    scored = {c["index"] for c in per_class.get("classes", [])}
    absent = [c["index"] for c in classes["classes"] if c["index"] not in scored]
    if absent:
        raise ReportError(f"{per_class_path}: no entry for class {absent[0]} of classes.json "
                          f"({len(absent)} missing; from another run?)")
