"""The training input pipeline: prepared uint8 arrays -> augmented batches -> normalized model input.

Two augmentation backends, both configured from the `train` section of params.yaml:

- per image (`build_augment`): an albumentations pipeline run inside DataLoader workers on HWC
  uint8 images read from the memory-mapped `images.npy`. Each sample's randomness comes only from
  `(seed, epoch, index)`, so an image gets the same crop whatever the worker count, the rank that
  loads it, or whether the run was resumed.
- device (`tinyclf.device_augment`, `tinyclf.device_data`): the data held on the training device and
  whole batches augmented there, each sample's randomness from the same `(seed, epoch, index)`.

`to_model_input` turns the per-image backend's uint8 batches into the float tensor the model eats
(the device backend normalizes as it augments).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from tinyclf import arrays
from tinyclf.params import TrainParams

if TYPE_CHECKING:
    import albumentations as A


def _albumentations():
    """albumentations, imported on first use: only the per-image backend needs it (the device
    backend runs where it may not be installed, e.g. a GPU machine's own image)."""
    # albumentations asks PyPI for a newer version on import; a reproducible pipeline makes no
    # network calls of its own (and this machine has no internet), so switch that off unless the
    # user has set it explicitly.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


# Reflect padding (cv2.BORDER_REFLECT_101, the same rule as torch's "reflect"): the padded border
# looks like image content, whereas zero padding shows the network black frames (strongly negative
# after normalization) that it never sees at test time. airbench pads CIFAR the same way. Both
# backends use this rule, so they crop the same padded image.
PAD_BORDER = cv2.BORDER_REFLECT_101

RRC_RATIO = (3 / 4, 4 / 3)

# RandAugment's fixed strength: magnitude 9 on the 0-30 scale (Cubuk et al. 2020; timm's rand-m9).
RANDAUGMENT_OPS = 2
RANDAUGMENT_MAGNITUDE = 9 / 30


# ----------------------------------------------------------------------------------------------
# Per-image augmentation (albumentations)
# ----------------------------------------------------------------------------------------------

def build_augment(train_params: TrainParams, image_size: int) -> A.Compose:
    """The per-image train augmentation from params: HWC uint8 RGB in, image_size² HWC uint8 out.

    Order: crop (pad_crop | random_resized_crop) -> horizontal flip -> color jitter -> policy.
    Reseed before each call with a `SampleSeeder` (PreparedDataset does) for reproducible samples.
    """
    A = _albumentations()
    size = (image_size, image_size)
    if train_params.crop == "pad_crop":
        ops: list = [
            A.Pad(padding=train_params.pad, border_mode=PAD_BORDER, p=1.0),
            A.RandomCrop(height=image_size, width=image_size, pad_if_needed=True, border_mode=PAD_BORDER, p=1.0),
        ]
    else:
        ops = [A.RandomResizedCrop(size=size, scale=tuple(train_params.rrc_scale), ratio=RRC_RATIO,
                                   interpolation=cv2.INTER_LINEAR, p=1.0)]
    if train_params.hflip > 0:
        ops.append(A.HorizontalFlip(p=train_params.hflip))
    if train_params.color_jitter > 0:
        s = train_params.color_jitter
        ops.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=0.0, p=1.0))
    policy = build_policy(train_params.policy)
    if policy is not None:
        ops.append(policy)
    return A.Compose(ops, seed=0)


def build_policy(name: str) -> A.BaseCompose | None:
    """The stronger augmentation policies, after TrivialAugment and RandAugment.

    trivial_augment: one op chosen uniformly from `_policy_ops`, strength uniform in [0, max]
    (Müller & Hutter 2021). randaugment: two ops chosen uniformly with replacement, each at the
    fixed strength 9/30 of its max (Cubuk et al. 2020). Ranges follow torchvision's
    augmentation space; signed ops (rotate, shear, translate) pick a random sign.
    """
    A = _albumentations()
    if name == "none":
        return None
    if name == "trivial_augment":
        return A.OneOf(_policy_ops(0.0, 1.0), p=1.0)
    if name == "randaugment":
        m = RANDAUGMENT_MAGNITUDE
        return A.SomeOf(_policy_ops(m, m), n=RANDAUGMENT_OPS, replace=True, p=1.0)
    raise ValueError(f"unknown augmentation policy {name!r}: use none, trivial_augment or randaugment")


def _policy_ops(lo: float, hi: float) -> list:
    """The ops of the policies at strength in [lo, hi] (fractions of each op's maximum)."""
    A = _albumentations()

    def signed(make, max_value: float):
        # Both signs equally likely, magnitude in [lo, hi] * max_value.
        pos = (lo * max_value, hi * max_value)
        return A.OneOf([make(pos), make((-pos[1], -pos[0]))], p=1.0)

    def affine(**kw):
        return A.Affine(border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0, **kw)

    def jitter(**kw):  # a multiplicative factor 1 + m, m in [-max, max], as torchvision's enhance ops
        base = {"brightness": (1.0, 1.0), "contrast": (1.0, 1.0), "saturation": (1.0, 1.0), "hue": (0.0, 0.0)}
        return A.ColorJitter(**{**base, **kw}, p=1.0)

    max_shear_deg = math.degrees(math.atan(0.3))
    max_translate = 150 / 331  # fraction of the side, as torchvision (150 px at 331 px)
    return [
        A.NoOp(p=1.0),
        signed(lambda r: affine(shear={"x": r, "y": (0, 0)}), max_shear_deg),
        signed(lambda r: affine(shear={"x": (0, 0), "y": r}), max_shear_deg),
        signed(lambda r: affine(translate_percent={"x": r, "y": (0, 0)}), max_translate),
        signed(lambda r: affine(translate_percent={"x": (0, 0), "y": r}), max_translate),
        signed(lambda r: affine(rotate=r), 30.0),
        signed(lambda r: jitter(brightness=(1 + r[0], 1 + r[1])), 0.9),
        signed(lambda r: jitter(saturation=(1 + r[0], 1 + r[1])), 0.9),
        signed(lambda r: jitter(contrast=(1 + r[0], 1 + r[1])), 0.9),
        A.Sharpen(alpha=(lo * 0.9, hi * 0.9), lightness=(1.0, 1.0), p=1.0),
        # 8 bits at strength 0 down to 4 bits at full strength.
        A.Posterize(num_bits=(round(8 - 4 * hi), round(8 - 4 * lo)), p=1.0),
        # Threshold 1.0 (no change) at strength 0 down to 0.0 (full inversion) at full strength.
        A.Solarize(threshold_range=(1.0 - hi, 1.0 - lo), p=1.0),
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
    ]


class SampleSeeder:
    """Reseeds an augment's random streams from (seed, epoch, index) before each call.

    The same numpy Generator and random.Random are handed to every transform of the augment;
    per sample they get new states from a hash of (seed, epoch, index). That costs a few µs,
    against ~30 µs for new generators from np.random.SeedSequence (a third of the augment itself).
    """

    def __init__(self, augment: A.BaseCompose):
        self.augment = augment
        self._bits = np.random.PCG64(0)
        self._np = np.random.Generator(self._bits)
        self._py = random.Random(0)

    def __call__(self, seed: int, epoch: int, index: int) -> None:
        digest = hashlib.blake2b(struct.pack("<3q", seed, epoch, index), digest_size=32,
                                 person=b"tinyclf-augment").digest()
        self._bits.state = {
            "bit_generator": "PCG64",
            "state": {"state": int.from_bytes(digest[:16], "little"),
                      "inc": int.from_bytes(digest[16:24], "little") | 1},  # PCG increments are odd
            "has_uint32": 0,
            "uinteger": 0,
        }
        self._py.seed(int.from_bytes(digest[24:], "little"))
        # Cheap (<1 µs); rebinding each time keeps it right even if someone reseeded the augment.
        self.augment.set_random_state(self._np, self._py)


def seed_augment(augment: A.BaseCompose, seed: int, epoch: int, index: int) -> None:
    """Make the next call of `augment` depend only on (seed, epoch, index) (one-off use; reuse a
    SampleSeeder in loops)."""
    SampleSeeder(augment)(seed, epoch, index)


# ----------------------------------------------------------------------------------------------
# Dataset, sampler, loader
# ----------------------------------------------------------------------------------------------

class PreparedDataset(Dataset):
    """One split of the prepared arrays (`<prepared_dir>/<split>/{images,labels}.npy`).

    `dataset[i]`, `dataset[(i, epoch)]` or `dataset[(i, epoch, aug_key)]` -> (uint8 tensor 3×H×W,
    int label). With an augment, the sample's randomness depends only on (seed, epoch, aug_key), the
    key being the index unless given (a balanced epoch keys each draw by its position, so an image
    drawn twice is augmented twice differently). The image array is memory-mapped lazily in the
    process that reads it, so the dataset pickles small into DataLoader workers.
    """

    def __init__(self, prepared_dir: str | Path, split: str, augment: A.BaseCompose | None = None, seed: int = 0):
        # Validates the format; a missing or malformed split raises arrays.PreparedDataError naming the file.
        images, labels = arrays.load_split(prepared_dir, split, mmap=True)
        self.images_path = Path(prepared_dir) / split / arrays.IMAGES_FILE
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_shape = tuple(images.shape[1:])
        self.num_classes = _num_classes(Path(prepared_dir), self.labels)
        self.augment = augment
        self._seeder = SampleSeeder(augment) if augment is not None else None
        self.seed = seed
        self._images: np.ndarray | None = None  # opened on first use, in each process

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.images_path, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        # Pickling a memmap would copy its data; workers reopen the file instead.
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int] | tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, epoch, aug_key = sample_key(key)
        image = self.images[index]
        if self.augment is not None:
            self._seeder(self.seed, epoch, aug_key)
            image = self.augment(image=image)["image"]
        # Copy when the image is still the read-only memmap row (no augment) or has strides
        # torch.from_numpy refuses (a flip's negative ones); augment output is usually neither.
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")
        return torch.from_numpy(image).permute(2, 0, 1), int(self.labels[index])


def sample_key(key: int | tuple) -> tuple[int, int, int]:
    """(index, epoch, augmentation key) of a dataset key: `i`, `(i, epoch)` or `(i, epoch, aug_key)`."""
    if not isinstance(key, tuple):
        return int(key), 0, int(key)
    index, epoch = int(key[0]), int(key[1])
    return index, epoch, int(key[2]) if len(key) > 2 else index


def _num_classes(prepared_dir: Path, labels: np.ndarray) -> int:
    classes = prepared_dir / arrays.CLASSES_FILE
    if classes.is_file():
        return len(json.loads(classes.read_text())["classes"])
    return int(labels.max()) + 1 if len(labels) else 0


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


def make_loader(dataset: Dataset, sampler: Sampler | None, batch_size: int, *, workers: int, prefetch_factor: int,
                pin_memory: bool, drop_last: bool, persistent_workers: bool = True, collate=None) -> DataLoader:
    """A DataLoader with the speed options from params; workers=0 loads in the calling process.

    With workers, OpenCV in this process is set to one thread: each worker already owns a core, and
    the forked workers inherit the setting. (Setting it in the workers instead hangs them, in
    cv2.setNumThreads, whenever this process had already started OpenCV's thread pool.)
    """
    kwargs: dict = {}
    if workers > 0:
        cv2.setNumThreads(1)
        kwargs = dict(prefetch_factor=prefetch_factor, persistent_workers=persistent_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      # Pinned memory only helps (and only exists) with a CUDA device.
                      pin_memory=pin_memory and torch.cuda.is_available(),
                      drop_last=drop_last, collate_fn=collate, **kwargs)


def to_model_input(batch: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
                   *, channels_last: bool) -> torch.Tensor:
    """uint8 N×3×H×W -> float32 (x/255 - mean) / std on the batch's device; mean/std on the 0-1 scale."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = batch.to(dtype=torch.float32, memory_format=fmt, copy=True)  # never normalize the caller's tensor in place
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    # One pass each: x * (1 / (255 std)) - mean / std.
    return x.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)
