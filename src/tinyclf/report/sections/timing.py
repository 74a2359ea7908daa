"""The report's "Timing and hardware" section: run.json (whatever keys it holds), DVCLive's
per-epoch speed, the evaluate stage's speed.json, cost and MFU, and the training time next to the
reference's."""

from __future__ import annotations

from tinyclf.report.facts import cost_text, mfu_text
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import flatten, md_table, number_text
from tinyclf.report.reference import reference_time_text

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
RUN_SKIP = ("generated", "mfu", "mfu_basis")


def timing_section(inputs: Inputs) -> str:
    lines = ["## Timing and hardware", "",
             "Measured during this run (timings vary between runs; they are not part of the metrics).", "",
             md_table(["what", "value"], [[k, v] for k, v in timing_facts(inputs)]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def timing_facts(inputs: Inputs) -> list[tuple[str, str]]:
    """Training and evaluation timing: run.json (whatever keys it holds), DVCLive, speed.json."""
    rows = _run_rows(inputs)
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


def _run_rows(inputs: Inputs) -> list[tuple[str, str]]:
    """run.json's facts, then MFU, cost and the training time next to the reference's."""
    if inputs.run is None:
        return [("training run facts", "not recorded (run.json missing in the train directory)")]
    rows = []
    facts = flatten(inputs.run)
    # Known keys in a reading order (run.json itself is written with sorted keys), then the rest.
    for key in [k for k in RUN_LABELS if k in facts] + sorted(k for k in facts if k not in RUN_LABELS):
        if key not in RUN_SKIP:
            value = facts[key]
            rows.append((RUN_LABELS.get(key, key), "n/a" if value is None else number_text(value)))
    rows.append(("MFU (model FLOPs utilization)", mfu_text(inputs.run)))
    rows.append(("cost", cost_text(inputs.run, inputs.params.summarize.price_per_gpu_hour)))
    seconds = inputs.run.get("train_seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        rows.append(("training time", f"{seconds / 60:.1f} min (reference: {reference_time_text()})"))
    return rows

