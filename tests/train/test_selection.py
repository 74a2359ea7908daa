"""The epoch the model file keeps (`train.keep`) and stopping early (`train.patience`): on a run
that overfits noisy labels, through a kill -9 inside a patience window, and the rules themselves.
(Two gloo processes stopping at the same epoch: tests/train/test_ddp.py's first test.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.helpers import shrunk_params, write_params
from support.synthetic_prepared import write_prepared
from support.train_stage import kill_when, start_stage

from tinyclf.loading.normalize import ModelInput
from tinyclf.model.file import load_model_file
from tinyclf.params import params_from_dict
from tinyclf.train import checkpoint
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import evaluate
from tinyclf.train.run import run_training
from tinyclf.train.selection import EpochSelection

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flip_train_labels(prepared, share: float, num_classes: int, seed: int = 0) -> int:
    """Give `share` of the train images another class's label (the images stay): a model that fits
    them memorises noise, and its val accuracy falls after its best epoch."""
    path = prepared / "train" / "labels.npy"
    labels = np.load(path)
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=int(share * len(labels)), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    np.save(path, labels)
    return len(flipped)


def val_history(live) -> list[float]:
    rows = (live / "plots" / "metrics" / "val" / "top1.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[1]) for row in rows]


def val_top1_of_model_file(model_path, prepared) -> float:
    """Val top-1 of the weights in the model file, measured as the run measured it."""
    model, meta = load_model_file(model_path)
    images = torch.from_numpy(np.load(prepared / "val" / "images.npy")).permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.load(prepared / "val" / "labels.npy"))
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, len(labels), 16)]
    to_input = ModelInput(meta["mean"], meta["std"], channels_last=True)
    return evaluate(model, batches, to_input=to_input, info=DistInfo(0, 1, 0, 1, torch.device("cpu")))["top1"]


OVERFIT = dict(train__model="test_resnet", train__crop="pad_crop", train__pad=0, train__hflip=0.0, train__lr=0.3,
               train__label_smoothing=0.0, train__epochs=40, train__keep="best", train__patience=3,
               train__deterministic=True)


@pytest.fixture(scope="module")
def noisy_prepared(tmp_path_factory):
    prepared = write_prepared(tmp_path_factory.mktemp("noisy") / "prepared", num_classes=4, train_per_class=24,
                              val_per_class=16)
    assert flip_train_labels(prepared, 0.3, num_classes=4) == 28
    return prepared


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, noisy_prepared):
    """The uninterrupted run: what the patience test checks and the interrupted run must reproduce. One
    torch thread, as the stage process gets (OMP_NUM_THREADS=1): float sums follow the thread count."""
    out = tmp_path_factory.mktemp("overfit") / "run"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        try:
            result = run_training(params_from_dict(shrunk_params(**OVERFIT)), noisy_prepared, out / "model.pt",
                                  out / "live", out / "ck", progress_bar=False)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(False)
    return out, result


def test_patience_stops_an_overfitting_run_and_keeps_its_best_epoch(overfit_run, noisy_prepared):
    out, result = overfit_run
    history = val_history(out / "live")
    assert len(history) == result["epochs"] < 40, "patience 3 should stop a 40-epoch run on noisy labels"
    best = int(np.argmax(history))  # the first epoch that reached the maximum
    assert len(history) == best + 1 + 3, "stopped 3 epochs after the last improvement"

    meta = load_model_file(out / "model.pt")[1]
    selected = meta["selected"]
    assert selected["epoch"] == best + 1 and selected["value"] == max(history)
    assert selected["stopped_early"] and selected["epochs_run"] == len(history) == meta["epochs_trained"]
    assert "has not improved" in selected["stop_reason"]
    # The kept weights' temperature, fitted on val: it lowers the val loss it was fitted on.
    calibration = meta["calibration"]
    assert calibration["fitted_on"] == "val" and meta["temperature"] == calibration["temperature"] > 0
    assert calibration["nll_after"] <= calibration["nll_before"]
    # The file holds the best epoch's weights, not the last epoch's.
    assert val_top1_of_model_file(out / "model.pt", noisy_prepared) == max(history)
    assert history[-1] < max(history)

    run_record = json.loads((out / "live" / "run.json").read_text())
    assert run_record["selected"] == selected
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert summary["selected"]["epoch"] == best + 1


def test_keep_last_keeps_the_last_epoch(tmp_path, noisy_prepared):
    out = tmp_path / "run"
    tree = shrunk_params(**{**OVERFIT, "train__keep": "last", "train__patience": 0, "train__epochs": 6})
    run_training(params_from_dict(tree), noisy_prepared, out / "model.pt", out / "live", out / "ck",
                 progress_bar=False)
    history = val_history(out / "live")
    meta = load_model_file(out / "model.pt")[1]
    assert len(history) == 6 and meta["selected"]["epoch"] == 6 and not meta["selected"]["stopped_early"]
    assert val_top1_of_model_file(out / "model.pt", noisy_prepared) == history[-1]


def test_kill_9_in_a_patience_window_then_resume_gives_the_same_bytes(tmp_path, noisy_prepared, overfit_run):
    tree = shrunk_params(**OVERFIT)
    ref, _ = overfit_run

    out = tmp_path / "resumed"
    ck = out / "ck" / "last.pt"
    proc = start_stage(write_params(tmp_path / "params.yaml", tree), noisy_prepared, out)
    in_window = kill_when(ck, proc, lambda state: state["selection"]["epochs_without_improvement"] >= 1
                          and not state["selection"]["stopped_early"])
    assert not checkpoint.load(ck)["complete"]

    run_training(params_from_dict(tree), noisy_prepared, out / "model.pt", out / "live", out / "ck",
                 progress_bar=False)
    assert (out / "model.pt").read_bytes() == (ref / "model.pt").read_bytes()
    assert val_history(out / "live") == val_history(ref / "live")
    stop_epoch = load_model_file(out / "model.pt")[1]["selected"]["epochs_run"]
    assert in_window["epoch"] < stop_epoch < 40


def test_the_new_settings_change_the_checkpoint_fingerprint(tmp_path):
    stats = {"dataset": "generated", "image_size": [32, 32], "splits": {"train": {"count": 96}}}
    base = checkpoint.fingerprint(params_from_dict(shrunk_params(**OVERFIT)), stats, 4)
    for key, value in (("keep", "last"), ("select_metric", "val/loss"), ("patience", 5), ("min_delta", 0.01)):
        other = checkpoint.fingerprint(params_from_dict(shrunk_params(**{**OVERFIT, f"train__{key}": value})),
                                       stats, 4)
        assert [d.split(":")[0] for d in checkpoint.fingerprint_diff(base, other)] == [f"train.{key}"]


@pytest.mark.parametrize("metric, values, best, stop_after", [
    ("val/top1", [0.5, 0.6, 0.6, 0.59, 0.58, 0.7], 1, 5),  # a tie is not an improvement
    ("val/loss", [1.0, 0.9, 0.95, 0.8, 0.85], 3, None),
])
def test_what_counts_as_the_best_epoch(metric, values, best, stop_after):
    selection = EpochSelection(keep="best", metric=metric, patience=3)
    weights = torch.nn.Linear(2, 2)
    for epoch, value in enumerate(values):
        with torch.no_grad():
            weights.weight.fill_(epoch)
        selection.observe(epoch, value, weights, keep_copy=True)
        if selection.stopped_early:
            break
    assert selection.best_epoch == best
    assert (epoch + 1 if selection.stopped_early else None) == stop_after
    assert torch.equal(selection.weights_to_save(weights)["weight"], torch.full((2, 2), float(best)))


def test_min_delta_asks_for_more_than_a_small_gain():
    selection = EpochSelection(keep="best", metric="val/top1", patience=2, min_delta=0.05)
    for epoch, value in enumerate([0.5, 0.54, 0.549]):  # measured from the best, not the previous epoch
        selection.observe(epoch, value, torch.nn.Linear(1, 1), keep_copy=False)
    assert selection.best_epoch == 0 and selection.stopped_early
    assert "by more than 0.05 for 2 epochs (best 0.5000 at epoch 1)" in selection.stop_reason()

