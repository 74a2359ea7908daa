"""preprocess stage: the downloaded archive -> prepared arrays (docs/architecture.md).

    python stages/preprocess.py --raw data/raw --out data/prepared [--params params.yaml]

Reads the one archive in --raw (named after data.dataset: tiny-imagenet-200.zip,
cifar-10-python.tar.gz, or images.tar / images.zip for your own images) straight from the archive, decodes it on preprocess.workers processes and
writes {train,val}/{images,labels}.npy, classes.json and stats.json into --out, which is replaced
only when everything succeeded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyclf.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Decode the downloaded dataset archive into memory-mappable uint8 arrays "
                          "({train,val}/images.npy, labels.npy) plus classes.json and stats.json.")
    parser.add_argument("--raw", type=Path, required=True, help="directory holding the downloaded archive (data/raw)")
    parser.add_argument("--out", type=Path, required=True, help="prepared directory to (re)write (data/prepared)")
    args = parser.parse_args(argv)

    def preprocess(params) -> None:
        from tinyclf.data.preprocess import find_archive, options_from_params, prepare

        dataset = params.data.dataset
        summary = prepare(find_archive(args.raw, dataset), args.out, dataset,
                          options_from_params(params, progress=not args.no_progress))
        print(f"prepared {args.out}: {summary.describe()}")

    return run_stage("preprocess", args, preprocess)


if __name__ == "__main__":
    sys.exit(main())
