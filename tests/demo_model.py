"""A small trained model on real images, for the demo and Space tests.

Real Tiny ImageNet images of a few classes, from the real subset (tests skip without it), decoded
as the preprocess stage decodes them into a prepared directory; timm's `test_resnet` (0.4 M
parameters) trained on them for a few epochs by the real `run_training`; its ONNX export by the
real exporter. The validation JPEGs are kept as published, for uploading.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers import REAL_SUBSET, shrunk_params

SIZE = 64
CLASSES = 8  # the first CLASSES of wnids.txt
TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 6


@dataclass(frozen=True)
class DemoModel:
    model_pt: Path
    model_onnx: Path
    prepared: Path
    metrics: Path
    jpegs: list[Path]  # real validation JPEGs, as published


def _write_split(dest: Path, split: str, files: list[bytes], labels: list[int]) -> np.ndarray:
    from tinyclf.images import decode_image

    images = np.stack([decode_image(data, SIZE, native=SIZE)[0] for data in files])
    (dest / split).mkdir(parents=True, exist_ok=True)
    np.save(dest / split / "images.npy", images)
    np.save(dest / split / "labels.npy", np.array(labels, dtype=np.int64))
    return images


def real_prepared(dest: Path) -> tuple[Path, list[tuple[str, bytes]]]:
    """A prepared directory (docs/architecture.md's format) of the first CLASSES real classes, and
    its validation images' (file name, JPEG bytes) as published."""
    from tinyclf.datasets.tiny_imagenet import read_index

    index = read_index(REAL_SUBSET)
    chosen = {}
    with zipfile.ZipFile(REAL_SUBSET) as zf:
        for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
            counts, chosen[split] = [0] * CLASSES, []
            for member, label in zip(index.members[split], index.labels[split]):
                if label < CLASSES and counts[label] < per_class:
                    counts[label] += 1
                    chosen[split].append((member.rsplit("/", 1)[-1], zf.read(member), label))
    stats = {"dataset": "tiny-imagenet", "generated": False, "image_size": [SIZE, SIZE], "splits": {}}
    for split, files in chosen.items():
        images = _write_split(dest, split, [data for _, data, _ in files], [c for _, _, c in files])
        stats["splits"][split] = {"count": len(files), "per_class": [sum(c == k for *_, c in files) for k in range(CLASSES)],
                                  "converted": {}, "resized": 0, "skipped": []}
        if split == "train":
            scaled = images.reshape(-1, 3) / 255.0
            stats.update(mean=scaled.mean(0).tolist(), std=scaled.std(0).tolist())
    classes = [{"index": i, "id": wnid, "name": name} for i, (wnid, name) in enumerate(index.classes[:CLASSES])]
    (dest / "classes.json").write_text(json.dumps({"dataset": "tiny-imagenet", "generated": False, "classes": classes}))
    (dest / "stats.json").write_text(json.dumps(stats))
    return dest, [(name, data) for name, data, _ in chosen["val"]]


def make_demo_model(root: Path) -> DemoModel:
    """Everything `tinyclf demo` and `tinyclf space` read, under `root` (about 10 s on one core)."""
    from tinyclf.evaluation import run_evaluation
    from tinyclf.params import params_from_dict
    from tinyclf.serving.onnx_export import export_model
    from tinyclf.training import run_training

    prepared, val_files = real_prepared(root / "prepared")
    tree = shrunk_params(data__image_size=SIZE, train__model="test_resnet", train__epochs=3, train__crop="pad_crop")
    model_pt, model_onnx = root / "models" / "model.pt", root / "models" / "model.onnx"
    params = params_from_dict(tree)
    run_training(params, prepared, model_pt, root / "live", root / "ck", progress_bar=False)
    export_model(model_pt, prepared, model_onnx, root / "parity.json")
    # The evaluate stage's own metrics.json, which the demo's facts read.
    run_evaluation(prepared, model_pt, root / "evaluate", params.evaluate, progress=False)
    metrics = root / "evaluate" / "metrics.json"
    (root / "jpegs").mkdir()
    jpegs = []
    for name, data in val_files:
        jpegs.append(root / "jpegs" / name)
        jpegs[-1].write_bytes(data)
    return DemoModel(model_pt, model_onnx, prepared, metrics, jpegs)
