"""The workers backend's augmentation: an albumentations pipeline per image, in DataLoader workers.

`build_augment(train_params, image_size)` is the pipeline (HWC uint8 RGB in and out): crop
(pad_crop | random_resized_crop), horizontal flip, color jitter, then an optional policy
(TrivialAugment, RandAugment). `PerImageAugment` runs it with randomness that comes only from
`(seed, epoch, key)`, so an image gets the same crop whatever the worker count, the rank that
loads it, or whether the run was resumed. The device backend (`tinyclf.augment.device`) crops
the same padded images (`PAD_BORDER`, `RRC_RATIO`).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import struct
from typing import TYPE_CHECKING

import cv2
import numpy as np

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


class PerImageAugment:
    """An augment as `PreparedDataset` calls it: `(image, epoch, key) -> image`, its randomness from
    (seed, epoch, key) alone (a `SampleSeeder` reseeds the pipeline before each image)."""

    def __init__(self, augment: A.BaseCompose, seed: int):
        self.augment, self.seed = augment, seed
        self._seeder = SampleSeeder(augment)

    def __call__(self, image: np.ndarray, epoch: int, key: int) -> np.ndarray:
        self._seeder(self.seed, epoch, key)
        return self.augment(image=image)["image"]
