"""When the train stage trains by itself and when it hands itself to torchrun (train/launch.py).
That the handed-over stage really runs as two processes: tests/train/test_ddp.py's first test."""

from __future__ import annotations

import sys
from pathlib import Path

from tinyclf.train.launch import torchrun_command

SCRIPT = Path("stages/train.py")


def test_one_process_trains_by_itself(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert torchrun_command(1, SCRIPT, ["--data", "d"]) is None


def test_several_processes_become_torchrun_on_the_same_script_and_arguments(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert torchrun_command(4, SCRIPT, ["--data", "d"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
        "stages/train.py", "--data", "d"]


def test_a_process_that_torchrun_started_is_never_started_again(monkeypatch):
    # A worker of the stage's own relaunch, or of a multi-node torchrun run by hand, whatever params.yaml says.
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert torchrun_command(4, SCRIPT, ["--data", "d"]) is None
