"""The per-batch input path on the training device: a loaded batch -> (model input, loss target,
hard label for accuracy).

For the workers backend: normalization of the augmented uint8 batch, then random erasing (timm's,
pixel mode, on the normalized batch); the device backend (`tinyclf.augment.device`) has done both
per sample already. Then timm's Mixup/CutMix for either, whose soft targets carry the label
smoothing; accuracy is measured against the dominant label of each mixed target.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tinyclf.loading.normalize import ModelInput


class BatchPreparer:
    """The per-batch input path on the device: a loaded batch -> (model input, loss target, hard label
    for accuracy). For the workers backend: normalization of the augmented uint8 batch, then random
    erasing (timm); the device backend has done both already. Then mixup/cutmix for either."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, channels_last: bool, normalize: bool = True,
                 erasing=None, mixup=None):
        self.to_input = ModelInput(mean, std, channels_last=channels_last) if normalize else None
        self.erasing, self.mixup = erasing, mixup

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        x = self.to_input(images) if self.to_input is not None else images
        if self.erasing is not None:
            x = self.erasing(x)
        if self.mixup is not None:
            x, soft = self.mixup(x, labels)
            return x, soft, soft.argmax(dim=1)
        return x, labels, labels


def build_batch_preparer(train_params, backend: str, mean, std, mixup, device: torch.device) -> BatchPreparer:
    if backend == "device":  # DeviceAugment normalized and erased each sample already
        return BatchPreparer(mean, std, channels_last=train_params.channels_last, normalize=False, mixup=mixup)
    from timm.data.random_erasing import RandomErasing

    erasing = (RandomErasing(probability=train_params.random_erasing, mode="pixel", device=device.type)
               if train_params.random_erasing > 0 else None)
    return BatchPreparer(mean, std, channels_last=train_params.channels_last, erasing=erasing, mixup=mixup)
