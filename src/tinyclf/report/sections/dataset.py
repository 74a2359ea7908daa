"""The report's "Dataset" section: what was prepared, from where, what preprocess changed, images per class.

Own images (`data.dataset: folder`) add how the folder was read and what was left out
(stats.json `folder`); label fixes from `data.corrections` are counted (stats.json `corrections`).
Images per class list every class when there are few, else the spread and the extremes, so 200
classes stay readable.
"""

from __future__ import annotations

import numpy as np

from tinyclf.report.facts import ordered_splits, source_text, split_counts
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import md_table

# Classes up to which the report lists every class's image counts; above, the extremes only.
FULL_COUNTS_MAX = 20
EXTREME_CLASSES = 5  # smallest and largest classes listed when not all are


def dataset_section(inputs: Inputs) -> str:
    p, stats, classes = inputs.params, inputs.stats, inputs.classes
    generated = bool(classes["generated"])
    counts = split_counts(stats)
    h, w = stats["image_size"]
    lines = [
        "## Dataset",
        "",
        f"- **Dataset:** {classes['dataset']} — {len(classes['classes'])} classes, {h}×{w} pixels"
        + (" (**generated**, synthetic images)" if generated else " (real images)"),
        f"- **Source:** download.source = {source_text(p.download.source)}",
        "- **Images:** " + ", ".join(f"{split} {n:,}" for split, n in counts.items()),
    ]
    for split, info in ordered_splits(stats).items():
        notes = _preprocess_notes(info)
        if notes:
            lines.append(f"- **{split}:** " + "; ".join(notes))
    lines += folder_lines(stats.get("folder"))
    duplicates = stats.get("duplicates_across_splits") or {}
    if duplicates.get("count"):  # an official dataset's images that are pixel-identical in two splits
        shown = ", ".join(f"`{' = '.join(pair)}`" for pair in duplicates["first"][:3])
        lines.append(f"- **{duplicates['count']} images pixel-identical in two splits** (they inflate held-out "
                     f"accuracy): {shown}{' …' if duplicates['count'] > 3 else ''}")
    lines += corrections_lines(stats.get("corrections"))
    holdout = stats.get("holdout")
    if holdout:  # an official dataset with data.val_from_train
        lines.append(f"- **Splits:** val = {holdout['val']} (split_seed {holdout['split_seed']}); test = "
                     f"{holdout['test']}, used only for the figures reported, never for choosing")
    mean = ", ".join(f"{v:.4f}" for v in stats["mean"])
    std = ", ".join(f"{v:.4f}" for v in stats["std"])
    lines.append(f"- **Normalization (train split, 0–1 scale):** mean [{mean}], std [{std}]")
    # The imbalance warning, if any, heads the report; the counts behind it are here.
    lines += class_counts_lines(inputs)
    return "\n".join(lines) + "\n"


def corrections_lines(corrections: dict | None) -> list[str]:
    """What `data.corrections` changed (stats.json `corrections`): counts, per split, the first few by source."""
    if not corrections:
        return []
    per_split = "; ".join(f"{split} {c['relabelled']} relabelled, {c['dropped']} dropped"
                          for split, c in corrections["splits"].items() if c["relabelled"] or c["dropped"])
    changes = [f"`{c['source']}` {c['from']} → {c['to']}" if c["to"] is not None
               else f"`{c['source']}` ({c['from']}) dropped" for c in corrections["first"][:3]]
    more = " …" if corrections["relabelled"] + corrections["dropped"] > 3 else ""
    n = corrections["lines"]
    return [f"- **Corrected labels** (`{corrections['file']}`, {n} line{'s' if n != 1 else ''}): "
            f"{corrections['relabelled']} relabelled, {corrections['dropped']} dropped ({per_split}): "
            f"{', '.join(changes)}{more}"]


def _preprocess_notes(info: dict) -> list[str]:
    """What preprocess did to a split's images (stats.json `splits.<split>`): conversions, resizes…"""
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
    return notes


def folder_lines(folder: dict | None) -> list[str]:
    """Own images: how the folder was read, and what was left out or looks wrong (stats.json `folder`)."""
    if not folder:
        return []
    drawn = [f"{folder[key]:.0%} of each class held out for {name}" for key, name in
             (("val_fraction", "val"), ("test_fraction", "test")) if folder.get(key) is not None]
    split = (f"{folder['layout']}: {' and '.join(drawn)} (split_seed {folder['split_seed']})" if drawn
             else folder["layout"])
    lines = [f"- **Layout:** {split}; non-square images made square by `{folder['resize']}`"]
    listed = [("not_images", "files skipped as not images (or hidden / system files)"),
              ("links_not_followed", "links not followed"),
              ("duplicates_across_splits", "held-out images byte-identical to images of another split (they "
               "inflate val or test accuracy)")]
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


def class_counts_lines(inputs: Inputs) -> list[str]:
    """Images per class in train, val and test (stats.json): every class when there are few, else the
    spread and the smallest and largest train classes, so 200 classes stay readable."""
    splits = inputs.stats.get("splits", {})
    train = splits.get("train", {}).get("per_class")
    names = [c["name"] for c in inputs.classes["classes"]]
    if not train or len(train) != len(names):
        return []
    held_out = {split: splits.get(split, {}).get("per_class") for split in ("val", "test")}
    held_out = {split: counts for split, counts in held_out.items() if counts and len(counts) == len(train)}
    header = ["index", "class", "train"] + list(held_out)

    def row(i: int) -> list:
        return [i, names[i], f"{train[i]:,}"] + [f"{counts[i]:,}" for counts in held_out.values()]

    if len(train) <= FULL_COUNTS_MAX:
        return ["", "Images per class:", "", md_table(header, [row(i) for i in range(len(train))]).rstrip("\n")]
    by_count = sorted(range(len(train)), key=lambda i: (train[i], i))
    k = EXTREME_CLASSES
    rows = [row(i) for i in by_count[:k]] + [["…"] * len(header)] + [row(i) for i in by_count[-k:]]
    return ["", f"Train images per class: min {min(train):,}, median {float(np.median(train)):g}, "
            f"max {max(train):,} over {len(train)} classes; the {k} smallest and {k} largest:", "",
            md_table(header, rows).rstrip("\n")]
