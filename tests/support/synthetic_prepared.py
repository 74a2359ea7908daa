"""A tiny learnable prepared dataset written straight in the docs/architecture.md format (numpy + json).

Each class is a colour and a stripe orientation/frequency, with per-image noise, random shifts and
brightness, so a small CNN separates the classes in a few CPU epochs while chance stays 1/classes.
Marked `generated: true` like every synthetic dataset in the project.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _images(labels: np.ndarray, size: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    palette = np.random.default_rng(1234).integers(40, 216, size=(num_classes, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        angle = np.pi * c / num_classes
        freq = 2 * np.pi * (2 + c % 3) / size
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        img = palette[c][None, None, :] * (0.75 + 0.25 * stripes[..., None])
        img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 12, size=img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def write_prepared_arrays(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[dict], *,
                          generated: bool, dataset: str = "tiny-imagenet") -> Path:
    """A prepared directory in docs/architecture.md's format from decoded arrays: per split (images
    NHWC uint8, labels int64), classes.json, and stats.json with the train split's mean and std."""
    root = Path(root)
    split_stats = {}
    for split, (images, labels) in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "images.npy", images)
        np.save(root / split / "labels.npy", labels.astype(np.int64))
        split_stats[split] = {"count": int(len(labels)),
                              "per_class": np.bincount(labels, minlength=len(classes)).tolist(),
                              "converted": {"grayscale": 0, "cmyk": 0, "rgba": 0, "other": 0},
                              "resized": 0, "skipped": []}
    size = splits["train"][0].shape[1]
    scaled = splits["train"][0].reshape(-1, 3).astype(np.float64) / 255.0
    (root / "classes.json").write_text(json.dumps({"dataset": dataset, "generated": generated, "classes": classes}))
    (root / "stats.json").write_text(json.dumps({
        "dataset": dataset, "generated": generated, "image_size": [size, size],
        "mean": scaled.mean(0).tolist(), "std": scaled.std(0).tolist(), "splits": split_stats}))
    return root


def write_prepared(root: Path, *, num_classes: int = 4, train_per_class: int = 24, val_per_class: int = 8,
                   size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    splits = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
        labels = labels[rng.permutation(len(labels))]
        splits[split] = (_images(labels, size, num_classes, rng), labels)
    classes = [{"index": i, "id": f"g{i:07d}", "name": f"generated class {i}"} for i in range(num_classes)]
    return write_prepared_arrays(root, splits, classes, generated=True)
