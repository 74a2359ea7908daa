"""Evaluate the trained model on the whole prepared test split, or val when there is none (one
process, every image once); with a test split, val's figures go beside them (val_metrics.json).

    python stages/evaluate.py --data data/prepared --model models/model.pt --out results/evaluate

Writes metrics.json, val_metrics.json, speed.json, predictions.csv, per_class.json and plots/*.png under --out
(docs/architecture.md). Settings come from the `evaluate` section of params.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyclf.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Evaluate models/model.pt on the prepared test split (val without one): metrics, "
                          "predictions CSV and plots.")
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model", type=Path, required=True, help="model file written by the train stage (models/model.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (results/evaluate)")
    args = parser.parse_args(argv)

    def evaluate(params) -> None:
        from tinyclf.evaluate.run import run_evaluation

        result = run_evaluation(args.data, args.model, args.out, params.evaluate, progress=not args.no_progress)
        m, s, run = result["metrics"], result["speed"], result["per_class"]
        generated = " (GENERATED data)" if run["generated"] else ""
        val = "" if run["split"] == "val" else f" (val, which chose the epoch: {result['val_metrics']['top1'] * 100:.2f}%)"
        print(f"evaluate: {run['num_images']} {run['split']} images{generated}: top-1 {m['top1'] * 100:.2f}%{val}, "
              f"top-5 {m['top5'] * 100:.2f}%, loss {m['loss']:.4f}, ECE {m['ece']:.4f}; "
              f"{s['images_per_s']} images/s on {s['device']}")

    return run_stage("evaluate", args, evaluate)


if __name__ == "__main__":
    sys.exit(main())
