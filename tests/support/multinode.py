"""What the multi-node tests compare against: one process with the same global batch.

tests/train/test_multinode.py (torchrun by hand) and tests/train/test_slurm.py (the sbatch script)
train 2 nodes × 1 gloo process and must reach what one process reaches. GroupNorm model, mixup and
EMA off (as in train/test_ddp.py): BatchNorm statistics are per process, so a BatchNorm model would
differ from one process by design, not by a bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.helpers import shrunk_params

from tinyclf.model.architectures import create_model
from tinyclf.params import params_from_dict
from tinyclf.train.recipe import seed_everything
from tinyclf.train.run import run_training

# The stage's outputs, relative to the directory it runs in (dvc.yaml's paths).
OUTPUTS = ("models", "results", "checkpoints")


def reference_params(**overrides) -> dict:
    """Params both the multi-node runs and the one-process reference train with."""
    # The workers backend, as when auto picked it on a CPU (why: train/test_ddp.py, the same run).
    settings = dict(train__model="test_efficientnet_gn", train__crop="pad_crop", train__lr=0.2, train__epochs=2,
                    train__batch_size=16, train__label_smoothing=0.1, train__aug_backend="workers")
    return shrunk_params(**{**settings, **overrides})


def run_one_process(tree: dict, prepared: Path, out: Path) -> Path:
    """The reference, in this process, writing the stage's outputs under `out` (dvc.yaml's layout)."""
    run_training(params_from_dict(tree), prepared, out / "models" / "model.pt", out / "results" / "train",
                 out / "checkpoints", progress_bar=False)
    return out


def output_files(root: Path) -> list[str]:
    """The files the stage wrote under `root`, relative: what a run wrote, to compare with another."""
    return sorted(str(p.relative_to(root)) for name in OUTPUTS for p in (root / name).rglob("*") if p.is_file())


def assert_matches_one_process(one: Path, main: Path, tree: dict, num_classes: int) -> None:
    """`main` (rank 0's directory of a multi-node run) reached the one-process run in `one`."""
    ref = json.loads((one / "results" / "train" / "metrics.json").read_text())
    got = json.loads((main / "results" / "train" / "metrics.json").read_text())
    # Every val image counted once over the nodes: top-1/top-5 are the same ratios of integers.
    assert got["val"]["top1"] == ref["val"]["top1"], (got, ref)
    assert got["val"]["top5"] == ref["val"]["top5"], (got, ref)
    assert got["val"]["loss"] == pytest.approx(ref["val"]["loss"], rel=1e-4)
    assert got["train"]["acc"] == ref["train"]["acc"], (got, ref)
    assert got["train"]["loss"] == pytest.approx(ref["train"]["loss"], rel=1e-4)

    a = torch.load(one / "models" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(main / "models" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    assert worst < 1e-3  # gradient all-reduce sums in another order: float noise only
    seed_everything(tree["train"]["seed"])
    init = create_model(tree["train"]["model"], num_classes).state_dict()
    moved = max((a[k].double() - init[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved > 100 * worst  # the weights trained: not a comparison of two copies of the init
