"""The report's sections on how the model was made: "Parameters that differ from the defaults",
"Model" (architecture, size, starting weights, the layer table) and "Training" (curves, last values).
"""

from __future__ import annotations

from typing import Any

from tinyclf.model.summary import format_model_table
from tinyclf.params import Params
from tinyclf.report.facts import export_text, init_text, source_text
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import flatten, macs_text, md_table, value_text

CURVES_FILE = "training_curves.png"  # written next to report.md, linked from "Training"
INIT_GROUPS_SHOWN = 10  # not-loaded layers listed under "Initial weights"


def params_section(inputs: Inputs) -> str:
    diffs = params_differences(inputs.params)
    out = ["## Parameters that differ from the defaults", ""]
    if not diffs:
        out.append("None: every key in params.yaml has its default value (see `tinyclf.params`).")
        return "\n".join(out) + "\n"
    out.append("Defaults are those of `tinyclf.params.Params()`; everything not listed has its default value.")
    out.append("")
    out.append(md_table(["key", "default", "value"],
                        [[f"`{k}`", value_text(d), value_text(v)] for k, d, v in diffs]).rstrip("\n"))
    return "\n".join(out) + "\n"


def params_differences(params: Params) -> list[tuple[str, Any, Any]]:
    """(key, default, value) for every key whose value differs from the dataclass default."""
    defaults, current = flatten(Params().to_dict()), flatten(params.to_dict())
    rows = []
    for key in current:
        if current[key] != defaults.get(key):
            default, value = defaults.get(key), current[key]
            if key == "download.source":
                default, value = source_text(default), source_text(value)
            rows.append((key, default, value))
    return rows


def model_section(inputs: Inputs) -> str:
    meta, table = inputs.meta, inputs.table
    macs = table["total_mult_adds"]
    lines = [
        "## Model",
        "",
        f"- **Architecture:** `{meta['model']}`, {meta['num_classes']} classes, "
        f"{meta['image_size']}×{meta['image_size']} input",
        f"- **Parameters:** {table['total_params']:,} ({table['trainable_params']:,} trainable); "
        f"mult-adds per image: {macs_text(macs)}",
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


def _init_not_loaded_lines(meta: dict) -> list[str]:
    groups = (meta.get("init") or {}).get("not_loaded") or []
    lines = [f"  - `{g['module']}` ({', '.join(g['tensors'])}): {g['reason']}" if g["tensors"]
             else f"  - {g['module']} {g['reason']}" for g in groups[:INIT_GROUPS_SHOWN]]
    if len(groups) > INIT_GROUPS_SHOWN:
        lines.append(f"  - … and {len(groups) - INIT_GROUPS_SHOWN} more layers (the model file's meta `init` lists them)")
    return (["- **Not loaded** (kept freshly initialised):"] + lines) if lines else []


def training_section(inputs: Inputs) -> str:
    lines = ["## Training", "", f"![Training curves]({CURVES_FILE})", ""]
    # DVCLive nests "val/top1" as {"val": {"top1": …}}: flatten back to the logged names.
    summary = flatten({k: v for k, v in inputs.train_summary.items() if k != "step"}, sep="/")
    if summary:
        lines.append("Last logged values (DVCLive `metrics.json`):")
        lines.append("")
        lines.append(md_table(["metric", "value"],
                              [[k, f"{v:.4g}" if isinstance(v, float) else value_text(v)]
                               for k, v in sorted(summary.items())]).rstrip("\n"))
    else:
        lines.append("No training metrics were logged.")
    return "\n".join(lines) + "\n"
