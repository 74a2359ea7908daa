"""What a run builds before its first epoch, on every rank: the model and what trains it, the
resume decision's consequences, the wrapping (DDP, compile) and the per-step recipe; and the run
log's first line. `train.run` calls these in order; `stage_loop` builds the same for code that
measures or checks training steps outside a run (benchmarks, tests).

Starting weights (`train.init`, `tinyclf.model.init_weights`) are loaded once, into the fresh model of a
fresh run, before the EMA copies it; a resumed run takes its weights from the checkpoint and never
reads `train.init` again (the file may be gone, timm offline). What was loaded goes to the model
file's meta (`init`) through the checkpoint.

EMA: timm `ModelEmaV3` with its decay warmup (power 3/4: decay min(ema_decay, 1 - (1+step)^-3/4)),
so short runs get a useful average instead of one dominated by the random init; validated every
epoch. `val/*` always describes the weights saved to model.pt (`save_weights`); the other set is
logged as `val_raw/*` or `val_ema/*` (`tinyclf.train.run_log`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from tinyclf.augment.batch import build_batch_preparer
from tinyclf.environment import device_name
from tinyclf.model.architectures import create_model
from tinyclf.model.init_weights import InitWeightsError, apply_init, classifier_names, describe_init
from tinyclf.params import Params, TrainParams
from tinyclf.train import checkpoint, distributed
from tinyclf.train.checkpoint import RunCheckpoint, Trainables
from tinyclf.train.data_setup import TrainData, load_train_data
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import Progress, StepControl, StepRecipe, train_one_epoch
from tinyclf.train.freeze import BackboneFreeze
from tinyclf.train.param_groups import build_param_groups, layer_scales, needs_param_groups
from tinyclf.train.recipe import (AUTOCAST_DTYPES, TrainingError, build_loss_and_mixup, build_optimizer,
                                  build_scheduler, configure_determinism, resolve_compile, resolve_precision,
                                  scaled_lr, seed_everything)
from tinyclf.train.run_log import say
from tinyclf.train.selection import EpochSelection


@dataclass(frozen=True)
class RunPaths:
    prepared: Path  # the prepared arrays (read)
    model_out: Path  # models/model.pt
    live: Path  # DVCLive directory, with run.json
    checkpoints: Path  # holds last.pt


@dataclass(frozen=True)
class RunSetup:
    """What a run settled before its first epoch and keeps to the end, on this rank: where it runs,
    the params, the precision and epoch count they resolved to, and which weights the model file gets."""

    info: DistInfo
    params: Params
    precision: str  # the resolved train.precision: fp32, bf16 or fp16
    num_epochs: int  # what the scheduler settled on
    weights: str  # "ema" or "raw": saved to model.pt and logged as val/*
    progress_bar: bool = False  # this rank shows one (rank 0, when asked)

    @property
    def train(self) -> TrainParams:
        return self.params.train

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES[self.precision]


def check_same_run_everywhere(params, data: TrainData, info: DistInfo) -> dict:
    """Every rank reads its own params.yaml and prepared data (on several machines, its own copies):
    refuse to train, on every rank, when they do not all match rank 0's. Otherwise a node with
    another lr trains on silently and one with other data hangs in mismatched collectives. Returns
    this run's checkpoint fingerprint (what is compared: all that changes the result, train.init
    and train.balance included)."""
    mine = checkpoint.fingerprint(params, data.stats, data.num_classes)
    if not info.distributed:
        return mine
    compared = {**mine, "prepared.val_count": data.num_val}
    diffs = checkpoint.fingerprint_diff(distributed.broadcast_from_main(compared, info), compared)
    if distributed.any_rank([bool(diffs)], info)[0]:
        import socket

        if diffs:
            raise TrainingError(f"rank {info.rank} on {socket.gethostname()} has other params or prepared data than "
                                f"rank 0 ({'; '.join(diffs)}): every node needs the same params.yaml and data/prepared")
        raise TrainingError("another process has other params or prepared data than rank 0 (it names the keys): "
                            "every node needs the same params.yaml and data/prepared")
    return mine


def build_trainables(train_params, data: TrainData, info: DistInfo, precision: str, *,
                     load_init: bool = True) -> tuple[Trainables, int]:
    """Model (with train.init's weights when `load_init`: a fresh run), optimizer, scheduler, EMA and
    fp16 scaler; and the epoch count the scheduler settled on."""
    from timm.layers import convert_sync_batchnorm
    from timm.utils import ModelEmaV3

    seed_everything(train_params.seed)  # the same initial weights on every rank
    model = build_model(train_params, data.num_classes).to(info.device)
    init = load_init_everywhere(model, train_params, info) if load_init else None
    if train_params.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.distributed and train_params.sync_bn:
        if info.device.type != "cuda":
            raise TrainingError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                                "set train.sync_bn=false for CPU runs")
        model = convert_sync_batchnorm(model)
    classifier = classifier_names(model)
    groups = build_param_groups(model, train_params, classifier) if needs_param_groups(train_params) else None
    optimizer = build_optimizer(model, train_params, groups)
    freeze = BackboneFreeze.from_params(train_params, model, classifier)
    scheduler, num_epochs = build_scheduler(optimizer, train_params, data.plan.updates_per_epoch)
    ema = (ModelEmaV3(model, decay=train_params.ema_decay, use_warmup=True, warmup_power=3 / 4)
           if train_params.ema else None)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    selection = EpochSelection.from_params(train_params)
    parts = Trainables(model, optimizer, scheduler, ema, scaler, init, selection, freeze,
                       finetune_record(model, train_params, freeze))
    return parts, num_epochs


def build_model(train_params, num_classes: int) -> nn.Module:
    """train.model with `num_classes` outputs and, when train.drop_path asks, stochastic depth."""
    if train_params.drop_path <= 0:
        return create_model(train_params.model, num_classes)
    try:
        return create_model(train_params.model, num_classes, drop_path_rate=train_params.drop_path)
    except TypeError as exc:
        if "drop_path_rate" not in str(exc):
            raise
        raise TrainingError(f"train.drop_path={train_params.drop_path}: {train_params.model} has no stochastic depth "
                            "(timm builds it without a drop_path_rate); set train.drop_path=0") from None


def check_finetune_model(train_params) -> None:
    """What the fine-tuning params need of train.model (stochastic depth, a classifier apart from the
    rest), checked on the model built with 2 classes; TrainingError in one line. For `check-params`:
    a run checks the same as it builds its model."""
    if train_params.drop_path == 0 and train_params.freeze == "none" and train_params.head_lr_scale == 1:
        return
    model = build_model(train_params, 2)
    classifier = classifier_names(model)
    BackboneFreeze.from_params(train_params, model, classifier)
    if needs_param_groups(train_params):
        build_param_groups(model, train_params, classifier)


def finetune_record(model: nn.Module, train_params, freeze: BackboneFreeze | None) -> dict | None:
    """The model file's `finetune`: what was frozen and for how long, the layer-decay schedule, the
    classifier's rate and the drop-path rate; None when no fine-tuning control is on."""
    scales = layer_scales(model, train_params)
    if freeze is None and not scales and train_params.head_lr_scale == 1 and train_params.drop_path == 0:
        return None
    layer_decay = {"decay": train_params.layer_decay, "layers": [s.record() for s in scales]} if scales else None
    return {"freeze": freeze.record(model) if freeze is not None else None, "layer_decay": layer_decay,
            "head_lr_scale": train_params.head_lr_scale, "drop_path": train_params.drop_path}


def enter_epoch(parts: Trainables, epoch: int) -> bool:
    """Freeze or unfreeze the backbone for `epoch` (`train.freeze`); True when what trains changed,
    and the model must be wrapped again (DDP registers only the parameters that train)."""
    return parts.freeze is not None and parts.freeze.enter_epoch(parts.model, epoch)


def load_init_everywhere(model: nn.Module, train_params, info: DistInfo) -> dict:
    """train.init into `model` on every rank (each builds its own EMA from it); when one rank cannot
    read it, all stop with the error instead of the others waiting in the next collective."""
    record, error = None, None
    try:
        record = apply_init(model, train_params.init, model_name=train_params.model)
    except InitWeightsError as exc:
        error = str(exc)
    if distributed.any_rank([error is not None], info)[0]:
        raise InitWeightsError(error or "another process could not load train.init (it names the problem)")
    if info.is_main and train_params.init != "none":
        say(f"train: starting weights {describe_init(record)}")
    return record


def resume_or_start(ckpt: RunCheckpoint, state: dict | None, progress: Progress, train_params,
                    info: DistInfo) -> dict | None:
    """Continue the checkpoint's run (`state`, from `checkpoint.resume_state`) when there is one, else
    start fresh; either way each rank gets its own random streams (dropout, erasing, mixup). Returns
    where the run resumed, or None."""
    if state is None:
        seed_everything(train_params.seed + info.rank)
        return None
    if not ckpt.restore(state, progress):
        seed_everything(train_params.seed + 1_000_003 * (progress.epoch + 1) + info.rank)
        if info.is_main:
            say(f"train: checkpoint written by {state['world_size']} processes, resuming with "
                f"{info.world_size}: random streams reseeded, not bitwise reproducible")
    if info.is_main:
        say(f"train: resuming from {ckpt.path} at epoch {progress.epoch + 1}, optimizer step {progress.update}")
    if train_params.sched != "plateau":
        # Sets the lr the interrupted run had (step_update is a pure function of the step count).
        ckpt.parts.scheduler.step_update(num_updates=progress.update)
    return {"epoch": progress.epoch, "update": progress.update, "micro_in_epoch": progress.micro_in_epoch}


def wrap_for_training(model: nn.Module, train_params, info: DistInfo) -> nn.Module:
    """What runs forward: `model` under DDP when there are several ranks, then compiled when asked."""
    train_model = model
    if info.distributed:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if resolve_compile(train_params, info.device):
        train_model = torch.compile(train_model)
    return train_model


def build_step_recipe(train_params, parts: Trainables, data: TrainData, info: DistInfo, precision: str) -> StepRecipe:
    loss_fn, mixup = build_loss_and_mixup(train_params, data.num_classes)
    prepare = build_batch_preparer(train_params, data.backend, data.mean, data.std, mixup, info.device)
    return StepRecipe(optimizer=parts.optimizer, loss_fn=loss_fn, scheduler=parts.scheduler, ema=parts.ema,
                      scaler=parts.scaler, autocast_dtype=AUTOCAST_DTYPES[precision],
                      accum_steps=train_params.accum_steps, clip_grad=train_params.clip_grad, prepare=prepare,
                      # Every parameter, frozen ones too: they have no gradient while frozen, and
                      # clipping must count them once they train.
                      params=list(parts.model.parameters()),
                      hold_in_eval=parts.freeze.hold_in_eval if parts.freeze is not None else None)


def describe_run(run: RunSetup, data: TrainData) -> str:
    train_params, info, stats = run.train, run.info, data.stats
    generated = "GENERATED " if stats.get("generated") else ""
    compiled = ", compiled" if resolve_compile(train_params, info.device) else ""
    data_path = data.placement.describe() if data.placement is not None else f"{data.backend} data"
    return (f"train: {train_params.model} on {stats.get('dataset')} ({generated}{data.num_train} train / "
            f"{data.num_val} val, {data.num_classes} classes, {data.image_size}px); {info.world_size} "
            f"process(es) on {device_name(info.device)}, {run.precision}{compiled}, {data_path}; "
            f"{run.num_epochs} epochs x {data.plan.updates_per_epoch} steps, global batch {train_params.batch_size} x "
            f"{train_params.accum_steps}, lr {scaled_lr(train_params):.4g}"
            + ("; class-balanced sampling" if train_params.balance == "sampler" else "")
            + (f"; keeps the best {train_params.select_metric} epoch" if train_params.keep == "best" else "")
            + (f"; stops after {train_params.patience} epochs without improvement" if train_params.patience else "")
            + finetune_text(train_params))


def finetune_text(train_params) -> str:
    """The run line's part on fine-tuning controls ("" when none is on)."""
    parts = []
    if train_params.freeze == "backbone":
        parts.append(f"only the classifier trains for the first {train_params.freeze_epochs} epoch(s)")
    if 0 < train_params.layer_decay < 1:
        parts.append(f"layer-wise lr decay {train_params.layer_decay:g}")
    if train_params.head_lr_scale != 1:
        parts.append(f"classifier lr x{train_params.head_lr_scale:g}")
    if train_params.drop_path > 0:
        parts.append(f"drop path {train_params.drop_path:g}")
    return "".join(f"; {part}" for part in parts)



# --------------------------------------------------------------------------------------- outside a run
@dataclass
class StageLoop:
    """The train stage's loop as a run builds it (data, model, recipe, wrapping), without a run
    around it: for measuring or checking optimizer steps."""

    info: DistInfo
    train_params: TrainParams
    precision: str
    data: TrainData
    parts: Trainables
    recipe: StepRecipe
    model: nn.Module  # what runs forward: compiled when train.compile says so

    def steps(self, batches: Iterable, count: int, *, progress: Progress | None = None,
              control: StepControl | None = None) -> dict:
        """Train `count` micro-batches from `batches`: `train_one_epoch`'s metrics ("seconds": the
        loop's own clock), by default from a fresh `Progress` and the run's sync interval."""
        control = control or StepControl(sync_every=self.train_params.sync_every)
        return train_one_epoch(self.model, batches, self.recipe, progress or Progress(), micro_batches=count,
                               info=self.info, control=control)


def stage_loop(prepared_dir: str | Path, train_params: TrainParams, info: DistInfo) -> StageLoop:
    """`StageLoop` on `prepared_dir` under `train_params`, in the order a run builds it: precision, the
    stage's cuDNN/TF32 settings, data, seeded trainables (the same initial weights every time), recipe."""
    precision = resolve_precision(train_params.precision, info.device)
    configure_determinism(train_params.deterministic, info.device)
    data = load_train_data(Path(prepared_dir), train_params, info)
    parts, _ = build_trainables(train_params, data, info, precision)
    enter_epoch(parts, 0)
    recipe = build_step_recipe(train_params, parts, data, info, precision)
    model = wrap_for_training(parts.model, train_params, info)
    return StageLoop(info, train_params, precision, data, parts, recipe, model)
