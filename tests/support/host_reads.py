"""Counting the training loop's reads from the device: every read is a Python call on a tensor
(`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, and the conversions `bool()`, `int()`, `float()`,
`operator.index()`), counted on the CPU by wrapping those methods. On a GPU each of them waits for
the device's queue to drain. Used by train/test_sync_free.py and loading/test_balance.py.
"""

from __future__ import annotations

import torch

from support.helpers import shrunk_params
from support.synthetic_prepared import write_prepared
from tinyclf.params import params_from_dict
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import Progress, StepControl, train_one_epoch
from tinyclf.train.recipe import seed_everything
from tinyclf.train.run import build_step_recipe, build_trainables, load_train_data

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


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
