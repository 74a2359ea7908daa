"""Figures as PNG files whose bytes depend on the picture only, so DVC sees an unchanged plot as unchanged.

Every PNG the package writes goes through here: the evaluate stage's plots, the report's training
curves and `tinyclf compare --plot`. Figures are built on `matplotlib.figure.Figure` with the Agg
canvas directly (no pyplot global state, no display needed) and saved at one fixed dpi without the
PNG `Software` tag ("Matplotlib version…"; no dates are written to PNG by default), so the same
picture gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run on servers without a display

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tinyclf import atomic  # noqa: E402

DPI = 110
_PNG_METADATA = {"Software": None}


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches at the files' dpi, on the Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """`fig` rendered to PNG deterministically (DPI, no Software tag)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=_PNG_METADATA)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path) -> None:
    """`fig` as a PNG file, written atomically."""
    atomic.write_bytes(path, png_bytes(fig))
