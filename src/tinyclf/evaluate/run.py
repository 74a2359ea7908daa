"""The evaluate stage: one pass of the trained model over the whole test split when the prepared
data has one (`tinyclf.data.arrays.TEST_SPLIT`), else over the validation split.

Every image is seen exactly once (a sequential sampler, no drop_last, one process), so the numbers
are exact. With a test split, val is measured too, for val_metrics.json only: val chose the epoch
(and, across a sweep, the run), so its figures read high; the test split was never used for
choosing. Outputs (docs/architecture.md):

- metrics.json     top1, top5, mean_class_accuracy, loss, ece, macro_f1 of the evaluated split — what runs are
                   compared by (the DVC metric), rounded and free of timing: the same model and data
                   give the same bytes
- val_metrics.json the same figures on the val split (equal to metrics.json without a test split)
- speed.json       images_per_s, seconds, device — timing lives apart from metrics.json
- predictions.csv  index,true,predicted,top5,confidence,source — enough to recount every metric, and
                   the file each image came from (`tinyclf.data.arrays.SOURCES_FILE`)
- per_class.json   what was evaluated (dataset, generated, split, num_images, tta_flip), per-class
                   count/correct/accuracy with ids and names, the confused pairs with example files,
                   and the misclassified images of the grid with their files
- plots/           per_class_accuracy.png, confusion_matrix.png, confused_pairs.png, misclassified.png,
                   reliability.png (accuracy against confidence before and after the temperature)
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tinyclf import atomic
from tinyclf.data import arrays
from tinyclf.environment import device_description
from tinyclf.errors import TinyclfError
from tinyclf.evaluate import plots
from tinyclf.evaluate.calibration import apply_temperature
from tinyclf.evaluate.metrics import (Predictions, Summary, misclassified, mistake_records, most_confused_pairs,
                                      pair_examples, per_class_table, predictions_csv, summarize_predictions,
                                      unknown_threshold)
from tinyclf.evaluate.png import save_png
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.loader import LoaderSpeed, make_loader
from tinyclf.loading.normalize import ModelInput
from tinyclf.model.file import load_model_file
from tinyclf.params import EvaluateParams

class EvaluationError(TinyclfError, ValueError):
    """Inputs that cannot be evaluated together (mismatched model and data, missing files)."""


def check_compatible(meta: dict, classes: dict, stats: dict, images_shape: tuple, split: str = "val") -> None:
    """Raise EvaluationError naming the first difference between the model's metadata and the data."""
    data_classes = classes["classes"]
    if meta["num_classes"] != len(data_classes):
        raise EvaluationError(
            f"model has {meta['num_classes']} classes but the prepared data has {len(data_classes)}"
        )
    model_ids = [c["id"] for c in meta["classes"]]
    data_ids = [c["id"] for c in data_classes]
    if model_ids != data_ids:
        where = next(i for i, (a, b) in enumerate(zip(model_ids, data_ids)) if a != b)
        raise EvaluationError(
            f"model class ids differ from the prepared data's: class {where} is "
            f"{model_ids[where]!r} in the model, {data_ids[where]!r} in classes.json"
        )
    if meta["dataset"] != classes["dataset"]:
        raise EvaluationError(f"model was trained on {meta['dataset']} but the prepared data is {classes['dataset']}")
    if bool(meta["generated"]) != bool(classes["generated"]):
        kind = {True: "generated", False: "real"}
        raise EvaluationError(
            f"model was trained on {kind[bool(meta['generated'])]} data but the prepared data is "
            f"{kind[bool(classes['generated'])]}"
        )
    size = int(meta["image_size"])
    stats_hw = tuple(stats["image_size"])
    array_hw = tuple(images_shape[1:3])
    if stats_hw != (size, size) or array_hw != (size, size):
        raise EvaluationError(
            f"model expects {size}x{size} images but the prepared {split} images are {array_hw[0]}x{array_hw[1]}"
        )


def in_order(dataset, evaluate_params: EvaluateParams, device: torch.device) -> DataLoader:
    """Every image of `dataset` exactly once, in order (sequential sampler, no drop_last); the
    workers end with the one pass."""
    speed = LoaderSpeed(workers=evaluate_params.workers, prefetch_factor=2, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    sampler = torch.utils.data.SequentialSampler(range(len(dataset)))
    return make_loader(dataset, sampler, evaluate_params.batch_size, speed, drop_last=False)


@torch.inference_mode()
def predict(model: torch.nn.Module, loader: Iterable, to_input: ModelInput, *, tta_flip: bool, device: torch.device,
            progress: bool = True) -> Predictions:
    """Log-probabilities for every image `loader` yields, in order, with the labels it yields.

    The model runs on `device`, channels_last when `to_input` makes channels_last input. With
    `tta_flip` the softmax of each image and of its horizontal mirror are averaged.
    """
    model = model.to(device).eval()
    if to_input.channels_last:
        model = model.to(memory_format=torch.channels_last)
    chunks, label_chunks = [], []
    start = time.perf_counter()
    bar = tqdm(loader, desc="evaluate", unit="batch", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        x = to_input(images)
        log_probs = torch.log_softmax(model(x).float().flatten(1), dim=1)
        if tta_flip:
            mirrored = torch.log_softmax(model(torch.flip(x, dims=[3])).float().flatten(1), dim=1)
            # log((p + q) / 2) computed stably in log space.
            log_probs = torch.logaddexp(log_probs, mirrored) - math.log(2.0)
        chunks.append(log_probs.cpu())
        label_chunks.append(torch.as_tensor(labels).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    log_probs = torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
    labels = torch.cat(label_chunks).numpy().astype(np.int64) if label_chunks else np.zeros(0, np.int64)
    return Predictions(log_probs=log_probs, labels=labels, seconds=seconds)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def runs_channels_last(meta: dict) -> bool:
    """Whether evaluation runs the model channels_last: as it was trained (`train.channels_last` in
    the model file's params, true by default), on every device. A rule, not a timing taken at run
    time, so the same model, device and data give the same metrics.json bytes; the format training
    validated in, and the faster one at the stage's batch (docs/benchmarks.md, "A CPU run at the
    CPU's speed")."""
    return bool(meta.get("params", {}).get("train", {}).get("channels_last", True))


def run_evaluation(prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path,
                   evaluate_params: EvaluateParams, *, device: torch.device | None = None,
                   progress: bool = True) -> dict:
    """Evaluate `model_path` on the prepared test split (val without one) and write every output under `out_dir`.

    Everything is checked before anything is written: missing prepared data raises
    `arrays.PreparedDataError`, a missing/corrupt model `model.file.ModelFileError`, a model that does
    not fit the data `EvaluationError`.
    Returns {"metrics": …, "speed": …}.
    """
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    classes, split, images, model, meta = _read_inputs(prepared_dir, Path(model_path))
    device = device or default_device()
    # Deterministic kernels: the same model and data give the same metrics.json bytes.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    measure = _Measure(prepared_dir, model, meta, evaluate_params, device, len(classes["classes"]), progress)
    pred, summary, raw_summary = measure(split)
    metrics = summary.metrics
    val_pred, val_summary = (pred, summary) if split == "val" else measure("val")[:2]
    val_metrics = val_summary.metrics
    speed = _speed(pred, device)
    names = [c["name"] for c in classes["classes"]]
    # Data prepared before sources were recorded names its rows by split and index.
    sources = arrays.load_sources(prepared_dir, split) or [f"{split}#{i}" for i in range(len(pred.labels))]
    predicted = summary.topk[:, 0]
    pairs = pair_examples(most_confused_pairs(summary.confusion, evaluate_params.confused_pairs), pred.labels,
                          predicted, sources)
    picks = misclassified(summary, pred.labels, evaluate_params.misclassified_examples)
    grid = MistakeGrid(np.asarray(images[picks]), picks, [sources[i] for i in picks],
                       arrays.split_title(split))
    per_class = {
        # What was evaluated: facts of the run, kept out of metrics.json, which holds only what runs
        # are compared by.
        "dataset": classes["dataset"],
        "generated": bool(classes["generated"]),
        "split": split,
        "num_images": int(len(pred.labels)),
        "tta_flip": bool(evaluate_params.tta_flip),
        "classes": per_class_table(summary.confusion, classes["classes"]),
        "confused_pairs": [{**p, "true_name": names[p["true"]], "predicted_name": names[p["predicted"]]}
                           for p in pairs],
        "misclassified": mistake_records(summary, pred.labels, picks, sources),
        "unknown_threshold": unknown_threshold(val_summary, val_pred.labels, summary, pred.labels),
        "calibration": {**(meta.get("calibration") or {"temperature": 1.0}),
                        "ece_before": raw_summary.metrics["ece"], "ece_after": metrics["ece"]},
    }

    atomic.write_text(out_dir / "predictions.csv",
                      predictions_csv(summary.topk, pred.labels, summary.confidence, sources))
    atomic.write_json(out_dir / "per_class.json", per_class)
    _write_plots(out_dir / "plots", summary, pred.labels, pairs, names, grid)
    save_png(plots.reliability_diagrams([("before", raw_summary), (f"after (T = {measure.temperature:.3g})", summary)],
                                        pred.labels, evaluate_params.ece_bins), out_dir / "plots" / "reliability.png")
    atomic.write_json(out_dir / "speed.json", speed)
    atomic.write_json(out_dir / "val_metrics.json", val_metrics, sort_keys=False)
    atomic.write_json(out_dir / "metrics.json", metrics, sort_keys=False)
    return {"metrics": metrics, "val_metrics": val_metrics, "speed": speed, "per_class": per_class}


class _Measure:
    """One exact pass of the model over a prepared split: (Predictions, Summary, the Summary at temperature 1)."""

    def __init__(self, prepared_dir: Path, model, meta: dict, evaluate_params: EvaluateParams, device: torch.device,
                 num_classes: int, progress: bool):
        self.prepared_dir, self.model, self.params, self.device = prepared_dir, model, evaluate_params, device
        self.num_classes, self.progress = num_classes, progress
        self.to_input = ModelInput(meta["mean"], meta["std"], channels_last=runs_channels_last(meta))
        self.temperature = float(meta.get("temperature", 1.0))  # 1: a model file from before calibration

    def __call__(self, split: str) -> tuple[Predictions, Summary, Summary]:
        """The split's predictions with the model file's temperature applied (the classes predicted are
        the same at any temperature; the probabilities, loss and ECE are the calibrated ones)."""
        loader = in_order(PreparedDataset(self.prepared_dir, split), self.params, self.device)
        raw = predict(self.model, loader, self.to_input, tta_flip=self.params.tta_flip, device=self.device,
                      progress=self.progress)
        pred = Predictions(apply_temperature(raw.log_probs, self.temperature), raw.labels, raw.seconds)
        return (pred, summarize_predictions(pred, self.num_classes, ece_bins=self.params.ece_bins),
                summarize_predictions(raw, self.num_classes, ece_bins=self.params.ece_bins))


def _speed(pred: Predictions, device: torch.device) -> dict:
    return {"images_per_s": round(len(pred.labels) / pred.seconds, 1) if pred.seconds > 0 else None,
            "seconds": round(pred.seconds, 3), "device": device_description(device)}


def _read_inputs(prepared_dir: Path, model_path: Path):
    """(classes, the split to evaluate, its images, model, meta), checked to fit together."""
    classes = arrays.load_classes(prepared_dir)
    stats = arrays.load_stats(prepared_dir)
    split = arrays.TEST_SPLIT if arrays.has_test_split(stats) else "val"
    images, _ = arrays.load_split(prepared_dir, split)
    model, meta = load_model_file(model_path)
    check_compatible(meta, classes, stats, images.shape, split)
    if split != "val":
        check_compatible(meta, classes, stats, arrays.load_split(prepared_dir, "val")[0].shape, "val")
    return classes, split, images, model, meta


@dataclass(frozen=True)
class MistakeGrid:
    """The misclassified images the grid shows: their stored pixels, rows, sources, the split's name."""

    images: np.ndarray
    picks: np.ndarray
    sources: list[str]
    split_name: str


def _write_plots(plot_dir: Path, summary: Summary, labels: np.ndarray, pairs: list[dict], names: list[str],
                 grid: MistakeGrid) -> None:
    counts = summary.confusion.sum(axis=1)
    accuracy = np.divide(np.diag(summary.confusion), counts, out=np.zeros(len(counts)), where=counts > 0)
    save_png(plots.per_class_accuracy(accuracy, names), plot_dir / "per_class_accuracy.png")
    save_png(plots.confusion_matrix(summary.confusion, names), plot_dir / "confusion_matrix.png")
    save_png(plots.confused_pairs(pairs, names), plot_dir / "confused_pairs.png")
    picks = grid.picks
    figure = plots.misclassified_grid(
        grid.images,  # the stored uint8 pixels, not the normalized model input
        labels[picks].tolist(), summary.topk[picks, 0].tolist(), summary.confidence[picks].tolist(), names,
        sources=grid.sources, split=grid.split_name,
    )
    save_png(figure, plot_dir / "misclassified.png")
