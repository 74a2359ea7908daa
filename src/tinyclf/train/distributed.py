"""One process or many under torchrun: rank, world size, device, and the few collectives training needs.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; a plain `python stages/train.py`
has none of them and runs as rank 0 of 1 without a process group. Backend: NCCL on CUDA, gloo on
CPU (so the whole multi-process path runs and is tested on a laptop).

Fail fast: a rank that raises exits non-zero at once and torchrun stops the others; a rank stuck in
a collective whose peer died gets an error from gloo/NCCL, and at worst the collective timeout
(`init(timeout_s=...)`) ends the wait.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_ranks() -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from the torchrun environment; (0, 1, 0, 1) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return rank, world, local_rank, local_world


def _set_cpu_threads(local_world_size: int) -> None:
    # Processes on one machine share its cores: N ranks each using every core oversubscribe the CPU
    # (torchrun sets OMP_NUM_THREADS=1 only for nproc_per_node > 1, and not at all for python).
    # An explicit OMP_NUM_THREADS wins.
    if os.environ.get("OMP_NUM_THREADS"):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // max(1, local_world_size)))


def init(timeout_s: float = 600.0, use_cuda: bool | None = None) -> DistInfo:
    """Start the process group when launched by torchrun with several processes; pick the device.

    `timeout_s` bounds every collective, so a peer that vanished cannot hang a rank forever.
    `use_cuda`: None uses CUDA when it is available.
    """
    rank, world, local_rank, local_world = env_ranks()
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        _set_cpu_threads(local_world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": device} if cuda else {}),
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world, device=device)


def all_reduce_sum(values: list[float] | torch.Tensor, info: DistInfo) -> list[float]:
    """Sum plain numbers over all ranks (float64, exact for counts); the identity on one process."""
    if not info.distributed:
        return [float(v) for v in values]
    # NCCL only reduces device tensors; gloo reduces CPU ones.
    tensor = torch.as_tensor(values, dtype=torch.float64).to(info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def any_rank(flags: Sequence[bool], info: DistInfo) -> list[bool]:
    """For each flag, True on every rank when it is true on at least one rank (one all_reduce for all).

    Ranks use it to agree at the same optimizer step, e.g. on [loss not finite, stop requested].
    """
    if not info.distributed:
        return [bool(f) for f in flags]
    tensor = torch.tensor([1.0 if f else 0.0 for f in flags], device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [v > 0 for v in tensor.tolist()]


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's `obj` as a list on rank 0 (None on the others); [obj] on one process."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) into `module` on every rank, in place.

    Each rank's last forward updated its own statistics from its own shard; rank 0's are the ones
    the model file gets, so validation on every rank must use them."""
    if not info.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
