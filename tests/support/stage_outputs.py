"""What the stages leave behind, built small and real, for the tests of the stages after them: a
prepared directory per the contract, a model file from the real save_model_file, a DVCLive train
directory from a real `dvclive.Live`, and the evaluate stage's own outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from support.helpers import load_stage, params_file, shrunk_params
from tinyclf.environment import environment_info
from tinyclf.model.architectures import create_model
from tinyclf.model.file import save_model_file
from tinyclf.params import Params, params_from_dict

EPOCHS = 3  # logged by make_train_dir


# ------------------------------------------------------------------------------ builders
def class_list(num_classes: int) -> list[dict]:
    return [{"index": i, "id": f"g{i:07d}", "name": f"thing {i}, synthetic class"} for i in range(num_classes)]


def make_prepared(root: Path, *, num_classes: int = 4, size: int = 16, per_class: int = 6, seed: int = 0,
                  dataset: str = "tiny-imagenet", generated: bool = True) -> Path:
    """A prepared directory per the contract: class-dependent colour blobs so a model can differ per class."""
    rng = np.random.default_rng(seed)
    for split, n_per in (("train", per_class), ("val", per_class)):
        labels = np.repeat(np.arange(num_classes, dtype=np.int64), n_per)
        images = rng.integers(0, 256, size=(len(labels), size, size, 3), dtype=np.uint8)
        # An asymmetric class-coloured band on the left edge: flipping the image changes it.
        images[:, :, : size // 4, :] = (labels[:, None, None, None] * 53 % 256).astype(np.uint8)
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "images.npy", images)
        np.save(root / split / "labels.npy", labels)
    (root / "classes.json").write_text(json.dumps({"dataset": dataset, "generated": generated,
                                                   "classes": class_list(num_classes)}))
    split_stats = {"count": num_classes * per_class, "per_class": [per_class] * num_classes,
                   "converted": {"grayscale": 0, "cmyk": 0, "rgba": 0, "other": 0}, "resized": 0, "skipped": []}
    (root / "stats.json").write_text(json.dumps({
        "dataset": dataset, "generated": generated, "image_size": [size, size],
        "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25],
        "splits": {"train": split_stats, "val": split_stats},
    }))
    return root


@dataclass(frozen=True)
class ModelFile:
    """What make_model_file writes: the network, its data and the params it was trained with."""

    num_classes: int = 4
    size: int = 16
    model: str = "test_resnet"
    dataset: str = "tiny-imagenet"
    generated: bool = True
    params: Params | None = None  # None: the shrunk test params
    seed: int = 0


def make_model_file(path: Path, spec: ModelFile = ModelFile()) -> Path:
    num_classes, model = spec.num_classes, spec.model
    torch.manual_seed(spec.seed)
    net = create_model(model, num_classes)
    # Non-zero residual branches and head so predictions depend on the image in an interesting way.
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    params = spec.params or params_from_dict(shrunk_params())
    meta = {
        "model": model, "num_classes": num_classes,
        "classes": [{"id": c["id"], "name": c["name"]} for c in class_list(num_classes)],
        "image_size": spec.size, "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25],
        "dataset": spec.dataset, "generated": spec.generated, "weights": "raw", "params": params.to_dict(),
        "environment": environment_info("cpu"), "epochs_trained": 2,
    }
    save_model_file(path, net, meta)
    return path


def make_train_dir(path: Path) -> Path:
    """What the train stage leaves: DVCLive metrics per epoch (rank 0) and run.json."""
    with Live(str(path), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for epoch in range(EPOCHS):
            live.log_metric("train/loss", 2.0 - 0.4 * epoch)
            live.log_metric("train/acc", 0.3 + 0.1 * epoch)
            live.log_metric("val/loss", 2.1 - 0.3 * epoch)
            live.log_metric("val/top1", 0.25 + 0.1 * epoch)
            live.log_metric("val/top5", 0.9 + 0.03 * epoch)
            live.log_metric("lr", 0.2 * (1 - epoch / EPOCHS))
            live.log_metric("images_per_s", 500.0 + epoch)
            live.log_metric("epoch_time_s", 1.5)
            live.next_step()
    # The keys tinyclf.train.run writes.
    (path / "run.json").write_text(json.dumps({
        "device": "cpu", "device_type": "cpu", "device_count": 0, "world_size": 1, "nodes": 1,
        "precision": "fp32", "compile": False, "channels_last": True, "aug_backend": "workers", "epochs": EPOCHS,
        "train_seconds": 4.5, "train_images": 72, "images_per_s": 16.0, "generated": True,
    }))
    return path


def report_inputs(root: Path) -> dict:
    """Everything the summarize stage reads, under `root`: prepared data, a model file, a train
    directory and the evaluate stage's own outputs (its real main(), in this process)."""
    prepared = make_prepared(root / "prepared")
    params_path = params_file(root, train__lr=0.05)
    model = make_model_file(root / "model.pt", ModelFile(params=params_from_dict(shrunk_params(train__lr=0.05))))
    train = make_train_dir(root / "train")
    evaluate = root / "evaluate"
    assert load_stage("evaluate").main(["--data", str(prepared), "--model", str(model), "--out", str(evaluate),
                                        "--params", str(params_path), "--no-progress"]) == 0
    return {"root": root, "prepared": prepared, "model": model, "train": train, "evaluate": evaluate,
            "params": params_path}
