"""One training epoch and one evaluation pass: explicit objects in, a metrics dict out.

Rank-agnostic: the same code runs in one process or in every DDP rank. Sums (loss, correct,
count) are kept per rank and reduced once per epoch, so the numbers are exact whatever the world
size. `train_one_epoch` advances a `Progress` in place at every optimizer step, which is what a
step checkpoint or an interrupt saves and what a resumed run continues from.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from tinyclf import distributed
from tinyclf.distributed import DistInfo
from tinyclf.errors import TinyclfError


class NonFiniteLossError(TinyclfError, RuntimeError):
    """The training loss became NaN or infinite; the message names the optimizer step."""


@dataclass
class Progress:
    """Where training stands, at an optimizer-step boundary (what a checkpoint records).

    `update` counts optimizer steps since the start of the run; `micro_in_epoch` the micro-batches
    of the current epoch already consumed; the sums are this rank's, for the current epoch.
    """

    update: int = 0
    micro_in_epoch: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    seconds: float = 0.0  # training time spent in this epoch (across interruptions)

    def sums(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count, "seconds": self.seconds}


@dataclass
class StepRecipe:
    """The per-step machinery of a run, built once by the training wiring."""

    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    scheduler: object | None = None  # timm scheduler: step_update(num_updates) after each optimizer step
    ema: nn.Module | None = None  # timm ModelEmaV3: update(model, step=num_updates)
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    autocast_dtype: torch.dtype | None = None  # None: full fp32
    accum_steps: int = 1
    clip_grad: float = 0.0
    # Turns a loaded uint8 batch into (model input, loss target, hard label for accuracy); runs on
    # the device and receives the run-wide micro-batch index (seeds batched augmentation).
    prepare: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    params: list = field(default_factory=list)  # parameters to clip


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    recipe: StepRecipe,
    progress: Progress,
    *,
    micro_batches: int,
    device: torch.device,
    info: DistInfo,
    raw_model: nn.Module | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    after_update: Callable[[Progress], None] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> dict:
    """Train until `progress.micro_in_epoch == micro_batches` (or a stop is agreed); return metrics.

    `model` is what runs forward (DDP- and/or compile-wrapped); `raw_model` the plain module the EMA
    follows (defaults to `model`). `loader` yields (uint8 images, labels) starting at the first
    micro-batch not yet consumed. After every optimizer step the ranks agree (one tiny all_reduce)
    on two things: whether the loss was finite (NonFiniteLossError before the weights change) and
    whether any rank asked to stop (`should_stop`, e.g. SIGTERM); then `after_update(progress)` runs
    (step checkpoints). Returns {"loss", "acc", "images", "seconds", "images_per_s", "stopped"}
    over the whole epoch, reduced over ranks (loss/acc are None when stopped early).
    """
    raw_model = raw_model if raw_model is not None else model
    ddp = isinstance(model, nn.parallel.DistributedDataParallel) or isinstance(
        getattr(model, "_orig_mod", None), nn.parallel.DistributedDataParallel)
    ddp_module = model if isinstance(model, nn.parallel.DistributedDataParallel) else getattr(model, "_orig_mod", model)
    opt = recipe.optimizer
    model.train()
    opt.zero_grad(set_to_none=True)

    # Sums of the steps since the last optimizer step, on the device (no host sync per micro-batch).
    pending_loss = torch.zeros((), device=device, dtype=torch.float64)
    pending_correct = torch.zeros((), device=device, dtype=torch.float64)
    pending_count = 0
    in_update = 0
    stopped = False
    images_done = 0
    _sync(device)
    start = time.perf_counter()
    # Creating a DataLoader iterator draws a seed from the global torch RNG; fork it so the global
    # stream (dropout, random erasing) does not depend on where an epoch was (re)started.
    with torch.random.fork_rng(devices=[]):
        it = iter(loader)
    while progress.micro_in_epoch + in_update < micro_batches:
        try:
            images, labels = next(it)
        except StopIteration:
            raise RuntimeError(f"the loader ran out after {progress.micro_in_epoch + in_update} of "
                               f"{micro_batches} micro-batches; it must drop incomplete batches only") from None
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        micro_index = progress.update * recipe.accum_steps + in_update
        x, target, hard = recipe.prepare(images, labels, micro_index) if recipe.prepare else (images, labels, labels)
        last_micro = in_update == recipe.accum_steps - 1
        # Gradients are all-reduced only on the last micro-batch of an accumulated step.
        sync_ctx = ddp_module.no_sync() if ddp and not last_micro else contextlib.nullcontext()
        with sync_ctx:
            with _autocast(device, recipe.autocast_dtype):
                logits = model(x)
                loss = recipe.loss_fn(logits, target)
            scaled = loss / recipe.accum_steps
            (recipe.scaler.scale(scaled) if recipe.scaler is not None else scaled).backward()
        n = labels.shape[0]
        pending_loss += loss.detach().double() * n
        pending_correct += (logits.detach().argmax(dim=1) == hard).sum()
        pending_count += n
        in_update += 1
        if on_batch is not None:
            on_batch()
        if not last_micro:
            continue

        # --- optimizer step boundary: agree on finiteness and stopping before touching the weights.
        local_bad = not bool(torch.isfinite(pending_loss).item())
        flags = [1.0 if local_bad else 0.0, 1.0 if should_stop() else 0.0]
        if info.distributed:
            t = torch.tensor(flags, device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flags = t.tolist()
        if flags[0] > 0:
            raise NonFiniteLossError(
                f"non-finite training loss at optimizer step {progress.update + 1} "
                f"(epoch micro-batch {progress.micro_in_epoch + in_update}); the weights of step "
                f"{progress.update} are the last good ones. Lower train.lr or set train.clip_grad")
        if recipe.scaler is not None:
            if recipe.clip_grad > 0:
                recipe.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(recipe.params, recipe.clip_grad)
            recipe.scaler.step(opt)
            recipe.scaler.update()
        else:
            if recipe.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(recipe.params, recipe.clip_grad)
            opt.step()
        opt.zero_grad(set_to_none=True)
        progress.update += 1
        if recipe.scheduler is not None:
            recipe.scheduler.step_update(num_updates=progress.update)
        if recipe.ema is not None:
            recipe.ema.update(raw_model, step=progress.update)

        progress.micro_in_epoch += in_update
        progress.loss_sum += pending_loss.item()
        progress.correct += pending_correct.item()
        progress.count += pending_count
        images_done += pending_count
        pending_loss.zero_()
        pending_correct.zero_()
        pending_count = 0
        in_update = 0
        if after_update is not None or flags[1] > 0:
            _sync(device)
            now = time.perf_counter()
            progress.seconds += now - start
            start = now
        if after_update is not None:
            after_update(progress)
            # A checkpoint write is not training time.
            start = time.perf_counter()
        if flags[1] > 0:
            stopped = True
            break

    _sync(device)
    progress.seconds += time.perf_counter() - start
    del it  # shuts down non-persistent workers now rather than at garbage collection
    if stopped:
        return {"loss": None, "acc": None, "images": images_done, "seconds": progress.seconds,
                "images_per_s": None, "stopped": True}
    loss_sum, correct, count = distributed.all_reduce_sum([progress.loss_sum, progress.correct, progress.count], info)
    # Wall time is the slowest rank's; on one machine the ranks run in lockstep anyway.
    seconds = max(progress.seconds, 1e-9)
    return {
        "loss": loss_sum / max(count, 1),
        "acc": correct / max(count, 1),
        "images": int(count),
        "seconds": seconds,
        "images_per_s": count / seconds,
        "stopped": False,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    mean,
    std,
    info: DistInfo,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    to_input: Callable | None = None,
) -> dict:
    """Cross-entropy, top-1 and top-5 over the loader's images, summed on each rank and reduced.

    Each rank must see a disjoint shard with no padding (e.g. indices[rank::world]) for the result
    to be exact. Pass the unwrapped model (not DDP): evaluation needs no gradient sync.
    Returns {"loss", "top1", "top5", "count"}.
    """
    from tinyclf.transforms import to_model_input

    to_input = to_input or (lambda b: to_model_input(b, mean, std, channels_last=channels_last))
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    top1 = torch.zeros((), device=device, dtype=torch.float64)
    top5 = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        x = to_input(images)
        with _autocast(device, autocast_dtype):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hits = topk == labels[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        count += labels.shape[0]
    model.train(was_training)
    loss_sum, c1, c5, n = distributed.all_reduce_sum([loss_sum.item(), top1.item(), top5.item(), count], info)
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n, "count": int(n)}
