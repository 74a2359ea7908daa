"""The report's "Per-class highlights" section: the best and worst classes by F1 (with precision,
recall and accuracy) and the most confused pairs."""

from __future__ import annotations

from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import md_table, pct


def highlights_section(inputs: Inputs) -> str:
    """The best and worst classes and the most confused pairs (`summarize.highlight_classes` of each)."""
    ranked = _ranked_classes(inputs.per_class)
    k = min(inputs.params.summarize.highlight_classes, len(ranked))
    # With few classes the best and worst lists would overlap: split them instead.
    k_best = k if 2 * k <= len(ranked) else (len(ranked) + 1) // 2
    k_worst = k if 2 * k <= len(ranked) else len(ranked) // 2

    def rows(items):
        return [[c["index"], f"`{c['id']}`", c["name"], _score(c.get("f1")), _score(c.get("precision")),
                 _score(c.get("recall", c["accuracy"])), f"{c['correct']}/{c['count']}"] for c in items]

    header = ["index", "id", "name", "F1", "precision", "recall (accuracy)", "correct"]
    worst = ranked[::-1][:k_worst]
    lines = ["## Per-class highlights", "",
             "Ranked by F1 (`results/evaluate/per_class.json` has every class; \"—\": no image of the class, or "
             "never predicted).", ""]
    if k_worst:
        lines += [f"Worst {k_worst} classes, worst first:", "", md_table(header, rows(worst)).rstrip("\n"), ""]
    lines += [f"Best {k_best} classes:", "", md_table(header, rows(ranked[:k_best])).rstrip("\n")]
    pairs = inputs.per_class.get("confused_pairs", [])[:k]
    if pairs:
        lines += ["", "Most confused pairs (true → predicted):", "",
                  md_table(["true", "predicted", "images"],
                           [[p["true_name"], p["predicted_name"], p["count"]] for p in pairs]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _ranked_classes(per_class: dict) -> list[dict]:
    """Classes with images, best first: by F1 (accuracy for results of an older evaluate stage)."""
    scored = [c for c in per_class["classes"] if c.get("accuracy") is not None]
    return sorted(scored, key=lambda c: (-(c.get("f1") if c.get("f1") is not None else c["accuracy"]), c["index"]))


def _score(value: float | None) -> str:
    return "—" if value is None else pct(value)

