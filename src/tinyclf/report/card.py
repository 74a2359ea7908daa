"""model_card.md: what the model is, what it was trained on, how well it does, its limits, how to load it.

A short card in the usual model-card sections; the facts it shares with report.md (metrics,
starting weights, cost, export, class balance, the reference) come from `tinyclf.report.facts`
and `tinyclf.report.reference`, so the two files never disagree.
"""

from __future__ import annotations

from tinyclf.report.facts import (cost_text, export_text, finetune_texts, group_accuracy, imbalance_warning,
                                  init_text, kept_epoch_text, metrics_table, source_text, split_counts, train_balance,
                                  trained_with)
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import macs_text, pct
from tinyclf.report.reference import comparability_note, generated_banner, reference_text, reference_verdict


def render_model_card(inputs: Inputs) -> str:
    meta, classes = inputs.meta, inputs.classes
    lines = [f"# Model card: {meta['model']} for {classes['dataset']} ({meta['num_classes']} classes)", ""]
    if classes["generated"]:
        lines += [generated_banner(), ""]
    sections = [_details(inputs), _use_and_data(inputs), _metrics(inputs),
                _limitations(inputs), _how_to_load(inputs.export is not None)]
    for section in sections:
        lines += section + [""]
    return "\n".join(lines[:-1]) + "\n"


def _details(inputs: Inputs) -> list[str]:
    meta, table = inputs.meta, inputs.table
    environment = meta.get("environment", {})
    lines = [
        "## Model details",
        "",
        f"- Architecture: `{meta['model']}` (`tinyclf.model.architectures.create_model`)",
        f"- Initial weights: {init_text(meta)}",
        *[f"- Fine-tuning: {text}" for text in finetune_texts(meta).values()],
        f"- Parameters: {table['total_params']:,}; mult-adds per image: {macs_text(table['total_mult_adds'])}",
        f"- Input: RGB {meta['image_size']}×{meta['image_size']}, scaled to 0–1 and normalized with "
        f"mean {[round(v, 4) for v in meta['mean']]} and std {[round(v, 4) for v in meta['std']]}",
        f"- Output: logits over {meta['num_classes']} classes in `classes.json` order",
        f"- Weights: {meta['weights']}, {kept_epoch_text(meta)}",
        f"- Framework: torch {environment.get('torch', '?')}, timm {environment.get('timm', '?')}",
        f"- Training cost: {cost_text(inputs.run, inputs.params.summarize.price_per_gpu_hour)}",
    ]
    if inputs.export:
        lines.append(f"- ONNX export: {export_text(inputs.export)}")
    return lines


def _use_and_data(inputs: Inputs) -> list[str]:
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
        f"- {classes['dataset']}, {data_kind}; download.source = {source_text(inputs.params.download.source)}",
        "- " + ", ".join(f"{split}: {n:,} images" for split, n in split_counts(inputs.stats).items()),
    ]
    balance = train_balance(inputs.stats)
    if balance:
        sampling = ("class-balanced sampling (`train.balance: sampler`)" if trained_with(inputs, "balance") == "sampler"
                    else "every image once per epoch")
        lines.append(f"- Train images per class: {balance['min']:,} to {balance['max']:,}; trained with {sampling}")
    return lines


def _metrics(inputs: Inputs) -> list[str]:
    m, classes = inputs.metrics, inputs.classes
    note = comparability_note(classes["dataset"], bool(classes["generated"]))
    lines = [
        "## Metrics",
        "",
        f"On all {inputs.per_class['num_images']:,} "
        + ("held-out test images (never used for choosing)" if inputs.evaluated_split == "test" else "validation images")
        + (" (with flip test-time augmentation)" if inputs.per_class.get("tta_flip") else "") + ":",
        "",
        metrics_table(m, val_metrics=inputs.val_metrics),
        "",
        f"Reference: {reference_text()}; this model {reference_verdict(m['top1'], note is None)}."
        + (f" {note}" if note else ""),
    ]
    return lines + _superclass_lines(inputs)


def _superclass_lines(inputs: Inputs) -> list[str]:
    """One line on the class groups (classes.json `groups`), when there are any: the report has the table."""
    groups = group_accuracy(inputs.classes, inputs.per_class)
    scored = [g for g in groups if g["accuracy"] is not None]
    if not scored:
        return []
    best, worst = scored[0], scored[-1]
    return ["", f"Per superclass: from {pct(worst['accuracy'])} ({worst['name']}) to {pct(best['accuracy'])} "
                f"({best['name']}) over the {len(groups)} class groups of `classes.json`; the report lists each."]


def _limitations(inputs: Inputs) -> list[str]:
    meta, m = inputs.meta, inputs.metrics
    lines = [
        "## Limitations",
        "",
        f"- Only seen {meta['image_size']}×{meta['image_size']} images of these {meta['num_classes']} classes; "
        "any other input is classified into one of them anyway.",
        *(["- Validation accuracy is measured on the validation split that also chose the epoch kept; "
            "there is no separate held-out test score (own folders: a test/ folder or `data.test_fraction`; "
            "official datasets: `data.val_from_train`)."] if inputs.evaluated_split == "val" else []),
        f"- Calibration: expected calibration error {m['ece']:.4f}; confidences are not probabilities "
        "to rely on without checking.",
    ]
    if inputs.classes["generated"]:
        lines.append("- Trained on generated data: it has learned synthetic patterns, not real objects.")
    if imbalance_warning(inputs):
        lines.append("- The train classes are strongly imbalanced: expect lower accuracy on the rare ones "
                     "(see the per-class accuracy in the report).")
    return lines


def _how_to_load(onnx: bool) -> list[str]:
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
