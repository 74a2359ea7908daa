"""The summarize stage's wiring: read the inputs, write report.md, model_card.md and the training curves.

`write_summary` is what stages/summarize.py calls; `render_report` puts report.md together: its head
(title, banners, the headline against the reference) and its sections in reading order, each built
in its own module of `report/sections/`, named after the section. Nothing in the outputs depends
on the clock or on where the repository lives (no timestamps, no absolute paths), so unchanged
inputs give identical bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinyclf import atomic
from tinyclf.data import arrays
from tinyclf.evaluate.png import save_png
from tinyclf.params import Params
from tinyclf.report.card import render_model_card
from tinyclf.report.facts import imbalance_warning
from tinyclf.report.inputs import Inputs, Sources, epochs_from_steps, read_inputs
from tinyclf.report.markdown import pct
from tinyclf.report.sections.audit import audit_section
from tinyclf.report.reference import comparability_note, generated_banner, is_reference_dataset, reference_verdict
from tinyclf.report.sections.dataset import dataset_section
from tinyclf.report.sections.environment import environment_section
from tinyclf.report.sections.highlights import highlights_section
from tinyclf.report.sections.model import model_section
from tinyclf.report.sections.parameters import params_section
from tinyclf.report.sections.results import results_section
from tinyclf.report.sections.superclasses import superclass_section
from tinyclf.report.sections.timing import timing_section
from tinyclf.report.sections.training import CURVES_FILE, training_curves, training_section


def write_summary(sources: Sources, out_dir: str | Path, params: Params) -> dict[str, Path]:
    """Write report.md, model_card.md and the training-curves figure under `out_dir`; returns their paths."""
    inputs = read_inputs(sources, params)
    out_dir = Path(out_dir)
    # Figures are linked relative to the report, so the report reads the same wherever the repo lives.
    plots_rel = Path(os.path.relpath(sources.evaluate.resolve() / "plots", out_dir.resolve())).as_posix()
    curves = {name: (epochs_from_steps(steps), values) for name, (steps, values) in inputs.series.items()}
    paths = {"report": out_dir / "report.md", "model_card": out_dir / "model_card.md", "curves": out_dir / CURVES_FILE}
    save_png(training_curves(curves, (inputs.meta.get("selected") or {}).get("epoch")), paths["curves"])
    atomic.write_text(paths["model_card"], render_model_card(inputs))
    atomic.write_text(paths["report"], render_report(inputs, plots_rel, out_dir))
    return paths


def render_report(inputs: Inputs, plots_rel: str, out_dir: Path | None = None) -> str:
    """report.md; `plots_rel` is the evaluate stage's plots directory relative to the report, which
    is written into `out_dir` (the audit's contact sheets are linked relative to it)."""
    sections = [
        dataset_section(inputs),
        params_section(inputs),
        model_section(inputs),
        training_section(inputs),
        results_section(inputs, plots_rel),
        highlights_section(inputs),
        superclass_section(inputs),  # None unless classes.json has class groups
        audit_section(inputs, out_dir),  # None unless the audit stage ran and was on
        timing_section(inputs),
        environment_section(inputs.meta),
    ]
    return "\n".join(_head(inputs)) + "\n".join(s for s in sections if s is not None)


def _head(inputs: Inputs) -> list[str]:
    """Title, the GENERATED banner and the imbalance warning when they apply, and the headline."""
    meta, classes, m = inputs.meta, inputs.classes, inputs.metrics
    generated = bool(classes["generated"])
    title = f"# tinyclf report: {meta['model']} on {classes['dataset']}" + (" (GENERATED data)" if generated else "")
    head = [title, ""]
    if generated:
        head += [generated_banner(), ""]
    warning = imbalance_warning(inputs)
    if warning:
        head += [warning, ""]
    # A run on another dataset names it, so the verdict beside it is not read as a reference result.
    dataset = " (generated data)." if generated else ("." if is_reference_dataset(classes["dataset"])
                                                      else f" ({classes['dataset']}).")
    head += [
        f"**Top-1 {pct(m['top1'])}**, top-5 {pct(m['top5'])} on {inputs.per_class['num_images']:,} "
        f"{arrays.split_title(inputs.evaluated_split)} images — "
        f"{reference_verdict(m['top1'], comparability_note(classes['dataset'], generated) is None)}{dataset}",
        "",
        "",
    ]
    return head
