"""Train the classifier on the prepared arrays (one process, or one per device under torchrun).

    python stages/train.py --data data/prepared --model-out models/model.pt \\
        --live results/train --checkpoints checkpoints

With `train.nproc_per_node: N > 1` the process hands itself to `torchrun --standalone
--nproc_per_node=N` (tinyclf/train/launch.py); under a torchrun started by hand (several nodes, the
Slurm script) each process trains as its rank.

Settings come from the `train` section of params.yaml. Writes models/model.pt, DVCLive output and
run.json under --live, and the resume checkpoint --checkpoints/last.pt (an interrupted run,
kill -9 included, continues from it when started again).
Exit codes: 0 done; 1 a user error (one line: bad params, data, checkpoint, non-finite loss);
128 + signal number when stopped by SIGTERM/SIGINT after saving a checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyclf.stage import is_main_process, run_stage, stage_parser
from tinyclf.train.launch import relaunch_under_torchrun


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Train the model from params.yaml on prepared arrays; resumable, DDP-ready under torchrun.")
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model-out", type=Path, required=True, help="where to write the model file (models/model.pt)")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive directory (results/train)")
    parser.add_argument("--checkpoints", type=Path, required=True, help="resume checkpoint directory (checkpoints)")
    args = parser.parse_args(argv)

    def train(params) -> None:
        relaunch_under_torchrun(params.train.nproc_per_node, Path(__file__), sys.argv[1:] if argv is None else argv)
        from tinyclf.train.run import run_training

        result = run_training(params, args.data, args.model_out, args.live, args.checkpoints,
                              progress_bar=not args.no_progress)
        if is_main_process():
            val, ips = result["val"], result["images_per_s"]
            print(f"train: {result['epochs']} epochs, val top-1 {val['top1'] * 100:.2f}% top-5 {val['top5'] * 100:.2f}% "
                  f"loss {val['loss']:.4f}; {ips:.0f} images/s; wrote {args.model_out}", file=sys.stderr)

    return run_stage("train", args, train)


if __name__ == "__main__":
    sys.exit(main())
