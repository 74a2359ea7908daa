"""How much GPU memory training a model takes besides the data: what the device data backend keeps
free when it decides whether a prepared split goes on the GPU (`loading.device_data.place_splits`).

reserve = model state + saved activations + ALLOWANCE, where
- model state is parameters × BYTES_PER_PARAMETER (16: the fp32 weights, their gradients, SGD's
  momentum buffer and the EMA copy, 4 bytes each);
- saved activations are the bytes of the tensors autograd keeps for the backward pass of one
  training-mode forward of a per-rank batch, measured on the meta device (shapes only: no memory, no
  arithmetic) through `saved_tensors_hooks`, each storage once, the parameters left out. Measured in
  fp32: under bf16/fp16 autocast (the default on CUDA) about half of that is saved;
- ALLOWANCE (2 GiB) is what free memory must also hold that neither term counts: the cuBLAS and
  cuDNN handles, kernels and workspaces loaded by the first step (cuDNN's benchmark mode tries
  algorithms with large workspaces), NCCL's buffers and DDP's gradient buckets under
  torchrun, the backward's short-lived activation gradients (a few of the largest activations),
  the augmentation's per-batch temporaries and the caching allocator's rounding. The CUDA context
  itself is not in it: it exists before free memory is read, so free memory is already net of it.

A model whose forward cannot run on the meta device (a data-dependent forward) is charged
FALLBACK_ACTIVATION_FACTOR × the fp32 input batch for its activations instead: above what every
architecture measured saves (docs/benchmarks.md, "Data that does not fit on the GPU"), so such a
model keeps its data on the host unless the GPU is plainly large enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.graph import saved_tensors_hooks

BYTES_PER_PARAMETER = 16
ALLOWANCE = 2 * 2**30
FALLBACK_ACTIVATION_FACTOR = 1024


@dataclass(frozen=True)
class TrainingMemory:
    """The GPU memory one rank's training needs besides the data, in bytes, and how it was found."""

    state: int  # parameters × BYTES_PER_PARAMETER
    activations: int  # saved for backward at the per-rank batch
    measured: bool  # False: the forward could not run on the meta device, `activations` is the fallback
    allowance: int = ALLOWANCE

    @property
    def total(self) -> int:
        return self.state + self.activations + self.allowance

    def describe(self) -> str:
        how = "" if self.measured else ", activations not measurable: a conservative fallback"
        return (f"{self.total / 1e9:.1f} GB for training (model state {self.state / 1e9:.1f}, activations "
                f"{self.activations / 1e9:.1f}{how}, allowance {self.allowance / 1e9:.1f})")


def training_memory(model_name: str, num_classes: int, image_size: int, per_rank: int) -> TrainingMemory:
    """The reserve of the module docstring for `model_name` (ours or timm's) at `per_rank` images of
    `image_size`² per step. Builds the model on the meta device: no weights, no arithmetic."""
    from tinyclf.model.architectures import ModelError, create_model

    try:
        with torch.device("meta"):
            model = create_model(model_name, num_classes)
    except ModelError:
        raise
    except Exception:  # noqa: BLE001 - a constructor that needs real values: built on the CPU for its
        # parameter count; its forward on the meta batch then fails too, and memory_of charges the fallback
        model = create_model(model_name, num_classes)
    return memory_of(model, torch.empty(per_rank, 3, image_size, image_size, device="meta"))


def memory_of(model: torch.nn.Module, batch: torch.Tensor) -> TrainingMemory:
    """`training_memory` of a built `model` (on the meta device, or anywhere) for `batch` (N×C×H×W)."""
    state = sum(p.numel() for p in model.parameters()) * BYTES_PER_PARAMETER
    try:
        activations = saved_activation_bytes(model.train(), batch)
    except Exception:  # noqa: BLE001 - a forward that needs real values: charge the stated fallback
        fallback = FALLBACK_ACTIVATION_FACTOR * batch.numel() * 4  # × the batch as fp32 model input
        return TrainingMemory(state, fallback, measured=False)
    return TrainingMemory(state, activations, measured=True)


def saved_activation_bytes(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in `model(batch)`, each storage counted once
    (an in-place ReLU's output, saved again as the next layer's input or a view of it), the model's own
    parameters left out (they are the model state)."""
    # A storage's identity (`_cdata`, its address in torch) tells shared saves apart where meta
    # tensors have no data pointer to compare.
    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    with torch.enable_grad(), saved_tensors_hooks(pack, lambda tensor: tensor):
        model(batch)
    return sum(saved.values())
