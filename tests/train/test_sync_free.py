"""A steady-state training step never makes the CPU wait for the device: the loop reads back only
every `train.sync_every` optimizer steps (non-finite check, stop agreement, metric sums) and at the
epoch's end, and no step makes a tensor from Python data (numbers, lists: on a GPU a synchronous
copy from pageable host memory), on either data backend.

Counted on the CPU (tests/support/host_reads.py says how); benchmarks/gpu_check.py checks the same
on a GPU with torch's own sync detector (tests/train/test_cuda.py).
"""

from __future__ import annotations

import pytest
import torch
from support.host_reads import TensorsFromPythonData, steady_epoch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_steady_epoch_reads_from_the_device_once_per_sync_every_steps(tmp_path, monkeypatch):
    epoch = steady_epoch(tmp_path, monkeypatch, sync_every=8)
    assert epoch.steps == 24
    assert epoch.reads <= epoch.steps // 8, epoch.reads  # the sync points at steps 8, 16 and 24 (the epoch's end)
    assert epoch.metrics["images"] == 24 * 8 and 0 < epoch.metrics["loss"] < 10


def test_the_counter_sees_reads(tmp_path, monkeypatch):
    """The same epoch, looking up after every step: the counter must see every one of those reads."""
    epoch = steady_epoch(tmp_path, monkeypatch, sync_every=1)
    assert epoch.reads >= epoch.steps


@pytest.mark.parametrize("backend", ["device", "workers"])
def test_no_steady_step_makes_a_tensor_from_python_data(tmp_path, monkeypatch, backend):
    """Constants (normalization, luma weights, hash seeds) are built once per device, not per batch.
    The workers backend loads in a worker process, as it does on a GPU (collating there is host work)."""
    epoch = steady_epoch(tmp_path, monkeypatch, sync_every=8, train__aug_backend=backend, train__workers=1)
    assert epoch.steps == 24 and epoch.metrics["images"] == 24 * 8
    assert epoch.from_python_data == []


def test_the_watcher_sees_tensors_made_from_python_data():
    x = torch.ones(2)
    with TensorsFromPythonData() as made:
        torch.tensor(3.14)
        torch.as_tensor([0.5, 0.25], device=x.device)
        x.new_tensor([1.0])
        torch.as_tensor(x)  # a tensor already: no data from Python
        torch.full((2,), 0.5)  # filled on the device: no copy
    assert [call.split(" at ")[0] for call in made.calls] == ["tensor", "as_tensor", "new_tensor"]
    assert all(" at test_sync_free.py:" in call for call in made.calls), made.calls  # names the line to fix
