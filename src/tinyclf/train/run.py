"""The train stage's wiring: params -> data, model, recipe -> epochs -> model file, DVCLive, checkpoints.

`run_training(params, prepared_dir, model_out, live_dir, checkpoint_dir)` runs in every process
(one, or one per rank under torchrun); only rank 0 logs, prints and writes files. `_train` reads
top to bottom: data, the resume decision (`tinyclf.train.checkpoint`), model and recipe
(`tinyclf.train.recipe`), the epoch loop (one epoch is `tinyclf.train.engine.train_one_epoch`), outputs.

Starting weights (`train.init`, `tinyclf.model.init_weights`) are loaded once, into the fresh model of a
fresh run, before the EMA copies it; a resumed run takes its weights from the checkpoint and never
reads `train.init` again (the file may be gone, timm offline). What was loaded goes to the model
file's meta (`init`) through the checkpoint. `train.balance: sampler` swaps each epoch's
permutation for a class-balanced draw (`loading.samplers.BalancedDraw`), in both data backends.

EMA: timm `ModelEmaV3` with its decay warmup (power 3/4: decay min(ema_decay, 1 - (1+step)^-3/4)),
so short runs get a useful average instead of one dominated by the random init; validated every
epoch. `val/*` always describes the weights saved to model.pt (`save_weights`); the other set is
logged as `val_raw/*` or `val_ema/*` (`tinyclf.train.run_log`).

Resume (`tinyclf.train.checkpoint`): `checkpoints/last.pt` is written after every epoch and every
`checkpoint_every_steps` optimizer steps. A resumed run skips the micro-batches its epoch already
consumed (the sampler order depends only on seed and epoch; augmentation only on seed, epoch and
index) and restores every rank's RNG states, so on CPU with deterministic settings it reaches the
same weights as an uninterrupted run. If the world size changed, rank RNG states are reseeded
(the run continues, not bitwise identical). A finished checkpoint is never continued: the next run
starts fresh.

Signals: SIGTERM/SIGINT set a flag; at the next sync point (every `train.sync_every` optimizer
steps, each step checkpoint, the epoch's end) all ranks agree to stop, the checkpoint is saved at
that step and `Interrupted` is raised (the stage exits 128 + signal).

Test hook: `TINYCLF_FAIL_RANK=<rank>` makes that rank raise just before its first training step
(used to test that one failing rank fails the whole torchrun job quickly). It has no other effect.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from tinyclf import atomic
from tinyclf.augment.batch import build_batch_preparer
from tinyclf.augment.device import DeviceAugment
from tinyclf.augment.per_image import PerImageAugment, build_augment
from tinyclf.data import arrays
from tinyclf.environment import device_name, environment_info
from tinyclf.errors import TinyclfError
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.device_data import (SPLITS, DeviceTrainBatches, DeviceValBatches, Placement, SplitSize,
                                         open_split, place_splits)
from tinyclf.loading.loader import LoaderSpeed, make_loader
from tinyclf.loading.normalize import ModelInput
from tinyclf.loading.samplers import BalancedDraw, EpochOrder, EpochSampler, LoaderEpochs, ShardSampler, SkipSampler
from tinyclf.model.architectures import create_model
from tinyclf.model.file import save_model_file
from tinyclf.model.init_weights import InitWeightsError, apply_init, describe_init
from tinyclf.model.memory import training_memory
from tinyclf.params import Params, TrainParams
from tinyclf.train import checkpoint, distributed
from tinyclf.train.checkpoint import RunCheckpoint, Trainables
from tinyclf.train.cost import RunCost
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import (NonFiniteLossError, Progress, StepControl, StepRecipe, evaluate, train_one_epoch,
                                  unwrap)
from tinyclf.train.recipe import (AUTOCAST_DTYPES, StepPlan, TrainingError, build_loss_and_mixup, build_optimizer,
                                  build_scheduler, configure_determinism, plan_steps, precision_note,
                                  resolve_aug_backend, resolve_compile, resolve_precision, scaled_lr, seed_everything)
from tinyclf.train.run_log import RunLog, say

COLLECTIVE_TIMEOUT_S = 600.0


class Interrupted(TinyclfError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved. The stage exits with 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum

    @classmethod
    def saved(cls, signal_name: str, signum: int, where: str, checkpoint: Path) -> Interrupted:
        """The one wording of a stop: which signal, where the run was, and how to go on."""
        return cls(f"stopped by {signal_name} {where}; checkpoint saved to {checkpoint}, run the stage again to resume",
                   signum)


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


@dataclass
class TrainData:
    """The prepared data of a run and how this rank loads it.

    `train_batches.epoch(epoch, skip_micro)` gives an epoch's (input, labels) micro-batches from
    `skip_micro` on; `val_batches` yields this rank's val shard as (uint8 images, labels). Both
    backends have them: DataLoaders for `workers`, tensors on the device for `device`, where
    `placement` says which splits are on the device and which in host memory (`train.device_data`).
    """

    classes: dict
    stats: dict
    backend: str  # the resolved train.aug_backend: workers or device
    num_train: int
    num_val: int
    plan: StepPlan
    train_batches: object
    val_batches: Iterable
    placement: Placement | None = None  # the device backend's

    @property
    def num_classes(self) -> int:
        return len(self.classes["classes"])

    @property
    def image_size(self) -> int:
        return int(self.stats["image_size"][0])  # prepared images are square

    @property
    def mean(self) -> list[float]:
        return self.stats["mean"]

    @property
    def std(self) -> list[float]:
        return self.stats["std"]


# --------------------------------------------------------------------------------------- the run
def run_training(params, prepared_dir, model_out, live_dir, checkpoint_dir, *, progress_bar: bool = True) -> dict:
    """Train per `params.train` on `prepared_dir`; write model_out, live_dir/*, checkpoint_dir/last.pt.

    Returns (on every rank) {"epochs", "val", "train_seconds", "images_per_s", "resumed_from"}.
    Raises TinyclfError subclasses with one-line messages (TrainingError, CheckpointError,
    PreparedDataError, ModelError, NonFiniteLossError, Interrupted).
    """
    info = distributed.init(timeout_s=COLLECTIVE_TIMEOUT_S)
    paths = RunPaths(Path(prepared_dir), Path(model_out), Path(live_dir), Path(checkpoint_dir))
    try:
        result = _train(info, params, paths, progress_bar=progress_bar and info.is_main)
        distributed.barrier(info)
        return result
    finally:
        distributed.cleanup()


def _train(info: DistInfo, params, paths: RunPaths, *, progress_bar: bool) -> dict:
    """The run, top to bottom: data, resume decision, model and recipe, the epoch loop, outputs."""
    train_params = params.train
    precision = resolve_precision(train_params.precision, info.device)
    configure_determinism(train_params.deterministic, info.device)
    data = load_train_data(paths.prepared, train_params, info)
    fingerprint = check_same_run_everywhere(params, data, info)
    # Decided before the model is built: only a fresh run loads train.init.
    state = checkpoint.resume_state(paths.checkpoints, fingerprint, info)
    parts, num_epochs = build_trainables(train_params, data, info, precision, load_init=state is None)
    run = RunSetup(info, params, precision, num_epochs, progress_bar=progress_bar,
                   weights="ema" if parts.ema is not None and train_params.save_weights == "ema" else "raw")
    ckpt = RunCheckpoint(paths.checkpoints, fingerprint, parts, info)
    progress = Progress()
    resumed_from = resume_or_start(ckpt, state, progress, train_params, info)
    train_model = wrap_for_training(parts.model, train_params, info)
    recipe = build_step_recipe(train_params, parts, data, info, precision)
    log = None
    if info.is_main:
        log = RunLog(paths.live, params.to_dict(), start_epoch=progress.epoch,
                     resuming=progress.epoch > 0 or progress.update > 0)
        say(describe_run(run, data))
        note = precision_note(train_params.precision, info.device)
        if note:
            say(note)
    cost = RunCost(train_params.model, data.num_classes, data.image_size, info.device.type, device_name(info.device),
                   info.world_size, compiled=resolve_compile(train_params, info.device))
    evals: dict[str, dict] = {}
    _simulate_failure_if_asked(info)
    with stop_on_signals() as stop:
        for epoch in range(progress.epoch, num_epochs):
            train_stats = train_epoch(run, train_model, data, recipe, progress, ckpt, stop)
            cost.add_epoch(train_stats["seconds"], train_stats["images"])
            evals = validate(run, parts, data)
            step_epoch_scheduler(parts.scheduler, train_params, epoch, evals[run.weights])
            if log is not None:
                log.log_epoch(epoch, num_epochs, train_stats, evals, run.weights, parts.optimizer.param_groups[0]["lr"],
                              mfu=cost.mfu(train_stats["images_per_s"]))
            progress.end_epoch(train_stats["seconds"], train_stats["images"])
            # Logged before saved: a kill in between re-runs this epoch and the log drops its row on resume.
            ckpt.save(progress)
            if stop.requested and progress.epoch < num_epochs:
                raise Interrupted.saved(stop.name, stop.signum, f"after epoch {progress.epoch}", ckpt.path)
    if info.is_main:
        write_outputs(run, paths, data, parts, progress, cost)
        log.end()
    # Finished: the checkpoint stays but is marked complete, so the next run starts fresh instead
    # of continuing this one under possibly different params.
    ckpt.save(progress, complete=True)
    seconds = progress.run_seconds
    return {"epochs": num_epochs, "val": evals.get(run.weights, {}), "train_seconds": seconds,
            "images_per_s": progress.run_images / seconds if seconds > 0 else None, "resumed_from": resumed_from}


# --------------------------------------------------------------------------------------- setup
def load_train_data(prepared_dir: Path, train_params, info: DistInfo) -> TrainData:
    """The prepared splits, the step plan and this rank's batches (PreparedDataError if data is missing)."""
    classes = arrays.load_classes(prepared_dir)
    stats = arrays.load_stats(prepared_dir)
    backend = resolve_aug_backend(train_params, info.device)
    if backend == "device":
        *loaded, placement = _device_batches(prepared_dir, train_params, stats, len(classes["classes"]), info)
        return TrainData(classes, stats, backend, *loaded, placement=placement)
    return TrainData(classes, stats, backend, *_loader_batches(prepared_dir, train_params, stats, info))


def _loader_batches(prepared_dir: Path, train_params, stats: dict, info: DistInfo):
    """The workers backend: albumentations per image in DataLoader processes over the memory-mapped arrays."""
    augment = build_augment(train_params, int(stats["image_size"][0]))
    train_set = PreparedDataset(prepared_dir, "train", PerImageAugment(augment, seed=train_params.seed))
    val_set = PreparedDataset(prepared_dir, "val")
    plan = plan_steps(len(train_set), train_params, info.world_size)
    sampler = SkipSampler(EpochSampler(len(train_set), num_replicas=info.world_size, rank=info.rank,
                                       shuffle=True, seed=train_params.seed, drop_last=False,
                                       balance=balanced_draw(train_params, train_set.labels)))
    speed = LoaderSpeed(workers=train_params.workers, prefetch_factor=train_params.prefetch_factor,
                        pin_memory=info.device.type == "cuda")
    train_loader = make_loader(train_set, sampler, plan.per_rank, speed, drop_last=True)
    val_loader = make_loader(val_set, ShardSampler(len(val_set), info.rank, info.world_size), plan.per_rank, speed,
                             drop_last=False)
    for loader in (train_loader, val_loader):
        if loader.num_workers > 0:
            loader.worker_init_fn = _ignore_sigint_worker(loader.worker_init_fn)
    return len(train_set), len(val_set), plan, LoaderEpochs(train_loader, sampler, plan.per_rank), val_loader


def _device_batches(prepared_dir: Path, train_params, stats: dict, num_classes: int, info: DistInfo):
    """The device backend: each split on the device when it fits beside training (`train.device_data`,
    decided from the arrays' headers before anything is loaded), else in host memory with each batch
    copied over; batches augmented on the device."""
    sizes = {split: SplitSize.read(prepared_dir, split) for split in SPLITS}
    plan = plan_steps(sizes["train"].count, train_params, info.world_size)
    image_size = int(stats["image_size"][0])
    placement = place_splits({split: size.nbytes for split, size in sizes.items()}, info.device,
                             train_params.device_data,
                             lambda: training_memory(train_params.model, num_classes, image_size, plan.per_rank))
    train_split, val_split = (open_split(prepared_dir, split, info.device, placement) for split in SPLITS)
    augment = DeviceAugment(train_params, image_size, stats["mean"], stats["std"],
                            seed=train_params.seed, channels_last=train_params.channels_last)
    order = EpochOrder(train_params.seed, num_replicas=info.world_size, rank=info.rank,
                       balance=balanced_draw(train_params, train_split.host_labels))
    train_batches = DeviceTrainBatches(train_split, augment, order, per_rank=plan.per_rank,
                                       micro_per_epoch=plan.micro_per_epoch)
    val_batches = DeviceValBatches(val_split, plan.per_rank, world=info.world_size, rank=info.rank)
    return len(train_split), len(val_split), plan, train_batches, val_batches, placement


def balanced_draw(train_params, labels) -> BalancedDraw | None:
    """train.balance: sampler -> the class-balanced draw both backends order their epochs by."""
    return BalancedDraw(labels) if train_params.balance == "sampler" else None


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


def _ignore_sigint_worker(previous):
    # Ctrl-C reaches the whole process group; the main process saves a checkpoint and stops, so its
    # DataLoader workers must not die first.
    def init(worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if previous is not None:
            previous(worker_id)
    return init


def build_trainables(train_params, data: TrainData, info: DistInfo, precision: str, *,
                     load_init: bool = True) -> tuple[Trainables, int]:
    """Model (with train.init's weights when `load_init`: a fresh run), optimizer, scheduler, EMA and
    fp16 scaler; and the epoch count the scheduler settled on."""
    from timm.layers import convert_sync_batchnorm
    from timm.utils import ModelEmaV3

    seed_everything(train_params.seed)  # the same initial weights on every rank
    model = create_model(train_params.model, data.num_classes).to(info.device)
    init = load_init_everywhere(model, train_params, info) if load_init else None
    if train_params.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.distributed and train_params.sync_bn:
        if info.device.type != "cuda":
            raise TrainingError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                                "set train.sync_bn=false for CPU runs")
        model = convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, train_params)
    scheduler, num_epochs = build_scheduler(optimizer, train_params, data.plan.updates_per_epoch)
    ema = (ModelEmaV3(model, decay=train_params.ema_decay, use_warmup=True, warmup_power=3 / 4)
           if train_params.ema else None)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return Trainables(model, optimizer, scheduler, ema, scaler, init), num_epochs


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
                      params=[p for p in parts.model.parameters() if p.requires_grad])


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
            + ("; class-balanced sampling" if train_params.balance == "sampler" else ""))


def _simulate_failure_if_asked(info: DistInfo) -> None:
    fail_rank = os.environ.get("TINYCLF_FAIL_RANK")  # the test hook of the module docstring
    if fail_rank is not None and int(fail_rank) == info.rank:
        raise RuntimeError(f"TINYCLF_FAIL_RANK={fail_rank}: simulated failure on rank {info.rank}")


# --------------------------------------------------------------------------------------- epochs
class StopRequest:
    """The signal that asked the run to stop, if any (set by `stop_on_signals`)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        # Another rank's signal can stop this one: it then reports SIGTERM, the usual scheduler signal.
        return signal.Signals(self.signum or signal.SIGTERM).name


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGTERM/SIGINT set `stop.signum` instead of killing the process (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread; elsewhere signals act as usual.
        yield stop
        return

    def handler(signum, _frame):
        stop.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train_epoch(run: RunSetup, train_model: nn.Module, data: TrainData, recipe: StepRecipe, progress: Progress,
                ckpt: RunCheckpoint, stop: StopRequest) -> dict:
    """Epoch `progress.epoch` from where it stands: progress bar, step checkpoints, and on a signal a
    checkpoint then `Interrupted`. `train_model` runs forward (DDP/compiled; the EMA follows the
    module under it). Returns train_one_epoch's metrics."""
    epoch, plan, train_params = progress.epoch, data.plan, run.train
    batches = data.train_batches.epoch(epoch, skip_micro=progress.micro_in_epoch)
    bar = None
    if run.progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=plan.micro_per_epoch, initial=progress.micro_in_epoch,
                   desc=f"epoch {epoch + 1}/{run.num_epochs}", unit="batch", dynamic_ncols=True, leave=False)
    control = StepControl(sync_every=train_params.sync_every, checkpoint_every=train_params.checkpoint_every_steps,
                          save_checkpoint=ckpt.save, should_stop=lambda: stop.requested,
                          on_batch=bar.update if bar is not None else None)
    try:
        stats = train_one_epoch(train_model, batches, recipe, progress, micro_batches=plan.micro_per_epoch,
                                info=run.info, control=control)
    except Exception:
        if not stop.requested:
            raise
        # A signal also reached the loader workers. The last optimizer step is complete, but it was
        # not checked (checks run every sync_every steps): the weights are, before they are saved.
        _refuse_non_finite_weights(unwrap(train_model), progress)
        stats = {"stopped": True}
    finally:
        if bar is not None:
            bar.close()
    if stats["stopped"]:
        ckpt.save(progress)  # the epoch's partial time and sums travel in the ranks' entries
        raise Interrupted.saved(stop.name, stop.signum or signal.SIGTERM,
                                f"at optimizer step {progress.update} (epoch {epoch + 1})", ckpt.path)
    return stats


def _refuse_non_finite_weights(model: nn.Module, progress: Progress) -> None:
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise NonFiniteLossError(f"the weights became non-finite by optimizer step {progress.update}; no checkpoint "
                                 "was written after the last good one. Lower train.lr or set train.clip_grad")


def validate(run: RunSetup, parts: Trainables, data: TrainData) -> dict[str, dict]:
    """Val loss/top-1/top-5 of the EMA weights (when there are some) and of the raw weights, exact over
    ranks, with rank 0's BatchNorm statistics on every rank: those are what the model file gets (each
    rank's last forward updated its own from its shard; DDP hands rank 0's out again at the next one)."""
    options = dict(to_input=ModelInput(data.mean, data.std, channels_last=run.train.channels_last), info=run.info,
                   autocast_dtype=run.autocast_dtype)
    evals = {}
    if parts.ema is not None:
        distributed.broadcast_buffers(parts.ema.module, run.info)
        evals["ema"] = evaluate(parts.ema.module, data.val_batches, **options)
    distributed.broadcast_buffers(parts.model, run.info)
    evals["raw"] = evaluate(parts.model, data.val_batches, **options)
    return evals


def step_epoch_scheduler(scheduler, train_params, epoch: int, val: dict) -> None:
    """The scheduler's per-epoch step; plateau watches val top-1 of the weights that are saved."""
    if train_params.sched == "plateau":
        scheduler.step(epoch + 1, val["top1"])
    else:
        scheduler.step(epoch + 1)


# --------------------------------------------------------------------------------------- outputs
def write_outputs(run: RunSetup, paths: RunPaths, data: TrainData, parts: Trainables, progress: Progress,
                  cost: RunCost) -> None:
    """Rank 0: the model file (EMA or raw weights) and run.json (hardware and timing)."""
    final = parts.ema.module if run.weights == "ema" else parts.model
    save_model_file(paths.model_out, final, model_meta(run, data, parts.init))
    record = run_record(run, data, progress)
    record.update(cost.record(progress.run_seconds))
    atomic.write_json(paths.live / "run.json", record)


def model_meta(run: RunSetup, data: TrainData, init: dict | None = None) -> dict:
    """The model file's meta (docs/architecture.md, "model file"); `init`: what the weights started from."""
    params = run.params
    classes, stats = data.classes, data.stats
    h, w = (int(v) for v in stats["image_size"])
    return {
        "model": params.train.model,
        "num_classes": data.num_classes,
        "classes": [{"id": c["id"], "name": c["name"]} for c in classes["classes"]],
        "image_size": h if h == w else [h, w],
        "mean": [float(x) for x in stats["mean"]],
        "std": [float(x) for x in stats["std"]],
        "dataset": stats.get("dataset", params.data.dataset),
        "generated": bool(stats.get("generated", False) or classes.get("generated", False)),
        "weights": run.weights,
        "params": params.to_dict(),
        "environment": environment_info(run.info.device),
        "epochs_trained": run.num_epochs,
        # None only for a run resumed from a checkpoint older than the record (not known).
        "init": init,
    }


def run_record(run: RunSetup, data: TrainData, progress: Progress) -> dict:
    """run.json: the hardware and timing facts the report shows (kept out of model.pt so its bytes
    are reproducible)."""
    train_params, info, device = run.train, run.info, run.info.device
    seconds = progress.run_seconds
    images_per_s = progress.run_images / seconds if seconds > 0 else None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "device_count": info.world_size if device.type == "cuda" else 0,
        "world_size": info.world_size,
        "nodes": max(1, info.world_size // info.local_world_size),
        "precision": run.precision,
        "compile": resolve_compile(train_params, device),
        "channels_last": train_params.channels_last,
        "aug_backend": data.backend,
        "epochs": run.num_epochs,
        "train_seconds": round(seconds, 3),
        "train_images": progress.run_images,
        "images_per_s": round(images_per_s, 1) if images_per_s else None,
        "generated": bool(data.stats.get("generated", False)),
    }

