"""The evaluate stage's figures: PNGs that stay readable at 200 classes.

Sizes are fixed and the figures are saved through tinyclf.evaluate.png (fixed dpi, no PNG
`Software` tag), so the same numbers give the same PNG bytes: DVC sees an unchanged plot as unchanged.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: stages run on servers without a display

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tinyclf.evaluate.png import new_figure  # noqa: E402

# Up to this many classes every class gets a tick label; above it the axes stay unlabelled and
# only the extremes are annotated (200 names on one axis are unreadable).
LABEL_ALL_MAX = 20


def short_name(name: str, limit: int = 22) -> str:
    """First synonym of a WordNet-style name ("goldfish, Carassius auratus" -> "goldfish"), cut to `limit`."""
    first = name.split(",")[0].strip() or name
    return first if len(first) <= limit else first[: limit - 1] + "…"


def per_class_accuracy(accuracy: Sequence[float], names: Sequence[str], *, annotate: int = 5) -> Figure:
    """Per-class accuracy as a bar chart sorted from best to worst, with the mean as a line.

    Up to LABEL_ALL_MAX classes every bar is labelled; above it the bars are thin and unlabelled
    and the `annotate` best and worst classes are named on the chart.
    """
    acc = np.asarray(accuracy, dtype=float)
    order = np.argsort(-acc, kind="stable")
    n = len(acc)
    fig = new_figure(10, 4.8)
    ax = fig.add_subplot()
    xs = np.arange(n)
    if n <= LABEL_ALL_MAX:
        ax.bar(xs, acc[order] * 100, width=0.8, color="#4C72B0", linewidth=0)
    else:
        # One filled step outline instead of hundreds of bar patches: same picture, far faster to draw.
        ax.stairs(acc[order] * 100, np.arange(n + 1) - 0.5, fill=True, color="#4C72B0", linewidth=0)
    mean = float(acc.mean() * 100) if n else 0.0
    ax.axhline(mean, color="#C44E52", linestyle="--", linewidth=1, label=f"mean {mean:.1f}%")
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Per-class accuracy, {n} classes, best to worst")
    if n <= LABEL_ALL_MAX:
        ax.set_xticks(xs)
        ax.set_xticklabels([short_name(names[i]) for i in order], rotation=45, ha="right", fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_xlabel("classes sorted by accuracy")
        # Name the extremes in a box in the upper right, where a best-to-worst bar chart is empty.
        k = min(annotate, n // 2)
        best = [f"{short_name(names[c], 18)}: {acc[c] * 100:.0f}%" for c in order[:k]]
        worst = [f"{short_name(names[c], 18)}: {acc[c] * 100:.0f}%" for c in order[::-1][:k]]
        ax.text(0.99, 0.98, "best\n" + "\n".join(best) + "\n\nworst\n" + "\n".join(worst),
                transform=ax.transAxes, ha="right", va="top", fontsize=8, family="monospace",
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: np.ndarray, names: Sequence[str]) -> Figure:
    """Row-normalized confusion matrix heatmap (rows: true class, columns: predicted class)."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(names)
    size = 6.5 if n <= LABEL_ALL_MAX else 8.5
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix, row-normalized ({n} classes)")
    if n <= LABEL_ALL_MAX:
        labels = [short_name(name, 16) for name in names]
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels, fontsize=8)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    if counts[i, j]:
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="black" if norm[i, j] > 0.5 else "white")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def confused_pairs(pairs: Sequence[dict], names: Sequence[str]) -> Figure:
    """Horizontal bars of the most frequent (true -> predicted) mistakes, most frequent on top.

    `pairs` are dicts with `true`, `predicted` (class indices) and `count`.
    """
    k = len(pairs)
    fig = new_figure(9, max(2.5, 0.8 + 0.3 * k))
    ax = fig.add_subplot()
    if k == 0:
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        labels = [f"{short_name(names[p['true']])} → {short_name(names[p['predicted']])}" for p in pairs]
        counts = [p["count"] for p in pairs]
        ys = np.arange(k)[::-1]  # most frequent at the top
        ax.barh(ys, counts, color="#DD8452", height=0.7)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xlabel("images")
        for y, count in zip(ys, counts):
            ax.text(count, y, f" {count}", va="center", fontsize=7)
        ax.set_xlim(0, max(counts) * 1.12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Most confused class pairs (true → predicted), top {k}")
    fig.tight_layout()
    return fig


GRID_COLUMNS = 6  # images per row of the misclassified grid


def source_file_name(source: str) -> str:
    """The file part of a source ("…/images/n01443537_12.JPEG" -> "n01443537_12.JPEG"; "data_batch_3#12" stays)."""
    return source.rsplit("/", 1)[-1]


def misclassified_grid(images: np.ndarray, true: Sequence[int], predicted: Sequence[int],
                       confidence: Sequence[float], names: Sequence[str], *, sources: Sequence[str] | None = None,
                       split: str = "validation") -> Figure:
    """A grid of misclassified images (N×H×W×3 uint8) titled with true and predicted names and, given
    `sources`, each image's file name."""
    n = len(images)
    cols = max(1, min(GRID_COLUMNS, n))
    rows = max(1, -(-n // cols))
    title_lines = 3 if sources is not None else 2
    fig = new_figure(1.9 * cols, (1.85 + 0.15 * title_lines) * rows + 0.4)
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for slot in range(n):
        ax = fig.add_subplot(rows, cols, slot + 1)
        ax.imshow(images[slot], interpolation="nearest")
        ax.set_axis_off()
        file = f"\n{short_name(source_file_name(sources[slot]), 20)}" if sources is not None else ""
        ax.set_title(
            f"true: {short_name(names[true[slot]], 16)}\npred: {short_name(names[predicted[slot]], 16)}"
            f" ({confidence[slot] * 100:.0f}%){file}",
            fontsize=7,
        )
    fig.suptitle(f"Misclassified {split} images, most confident mistakes first", fontsize=10)
    # Fixed margins rather than tight_layout: measuring dozens of titled axes is slow and buys nothing here.
    top = 1 - 0.75 / fig.get_figheight()  # room for the suptitle and the first row's titles
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.1, hspace=0.175 * title_lines)
    return fig


def reliability_diagrams(panels: list[tuple[str, object]], labels: np.ndarray, bins: int) -> Figure:
    """One reliability diagram per (title, metrics.Summary): the accuracy of each equal-width confidence
    bin against the bin's mean confidence, the diagonal being perfect calibration; ECE in the title."""
    from tinyclf.evaluate.metrics import confidence_bins, expected_calibration_error

    fig = new_figure(4.2 * len(panels), 4.2)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for slot, (title, summary) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), slot + 1)
        confidence = np.asarray(summary.confidence, dtype=np.float64)
        correct = (summary.topk[:, 0] == labels).astype(np.float64)
        which = confidence_bins(confidence, bins)
        for b in range(bins):
            mask = which == b
            if mask.any():
                ax.bar(edges[b], correct[mask].mean(), width=1.0 / bins, align="edge", color="#4c72b0",
                       edgecolor="white", alpha=0.85)
                ax.plot(confidence[mask].mean(), correct[mask].mean(), "o", color="#c44e52", markersize=3)
        ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1)
        ece = expected_calibration_error(confidence, correct, bins)
        ax.set_title(f"{title}: ECE {ece:.4f}", fontsize=10)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
