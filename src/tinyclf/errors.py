"""The one base class of the errors a user can fix.

Every error tinyclf raises on purpose (bad params, a missing or corrupt input, a refused
checkpoint, a non-finite loss, …) subclasses `TinyclfError`, keeping the builtin base callers
relied on before (`ParamsError` is still a `ValueError`, `DownloadError` a `RuntimeError`).
Its message is one line that names the bad input, so a stage or the `tinyclf` command catches
this one class, prints `<stage>: <message>` and exits with `exit_code`, and anything else is a
bug that keeps its traceback.
"""

from __future__ import annotations


class TinyclfError(Exception):
    """A problem with the user's input or setup, described in one line that names it."""

    # What a stage or the CLI exits with; 128 + signal number for an interrupted run.
    exit_code: int = 1
