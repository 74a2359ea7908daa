"""uint8 images -> the float tensor a model eats: scaled to 0-1 and normalized with the train split's
mean and std. The workers backend, evaluation and the serving model all go through it (the device
backend normalizes as it augments, by the same rule). `ModelInput` holds what a batch needs for
that (mean, std, memory format), so the three travel as one, and makes its per-channel constants
once per device: a tensor made from Python numbers on a GPU is a synchronous copy from pageable
host memory, which would stop the CPU from running ahead at every batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch


def to_model_input(batch: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
                   *, channels_last: bool) -> torch.Tensor:
    """uint8 N×3×H×W -> float32 (x/255 - mean) / std on the batch's device; mean/std on the 0-1 scale.

    For one batch; a loop over batches keeps one `ModelInput`, which makes its constants once."""
    return ModelInput(mean, std, channels_last=channels_last)(batch)


@dataclass(frozen=True)
class ModelInput:
    """How uint8 batches become one model's input: the train split's mean and std (0-1 scale) and
    whether the model runs channels_last. Calling it is `to_model_input` with these."""

    mean: Sequence[float] | torch.Tensor
    std: Sequence[float] | torch.Tensor
    channels_last: bool = False
    _affine: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def affine(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 / (255 std), mean / std) per channel, 1×3×1×1 float32 on `device`, made once per device."""
        if device not in self._affine:
            mean_t = torch.as_tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            std_t = torch.as_tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self._affine[device] = (1.0 / (255.0 * std_t), mean_t / std_t)
        return self._affine[device]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = batch.to(dtype=torch.float32, memory_format=fmt, copy=True)  # never normalize the caller's tensor in place
        scale, shift = self.affine(batch.device)
        # One pass each: x * (1 / (255 std)) - mean / std.
        return x.mul_(scale).sub_(shift)
