"""Facts that both report.md and model_card.md state, each built in one place.

The metrics table, where the weights started, the epoch kept, the ONNX export, what training cost, the class
balance of the train split, accuracy per class group, and where the data came from. The report
and the card word their own lines around these; the facts themselves read the same in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyclf.data import arrays
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import md_table, pct
from tinyclf.report.reference import reference_cost_text


def metrics_table(metrics: dict, num_classes: int | None = None, val_metrics: dict | None = None) -> str:
    """The evaluate stage's metrics as a markdown table (no final newline); with `val_metrics` (a test
    split was evaluated) the val figures beside the test figures, each column named.

    With `num_classes` under 5 the top-5 row says what it measured then ("top-5 accuracy (top-4)").
    The report passes it; the card does not, and its row always reads "top-5 accuracy".
    """
    top5 = "top-5 accuracy"
    if num_classes is not None and num_classes < 5:
        top5 += f" (top-{num_classes})"
    rows = [("top-1 accuracy", "top1", pct), (top5, "top5", pct), ("mean per-class accuracy", "mean_class_accuracy", pct),
            ("cross-entropy loss", "loss", lambda v: f"{v:.4f}"), ("expected calibration error", "ece", lambda v: f"{v:.4f}")]
    if "macro_f1" in metrics:  # absent from metrics of an older evaluate stage
        rows.insert(3, ("macro-F1", "macro_f1", lambda v: f"{v:.4f}"))
    columns = [metrics] if val_metrics is None else [metrics, val_metrics]
    header = ["metric", "value"] if val_metrics is None else ["metric", "test", "val (chose the epoch)"]
    return md_table(header, [[name] + [fmt(c[key]) for c in columns] for name, key, fmt in rows]).rstrip("\n")


def group_accuracy(classes: dict, per_class: dict) -> list[dict]:
    """Validation accuracy per class group (classes.json `groups`, e.g. CIFAR-100's superclasses):
    {"index", "name", "classes", "count", "correct", "accuracy"} summed over the group's classes
    (per_class.json, joined on "index"), best first, then by index; [] without groups."""
    if "groups" not in classes:
        return []
    results = {c["index"]: c for c in per_class["classes"]}
    rows = {g["index"]: {"index": g["index"], "name": g["name"], "classes": 0, "count": 0, "correct": 0}
            for g in classes["groups"]}
    for c in classes["classes"]:
        row = rows[c["group"]]
        row["classes"] += 1
        row["count"] += int(results[c["index"]]["count"])
        row["correct"] += int(results[c["index"]]["correct"])
    for row in rows.values():
        row["accuracy"] = row["correct"] / row["count"] if row["count"] else None
    # A group without validation images has no accuracy: it goes last.
    return sorted(rows.values(), key=lambda r: (r["accuracy"] is None, -(r["accuracy"] or 0), r["index"]))


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


def finetune_texts(meta: dict) -> dict[str, str]:
    """One sentence per fine-tuning control the run used (the model file's `finetune`), by its key
    there: the frozen backbone and for how long, layer-wise lr decay, the classifier's rate, drop
    path; {} for none."""
    record = meta.get("finetune")
    if not record:
        return {}
    texts = {}
    freeze = record.get("freeze")
    if freeze:
        epochs = meta.get("epochs_trained")
        head = ", ".join(f"`{name}`" for name in freeze["trained_while_frozen"])
        kept = (f"only the classifier ({head}) trained, {freeze['frozen_tensors']:,} of {freeze['tensors']:,} "
                "tensors kept as loaded")
        span = "epoch 1" if freeze["epochs"] == 1 else f"epochs 1–{freeze['epochs']}"
        of = f" of {epochs}" if epochs else ""
        texts["freeze"] = (f"backbone frozen for all {freeze['epochs']} epochs (a linear probe): {kept}"
                           if freeze["epochs"] == epochs else
                           f"backbone frozen for {span}{of} (`train.freeze_epochs`): {kept}, BatchNorm statistics "
                           "included; then the whole network")
    decay = record.get("layer_decay")
    if decay:
        layers = decay["layers"]
        texts["layer_decay"] = (f"layer-wise lr decay {decay['decay']:g} (`train.layer_decay`) over {len(layers)} "
                                f"layer groups: lr ×{layers[0]['lr_scale']:.3g} for `{layers[0]['first']}` … ×1 for "
                                f"`{layers[-1]['first']}`")
    if record.get("head_lr_scale", 1) != 1:
        texts["head_lr_scale"] = f"classifier lr ×{record['head_lr_scale']:g} (`train.head_lr_scale`)"
    if record.get("drop_path"):
        texts["drop_path"] = f"stochastic depth, drop path {record['drop_path']:g} (`train.drop_path`)"
    return texts


def layer_decay_rows(meta: dict) -> list[str]:
    """The layer-decay schedule, one line per layer group: its parameters and lr scale ([] when off)."""
    decay = (meta.get("finetune") or {}).get("layer_decay")
    if not decay:
        return []
    return [f"layer {layer['layer']}: `{layer['first']}` … `{layer['last']}` ({layer['tensors']} tensors), "
            f"lr ×{layer['lr_scale']:.4g}" for layer in decay["layers"]]


def _init_source(source: str) -> str:
    """train.init without absolute paths (the report holds none): a path shows its file name."""
    return Path(source).name if Path(source).is_absolute() else source


def kept_epoch_text(meta: dict) -> str:
    """Which epoch's weights the model file holds and why (`train.keep`, meta `selected`), e.g.
    "epoch 7 of 10 (the best val/top1, 0.8440)"; model files from before the choice existed held the last."""
    selected = meta.get("selected")
    if not selected:
        return f"the last epoch of {meta['epochs_trained']}"
    why = (f"the best {selected['metric']}, {selected['value']:.4f}" if selected["keep"] == "best" else
           f"the last; the best {selected['metric']} was {selected['best_value']:.4f} at epoch {selected['best_epoch']}")
    return f"epoch {selected['epoch']} of {selected['epochs_run']} ({why})"


def early_stop_text(meta: dict) -> str | None:
    """Where and why the run stopped before its planned epochs (`train.patience`), or None."""
    selected = meta.get("selected") or {}
    if not selected.get("stopped_early"):
        return None
    return f"after epoch {selected['epochs_run']}: {selected['stop_reason']} (`train.patience: {selected['patience']}`)"


def export_text(parity: dict) -> str:
    """One line on models/model.onnx from the export stage's parity.json."""
    size = f"{parity['onnx_bytes'] / 1e6:.1f} MB, " if "onnx_bytes" in parity else ""
    return (f"`models/model.onnx` ({size}opset {parity.get('opset', '?')}; RGB uint8 N×H×W×3 input, normalized "
            f"inside; class names in its metadata): matches PyTorch on {parity['images']:,} validation images, "
            f"max |logit difference| {parity['max_abs_logit_diff']:.2g}, same top-1 on "
            f"{parity['top1_agreement']:.2%}")


def cost_usd(run: dict | None, price_per_gpu_hour: float) -> float | None:
    """What the run cost in USD: its GPU-hours at the price; None on a CPU or without a price."""
    hours = (run or {}).get("gpu_hours")
    if hours is None or not price_per_gpu_hour:
        return None
    return round(hours * price_per_gpu_hour, 2)


def cost_text(run: dict | None, price_per_gpu_hour: float) -> str:
    """What the run cost, next to the reference's; "n/a" on a CPU or without a price."""
    hours = (run or {}).get("gpu_hours")
    if hours is None:
        return f"n/a (not a GPU run); reference: {reference_cost_text()}"
    if not price_per_gpu_hour:
        return (f"{hours:.2f} GPU-hours; price n/a (set summarize.price_per_gpu_hour); "
                f"reference: {reference_cost_text()}")
    return (f"${cost_usd(run, price_per_gpu_hour):,.2f} ({hours:.2f} GPU-hours at ${price_per_gpu_hour:g} each); "
            f"reference: {reference_cost_text()}")


def mfu_text(run: dict) -> str:
    """Model FLOPs utilization from run.json, or why there is none."""
    value = run.get("mfu")
    if value is not None:
        basis = f"; {run['mfu_basis']}" if run.get("mfu_basis") else ""
        return f"{value:.1%} of the bf16 peak ({run.get('peak_bf16_tflops_per_gpu')} TFLOP/s per GPU{basis})"
    if run.get("device_type") != "cuda":
        return "n/a (not a GPU run)"
    return f"n/a (no bf16 peak known for {run.get('device')}; see tinyclf.train.cost.PEAK_BF16_TFLOPS)"


def imbalance_warning(inputs: Inputs) -> str | None:
    """The warning for a strongly imbalanced train split (arrays.class_balance), or None."""
    balance = train_balance(inputs.stats)
    if not balance or not balance.get("imbalanced"):
        return None
    extremes = (f"the largest class has {balance['max']:,} train images and the smallest {balance['min']:,}"
                + (f" ({balance['ratio']:g}×)" if balance.get("ratio") else " (a class has none)"))
    if trained_with(inputs, "balance") == "sampler":
        advice = "this run used `train.balance: sampler` (class-balanced sampling)."
    else:
        advice = ("rare classes are seen less often in training; try class-balanced sampling "
                  "(`train.balance: sampler`, e.g. `dvc exp run -S train.balance=sampler`) and compare the "
                  "per-class accuracy.")
    return f"> **⚠ Imbalanced classes:** {extremes}; {advice}"


def train_balance(stats: dict) -> dict | None:
    """stats.json's `class_balance` of the train split, computed here for a stats.json written before
    preprocess recorded it; None without per-class counts."""
    if isinstance(stats.get("class_balance"), dict):
        return stats["class_balance"]
    per_class = stats.get("splits", {}).get("train", {}).get("per_class")
    return arrays.class_balance(per_class) if per_class else None


def trained_with(inputs: Inputs, key: str) -> Any:
    """A train param as the model was trained with it (the model file's params), else params.yaml's."""
    recorded = inputs.meta.get("params", {}).get("train", {})
    return recorded[key] if key in recorded else getattr(inputs.params.train, key)


def source_text(source: str) -> str:
    """download.source for the report: a local path shows only its file name (no absolute paths)."""
    if source in ("official", "generated") or source.startswith(("http://", "https://")):
        return source
    return f"a local archive ({Path(source).name})"


def split_counts(stats: dict) -> dict[str, int]:
    """Images per split (stats.json): {"train": 100000, "val": 10000}, in the order train, val, test."""
    return {split: int(info.get("count", 0)) for split, info in ordered_splits(stats).items()}


def ordered_splits(stats: dict) -> dict[str, dict]:
    """stats.json's splits in the order train, val, test (the file keeps its keys sorted)."""
    splits = stats.get("splits", {})
    return {split: splits[split] for split in arrays.ALL_SPLITS if split in splits}
