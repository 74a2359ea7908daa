"""The report's "Data audit" section: what the audit stage found (results/audit/summary.json), how
much held-out accuracy rests on images copied from train, the top suspects and the contact sheets,
and how to act on them (`tinyclf audit accept`, data.corrections)."""

from __future__ import annotations

import os
from pathlib import Path

from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import md_table, pct

KIND_TITLES = {"label": "Likely label issues", "duplicate": "Near-duplicates", "outlier": "Outliers"}
TOP_ROWS = 5


def audit_section(inputs: Inputs, out_dir: Path | None) -> str | None:
    summary = inputs.audit
    if summary is None:
        return None
    lines = ["## Data audit", ""]
    if not summary.get("enabled"):
        return "\n".join(lines + [f"Not run: {summary.get('why', 'off')}. `dvc exp run -S audit.enabled=true` runs it "
                                  "(README \"Auditing your data\").", ""])
    counts, images = summary["counts"], summary["images"]
    split_counts = ", ".join(f"{images[s]:,} {s}" for s in images if s != "total")
    lines += [f"The trained model looked at all {images['total']:,} images ({split_counts}): "
              f"**{_count(counts['label'], 'likely label issue')}, {_count(counts['duplicate'], 'near-duplicate pair')}, "
              f"{_count(counts['outlier'], 'outlier')}**, each by source file in `results/audit/issues.csv` (every "
              "image ranked by label quality: `results/audit/label_scores.csv`).",
              "", _quality_note(summary), ""]
    lines += _held_out_lines(summary)
    for kind, title in KIND_TITLES.items():
        lines += _kind_lines(summary, kind, title, _sheet_link(inputs, out_dir, kind))
    lines += ["To act on them: review the sheets, then `tinyclf audit accept results/audit/issues.csv --kind label "
              "--split train --top 20 >> corrections.csv` (or `--kind duplicate`, `--kind outlier`), delete the lines "
              "you disagree with, commit corrections.csv and "
              "`dvc exp run`: preprocess applies it (`data.corrections`), and `tinyclf compare` shows the run before "
              "and after.", ""]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _quality_note(summary: dict) -> str:
    probs = {"logistic": f"a logistic regression on the model's features, {summary.get('folds')}-fold "
                         "cross-validated (out of sample)",
             "knn": "the labels of their nearest train images in feature space (out of sample)",
             "model": "the network's own probabilities (in sample: overconfident, errors it learned stay hidden)"}
    val = (summary.get("held_out_accuracy") or {}).get("val") or {}
    top1 = f" with val top-1 {pct(val['top1'])}" if val.get("top1") is not None else ""
    return (f"Label issues are cleanlab's confident learning; train images are judged by {probs[summary['train_probs']]}, "
            f"held-out images by the model's probabilities. The suggestions are only as good as the model{top1}: "
            "read them as a list to review, not as corrections. Near-duplicates are decided by the pixels and a "
            "perceptual hash, whatever the model's accuracy.")


def _held_out_lines(summary: dict) -> list[str]:
    lines = []
    for split, figures in (summary.get("held_out_accuracy") or {}).items():
        copied = figures["with_train_copy"]
        if not copied:
            lines.append(f"- No {split} image has a near-copy in train.")
            continue
        lines.append(f"- **{copied} of {figures['images']:,} {split} images {'has' if copied == 1 else 'have'} a near-copy in train**: top-1 "
                     f"{pct(figures['top1_with_train_copy'])} on them, {pct(figures['top1_without'])} on the rest "
                     f"({pct(figures['top1'])} overall): the {split} figure reads that much high.")
    return lines + ([""] if lines else [])


def _kind_lines(summary: dict, kind: str, title: str, sheet: str | None) -> list[str]:
    top = summary.get("top", {}).get(kind, [])[:TOP_ROWS]
    if not top:
        return [f"**{title}:** none.", ""]
    rows = [[r["split"], f"`{r['source']}`", r["score"], r["given_label"],
             r["suggested_label"] or ("" if kind != "duplicate" else "(same class)"),
             f"`{r['duplicate_of']}`" if r["duplicate_of"] else ""] for r in top]
    lines = [f"**{title}** (top {len(top)} of {summary['counts'][kind]}):", "",
             md_table(["split", "source", "score", "given", "suggested", "copy of"], rows).rstrip("\n"), ""]
    if sheet:
        lines += [f"![{title}]({sheet})", ""]
    return lines


def _sheet_link(inputs: Inputs, out_dir: Path | None, kind: str) -> str | None:
    if inputs.audit_dir is None or out_dir is None:
        return None
    sheet = inputs.audit_dir.resolve() / "sheets" / f"{kind}.png"
    return Path(os.path.relpath(sheet, Path(out_dir).resolve())).as_posix()
