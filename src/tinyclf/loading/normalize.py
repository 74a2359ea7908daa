"""uint8 images -> the float tensor a model eats: scaled to 0-1 and normalized with the train split's
mean and std. The workers backend, evaluation and the serving model all go through it (the device
backend normalizes as it augments, by the same rule). `ModelInput` holds what a batch needs for
that (mean, std, memory format), so the three travel as one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


def to_model_input(batch: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
                   *, channels_last: bool) -> torch.Tensor:
    """uint8 N×3×H×W -> float32 (x/255 - mean) / std on the batch's device; mean/std on the 0-1 scale."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = batch.to(dtype=torch.float32, memory_format=fmt, copy=True)  # never normalize the caller's tensor in place
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    # One pass each: x * (1 / (255 std)) - mean / std.
    return x.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)


@dataclass(frozen=True)
class ModelInput:
    """How uint8 batches become one model's input: the train split's mean and std (0-1 scale) and
    whether the model runs channels_last. Calling it is `to_model_input` with these."""

    mean: Sequence[float] | torch.Tensor
    std: Sequence[float] | torch.Tensor
    channels_last: bool = False

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return to_model_input(batch, self.mean, self.std, channels_last=self.channels_last)
