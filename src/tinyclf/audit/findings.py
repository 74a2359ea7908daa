"""The audit's findings as files: issues.csv rows, summary.json, the contact sheets.

issues.csv has one row per finding, kinds in the order label, duplicate, outlier, the most
suspect first within each; the columns:

- kind: `label` (cleanlab flags the given label), `duplicate` (a near-copy of `duplicate_of`),
  `outlier` (unlike any other image);
- split, source: the image, as `data/prepared/<split>/sources.json` names it (what `data.corrections`
  takes);
- score: how suspect, 0–1 for label (1 − the out-of-sample probability of the given label) and
  duplicate (the aligned thumbnails' similarity); for outlier, how far beyond the outlier limit
  (1 = at it; `tinyclf.audit.outliers`), in features or pixels, whichever is further;
- given_label, suggested_label: class ids; suggested is the most probable class for a label issue,
  and the copy's class for a duplicate filed under another class;
- duplicate_of, duplicate_split: the other image of a duplicate pair (the earlier split's: for a
  copy across train and val, `source` is the val image and `duplicate_of` the train one).

label_scores.csv ranks every image, not only those cleanlab flags, by its label quality (the
out-of-sample probability of its given label, lowest first): cleanlab's list is its estimate of how
many labels are wrong, and a user going further down, or a benchmark scoring a ranking, reads this.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from tinyclf import atomic
from tinyclf.data.arrays import prepared_output

COLUMNS = ("kind", "split", "source", "score", "given_label", "suggested_label", "duplicate_of", "duplicate_split")
SCORE_COLUMNS = ("split", "source", "label_quality", "given_label", "suggested_label", "flagged")
KINDS = ("label", "duplicate", "outlier")
SHEET_TITLES = {"label": "Likely label issues: given → suggested class",
                "duplicate": "Near-duplicates: the image and its copy",
                "outlier": "Outliers: unlike any other image"}


def write_disabled(out_dir: Path, params, dataset: str) -> dict:
    """The outputs of an audit that is off: summary.json saying why, an issues.csv of its header,
    no sheets. Returns the summary. Imports nothing heavy: an off audit costs a fraction of a second."""
    why = ("audit.enabled is false" if params.enabled is False
           else f"audit.enabled is auto, which audits own photo folders only (data.dataset: {dataset})")
    summary = {"enabled": False, "why": why}
    with prepared_output(out_dir) as tmp:
        write_outputs(tmp, ([], []), summary, {}, {"seconds": 0.0})
    return summary


def assemble(data, params, issues, pairs, outliers) -> tuple[tuple[list[dict], list[dict]], dict, dict]:
    """((issues.csv rows, label_scores.csv rows), summary.json, {kind: figure})."""
    labels = data.labels
    rows = _label_rows(data, issues) + _duplicate_rows(data, pairs, labels) + _outlier_rows(data, outliers)
    summary = {
        "enabled": True,
        "images": {**{s: int(len(data.passes[s].labels)) for s in data.splits}, "total": int(len(labels))},
        "train_probs": params.train_probs,
        "folds": params.folds if params.train_probs == "logistic" else None,
        "counts": {kind: sum(1 for r in rows if r["kind"] == kind) for kind in KINDS},
        "label_issues_by_split": _by_split(rows, "label", data.splits),
        "duplicates": _duplicate_counts(rows),
        "held_out_accuracy": _held_out_accuracy(data, pairs),
        "settings": {"neighbours": params.neighbours, "duplicate_pixel_similarity": params.duplicate_pixel_similarity,
                     "duplicate_hash_distance": params.duplicate_hash_distance, "outlier_fence": params.outlier_fence},
        "top": {kind: [r for r in rows if r["kind"] == kind][:10] for kind in KINDS},
    }
    sheets = {kind: _sheet(data, [r for r in rows if r["kind"] == kind][:params.sheet_images], kind) for kind in KINDS}
    return (rows, _score_rows(data, issues)), summary, sheets


def _score_rows(data, issues) -> list[dict]:
    labels, out = data.labels, []
    for row in np.argsort(issues.quality, kind="stable"):
        split, local = data.locate(int(row))
        out.append({"split": split, "source": data.sources[split][local],
                    "label_quality": round(float(issues.quality[row]), 4), "given_label": data.class_ids[labels[row]],
                    "suggested_label": data.class_ids[issues.suggested[row]], "flagged": int(issues.flagged[row])})
    return out


def _row(kind: str, split: str, source: str, score: float, given: str, suggested: str = "",
         copy_of: tuple[str, str] = ("", "")) -> dict:
    """One issues.csv row; `copy_of` is (source, split) of a duplicate's other image."""
    return {"kind": kind, "split": split, "source": source, "score": round(float(score), 4), "given_label": given,
            "suggested_label": suggested, "duplicate_of": copy_of[0], "duplicate_split": copy_of[1]}


def _label_rows(data, issues) -> list[dict]:
    flagged = np.nonzero(issues.flagged)[0]
    flagged = flagged[np.argsort(issues.quality[flagged], kind="stable")]
    labels, out = data.labels, []
    for row in flagged:
        split, local = data.locate(int(row))
        out.append(_row("label", split, data.sources[split][local], 1.0 - issues.quality[row],
                        data.class_ids[labels[row]], data.class_ids[issues.suggested[row]]))
    return out


def _duplicate_rows(data, pairs, labels: np.ndarray) -> list[dict]:
    out = []
    for (first, second), similarity in sorted(zip(pairs.pairs.tolist(), pairs.pixel_similarity.tolist()),
                                              key=lambda item: (-item[1], item[0])):
        split, local = data.locate(second)
        other_split, other_local = data.locate(first)
        given, other_label = data.class_ids[labels[second]], data.class_ids[labels[first]]
        out.append(_row("duplicate", split, data.sources[split][local], similarity, given,
                        other_label if other_label != given else "",
                        (data.sources[other_split][other_local], other_split)))
    return out


def _outlier_rows(data, outliers) -> list[dict]:
    labels, out = data.labels, []
    for row in outliers.flagged:
        split, local = data.locate(int(row))
        out.append(_row("outlier", split, data.sources[split][local], outliers.scores[row],
                        data.class_ids[labels[row]]))
    return out


def _by_split(rows: list[dict], kind: str, splits: list[str]) -> dict:
    return {s: sum(1 for r in rows if r["kind"] == kind and r["split"] == s) for s in splits}


def _duplicate_counts(rows: list[dict]) -> dict:
    """Pairs per (earlier split, later split), e.g. {"train-train": 3, "train-val": 2}; and those filed under two classes."""
    counts: dict[str, int] = {}
    for r in (r for r in rows if r["kind"] == "duplicate"):
        key = f"{r['duplicate_split']}-{r['split']}"
        counts[key] = counts.get(key, 0) + 1
    return {"pairs": dict(sorted(counts.items())),
            "different_classes": sum(1 for r in rows if r["kind"] == "duplicate" and r["suggested_label"])}


def _held_out_accuracy(data, pairs) -> dict:
    """For val (and test): top-1 on all its images, on those with a near-copy in train, and on the rest."""
    out = {}
    train_end = data.offsets["train"] + len(data.passes["train"].labels)
    for split in (s for s in data.splits if s != "train"):
        start = data.offsets[split]
        copied = {b - start for a, b in pairs.pairs.tolist() if a < train_end and start <= b < start + len(data.passes[split].labels)}
        correct = data.passes[split].predicted == data.passes[split].labels
        mask = np.zeros(len(correct), bool)
        mask[sorted(copied)] = True
        out[split] = {"images": int(len(correct)), "with_train_copy": int(mask.sum()),
                      "top1": _mean(correct), "top1_with_train_copy": _mean(correct[mask]),
                      "top1_without": _mean(correct[~mask])}
    return out


def _mean(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 6) if len(values) else None


def _sheet(data, rows: list[dict], kind: str):
    from tinyclf.audit.sheets import contact_sheet, file_caption

    tiles, captions = [], []
    for r in rows:
        images = [data.image(data.row_of(r["split"], r["source"]))]
        caption = file_caption(r["source"])
        if kind == "label":
            caption += f"\n{r['given_label'][:12]} → {r['suggested_label'][:12]}"
        elif kind == "duplicate":
            images.append(data.image(data.row_of(r["duplicate_split"], r["duplicate_of"])))
            caption += f"\n= {file_caption(r['duplicate_of'])}"
        else:
            caption += f"\n{r['given_label'][:12]}, {r['score']:.3f}"
        tiles.append(images)
        captions.append(caption)
    return contact_sheet(tiles, captions, SHEET_TITLES[kind])


def issues_csv(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_outputs(out_dir: Path, rows: tuple[list[dict], list[dict]], summary: dict, sheets: dict,
                  speed: dict) -> None:
    """issues.csv and label_scores.csv (`rows`), summary.json, speed.json, sheets/."""
    atomic.write_text(out_dir / "issues.csv", issues_csv(rows[0]))
    atomic.write_text(out_dir / "label_scores.csv", issues_csv(rows[1], SCORE_COLUMNS))
    atomic.write_json(out_dir / "summary.json", summary)
    atomic.write_json(out_dir / "speed.json", speed)
    (out_dir / "sheets").mkdir(exist_ok=True)
    if not summary.get("enabled"):  # DVC warns on every run about an empty output folder
        atomic.write_text(out_dir / "sheets" / "README.txt", "The audit was off: no contact sheets "
                                                             "(results/audit/summary.json says why).\n")
    if sheets:
        from tinyclf.evaluate.png import save_png
    for kind, figure in sheets.items():
        save_png(figure, out_dir / "sheets" / f"{kind}.png")
