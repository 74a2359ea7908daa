"""The train stage as a separate process that a test can kill: started as dvc.yaml starts it, in its
own session (a kill of the group hits it and its loader workers, as a crashed machine would), and
a wait for its resume checkpoint to reach a given state."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from support.helpers import REPO, venv_env

from tinyclf.train import checkpoint


def start_stage(params_file: Path, prepared: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "stages/train.py", "--params", str(params_file), "--data", str(prepared),
         "--model-out", str(out / "model.pt"), "--live", str(out / "live"), "--checkpoints", str(out / "ck"),
         "--no-progress"],
        cwd=REPO, env=venv_env(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def wait_for_checkpoint(path: Path, proc: subprocess.Popen, ready: Callable[[dict], bool] = lambda state: True,
                        timeout: float = 120.0) -> dict:
    """Poll `path` until it holds a checkpoint for which `ready(state)` is true; return that state.
    Fails naming the stage's output when the stage ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before the kill (rc {proc.returncode}):\n{proc.stderr.read()}")
        if path.exists():
            try:
                state = checkpoint.load(path)
            except checkpoint.CheckpointError:
                state = None  # os.replace makes this unreachable in practice; keep polling if it ever happens
            if state is not None and ready(state):
                return state
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint in the state waited for appeared at {path} within {timeout:.0f} s")


def kill_when(path: Path, proc: subprocess.Popen, ready: Callable[[dict], bool], timeout: float = 120.0) -> dict:
    """kill -9 the stage (its whole process group) while its checkpoint is in the state `ready` asks for;
    return that state. The stage is frozen (SIGSTOP) before the file is read again: between a read
    and a kill it could otherwise write the next checkpoint. If it did, it runs on to the next chance."""
    import os
    import signal

    deadline = time.monotonic() + timeout
    while True:
        wait_for_checkpoint(path, proc, ready, timeout=max(1.0, deadline - time.monotonic()))
        os.killpg(proc.pid, signal.SIGSTOP)
        state = checkpoint.load(path)
        if ready(state):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return state
        os.killpg(proc.pid, signal.SIGCONT)
