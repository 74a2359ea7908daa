"""Train the classifier on the prepared arrays (one process, or one per device under torchrun).

    torchrun --standalone --nproc_per_node=N stages/train.py --data data/prepared \\
        --model-out models/model.pt --live results/train --checkpoints checkpoints
    python stages/train.py --data data/prepared --model-out models/model.pt \\
        --live results/train --checkpoints checkpoints          # the same, as one process

Settings come from the `train` section of params.yaml. Writes models/model.pt, DVCLive output and
run.json under --live, and the resume checkpoint --checkpoints/last.pt (an interrupted run,
kill -9 included, continues from it when started again).
Exit codes: 0 done; 1 a user error (one line: bad params, data, checkpoint, non-finite loss);
128 + signal number when stopped by SIGTERM/SIGINT after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the model from params.yaml on prepared arrays; resumable, DDP-ready under torchrun.",
    )
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model-out", type=Path, required=True, help="where to write the model file (models/model.pt)")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive directory (results/train)")
    parser.add_argument("--checkpoints", type=Path, required=True, help="resume checkpoint directory (checkpoints)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))

    def fail(message: str) -> int:
        # Every rank exits non-zero (torchrun then stops the job); only rank 0 repeats the shared message,
        # except for errors of one rank alone, which that rank reports.
        print(f"train (rank {rank}): {message}" if rank else f"train: {message}", file=sys.stderr)
        return 1

    from tinyclf.params import ParamsError, load_params

    try:
        params = load_params(args.params)
    except ParamsError as exc:
        return fail(str(exc))

    # Imported after the params check: torch takes seconds to import and bad params should fail at once.
    from tinyclf.arrays import PreparedDataError
    from tinyclf.checkpoint import CheckpointError
    from tinyclf.engine import NonFiniteLossError
    from tinyclf.models import ModelError
    from tinyclf.training import Interrupted, TrainingError, run_training

    try:
        result = run_training(params, args.data, args.model_out, args.live, args.checkpoints,
                              progress_bar=not args.no_progress)
    except Interrupted as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 128 + int(exc.signum)
    except (PreparedDataError, CheckpointError, NonFiniteLossError, TrainingError, ModelError) as exc:
        return fail(str(exc))
    if rank == 0:
        val = result["val"]
        ips = result["images_per_s"]
        print(f"train: {result['epochs']} epochs, val top-1 {val['top1'] * 100:.2f}% top-5 {val['top5'] * 100:.2f}% "
              f"loss {val['loss']:.4f}; {ips:.0f} images/s; wrote {args.model_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
