"""A small trained model and its ONNX export, for the serving tests (export, predict).

A model trained by the real `run_training` (timm's `test_resnet`, 1 epoch on CPU) on a synthetic
prepared dataset (tests/support/synthetic_prepared.py: 6 classes, 8 val images each, SIZE px), then exported
by the real exporter with its parity check.
"""

from __future__ import annotations

from pathlib import Path

from support.helpers import shrunk_params
from support.synthetic_prepared import write_prepared

SIZE = 32
NUM_CLASSES = 6


def train_and_export(root: Path) -> dict:
    """{"prepared", "model", "onnx", "parity"} paths under `root`: prepared data, the trained model
    file, its ONNX export and the export's parity.json."""
    from tinyclf.params import params_from_dict
    from tinyclf.serve.export import export_model
    from tinyclf.train.run import run_training

    root = Path(root)
    prepared = write_prepared(root / "prepared", num_classes=NUM_CLASSES, train_per_class=16, val_per_class=8,
                              size=SIZE)
    tree = shrunk_params(train__model="test_resnet", train__epochs=1, train__crop="pad_crop")
    model = root / "models" / "model.pt"
    run_training(params_from_dict(tree), prepared, model, root / "live", root / "ck", progress_bar=False)
    onnx_path, parity_path = root / "models" / "model.onnx", root / "results" / "parity.json"
    export_model(model, prepared, onnx_path, parity_path)
    return {"prepared": prepared, "model": model, "onnx": onnx_path, "parity": parity_path}
