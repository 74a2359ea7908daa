"""The figure of `tinyclf compare --plot`: what people look at when they compare runs.

Left, each run's val top-1 against its training minutes, one labelled point per run (better runs
sit high, cheaper ones to the left). Right, the val top-1 curves of the runs over the epochs,
overlaid (from each run's DVCLive history). Written as a PNG, or as an HTML page holding the
comparison table and the same figure (embedded, so the page is one file).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tinyclf import atomic  # noqa: E402
from tinyclf.compare import Run, table_cells  # noqa: E402


def figure(runs: list[Run], histories: dict[str, tuple[list[int], list[float]]]) -> Figure:
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    scatter, curves = fig.subplots(1, 2)
    for run in runs:
        minutes = run.metrics.get("train_minutes")
        if minutes is not None:
            scatter.scatter(minutes, run.top1 * 100, s=36)
            scatter.annotate(run.name, (minutes, run.top1 * 100), textcoords="offset points", xytext=(5, 4),
                             fontsize=8)
        epochs, values = histories.get(run.name, ([], []))
        if epochs:
            curves.plot(epochs, [v * 100 for v in values], marker="o", markersize=3, label=run.name)
    if not scatter.collections:  # runs from before the train stage recorded its time
        scatter.text(0.5, 0.5, "no training time recorded", ha="center", va="center", transform=scatter.transAxes)
    scatter.set(xlabel="training minutes", ylabel="val top-1 (%)", title="top-1 against training time")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set(xlabel="epoch", ylabel="val top-1 (%)", title="val top-1 per epoch")
    scatter.margins(0.2)  # room for the labels of the runs at the edges
    scatter.grid(alpha=0.3)
    curves.grid(alpha=0.3)
    if curves.lines:
        curves.legend(fontsize=8, loc="lower right")
    return fig


def write_plot(path: Path, runs: list[Run], histories: dict[str, tuple[list[int], list[float]]]) -> None:
    """The figure as `path` (.png), or an HTML page with the table and the figure (.html); atomic."""
    buffer = io.BytesIO()
    figure(runs, histories).savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    if path.suffix.lower() == ".png":
        atomic.write_bytes(path, buffer.getvalue())
        return
    header, rows = table_cells(runs)
    table = "".join(["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
                    + ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows])
    image = base64.b64encode(buffer.getvalue()).decode()
    atomic.write_text(path, "<!doctype html><meta charset=utf-8><title>tinyclf compare</title>"
                            "<style>body{font-family:sans-serif} td,th{padding:2px 10px;text-align:right}"
                            "td:first-child,th:first-child{text-align:left}</style>"
                            f"<h1>Runs compared</h1><table>{table}</table>"
                            f"<img alt='top-1 against training time, and val top-1 curves' "
                            f"src='data:image/png;base64,{image}'>\n")
