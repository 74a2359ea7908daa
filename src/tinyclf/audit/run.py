"""The audit stage: what is likely wrong with the data, found with the trained model, by source file.

    run_audit(prepared_dir, model_path, out_dir, params.audit, dataset)

One pass of the model over every split (train, val, test) gives each image's features and
probabilities (`tinyclf.audit.features`); then, over all images at once:

- likely label issues (`label_issues`: cleanlab on out-of-sample probabilities),
- near-duplicates within and across splits (`duplicates`: pixels and a perceptual hash decide),
- outliers (`outliers`: far from every other image, in feature space or among the pixels).

Outputs under `out_dir` (docs/architecture.md): issues.csv (one row per finding), label_scores.csv
(every image ranked by label quality), summary.json
(counts, and how much held-out accuracy rests on images with a near-copy in train), sheets/ (a
contact sheet per kind) and speed.json (timing, apart from the rest so the same model and data
give the same bytes). With the audit off (`audit.enabled`), summary.json says so and the other
outputs are empty. Everything is written into a temp folder that replaces `out_dir` only when all
of it succeeded.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from tinyclf.audit import findings
from tinyclf.audit.duplicates import find_duplicates, thumbnails
from tinyclf.audit.features import FeatureModel, SplitPass, split_pass
from tinyclf.audit.label_issues import KNN_VOTERS, cross_validated_probs, find_label_issues, knn_probs
from tinyclf.audit.neighbours import Neighbours, nearest, project
from tinyclf.audit.outliers import find_outliers
from tinyclf.data import arrays
from tinyclf.evaluate.run import check_compatible, default_device
from tinyclf.model.file import load_model_file
from tinyclf.params import AuditParams


@dataclass
class AuditedData:
    """Every audited image in one global order (train, then val, then test), with where it came from."""

    prepared_dir: Path
    splits: list[str]
    passes: dict[str, SplitPass]
    sources: dict[str, list[str]]
    class_ids: list[str]
    images: dict[str, np.ndarray] = field(default_factory=dict)  # each split's pixels, memory-mapped

    def __post_init__(self):
        self.images = {s: arrays.load_split(self.prepared_dir, s, mmap=True)[0] for s in self.splits}

    @cached_property  # asked for every row located: computed once
    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for split in self.splits:
            out[split] = start
            start += len(self.passes[split].labels)
        return out

    def locate(self, row: int) -> tuple[str, int]:
        """(split, row in the split) of a global row."""
        for split in reversed(self.splits):
            if row >= self.offsets[split]:
                return split, row - self.offsets[split]
        raise IndexError(row)

    def image(self, row: int) -> np.ndarray:
        split, local = self.locate(row)
        return np.asarray(self.images[split][local])

    def rows(self, split: str) -> np.ndarray:
        """The global rows of `split`."""
        return np.arange(self.offsets[split], self.offsets[split] + len(self.passes[split].labels))

    def held_out_rows(self) -> np.ndarray:
        return np.concatenate([self.rows(s) for s in self.splits if s != "train"] or [np.zeros(0, np.int64)])

    @cached_property
    def labels(self) -> np.ndarray:
        """Every image's given label, in the global order."""
        return np.concatenate([self.passes[s].labels for s in self.splits])

    @cached_property
    def _rows_by_source(self) -> dict[tuple[str, str], int]:
        return {(s, source): self.offsets[s] + i for s in self.splits for i, source in enumerate(self.sources[s])}

    def row_of(self, split: str, source: str) -> int:
        """The global row of the image `source` of `split`."""
        return self._rows_by_source[(split, source)]


def run_audit(prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path, params: AuditParams,
              dataset: str, *, progress: bool = True) -> dict:
    """Audit the prepared data with the model and write every output under `out_dir`; returns summary.json's content."""
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    started = time.perf_counter()
    if not params.runs_on(dataset):
        return findings.write_disabled(out_dir, params, dataset)
    model, meta, classes, splits = _read_inputs(prepared_dir, Path(model_path))
    with tempfile.TemporaryDirectory(prefix="audit-features-", dir=out_dir.parent if out_dir.parent.exists() else None) as scratch:
        feature_model = FeatureModel(model, meta, default_device())
        passes = {split: split_pass(feature_model, prepared_dir, split, Path(scratch) / f"{split}.npy",
                                    batch_size=params.batch_size, workers=params.workers, progress=progress)
                  for split in splits}
        seconds_forward = time.perf_counter() - started
        data = AuditedData(prepared_dir, splits, passes,
                           {s: arrays.load_sources(prepared_dir, s) or [f"{s}#{i}" for i in range(len(passes[s].labels))]
                            for s in splits}, [c["id"] for c in classes["classes"]])
        rows, summary, sheets = _analyse(data, params)
        del passes, data  # the memory maps close before their folder goes
    speed = {"seconds": round(time.perf_counter() - started, 3), "forward_seconds": round(seconds_forward, 3),
             "images": summary["images"]["total"]}
    with arrays.prepared_output(out_dir) as tmp:
        findings.write_outputs(tmp, rows, summary, sheets, speed)
    return summary


def _read_inputs(prepared_dir: Path, model_path: Path):
    classes = arrays.load_classes(prepared_dir)
    stats = arrays.load_stats(prepared_dir)
    splits = [s for s in arrays.ALL_SPLITS if s in stats["splits"]]
    model, meta = load_model_file(model_path)
    for split in splits:
        check_compatible(meta, classes, stats, arrays.load_split(prepared_dir, split, mmap=True)[0].shape, split)
    return model, meta, classes, splits


def _analyse(data: AuditedData, params: AuditParams) -> tuple[list[dict], dict, dict]:
    """((issues.csv rows, label_scores.csv rows), summary.json, the contact sheets' figures)."""
    features = [data.passes[s].features for s in data.splits]
    vectors = project(features)
    searched = nearest(vectors, max(params.neighbours, KNN_VOTERS if params.train_probs == "knn" else 0))
    neighbours = Neighbours(searched.indices[:, :params.neighbours], searched.similarities[:, :params.neighbours])
    labels = data.labels
    probs = _out_of_sample_probs(data, params, vectors, searched)
    issues = find_label_issues(labels, probs, [data.rows("train"), data.held_out_rows()])
    thumbs = thumbnails(_ImagesView(data))
    pairs = find_duplicates(thumbs, (neighbours, nearest(thumbs, params.neighbours)), data.image,
                            min_pixel_similarity=params.duplicate_pixel_similarity,
                            max_hash_distance=params.duplicate_hash_distance)
    structure = nearest(thumbnails(_ImagesView(data), per_channel=True), params.neighbours)
    outliers = find_outliers(neighbours, structure, params.outlier_fence)
    return findings.assemble(data, params, issues, pairs, outliers)


def _out_of_sample_probs(data: AuditedData, params: AuditParams, vectors: np.ndarray, neighbours) -> np.ndarray:
    """Each image's class probabilities, out of sample: the model's own for val and test; for train
    as `audit.train_probs` says."""
    probs = np.concatenate([np.exp(data.passes[s].log_probs.astype(np.float64)) for s in data.splits])
    train = data.rows("train")
    labels = data.labels
    if params.train_probs == "logistic":
        probs[train] = cross_validated_probs(vectors[train], labels[train], params.folds)
    elif params.train_probs == "knn":
        voters = np.full(len(labels), -1)
        voters[train] = labels[train]  # train's labels vote; held-out images never teach the audit
        probs[train] = knn_probs(neighbours, voters, probs.shape[1], train)
    return probs


class _ImagesView:
    """All splits' images as one sequence for slicing (chunks never cross a split)."""

    def __init__(self, data: AuditedData):
        self.arrays = [data.images[s] for s in data.splits]

    def __len__(self) -> int:
        return sum(len(a) for a in self.arrays)

    def __getitem__(self, window: slice) -> np.ndarray:
        start, stop = window.start or 0, min(window.stop, len(self))
        parts, offset = [], 0
        for images in self.arrays:
            lo, hi = max(start - offset, 0), min(stop - offset, len(images))
            if lo < hi:
                parts.append(np.asarray(images[lo:hi]))
            offset += len(images)
        return np.concatenate(parts)
