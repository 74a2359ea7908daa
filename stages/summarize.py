"""Write the human-readable report and model card from what the earlier stages wrote.

    python stages/summarize.py --data data/prepared --model models/model.pt \\
        --train results/train --evaluate results/evaluate --export results/export/parity.json \\
        --audit results/audit/summary.json --out results/summary

Writes report.md, model_card.md and training_curves.png under --out. Reads nothing else than
these inputs and params.yaml; unchanged inputs give byte-identical outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyclf.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Summarize a run: report.md (dataset, params, model table, curves, metrics, timing) "
                          "and model_card.md.", progress_bars=False)
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model", type=Path, required=True, help="model file (models/model.pt)")
    parser.add_argument("--train", type=Path, required=True, help="the train stage's DVCLive directory (results/train)")
    parser.add_argument("--evaluate", type=Path, required=True, help="the evaluate stage's outputs (results/evaluate)")
    parser.add_argument("--export", type=Path, default=None,
                        help="the export stage's parity figures (results/export/parity.json), if it ran")
    parser.add_argument("--audit", type=Path, default=None,
                        help="the audit stage's summary (results/audit/summary.json), if it ran")
    parser.add_argument("--out", type=Path, required=True, help="output directory (results/summary)")
    args = parser.parse_args(argv)

    def summarize(params) -> None:
        from tinyclf.report.inputs import Sources
        from tinyclf.report.run import write_summary

        sources = Sources(args.data, args.model, args.train, args.evaluate, args.export, args.audit)
        paths = write_summary(sources, args.out, params)
        print(f"summarize: wrote {paths['report']} and {paths['model_card']}")

    return run_stage("summarize", args, summarize)


if __name__ == "__main__":
    sys.exit(main())
