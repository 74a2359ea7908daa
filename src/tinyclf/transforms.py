"""The training input pipeline: prepared uint8 arrays -> augmented batches -> normalized model input.

Two augmentation backends, both configured from the `train` section of params.yaml:

- per image (`build_augment`): an albumentations pipeline run inside DataLoader workers on HWC
  uint8 images read from the memory-mapped `images.npy`. Each sample's randomness comes only from
  `(seed, epoch, index)`, so an image gets the same crop whatever the worker count, the rank that
  loads it, or whether the run was resumed.
- batched (`BatchedAugment`): crop + flip of a whole uint8 NCHW batch as tensor ops on the batch's
  device (the GPU when there is one); its randomness comes from `(seed, step)`.

`to_model_input` turns either into the float tensor the model eats.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
from pathlib import Path
from typing import Iterator, Sequence

# albumentations asks PyPI for a newer version on import; a reproducible pipeline makes no
# network calls of its own (and this machine has no internet), so switch that off unless the user
# has set it explicitly.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler  # noqa: E402

from tinyclf import arrays  # noqa: E402
from tinyclf.params import TrainParams  # noqa: E402

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

    `dataset[i]` or `dataset[(i, epoch)]` -> (uint8 tensor 3×H×W, int label). With an augment,
    the sample's randomness depends only on (seed, epoch, index). The image array is memory-mapped
    lazily in the process that reads it, so the dataset pickles small into DataLoader workers.
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

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = (key if isinstance(key, tuple) else (key, 0))
        index = int(index)
        image = self.images[index]
        if self.augment is not None:
            self._seeder(self.seed, int(epoch), index)
            image = self.augment(image=image)["image"]
        # Copy when the image is still the read-only memmap row (no augment) or has strides
        # torch.from_numpy refuses (a flip's negative ones); augment output is usually neither.
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")
        return torch.from_numpy(image).permute(2, 0, 1), int(self.labels[index])


def _num_classes(prepared_dir: Path, labels: np.ndarray) -> int:
    classes = prepared_dir / arrays.CLASSES_FILE
    if classes.is_file():
        return len(json.loads(classes.read_text())["classes"])
    return int(labels.max()) + 1 if len(labels) else 0


class EpochSampler(Sampler):
    """DistributedSampler's order, yielding `(index, epoch)` so the dataset can seed per sample.

    Every replica count sees the same permutation (rank r takes indices[r::num_replicas]), so one
    process with global batch B and two with B/2 each cover the same samples at every step.
    """

    def __init__(self, dataset_len: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        # DistributedSampler only needs len() of the dataset.
        self._order = DistributedSampler(range(dataset_len), num_replicas=num_replicas, rank=rank,
                                         shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((index, epoch) for index in self._order)

    def __len__(self) -> int:
        return len(self._order)


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


# ----------------------------------------------------------------------------------------------
# Batched augmentation (tensor ops on the whole batch)
# ----------------------------------------------------------------------------------------------

class BatchedAugment(torch.nn.Module):
    """Crop + horizontal flip of a uint8 N×3×H×W batch as tensor ops on its device.

    pad_crop: a reflect-padded random window as one gather (padding, crop and flip folded into
    per-sample row/column indices, no padded copy). random_resized_crop: torchvision's box sampling
    (10 tries, whole image as fallback) and one bilinear `grid_sample` over the batch that resizes
    each box as cv2.resize would (flip folded into the sampling grid). Randomness comes from (seed, step) only; the streams differ between
    CPU and CUDA. Under DDP give each rank its own seed so ranks do not share crops.
    Color jitter and policies exist only in the per-image backend.
    """

    def __init__(self, train_params: TrainParams, image_size: int, seed: int):
        super().__init__()
        if train_params.policy != "none" or train_params.color_jitter > 0:
            raise ValueError("train.aug_backend=batched does crop and flip only: set train.policy=none and "
                             "train.color_jitter=0, or use train.aug_backend=workers")
        self.crop = train_params.crop
        self.pad = train_params.pad
        self.scale = tuple(float(s) for s in train_params.rrc_scale)
        self.hflip = train_params.hflip
        self.image_size = image_size
        self.seed = seed

    def generator(self, step: int, device: torch.device) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, step]).generate_state(2, dtype=np.uint32)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)  # 62 bits, inside manual_seed's range
        return gen

    @torch.no_grad()
    def forward(self, batch: torch.Tensor, step: int) -> torch.Tensor:
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"BatchedAugment expects a uint8 N×3×H×W batch, got {batch.dtype} {tuple(batch.shape)}")
        gen = self.generator(step, batch.device)
        flip = torch.rand(batch.shape[0], generator=gen, device=batch.device) < self.hflip
        if self.crop == "pad_crop":
            return self._pad_crop(batch, flip, gen)
        return self._random_resized_crop(batch, flip, gen)

    def _pad_crop(self, batch: torch.Tensor, flip: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = batch.shape
        s, p, dev = self.image_size, self.pad, batch.device
        # Offsets into the padded (h + 2p) × (w + 2p) image; larger output than that is padded more.
        dy = torch.randint(0, max(h + 2 * p - s, 0) + 1, (n, 1), generator=gen, device=dev)
        dx = torch.randint(0, max(w + 2 * p - s, 0) + 1, (n, 1), generator=gen, device=dev)
        ar = torch.arange(s, device=dev)
        pad_y, pad_x = max(p, (s - h + 1) // 2), max(p, (s - w + 1) // 2)
        rows = _reflect101(dy + ar - pad_y, h)
        cols = _reflect101(dx + ar - pad_x, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        # Row/column indices into a flattened image, gathered for all channels at once.
        flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, s * s).expand(n, 3, s * s)
        return batch.reshape(n, 3, h * w).gather(2, flat).view(n, 3, s, s)

    def _random_resized_crop(self, batch: torch.Tensor, flip: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = batch.shape
        x0, y0, cw, ch = _sample_rrc_boxes(n, h, w, self.scale, RRC_RATIO, gen, batch.device)
        s = self.image_size
        centres = torch.arange(s, device=batch.device, dtype=torch.float32).add_(0.5)
        # Output pixel j samples the crop at x0 + (j + 0.5) * cw / S - 0.5 (cv2.resize's
        # INTER_LINEAR rule), clamped to the crop as if it had been cut out first.
        px = (x0[:, None] + centres * (cw / s)[:, None] - 0.5).clamp_(min=x0[:, None], max=(x0 + cw - 1)[:, None])
        py = (y0[:, None] + centres * (ch / s)[:, None] - 0.5).clamp_(min=y0[:, None], max=(y0 + ch - 1)[:, None])
        px = torch.where(flip[:, None], px.flip(1), px)
        grid = torch.empty(n, s, s, 2, device=batch.device)
        # grid_sample's normalized coordinates (align_corners=False): pixel p -> (2p + 1) / size - 1.
        grid[..., 0] = ((2 * px + 1) / w - 1)[:, None, :]
        grid[..., 1] = ((2 * py + 1) / h - 1)[:, :, None]
        out = F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)


def _reflect101(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map any index onto 0..n-1 by mirroring without repeating the edge (cv2 REFLECT_101)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.abs().remainder(period)
    return torch.where(i >= n, period - i, i)


def _sample_rrc_boxes(n: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
                      gen: torch.Generator, device: torch.device, tries: int = 10):
    """torchvision RandomResizedCrop.get_params for a whole batch: integer boxes (x0, y0, w, h) as floats."""
    area = torch.empty(n, tries, device=device).uniform_(scale[0], scale[1], generator=gen) * (h * w)
    log_r = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = log_r.exp()
    cw = (area * r).sqrt().round()
    ch = (area / r).sqrt().round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.float().argmax(dim=1, keepdim=True)  # first try that fits (0 if none)
    cw = cw.gather(1, first).squeeze(1)
    ch = ch.gather(1, first).squeeze(1)
    found = ok.any(dim=1)
    # Fallback as torchvision for images whose aspect lies inside `ratio`: the whole image.
    # (Prepared images are square, so the other fallback branches never apply.)
    cw = torch.where(found, cw, torch.full_like(cw, w))
    ch = torch.where(found, ch, torch.full_like(ch, h))
    u = torch.rand(2, n, generator=gen, device=device)
    x0 = (u[0] * (w - cw + 1)).floor().clamp_(max=w - cw)
    y0 = (u[1] * (h - ch + 1)).floor().clamp_(max=h - ch)
    return x0, y0, cw, ch
