"""Bitwise reproducibility on CPU, and the environment recorded with each model.

The first run is the published pipeline (tests/support/dvc_flow.py, `train.deterministic: true`); the
second trains again from scratch in a fresh clone (another directory, no checkpoint to resume),
with the same params and seed, and must give the same model and metrics bytes.
"""

from __future__ import annotations

import importlib.metadata
import platform

import pytest
import torch
from support.dvc_flow import clone_and_pull, digests, dvc, published

from tinyclf.model.file import read_model_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pub(tmp_path_factory):
    return published(tmp_path_factory)


def test_second_training_run_gives_identical_model_and_metrics_bytes(pub, tmp_path):
    repo = clone_and_pull(pub, tmp_path / "clone")
    assert not (repo / "checkpoints").exists()  # nothing to resume from: a from-scratch run
    (repo / "models" / "model.pt").unlink()  # so identical bytes cannot come from the pulled file

    train = dvc(repo, "repro", "--force", "--single-item", "train")
    assert "Running stage 'train'" in train.stdout
    # The model hash in dvc.lock did not change, so DVC itself sees nothing for evaluate to do...
    assert "Stage 'evaluate' didn't change" in dvc(repo, "repro", "evaluate").stdout
    # ...and evaluating it again gives the same metrics bytes.
    (repo / "results" / "evaluate" / "metrics.json").unlink()
    evaluate = dvc(repo, "repro", "--force", "--single-item", "evaluate")
    assert "Running stage 'evaluate'" in evaluate.stdout

    files = ["models/model.pt", "results/evaluate/metrics.json", "results/evaluate/predictions.csv"]
    assert digests(repo, files) == {name: pub.digests[name] for name in files}


def test_model_file_records_params_seed_and_environment(pub):
    meta = read_model_file(pub.repo / "models" / "model.pt")["meta"]
    assert meta["params"]["train"]["deterministic"] is True
    assert meta["params"]["train"]["seed"] == 42
    env = meta["environment"]
    assert env["torch"] == torch.__version__  # with the local build tag, e.g. 2.14.1+cu130
    for package in ("timm", "albumentations", "numpy", "torchvision"):
        assert env[package] == importlib.metadata.version(package), package
    assert env["python"] == platform.python_version()
    # CPU run: no CUDA/cuDNN versions recorded, device says cpu.
    assert env["device"] == "cpu"
    assert env["cuda"] is None and env["cudnn"] is None
