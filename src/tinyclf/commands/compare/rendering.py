"""The compared runs as text: an aligned table, markdown, CSV, JSON, and the HTML page of `--plot x.html`."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from typing import Any

from tinyclf.commands.compare.runs import Run

FORMATS = ("table", "md", "csv", "json")
# (metrics key, column title, how a value reads) in column order; keys as the stages write them.
COLUMNS = (
    ("top1", "top-1", lambda v: f"{v:.2%}"),
    ("top5", "top-5", lambda v: f"{v:.2%}"),
    ("train_minutes", "train min", lambda v: f"{v:.1f}"),
    ("images_per_s", "images/s", lambda v: f"{v:,.0f}"),
    ("cost_usd", "cost", lambda v: f"${v:,.2f}"),
)


def render(runs: list[Run], fmt: str) -> str:
    """The runs (from `compare`) as a table, markdown, CSV or JSON."""
    if fmt == "json":
        return json.dumps([{"name": r.name, "rev": r.rev, "params": r.differing,
                            "metrics": {key: r.metrics.get(key) for key, _, _ in COLUMNS}} for r in runs], indent=2)
    if fmt == "csv":
        params = list(runs[0].differing) if runs else []
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run", *params, *(key for key, _, _ in COLUMNS)])
        writer.writerows([r.name, *r.differing.values(), *(r.metrics.get(key) for key, _, _ in COLUMNS)] for r in runs)
        return out.getvalue().rstrip("\n")
    header, rows = table_cells(runs)
    return _markdown(header, rows) if fmt == "md" else _aligned(header, rows)


def table_cells(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table as text: run, the differing params, then the compared numbers."""
    params = list(runs[0].differing) if runs else []
    header = ["run", *params, *(title for _, title, _ in COLUMNS)]
    rows = [[r.name, *(_param_text(v) for v in r.differing.values()),
             *("—" if r.metrics.get(key) is None else show(r.metrics[key]) for key, _, show in COLUMNS)]
            for r in runs]
    return header, rows


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _aligned(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    # The run name and params read left to right; numbers line up on the right.
    left = 1 + (len(header) - 1 - len(COLUMNS))

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    cells = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in cells)


def html_page(runs: list[Run], png: bytes) -> str:
    """One self-contained page: the table, then the figure (PNG bytes) embedded."""
    header, rows = table_cells(runs)
    table = "".join(["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
                    + ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows])
    image = base64.b64encode(png).decode()
    return ("<!doctype html><meta charset=utf-8><title>tinyclf compare</title>"
            "<style>body{font-family:sans-serif} td,th{padding:2px 10px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}</style>"
            f"<h1>Runs compared</h1><table>{table}</table>"
            f"<img alt='top-1 against training time, and val top-1 curves' "
            f"src='data:image/png;base64,{image}'>\n")
