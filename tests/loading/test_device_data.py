"""The device backend's data when a split does not fit on the GPU (`train.device_data`).

- The host path (`HostSplit`: the memory map, batches gathered into two reusable staging buffers,
  the epoch order on the host) gives the device path's batches bit for bit, train and val, over
  epochs, across a resume, with the class-balanced draw and on each of two ranks; a batch it
  yielded stays intact while the consumer works on the next one; a whole run trains the same
  weights either way, and its steady epoch reads nothing more back than the device path's.
- Placement (`place_splits`): a split goes on the GPU when it fits in free memory beside what
  training needs (`model.memory.training_memory`: state + saved activations + an allowance).
  This machine has no GPU: those tests patch `torch.cuda.mem_get_info`, the one call that asks
  the GPU, and nothing else.

Real components otherwise: prepared arrays on disk, `DeviceAugment`, `EpochOrder`, `run_training`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from support.helpers import shrunk_params
from support.host_reads import steady_epoch
from support.synthetic_prepared import write_prepared

from tinyclf.augment.device import DeviceAugment
from tinyclf.loading.device_data import (DeviceDataError, DeviceSplit, DeviceTrainBatches, DeviceValBatches,
                                         HostSplit, place_splits)
from tinyclf.loading.samplers import BalancedDraw, EpochOrder
from tinyclf.model.memory import (ALLOWANCE, BYTES_PER_PARAMETER, FALLBACK_ACTIVATION_FACTOR, memory_of,
                                  saved_activation_bytes, training_memory)
from tinyclf.params import TrainParams, params_from_dict
from tinyclf.train.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # only named: placement reads its free memory through the patched call
GB = 10**9
PER_RANK = 8


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """52 train images (6 micro-batches of 8, 4 left over) / 13 val images, 4 classes, 32×32."""
    root = write_prepared(tmp_path_factory.mktemp("prepared"), num_classes=4, train_per_class=13, val_per_class=4)
    for name in ("images", "labels"):  # 13 val images: a short last batch, on either of two ranks
        np.save(root / "val" / f"{name}.npy", np.load(root / "val" / f"{name}.npy")[:13])
    return root


def augment() -> DeviceAugment:
    """Every keyed draw on: random-resized crop, flip, color jitter, erasing."""
    params = dataclasses.replace(TrainParams(), crop="random_resized_crop", color_jitter=0.4, random_erasing=0.5)
    return DeviceAugment(params, 32, [0.5, 0.4, 0.3], [0.25, 0.2, 0.15], seed=7, channels_last=True)


def train_batches(prepared, kind, order: EpochOrder) -> DeviceTrainBatches:
    """A rank's train batches over a DeviceSplit or a HostSplit (`kind`) of the same prepared split."""
    split = kind(prepared, "train", CPU)
    micro_per_epoch = len(split) // (PER_RANK * order.num_replicas)
    return DeviceTrainBatches(split, augment(), order, per_rank=PER_RANK, micro_per_epoch=micro_per_epoch)


def assert_same_batches(device_batches, host_batches) -> int:
    """Consumed in step, as training does: each pair compared before the next is gathered."""
    count = 0
    for (x_device, y_device), (x_host, y_host) in zip(device_batches, host_batches, strict=True):
        assert torch.equal(x_device, x_host) and torch.equal(y_device, y_host)
        count += 1
    return count


# ------------------------------------------------------------------------------ same batches
def test_the_host_path_gives_the_device_paths_train_batches_over_epochs(prepared):
    device, host = (train_batches(prepared, kind, EpochOrder(seed=3)) for kind in (DeviceSplit, HostSplit))
    for epoch in range(3):
        assert assert_same_batches(device.epoch(epoch), host.epoch(epoch)) == 6


def test_the_host_path_resumes_an_epoch_where_the_device_path_does(prepared):
    device, host = (train_batches(prepared, kind, EpochOrder(seed=3)) for kind in (DeviceSplit, HostSplit))
    assert assert_same_batches(device.epoch(1, skip_micro=4), host.epoch(1, skip_micro=4)) == 2
    whole = [x.clone() for x, _ in host.epoch(1)]
    resumed = [x.clone() for x, _ in host.epoch(1, skip_micro=4)]
    assert all(torch.equal(a, b) for a, b in zip(whole[4:], resumed, strict=True))


def test_the_host_path_keys_a_balanced_draw_by_position_as_the_device_path_does(prepared):
    balance = BalancedDraw(DeviceSplit(prepared, "train", CPU).host_labels)
    device, host = (train_batches(prepared, kind, EpochOrder(seed=3, balance=balance))
                    for kind in (DeviceSplit, HostSplit))
    for epoch in range(2):
        assert assert_same_batches(device.epoch(epoch), host.epoch(epoch)) == 6


@pytest.mark.parametrize("rank", [0, 1])
def test_each_of_two_ranks_gets_the_same_shard_on_the_host_path(prepared, rank):
    batches = {kind: train_batches(prepared, kind, EpochOrder(seed=3, num_replicas=2, rank=rank))
               for kind in (DeviceSplit, HostSplit)}
    assert assert_same_batches(batches[DeviceSplit].epoch(2), batches[HostSplit].epoch(2)) == 3


@pytest.mark.parametrize("world, rank", [(1, 0), (2, 1)])
def test_the_host_path_gives_the_device_paths_val_batches(prepared, world, rank):
    device, host = (DeviceValBatches(kind(prepared, "val", CPU), 4, world=world, rank=rank)
                    for kind in (DeviceSplit, HostSplit))
    assert assert_same_batches(device, host) == (4 if world == 1 else 2)  # 13 images: a short last batch


def test_a_yielded_batch_stays_intact_while_the_next_one_is_used(prepared):
    """The host path reuses two staging buffers; on a CPU a val batch (and a train batch's labels)
    is its buffer. A consumer may keep a batch while it works on the next; the batch after that
    reuses the first buffer (memory does not grow with the epoch)."""
    expected = [(x.clone(), y.clone()) for x, y in DeviceValBatches(DeviceSplit(prepared, "val", CPU), 3,
                                                                     world=1, rank=0)]
    previous, addresses = None, set()
    for step, (images, labels) in enumerate(DeviceValBatches(HostSplit(prepared, "val", CPU), 3, world=1, rank=0)):
        assert torch.equal(images, expected[step][0]) and torch.equal(labels, expected[step][1])
        if previous is not None:
            assert torch.equal(previous[0], expected[step - 1][0]) and torch.equal(previous[1], expected[step - 1][1])
        previous = images, labels
        addresses.add(images.data_ptr())
    assert step == 4 and len(addresses) == 2
    host = train_batches(prepared, HostSplit, EpochOrder(seed=3))
    device = train_batches(prepared, DeviceSplit, EpochOrder(seed=3))
    kept = None
    for (_, labels), (_, reference) in zip(host.epoch(0), device.epoch(0), strict=True):
        if kept is not None:
            assert torch.equal(kept[0], kept[1])
        kept = labels, reference


# ------------------------------------------------------------------------------ a whole run
def test_a_run_on_the_host_path_trains_the_same_weights(tmp_path, prepared, capsys):
    """train.device_data: host on a CPU: the same weights and val metrics as the device path, and the
    run log says where the splits were."""
    states, results = {}, {}
    for mode in ("device", "host"):
        tree = shrunk_params(train__model="test_resnet", train__crop="pad_crop", train__epochs=2,
                             train__deterministic=True, train__color_jitter=0.2, train__device_data=mode)
        out = tmp_path / mode
        results[mode] = run_training(params_from_dict(tree), prepared, out / "model.pt", out / "live", out / "ck",
                                     progress_bar=False)
        states[mode] = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert states["host"].keys() == states["device"].keys()
    assert all(torch.equal(states["host"][k], states["device"][k]) for k in states["device"])
    assert results["host"]["val"] == results["device"]["val"]
    log = capsys.readouterr()
    assert "device data (train and val on the host: train.device_data: host)" in log.out + log.err


def test_the_host_paths_steady_epoch_reads_nothing_more_back(tmp_path, monkeypatch):
    """The epoch order of the host path lives on the host: no read from the device per batch, and no
    tensor made from Python data per batch (on a GPU, both wait for it)."""
    device = steady_epoch(tmp_path / "device", monkeypatch, sync_every=8)
    host = steady_epoch(tmp_path / "host", monkeypatch, sync_every=8, train__device_data="host")
    assert host.reads == device.reads and host.steps == device.steps == 24
    assert host.from_python_data == []
    assert host.metrics["loss"] == device.metrics["loss"]


# ------------------------------------------------------------------------------ placement
def free_gpu_memory(monkeypatch, free: int) -> list:
    """torch.cuda.mem_get_info reports `free` bytes (this machine has no GPU); returns the calls."""
    calls = []

    def mem_get_info(device=None):
        calls.append(device)
        return free, 80 * GB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    return calls


def reserve():
    return training_memory("test_resnet", 4, 32, 16)


SIZES = {"train": 12 * GB, "val": 1 * GB}


def test_splits_that_fit_beside_training_go_on_the_gpu(monkeypatch):
    calls = free_gpu_memory(monkeypatch, 13 * GB + reserve().total)
    placement = place_splits(SIZES, CUDA, "auto", reserve)
    assert placement.on_device == {"train": True, "val": True} and calls == [CUDA]
    assert placement.describe() == "device data"


def test_a_split_that_does_not_fit_stays_on_the_host_with_the_sizes_said(monkeypatch):
    free_gpu_memory(monkeypatch, 13 * GB + reserve().total - 1)  # one byte short of both
    placement = place_splits(SIZES, CUDA, "auto", reserve)
    assert placement.on_device == {"train": True, "val": False}  # train first: it is gathered every step
    free_gpu_memory(monkeypatch, 10 * GB)
    placement = place_splits(SIZES, CUDA, "auto", reserve)
    assert placement.on_device == {"train": False, "val": True}
    line = placement.describe()
    assert line.startswith("device data (train on the host: train 12.00 GB + val 1.00 GB with ")
    assert "for training (model state" in line and line.endswith("> 10.00 GB free GPU memory)") and "\n" not in line


def test_device_data_device_that_does_not_fit_is_a_one_line_error(monkeypatch):
    free_gpu_memory(monkeypatch, 10 * GB)
    with pytest.raises(DeviceDataError, match=r"^train\.device_data: device needs the splits on the GPU.*"
                                              r"train 12\.00 GB \+ val 1\.00 GB") as error:
        place_splits(SIZES, CUDA, "device", reserve)
    assert "\n" not in str(error.value) and "train.device_data: auto" in str(error.value)
    free_gpu_memory(monkeypatch, 13 * GB + reserve().total)
    assert place_splits(SIZES, CUDA, "device", reserve).on_device == {"train": True, "val": True}


def test_host_keeps_the_splits_on_the_host_and_auto_is_device_on_a_cpu(monkeypatch):
    calls = free_gpu_memory(monkeypatch, 80 * GB)
    assert place_splits(SIZES, CUDA, "host", reserve).on_device == {"train": False, "val": False}
    assert place_splits(SIZES, CPU, "host", reserve).on_device == {"train": False, "val": False}
    assert place_splits(SIZES, CPU, "auto", reserve).on_device == {"train": True, "val": True}
    assert calls == []  # no GPU asked


# ------------------------------------------------------------------------------ the reserve
def test_the_reserve_grows_with_the_model_and_the_batch():
    small, larger_batch = training_memory("resnet18", 10, 32, 16), training_memory("resnet18", 10, 32, 64)
    larger_model = training_memory("resnet50", 10, 32, 16)
    assert small.measured and larger_batch.measured and larger_model.measured
    assert larger_batch.activations > 3.5 * small.activations and larger_batch.state == small.state
    assert larger_model.state > small.state and larger_model.activations > small.activations
    assert larger_model.total > small.total and larger_batch.total > small.total
    import timm

    assert small.state == BYTES_PER_PARAMETER * sum(p.numel() for p in timm.create_model("resnet18", num_classes=10)
                                                    .parameters())
    assert small.total == small.state + small.activations + ALLOWANCE


def test_saved_activations_count_each_storage_once_and_leave_the_weights_out():
    """conv → in-place ReLU → flatten → linear: the conv saves its input, the ReLU its output, which
    the linear layer saves again as a flattened view (another tensor, the same storage); the
    weights are the model state's."""
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
                                    torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10))
        batch = torch.empty(4, 3, 8, 8)
    assert saved_activation_bytes(model, batch) == 4 * 3 * 8 * 8 * 4 + 4 * 8 * 8 * 8 * 4


class DataDependent(torch.nn.Module):
    """A forward that branches on a value: it cannot run on the meta device."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) if bool(x.sum() > 0) else self.conv(-x)


def test_a_forward_that_cannot_run_on_meta_gets_the_conservative_reserve():
    batch = torch.empty(16, 3, 32, 32, device="meta")
    memory = memory_of(DataDependent(), batch)
    assert not memory.measured and memory.activations == FALLBACK_ACTIVATION_FACTOR * 16 * 3 * 32 * 32 * 4
    assert "conservative fallback" in memory.describe()
