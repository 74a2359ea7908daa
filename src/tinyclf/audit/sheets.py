"""Contact sheets: one PNG per kind of finding, the top suspects as thumbnails captioned with their
file names, so a user can check the audit's findings by eye before accepting any of them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from tinyclf.evaluate.plots import short_name, source_file_name
from tinyclf.evaluate.png import new_figure

COLUMNS = 6


def contact_sheet(tiles: Sequence[Sequence[np.ndarray]], captions: Sequence[str], title: str) -> Figure:
    """A grid of tiles, each one or more HWC uint8 images side by side (a duplicate pair is two) with a caption."""
    n = len(tiles)
    per_tile = max((len(t) for t in tiles), default=1)
    cols = max(1, min(COLUMNS // per_tile if per_tile > 1 else COLUMNS, n))
    rows = max(1, -(-n // cols))
    fig = new_figure(max(1.9 * per_tile * cols, 6.0), 2.3 * rows + 0.4)  # room for the title
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "none found", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for slot, (images, caption) in enumerate(zip(tiles, captions)):
        ax = fig.add_subplot(rows, cols, slot + 1)
        ax.imshow(_side_by_side(images), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=10)
    top = 1 - 0.75 / fig.get_figheight()
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.1, hspace=0.6)
    return fig


def _side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
    if len(images) == 1:
        return images[0]
    gap = np.full((images[0].shape[0], max(2, images[0].shape[1] // 16), 3), 255, np.uint8)
    parts = []
    for image in images:
        parts += [image, gap]
    return np.concatenate(parts[:-1], axis=1)


def file_caption(source: str, width: int = 22) -> str:
    return short_name(source_file_name(source), width)
