"""What a run trains with, built from the `train` params: the step plan, precision, optimizer,
scheduler, loss and mixup (the per-batch input path on the device is `tinyclf.augment.batch`).

- global batch `batch_size`, split evenly over ranks; `accum_steps` micro-batches per optimizer
  step; peak lr scaled once: lr * batch_size * accum_steps / 256.
- timm `create_optimizer_v2` (no weight decay on norms/biases) and `create_scheduler_v2`
  (stepped per optimizer step with `step_update`; `plateau` per epoch on val top-1).
- timm `Mixup`/CutMix with `SoftTargetCrossEntropy` (label smoothing inside the soft targets),
  otherwise cross-entropy with label smoothing. train/acc is measured against the dominant label
  of each (mixed) target, i.e. the image's own label unless mixing made another one heavier.
- `aug_backend: auto` is the device backend on CUDA and on a CPU alike (on a CPU the workers
  backend's processes compete with the model for the cores: docs/benchmarks.md, "A CPU run at the
  CPU's speed"), unless `policy` asks for an albumentations policy, which only the workers backend
  runs; `compile: auto` compiles on CUDA only.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tinyclf.errors import TinyclfError

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 runs natively from compute capability 8.0 (A100, A10, L4, H100) on; older cards (T4, V100)
# emulate it or have no bf16 convolutions, so `auto` takes fp16 with its GradScaler there.
NATIVE_BF16_CAPABILITY = (8, 0)


class TrainingError(TinyclfError):
    """A run that cannot start or go on for a reason the user can fix; one line."""


@dataclass(frozen=True)
class StepPlan:
    """How an epoch is cut into steps, the same on every rank."""

    per_rank: int  # images each process loads per micro-batch
    updates_per_epoch: int  # optimizer steps per epoch
    micro_per_epoch: int  # micro-batches per epoch: updates_per_epoch x accum_steps


def plan_steps(num_train: int, train_params, world: int) -> StepPlan:
    """The step plan for `num_train` images over `world` processes; TrainingError if impossible."""
    if train_params.batch_size % world:
        raise TrainingError(f"train.batch_size={train_params.batch_size} is not divisible by the {world} processes; "
                            f"use a multiple of {world}")
    per_rank = train_params.batch_size // world
    if train_params.mixup_active and per_rank % 2:
        raise TrainingError(f"mixup/cutmix needs an even batch per process, got {per_rank} "
                            f"(train.batch_size={train_params.batch_size} over {world} processes)")
    updates = num_train // (train_params.batch_size * train_params.accum_steps)
    if updates < 1:
        raise TrainingError(f"the train split has {num_train} images, fewer than one optimizer step of "
                            "train.batch_size x train.accum_steps = "
                            f"{train_params.batch_size * train_params.accum_steps}")
    return StepPlan(per_rank=per_rank, updates_per_epoch=updates, micro_per_epoch=updates * train_params.accum_steps)


def scaled_lr(train_params) -> float:
    """The linear scaling rule, applied once: lr is quoted for a global batch of 256."""
    return train_params.lr * train_params.batch_size * train_params.accum_steps / 256


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on a CUDA card with native bf16, fp16 (+ GradScaler) on an older one, fp32 on
    CPU; fp16 needs CUDA."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if _native_bf16(device) else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError("train.precision=fp16 needs a CUDA device (GradScaler); use fp32 or bf16 on CPU")
    return precision


def precision_note(precision: str, device: torch.device) -> str | None:
    """The run log's line when the card decided the precision: `auto` took fp16 on a card without
    native bf16, or bf16 was asked of such a card; None otherwise."""
    if device.type != "cuda" or _native_bf16(device) or precision not in ("auto", "bf16"):
        return None
    major, minor = torch.cuda.get_device_capability(device)
    card = f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    if precision == "auto":
        return f"train: precision auto -> fp16 with GradScaler: {card} has no native bf16 (it needs 8.0)"
    return (f"train: train.precision=bf16 on {card}: bf16 is emulated or unsupported below compute capability 8.0; "
            "auto (fp16 there) is faster")


def _native_bf16(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        # cuBLAS needs a fixed workspace for deterministic results (set before the first CUDA call).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # On CUDA some ops have no deterministic kernel (the backward of AdaptiveAvgPool2d, which
        # timm's models use; tiny_resnet50 pools with a mean instead): warn about them rather than
        # refuse to train. On the CPU every op used here is deterministic.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    seed = seed % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all CUDA devices too


def build_optimizer(model: nn.Module, train_params, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """timm's optimizer over `model` (no weight decay on norms and biases), or over the parameter
    groups of a fine-tuning run (`tinyclf.train.param_groups`), which carry their own decay and scale."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model if groups is None else groups, opt=train_params.opt, lr=scaled_lr(train_params),
                               weight_decay=train_params.weight_decay, momentum=train_params.momentum,
                               filter_bias_and_bn=True)


def build_scheduler(optimizer, train_params, updates_per_epoch: int):
    """(timm scheduler, total epochs incl. cooldown). Per-step updates except plateau (per epoch)."""
    from timm.scheduler import create_scheduler_v2

    per_epoch = train_params.sched == "plateau"
    return create_scheduler_v2(
        optimizer, sched=train_params.sched, num_epochs=train_params.epochs, decay_epochs=train_params.decay_epochs,
        decay_milestones=[train_params.decay_epochs * k for k in (1, 2, 3)], decay_rate=train_params.decay_rate,
        min_lr=train_params.min_lr, warmup_lr=train_params.warmup_lr, warmup_epochs=train_params.warmup_epochs,
        cooldown_epochs=train_params.cooldown_epochs, plateau_mode="max",
        step_on_epochs=per_epoch, updates_per_epoch=updates_per_epoch,
    )


def build_loss_and_mixup(train_params, num_classes: int):
    """(loss function, timm Mixup or None): soft-target loss with mixing, else label smoothing or plain CE."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if train_params.mixup_active:
        mixup = Mixup(mixup_alpha=train_params.mixup, cutmix_alpha=train_params.cutmix, prob=train_params.mixup_prob,
                      switch_prob=train_params.mixup_switch_prob, label_smoothing=train_params.label_smoothing,
                      num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if train_params.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=train_params.label_smoothing), None
    return nn.CrossEntropyLoss(), None


def resolve_aug_backend(train_params, device: torch.device) -> str:
    """train.aug_backend: auto -> device on any device, workers when an albumentations policy needs them.

    `device` does not decide: the device backend is the faster one on CUDA and on a CPU alike (on a
    CPU it needs no worker processes competing with the training threads for the cores)."""
    if train_params.aug_backend != "auto":
        return train_params.aug_backend
    return "device" if train_params.policy == "none" else "workers"


def resolve_compile(train_params, device: torch.device) -> bool:
    """train.compile: auto -> on for CUDA (where it pays for its compile time), off elsewhere."""
    if train_params.compile == "auto":
        return device.type == "cuda"
    return bool(train_params.compile)


