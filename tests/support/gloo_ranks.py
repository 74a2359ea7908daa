"""Several real gloo processes on this machine, each running one function, for the tests that need
ranks without a whole torchrun stage: `run_ranks(fn, world, *args)` spawns them, joins a process
group on loopback and returns what each rank's `fn(info, *args)` returned (plain data), in rank order.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from support.helpers import free_port
from tinyclf.train.distributed import DistInfo


def run_ranks(fn: Callable, world: int, *args) -> list:
    """`fn(info, *args)` on `world` spawned processes; `fn` must live in an importable module."""
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_rank_main, args=(fn, world, free_port(), out, args), nprocs=world, start_method="spawn")
        return [json.loads((Path(out) / f"{rank}.json").read_text()) for rank in range(world)]


def _rank_main(rank: int, fn: Callable, world: int, port: int, out: str, args: tuple) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        info = DistInfo(rank=rank, world_size=world, local_rank=rank, local_world_size=world,
                        device=torch.device("cpu"))
        result = fn(info, *args)
    finally:
        dist.destroy_process_group()
    (Path(out) / f"{rank}.json").write_text(json.dumps(result))
