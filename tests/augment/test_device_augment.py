"""The device backend's augmentation: every sample's randomness its own, geometry as the per-image
backend's, and the same distributions of crops and flips as albumentations draws."""

from __future__ import annotations

import dataclasses

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from support.device_rounding import near_a_rounding

from tinyclf.augment.device import (LUMA, DeviceAugment, color_jitter, pad_crop, random_erasing, resized_crop,
                                    rrc_boxes, sample_keys, uniforms)
from tinyclf.augment.per_image import PAD_BORDER, RRC_RATIO, SampleSeeder
from tinyclf.params import TrainParams

SIZE = 32
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.15]


def tp_with(**kw) -> TrainParams:
    return dataclasses.replace(TrainParams(), **kw)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def batch():
    return torch.from_numpy(np.random.default_rng(3).integers(0, 256, (16, 3, SIZE, SIZE), dtype=np.uint8))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance: the largest gap between the empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


# ------------------------------------------------------------------------------ randomness
def test_a_samples_numbers_depend_on_seed_epoch_and_index_only():
    indices = torch.arange(1000)
    u = uniforms(sample_keys(7, 3, indices), 8)
    assert u.shape == (1000, 8) and u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()
    # The same sample in another batch, at another position: the same numbers.
    picked = torch.tensor([999, 5, 123])
    assert torch.equal(uniforms(sample_keys(7, 3, picked), 8), u[picked])
    # Another seed, epoch or index: other numbers.
    for other in (uniforms(sample_keys(8, 3, indices), 8), uniforms(sample_keys(7, 4, indices), 8)):
        assert (other != u).float().mean() > 0.99
    assert (u[1:] != u[:-1]).float().mean() > 0.99
    # Uniform and independent enough for augmentation: moments of U(0, 1), no correlation between draws.
    flat = u.flatten().double()
    assert abs(flat.mean() - 0.5) < 0.01 and abs(flat.var() - 1 / 12) < 0.003
    corr = np.corrcoef(u.numpy().T)
    assert np.abs(corr - np.eye(8)).max() < 0.1
    assert ks_statistic(flat.numpy(), np.random.default_rng(0).random(8000)) < 0.03


def test_the_sample_keys_stay_what_they_were():
    """Keys pinned from the version that hashed seed and epoch on the device: moving that hash to the
    host changed no augmentation, so a run resumed across the change continues the same stream."""
    indices = torch.tensor([0, 1, 2, 99999, 2**31 + 5])
    assert sample_keys(42, 0, indices).tolist() == [2946071039, 389576411, 2776630649, 694207944, 1478069545]
    assert sample_keys(7, 149, indices).tolist() == [1248380447, 2836607533, 1186773554, 3374345718, 131650078]


def test_augment_of_a_sample_does_not_depend_on_its_batch(batch):
    aug = DeviceAugment(tp_with(crop="random_resized_crop", color_jitter=0.4, random_erasing=0.5), SIZE, MEAN, STD,
                        seed=5, channels_last=True)
    indices = torch.arange(100, 116)
    out = aug(batch, indices, epoch=2)
    assert out.dtype == torch.float32 and out.shape == (16, 3, SIZE, SIZE)
    assert out.is_contiguous(memory_format=torch.channels_last)
    alone = aug(batch[5:6], indices[5:6], epoch=2)
    assert torch.equal(alone[0], out[5])
    assert not torch.equal(aug(batch, indices, epoch=3), out)  # a new epoch, new crops


# ------------------------------------------------------------------------------ geometry
def test_flip_flips_and_scale_one_is_the_identity(batch):
    n = len(batch)
    zeros, ones = torch.zeros(n), torch.ones(n, dtype=torch.bool)
    assert torch.equal(pad_crop(batch, SIZE, 0, zeros, zeros, ones), batch.flip(3))
    assert torch.equal(pad_crop(batch, SIZE, 0, zeros, zeros, ~ones), batch)
    boxes = rrc_boxes(SIZE, SIZE, (1.0, 1.0), torch.rand(n, 20), torch.rand(n), torch.rand(n))
    # At scale 1 every pixel centre lands on a pixel centre: the identity, or its mirror.
    assert torch.equal(resized_crop(batch, SIZE, *boxes, ~ones).round().to(torch.uint8), batch)
    assert torch.equal(resized_crop(batch, SIZE, *boxes, ones).round().to(torch.uint8), batch.flip(3))


def test_pad_crop_is_a_window_of_the_reflect_padded_image(batch):
    n, pad = len(batch), 4
    u = uniforms(sample_keys(0, 0, torch.arange(n)), 2)
    out = pad_crop(batch, SIZE, pad, u[:, 0], u[:, 1], torch.zeros(n, dtype=torch.bool))
    for i in range(n):
        padded = cv2.copyMakeBorder(batch[i].permute(1, 2, 0).numpy(), pad, pad, pad, pad, PAD_BORDER)
        dy, dx = int(u[i, 1] * (2 * pad + 1)), int(u[i, 0] * (2 * pad + 1))
        assert np.array_equal(out[i].permute(1, 2, 0).numpy(), padded[dy:dy + SIZE, dx:dx + SIZE])


def test_random_resized_crop_resizes_its_boxes_as_cv2_does(batch):
    n = len(batch)
    u = uniforms(sample_keys(1, 0, torch.arange(n)), 23)
    flip = u[:, 22] < 0.5
    x0, y0, cw, ch = rrc_boxes(SIZE, SIZE, (0.2, 0.6), u[:, :20], u[:, 20], u[:, 21])
    out = resized_crop(batch, SIZE, x0, y0, cw, ch, flip).round().clamp(0, 255).to(torch.uint8)
    assert 0 < flip.sum() < n
    for i in range(n):
        x, y, w, h = (int(v[i]) for v in (x0, y0, cw, ch))
        assert 0.15 * SIZE * SIZE < w * h < 0.65 * SIZE * SIZE
        ref = cv2.resize(np.ascontiguousarray(batch[i].permute(1, 2, 0).numpy()[y:y + h, x:x + w]), (SIZE, SIZE),
                         interpolation=cv2.INTER_LINEAR)
        ref = ref[:, ::-1] if flip[i] else ref
        assert np.abs(out[i].permute(1, 2, 0).numpy().astype(int) - ref.astype(int)).max() <= 2


# ------------------------------------------------------------------------------ same statistics as the workers backend
def albumentations_draws(ops: list, n: int) -> list[list]:
    """The parameters albumentations applied to n samples, seeded per sample as the workers backend does."""
    aug = A.Compose(ops, seed=0, save_applied_params=True)
    seeder = SampleSeeder(aug)
    image = np.zeros((64, 64, 3), np.uint8)
    draws = []
    for index in range(n):
        seeder(11, 0, index)
        draws.append(aug(image=image)["applied_transforms"])
    return draws


def test_random_resized_crop_and_flip_statistics_match_albumentations():
    n, scale = 3000, (0.35, 1.0)
    ops = [A.RandomResizedCrop(size=(64, 64), scale=scale, ratio=RRC_RATIO, p=1.0), A.HorizontalFlip(p=0.5)]
    theirs_area, theirs_ratio, theirs_flips = [], [], 0
    for applied in albumentations_draws(ops, n):
        x_min, y_min, x_max, y_max = dict(applied)["RandomResizedCrop"]["crop_coords"]
        theirs_area.append((x_max - x_min) * (y_max - y_min) / 64**2)
        theirs_ratio.append((x_max - x_min) / (y_max - y_min))
        theirs_flips += "HorizontalFlip" in dict(applied)
    u = uniforms(sample_keys(11, 0, torch.arange(n)), 23)
    _, _, cw, ch = rrc_boxes(64, 64, scale, u[:, :20], u[:, 20], u[:, 21])
    ours_area, ours_ratio = (cw * ch / 64**2).numpy(), (cw / ch).numpy()
    # Two samples of 3000 from one distribution: KS distance below 0.045 at 99% (1.63 * sqrt(2 / 3000)).
    assert ks_statistic(ours_area, np.array(theirs_area)) < 0.045
    assert ks_statistic(ours_ratio, np.array(theirs_ratio)) < 0.045
    ours_flips = int((u[:, 22] < 0.5).sum())
    assert abs(ours_flips - theirs_flips) < 4 * np.sqrt(n * 0.25) * np.sqrt(2)  # both Binomial(n, 1/2)


def test_pad_crop_offsets_match_albumentations():
    n, pad = 3000, 4
    ops = [A.Pad(padding=pad, border_mode=PAD_BORDER, p=1.0),
           A.RandomCrop(height=64, width=64, pad_if_needed=True, border_mode=PAD_BORDER, p=1.0)]
    theirs = np.array([dict(a)["RandomCrop"]["crop_coords"][:2] for a in albumentations_draws(ops, n)])
    u = uniforms(sample_keys(11, 0, torch.arange(n)), 2)
    ours = (u * (2 * pad + 1)).long().numpy()
    for axis in range(2):
        their_counts = np.bincount(theirs[:, axis], minlength=2 * pad + 1)
        our_counts = np.bincount(ours[:, axis], minlength=2 * pad + 1)
        assert len(their_counts) == len(our_counts) == 2 * pad + 1  # offsets 0 … 2 * pad on both sides
        # Each offset ~ n / 9 = 333 times; two binomials differ by far less than 5 standard deviations.
        assert np.abs(their_counts - our_counts).max() < 5 * np.sqrt(2 * n / 9)


# ------------------------------------------------------------------------------ colour and erasing
def test_color_jitter_factors_stay_in_range_and_vary():
    x = torch.full((400, 3, 4, 4), 0.5)
    x[:, 0] = 0.3  # some colour, so saturation has something to change
    u = uniforms(sample_keys(0, 0, torch.arange(400)), 3)
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    out = color_jitter(x.clone(), 0.4, u, luma)
    assert (out >= 0).all() and (out <= 1).all()
    mean_level = out.mean(dim=(1, 2, 3))
    assert mean_level.std() > 0.05  # brightness varies from sample to sample
    assert torch.equal(color_jitter(x.clone(), 0.4, torch.full((400, 3), 0.5), luma), x)  # factor 1: unchanged


def test_random_erasing_erases_the_asked_share_with_a_rectangle_of_noise():
    n = 2000
    x = torch.zeros(n, 3, SIZE, SIZE)
    keys = sample_keys(3, 0, torch.arange(n))
    out = random_erasing(x, 0.25, uniforms(keys, 41), keys)
    erased = (out != 0).any(dim=1)  # N × H × W
    share = erased.flatten(1).any(dim=1).float().mean().item()
    assert abs(share - 0.25) < 0.04
    for i in torch.nonzero(erased.flatten(1).any(dim=1)).flatten()[:50].tolist():
        rows, cols = torch.nonzero(erased[i], as_tuple=True)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w  # one filled rectangle
        assert 0.015 * SIZE * SIZE <= h * w <= SIZE * SIZE / 3 + 2 * SIZE
    noise = out[erased[:, None].expand_as(out)]
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05  # N(0, 1)


def test_policies_are_for_the_per_image_backend():
    with pytest.raises(ValueError, match="train.policy needs train.aug_backend: workers"):
        DeviceAugment(tp_with(policy="randaugment"), SIZE, MEAN, STD, seed=0, channels_last=False)


# ------------------------------------------------------------------------------ across devices
def test_a_device_whose_exp_differs_slightly_moves_only_the_samples_near_a_rounding(monkeypatch):
    """tests/train/test_cuda.py compares CUDA with the CPU tolerating exactly the samples
    support/device_rounding.py names. Emulated here: a device whose exp differs slightly changes
    those samples and no others, and one whose exp differs by more is caught."""
    n = 2048
    images = torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    indices = torch.arange(n)
    aug = DeviceAugment(tp_with(crop="random_resized_crop", color_jitter=0.3, random_erasing=0.25), SIZE, MEAN, STD,
                        seed=3, channels_last=True)
    here = aug(images, indices, epoch=2)
    near = near_a_rounding(aug, SIZE, SIZE, indices, epoch=2)
    exp = torch.Tensor.exp

    def changed_on_a_device_with_exp_off_by(relative: float) -> torch.Tensor:
        monkeypatch.setattr(torch.Tensor, "exp", lambda t: exp(t) * (1 + relative))
        try:
            there = aug(images, indices, epoch=2)
        finally:
            monkeypatch.setattr(torch.Tensor, "exp", exp)
        return (here - there).abs().flatten(1).amax(dim=1) >= 1e-3

    # 1e-4: hundreds of ulps, more than CPU and CUDA kernels differ by, and enough to move a few sides here.
    slightly = changed_on_a_device_with_exp_off_by(1e-4)
    assert slightly.any() and not (slightly & ~near).any()
    assert near.float().mean() < 0.1  # the tolerance leaves most samples compared exactly
    assert (changed_on_a_device_with_exp_off_by(1e-2) & ~near).any()
