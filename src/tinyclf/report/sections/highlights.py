"""The report's "Per-class highlights" section: the best and worst classes and the most confused pairs."""

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
        return [[c["index"], f"`{c['id']}`", c["name"], pct(c["accuracy"]), f"{c['correct']}/{c['count']}"]
                for c in items]

    header = ["index", "id", "name", "accuracy", "correct"]
    lines = ["## Per-class highlights", "", f"Best {k_best} classes:", "",
             md_table(header, rows(ranked[:k_best])).rstrip("\n")]
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

