"""Counting what makes a training step wait for the GPU, on the CPU.

- Reads from the device: every read is a Python call on a tensor (`.item()`, `.tolist()`,
  `.cpu()`, `.numpy()`, and the conversions `bool()`, `int()`, `float()`, `operator.index()`),
  counted by wrapping those methods (`HostReads`).
- Tensors made from Python data (`torch.tensor`, `as_tensor`/`asarray` of numbers or lists,
  `scalar_tensor`, `Tensor.new_tensor`): on a GPU each copies from pageable host memory, which
  waits for the device's queue to drain. Seen by a `TorchFunctionMode`, which torch calls for
  every factory function (`TensorsFromPythonData`).

On a GPU each of them stops the CPU from running ahead. Used by train/test_sync_free.py and
loading/test_balance.py.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from support.helpers import shrunk_params
from support.synthetic_prepared import write_prepared
from tinyclf.params import params_from_dict
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import Progress, StepControl
from tinyclf.train.recipe import seed_everything
from tinyclf.train.setup import stage_loop

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")
FROM_PYTHON_DATA = (torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor, torch.Tensor.new_tensor)
CONVERTS = (torch.as_tensor, torch.asarray)  # of a tensor: no data leaves Python


class HostReads:
    """Counts the host reads of tensors while it is active (once per read: a torch function mode
    passes the read back through its wrapper, which does not count it again)."""

    def __init__(self, monkeypatch):
        self.count, self.active, self.inside = 0, False, False
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if self.inside:
                    return _original(tensor, *args, **kwargs)
                self.count += self.active
                self.inside = True
                try:
                    return _original(tensor, *args, **kwargs)
                finally:
                    self.inside = False

            monkeypatch.setattr(torch.Tensor, name, counted)


class TensorsFromPythonData(TorchFunctionMode):
    """Inside `with`: `calls` lists every tensor made from Python data, as "function at file:line"
    (the first caller outside torch), so a failure names the line to fix."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in FROM_PYTHON_DATA and not (func in CONVERTS and isinstance(args[0], torch.Tensor)):
            self.calls.append(f"{func.__name__} at {_caller()}")
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    torch_dir, here = Path(torch.__file__).parent, Path(__file__)
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = Path(frame.filename)
        if path != here and torch_dir not in path.parents:
            return f"{path.name}:{frame.lineno}"
    return "?"


@dataclass
class SteadyEpoch:
    """What the second (steady) epoch of a run did: host reads, tensors made from Python data, steps."""

    reads: int
    from_python_data: list[str]
    steps: int
    metrics: dict


def steady_epoch(tmp_path, monkeypatch, sync_every: int, **overrides) -> SteadyEpoch:
    """The second epoch of a run on the CPU (the device backend unless `overrides` say otherwise),
    with every per-step piece of the default recipe on: mixup/cutmix, EMA, clipping, the cosine
    schedule, color jitter, random erasing."""
    prepared = write_prepared(tmp_path / "prepared", num_classes=4, train_per_class=48, val_per_class=4)
    train_params = params_from_dict(shrunk_params(**{
        "train__model": "test_resnet", "train__aug_backend": "device", "train__batch_size": 8,
        "train__crop": "pad_crop", "train__color_jitter": 0.3, "train__random_erasing": 0.25,
        "train__mixup": 0.2, "train__cutmix": 1.0, "train__ema": True, "train__clip_grad": 1.0,
        "train__sync_every": sync_every, **overrides})).train
    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))
    loop = stage_loop(prepared, train_params, info)
    seed_everything(0)
    progress, plan = Progress(), loop.data.plan
    reads, made = HostReads(monkeypatch), TensorsFromPythonData()
    for epoch in range(2):  # the first epoch warms up (lazy state in the optimizer and EMA, constants per device)
        progress.epoch = epoch
        reads.active = epoch == 1
        batches = loop.data.train_batches.epoch(epoch)
        with made if epoch == 1 else contextlib.nullcontext():
            metrics = loop.steps(batches, plan.micro_per_epoch, progress=progress,
                                 control=StepControl(sync_every=sync_every))
        progress.end_epoch(metrics["seconds"], metrics["images"])
    return SteadyEpoch(reads.count, made.calls, plan.updates_per_epoch, metrics)

