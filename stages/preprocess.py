"""preprocess stage: the downloaded archive -> prepared arrays (docs/architecture.md).

    python stages/preprocess.py --raw data/raw --out data/prepared [--params params.yaml]

Reads the one archive in --raw (named after data.dataset: tiny-imagenet-200.zip or
cifar-10-python.tar.gz) straight from the archive, decodes it on preprocess.workers processes and
writes {train,val}/{images,labels}.npy, classes.json and stats.json into --out, which is replaced
only when everything succeeded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyclf.params import OFFICIAL, ParamsError, archive_filename, load_params
from tinyclf.preprocessing import PrepareError, prepare


def find_archive(raw_dir: Path, dataset: str) -> Path:
    """The archive of `dataset` in raw_dir; PrepareError if it is missing or belongs to another dataset."""
    expected = raw_dir / archive_filename(dataset)
    if expected.is_file():
        return expected
    if not raw_dir.is_dir():
        raise PrepareError(f"{raw_dir}: no such directory; run the download stage first (dvc repro download)")
    others = [name for name, info in OFFICIAL.items() if name != dataset and (raw_dir / info["filename"]).is_file()]
    if others:
        raise PrepareError(
            f"{raw_dir} holds the {others[0]} archive ({archive_filename(others[0])}) but data.dataset is {dataset}; "
            f"run the download stage again (dvc repro) or set data.dataset: {others[0]}"
        )
    raise PrepareError(f"{expected}: missing; run the download stage first (dvc repro download)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Decode the downloaded dataset archive into memory-mappable uint8 arrays "
        "({train,val}/images.npy, labels.npy) plus classes.json and stats.json.",
    )
    parser.add_argument("--raw", type=Path, required=True, help="directory holding the downloaded archive (data/raw)")
    parser.add_argument("--out", type=Path, required=True, help="prepared directory to (re)write (data/prepared)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        archive = find_archive(args.raw, params.data.dataset)
        summary = prepare(
            archive,
            args.out,
            dataset=params.data.dataset,
            image_size=params.data.image_size,
            workers=params.preprocess.workers,
            on_corrupt=params.preprocess.on_corrupt,
            progress=not args.no_progress,
        )
    except (ParamsError, PrepareError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"prepared {args.out}: {summary.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
