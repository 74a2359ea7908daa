"""A steady-state training step reads nothing back from the device: the loop looks up only every
`train.sync_every` optimizer steps (non-finite check, stop agreement, metric sums) and at the epoch's end.

Counted on the CPU, where every read is a Python call on a tensor: `.item()`, `.tolist()`, `.cpu()`,
`.numpy()`, and the conversions `bool()`, `int()`, `float()` and `operator.index()` of a tensor. On a
GPU each of those waits for the device's queue to drain (benchmarks/gpu_check.py checks it there with
torch's own sync detector).
"""

from __future__ import annotations

import pytest
from support.host_reads import steady_epoch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_steady_epoch_reads_from_the_device_once_per_sync_every_steps(tmp_path, monkeypatch):
    reads, steps, metrics = steady_epoch(tmp_path, monkeypatch, sync_every=8)
    assert steps == 24
    assert reads <= steps // 8, reads  # the sync points at steps 8, 16 and 24 (the epoch's end)
    assert metrics["images"] == 24 * 8 and 0 < metrics["loss"] < 10


def test_the_counter_sees_reads(tmp_path, monkeypatch):
    """The same epoch, looking up after every step: the counter must see every one of those reads."""
    reads, steps, _ = steady_epoch(tmp_path, monkeypatch, sync_every=1)
    assert reads >= steps
