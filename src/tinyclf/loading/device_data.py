"""The `device` backend's data: each prepared split held once as one uint8 tensor on the device,
batches gathered there by index. No DataLoader, no worker processes, no host-to-device copy per step.

- `DeviceSplit` loads `<prepared>/<split>/images.npy` onto the device in chunks (no full host copy).
  On CUDA, when the split does not fit in free GPU memory (with `HEADROOM` left for the model), it
  stays in pinned host memory and each batch is gathered there and copied over, with a note.
- `DeviceTrainBatches` yields one epoch's augmented micro-batches of this rank in the order of the
  `workers` path (`samplers.EpochOrder`, EpochSampler's: the same permutation for any number of processes,
  rank r taking every world-th index), so a resumed epoch skips exactly the consumed micro-batches.
  The order is built on the host once per epoch and copied to the device once. With
  `train.balance: sampler` the order is `samplers.BalancedDraw`'s (the workers path's too) and
  each draw's augmentation is keyed by its position in the epoch instead of its image index.
- `DeviceValBatches` yields this rank's shard of the val split (indices[rank::world]), unaugmented.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from tinyclf.augment.device import DeviceAugment
from tinyclf.data import arrays
from tinyclf.loading.samplers import EpochOrder

# GPU memory left free for the model, activations and the allocator when placing a split.
HEADROOM = 4 * 2**30
_CHUNK_ROWS = 8192  # rows copied at a time while loading a split (64x64: 100 MB)


class DeviceSplit:
    """One prepared split: images (N×H×W×3 uint8) and labels (N int64), on `device` when they fit."""

    def __init__(self, prepared_dir: str | Path, split: str, device: torch.device):
        images, labels = arrays.load_split(prepared_dir, split, mmap=True)  # PreparedDataError names a bad file
        self.device = device
        self.host_labels = np.asarray(labels, dtype=np.int64)  # for a class-balanced order, built on the host
        self.labels = torch.from_numpy(self.host_labels).to(device)
        self.images, self.on_device = _place(images, device, f"the {split} split")

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at `indices` (a tensor on the device) as a uint8 N×3×H×W batch on the device."""
        if self.on_device:
            batch = self.images.index_select(0, indices)
        else:
            batch = self.images.index_select(0, indices.cpu()).pin_memory().to(self.device, non_blocking=True)
        return batch.permute(0, 3, 1, 2)  # N×H×W×3 storage seen as NCHW: channels_last already


def _place(images: np.ndarray, device: torch.device, what: str) -> tuple[torch.Tensor, bool]:
    """The array as a tensor on `device` (True), or in pinned host memory when CUDA has no room (False)."""
    if device.type != "cuda":
        with warnings.catch_warnings():  # a read-only memmap: torch warns, and nothing here writes to it
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(images), True
    free, _ = torch.cuda.mem_get_info(device)
    fits = images.nbytes + HEADROOM <= free
    if not fits:
        print(f"train: {what} ({images.nbytes / 1e9:.2f} GB) does not fit in free GPU memory "
              f"({free / 1e9:.2f} GB, keeping {HEADROOM / 2**30:.0f} GiB for the model): it stays in pinned host "
              "memory and each batch is copied over", file=sys.stderr)
    target = torch.empty(images.shape, dtype=torch.uint8, device=device if fits else "cpu", pin_memory=not fits)
    for start in range(0, len(images), _CHUNK_ROWS):
        target[start:start + _CHUNK_ROWS].copy_(torch.from_numpy(np.ascontiguousarray(images[start:start + _CHUNK_ROWS])))
    return target, fits


class DeviceTrainBatches:
    """This rank's augmented micro-batches of one epoch, as (model input, labels) on the device:
    `per_rank` images each, `micro_per_epoch` of them, in `order`'s order."""

    def __init__(self, split: DeviceSplit, augment: DeviceAugment, order: EpochOrder, *, per_rank: int,
                 micro_per_epoch: int):
        self.split, self.augment, self.order = split, augment, order
        self.per_rank, self.micro_per_epoch = per_rank, micro_per_epoch
        if order.balance is not None:  # a balanced epoch keys augmentation by position: the same every epoch
            self.positions = order.positions(len(split)).to(split.device)

    def epoch(self, epoch: int, skip_micro: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's micro-batches from micro-batch `skip_micro` on (a resumed epoch skips the consumed ones)."""
        order = self.order.indices(len(self.split), epoch).to(self.split.device)
        keys = order if self.order.balance is None else self.positions
        for micro in range(skip_micro, self.micro_per_epoch):
            window = slice(micro * self.per_rank, (micro + 1) * self.per_rank)
            indices = order[window]
            yield self.augment(self.split.gather(indices), keys[window], epoch), self.split.labels[indices]


class DeviceValBatches:
    """This rank's shard of a split (indices[rank::world]) as uint8 NCHW batches with labels, on the device."""

    def __init__(self, split: DeviceSplit, batch_size: int, *, world: int, rank: int):
        self.split, self.batch_size = split, batch_size
        self.indices = torch.arange(rank, len(split), world, dtype=torch.int64, device=split.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.indices), self.batch_size):
            indices = self.indices[start:start + self.batch_size]
            yield self.split.gather(indices), self.split.labels[indices]
