"""The report's "Model" section: architecture, size, starting weights (and the layers not loaded),
the weights saved, the ONNX export, and the layer table for one image."""

from __future__ import annotations

from tinyclf.model.summary import format_model_table
from tinyclf.report.facts import (early_stop_text, export_text, finetune_texts, init_text, kept_epoch_text,
                                  layer_decay_rows)
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import macs_text

INIT_GROUPS_SHOWN = 10  # not-loaded layers listed under "Initial weights"


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
        *_finetune_lines(meta),
        f"- **Weights saved:** {meta['weights']} (EMA when `ema`), {kept_epoch_text(meta)}",
        *([f"- **Stopped early** {early_stop_text(meta)}"] if early_stop_text(meta) else []),
        *([f"- **ONNX export:** {export_text(inputs.export)}"] if inputs.export else []),
        "",
        "Layer table for one image (torchinfo style; containers show the totals of what they hold):",
        "",
        format_model_table(table).rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


def _finetune_lines(meta: dict) -> list[str]:
    texts = finetune_texts(meta)
    if not texts:
        return []
    lines = ["- **Fine-tuning:**"]
    for control, text in texts.items():
        lines.append(f"  - {text[0].upper()}{text[1:]}")
        if control == "layer_decay":
            lines += [f"    - {row}" for row in layer_decay_rows(meta)]
    return lines


def _init_not_loaded_lines(meta: dict) -> list[str]:
    groups = (meta.get("init") or {}).get("not_loaded") or []
    lines = [f"  - `{g['module']}` ({', '.join(g['tensors'])}): {g['reason']}" if g["tensors"]
             else f"  - {g['module']} {g['reason']}" for g in groups[:INIT_GROUPS_SHOWN]]
    if len(groups) > INIT_GROUPS_SHOWN:
        lines.append(f"  - … and {len(groups) - INIT_GROUPS_SHOWN} more layers "
                     "(the model file's meta `init` lists them)")
    return (["- **Not loaded** (kept freshly initialised):"] + lines) if lines else []

