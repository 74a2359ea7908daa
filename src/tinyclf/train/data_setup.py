"""A run's data: the prepared splits, the step plan and how this rank loads its batches, for either
augmentation backend (`train.aug_backend`, resolved by `recipe.resolve_aug_backend`):

- `workers`: albumentations per image in DataLoader worker processes over the memory-mapped
  arrays, normalized on the device (`augment.batch`);
- `device`: the splits held as uint8 tensors (on the GPU when they fit, `train.device_data`),
  batches gathered and augmented there (`loading.device_data`, `augment.device`).

`train.balance: sampler` swaps each epoch's permutation for a class-balanced draw
(`loading.samplers.BalancedDraw`), in both backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tinyclf.augment.device import DeviceAugment
from tinyclf.augment.per_image import PerImageAugment, build_augment
from tinyclf.data import arrays
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.device_data import (SPLITS, DeviceTrainBatches, DeviceValBatches, Placement, SplitSize,
                                         open_split, place_splits)
from tinyclf.loading.loader import LoaderSpeed, make_loader
from tinyclf.loading.samplers import BalancedDraw, EpochOrder, EpochSampler, LoaderEpochs, ShardSampler, SkipSampler
from tinyclf.model.memory import training_memory
from tinyclf.train.distributed import DistInfo
from tinyclf.train.recipe import StepPlan, plan_steps, resolve_aug_backend
from tinyclf.train.signals import ignore_sigint_in_workers


@dataclass
class TrainData:
    """The prepared data of a run and how this rank loads it.

    `train_batches.epoch(epoch, skip_micro)` gives an epoch's (input, labels) micro-batches from
    `skip_micro` on; `val_batches` yields this rank's val shard as (uint8 images, labels). Both
    backends have them: DataLoaders for `workers`, tensors on the device for `device`, where
    `placement` says which splits are on the device and which in host memory (`train.device_data`).
    """

    classes: dict
    stats: dict
    backend: str  # the resolved train.aug_backend: workers or device
    num_train: int
    num_val: int
    plan: StepPlan
    train_batches: object
    val_batches: Iterable
    placement: Placement | None = None  # the device backend's

    @property
    def num_classes(self) -> int:
        return len(self.classes["classes"])

    @property
    def image_size(self) -> int:
        return int(self.stats["image_size"][0])  # prepared images are square

    @property
    def mean(self) -> list[float]:
        return self.stats["mean"]

    @property
    def std(self) -> list[float]:
        return self.stats["std"]


def load_train_data(prepared_dir: Path, train_params, info: DistInfo) -> TrainData:
    """The prepared splits, the step plan and this rank's batches (PreparedDataError if data is missing)."""
    classes = arrays.load_classes(prepared_dir)
    stats = arrays.load_stats(prepared_dir)
    backend = resolve_aug_backend(train_params, info.device)
    if backend == "device":
        *loaded, placement = _device_batches(prepared_dir, train_params, stats, len(classes["classes"]), info)
        return TrainData(classes, stats, backend, *loaded, placement=placement)
    return TrainData(classes, stats, backend, *_loader_batches(prepared_dir, train_params, stats, info))


def _loader_batches(prepared_dir: Path, train_params, stats: dict, info: DistInfo):
    """The workers backend: albumentations per image in DataLoader processes over the memory-mapped arrays."""
    augment = build_augment(train_params, int(stats["image_size"][0]))
    train_set = PreparedDataset(prepared_dir, "train", PerImageAugment(augment, seed=train_params.seed))
    val_set = PreparedDataset(prepared_dir, "val")
    plan = plan_steps(len(train_set), train_params, info.world_size)
    sampler = SkipSampler(EpochSampler(len(train_set), num_replicas=info.world_size, rank=info.rank,
                                       shuffle=True, seed=train_params.seed, drop_last=False,
                                       balance=balanced_draw(train_params, train_set.labels)))
    speed = LoaderSpeed(workers=train_params.workers, prefetch_factor=train_params.prefetch_factor,
                        pin_memory=info.device.type == "cuda")
    train_loader = make_loader(train_set, sampler, plan.per_rank, speed, drop_last=True)
    val_loader = make_loader(val_set, ShardSampler(len(val_set), info.rank, info.world_size), plan.per_rank, speed,
                             drop_last=False)
    for loader in (train_loader, val_loader):
        ignore_sigint_in_workers(loader)
    return len(train_set), len(val_set), plan, LoaderEpochs(train_loader, sampler, plan.per_rank), val_loader


def _device_batches(prepared_dir: Path, train_params, stats: dict, num_classes: int, info: DistInfo):
    """The device backend: each split on the device when it fits beside training (`train.device_data`,
    decided from the arrays' headers before anything is loaded), else in host memory with each batch
    copied over; batches augmented on the device."""
    sizes = {split: SplitSize.read(prepared_dir, split) for split in SPLITS}
    plan = plan_steps(sizes["train"].count, train_params, info.world_size)
    image_size = int(stats["image_size"][0])
    placement = place_splits({split: size.nbytes for split, size in sizes.items()}, info.device,
                             train_params.device_data,
                             lambda: training_memory(train_params.model, num_classes, image_size, plan.per_rank))
    train_split, val_split = (open_split(prepared_dir, split, info.device, placement) for split in SPLITS)
    augment = DeviceAugment(train_params, image_size, stats["mean"], stats["std"],
                            seed=train_params.seed, channels_last=train_params.channels_last)
    order = EpochOrder(train_params.seed, num_replicas=info.world_size, rank=info.rank,
                       balance=balanced_draw(train_params, train_split.host_labels))
    train_batches = DeviceTrainBatches(train_split, augment, order, per_rank=plan.per_rank,
                                       micro_per_epoch=plan.micro_per_epoch)
    val_batches = DeviceValBatches(val_split, plan.per_rank, world=info.world_size, rank=info.rank)
    return len(train_split), len(val_split), plan, train_batches, val_batches, placement


def balanced_draw(train_params, labels) -> BalancedDraw | None:
    """train.balance: sampler -> the class-balanced draw both backends order their epochs by."""
    return BalancedDraw(labels) if train_params.balance == "sampler" else None

