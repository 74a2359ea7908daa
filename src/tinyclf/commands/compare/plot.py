"""The figure of `tinyclf compare --plot`: what people look at when they compare runs.

Left, each run's val top-1 against its training minutes, one labelled point per run (better runs
sit high, cheaper ones to the left). Right, the val top-1 curves of the runs over the epochs,
overlaid (from each run's DVCLive history). Written as a PNG, or as an HTML page holding the
comparison table and the same figure (embedded, so the page is one file: rendering.html_page).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tinyclf import atomic  # noqa: E402
from tinyclf.commands.compare.rendering import html_page  # noqa: E402
from tinyclf.commands.compare.runs import Run  # noqa: E402
from tinyclf.evaluate.png import png_bytes, save_png  # noqa: E402


LABEL_STYLE = {"fontsize": 8, "va": "center", "annotation_clip": False}
BESIDE = 4  # a label's height above its point, in points, when nothing is in the way
LABEL_STEP = 11  # points between stacked labels (an 8-point name is about 10 high)


def figure(runs: list[Run], histories: dict[str, tuple[list[int], list[float]]]) -> Figure:
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure the labels with (label_points)
    scatter, curves = fig.subplots(1, 2)
    placed = []
    for run in runs:
        minutes = run.metrics.get("train_minutes")
        if minutes is not None:
            dot = scatter.scatter(minutes, run.top1 * 100, s=36)
            placed.append((run.name, (minutes, run.top1 * 100), dot.get_facecolor()[0]))
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
    else:  # no run has a DVCLive history (yet)
        curves.text(0.5, 0.5, "no val top-1 per epoch recorded", ha="center", va="center", transform=curves.transAxes)
    label_points(fig, scatter, placed)
    return fig


def label_points(fig: Figure, axes, points: list[tuple[str, tuple[float, float], tuple]]) -> None:
    """Names beside their points, in their colours, none over another name or another point: a
    sweep's runs often land on one spot (same top-1 after a short run, nearly the same minutes),
    and names printed over each other read as noise. Each label takes the first free slot beside,
    then above or below its point, in the table's order (best first), joined to its point by a
    line when it had to move."""
    fig.draw_without_rendering()  # the final axes size and limits, so pixel distances are real ones
    renderer = fig.canvas.get_renderer()
    # Every dot is in the way, a label's own too: a label starts 5 points right of its point, clear
    # of its own dot (4 points each side), so only other dots can stop it.
    taken = [_dot_box(axes, xy, fig.dpi) for _, xy, _ in points]
    for name, xy, colour in points:
        probe = axes.annotate(name, xy, textcoords="offset points", xytext=(5, BESIDE), **LABEL_STYLE)
        for offset in _slots():
            probe.xyann = (5, offset)
            box = probe.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in taken):
                break
        probe.remove()
        leader = None if offset == BESIDE else {"arrowstyle": "-", "linewidth": 0.8, "color": colour,
                                                "relpos": (0, 0.5), "shrinkB": 3}
        label = axes.annotate(name, xy, textcoords="offset points", xytext=(5, offset), arrowprops=leader,
                              color=colour, **LABEL_STYLE)
        label.set_in_layout(False)  # labels must not resize the axes they were placed in
        taken.append(box)


def _dot_box(axes, xy: tuple[float, float], dpi: float) -> Bbox:
    """The pixels a scatter dot covers (s=36: 6 points across), a little wider."""
    x, y = axes.transData.transform(xy)
    half = 4 * dpi / 72
    return Bbox.from_extents(x - half, y - half, x + half, y + half)


def _slots():
    """Vertical offsets in points: beside the point first, then alternately above and below it."""
    yield BESIDE
    for step in range(1, 500):
        yield BESIDE + step * LABEL_STEP
        yield BESIDE - step * LABEL_STEP


def write_plot(path: Path, runs: list[Run], histories: dict[str, tuple[list[int], list[float]]]) -> None:
    """The figure as `path` (.png), or an HTML page with the table and the figure (.html); atomic."""
    fig = figure(runs, histories)
    if path.suffix.lower() == ".png":
        save_png(fig, path)
    else:
        atomic.write_text(path, html_page(runs, png_bytes(fig)))
