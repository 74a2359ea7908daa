"""The report's sections on how well the model does: "Results" (metrics, the reference, the evaluate
stage's figures), "Per-class highlights" and, when classes.json has class groups (CIFAR-100's
superclasses), "Per-superclass accuracy".
"""

from __future__ import annotations

from tinyclf.report.facts import group_accuracy, metrics_table
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import md_table, pct
from tinyclf.report.reference import comparability_note, reference_text, reference_verdict

FIGURES = (("Per-class accuracy", "per_class_accuracy.png"), ("Most confused pairs", "confused_pairs.png"),
           ("Confusion matrix", "confusion_matrix.png"), ("Misclassified examples", "misclassified.png"))


def results_section(inputs: Inputs, plots_rel: str) -> str:
    """Metrics, the verdict against the reference, and the evaluate stage's figures (under `plots_rel`)."""
    m, classes = inputs.metrics, inputs.classes
    evaluated = inputs.per_class  # what was evaluated: num_images, tta_flip, generated
    note = comparability_note(classes["dataset"], bool(evaluated.get("generated", classes["generated"])))
    tta = "with horizontal-flip test-time augmentation" if evaluated.get("tta_flip") else "without test-time augmentation"
    lines = [
        "## Results",
        "",
        f"Evaluated on all {evaluated['num_images']:,} validation images, {tta}.",
        "",
        metrics_table(m, num_classes=len(classes["classes"])),
        "",
        f"**Against the reference** — {reference_text()}: this model reaches {pct(m['top1'])} top-1 and "
        f"**{reference_verdict(m['top1'], note is None)}**.",
    ]
    if note:
        lines += ["", f"_{note}_"]
    for title, file in FIGURES:
        lines += ["", f"![{title}]({plots_rel}/{file})"]
    return "\n".join(lines) + "\n"


def highlights_section(inputs: Inputs) -> str:
    """The best and worst classes and the most confused pairs (`summarize.highlight_classes` of each)."""
    ranked = _ranked_classes(inputs.per_class)
    k = min(inputs.params.summarize.highlight_classes, len(ranked))
    # With few classes the best and worst lists would overlap: split them instead.
    k_best = k if 2 * k <= len(ranked) else (len(ranked) + 1) // 2
    k_worst = k if 2 * k <= len(ranked) else len(ranked) // 2

    def rows(items):
        return [[c["index"], f"`{c['id']}`", c["name"], pct(c["accuracy"]), f"{c['correct']}/{c['count']}"]
                for c in items]

    header = ["index", "id", "name", "accuracy", "correct"]
    lines = ["## Per-class highlights", "", f"Best {k_best} classes:", "", md_table(header, rows(ranked[:k_best])).rstrip("\n")]
    if k_worst:
        lines += ["", f"Worst {k_worst} classes:", "", md_table(header, rows(ranked[::-1][:k_worst])).rstrip("\n")]
    pairs = inputs.per_class.get("confused_pairs", [])[:k]
    if pairs:
        lines += ["", "Most confused pairs (true → predicted):", "",
                  md_table(["true", "predicted", "images"],
                           [[p["true_name"], p["predicted_name"], p["count"]] for p in pairs]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _ranked_classes(per_class: dict) -> list[dict]:
    scored = [c for c in per_class["classes"] if c.get("accuracy") is not None]
    return sorted(scored, key=lambda c: (-c["accuracy"], c["index"]))


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
