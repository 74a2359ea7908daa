"""The summarize stage: a readable report and a model card from what the earlier stages wrote.

Reads only: the prepared `classes.json`/`stats.json`, the model file, the train stage's DVCLive
directory (+ `run.json`), the evaluate stage's outputs and the params. Images per class come from
stats.json (`splits.<split>.per_class`), and a strongly imbalanced train split (`class_balance`,
`tinyclf.data.arrays.class_balance`) gets a warning at the top; the starting weights (`train.init`)
from the model file's meta `init`. Writes `report.md`,
`model_card.md` and `training_curves.png`. Nothing in them depends on the clock or on where the
repository lives (no timestamps, no absolute paths), so unchanged inputs give identical bytes.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyclf import atomic
from tinyclf.data import arrays
from tinyclf.errors import TinyclfError
from tinyclf.evaluate import plots
from tinyclf.model.file import load_model_file
from tinyclf.model.summary import format_model_table, model_table
from tinyclf.params import Params

# The result this project reproduces (README): the reference ResNet-50 on Tiny ImageNet.
REFERENCE_TOP1 = 0.70
# Classes up to which the report lists every class's image counts; above, the extremes only.
FULL_COUNTS_MAX = 20
EXTREME_CLASSES = 5  # smallest and largest classes listed when not all are
INIT_GROUPS_SHOWN = 10  # not-loaded layers listed under "Initial weights"
REFERENCE_TEXT = "70% top-1 on the Tiny ImageNet validation set with the reference ResNet-50, about 50 minutes on 3× NVIDIA A40"
CURVES_FILE = "training_curves.png"
GENERATED_BANNER = (
    "> **⚠ Trained on GENERATED data — not a Tiny ImageNet result.** The images are synthetic "
    "(download.source: generated); the numbers below show that the pipeline works end to end and "
    "say nothing about accuracy on real images."
)


class ReportError(TinyclfError, ValueError):
    """An input the report needs is missing or unreadable; the message names the file."""


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


# ------------------------------------------------------------------------------------ reading


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ReportError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


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


def read_inputs(prepared_dir: str | Path, model_path: str | Path, train_dir: str | Path,
                evaluate_dir: str | Path, params: Params, export_parity: str | Path | None = None) -> Inputs:
    """Read and check every input; raises ReportError / PreparedDataError / ModelFileError naming the file."""
    prepared_dir, train_dir, evaluate_dir = Path(prepared_dir), Path(train_dir), Path(evaluate_dir)
    classes = arrays.load_classes(prepared_dir)
    stats = arrays.load_stats(prepared_dir)
    model, meta = load_model_file(model_path)
    table = model_table(model, int(meta["image_size"]))
    if not train_dir.is_dir():
        raise ReportError(f"{train_dir}: missing (the train stage's DVCLive directory)")
    train_summary = _read_json(train_dir / "metrics.json", "the train stage's DVCLive summary")
    run_path = train_dir / "run.json"
    run = _read_json(run_path, "training timing and hardware") if run_path.exists() else None
    return Inputs(
        params=params, classes=classes, stats=stats, meta=meta, table=table,
        train_summary=train_summary, series=read_dvclive_series(train_dir), run=run,
        metrics=_read_json(evaluate_dir / "metrics.json", "the evaluate stage's metrics"),
        speed=_read_json(evaluate_dir / "speed.json", "the evaluate stage's timing"),
        per_class=_read_json(evaluate_dir / "per_class.json", "the evaluate stage's per-class accuracy"),
        export=None if export_parity is None else _read_json(Path(export_parity), "the export stage's parity figures"),
    )


# ------------------------------------------------------------------------------------ helpers


def flatten(tree: dict, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and empty dicts stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + sep, sep))
        else:
            out[name] = value
    return out


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    if value is None:
        return "—"
    return json.dumps(value)


def _source_text(source: str) -> str:
    """download.source for the report: a local path shows only its file name (no absolute paths)."""
    if source in ("official", "generated") or source.startswith(("http://", "https://")):
        return source
    return f"a local archive ({Path(source).name})"


def _macs_text(macs: int) -> str:
    return f"{macs / 1e9:.2f} G" if macs >= 1e9 else f"{macs / 1e6:.2f} M"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.2f}%"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "|" + "|".join("---" for _ in header) + "|"
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def params_differences(params: Params) -> list[tuple[str, Any, Any]]:
    """(key, default, value) for every key whose value differs from the dataclass default."""
    defaults, current = flatten(Params().to_dict()), flatten(params.to_dict())
    rows = []
    for key in current:
        if current[key] != defaults.get(key):
            default, value = defaults.get(key), current[key]
            if key == "download.source":
                default, value = _source_text(default), _source_text(value)
            rows.append((key, default, value))
    return rows


def reference_verdict(top1: float, comparable: bool = True) -> str:
    if not comparable:
        # A win on generated data or on another dataset says nothing about the reference result.
        return "cannot be compared with the reference 70% top-1"
    points = (top1 - REFERENCE_TOP1) * 100
    if abs(points) < 0.005:
        return "matches the reference 70% top-1"
    word = "beats" if points > 0 else "falls short of"
    return f"{word} the reference 70% top-1 by {abs(points):.2f} points"


def comparability_note(dataset: str, generated: bool) -> str | None:
    if generated:
        return "Not comparable: this model was trained and evaluated on generated data, not Tiny ImageNet."
    if dataset == "folder":
        return "Not comparable: the reference is a Tiny ImageNet result and this run used your own images."
    if dataset != "tiny-imagenet":
        return f"Not comparable: the reference is a Tiny ImageNet result and this run used {dataset}."
    return None


def _split_counts(stats: dict) -> dict[str, int]:
    return {split: int(info.get("count", 0)) for split, info in stats.get("splits", {}).items()}


def train_balance(stats: dict) -> dict | None:
    """stats.json's `class_balance` of the train split, computed here for a stats.json written before
    preprocess recorded it; None without per-class counts."""
    if isinstance(stats.get("class_balance"), dict):
        return stats["class_balance"]
    per_class = stats.get("splits", {}).get("train", {}).get("per_class")
    return arrays.class_balance(per_class) if per_class else None


def _trained_with(inputs: Inputs, key: str) -> Any:
    """A train param as the model was trained with it (the model file's params), else params.yaml's."""
    recorded = inputs.meta.get("params", {}).get("train", {})
    return recorded[key] if key in recorded else getattr(inputs.params.train, key)


def imbalance_warning(inputs: Inputs) -> str | None:
    """The warning for a strongly imbalanced train split (arrays.class_balance), or None."""
    balance = train_balance(inputs.stats)
    if not balance or not balance.get("imbalanced"):
        return None
    extremes = (f"the largest class has {balance['max']:,} train images and the smallest {balance['min']:,}"
                + (f" ({balance['ratio']:g}×)" if balance.get("ratio") else " (a class has none)"))
    if _trained_with(inputs, "balance") == "sampler":
        advice = "this run used `train.balance: sampler` (class-balanced sampling)."
    else:
        advice = ("rare classes are seen less often in training; try class-balanced sampling "
                  "(`train.balance: sampler`, e.g. `dvc exp run -S train.balance=sampler`) and compare the "
                  "per-class accuracy.")
    return f"> **⚠ Imbalanced classes:** {extremes}; {advice}"


def init_text(meta: dict) -> str:
    """Where the weights started: from scratch, or what `train.init` loaded (the model file's `init`)."""
    record = meta.get("init")
    init = meta.get("params", {}).get("train", {}).get("init", "none")
    if record is None:
        return "from scratch" if init == "none" else f"`{_init_source(init)}` (what was loaded was not recorded)"
    if record.get("source") == "none":
        return "from scratch (`train.init: none`)"
    md5 = f", md5 `{record['md5']}`" if record.get("md5") else ""
    classifier = ", classifier re-initialised" if record.get("classifier_reinitialised") else ""
    unused = f"; {record['unused']:,} tensors of the source unused" if record.get("unused") else ""
    return (f"`{_init_source(record['source'])}` ({record['description']}{md5}): {record['loaded']:,} of "
            f"{record['total']:,} tensors loaded{classifier}{unused}")


def _init_source(source: str) -> str:
    """train.init without absolute paths (the report holds none): a path shows its file name."""
    return Path(source).name if Path(source).is_absolute() else source


def _init_not_loaded_lines(meta: dict) -> list[str]:
    groups = (meta.get("init") or {}).get("not_loaded") or []
    lines = [f"  - `{g['module']}` ({', '.join(g['tensors'])}): {g['reason']}" if g["tensors"]
             else f"  - {g['module']} {g['reason']}" for g in groups[:INIT_GROUPS_SHOWN]]
    if len(groups) > INIT_GROUPS_SHOWN:
        lines.append(f"  - … and {len(groups) - INIT_GROUPS_SHOWN} more layers (the model file's meta `init` lists them)")
    return (["- **Not loaded** (kept freshly initialised):"] + lines) if lines else []


def _ranked_classes(per_class: dict) -> list[dict]:
    scored = [c for c in per_class["classes"] if c.get("accuracy") is not None]
    return sorted(scored, key=lambda c: (-c["accuracy"], c["index"]))


# Readable names for the keys of the train stage's run.json; unknown keys are shown as they are.
RUN_LABELS = {
    "device": "training device",
    "device_type": "device type",
    "device_count": "GPUs",
    "world_size": "processes (world size)",
    "nodes": "nodes",
    "precision": "precision",
    "compile": "torch.compile",
    "channels_last": "channels_last",
    "aug_backend": "augmentation backend",
    "epochs": "epochs",
    "train_seconds": "training seconds (timed epochs)",
    "train_images": "training images processed",
    "images_per_s": "training images/s",
    "gpu_hours": "GPU-hours (training time × GPUs)",
    "train_gflops_per_image": "GFLOP to train on one image",
    "peak_bf16_tflops_per_gpu": "bf16 peak per GPU (TFLOP/s, data sheet)",
}
# Shown as their own rows (cost, MFU), or said loudly elsewhere (generated).
RUN_SKIP = ("generated", "mfu")
# The reference result's cost, as it is quoted.
REFERENCE_COST_TEXT = "about $1.20 for ~50 min on 3× NVIDIA A40"


def _number_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _value_text(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def mfu_text(run: dict) -> str:
    value = run.get("mfu")
    if value is not None:
        return f"{value:.1%} of the bf16 peak ({run.get('peak_bf16_tflops_per_gpu')} TFLOP/s per GPU)"
    if run.get("device_type") != "cuda":
        return "n/a (not a GPU run)"
    return f"n/a (no bf16 peak known for {run.get('device')}; see tinyclf.train.cost.PEAK_BF16_TFLOPS)"


def cost_text(run: dict | None, price_per_gpu_hour: float) -> str:
    """What the run cost, next to the reference's; "n/a" on a CPU or without a price."""
    hours = (run or {}).get("gpu_hours")
    if hours is None:
        return f"n/a (not a GPU run); reference: {REFERENCE_COST_TEXT}"
    if not price_per_gpu_hour:
        return (f"{hours:.2f} GPU-hours; price n/a (set summarize.price_per_gpu_hour); "
                f"reference: {REFERENCE_COST_TEXT}")
    return (f"${hours * price_per_gpu_hour:,.2f} ({hours:.2f} GPU-hours at ${price_per_gpu_hour:g} each); "
            f"reference: {REFERENCE_COST_TEXT}")


def _timing_facts(inputs: Inputs) -> list[tuple[str, str]]:
    """Training and evaluation timing: run.json (whatever keys it holds), DVCLive, speed.json."""
    rows: list[tuple[str, str]] = []
    if inputs.run is None:
        rows.append(("training run facts", "not recorded (run.json missing in the train directory)"))
    else:
        facts = flatten(inputs.run)
        # Known keys in a reading order (run.json itself is written with sorted keys), then the rest.
        for key in [k for k in RUN_LABELS if k in facts] + sorted(k for k in facts if k not in RUN_LABELS):
            if key not in RUN_SKIP:
                value = facts[key]
                rows.append((RUN_LABELS.get(key, key), "n/a" if value is None else _number_text(value)))
        rows.append(("MFU (model FLOPs utilization)", mfu_text(inputs.run)))
        rows.append(("cost", cost_text(inputs.run, inputs.params.summarize.price_per_gpu_hour)))
        seconds = inputs.run.get("train_seconds")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            rows.append(("training time", f"{seconds / 60:.1f} min (reference: about 50 min on 3× NVIDIA A40)"))
    for name, label in (("images_per_s", "training images/s per epoch (DVCLive)"),
                        ("epoch_time_s", "training seconds per epoch (DVCLive)")):
        if name in inputs.series:
            values = inputs.series[name][1]
            rows.append((label, f"mean {values.mean():,.1f}, last {values[-1]:,.1f} over {len(values)} epochs"))
    speed = inputs.speed
    ips = speed.get("images_per_s")
    rows.append(("evaluation images/s", "—" if ips is None else f"{ips:,.1f}"))
    rows.append(("evaluation seconds", f"{speed.get('seconds', 0):,.2f}"))
    rows.append(("evaluation device", str(speed.get("device", "—"))))
    return rows


# ------------------------------------------------------------------------------------ writing


def _dataset_section(inputs: Inputs) -> str:
    p, stats, classes = inputs.params, inputs.stats, inputs.classes
    generated = bool(classes["generated"])
    counts = _split_counts(stats)
    h, w = stats["image_size"]
    lines = [
        "## Dataset",
        "",
        f"- **Dataset:** {classes['dataset']} — {len(classes['classes'])} classes, {h}×{w} pixels"
        + (" (**generated**, synthetic images)" if generated else " (real images)"),
        f"- **Source:** download.source = {_source_text(p.download.source)}",
        "- **Images:** " + ", ".join(f"{split} {n:,}" for split, n in counts.items()),
    ]
    for split, info in stats.get("splits", {}).items():
        converted = {k: v for k, v in info.get("converted", {}).items() if v}
        notes = []
        if converted:
            notes.append("converted to RGB: " + ", ".join(f"{v} {k}" for k, v in sorted(converted.items())))
        if info.get("resized"):
            notes.append(f"{info['resized']} resized")
        if info.get("rotated"):
            notes.append(f"{info['rotated']} turned upright (EXIF orientation)")
        if info.get("skipped"):
            notes.append(f"{len(info['skipped'])} skipped as undecodable")
        if notes:
            lines.append(f"- **{split}:** " + "; ".join(notes))
    lines += _folder_lines(stats.get("folder"))
    mean = ", ".join(f"{v:.4f}" for v in stats["mean"])
    std = ", ".join(f"{v:.4f}" for v in stats["std"])
    lines.append(f"- **Normalization (train split, 0–1 scale):** mean [{mean}], std [{std}]")
    # The imbalance warning, if any, heads the report; the counts behind it are here.
    lines += _class_counts_lines(inputs)
    return "\n".join(lines) + "\n"


def _folder_lines(folder: dict | None) -> list[str]:
    """Own images: how the folder was read, and what was left out or looks wrong (stats.json `folder`)."""
    if not folder:
        return []
    split = ("train/val folders" if folder.get("val_fraction") is None else
             f"{folder['layout']}: {folder['val_fraction']:.0%} of each class held out (split_seed {folder['split_seed']})")
    lines = [f"- **Layout:** {split}; non-square images made square by `{folder['resize']}`"]
    listed = [("not_images", "files skipped as not images (or hidden / system files)"),
              ("links_not_followed", "links not followed"),
              ("duplicates_across_splits", "val images byte-identical to train images (they inflate val accuracy)")]
    for key, text in listed:
        entry = folder.get(key) or {}
        if entry.get("count"):
            first = ", ".join(f"`{' = '.join(x) if isinstance(x, list) else x}`" for x in entry["first"][:3])
            more = " …" if entry["count"] > 3 else ""
            lines.append(f"- **{entry['count']} {text}:** {first}{more}")
    if folder.get("ignored_folders"):
        lines.append("- **Ignored folders:** " + ", ".join(f"`{f}`" for f in folder["ignored_folders"]))
    lines += [f"- **Note:** {note}" for note in folder.get("notes", [])]
    return lines


def _class_counts_lines(inputs: Inputs) -> list[str]:
    """Images per class in train and val (stats.json): every class when there are few, else the
    spread and the smallest and largest train classes, so 200 classes stay readable."""
    splits = inputs.stats.get("splits", {})
    train = splits.get("train", {}).get("per_class")
    val = splits.get("val", {}).get("per_class")
    names = [c["name"] for c in inputs.classes["classes"]]
    if not train or len(train) != len(names):
        return []
    val = val if val and len(val) == len(train) else None
    header = ["index", "class", "train"] + (["val"] if val else [])

    def row(i: int) -> list:
        return [i, names[i], f"{train[i]:,}"] + ([f"{val[i]:,}"] if val else [])

    if len(train) <= FULL_COUNTS_MAX:
        return ["", "Images per class:", "", _md_table(header, [row(i) for i in range(len(train))]).rstrip("\n")]
    by_count = sorted(range(len(train)), key=lambda i: (train[i], i))
    k = EXTREME_CLASSES
    rows = [row(i) for i in by_count[:k]] + [["…"] * len(header)] + [row(i) for i in by_count[-k:]]
    return ["", f"Train images per class: min {min(train):,}, median {float(np.median(train)):g}, "
            f"max {max(train):,} over {len(train)} classes; the {k} smallest and {k} largest:", "",
            _md_table(header, rows).rstrip("\n")]


def _params_section(inputs: Inputs) -> str:
    diffs = params_differences(inputs.params)
    out = ["## Parameters that differ from the defaults", ""]
    if not diffs:
        out.append("None: every key in params.yaml has its default value (see `tinyclf.params`).")
        return "\n".join(out) + "\n"
    out.append("Defaults are those of `tinyclf.params.Params()`; everything not listed has its default value.")
    out.append("")
    out.append(_md_table(["key", "default", "value"],
                         [[f"`{k}`", _value_text(d), _value_text(v)] for k, d, v in diffs]).rstrip("\n"))
    return "\n".join(out) + "\n"


def _model_section(inputs: Inputs) -> str:
    meta, table = inputs.meta, inputs.table
    macs = table["total_mult_adds"]
    lines = [
        "## Model",
        "",
        f"- **Architecture:** `{meta['model']}`, {meta['num_classes']} classes, "
        f"{meta['image_size']}×{meta['image_size']} input",
        f"- **Parameters:** {table['total_params']:,} ({table['trainable_params']:,} trainable); "
        f"mult-adds per image: {_macs_text(macs)}",
        f"- **Initial weights:** {init_text(meta)}",
        *_init_not_loaded_lines(meta),
        f"- **Weights saved:** {meta['weights']} (EMA when `ema`), after {meta['epochs_trained']} epochs",
        *([f"- **ONNX export:** {export_text(inputs.export)}"] if inputs.export else []),
        "",
        "Layer table for one image (torchinfo style; containers show the totals of what they hold):",
        "",
        format_model_table(table).rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


def _training_section(inputs: Inputs) -> str:
    lines = ["## Training", "", f"![Training curves]({CURVES_FILE})", ""]
    # DVCLive nests "val/top1" as {"val": {"top1": …}}: flatten back to the logged names.
    summary = flatten({k: v for k, v in inputs.train_summary.items() if k != "step"}, sep="/")
    if summary:
        lines.append("Last logged values (DVCLive `metrics.json`):")
        lines.append("")
        lines.append(_md_table(["metric", "value"],
                               [[k, f"{v:.4g}" if isinstance(v, float) else _value_text(v)]
                                for k, v in sorted(summary.items())]).rstrip("\n"))
    else:
        lines.append("No training metrics were logged.")
    return "\n".join(lines) + "\n"


def _results_section(inputs: Inputs, plots_rel: str) -> str:
    m, classes = inputs.metrics, inputs.classes
    note = comparability_note(classes["dataset"], bool(m.get("generated", classes["generated"])))
    tta = "with horizontal-flip test-time augmentation" if m.get("tta_flip") else "without test-time augmentation"
    lines = [
        "## Results",
        "",
        f"Evaluated on all {m['num_images']:,} validation images, {tta}.",
        "",
        _md_table(["metric", "value"], [
            ["top-1 accuracy", _pct(m["top1"])],
            ["top-5 accuracy" + (f" (top-{min(5, len(classes['classes']))})" if len(classes["classes"]) < 5 else ""),
             _pct(m["top5"])],
            ["mean per-class accuracy", _pct(m["mean_class_accuracy"])],
            ["cross-entropy loss", f"{m['loss']:.4f}"],
            ["expected calibration error", f"{m['ece']:.4f}"],
        ]).rstrip("\n"),
        "",
        f"**Against the reference** — {REFERENCE_TEXT}: this model reaches {_pct(m['top1'])} top-1 and "
        f"**{reference_verdict(m['top1'], note is None)}**.",
    ]
    if note:
        lines += ["", f"_{note}_"]
    lines += [
        "",
        f"![Per-class accuracy]({plots_rel}/per_class_accuracy.png)",
        "",
        f"![Most confused pairs]({plots_rel}/confused_pairs.png)",
        "",
        f"![Confusion matrix]({plots_rel}/confusion_matrix.png)",
        "",
        f"![Misclassified examples]({plots_rel}/misclassified.png)",
    ]
    return "\n".join(lines) + "\n"


def _highlights_section(inputs: Inputs) -> str:
    ranked = _ranked_classes(inputs.per_class)
    k = min(inputs.params.summarize.highlight_classes, len(ranked))
    # With few classes the best and worst lists would overlap: split them instead.
    k_best = k if 2 * k <= len(ranked) else (len(ranked) + 1) // 2
    k_worst = k if 2 * k <= len(ranked) else len(ranked) // 2

    def rows(items):
        return [[c["index"], f"`{c['id']}`", c["name"], _pct(c["accuracy"]), f"{c['correct']}/{c['count']}"]
                for c in items]

    header = ["index", "id", "name", "accuracy", "correct"]
    lines = ["## Per-class highlights", "", f"Best {k_best} classes:", "", _md_table(header, rows(ranked[:k_best])).rstrip("\n")]
    if k_worst:
        lines += ["", f"Worst {k_worst} classes:", "", _md_table(header, rows(ranked[::-1][:k_worst])).rstrip("\n")]
    pairs = inputs.per_class.get("confused_pairs", [])[:k]
    if pairs:
        lines += ["", "Most confused pairs (true → predicted):", "",
                  _md_table(["true", "predicted", "images"],
                            [[p["true_name"], p["predicted_name"], p["count"]] for p in pairs]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _timing_section(inputs: Inputs) -> str:
    lines = ["## Timing and hardware", "",
             "Measured during this run (timings vary between runs; they are not part of the metrics).", "",
             _md_table(["what", "value"], [[k, v] for k, v in _timing_facts(inputs)]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _environment_section(meta: dict) -> str:
    env = meta.get("environment", {})
    return "\n".join(["## Environment", "", "Software the model was trained with (from the model file):", "",
                      _md_table(["component", "version"], [[k, _value_text(v)] for k, v in sorted(env.items())]).rstrip("\n")]) + "\n"


def render_report(inputs: Inputs, plots_rel: str) -> str:
    meta, classes, m = inputs.meta, inputs.classes, inputs.metrics
    generated = bool(classes["generated"])
    title = f"# tinyclf report: {meta['model']} on {classes['dataset']}" + (" (GENERATED data)" if generated else "")
    head = [title, ""]
    if generated:
        head += [GENERATED_BANNER, ""]
    warning = imbalance_warning(inputs)
    if warning:
        head += [warning, ""]
    head += [
        f"**Top-1 {_pct(m['top1'])}**, top-5 {_pct(m['top5'])} on {m['num_images']:,} validation images — "
        f"{reference_verdict(m['top1'], comparability_note(classes['dataset'], generated) is None)}"
        + (" (generated data)." if generated else
           (f" ({classes['dataset']})." if classes["dataset"] != "tiny-imagenet" else ".")),
        "",
        "",
    ]
    sections = [
        _dataset_section(inputs),
        _params_section(inputs),
        _model_section(inputs),
        _training_section(inputs),
        _results_section(inputs, plots_rel),
        _highlights_section(inputs),
        _timing_section(inputs),
        _environment_section(meta),
    ]
    return "\n".join(head) + "\n".join(sections)


def render_model_card(inputs: Inputs) -> str:
    meta, classes = inputs.meta, inputs.classes
    lines = [f"# Model card: {meta['model']} for {classes['dataset']} ({meta['num_classes']} classes)", ""]
    if classes["generated"]:
        lines += [GENERATED_BANNER, ""]
    sections = [_card_details(inputs), _card_use_and_data(inputs), _card_metrics(inputs),
                _card_limitations(inputs), _card_how_to_load(inputs.export is not None)]
    for section in sections:
        lines += section + [""]
    return "\n".join(lines[:-1]) + "\n"


def _card_details(inputs: Inputs) -> list[str]:
    meta, table = inputs.meta, inputs.table
    environment = meta.get("environment", {})
    lines = [
        "## Model details",
        "",
        f"- Architecture: `{meta['model']}` (`tinyclf.model.architectures.create_model`)",
        f"- Initial weights: {init_text(meta)}",
        f"- Parameters: {table['total_params']:,}; mult-adds per image: {_macs_text(table['total_mult_adds'])}",
        f"- Input: RGB {meta['image_size']}×{meta['image_size']}, scaled to 0–1 and normalized with "
        f"mean {[round(v, 4) for v in meta['mean']]} and std {[round(v, 4) for v in meta['std']]}",
        f"- Output: logits over {meta['num_classes']} classes in `classes.json` order",
        f"- Weights: {meta['weights']}, {meta['epochs_trained']} epochs",
        f"- Framework: torch {environment.get('torch', '?')}, timm {environment.get('timm', '?')}",
        f"- Training cost: {cost_text(inputs.run, inputs.params.summarize.price_per_gpu_hour)}",
    ]
    if inputs.export:
        lines.append(f"- ONNX export: {export_text(inputs.export)}")
    return lines


def export_text(parity: dict) -> str:
    """One line on models/model.onnx from the export stage's parity.json."""
    size = f"{parity['onnx_bytes'] / 1e6:.1f} MB, " if "onnx_bytes" in parity else ""
    return (f"`models/model.onnx` ({size}opset {parity.get('opset', '?')}; RGB uint8 N×H×W×3 input, normalized "
            f"inside; class names in its metadata): matches PyTorch on {parity['images']:,} validation images, "
            f"max |logit difference| {parity['max_abs_logit_diff']:.2g}, same top-1 on "
            f"{parity['top1_agreement']:.2%}")


def _card_use_and_data(inputs: Inputs) -> list[str]:
    classes = inputs.classes
    data_kind = "generated (synthetic) images" if classes["generated"] else "real images"
    lines = [
        "## Intended use",
        "",
        "Research and teaching: a reproducible baseline for small-image classification "
        f"on {classes['dataset']}, and a check that the tinyclf pipeline works. Not for decisions about "
        "people or any safety-relevant use.",
        "",
        "## Training data",
        "",
        f"- {classes['dataset']}, {data_kind}; download.source = {_source_text(inputs.params.download.source)}",
        "- " + ", ".join(f"{split}: {n:,} images" for split, n in _split_counts(inputs.stats).items()),
    ]
    balance = train_balance(inputs.stats)
    if balance:
        sampling = ("class-balanced sampling (`train.balance: sampler`)" if _trained_with(inputs, "balance") == "sampler"
                    else "every image once per epoch")
        lines.append(f"- Train images per class: {balance['min']:,} to {balance['max']:,}; trained with {sampling}")
    return lines


def _card_metrics(inputs: Inputs) -> list[str]:
    m, classes = inputs.metrics, inputs.classes
    note = comparability_note(classes["dataset"], bool(classes["generated"]))
    lines = [
        "## Metrics",
        "",
        f"On all {m['num_images']:,} validation images"
        + (" (with flip test-time augmentation)" if m.get("tta_flip") else "") + ":",
        "",
        _md_table(["metric", "value"], [
            ["top-1 accuracy", _pct(m["top1"])],
            ["top-5 accuracy", _pct(m["top5"])],
            ["mean per-class accuracy", _pct(m["mean_class_accuracy"])],
            ["cross-entropy loss", f"{m['loss']:.4f}"],
            ["expected calibration error", f"{m['ece']:.4f}"],
        ]).rstrip("\n"),
        "",
        f"Reference: {REFERENCE_TEXT}; this model {reference_verdict(m['top1'], note is None)}."
        + (f" {note}" if note else ""),
    ]
    return lines


def _card_limitations(inputs: Inputs) -> list[str]:
    meta, m = inputs.meta, inputs.metrics
    lines = [
        "## Limitations",
        "",
        f"- Only seen {meta['image_size']}×{meta['image_size']} images of these {meta['num_classes']} classes; "
        "any other input is classified into one of them anyway.",
        "- Validation accuracy is measured on the validation split also used to monitor training; "
        "there is no separate held-out test score.",
        f"- Calibration: expected calibration error {m['ece']:.4f}; confidences are not probabilities "
        "to rely on without checking.",
    ]
    if inputs.classes["generated"]:
        lines.append("- Trained on generated data: it has learned synthetic patterns, not real objects.")
    if imbalance_warning(inputs):
        lines.append("- The train classes are strongly imbalanced: expect lower accuracy on the rare ones "
                     "(see the per-class accuracy in the report).")
    return lines


def _card_how_to_load(onnx: bool) -> list[str]:
    lines = [
        "## How to load",
        "",
        "```python",
        "from tinyclf.model.file import load_model_file",
        "",
        'model, meta = load_model_file("models/model.pt")  # eval mode, on the CPU',
        'print(meta["classes"][0], meta["image_size"], meta["mean"], meta["std"])',
        "```",
        "",
        "The file is a plain dict (`torch.load(path, weights_only=True)` reads it): "
        '`{"format": "tinyclf-model-v1", "state_dict", "meta"}`.',
    ]
    if onnx:  # the export stage ran: the model also runs without torch
        lines += ["", "Without PyTorch, `models/model.onnx` runs in onnxruntime on RGB uint8 images "
                  "(`tinyclf predict models/model.onnx photo.jpg`, or `tinyclf.serve.onnx_model.OnnxModel`)."]
    return lines


def write_summary(prepared_dir: str | Path, model_path: str | Path, train_dir: str | Path,
                  evaluate_dir: str | Path, out_dir: str | Path, params: Params,
                  export_parity: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, model_card.md and the training-curves figure under `out_dir`; returns their paths.
    `export_parity`: the export stage's parity.json, reported when given."""
    inputs = read_inputs(prepared_dir, model_path, train_dir, evaluate_dir, params, export_parity)
    out_dir = Path(out_dir)
    # Figures are linked relative to the report, so the report reads the same wherever the repo lives.
    plots_rel = Path(os.path.relpath(Path(evaluate_dir).resolve() / "plots", out_dir.resolve())).as_posix()
    curves = {name: (epochs_from_steps(steps), values) for name, (steps, values) in inputs.series.items()}
    paths = {"report": out_dir / "report.md", "model_card": out_dir / "model_card.md", "curves": out_dir / CURVES_FILE}
    plots.save_png(plots.training_curves(curves), paths["curves"])
    atomic.write_text(paths["model_card"], render_model_card(inputs))
    atomic.write_text(paths["report"], render_report(inputs, plots_rel))
    return paths
