"""How a tinyclf command ends (errors.py): its exit code, its one-line error, and an exit that skips
Python's last garbage collection while every exit hook still runs."""

from __future__ import annotations

import subprocess
import sys

from support.helpers import REPO, venv_env

# A hook registered before the command runs last: it sees the heap as the final collection would.
COMMAND = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
from tinyclf.errors import TinyclfError, run_command
def work():
    atexit.register(lambda: print("the command's own hook ran", flush=True))
    print("work done", end="\\n" if sys.argv[1] == "ok" else "", flush=False)
    if sys.argv[1] != "ok":
        raise TinyclfError("bad input: x.jpg")
sys.exit(run_command("tinyclf t", work))
"""


def run_command_in_a_process(outcome: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", COMMAND, outcome], cwd=REPO, env=venv_env(REPO),
                          capture_output=True, text=True, timeout=60)


def test_a_command_ends_with_its_hooks_run_its_output_flushed_and_no_final_collection():
    proc = run_command_in_a_process("ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "work done\nthe command's own hook ran\nfrozen at exit: True\n"


def test_a_failing_command_says_one_line_and_exits_with_the_errors_code():
    proc = run_command_in_a_process("fail")
    assert proc.returncode == 1
    assert proc.stderr == "tinyclf t: bad input: x.jpg\n"
    assert proc.stdout == "work done" + "the command's own hook ran\nfrozen at exit: True\n"
