"""The report's "Per-superclass accuracy" section, when classes.json has class groups (CIFAR-100's
20 superclasses): accuracy per group, best first."""

from __future__ import annotations

from tinyclf.report.facts import group_accuracy
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import md_table, pct


def superclass_section(inputs: Inputs) -> str | None:
    """Accuracy per class group of classes.json (`groups`), best first; None when it has no groups."""
    groups = group_accuracy(inputs.classes, inputs.per_class)
    if not groups:
        return None
    rows = [[g["name"], g["classes"], f"{g['count']:,}", f"{g['correct']:,}", pct(g["accuracy"])] for g in groups]
    lines = ["## Per-superclass accuracy", "",
             f"The {len(groups)} class groups of `classes.json`, each scored over all the validation images "
             "of its classes, best first:", "",
             md_table(["superclass", "classes", "validation images", "correct", "accuracy"], rows).rstrip("\n")]
    return "\n".join(lines) + "\n"

