"""The report's "Training" section: the epoch the model file kept and, when the run stopped early,
where and why; the training curves (training_curves.png, written next to report.md: loss, accuracy
and learning rate per epoch from the train stage's DVCLive history, one panel each, the kept epoch
marked) and the last logged values."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tinyclf.evaluate.png import new_figure
from tinyclf.report.facts import early_stop_text, kept_epoch_text
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import flatten, md_table, value_text

CURVES_FILE = "training_curves.png"  # written next to report.md, linked from the section


def training_section(inputs: Inputs) -> str:
    meta = inputs.meta
    lines = ["## Training", "", f"- **Epoch kept** (`train.keep`): {kept_epoch_text(meta)}"]
    stop = early_stop_text(meta)
    lines += [f"- **Stopped early** {stop}"] if stop else []
    lines += ["", f"![Training curves]({CURVES_FILE})", ""]
    # DVCLive nests "val/top1" as {"val": {"top1": …}}: flatten back to the logged names. "selected" is
    # the line above.
    summary = flatten({k: v for k, v in inputs.train_summary.items() if k not in ("step", "selected")}, sep="/")
    if summary:
        lines.append("Last logged values (DVCLive `metrics.json`):")
        lines.append("")
        lines.append(md_table(["metric", "value"],
                              [[k, f"{v:.4g}" if isinstance(v, float) else value_text(v)]
                               for k, v in sorted(summary.items())]).rstrip("\n"))
    else:
        lines.append("No training metrics were logged.")
    return "\n".join(lines) + "\n"



def training_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], kept_epoch: int | None = None) -> Figure:
    """Loss, accuracy and learning rate per epoch from DVCLive series {name: (epochs, values)}, with a
    dotted line at `kept_epoch` (1-based) when given.

    Missing series are skipped; a panel with no series says so.
    """
    panels = [
        # val_raw/val_ema: the weights not saved, when training kept both (EMA on).
        ("Loss", ["train/loss", "val/loss", "val_raw/loss", "val_ema/loss"], None),
        ("Accuracy (%)", ["train/acc", "val/top1", "val/top5", "val_raw/top1", "val_ema/top1"], 100.0),
        ("Learning rate", ["lr"], None),
    ]
    fig = new_figure(14, 4)
    for slot, (title, keys, scale) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), slot + 1)
        drawn = 0
        for key in keys:
            if key not in curves:
                continue
            xs, ys = curves[key]
            ys = ys * scale if scale else ys
            style = "--" if key.startswith(("val_raw/", "val_ema/")) else "-"
            ax.plot(xs, ys, style, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.3, label=key)
            drawn += 1
        if kept_epoch is not None and drawn:
            ax.axvline(kept_epoch, color="0.35", linestyle=":", linewidth=1.2, label=f"kept: epoch {kept_epoch}")
            drawn += 1
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig

