"""Evaluate the trained model on the whole prepared validation split (one process, every image once).

    python stages/evaluate.py --data data/prepared --model models/model.pt --out results/evaluate

Writes metrics.json, speed.json, predictions.csv, per_class.json and plots/*.png under --out
(docs/architecture.md). Settings come from the `evaluate` section of params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate models/model.pt on the prepared val split: metrics, predictions CSV and plots.",
    )
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model", type=Path, required=True, help="model file written by the train stage (models/model.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (results/evaluate)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    from tinyclf.params import ParamsError, load_params

    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1

    # Imported after the params check: torch takes seconds to import and bad params should fail at once.
    from tinyclf.arrays import PreparedDataError
    from tinyclf.evaluation import EvaluationError, run_evaluation
    from tinyclf.model_file import ModelFileError

    try:
        result = run_evaluation(args.data, args.model, args.out, params.evaluate, progress=not args.no_progress)
    except (PreparedDataError, ModelFileError, EvaluationError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1
    m, s = result["metrics"], result["speed"]
    generated = " (GENERATED data)" if m["generated"] else ""
    print(
        f"evaluate: {m['num_images']} images{generated}: top-1 {m['top1'] * 100:.2f}%, top-5 {m['top5'] * 100:.2f}%, "
        f"loss {m['loss']:.4f}, ECE {m['ece']:.4f}; {s['images_per_s']} images/s on {s['device']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
