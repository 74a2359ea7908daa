"""The order of an epoch: which images each rank loads, in which order, the same for any number of
processes and across resume.

- `EpochSampler`: DistributedSampler's permutation (seeded with seed + epoch), yielding
  `(index, epoch)` so the dataset can seed each sample's augmentation; with `BalancedDraw`
  (`train.balance: sampler`) a class-balanced draw instead, keyed by position.
- `epoch_order` / `epoch_positions`: the same order as int64 tensors, for the device backend;
  `EpochOrder` holds what they take besides the split and the epoch (seed, replicas, rank, balance).
- `SkipSampler` + `LoaderEpochs`: a resumed epoch continues where the interrupted one stopped.
- `ShardSampler`: each val image exactly once over all ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class BalancedDraw:
    """`train.balance: sampler`: an epoch of as many draws as the split has images, with replacement,
    each draw a class chosen uniformly (among the classes that have images) then one of its images
    uniformly, so every class is drawn equally often in expectation.

    Built once from the labels; `draw(seed, epoch)` is then a few tensor operations seeded like the
    permutation (seed + epoch), with no read of a tensor into Python, so the device backend builds
    each epoch's order without a sync.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray | torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if labels.numel() == 0:
            raise ValueError("class-balanced sampling needs a non-empty train split")
        counts = torch.bincount(labels)
        starts = torch.cumsum(counts, 0) - counts
        present = counts > 0
        self.members = torch.argsort(labels, stable=True)  # image indices grouped by class, in index order
        self.counts, self.starts = counts[present], starts[present]
        self.num_classes = int(present.sum())
        self.length = int(labels.numel())

    def __len__(self) -> int:
        return self.length

    def draw(self, seed: int, epoch: int) -> torch.Tensor:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        classes = torch.randint(self.num_classes, (self.length,), generator=generator)
        counts = self.counts[classes]
        # floor(u * count) with u in [0, 1): uniform within the class (the clamp guards float rounding).
        within = (torch.rand(self.length, dtype=torch.float64, generator=generator) * counts).long()
        return self.members[self.starts[classes] + torch.minimum(within, counts - 1)]


class EpochSampler(Sampler):
    """DistributedSampler's order, yielding `(index, epoch)` so the dataset can seed per sample.

    Every replica count sees the same permutation (rank r takes indices[r::num_replicas]), so one
    process with global batch B and two with B/2 each cover the same samples at every step.
    With `balance` (a BalancedDraw), the epoch is that class-balanced draw instead, cut over the
    replicas by the same rule (`epoch_order`), and items are `(index, epoch, position)`: a draw's
    augmentation is keyed by its position in the epoch, so repeats of an image look different.
    """

    def __init__(self, dataset_len: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, balance: BalancedDraw | None = None):
        # DistributedSampler only needs len() of the dataset.
        self._order = DistributedSampler(range(dataset_len), num_replicas=num_replicas, rank=rank,
                                         shuffle=shuffle, seed=seed, drop_last=drop_last)
        if balance is not None and (drop_last or not shuffle or len(balance) != dataset_len):
            raise ValueError("a balanced EpochSampler draws with replacement over the whole split: "
                             "shuffle=True, drop_last=False and a BalancedDraw of the same length")
        self.dataset_len, self.num_replicas, self.rank, self.seed = dataset_len, num_replicas, rank, seed
        self.balance = balance
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        epoch = self.epoch
        if self.balance is None:
            return ((index, epoch) for index in self._order)
        options = dict(num_replicas=self.num_replicas, rank=self.rank)
        order = epoch_order(self.dataset_len, seed=self.seed, epoch=epoch, balance=self.balance, **options)
        keys = epoch_positions(self.dataset_len, **options)
        return ((index, epoch, key) for index, key in zip(order.tolist(), keys.tolist()))

    def __len__(self) -> int:
        return len(self._order)


def epoch_order(dataset_len: int, *, seed: int, epoch: int, num_replicas: int = 1, rank: int = 0,
                balance: BalancedDraw | None = None) -> torch.Tensor:
    """EpochSampler's indices for one epoch and rank as one int64 tensor (no Python list): the device
    backend moves it to the device once per epoch. DistributedSampler's rule: a permutation seeded
    with seed + epoch (or, with `balance`, its class-balanced draw), padded from its start to a
    multiple of the replicas, rank r taking every num_replicas-th index from position r."""
    if balance is not None:
        order = balance.draw(seed, epoch)
    else:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        order = torch.randperm(dataset_len, generator=generator)
    total = -(-dataset_len // num_replicas) * num_replicas
    if total > dataset_len:
        order = torch.cat([order, order.repeat(-(-(total - dataset_len) // dataset_len))[:total - dataset_len]])
    return order[rank:total:num_replicas]


def epoch_positions(dataset_len: int, *, num_replicas: int = 1, rank: int = 0) -> torch.Tensor:
    """The positions in the (padded) global epoch order that `epoch_order` gives this rank: the
    augmentation keys of a balanced epoch, the same for a draw whatever the number of processes."""
    total = -(-dataset_len // num_replicas) * num_replicas
    return torch.arange(rank, total, num_replicas, dtype=torch.int64)


@dataclass(frozen=True)
class EpochOrder:
    """One rank's share of every epoch's order: what `epoch_order` and `epoch_positions` take
    besides the split's length and the epoch, kept together so a rank cannot mix two of them."""

    seed: int
    num_replicas: int = 1
    rank: int = 0
    balance: BalancedDraw | None = None

    def indices(self, dataset_len: int, epoch: int) -> torch.Tensor:
        """`epoch_order` of this rank for `epoch`."""
        return epoch_order(dataset_len, seed=self.seed, epoch=epoch, num_replicas=self.num_replicas, rank=self.rank,
                           balance=self.balance)

    def positions(self, dataset_len: int) -> torch.Tensor:
        """`epoch_positions` of this rank (the same every epoch)."""
        return epoch_positions(dataset_len, num_replicas=self.num_replicas, rank=self.rank)


class SkipSampler(Sampler):
    """Wraps an EpochSampler and drops the first `skip` items once: a resumed epoch continues where
    the interrupted one stopped, without loading the consumed batches."""

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        for i, item in enumerate(self.sampler):
            if i >= skip:
                yield item

    def __len__(self) -> int:
        return len(self.sampler)


class LoaderEpochs:
    """The workers backend's epochs: `epoch(e, skip_micro)` sets the loader's sampler to epoch `e`,
    skipping the micro-batches a resumed epoch already consumed, and returns the loader (the device
    backend's counterpart is `device_data.DeviceTrainBatches`)."""

    def __init__(self, loader: DataLoader, sampler: SkipSampler, per_rank: int):
        self.loader, self.sampler, self.per_rank = loader, sampler, per_rank

    def epoch(self, epoch: int, skip_micro: int = 0) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.sampler.skip = skip_micro * self.per_rank
        return self.loader


class ShardSampler(Sampler):
    """indices[rank::world] without padding: each val image is evaluated exactly once over all ranks."""

    def __init__(self, length: int, rank: int, world: int):
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
