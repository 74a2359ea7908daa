"""What a finished run leaves, written by rank 0: the model file (`models/model.pt`: the weights
`train.save_weights` names, of the epoch `train.keep` selects, with plain metadata) and run.json
(hardware, timing and cost facts, kept out of the model file so its bytes are reproducible, and
the selected epoch). The model file also gets the temperature of those weights, fitted on val
(`train.calibrate`)."""

from __future__ import annotations

import copy

from torch import nn

from tinyclf import atomic
from tinyclf.environment import device_name, environment_info
from tinyclf.model.file import save_model_file
from tinyclf.loading.normalize import ModelInput
from tinyclf.train.calibrate import calibrate_on_val
from tinyclf.train.checkpoint import Trainables
from tinyclf.train.cost import RunCost
from tinyclf.train.data_setup import TrainData
from tinyclf.train.engine import Progress
from tinyclf.train.recipe import resolve_compile
from tinyclf.train.setup import RunPaths, RunSetup


def write_outputs(run: RunSetup, paths: RunPaths, data: TrainData, parts: Trainables, progress: Progress,
                  cost: RunCost) -> None:
    """Rank 0: the model file (EMA or raw weights of the selected epoch) and run.json (hardware, timing,
    the selected epoch)."""
    last = parts.ema.module if run.weights == "ema" else parts.model
    selected = parts.selection.record(progress.epoch)
    weights = parts.selection.weights_to_save(last)
    calibration = calibrate_on_val(_module_with(last, weights), paths.prepared,
                                   ModelInput(data.mean, data.std, channels_last=run.train.channels_last),
                                   run.info.device, run.autocast_dtype)
    meta = model_meta(run, data, parts.init, epochs_run=progress.epoch, selected=selected)
    if parts.finetune is not None:
        meta["finetune"] = parts.finetune
    meta.update(temperature=calibration["temperature"], calibration=calibration)
    save_model_file(paths.model_out, weights, meta)
    record = run_record(run, data, progress)
    record.update(cost.record(progress.run_seconds))
    record["selected"] = selected
    atomic.write_json(paths.live / "run.json", record)


def _module_with(last: nn.Module, weights: nn.Module | dict) -> nn.Module:
    """A module holding `weights`: `last` itself, or a copy of it with the selected epoch's state."""
    if isinstance(weights, nn.Module):
        return weights
    module = copy.deepcopy(last)
    module.load_state_dict(weights)
    return module


def model_meta(run: RunSetup, data: TrainData, init: dict | None = None, *, epochs_run: int | None = None,
               selected: dict | None = None) -> dict:
    """The model file's meta (docs/architecture.md, "model file"); `init`: what the weights started from;
    `epochs_run` (default: all the scheduler planned) and `selected`: `EpochSelection.record`."""
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
        "epochs_trained": run.num_epochs if epochs_run is None else epochs_run,
        # None only for a run resumed from a checkpoint older than the record (not known).
        "init": init,
        "selected": selected,
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
        "epochs": progress.epoch,
        "train_seconds": round(seconds, 3),
        "train_images": progress.run_images,
        "images_per_s": round(images_per_s, 1) if images_per_s else None,
        "generated": bool(data.stats.get("generated", False)),
    }

