"""The `device` backend's data: each prepared split as one uint8 tensor, batches gathered by index and
augmented on the training device. No DataLoader, no worker processes.

- `place_splits` decides where each split lives (`train.device_data`): on the device when it fits
  in free GPU memory beside what training needs (`model.memory.training_memory`), train first (it is
  gathered every step), else on the host; `host` keeps both on the host, `device` refuses to start
  when they do not fit. On a CPU `auto` is `device`: the training device is host memory.
- `DeviceSplit` holds a split on the device (loaded in chunks, no full host copy; on a CPU the
  memory-mapped array itself) and gathers each batch there.
- `HostSplit` leaves a split in pageable host memory, the memory map (ranks on one machine share
  its page cache), and gathers each batch on the host into one of two reusable `StagingBuffer`s,
  pinned on CUDA, copied to the device without blocking: the host gathers batch k+1 while the GPU
  runs step k. Its epoch order stays on the host, so no batch reads anything back from the device.
  On a CPU the same code runs and the copy is a no-op (the batch is the buffer).
- `DeviceTrainBatches` yields one epoch's augmented micro-batches of this rank in the order of the
  `workers` path (`samplers.EpochOrder`, EpochSampler's: the same permutation for any number of processes,
  rank r taking every world-th index), so a resumed epoch skips exactly the consumed micro-batches.
  The order is built on the host once per epoch and moved once to where the split gathers. With
  `train.balance: sampler` the order is `samplers.BalancedDraw`'s (the workers path's too) and
  each draw's augmentation is keyed by its position in the epoch instead of its image index.
- `DeviceValBatches` yields this rank's shard of the val split (indices[rank::world]), unaugmented.

Both split kinds give bit-identical batches. A yielded batch stays valid while the consumer works on
the next one: on CUDA every batch is a new device tensor; on a CPU a `HostSplit` batch is its
staging buffer, overwritten when the batch after the next one is gathered.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from tinyclf.data import arrays
from tinyclf.errors import TinyclfError
from tinyclf.loading.samplers import EpochOrder
from tinyclf.model.memory import TrainingMemory

_CHUNK_ROWS = 8192  # rows copied at a time while loading a split onto the device (64x64: 100 MB)
# One batch's buffer being copied to the GPU while the other is gathered into; a third would only
# let the host run further ahead of a GPU that is the bottleneck anyway.
STAGING_BUFFERS = 2
# What turns a gathered uint8 N×3×H×W batch, its sample keys and the epoch into the model's input
# (`augment.device.DeviceAugment`; loading does not import augment: augment builds on loading).
Augment = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
SPLITS = ("train", "val")  # in the order they claim GPU memory: train is gathered every step


class DeviceDataError(TinyclfError):
    """`train.device_data: device` and the splits do not fit on the GPU; one line with the sizes."""


# --------------------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class SplitSize:
    """A prepared split's image count and image bytes, read from the memory-mapped array's header."""

    count: int
    nbytes: int

    @classmethod
    def read(cls, prepared_dir: str | Path, split: str) -> SplitSize:
        images, _ = arrays.load_split(prepared_dir, split, mmap=True)  # PreparedDataError names a bad file
        return cls(len(images), int(images.nbytes))


@dataclass(frozen=True)
class Placement:
    """Where the device backend keeps each split (True: on the device) and, when one is on the host, why."""

    on_device: dict[str, bool]
    reason: str = ""

    def describe(self) -> str:
        """The run log's words: "device data", or which splits are on the host and why."""
        hosted = [split for split, on in self.on_device.items() if not on]
        return f"device data ({' and '.join(hosted)} on the host: {self.reason})" if hosted else "device data"


def place_splits(sizes: dict[str, int], device: torch.device, device_data: str,
                 training_memory: Callable[[], TrainingMemory]) -> Placement:
    """Where each split (`sizes`: split -> image bytes, in SPLITS order) goes under `train.device_data`.

    On CUDA, `auto` puts splits on the device while they fit in `torch.cuda.mem_get_info`'s free
    memory less `training_memory()` (called only there: it builds the model on the meta device),
    train first; `device` raises DeviceDataError unless they all fit. On a CPU only `host` keeps
    them on the host.
    """
    if device_data == "host":
        return Placement({split: False for split in sizes}, "train.device_data: host")
    if device.type != "cuda":
        return Placement({split: True for split in sizes})
    free, _ = torch.cuda.mem_get_info(device)
    memory = training_memory()
    room = free - memory.total
    sizes_text = " + ".join(f"{split} {nbytes / 1e9:.2f} GB" for split, nbytes in sizes.items())
    why = f"{sizes_text} with {memory.describe()} > {free / 1e9:.2f} GB free GPU memory"
    if device_data == "device" and sum(sizes.values()) > room:
        raise DeviceDataError(f"train.device_data: device needs the splits on the GPU, and they do not fit: {why}; "
                              "set train.device_data: auto (or host) to keep them in host memory, or lower "
                              "train.batch_size")
    on_device = {}
    for split, nbytes in sizes.items():
        on_device[split] = nbytes <= room
        if on_device[split]:
            room -= nbytes
    return Placement(on_device, "" if all(on_device.values()) else why)


def open_split(prepared_dir: str | Path, split: str, device: torch.device, placement: Placement):
    """The split as `placement` says: a DeviceSplit on `device`, or a HostSplit copying batches to it."""
    kind = DeviceSplit if placement.on_device[split] else HostSplit
    return kind(prepared_dir, split, device)


# --------------------------------------------------------------------------------------- splits
class DeviceSplit:
    """One prepared split held on `device`: images (N×H×W×3 uint8) and labels (N int64); batches gathered there."""

    def __init__(self, prepared_dir: str | Path, split: str, device: torch.device):
        images, labels = arrays.load_split(prepared_dir, split, mmap=True)  # PreparedDataError names a bad file
        self.device = self.index_device = device  # the epoch order is moved to the device once per epoch
        self.host_labels = np.asarray(labels, dtype=np.int64)  # for a class-balanced order, built on the host
        self.labels = torch.from_numpy(self.host_labels).to(device)
        self.images = _onto(images, device)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, keys: torch.Tensor | None = None):
        """(uint8 N×3×H×W images, labels, `keys`) at `indices` (on `index_device`: the device), on the device."""
        images = self.images.index_select(0, indices).permute(0, 3, 1, 2)  # N×H×W×3 seen as NCHW: channels_last
        return images, self.labels[indices], keys


def _memmap_tensor(images: np.ndarray) -> torch.Tensor:
    """The memory-mapped array as a tensor, without a copy."""
    with warnings.catch_warnings():  # a read-only memmap: torch warns, and nothing here writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(images)


def _onto(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The array as one tensor on `device`: on a CPU the memory map itself, on CUDA copied in chunks."""
    if device.type == "cpu":
        return _memmap_tensor(images)
    target = torch.empty(images.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(images), _CHUNK_ROWS):
        chunk = np.ascontiguousarray(images[start:start + _CHUNK_ROWS])
        target[start:start + len(chunk)].copy_(torch.from_numpy(chunk))
    return target


class HostSplit:
    """One prepared split left in pageable host memory (the memory map); each batch is gathered on the
    host into the next of STAGING_BUFFERS buffers and sent to `device` (see the module docstring)."""

    def __init__(self, prepared_dir: str | Path, split: str, device: torch.device):
        images, labels = arrays.load_split(prepared_dir, split, mmap=True)  # PreparedDataError names a bad file
        self.device, self.index_device = device, torch.device("cpu")  # the epoch order stays on the host
        self.host_labels = np.asarray(labels, dtype=np.int64)
        self.labels = torch.from_numpy(self.host_labels)
        self.images = _memmap_tensor(images)
        self.buffers = [StagingBuffer(device) for _ in range(STAGING_BUFFERS)]
        self.turn = 0

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, keys: torch.Tensor | None = None):
        """(uint8 N×3×H×W images, labels, `keys`) at `indices` (on the host), on the device."""
        buffer = self.buffers[self.turn]
        self.turn = (self.turn + 1) % len(self.buffers)
        return buffer.stage(self.images, self.labels, indices, keys)


class StagingBuffer:
    """A reusable host buffer for one batch: its images, and its labels then keys in one int64 block
    (one copy for both). Pinned on CUDA, where the copies to the device are asynchronous and an event
    recorded after them says when the buffer may be written again."""

    def __init__(self, device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"
        self.images: torch.Tensor | None = None
        self.ids = torch.empty(0, dtype=torch.int64)
        self.copied = torch.cuda.Event() if self.cuda else None

    def stage(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, keys: torch.Tensor | None):
        """Gather rows `indices` of `images` and `labels` (and `keys`, when given) here, then send them to
        the device: (N×3×H×W images, labels, keys) there. On a CPU they are views of this buffer."""
        n = len(indices)
        self._ready_for(n, images.shape[1:])
        batch = torch.index_select(images, 0, indices, out=self.images[:n])
        ids = self.ids[:n if keys is None else 2 * n]
        torch.index_select(labels, 0, indices, out=ids[:n])
        if keys is not None:
            ids[n:].copy_(keys)
        if self.cuda:
            stream = torch.cuda.current_stream(self.device)
            batch, ids = batch.to(self.device, non_blocking=True), ids.to(self.device, non_blocking=True)
            self.copied.record(stream)
        return batch.permute(0, 3, 1, 2), ids[:n], None if keys is None else ids[n:]

    def _ready_for(self, n: int, row_shape: torch.Size) -> None:
        """Wait until the last copy from this buffer has finished (the next gather overwrites it), and
        make room for `n` rows the first time (or for a larger batch)."""
        if self.copied is not None:
            self.copied.synchronize()  # returns at once before the first record
        if self.images is None or len(self.images) < n:
            self.images = torch.empty((n, *row_shape), dtype=torch.uint8, pin_memory=self.cuda)
            self.ids = torch.empty(2 * n, dtype=torch.int64, pin_memory=self.cuda)


# --------------------------------------------------------------------------------------- batches
class DeviceTrainBatches:
    """This rank's augmented micro-batches of one epoch, as (model input, labels) on the device:
    `per_rank` images each, `micro_per_epoch` of them, in `order`'s order."""

    def __init__(self, split: DeviceSplit | HostSplit, augment: Augment, order: EpochOrder, *, per_rank: int,
                 micro_per_epoch: int):
        self.split, self.augment, self.order = split, augment, order
        self.per_rank, self.micro_per_epoch = per_rank, micro_per_epoch
        if order.balance is not None:  # a balanced epoch keys augmentation by position: the same every epoch
            self.positions = order.positions(len(split)).to(split.index_device)

    def epoch(self, epoch: int, skip_micro: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's micro-batches from micro-batch `skip_micro` on (a resumed epoch skips the consumed ones)."""
        order = self.order.indices(len(self.split), epoch).to(self.split.index_device)
        keys = order if self.order.balance is None else self.positions
        for micro in range(skip_micro, self.micro_per_epoch):
            window = slice(micro * self.per_rank, (micro + 1) * self.per_rank)
            images, labels, batch_keys = self.split.batch(order[window], keys[window])
            yield self.augment(images, batch_keys, epoch), labels


class DeviceValBatches:
    """This rank's shard of a split (indices[rank::world]) as uint8 NCHW batches with labels, on the device."""

    def __init__(self, split: DeviceSplit | HostSplit, batch_size: int, *, world: int, rank: int):
        self.split, self.batch_size = split, batch_size
        self.indices = torch.arange(rank, len(split), world, dtype=torch.int64, device=split.index_device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.indices), self.batch_size):
            images, labels, _ = self.split.batch(self.indices[start:start + self.batch_size])
            yield images, labels
