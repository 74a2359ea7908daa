"""The resume checkpoint `checkpoints/last.pt`: what a run saves, how it is restored, and the
refusal of a checkpoint made with parameters that change the result.

On start, `resume_state(checkpoint_dir, fingerprint, info)` decides before the trainables exist (a
fresh run loads `train.init`, a resumed one must not); `RunCheckpoint` then pairs the two halves a
run uses: `restore(state, progress)` and `save(progress)` (every rank calls it: it gathers their
RNG states and sums; rank 0 writes atomically).

One file, written by rank 0, holding:
  format, fingerprint, complete (the run finished), epoch (epochs completed), update (optimizer
  steps in total), micro_in_epoch (micro-batches of epoch `epoch` already consumed: 0 at an epoch
  boundary), model / ema / optimizer / scheduler / scaler state dicts, init (what the run's starting
  weights were, `tinyclf.model.init_weights`: the resumed run reports it too), selection (the best
  epoch so far, its weights and the patience count, `tinyclf.train.selection`), world_size, and `ranks`: one
  entry per rank (gathered to rank 0) with that rank's RNG states (torch CPU, its own GPU's, numpy,
  python) and its running sums of the unfinished epoch.
Everything is a tensor or a plain type, so `torch.load(weights_only=True)` reads it.

A rank's CUDA RNG state is its own device's (`cuda_device`), so a run resumes with fewer visible
GPUs per process; a checkpoint of the older layout (`cuda`: every visible GPU's state) still loads,
each rank taking its own device's entry when the list has one.

What to do with an existing checkpoint (`resume_decision`):
- no file, or a `complete` one (the previous run finished: nothing to resume, and a finished run
  must never be continued under new params) -> start fresh;
- an unfinished one with the same fingerprint -> resume;
- an unfinished one with a different fingerprint -> refuse, naming the keys that differ.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tinyclf import atomic
from tinyclf.errors import TinyclfError
from tinyclf.train import distributed
from tinyclf.train.distributed import DistInfo

if TYPE_CHECKING:
    from tinyclf.train.engine import Progress
    from tinyclf.train.freeze import BackboneFreeze
    from tinyclf.train.selection import EpochSelection

CHECKPOINT_FORMAT = "tinyclf-checkpoint-v1"
CHECKPOINT_NAME = "last.pt"
# train keys that change only speed or bookkeeping, not the numbers a run produces. Every other
# train key (init and balance included) and the whole data section are in the fingerprint.
NOT_IN_FINGERPRINT = frozenset({
    "workers", "prefetch_factor", "compile", "channels_last", "nproc_per_node",
    "checkpoint_every_steps", "deterministic", "sync_every", "device_data",
})


class CheckpointError(TinyclfError):
    """A checkpoint that cannot be used (unreadable, foreign, or made with other params); one line."""


def fingerprint(params: Any, stats: dict, num_classes: int) -> dict:
    """Flat {key: value} of everything that changes the result of a run.

    The data and train params (less NOT_IN_FINGERPRINT) plus what the prepared data says about itself,
    because the same params can point at other data (official vs generated download).
    """
    d = params.to_dict()
    out: dict[str, Any] = {f"data.{k}": v for k, v in d["data"].items()}
    out.update({f"train.{k}": v for k, v in d["train"].items() if k not in NOT_IN_FINGERPRINT})
    out["prepared.dataset"] = stats.get("dataset")
    out["prepared.generated"] = bool(stats.get("generated"))
    out["prepared.image_size"] = list(stats.get("image_size", []))
    out["prepared.num_classes"] = int(num_classes)
    out["prepared.train_count"] = int(stats.get("splits", {}).get("train", {}).get("count", -1))
    out["prepared.mean"] = [round(float(x), 6) for x in stats.get("mean", [])]
    out["prepared.std"] = [round(float(x), 6) for x in stats.get("std", [])]
    return out


def fingerprint_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every key whose value differs (or exists on one side only)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            diffs.append(f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    return diffs


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def save(path: str | Path, state: dict) -> None:
    """Write atomically: a kill at any moment leaves the previous checkpoint or the new one, never half."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load(path: str | Path) -> dict:
    """Read a checkpoint with weights_only=True; CheckpointError naming the path when it is not one."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint") from None
    except Exception as exc:  # truncated zip, foreign pickle, …: the message names the file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              f"delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a tinyclf checkpoint; delete it to start over")
    return state


def resume_decision(path: str | Path, current_fingerprint: dict) -> dict | None:
    """The checkpoint to resume from, or None to start fresh; CheckpointError when it must be refused."""
    path = Path(path)
    if not path.exists():
        return None
    state = load(path)
    if state.get("complete"):
        return None
    diffs = fingerprint_diff(state.get("fingerprint", {}), current_fingerprint)
    if diffs:
        raise CheckpointError(
            f"{path} is from an unfinished run with other parameters that change the result "
            f"({'; '.join(diffs)}): delete {path.parent}/ to start over, or restore those parameters to resume it"
        )
    return state


# ------------------------------------------------------------------------------------ a run's state
def resume_state(checkpoint_dir: str | Path, fingerprint: dict, info: DistInfo) -> dict | None:
    """The state to resume from (on every rank), or None to start fresh; CheckpointError if refused.

    Rank 0 decides and sends only the decision, with the position it resumes from; every other rank
    then reads the file itself, from its own node (the checkpoint folder must be on storage every
    node sees, as the stage's other paths are). Sending the state instead would pickle the weights
    and optimizer state into one tensor on every GPU, after the data has filled them.
    """
    path = checkpoint_path(checkpoint_dir)
    state, decision = None, None
    if info.is_main:
        try:
            state = resume_decision(path, fingerprint)
            decision = ("resume", _position(state)) if state is not None else ("fresh", None)
        except CheckpointError as exc:
            decision = ("error", str(exc))
    kind, detail = distributed.broadcast_from_main(decision, info)
    if kind == "error":
        raise CheckpointError(detail)
    if kind == "fresh" or not info.distributed:
        return state
    error = None
    if not info.is_main:
        state, error = _read_what_main_read(path, detail)
    # When any rank cannot, every rank stops with the reason: none waits in the next collective.
    if distributed.any_rank([error is not None], info)[0]:
        raise CheckpointError(f"rank {info.rank}: {error}" if error else "another process could not read the "
                              "checkpoint rank 0 resumes from (it names the problem)")
    return state


def _position(state: dict) -> dict:
    """Where a checkpoint stands: what every rank's copy must agree on."""
    return {key: state[key] for key in ("epoch", "update", "micro_in_epoch", "world_size")}


def _read_what_main_read(path: Path, position: dict) -> tuple[dict | None, str | None]:
    """This rank's own read of the checkpoint rank 0 decided to resume, checked to be the same one:
    (state, None), or (None, why not)."""
    try:
        state = load(path)
    except CheckpointError as exc:
        return None, f"{exc} (rank 0 resumes from it: every node must see the same checkpoint folder)"
    if _position(state) != position:
        return None, (f"{path} on this node is at {_position(state)}, rank 0's at {position}: every node must see "
                      "the same checkpoint folder")
    return state, None


@dataclass
class Trainables:
    """The objects whose state a checkpoint holds. `ema` is timm's ModelEmaV3; `scaler` exists for fp16
    only; `init` is the record of the starting weights (`tinyclf.model.init_weights.apply_init`);
    `selection` the best epoch so far and the patience count (`tinyclf.train.selection`). Two hold no
    state of their own and are built again on resume: `freeze` (`tinyclf.train.freeze`: the epoch
    decides) and `finetune` (what the fine-tuning params set up, for the model file's meta)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any | None = None
    scaler: torch.amp.GradScaler | None = None
    init: dict | None = None
    selection: EpochSelection | None = None
    freeze: BackboneFreeze | None = None
    finetune: dict | None = None


class RunCheckpoint:
    """The resume checkpoint of one run: `checkpoint_dir/last.pt` for these trainables and this fingerprint."""

    def __init__(self, checkpoint_dir: str | Path, fingerprint: dict, parts: Trainables, info: DistInfo):
        self.path = checkpoint_path(checkpoint_dir)
        self.fingerprint = fingerprint
        self.parts = parts
        self.info = info

    def restore(self, state: dict, progress: Progress) -> bool:
        """Load `state` into the trainables and `progress`. Returns True when this rank's RNG streams and
        partial-epoch sums were restored too, False when the checkpoint came from another process count
        (the data order continues exactly; the caller reseeds the random streams)."""
        parts = self.parts
        parts.model.load_state_dict(state["model"])
        if parts.ema is not None and state.get("ema") is not None:
            parts.ema.module.load_state_dict(state["ema"])
        parts.optimizer.load_state_dict(state["optimizer"])
        _load_scheduler_state(parts.scheduler, state["scheduler"])
        if parts.scaler is not None and state.get("scaler"):
            parts.scaler.load_state_dict(state["scaler"])
        parts.init = state.get("init")  # the starting weights are the interrupted run's, not loaded again
        if parts.selection is not None:
            parts.selection.load_state(state.get("selection"))
            if not self.info.is_main:
                parts.selection.best_weights = None  # only rank 0 writes the model file
        progress.epoch = int(state["epoch"])
        progress.update = int(state["update"])
        progress.micro_in_epoch = int(state["micro_in_epoch"])
        progress.run_seconds = float(state.get("train_seconds", 0.0))
        progress.run_images = int(state.get("train_images", 0))
        if int(state["world_size"]) != self.info.world_size:
            return False  # per-rank RNG states and sums belong to other ranks; the sums stay 0
        mine = state["ranks"][self.info.rank]
        restore_rng(mine["rng"])
        for key, value in mine["sums"].items():
            setattr(progress, key, float(value))
        return True

    def save(self, progress: Progress, *, complete: bool = False) -> None:
        """Save at an optimizer-step boundary. All ranks call this (it gathers their RNG states); rank 0 writes.

        `complete` marks a finished run, which the next run does not continue.
        """
        mine = {"rng": capture_rng(), "sums": progress.sums()}
        ranks = distributed.gather_to_main(mine, self.info)
        if not self.info.is_main:
            return
        parts = self.parts
        save(self.path, {
            "fingerprint": self.fingerprint, "complete": complete, "epoch": progress.epoch,
            "update": progress.update, "micro_in_epoch": progress.micro_in_epoch,
            "world_size": self.info.world_size, "model": parts.model.state_dict(),
            "ema": parts.ema.module.state_dict() if parts.ema is not None else None,
            "optimizer": parts.optimizer.state_dict(), "scheduler": _scheduler_state(parts.scheduler),
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None, "ranks": ranks,
            "init": parts.init,
            "selection": parts.selection.state() if parts.selection is not None else None,
            # Completed epochs only: the current epoch's partial time travels in the ranks' sums.
            "train_seconds": progress.run_seconds, "train_images": progress.run_images,
        })


def _plateau_inside(scheduler) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    inner = getattr(scheduler, "lr_scheduler", None)
    return inner if isinstance(inner, torch.optim.lr_scheduler.ReduceLROnPlateau) else None


def _scheduler_state(scheduler) -> dict:
    """The scheduler's state. timm's plateau scheduler keeps only `best` in its own state dict, not
    the patience and cooldown counters of the torch ReduceLROnPlateau inside it, so a resumed run
    would restart its plateau logic: the inner scheduler's whole state goes along."""
    plateau = _plateau_inside(scheduler)
    if plateau is None:
        return scheduler.state_dict()
    return {"timm": scheduler.state_dict(), "plateau": plateau.state_dict()}


def _load_scheduler_state(scheduler, state: dict) -> None:
    plateau = _plateau_inside(scheduler)
    if plateau is None:
        scheduler.load_state_dict(state)
        return
    scheduler.load_state_dict(state["timm"])
    plateau.load_state_dict(state["plateau"])


# ------------------------------------------------------------------------------------ RNG states
def capture_rng() -> dict:
    """This process's RNG states as tensors and plain types (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
        # This rank's own GPU only: the others belong to other ranks, and a resumed run may see fewer.
        "cuda_device": torch.cuda.get_rng_state(torch.cuda.current_device()) if torch.cuda.is_available() else None,
    }
    return out


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        own = _own_cuda_state(state, device)
        if own is not None:
            torch.cuda.set_rng_state(own, device)


def _own_cuda_state(state: dict, device: int) -> torch.Tensor | None:
    """This rank's GPU RNG state: `cuda_device`, or from the older layout's list of every visible
    GPU, the entry of this device when there is one (None: the stream starts from the seed)."""
    if state.get("cuda_device") is not None:
        return state["cuda_device"]
    every_gpu = state.get("cuda") or []
    return every_gpu[device] if device < len(every_gpu) else None
