"""What the evaluate stage computes from the model's outputs, without I/O: top-1/top-5, loss, mean
per-class accuracy, expected calibration error, the confusion matrix, the most confused pairs
(with example files), the per-class table and the predictions CSV (with each image's file).

Floats are rounded (`DECIMALS`) so that last-bit noise (another BLAS thread count, say) does not
change the bytes DVC hashes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

# Floats in the JSON outputs are rounded so that last-bit noise (e.g. another BLAS thread count)
# does not change the bytes DVC hashes.
DECIMALS = 6


TOPK = 5
EXAMPLES_PER_PAIR = 3  # sources listed for each confused pair in per_class.json


@dataclass
class Predictions:
    """Model outputs over the split, in dataset order."""

    log_probs: np.ndarray  # N×C float32 log-softmax (averaged in probability space with TTA)
    labels: np.ndarray  # N int64
    seconds: float  # wall time of the pass, data loading included


def _round(x: float) -> float:
    return round(float(x), DECIMALS)


def confidence_bins(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's equal-width bin (lo, hi]: ceil(c * bins) - 1; c == 0 goes to the first bin."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Standard ECE: equal-width confidence bins (lo, hi], sum over bins of |accuracy - confidence| × share."""
    if len(confidence) == 0:
        return 0.0
    which = confidence_bins(confidence, bins)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += abs(correct[mask].mean() - confidence[mask].mean()) * mask.mean()
    return float(total)


@dataclass
class Summary:
    """Everything computed from the predictions (no I/O)."""

    topk: np.ndarray  # N×k class indices, most likely first
    confidence: np.ndarray  # N, probability of the predicted class
    confusion: np.ndarray  # C×C counts, rows true, columns predicted
    metrics: dict


def summarize_predictions(pred: Predictions, num_classes: int, *, ece_bins: int) -> Summary:
    log_probs, labels = pred.log_probs, pred.labels
    k = min(TOPK, num_classes)
    # A stable sort of -log p breaks ties by the lower class index, the same rule as argmax.
    topk = np.argsort(-log_probs, axis=1, kind="stable")[:, :k]
    predicted = topk[:, 0]
    correct = predicted == labels
    in_topk = (topk == labels[:, None]).any(axis=1)
    confidence = np.exp(log_probs[np.arange(len(labels)), predicted].astype(np.float64))
    loss = -log_probs[np.arange(len(labels)), labels].astype(np.float64).mean()
    confusion = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes)
    counts = confusion.sum(axis=1)
    seen = counts > 0
    class_acc = np.diag(confusion)[seen] / counts[seen]
    # What runs are compared by, in the order `dvc exp show` shows them (its columns follow the file).
    metrics = {
        "top1": _round(correct.mean()),
        # k = min(5, classes): with fewer than 5 classes this is top-C, i.e. 1.0.
        "top5": _round(in_topk.mean()),
        "mean_class_accuracy": _round(class_acc.mean()),
        "loss": _round(loss),
        "ece": _round(expected_calibration_error(confidence, correct.astype(np.float64), ece_bins)),
        # Classes weigh alike, whatever their size; a class with neither images nor predictions has no
        # F1 and is left out (every image's true class has one, so some class always does).
        "macro_f1": _round(np.nanmean(precision_recall_f1(confusion)[2])),
    }
    return Summary(topk=topk, confidence=confidence, confusion=confusion, metrics=metrics)


def precision_recall_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, from the confusion matrix (rows true, columns predicted): precision tp/(tp+fp), recall
    tp/(tp+fn) and F1 2tp/(2tp+fp+fn), NaN where undefined (no prediction of the class, no image of
    it, neither): scikit-learn's definitions with zero_division=nan."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(actual > 0, tp / actual, np.nan)
        denominator = predicted + actual  # 2tp + fp + fn
        f1 = np.where(denominator > 0, 2 * tp / denominator, np.nan)
    return precision, recall, f1


def _round_or_none(x: float) -> float | None:
    return None if np.isnan(x) else _round(x)


def most_confused_pairs(confusion: np.ndarray, limit: int) -> list[dict]:
    """The `limit` largest off-diagonal counts as {true, predicted, count}, ties by class index."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    true_idx, pred_idx = np.nonzero(off)
    order = sorted(zip(true_idx.tolist(), pred_idx.tolist()), key=lambda tp: (-off[tp], tp))
    return [{"true": t, "predicted": p, "count": int(off[t, p])} for t, p in order[:limit]]


def pair_examples(pairs: list[dict], labels: np.ndarray, predicted: np.ndarray, sources: list[str],
                  per_pair: int = EXAMPLES_PER_PAIR) -> list[dict]:
    """`pairs` with "examples": the sources of the first `per_pair` images (in split order) of each pair."""
    out = []
    for pair in pairs:
        rows = np.flatnonzero((labels == pair["true"]) & (predicted == pair["predicted"]))[:per_pair]
        out.append({**pair, "examples": [sources[i] for i in rows]})
    return out


def per_class_table(confusion: np.ndarray, classes: list[dict]) -> list[dict]:
    """Per class: images, correct, accuracy (= recall), precision, recall and F1 (None where undefined)."""
    counts = confusion.sum(axis=1)
    precision, recall, f1 = precision_recall_f1(confusion)
    rows = []
    for c in classes:
        i = c["index"]
        n = int(counts[i])
        correct = int(confusion[i, i])
        rows.append({"index": i, "id": c["id"], "name": c["name"], "count": n, "correct": correct,
                     "accuracy": _round(correct / n) if n else None, "precision": _round_or_none(precision[i]),
                     "recall": _round_or_none(recall[i]), "f1": _round_or_none(f1[i])})
    return rows


def predictions_csv(topk: np.ndarray, labels: np.ndarray, confidence: np.ndarray, sources: list[str]) -> str:
    """One row per image: index,true,predicted,top5,confidence,source (the file it came from; quoted
    when its name holds a comma or a quote, as CSV does)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "true", "predicted", "top5", "confidence", "source"])
    for i in range(len(labels)):
        writer.writerow([i, labels[i], topk[i, 0], " ".join(map(str, topk[i])), f"{confidence[i]:.{DECIMALS}f}",
                         sources[i]])
    return out.getvalue()


def mistake_records(summary: Summary, labels: np.ndarray, picks: np.ndarray, sources: list[str]) -> list[dict]:
    """per_class.json's `misclassified`: each picked row's index, file, true and predicted class, confidence."""
    return [{"index": int(i), "source": sources[i], "true": int(labels[i]), "predicted": int(summary.topk[i, 0]),
             "confidence": _round(summary.confidence[i])} for i in picks]


KEEP_CORRECT = 0.95  # the share of val's correct answers the proposed "unknown" threshold keeps


def unknown_threshold(val: Summary, val_labels: np.ndarray, evaluated: Summary, labels: np.ndarray) -> dict | None:
    """The confidence below which an answer had better be "unknown" (`tinyclf predict --min-confidence`):
    the highest threshold that keeps KEEP_CORRECT of val's correct top-1 answers, chosen on val (never on
    test), with the shares of correct answers kept and wrong ones rejected on val and on the evaluated
    split. None when val has no correct answer."""
    correct = np.sort(val.confidence[val.topk[:, 0] == val_labels])
    if len(correct) == 0:
        return None
    threshold = float(correct[int(np.floor((1 - KEEP_CORRECT) * len(correct)))])

    def shares(summary: Summary, truth: np.ndarray) -> dict:
        right = summary.topk[:, 0] == truth
        kept = summary.confidence >= threshold
        return {"keeps_correct": _round(kept[right].mean()) if right.any() else None,
                "rejects_wrong": _round((~kept[~right]).mean()) if (~right).any() else None}

    return {"threshold": _round(threshold), "chosen_on": "val", "val": shares(val, val_labels),
            "evaluated": shares(evaluated, labels)}


def misclassified(summary: Summary, labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the most confident mistakes (ties by index), at most `limit`."""
    wrong = np.nonzero(summary.topk[:, 0] != labels)[0]
    order = sorted(wrong.tolist(), key=lambda i: (-round(float(summary.confidence[i]), DECIMALS), i))
    return np.asarray(order[:limit], dtype=np.int64)
