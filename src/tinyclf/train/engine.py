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
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tinyclf.errors import TinyclfError
from tinyclf.train import distributed
from tinyclf.train.distributed import DistInfo


class NonFiniteLossError(TinyclfError, RuntimeError):
    """The training loss became NaN or infinite; the message names the optimizer step."""


@dataclass
class Progress:
    """Where training stands, at an optimizer-step boundary (what a checkpoint records).

    `epoch` counts completed epochs; `update` optimizer steps since the start of the run;
    `micro_in_epoch` the micro-batches of the current epoch already consumed. The sums are this
    rank's, for the current epoch; `run_seconds`/`run_images` total the completed epochs.
    """

    epoch: int = 0
    update: int = 0
    micro_in_epoch: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    seconds: float = 0.0  # training time spent in this epoch (across interruptions)
    run_seconds: float = 0.0
    run_images: int = 0

    def sums(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count, "seconds": self.seconds}

    def end_epoch(self, seconds: float, images: int) -> None:
        """Count a finished epoch (its wall time, its images over all ranks) and start the next."""
        self.run_seconds += seconds
        self.run_images += images
        self.epoch += 1
        self.micro_in_epoch = 0
        self.loss_sum = self.correct = self.count = self.seconds = 0.0


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
    # Turns a loaded batch into (model input, loss target, hard label for accuracy) on the device.
    prepare: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    params: list = field(default_factory=list)  # parameters to clip
    # After model.train() at an epoch's start: modules that stay in eval mode (a frozen backbone's
    # BatchNorm, `tinyclf.train.freeze`).
    hold_in_eval: Callable[[nn.Module], None] | None = None


@dataclass
class StepControl:
    """When the loop looks up from the device, and what it does then.

    Between sync points nothing is read back to the host: the loss and accuracy sums and the first
    step whose loss was not finite stay on the device. Every `sync_every` optimizer steps, at each
    step checkpoint and at the epoch's end they are read (one small read), the ranks agree on a
    non-finite loss and on a stop request (one small all_reduce), and then a due step checkpoint is
    saved. So a checkpoint only ever holds weights from before the first non-finite loss.
    """

    sync_every: int = 1
    checkpoint_every: int = 0  # optimizer steps between step checkpoints; 0: none
    save_checkpoint: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] = lambda: False  # e.g. SIGTERM arrived (a host flag)
    on_batch: Callable[[], None] | None = None  # after each micro-batch (the progress bar)

    def sync_due(self, update: int) -> bool:
        return update % self.sync_every == 0 or self.checkpoint_due(update)

    def checkpoint_due(self, update: int) -> bool:
        return bool(self.checkpoint_every) and update % self.checkpoint_every == 0


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _DeviceSums:
    """The epoch's loss and correct-prediction sums since the last host read, and the first optimizer
    step whose loss was not finite (-1: none), in one float64 tensor on the device."""

    def __init__(self, device: torch.device):
        self.values = torch.zeros(3, dtype=torch.float64, device=device)  # filled there: no copy from the host
        self.values[2] = -1.0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, hard_labels: torch.Tensor) -> None:
        n = hard_labels.shape[0]
        self.values[0] += loss.detach().double() * n
        self.values[1] += (logits.detach().argmax(dim=1) == hard_labels).sum()

    def end_step(self, update: int) -> None:
        # A NaN or inf loss makes the running sum non-finite for good: the first step it is so is the bad one.
        first_bad = self.values[2]
        self.values[2] = torch.where(torch.isfinite(self.values[0]) | (first_bad >= 0), first_bad, float(update))

    def read_into(self, progress: Progress) -> int | None:
        """The one host read: add the sums to `progress` and start over; returns the first bad step or None."""
        loss_sum, correct, first_bad = self.values.tolist()
        progress.loss_sum += loss_sum
        progress.correct += correct
        self.values[0] = 0.0
        self.values[1] = 0.0
        return int(first_bad) if first_bad >= 0 else None


class _EpochClock:
    """Training wall time of an epoch, added to `progress.seconds` (checkpoint writes excluded)."""

    def __init__(self, device: torch.device, progress: Progress):
        self.device, self.progress = device, progress
        _sync(device)
        self.start = time.perf_counter()

    def lap(self) -> None:
        """Add the time since the last lap to the epoch's training time (waits for the device)."""
        _sync(self.device)
        now = time.perf_counter()
        self.progress.seconds += now - self.start
        self.start = now

    def restart(self) -> None:
        """Start counting again, leaving out the time since the last lap."""
        self.start = time.perf_counter()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile and DDP (nanoGPT's `raw_model`): what the EMA follows."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper keeps the module it compiled
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _no_sync_context(model: nn.Module) -> Callable[[], contextlib.AbstractContextManager]:
    """DDP's no_sync (skip the gradient all-reduce) for `model` (DDP, compiled DDP, or plain)."""
    ddp = model if isinstance(model, nn.parallel.DistributedDataParallel) else getattr(model, "_orig_mod", None)
    if isinstance(ddp, nn.parallel.DistributedDataParallel):
        return ddp.no_sync
    return contextlib.nullcontext


def _next_batch(batches: Iterator, position: int, micro_batches: int, device: torch.device):
    try:
        images, labels = next(batches)
    except StopIteration:
        raise RuntimeError(f"the loader ran out after {position} of {micro_batches} micro-batches; "
                           "it must drop incomplete batches only") from None
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def _forward_backward(model: nn.Module, x: torch.Tensor, target: torch.Tensor, recipe: StepRecipe,
                      device: torch.device, context: contextlib.AbstractContextManager):
    """Loss of one micro-batch, backpropagated (scaled for accumulation and fp16); returns (logits, loss)."""
    with context:
        with _autocast(device, recipe.autocast_dtype):
            logits = model(x)
            loss = recipe.loss_fn(logits, target)
        scaled = loss / recipe.accum_steps
        (recipe.scaler.scale(scaled) if recipe.scaler is not None else scaled).backward()
    return logits, loss


def _optimizer_step(recipe: StepRecipe, raw_model: nn.Module, progress: Progress) -> None:
    """Clip, step (through the fp16 scaler when there is one), then the per-step scheduler and EMA."""
    opt = recipe.optimizer
    if recipe.scaler is not None and recipe.clip_grad > 0:
        recipe.scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
    if recipe.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(recipe.params, recipe.clip_grad)
    if recipe.scaler is not None:
        recipe.scaler.step(opt)  # reads found-inf back to the host: fp16 has one sync per step
        recipe.scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    progress.update += 1
    if recipe.scheduler is not None:
        recipe.scheduler.step_update(num_updates=progress.update)
    if recipe.ema is not None:
        recipe.ema.update(raw_model, step=progress.update)


def _sync_point(sums: _DeviceSums, progress: Progress, control: StepControl, info: DistInfo) -> bool:
    """Read the sums, agree with the other ranks on a non-finite loss and a stop; returns "stop".

    Raises NonFiniteLossError: the weights in memory may already be past the bad step, but no
    checkpoint is, since checkpoints are saved only after this check.
    """
    first_bad = sums.read_into(progress)
    bad, stop = distributed.any_rank([first_bad is not None, control.should_stop()], info)
    if bad:
        where = (f"at optimizer step {first_bad}" if first_bad is not None
                 else f"on another process by optimizer step {progress.update}")
        raise NonFiniteLossError(
            f"non-finite training loss {where} (checked every train.sync_every={control.sync_every} steps); "
            f"no weights from that step on were saved. Lower train.lr or set train.clip_grad")
    return stop


def train_one_epoch(model: nn.Module, loader: Iterable, recipe: StepRecipe, progress: Progress, *,
                    micro_batches: int, info: DistInfo, control: StepControl | None = None) -> dict:
    """Train until `progress.micro_in_epoch == micro_batches` (or a stop is agreed); return metrics.

    `model` is what runs forward (DDP- and/or compile-wrapped; the EMA follows `unwrap(model)`), on
    `info.device`. `loader` yields (images, labels) starting at the first micro-batch not yet
    consumed. `control` says when to read from the device, agree across ranks and save step
    checkpoints (`StepControl`). Returns {"loss", "acc", "images", "seconds", "images_per_s",
    "stopped"} over the whole epoch, reduced over ranks (loss/acc are None when stopped early).
    """
    raw_model, device = unwrap(model), info.device
    control = control or StepControl()
    no_sync = _no_sync_context(model)
    model.train()
    if recipe.hold_in_eval is not None:
        recipe.hold_in_eval(raw_model)
    recipe.optimizer.zero_grad(set_to_none=True)
    sums, clock = _DeviceSums(device), _EpochClock(device, progress)
    in_step, step_images, images_done, stopped = 0, 0, 0, False
    # Creating a DataLoader iterator draws a seed from the global torch RNG; fork it so the global
    # stream (dropout, random erasing) does not depend on where an epoch was (re)started.
    with torch.random.fork_rng(devices=[]):
        batches = iter(loader)
    while progress.micro_in_epoch + in_step < micro_batches:
        images, labels = _next_batch(batches, progress.micro_in_epoch + in_step, micro_batches, device)
        x, target, hard = recipe.prepare(images, labels) if recipe.prepare else (images, labels, labels)
        in_step += 1
        last_micro = in_step == recipe.accum_steps
        # Gradients are all-reduced only on the last micro-batch of an accumulated step.
        logits, loss = _forward_backward(model, x, target, recipe, device,
                                         contextlib.nullcontext() if last_micro else no_sync())
        sums.add(loss, logits, hard)
        step_images += hard.shape[0]
        if control.on_batch is not None:
            control.on_batch()
        if not last_micro:
            continue
        _optimizer_step(recipe, raw_model, progress)
        sums.end_step(progress.update)
        progress.micro_in_epoch += in_step
        progress.count += step_images
        images_done += step_images
        in_step = step_images = 0
        epoch_end = progress.micro_in_epoch >= micro_batches
        if not (epoch_end or control.sync_due(progress.update)):
            continue
        stopped = _sync_point(sums, progress, control, info)
        clock.lap()
        if control.checkpoint_due(progress.update) and not epoch_end and control.save_checkpoint is not None:
            control.save_checkpoint(progress)
            clock.restart()  # a checkpoint write is not training time
        if stopped:
            break
    clock.lap()
    del batches  # shuts down non-persistent workers now rather than at garbage collection
    if stopped:
        return {"loss": None, "acc": None, "images": images_done, "seconds": progress.seconds,
                "images_per_s": None, "stopped": True}
    return _epoch_metrics(progress, info)


def _epoch_metrics(progress: Progress, info: DistInfo) -> dict:
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
def evaluate(model: nn.Module, loader: Iterable, *, to_input: Callable[[torch.Tensor], torch.Tensor], info: DistInfo,
             autocast_dtype: torch.dtype | None = None) -> dict:
    """Cross-entropy, top-1 and top-5 over the loader's images, summed on each rank and reduced.

    `to_input` turns a loaded uint8 batch into the model's input on `info.device` (e.g. a
    `loading.normalize.ModelInput`). Each rank must see a disjoint shard with no padding (e.g.
    indices[rank::world]) for the result to be exact. Pass the unwrapped model (not DDP): evaluation
    needs no gradient sync. Returns {"loss", "top1", "top5", "count"}.
    """
    device = info.device
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
