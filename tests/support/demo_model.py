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

from support.helpers import REAL_SUBSET, shrunk_params
from support.synthetic_prepared import write_prepared_arrays

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


def real_prepared(dest: Path) -> tuple[Path, list[tuple[str, bytes]]]:
    """A prepared directory (docs/architecture.md's format) of the first CLASSES real classes, and
    its validation images' (file name, JPEG bytes) as published."""
    from tinyclf.data.formats.tiny_imagenet import read_index
    from tinyclf.data.images import decode_image

    index = read_index(REAL_SUBSET)
    chosen = {}
    with zipfile.ZipFile(REAL_SUBSET) as zf:
        for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
            counts, chosen[split] = [0] * CLASSES, []
            for member, label in zip(index.members[split], index.labels[split]):
                if label < CLASSES and counts[label] < per_class:
                    counts[label] += 1
                    chosen[split].append((member.rsplit("/", 1)[-1], zf.read(member), label))
    splits = {split: (np.stack([decode_image(data, SIZE, native=SIZE)[0] for _, data, _ in files]),
                      np.array([c for *_, c in files], dtype=np.int64))
              for split, files in chosen.items()}
    classes = [{"index": i, "id": wnid, "name": name} for i, (wnid, name) in enumerate(index.classes[:CLASSES])]
    write_prepared_arrays(dest, splits, classes, generated=False)
    return dest, [(name, data) for name, data, _ in chosen["val"]]


MANIFEST = "demo_model.json"


def shared_demo_model(root: Path) -> DemoModel:
    """make_demo_model(root) once for every pytest worker: the first to take the lock trains it,
    the others (and later callers) read it back from its manifest, written last."""
    from filelock import FileLock

    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        manifest = root / MANIFEST
        if not manifest.is_file():
            model = make_demo_model(root)
            manifest.write_text(json.dumps({"jpegs": [p.name for p in model.jpegs]}))
        names = json.loads(manifest.read_text())["jpegs"]
    return DemoModel(root / "models" / "model.pt", root / "models" / "model.onnx", root / "prepared",
                     root / "evaluate" / "metrics.json", [root / "jpegs" / name for name in names])


def make_demo_model(root: Path) -> DemoModel:
    """Everything `tinyclf demo` and `tinyclf space` read, under `root` (about 10 s on one core)."""
    from tinyclf.evaluate.run import run_evaluation
    from tinyclf.params import params_from_dict
    from tinyclf.serve.export import export_model
    from tinyclf.train.run import run_training

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
