"""Write the human-readable report and model card from what the earlier stages wrote.

    python stages/summarize.py --data data/prepared --model models/model.pt \\
        --train results/train --evaluate results/evaluate --out results/summary

Writes report.md, model_card.md and training_curves.png under --out. Reads nothing else than
these inputs and params.yaml; unchanged inputs give byte-identical outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Summarize a run: report.md (dataset, params, model table, curves, metrics, timing) and model_card.md.",
    )
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model", type=Path, required=True, help="model file (models/model.pt)")
    parser.add_argument("--train", type=Path, required=True, help="the train stage's DVCLive directory (results/train)")
    parser.add_argument("--evaluate", type=Path, required=True, help="the evaluate stage's outputs (results/evaluate)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (results/summary)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)")
    args = parser.parse_args(argv)

    from tinyclf.params import ParamsError, load_params

    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 1

    # Imported after the params check: torch takes seconds to import and bad params should fail at once.
    from tinyclf.arrays import PreparedDataError
    from tinyclf.model_file import ModelFileError
    from tinyclf.report import ReportError, write_summary

    try:
        paths = write_summary(args.data, args.model, args.train, args.evaluate, args.out, params)
    except (PreparedDataError, ModelFileError, ReportError) as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 1
    print(f"summarize: wrote {paths['report']} and {paths['model_card']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
