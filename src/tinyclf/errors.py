"""The one base class of the errors a user can fix.

Every error tinyclf raises on purpose (bad params, a missing or corrupt input, a refused
checkpoint, a non-finite loss, …) subclasses `TinyclfError`, keeping the builtin base callers
relied on before (`ParamsError` is still a `ValueError`, `DownloadError` a `RuntimeError`).
Its message is one line that names the bad input, so a stage or the `tinyclf` command catches
this one class, prints `<stage>: <message>` and exits with `exit_code`, and anything else is a
bug that keeps its traceback. `ArgumentParser` reports a mistyped command line the same way: one
line, not argparse's usage block.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
from typing import Callable


class TinyclfError(Exception):
    """A problem with the user's input or setup, described in one line that names it."""

    # What a stage or the CLI exits with; 128 + signal number for an interrupted run.
    exit_code: int = 1


def skip_the_final_collection_at_exit() -> None:
    """Let this process end without Python's last garbage collection.

    At exit the interpreter walks every object torch, timm and the rest have made, which takes
    about a second per process (docs/benchmarks.md, "Process start and exit"), and a stage runs
    as four to six such processes. By then a command has closed and renamed its outputs and needs
    none of it: freezing the heap from an exit hook makes that walk skip it. Registered first, the
    hook runs after every other exit hook, which all still run; stdout and stderr are still flushed.
    """
    global _final_collection_skipped
    if not _final_collection_skipped:
        atexit.register(gc.freeze)
        _final_collection_skipped = True


_final_collection_skipped = False


def run_command(prog: str, work: Callable[[], int | None]) -> int:
    """A command's exit code: `work()`'s (None is 0), or, for a TinyclfError, the error's, after one
    line on stderr, `<prog>: <message>`. Anything else is a bug and keeps its traceback."""
    skip_the_final_collection_at_exit()
    try:
        code = work()
    except TinyclfError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0 if code is None else code


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line: what is wrong, and where the help is.

    (Subcommand parsers made with `add_subparsers` inherit the class, so they answer the same way.)
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class PrepareError(TinyclfError):
    """An archive or member that cannot be prepared; the message (one line) names it.

    Here rather than in `tinyclf.data.preprocess`, because the format modules raise it and
    preprocess dispatches to them: one module below both, and no import circle."""
