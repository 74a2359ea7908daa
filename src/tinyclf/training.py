"""The train stage's wiring: params -> data, model, recipe -> epochs -> model file, DVCLive, checkpoints.

`run_training(params, prepared_dir, model_out, live_dir, checkpoint_dir)` runs in every process
(one, or one per rank under torchrun); only rank 0 logs, prints and writes files.

Recipe (all from the `train` params):
- global batch `batch_size`, split evenly over ranks; `accum_steps` micro-batches per optimizer
  step; peak lr scaled once: lr * batch_size * accum_steps / 256.
- timm `create_optimizer_v2` (no weight decay on norms/biases) and `create_scheduler_v2`
  (stepped per optimizer step with `step_update`; `plateau` per epoch on val top-1).
- timm `Mixup`/CutMix with `SoftTargetCrossEntropy` (label smoothing inside the soft targets),
  otherwise cross-entropy with label smoothing. train/acc is measured against the dominant label
  of each (mixed) target, i.e. the image's own label unless mixing made another one heavier.
- EMA: timm `ModelEmaV3` with its decay warmup (power 3/4: decay min(ema_decay, 1 - (1+step)^-3/4)),
  so short runs get a useful average instead of one dominated by the random init; validated every
  epoch. `val/*` always describes the weights saved to model.pt (`save_weights`); the other set is
  logged as `val_raw/*` or `val_ema/*`.
- Random erasing (timm, pixel mode) on the normalized batch, before mixing.

Resume (`tinyclf.checkpoint`): `checkpoints/last.pt` is written after every epoch and every
`checkpoint_every_steps` optimizer steps. A resumed run skips the micro-batches its epoch already
consumed (the sampler order depends only on seed and epoch; augmentation only on seed, epoch and
index) and restores every rank's RNG states, so on CPU with deterministic settings it reaches the
same weights as an uninterrupted run. If the world size changed, rank RNG states are reseeded
(the run continues, not bitwise identical). A finished checkpoint is never continued: the next run
starts fresh.

Signals: SIGTERM/SIGINT set a flag; at the next optimizer step all ranks agree to stop, the
checkpoint is saved at that step and `Interrupted` is raised (the stage exits 128 + signal).

Test hook: `TINYCLF_FAIL_RANK=<rank>` makes that rank raise at its first training step (used to
test that one failing rank fails the whole torchrun job quickly). It has no other effect.
"""

from __future__ import annotations

import csv
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from tinyclf import atomic, checkpoint, distributed
from tinyclf.distributed import DistInfo
from tinyclf.engine import Progress, StepRecipe, evaluate, train_one_epoch
from tinyclf.errors import TinyclfError

COLLECTIVE_TIMEOUT_S = 600.0


class TrainingError(TinyclfError):
    """A run that cannot start or go on for a reason the user can fix; one line."""


class Interrupted(TinyclfError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved. `signum` gives the exit code (128 + signum)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# --------------------------------------------------------------------------------------- samplers
class SkipSampler(torch.utils.data.Sampler):
    """Wraps an EpochSampler and drops the first `skip` items once: a resumed epoch continues where
    the interrupted one stopped, without loading the consumed batches."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        for i, item in enumerate(self.sampler):
            if i >= skip:
                yield item

    def __len__(self) -> int:
        return len(self.sampler)


class ShardSampler(torch.utils.data.Sampler):
    """indices[rank::world] without padding: each val image is evaluated exactly once over all ranks."""

    def __init__(self, length: int, rank: int, world: int):
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --------------------------------------------------------------------------------------- setup
def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA, fp32 on CPU; fp16 needs CUDA."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError("train.precision=fp16 needs a CUDA device (GradScaler); use fp32 or bf16 on CPU")
    return precision


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        # cuBLAS needs a fixed workspace for deterministic results (set before the first CUDA call).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    import random

    seed = seed % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all CUDA devices too


def scaled_lr(tp) -> float:
    """The linear scaling rule, applied once: lr is quoted for a global batch of 256."""
    return tp.lr * tp.batch_size * tp.accum_steps / 256


def plan_steps(num_train: int, tp, world: int) -> dict:
    """Per-rank micro-batch, optimizer steps per epoch, micro-batches per epoch; TrainingError if impossible."""
    if tp.batch_size % world:
        raise TrainingError(f"train.batch_size={tp.batch_size} is not divisible by the {world} processes; "
                            f"use a multiple of {world}")
    per_rank = tp.batch_size // world
    if tp.mixup_active and per_rank % 2:
        raise TrainingError(f"mixup/cutmix needs an even batch per process, got {per_rank} "
                            f"(train.batch_size={tp.batch_size} over {world} processes)")
    updates = num_train // (tp.batch_size * tp.accum_steps)
    if updates < 1:
        raise TrainingError(f"the train split has {num_train} images, fewer than one optimizer step of "
                            f"train.batch_size x train.accum_steps = {tp.batch_size * tp.accum_steps}")
    return {"per_rank": per_rank, "updates_per_epoch": updates, "micro_per_epoch": updates * tp.accum_steps}


def build_optimizer(model: nn.Module, tp) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt=tp.opt, lr=scaled_lr(tp), weight_decay=tp.weight_decay,
                               momentum=tp.momentum, filter_bias_and_bn=True)


def build_scheduler(optimizer, tp, updates_per_epoch: int):
    """(timm scheduler, total epochs incl. cooldown). Per-step updates except plateau (per epoch)."""
    from timm.scheduler import create_scheduler_v2

    per_epoch = tp.sched == "plateau"
    return create_scheduler_v2(
        optimizer, sched=tp.sched, num_epochs=tp.epochs, decay_epochs=tp.decay_epochs,
        decay_milestones=[tp.decay_epochs * k for k in (1, 2, 3)], decay_rate=tp.decay_rate,
        min_lr=tp.min_lr, warmup_lr=tp.warmup_lr, warmup_epochs=tp.warmup_epochs,
        cooldown_epochs=tp.cooldown_epochs, plateau_mode="max",
        step_on_epochs=per_epoch, updates_per_epoch=updates_per_epoch,
    )


def build_loss_and_mixup(tp, num_classes: int):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if tp.mixup_active:
        mixup = Mixup(mixup_alpha=tp.mixup, cutmix_alpha=tp.cutmix, prob=tp.mixup_prob,
                      switch_prob=tp.mixup_switch_prob, label_smoothing=tp.label_smoothing, num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if tp.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=tp.label_smoothing), None
    return nn.CrossEntropyLoss(), None


def _ignore_sigint_worker(previous):
    # Ctrl-C reaches the whole process group; the main process saves a checkpoint and stops, so its
    # DataLoader workers must not die first.
    def init(worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if previous is not None:
            previous(worker_id)
    return init


@contextmanager
def stop_on_signals() -> Iterator[dict]:
    """SIGTERM/SIGINT set flag["signum"] instead of killing the process (main thread only)."""
    flag: dict[str, Any] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread; elsewhere signals act as usual.
        yield flag
        return

    def handler(signum, _frame):
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def trim_live_history(live_dir: Path, keep_steps: int) -> None:
    """Drop DVCLive plot rows with step >= keep_steps: an epoch logged after the last checkpoint is
    re-run on resume and must not appear twice."""
    metrics_dir = live_dir / "plots" / "metrics"
    if not metrics_dir.is_dir():
        return
    for tsv in metrics_dir.rglob("*.tsv"):
        with open(tsv, newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        step_col = header.index("step") if "step" in header else None
        if step_col is None:
            continue
        kept = [r for r in body if r and int(r[step_col]) < keep_steps]
        if len(kept) != len(body):
            lines = ["\t".join(header)] + ["\t".join(r) for r in kept]
            atomic.write_text(tsv, "\n".join(lines) + "\n")


def _meta(params, classes: dict, stats: dict, image_size, weights: str, epochs: int, device) -> dict:
    from tinyclf.environment import environment_info

    h, w = image_size
    return {
        "model": params.train.model,
        "num_classes": len(classes["classes"]),
        "classes": [{"id": c["id"], "name": c["name"]} for c in classes["classes"]],
        "image_size": h if h == w else [h, w],
        "mean": [float(x) for x in stats["mean"]],
        "std": [float(x) for x in stats["std"]],
        "dataset": stats.get("dataset", params.data.dataset),
        "generated": bool(stats.get("generated", False) or classes.get("generated", False)),
        "weights": weights,
        "params": params.to_dict(),
        "environment": environment_info(device),
        "epochs_trained": epochs,
    }


def _device_name(device: torch.device) -> str:
    from tinyclf.environment import device_name

    return device_name(device)


# --------------------------------------------------------------------------------------- the run
def run_training(params, prepared_dir, model_out, live_dir, checkpoint_dir, *, progress_bar: bool = True) -> dict:
    """Train per `params.train` on `prepared_dir`; write model_out, live_dir/*, checkpoint_dir/last.pt.

    Returns (on every rank) {"epochs", "val", "train_seconds", "images_per_s", "resumed_from"}.
    Raises TrainingError / CheckpointError / PreparedDataError / ParamsError-like one-line errors,
    NonFiniteLossError, Interrupted.
    """
    info = distributed.init(timeout_s=COLLECTIVE_TIMEOUT_S)
    try:
        result = _run(info, params, Path(prepared_dir), Path(model_out), Path(live_dir), Path(checkpoint_dir),
                      progress_bar=progress_bar)
        distributed.barrier(info)
        return result
    finally:
        distributed.cleanup()


def _run(info: DistInfo, params, prepared_dir: Path, model_out: Path, live_dir: Path, ckpt_dir: Path,
         *, progress_bar: bool) -> dict:
    from timm.data.random_erasing import RandomErasing
    from timm.layers import convert_sync_batchnorm
    from timm.utils import ModelEmaV3

    from tinyclf import arrays
    from tinyclf.model_file import save_model_file
    from tinyclf.models import create_model
    from tinyclf.transforms import (BatchedAugment, EpochSampler, PreparedDataset, build_augment, make_loader,
                                    to_model_input)

    tp = params.train
    device = info.device
    precision = resolve_precision(tp.precision, device)
    autocast_dtype = AUTOCAST_DTYPES[precision]
    configure_determinism(tp.deterministic, device)

    # ---- data
    classes = arrays.load_classes(prepared_dir)
    stats = arrays.load_stats(prepared_dir)
    num_classes = len(classes["classes"])
    image_hw = tuple(int(v) for v in stats["image_size"])
    mean, std = stats["mean"], stats["std"]
    batched = tp.aug_backend == "batched"
    train_set = PreparedDataset(prepared_dir, "train", augment=None if batched else build_augment(tp, image_hw[0]),
                                seed=tp.seed)
    val_set = PreparedDataset(prepared_dir, "val")
    plan = plan_steps(len(train_set), tp, info.world_size)
    sampler = SkipSampler(EpochSampler(len(train_set), num_replicas=info.world_size, rank=info.rank,
                                       shuffle=True, seed=tp.seed, drop_last=False))
    pin = device.type == "cuda"
    train_loader = make_loader(train_set, sampler, plan["per_rank"], workers=tp.workers,
                               prefetch_factor=tp.prefetch_factor, pin_memory=pin, drop_last=True)
    val_loader = make_loader(val_set, ShardSampler(len(val_set), info.rank, info.world_size), plan["per_rank"],
                             workers=tp.workers, prefetch_factor=tp.prefetch_factor, pin_memory=pin,
                             drop_last=False)
    for loader in (train_loader, val_loader):
        if loader.num_workers > 0:
            loader.worker_init_fn = _ignore_sigint_worker(loader.worker_init_fn)

    # ---- model, identical on every rank (seeded before creation), then per-rank RNG streams
    seed_everything(tp.seed)
    model = create_model(tp.model, num_classes).to(device)
    if tp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.distributed and tp.sync_bn:
        if device.type != "cuda":
            raise TrainingError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                                "set train.sync_bn=false for CPU runs")
        model = convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, tp)
    scheduler, num_epochs = build_scheduler(optimizer, tp, plan["updates_per_epoch"])
    ema = ModelEmaV3(model, decay=tp.ema_decay, use_warmup=True, warmup_power=3 / 4) if tp.ema else None
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    loss_fn, mixup = build_loss_and_mixup(tp, num_classes)
    erasing = (RandomErasing(probability=tp.random_erasing, mode="pixel", device=device.type)
               if tp.random_erasing > 0 else None)
    batch_aug = BatchedAugment(tp, image_hw[0], seed=tp.seed * 1000 + info.rank) if batched else None

    # ---- resume or start
    fp = checkpoint.fingerprint(params, stats, num_classes)
    ckpt_path = checkpoint.checkpoint_path(ckpt_dir)
    if info.is_main:
        try:
            decision = ("ok", checkpoint.resume_decision(ckpt_path, fp))
        except checkpoint.CheckpointError as exc:
            decision = ("error", str(exc))
    else:
        decision = None
    # Only rank 0 is sure to see the checkpoint (several nodes): it sends the state to the others.
    kind, state = distributed.broadcast_from_main(decision, info)
    if kind == "error":
        raise checkpoint.CheckpointError(state)

    start_epoch, progress = 0, Progress()
    prior_seconds, prior_images = 0.0, 0
    fail_rank = os.environ.get("TINYCLF_FAIL_RANK")
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        progress.update = int(state["update"])
        progress.micro_in_epoch = int(state["micro_in_epoch"])
        prior_seconds, prior_images = float(state.get("train_seconds", 0.0)), int(state.get("train_images", 0))
        if int(state["world_size"]) == info.world_size:
            mine = state["ranks"][info.rank]
            checkpoint.restore_rng(mine["rng"])
            for key, value in mine["sums"].items():
                setattr(progress, key, float(value))
        else:
            # Another process count: the data order continues exactly, the ranks' random streams cannot.
            seed_everything(tp.seed + 1_000_003 * (start_epoch + 1) + info.rank)
            if progress.micro_in_epoch:
                # Partial sums were per rank; count this epoch's metrics from here on.
                progress.loss_sum = progress.correct = progress.count = progress.seconds = 0.0
            if info.is_main:
                print(f"train: checkpoint written by {state['world_size']} processes, resuming with "
                      f"{info.world_size}: random streams reseeded, not bitwise reproducible", file=sys.stderr)
        if info.is_main:
            print(f"train: resuming from {ckpt_path} at epoch {start_epoch + 1}, optimizer step {progress.update}",
                  file=sys.stderr)
        # Sets the lr the interrupted run had (step_update is a pure function of the step count).
        if not tp.sched == "plateau":
            scheduler.step_update(num_updates=progress.update)
        resumed_from = {"epoch": start_epoch, "update": progress.update, "micro_in_epoch": progress.micro_in_epoch}
        del state
    else:
        seed_everything(tp.seed + info.rank)
        resumed_from = None

    train_model: nn.Module = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if tp.compile:
        train_model = torch.compile(train_model)

    # ---- per-batch input path (on the device)
    def prepare(images: torch.Tensor, labels: torch.Tensor, micro_index: int):
        if fail_rank is not None and int(fail_rank) == info.rank:
            raise RuntimeError(f"TINYCLF_FAIL_RANK={fail_rank}: simulated failure on rank {info.rank}")
        if batch_aug is not None:
            images = batch_aug(images, micro_index)
        x = to_model_input(images, mean, std, channels_last=tp.channels_last)
        if erasing is not None:
            x = erasing(x)
        if mixup is not None:
            x, soft = mixup(x, labels)
            return x, soft, soft.argmax(dim=1)
        return x, labels, labels

    recipe = StepRecipe(optimizer=optimizer, loss_fn=loss_fn, scheduler=scheduler, ema=ema, scaler=scaler,
                        autocast_dtype=autocast_dtype, accum_steps=tp.accum_steps, clip_grad=tp.clip_grad,
                        prepare=prepare, params=[p for p in model.parameters() if p.requires_grad])

    totals = {"seconds": prior_seconds, "images": prior_images}

    def save_checkpoint(epoch: int, complete: bool = False) -> None:
        """All ranks call this (it gathers their RNG states); rank 0 writes."""
        mine = {"rng": checkpoint.capture_rng(), "sums": progress.sums()}
        ranks = distributed.gather_to_main(mine, info)
        if not info.is_main:
            return
        checkpoint.save(ckpt_path, {
            "fingerprint": fp, "complete": complete, "epoch": epoch, "update": progress.update,
            "micro_in_epoch": progress.micro_in_epoch, "world_size": info.world_size,
            "model": model.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "ranks": ranks,
            "train_seconds": totals["seconds"], "train_images": totals["images"],
        })

    # ---- logging (rank 0 only)
    live = None
    if info.is_main:
        from dvclive import Live

        resuming = start_epoch > 0 or progress.update > 0
        if resuming:
            trim_live_history(live_dir, start_epoch)
        live = Live(dir=str(live_dir), resume=resuming, dvcyaml=None, save_dvc_exp=False, report=None)
        live.step = start_epoch
        live.log_params(params.to_dict())
        print(f"train: {tp.model} on {stats.get('dataset')} ({'GENERATED ' if stats.get('generated') else ''}"
              f"{len(train_set)} train / {len(val_set)} val, {num_classes} classes, {image_hw[0]}px); "
              f"{info.world_size} process(es) on {_device_name(device)}, {precision}; {num_epochs} epochs x "
              f"{plan['updates_per_epoch']} steps, global batch {tp.batch_size} x {tp.accum_steps}, "
              f"lr {scaled_lr(tp):.4g}", file=sys.stderr)

    save_ema = ema is not None and tp.save_weights == "ema"
    last_val: dict = {}
    with stop_on_signals() as flag:
        for epoch in range(start_epoch, num_epochs):
            sampler.set_epoch(epoch)
            sampler.skip = progress.micro_in_epoch * plan["per_rank"]
            bar = None
            if info.is_main and progress_bar:
                from tqdm import tqdm

                bar = tqdm(total=plan["micro_per_epoch"], initial=progress.micro_in_epoch,
                           desc=f"epoch {epoch + 1}/{num_epochs}", unit="batch", file=sys.stderr,
                           dynamic_ncols=True, leave=False)

            def after_update(prog: Progress, epoch=epoch) -> None:
                every = tp.checkpoint_every_steps
                if every and prog.update % every == 0 and prog.micro_in_epoch < plan["micro_per_epoch"]:
                    save_checkpoint(epoch)

            try:
                stats_train = train_one_epoch(
                    train_model, train_loader, recipe, progress, micro_batches=plan["micro_per_epoch"],
                    device=device, info=info, raw_model=model, should_stop=lambda: flag["signum"] is not None,
                    after_update=after_update, on_batch=bar.update if bar is not None else None)
            except Exception:
                if flag["signum"] is None:
                    raise
                # A signal also reached the loader workers; the last optimizer step is still consistent.
                stats_train = {"stopped": True}
            finally:
                if bar is not None:
                    bar.close()
            if stats_train["stopped"]:
                # The epoch's partial time and sums travel in the ranks' entries, not in the totals.
                save_checkpoint(epoch)
                signum = flag["signum"] or signal.SIGTERM
                raise Interrupted(
                    f"stopped by {signal.Signals(signum).name} at optimizer step {progress.update} "
                    f"(epoch {epoch + 1}); checkpoint saved to {ckpt_path}, run the stage again to resume", signum)
            totals["seconds"] += stats_train["seconds"]
            totals["images"] += stats_train["images"]

            evals = {}
            if ema is not None:
                evals["ema"] = evaluate(ema.module, val_loader, device=device, mean=mean, std=std, info=info,
                                        channels_last=tp.channels_last, autocast_dtype=autocast_dtype)
            evals["raw"] = evaluate(model, val_loader, device=device, mean=mean, std=std, info=info,
                                    channels_last=tp.channels_last, autocast_dtype=autocast_dtype)
            main_key = "ema" if save_ema else "raw"
            last_val = evals[main_key]
            if tp.sched == "plateau":
                scheduler.step(epoch + 1, last_val["top1"])
            else:
                scheduler.step(epoch + 1)

            if live is not None:
                live.log_metric("train/loss", stats_train["loss"])
                live.log_metric("train/acc", stats_train["acc"])
                for name in ("loss", "top1", "top5"):
                    live.log_metric(f"val/{name}", last_val[name])
                for other, ev in evals.items():
                    if other != main_key:
                        for name in ("loss", "top1", "top5"):
                            live.log_metric(f"val_{other}/{name}", ev[name])
                live.log_metric("lr", optimizer.param_groups[0]["lr"])
                live.log_metric("images_per_s", stats_train["images_per_s"])
                live.log_metric("epoch_time_s", stats_train["seconds"])
                live.next_step()
                print(f"epoch {epoch + 1}/{num_epochs}: train loss {stats_train['loss']:.4f} acc "
                      f"{stats_train['acc']:.4f} | val loss {last_val['loss']:.4f} top-1 {last_val['top1']:.4f} "
                      f"top-5 {last_val['top5']:.4f} | {stats_train['images_per_s']:.0f} img/s", file=sys.stderr)
            progress.micro_in_epoch = 0
            progress.loss_sum = progress.correct = progress.count = progress.seconds = 0.0
            # Logged before saved: a kill in between re-runs this epoch and trim_live_history drops its row.
            save_checkpoint(epoch + 1)
            if flag["signum"] is not None and epoch + 1 < num_epochs:
                raise Interrupted(
                    f"stopped by {signal.Signals(flag['signum']).name} after epoch {epoch + 1}; checkpoint saved "
                    f"to {ckpt_path}, run the stage again to resume", flag["signum"])

    # ---- outputs (rank 0)
    images_per_s = totals["images"] / totals["seconds"] if totals["seconds"] > 0 else None
    if info.is_main:
        weights = "ema" if save_ema else "raw"
        final = ema.module if save_ema else model
        save_model_file(model_out, final, _meta(params, classes, stats, image_hw, weights, num_epochs, device))
        atomic.write_json(Path(live_dir) / "run.json", {
            "device": _device_name(device),
            "device_type": device.type,
            "device_count": info.world_size if device.type == "cuda" else 0,
            "world_size": info.world_size,
            "nodes": max(1, info.world_size // info.local_world_size),
            "precision": precision,
            "compile": tp.compile,
            "channels_last": tp.channels_last,
            "aug_backend": tp.aug_backend,
            "epochs": num_epochs,
            "train_seconds": round(totals["seconds"], 3),
            "train_images": totals["images"],
            "images_per_s": round(images_per_s, 1) if images_per_s else None,
            "generated": bool(stats.get("generated", False)),
        })
        live.end()
    # The run is finished: the checkpoint stays (DVC persist) but is marked complete, so the next
    # run starts fresh instead of continuing it under possibly different params.
    save_checkpoint(num_epochs, complete=True)
    return {"epochs": num_epochs, "val": last_val, "train_seconds": totals["seconds"],
            "images_per_s": images_per_s, "resumed_from": resumed_from}
