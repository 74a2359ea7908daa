"""Audit the data with the trained model: likely label issues, near-duplicates within and across
splits, and outliers, each named by its source file.

    python stages/audit.py --data data/prepared --model models/model.pt --out results/audit

Writes issues.csv, label_scores.csv, summary.json, speed.json and sheets/*.png under --out (docs/architecture.md).
Settings come from the `audit` section of params.yaml; with audit.enabled auto it runs for your own
photo folders only, and otherwise writes a summary.json saying it was off.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyclf.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Audit the prepared data with the trained model: label issues, near-duplicates, "
                          "outliers (results/audit/issues.csv).")
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model", type=Path, required=True, help="model file written by the train stage (models/model.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (results/audit)")
    args = parser.parse_args(argv)

    def audit(params) -> None:
        if not params.audit.runs_on(params.data.dataset):
            from tinyclf.audit.findings import write_disabled

            summary = write_disabled(args.out, params.audit, params.data.dataset)  # without importing torch
            print(f"audit: off ({summary['why']})")
            return
        from tinyclf.audit.run import run_audit

        summary = run_audit(args.data, args.model, args.out, params.audit, params.data.dataset,
                            progress=not args.no_progress)
        counts = summary["counts"]
        print(f"audit: {summary['images']['total']} images: {counts['label']} likely label issues, "
              f"{counts['duplicate']} near-duplicate pairs, {counts['outlier']} outliers; see {args.out / 'issues.csv'}")

    return run_stage("audit", args, audit)


if __name__ == "__main__":
    sys.exit(main())
