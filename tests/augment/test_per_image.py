"""The workers backend's per-image augmentation (albumentations): crops come from the reflect-padded
image the device backend crops too, and the policies change images (the per-sample determinism of a
dataset item: loading/test_loading.py; the device backend: augment/test_device_augment.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tinyclf.augment.per_image import SampleSeeder, build_augment
from tinyclf.params import TrainParams

SIZE = 32


def tp_with(**kw) -> TrainParams:
    return dataclasses.replace(TrainParams(), **kw)


def windows_of(padded: np.ndarray, size: int):
    """Every size×size window of an H×W×C array."""
    h, w = padded.shape[:2]
    return [padded[y:y + size, x:x + size] for y in range(h - size + 1) for x in range(w - size + 1)]


def is_window(crop: np.ndarray, padded: np.ndarray) -> bool:
    return any(np.array_equal(crop, win) for win in windows_of(padded, crop.shape[0]))


def test_albumentations_pad_crop_is_a_window_of_the_reflect_padded_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    aug = build_augment(tp_with(crop="pad_crop", pad=4, hflip=0.0), SIZE)
    shifted, seeder = 0, SampleSeeder(aug)
    for i in range(12):
        seeder(0, 0, i)
        crop = aug(image=image)["image"]
        assert crop.shape == image.shape and is_window(crop, padded)
        shifted += not np.array_equal(crop, image)
    assert shifted >= 9


@pytest.mark.parametrize("policy", ["trivial_augment", "randaugment"])
def test_policies_build_and_change_images(policy):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    base = build_augment(tp_with(policy="none", hflip=0.0, rrc_scale=[1.0, 1.0]), SIZE)
    aug = build_augment(tp_with(policy=policy, hflip=0.0, rrc_scale=[1.0, 1.0]), SIZE)
    changed, seed_base, seed_aug = 0, SampleSeeder(base), SampleSeeder(aug)
    for i in range(30):
        seed_base(0, 0, i)
        seed_aug(0, 0, i)
        plain, out = base(image=image)["image"], aug(image=image)["image"]
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
        changed += not np.array_equal(out, plain)
    # trivial_augment includes the identity op (1 in 14); randaugment always applies two ops.
    assert changed >= 20
