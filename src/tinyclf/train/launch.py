"""How the train stage starts its processes: itself for one, torchrun for several.

dvc.yaml runs `python stages/train.py …`. With `train.nproc_per_node: 1` that process trains: a
torchrun launcher would only add a second Python process that imports torch, and a rendezvous, for
nothing (docs/benchmarks.md, "Process start and exit"). With N > 1 the process replaces itself
(exec: the same pid, so DVC's and a scheduler's signals reach torchrun, which passes them to its
workers) with `torchrun --standalone --nproc_per_node=N` on the same script and arguments. A process
that torchrun started (LOCAL_RANK set: this relaunch, or a multi-node torchrun run by hand or by
the Slurm script) is never relaunched.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def torchrun_command(nproc_per_node: int, script: Path, argv: list[str]) -> list[str] | None:
    """The command that runs `script argv` as `nproc_per_node` processes on this machine, or None
    when this process should train itself (one process asked for, or already started by torchrun)."""
    if nproc_per_node <= 1 or "LOCAL_RANK" in os.environ:
        return None
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            str(script), *argv]


def relaunch_under_torchrun(nproc_per_node: int, script: Path, argv: list[str]) -> None:
    """Become `torchrun_command(...)` when there is one (this call then never returns)."""
    command = torchrun_command(nproc_per_node, script, argv)
    if command is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(command[0], command)
