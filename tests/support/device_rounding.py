"""Which samples of a device-augmented batch may legitimately differ between two devices.

The device augmentation's integer draws are identical on every device, and its geometry is too,
except where a box side is computed with exp and sqrt (`augment.device.rrc_sides`, `erase_sides`)
and then rounded to whole pixels: exp may differ by an ulp between CPU and CUDA kernels, so a side
whose value lies within a hair of x.5 can round to one pixel more or less there. Such a sample's
crop or erased rectangle moves by a pixel, and all of its values change. `near_a_rounding` names
those samples (any try's side within `margin` pixels of a rounding boundary, computed on the CPU),
so a comparison between devices tolerates exactly them and nothing else.
"""

from __future__ import annotations

import torch

from tinyclf.augment.device import (_ERASE, _JITTER, _RRC, ERASE_TRIES, DeviceAugment, erase_sides, rrc_sides,
                                    sample_keys, uniforms)

MARGIN = 1e-3  # pixels: far above an ulp of a side (about 2e-6 for 30 pixels), far below one pixel


def near_a_rounding(aug: DeviceAugment, height: int, width: int, indices: torch.Tensor, epoch: int,
                    margin: float = MARGIN) -> torch.Tensor:
    """Bool per sample: one of its box sides lies within `margin` of x.5 (on the CPU's arithmetic)."""
    u = uniforms(sample_keys(aug.seed, epoch, indices.cpu()), _ERASE + 1 + 4 * ERASE_TRIES)
    sides = []
    if aug.crop == "random_resized_crop":
        sides += rrc_sides(height, width, aug.scale, u[:, _RRC:_JITTER])
    if aug.erasing > 0:
        sides += erase_sides(aug.size, aug.size, u[:, _ERASE:])
    near = torch.zeros(len(indices), dtype=torch.bool)
    for side in sides:
        near |= ((side - side.floor()) - 0.5).abs().lt(margin).any(dim=1)
    return near
