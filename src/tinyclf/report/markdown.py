"""Markdown for the report and the model card: tables, and values written the same way everywhere.

Every number in report.md and model_card.md goes through these, so a percentage or a count reads
the same in each section (and the files stay byte-identical for unchanged inputs).
"""

from __future__ import annotations

import json
from typing import Any


def md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A GitHub markdown table, one line per row, ending in a newline; cells are escaped."""
    align = align or "|" + "|".join("---" for _ in header) + "|"
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cell(text: Any) -> str:
    """A value made safe for a table cell: a `|` would end the cell, a newline the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def pct(x: float | None) -> str:
    """0.1234 -> "12.34%"; None (nothing to measure, e.g. a class without images) -> "—"."""
    return "—" if x is None else f"{x * 100:.2f}%"


def value_text(value: Any) -> str:
    """A params / environment value as YAML would show it: true, 0.1, "", — for None, JSON for lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    if value is None:
        return "—"
    return json.dumps(value)


def number_text(value: Any) -> str:
    """A measured number: counts with thousands separators, floats to a readable precision."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value_text(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def macs_text(macs: int) -> str:
    """Mult-adds per image in G or M."""
    return f"{macs / 1e9:.2f} G" if macs >= 1e9 else f"{macs / 1e6:.2f} M"


def flatten(tree: dict, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and empty dicts stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + sep, sep))
        else:
            out[name] = value
    return out
