"""What every stage script shares: the `--params` option, validating params before any work, and
one way of reporting errors.

A stage script builds its parser with `stage_parser`, then calls `run_stage(name, args, work)`:
params.yaml is loaded and checked first (before torch and friends are imported, which takes
seconds: bad params fail at once), then `work(params)` runs and does its own heavy imports. Any
`TinyclfError` becomes one line on stderr, `<stage>: <message>` (under torchrun: once per machine,
`<stage> (rank N): …` from the other machines), and the process exits with the error's
`exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from tinyclf.errors import ArgumentParser, TinyclfError, skip_the_final_collection_at_exit
from tinyclf.params import Params, load_params


def stage_parser(description: str, *, progress_bars: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the options stages share: --params, and --no-progress for those with bars."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)")
    if progress_bars:
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def run_stage(name: str, args: argparse.Namespace, work: Callable[[Params], object]) -> int:
    """Validate `args.params`, run `work(params)`, and turn a TinyclfError into one line and an exit code."""
    skip_the_final_collection_at_exit()
    try:
        work(load_params(args.params))
    except TinyclfError as exc:
        rank = int(os.environ.get("RANK", "0"))
        # Under torchrun every rank exits non-zero, but the processes of one machine read the same
        # params, data and checkpoint (and agree on a non-finite loss), so they fail alike: one line
        # per machine, from its first process, says it once. Another machine's line names its rank,
        # since a file missing on one node is the kind of problem it reports.
        if int(os.environ.get("LOCAL_RANK", str(rank))) == 0:
            prefix = f"{name} (rank {rank})" if rank else name
            print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process: the one that prints results."""
    return int(os.environ.get("RANK", "0")) == 0
