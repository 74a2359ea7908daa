"""A steady-state training step reads nothing back from the device: the loop looks up only every
`train.sync_every` optimizer steps (non-finite check, stop agreement, metric sums) and at the epoch's end.

Counted on the CPU, where every read is a Python call on a tensor: `.item()`, `.tolist()`, `.cpu()`,
`.numpy()`, and the conversions `bool()`, `int()`, `float()` and `operator.index()` of a tensor. On a
GPU each of those waits for the device's queue to drain (benchmarks/gpu_check.py checks it there with
torch's own sync detector).
"""

from __future__ import annotations

import pytest
import torch
from helpers import shrunk_params
from synthetic_prepared import write_prepared

from tinyclf.params import params_from_dict
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import Progress, StepControl, train_one_epoch
from tinyclf.train.recipe import seed_everything
from tinyclf.train.run import build_step_recipe, build_trainables, load_train_data

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class HostReads:
    """Counts the host reads of tensors while it is active."""

    def __init__(self, monkeypatch):
        self.count, self.active = 0, False
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if self.active:
                    self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def steady_epoch(tmp_path, monkeypatch, sync_every: int, **overrides) -> tuple[int, int, dict]:
    """(host reads, optimizer steps, metrics) of the second epoch of a device-backend run on the CPU,
    with every per-step piece of the default recipe on: mixup/cutmix, EMA, clipping, the cosine
    schedule, color jitter, random erasing."""
    prepared = write_prepared(tmp_path / "prepared", num_classes=4, train_per_class=48, val_per_class=4)
    train_params = params_from_dict(shrunk_params(**{
        "train__model": "test_resnet", "train__aug_backend": "device", "train__batch_size": 8,
        "train__crop": "pad_crop", "train__color_jitter": 0.3, "train__random_erasing": 0.25,
        "train__mixup": 0.2, "train__cutmix": 1.0, "train__ema": True, "train__clip_grad": 1.0,
        "train__sync_every": sync_every, **overrides})).train
    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))
    data = load_train_data(prepared, train_params, info)
    parts, _ = build_trainables(train_params, data, info, "fp32")
    recipe = build_step_recipe(train_params, parts, data, info, "fp32")
    seed_everything(0)
    progress, steps = Progress(), data.plan.updates_per_epoch
    reads = HostReads(monkeypatch)
    for epoch in range(2):  # the first epoch warms up (lazy state in the optimizer and EMA)
        progress.epoch = epoch
        reads.active = epoch == 1
        metrics = train_one_epoch(parts.model, data.train_batches.epoch(epoch), recipe, progress,
                                  micro_batches=data.plan.micro_per_epoch, info=info,
                                  control=StepControl(sync_every=sync_every))
        progress.end_epoch(metrics["seconds"], metrics["images"])
    return reads.count, steps, metrics


def test_a_steady_epoch_reads_from_the_device_once_per_sync_every_steps(tmp_path, monkeypatch):
    reads, steps, metrics = steady_epoch(tmp_path, monkeypatch, sync_every=8)
    assert steps == 24
    assert reads <= steps // 8, reads  # the sync points at steps 8, 16 and 24 (the epoch's end)
    assert metrics["images"] == 24 * 8 and 0 < metrics["loss"] < 10


def test_the_counter_sees_reads(tmp_path, monkeypatch):
    """The same epoch, looking up after every step: the counter must see every one of those reads."""
    reads, steps, _ = steady_epoch(tmp_path, monkeypatch, sync_every=1)
    assert reads >= steps
