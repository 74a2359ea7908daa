"""Stopping a run on a signal: SIGTERM/SIGINT set a flag instead of killing the process; at the
next sync point (every `train.sync_every` optimizer steps, each step checkpoint, the epoch's end)
all ranks agree to stop, the checkpoint is saved at that step and `Interrupted` is raised (the
stage exits 128 + signal). DataLoader workers ignore SIGINT, so a Ctrl-C reaching the whole process
group does not kill them before the main process has saved.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tinyclf.errors import TinyclfError


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


def ignore_sigint_in_workers(loader) -> None:
    """The loader's worker processes ignore SIGINT (Ctrl-C reaches the whole process group; the main
    process saves a checkpoint and stops, so its workers must not die first)."""
    if loader.num_workers > 0:
        loader.worker_init_fn = _ignore_sigint_worker(loader.worker_init_fn)


def _ignore_sigint_worker(previous):
    def init(worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if previous is not None:
            previous(worker_id)
    return init
