"""`tinyclf compare`: runs side by side, best top-1 first, from DVC's own records.

    tinyclf compare                        every experiment of this commit, and the workspace when it ran
    tinyclf compare lower-lr sweep-3       the runs named (experiment names or revisions)
    tinyclf compare --format md            table (default), md, csv or json
    tinyclf compare --plot compare.png     top-1 against training time, and the val top-1 curves (.png, .html)

Each row is a run that has metrics: its name, the params that differ between the runs shown, top-1,
top-5, training minutes, images/s, and the cost where it is known (a GPU run with
`summarize.price_per_gpu_hour` set). Everything comes from DVC: `dvc.api.exp_show` for params and
metrics, and each run's train record (`results/train/run.json`: time, images/s, GPU-hours) and
DVCLive history read through DVC at its revision; nothing is copied or cached here. Queued,
running and failed experiments have no metrics and are named below the table instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyclf.commands.compare.rendering import FORMATS, render
from tinyclf.commands.compare.runs import CompareError, collect_runs, compare, val_top1_history
from tinyclf.errors import ArgumentParser, run_command


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="tinyclf compare", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="experiment names or revisions (default: all of this commit)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    parser.add_argument("--plot", type=Path, help="also draw the runs: a .png, or an .html page with the table")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository (default: here)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command("tinyclf compare", lambda: _compare_and_show(args))


def _compare_and_show(args: argparse.Namespace) -> None:
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".html"):
        raise CompareError(f"{args.plot}: --plot writes a .png or an .html file")
    runs, notes = collect_runs(args.repo, args.runs or None)
    if not runs:
        raise CompareError("no run with metrics yet: run the pipeline (dvc repro, dvc exp run, make quickstart)")
    runs = compare(runs)
    print(render(runs, args.format))
    for note in notes:
        print(f"(not shown) {note}", file=sys.stderr)
    if args.plot is not None:
        # Imported here: matplotlib takes a noticeable part of a second to import, and only --plot draws.
        from tinyclf.commands.compare.plot import write_plot

        write_plot(args.plot, runs, {r.name: val_top1_history(args.repo, r) for r in runs})
        print(f"wrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
