"""Augmentation of whole batches as tensor ops on their device, every sample's randomness its own.

The `device` backend's counterpart of the per-image albumentations pipeline (`augment.per_image.build_augment`),
with the same options except the policies: pad_crop or random_resized_crop, horizontal flip,
color jitter, then (on the normalized batch) random erasing. Mixup/CutMix follow in
`augment.batch.BatchPreparer`, as for the other backend.

Randomness: each sample's random numbers are a counter-based hash of (seed, epoch, index, draw),
computed in integer arithmetic (`sample_keys`, `uniforms`): seed and epoch on the host as Python
integers, the indices on the device. So an image gets the same crop whatever the batch it lands
in, the number of processes, or where a run was resumed, and the same numbers on CPU and CUDA;
nothing is drawn from a global RNG and nothing is read back to the host.

No tensor is made from Python numbers per batch: on a GPU that is a synchronous copy from
pageable host memory, which stops the CPU from running ahead. The constants (normalization,
luma weights) are built once per device (`DeviceAugment.constants`).

Geometry follows the per-image pipeline: pad_crop is a reflect-101 padded random window (one
gather: padding, crop and flip folded into per-sample row and column indices); random_resized_crop
samples torchvision's boxes (10 tries, the whole image as fallback) and resizes each with one
bilinear `grid_sample` the way cv2.resize's INTER_LINEAR does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from tinyclf.augment.per_image import RRC_RATIO

RRC_TRIES = 10
# timm RandomErasing's defaults: erased area 2%-1/3 of the image, aspect ratio 0.3-3.3, 10 tries.
ERASE_AREA = (0.02, 1 / 3)
ERASE_LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))
ERASE_TRIES = 10
# Luma weights (ITU-R BT.601), as OpenCV's and torchvision's grayscale.
LUMA = (0.299, 0.587, 0.114)

_MASK32 = 0xFFFFFFFF


# ------------------------------------------------------------------------------ per-sample randomness
def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32) without int64 overflow (16-bit halves)."""
    low, high = x & 0xFFFF, x >> 16
    return (low * c + (((high * c) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (Wellons' lowbias32): nearby inputs give unrelated outputs."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash32_host(x: int) -> int:
    """`_hash32` of one Python integer in [0, 2^32), on the host (the same bits)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def sample_keys(seed: int, epoch: int, indices: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per sample from (seed, epoch, dataset index), int64 on the indices' device.

    Seed and epoch are mixed on the host: a Python integer joins the device's arithmetic as a
    kernel argument, where a tensor made of it would be a copy to the device every batch."""
    base = _hash32_host(_hash32_host((seed & _MASK32) ^ 0x9E3779B9) ^ (epoch & _MASK32))
    return _hash32((indices.to(torch.int64) & _MASK32) ^ base)


def uniforms(keys: torch.Tensor, count: int, offset: int = 0) -> torch.Tensor:
    """`count` uniforms in [0, 1) per key (N × count, float32), draws `offset` … `offset + count - 1`.

    24 bits each, so every value is exact in float32 and below 1.
    """
    draws = torch.arange(offset, offset + count, dtype=torch.int64, device=keys.device)
    bits = _hash32((keys[:, None] + _mul32(draws + 1, 0x9E3779B9)[None, :]) & _MASK32)
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))


# Draw numbers per sample, fixed so that turning one augmentation on or off does not change the others.
_FLIP, _CROP_X, _CROP_Y, _RRC = 0, 1, 2, 3  # _RRC: 2 * RRC_TRIES draws
_JITTER = _RRC + 2 * RRC_TRIES  # 3 draws
_ERASE = _JITTER + 3  # 1 + 4 * ERASE_TRIES draws
_NOISE_DOMAIN = 1 << 20  # erasing noise is keyed by pixel, in its own range of draws


# ------------------------------------------------------------------------------ the augment
@dataclass(frozen=True)
class AugmentConstants:
    """Per-channel constants on one device, shaped 1×3×1×1 (float32)."""

    mean: torch.Tensor
    std: torch.Tensor
    luma: torch.Tensor


class DeviceAugment:
    """A uint8 N×3×H×W batch of dataset images -> the augmented, normalized model input (float32).

    `__call__(images, indices, epoch)`: `indices` are the images' dataset indices (the sample keys).
    """

    def __init__(self, train_params, image_size: int, mean: Sequence[float], std: Sequence[float], *, seed: int,
                 channels_last: bool):
        if train_params.policy != "none":
            raise ValueError("train.policy needs train.aug_backend: workers (the policies are albumentations, "
                             "per image); the device backend does crop, flip, color jitter and erasing")
        self.crop, self.pad = train_params.crop, train_params.pad
        self.scale = tuple(float(s) for s in train_params.rrc_scale)
        self.hflip, self.jitter = train_params.hflip, train_params.color_jitter
        self.erasing = train_params.random_erasing
        self.size, self.seed, self.channels_last = image_size, seed, channels_last
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self._constants: dict[torch.device, AugmentConstants] = {}

    def constants(self, device: torch.device) -> AugmentConstants:
        """The per-channel constants on `device`, made once (a copy to a GPU per batch would wait for it)."""
        if device not in self._constants:
            def channels(values):
                return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self._constants[device] = AugmentConstants(channels(self.mean), channels(self.std), channels(LUMA))
        return self._constants[device]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"DeviceAugment expects a uint8 N×3×H×W batch, got {images.dtype} {tuple(images.shape)}")
        keys = sample_keys(self.seed, epoch, indices)
        u = uniforms(keys, _ERASE + 1 + 4 * ERASE_TRIES)
        flip = u[:, _FLIP] < self.hflip
        if self.crop == "pad_crop":
            x = pad_crop(images, self.size, self.pad, u[:, _CROP_X], u[:, _CROP_Y], flip).float()
        else:
            x = resized_crop(images, self.size, *rrc_boxes(images.shape[2], images.shape[3], self.scale,
                                                            u[:, _RRC:_JITTER], u[:, _CROP_X], u[:, _CROP_Y]), flip)
        x = x.mul_(1.0 / 255)
        constants = self.constants(x.device)
        if self.jitter > 0:
            x = color_jitter(x, self.jitter, u[:, _JITTER:_ERASE], constants.luma)
        x = normalize(x, constants.mean, constants.std)
        if self.erasing > 0:
            x = random_erasing(x, self.erasing, u[:, _ERASE:], keys)
        # The memory format the model runs in (channels_last: NHWC, faster convolutions on GPUs).
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel, in place, for x on the 0-1 scale (mean, std: 1×3×1×1 on x's device)."""
    return x.sub_(mean).div_(std)


# ------------------------------------------------------------------------------ geometry
def pad_crop(images: torch.Tensor, size: int, pad: int, ux: torch.Tensor, uy: torch.Tensor,
             flip: torch.Tensor) -> torch.Tensor:
    """A `size`² window of each reflect-101 padded image at offsets from `ux`, `uy`, mirrored where `flip`.

    One gather: padding, crop and flip are folded into per-sample row and column indices.
    """
    n, _, h, w = images.shape
    dev = images.device
    pad_y, pad_x = max(pad, (size - h + 1) // 2), max(pad, (size - w + 1) // 2)  # a larger output is padded more
    dy = (uy * (h + 2 * pad_y - size + 1)).long().clamp_(max=h + 2 * pad_y - size)[:, None]
    dx = (ux * (w + 2 * pad_x - size + 1)).long().clamp_(max=w + 2 * pad_x - size)[:, None]
    ar = torch.arange(size, device=dev)
    rows = reflect101(dy + ar - pad_y, h)
    cols = reflect101(dx + ar - pad_x, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, size * size).expand(n, 3, size * size)
    return images.reshape(n, 3, h * w).gather(2, flat).view(n, 3, size, size)


def reflect101(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map any index onto 0..n-1 by mirroring without repeating the edge (cv2 REFLECT_101)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.abs().remainder(period)
    return torch.where(i >= n, period - i, i)


def rrc_boxes(h: int, w: int, scale: tuple[float, float], u_tries: torch.Tensor, ux: torch.Tensor,
              uy: torch.Tensor, ratio: tuple[float, float] = RRC_RATIO):
    """torchvision RandomResizedCrop.get_params for a batch from uniforms: boxes (x0, y0, w, h) as floats.

    `u_tries` holds 2 uniforms per try (area, log aspect ratio); the first try that fits wins, the
    whole image if none does (as torchvision, for images whose aspect lies inside `ratio`).
    """
    cw, ch = (side.round() for side in rrc_sides(h, w, scale, u_tries, ratio))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.float().argmax(dim=1, keepdim=True)  # first try that fits (0 if none)
    found = ok.any(dim=1)
    cw = torch.where(found, cw.gather(1, first).squeeze(1), torch.full_like(cw[:, 0], w))
    ch = torch.where(found, ch.gather(1, first).squeeze(1), torch.full_like(ch[:, 0], h))
    x0 = (ux * (w - cw + 1)).floor().clamp_(max=w - cw)
    y0 = (uy * (h - ch + 1)).floor().clamp_(max=h - ch)
    return x0, y0, cw, ch


def rrc_sides(h: int, w: int, scale: tuple[float, float], u_tries: torch.Tensor,
              ratio: tuple[float, float] = RRC_RATIO) -> tuple[torch.Tensor, torch.Tensor]:
    """Each try's box width and height before rounding (N × tries each): sqrt(area · r), sqrt(area / r).

    exp and sqrt may differ by an ulp between devices, so a side this close to x.5 can round to
    another pixel count on another device (tests/support/device_rounding.py finds such samples)."""
    tries = u_tries.shape[1] // 2
    area = (scale[0] + (scale[1] - scale[0]) * u_tries[:, :tries]) * (h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    r = (log_lo + (log_hi - log_lo) * u_tries[:, tries:]).exp()
    return (area * r).sqrt(), (area / r).sqrt()


def resized_crop(images: torch.Tensor, size: int, x0: torch.Tensor, y0: torch.Tensor, cw: torch.Tensor,
                 ch: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each box resized to `size`² with one bilinear grid_sample (float, 0-255), mirrored where `flip`."""
    n, _, h, w = images.shape
    centres = torch.arange(size, device=images.device, dtype=torch.float32).add_(0.5)
    # Output pixel j samples the crop at x0 + (j + 0.5) * cw / S - 0.5 (cv2.resize's INTER_LINEAR
    # rule), clamped to the crop as if it had been cut out first.
    px = (x0[:, None] + centres * (cw / size)[:, None] - 0.5).clamp_(min=x0[:, None], max=(x0 + cw - 1)[:, None])
    py = (y0[:, None] + centres * (ch / size)[:, None] - 0.5).clamp_(min=y0[:, None], max=(y0 + ch - 1)[:, None])
    px = torch.where(flip[:, None], px.flip(1), px)
    grid = torch.empty(n, size, size, 2, device=images.device)
    # grid_sample's normalized coordinates (align_corners=False): pixel p -> (2p + 1) / size - 1.
    grid[..., 0] = ((2 * px + 1) / w - 1)[:, None, :]
    grid[..., 1] = ((2 * py + 1) / h - 1)[:, :, None]
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


# ------------------------------------------------------------------------------ colour and erasing
def color_jitter(x: torch.Tensor, strength: float, u: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, then saturation, each by a factor uniform in [1 - s, 1 + s] (0-1 images).

    The same factors as albumentations' ColorJitter(s, s, s, hue=0) of the per-image backend, in a
    fixed order where it picks a random one. `luma`: the LUMA weights, 1×3×1×1 on x's device.
    """
    lo, hi = max(0.0, 1 - strength), 1 + strength
    factors = (lo + (hi - lo) * u).view(-1, 3, 1, 1, 1)  # (N, 3 kinds, 1, 1, 1)
    x = (x * factors[:, 0]).clamp_(0, 1)
    gray_mean = (x * luma).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    x = ((x - gray_mean) * factors[:, 1] + gray_mean).clamp_(0, 1)
    gray = (x * luma).sum(dim=1, keepdim=True)
    return ((x - gray) * factors[:, 2] + gray).clamp_(0, 1)


def random_erasing(x: torch.Tensor, probability: float, u: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """timm's RandomErasing (pixel mode) for a normalized batch: with `probability`, one rectangle of
    2%-1/3 of the image, aspect 0.3-3.3 (first of 10 tries that fits), filled with N(0, 1) noise."""
    n, c, h, w = x.shape
    eh, ew = (side.round() for side in erase_sides(h, w, u))
    fits = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
    first = fits.float().argmax(dim=1, keepdim=True)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    top = (u.gather(1, 1 + 2 * ERASE_TRIES + first).squeeze(1) * (h - eh + 1)).floor()
    left = (u.gather(1, 1 + 3 * ERASE_TRIES + first).squeeze(1) * (w - ew + 1)).floor()
    erase = (u[:, 0] < probability) & fits.any(dim=1)
    rows = torch.arange(h, device=x.device, dtype=x.dtype)
    cols = torch.arange(w, device=x.device, dtype=x.dtype)
    inside = (((rows[None, :] >= top[:, None]) & (rows[None, :] < (top + eh)[:, None]))[:, :, None]
              & ((cols[None, :] >= left[:, None]) & (cols[None, :] < (left + ew)[:, None]))[:, None, :])
    mask = (inside & erase[:, None, None])[:, None]  # N, 1, H, W
    return torch.where(mask, _normal_noise(keys, (c, h, w)).to(x.dtype), x)


def erase_sides(h: int, w: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each try's erased height and width before rounding (N × ERASE_TRIES each), from the erasing
    uniforms `u` (as `random_erasing` takes them); like `rrc_sides`, they round on the device."""
    area = h * w * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u[:, 1:1 + ERASE_TRIES])
    aspect = (ERASE_LOG_RATIO[0] + (ERASE_LOG_RATIO[1] - ERASE_LOG_RATIO[0])
              * u[:, 1 + ERASE_TRIES:1 + 2 * ERASE_TRIES]).exp()
    return (area * aspect).sqrt(), (area / aspect).sqrt()


def _normal_noise(keys: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """N(0, 1) noise per sample and pixel, keyed like every other draw (Box-Muller on two uniforms)."""
    count = math.prod(shape)
    u = uniforms(keys, 2 * count, offset=_NOISE_DOMAIN)
    u1, u2 = u[:, :count].clamp_(min=1e-7), u[:, count:]
    z = (-2 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)
    return z.view(-1, *shape)
