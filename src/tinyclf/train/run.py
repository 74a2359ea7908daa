"""The train stage's run: params -> data, model, recipe -> epochs -> model file, DVCLive, checkpoints.

`run_training(params, prepared_dir, model_out, live_dir, checkpoint_dir)` runs in every process
(one, or one per rank under torchrun); only rank 0 logs, prints and writes files. `_train` reads
top to bottom: data (`train.data_setup`), the resume decision (`train.checkpoint`), model and
recipe (`train.setup`), the epoch loop (one epoch is `train.engine.train_one_epoch`, then
validation and the epoch's part in choosing what the model file keeps, `train.selection`), outputs
(`train.outputs`). A stop on SIGTERM/SIGINT is `train.signals`; a stop for lack of improvement
(`train.patience`) ends the loop early and writes the outputs as a finished run does.

Resume (`tinyclf.train.checkpoint`): `checkpoints/last.pt` is written after every epoch and every
`checkpoint_every_steps` optimizer steps. A resumed run skips the micro-batches its epoch already
consumed (the sampler order depends only on seed and epoch; augmentation only on seed, epoch and
index) and restores every rank's RNG states, so on CPU with deterministic settings it reaches the
same weights as an uninterrupted run. If the world size changed, rank RNG states are reseeded
(the run continues, not bitwise identical). A finished checkpoint is never continued: the next run
starts fresh.

Test hook: `TINYCLF_FAIL_RANK=<rank>` makes that rank raise just before its first training step
(used to test that one failing rank fails the whole torchrun job quickly). It has no other effect.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from torch import nn

from tinyclf.environment import device_name
from tinyclf.loading.normalize import ModelInput
from tinyclf.train import checkpoint, distributed
from tinyclf.train.checkpoint import RunCheckpoint, Trainables
from tinyclf.train.cost import RunCost
from tinyclf.train.data_setup import TrainData, load_train_data
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import (NonFiniteLossError, Progress, StepControl, StepRecipe, evaluate, train_one_epoch,
                                  unwrap)
from tinyclf.train.outputs import write_outputs
from tinyclf.train.param_groups import schedule_lr
from tinyclf.train.recipe import (TrainingError, configure_determinism, precision_note, resolve_compile,
                                  resolve_precision)
from tinyclf.train.run_log import RunLog, say
from tinyclf.train.setup import (RunPaths, RunSetup, build_step_recipe, build_trainables, check_same_run_everywhere,
                                 describe_run, enter_epoch, resume_or_start, wrap_for_training)
from tinyclf.train.signals import Interrupted, StopRequest, stop_on_signals

COLLECTIVE_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------------------- the run
def run_training(params, prepared_dir, model_out, live_dir, checkpoint_dir, *, progress_bar: bool = True) -> dict:
    """Train per the `train` params on `prepared_dir`; write model_out, live_dir/*, checkpoint_dir/last.pt.

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
    _refuse_selection_without_val(train_params, data)
    fingerprint = check_same_run_everywhere(params, data, info)
    # Decided before the model is built: only a fresh run loads train.init.
    state = checkpoint.resume_state(paths.checkpoints, fingerprint, info)
    parts, num_epochs = build_trainables(train_params, data, info, precision, load_init=state is None)
    run = RunSetup(info, params, precision, num_epochs, progress_bar=progress_bar,
                   weights="ema" if parts.ema is not None and train_params.save_weights == "ema" else "raw")
    ckpt = RunCheckpoint(paths.checkpoints, fingerprint, parts, info)
    progress = Progress()
    resumed_from = resume_or_start(ckpt, state, progress, train_params, info)
    enter_epoch(parts, progress.epoch)  # a frozen backbone (train.freeze) before DDP sees the parameters
    train_model = wrap_for_training(parts.model, train_params, info)
    recipe = build_step_recipe(train_params, parts, data, info, precision)
    log = _start_log(run, paths, data, progress)
    cost = RunCost(train_params.model, data.num_classes, data.image_size, info.device.type, device_name(info.device),
                   info.world_size, compiled=resolve_compile(train_params, info.device))
    evals: dict[str, dict] = {}
    selection = parts.selection
    _simulate_failure_if_asked(info)
    with stop_on_signals() as stop:
        for epoch in range(progress.epoch, num_epochs):
            if selection.stopped_early:
                break  # resumed after the decision to stop: nothing more to train
            if enter_epoch(parts, epoch):  # the backbone unfreezes: DDP must register its parameters
                train_model = wrap_for_training(parts.model, train_params, info)
                if info.is_main:
                    say(f"train: epoch {epoch + 1}: the whole network trains from here (only the classifier "
                        f"trained in the first {epoch}, train.freeze_epochs)")
            train_stats = train_epoch(run, train_model, data, recipe, progress, ckpt, stop)
            cost.add_epoch(train_stats["seconds"], train_stats["images"])
            evals = validate(run, parts, data)
            select_epoch(run, parts, epoch, evals)
            step_epoch_scheduler(parts.scheduler, train_params, epoch, evals[run.weights])
            if log is not None:
                log.log_epoch(epoch, num_epochs, train_stats, evals, run.weights, schedule_lr(parts.optimizer),
                              mfu=cost.mfu(train_stats["images_per_s"]))
            progress.end_epoch(train_stats["seconds"], train_stats["images"])
            # Logged before saved: a kill in between re-runs this epoch and the log drops its row on resume.
            ckpt.save(progress)
            if selection.stopped_early:
                break
            if stop.requested and progress.epoch < num_epochs:
                raise Interrupted.saved(stop.name, stop.signum, f"after epoch {progress.epoch}", ckpt.path)
    if info.is_main:
        write_outputs(run, paths, data, parts, progress, cost)
        log.end(selection.record(progress.epoch))
    # Finished: the checkpoint stays but is marked complete, so the next run starts fresh instead
    # of continuing this one under possibly different params.
    ckpt.save(progress, complete=True)
    seconds = progress.run_seconds
    return {"epochs": progress.epoch, "val": evals.get(run.weights, {}), "train_seconds": seconds,
            "images_per_s": progress.run_images / seconds if seconds > 0 else None, "resumed_from": resumed_from}


def _start_log(run: RunSetup, paths: RunPaths, data: TrainData, progress: Progress) -> RunLog | None:
    """Rank 0: the DVCLive log (continued when resuming) and the run's first console lines."""
    if not run.info.is_main:
        return None
    log = RunLog(paths.live, run.params.to_dict(), start_epoch=progress.epoch,
                 resuming=progress.epoch > 0 or progress.update > 0)
    say(describe_run(run, data))
    note = precision_note(run.train.precision, run.info.device)
    if note:
        say(note)
    return log


def _refuse_selection_without_val(train_params, data: TrainData) -> None:
    if data.num_val == 0 and (train_params.keep == "best" or train_params.patience > 0):
        raise TrainingError(f"the val split is empty: train.keep=best and train.patience need val images to "
                            f"choose by; set train.keep=last and train.patience=0, or give the data a val split")


def _simulate_failure_if_asked(info: DistInfo) -> None:
    fail_rank = os.environ.get("TINYCLF_FAIL_RANK")  # the test hook of the module docstring
    if fail_rank is not None and int(fail_rank) == info.rank:
        raise RuntimeError(f"TINYCLF_FAIL_RANK={fail_rank}: simulated failure on rank {info.rank}")



# --------------------------------------------------------------------------------------- epochs
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


def select_epoch(run: RunSetup, parts: Trainables, epoch: int, evals: dict[str, dict]) -> None:
    """The epoch's part in what the model file keeps and in stopping early. Every rank decides from
    rank 0's value, so all stop at the same epoch (the reduced metrics already agree; this makes it
    certain rather than a matter of float bits)."""
    selection = parts.selection
    value = distributed.broadcast_from_main(evals[run.weights][selection.value_key], run.info)
    weights = parts.ema.module if run.weights == "ema" else parts.model
    selection.observe(epoch, value, weights, keep_copy=run.info.is_main)


def step_epoch_scheduler(scheduler, train_params, epoch: int, val: dict) -> None:
    """The scheduler's per-epoch step; plateau watches val top-1 of the weights that are saved."""
    if train_params.sched == "plateau":
        scheduler.step(epoch + 1, val["top1"])
    else:
        scheduler.step(epoch + 1)

