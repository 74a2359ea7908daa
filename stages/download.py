"""download stage: put the dataset archive in --out, exactly one file named as the official archive.

    python stages/download.py --out data/raw [--params params.yaml]

The source is `download.source` in params.yaml: official (published URL + md5), generated (a
small synthetic dataset in the official format), an http(s) mirror, or a local archive path.
"""

from __future__ import annotations

import argparse
import sys

from tinyclf.download import DownloadError, run_download
from tinyclf.params import ParamsError, load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fetch (resumable, md5-verified) or generate the dataset archive named by params.yaml "
        "(data.dataset, download.*) into OUT, leaving exactly one file there.",
    )
    parser.add_argument("--out", required=True, help="output directory, e.g. data/raw (emptied of anything else)")
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        run_download(params, args.out, progress=not args.no_progress)
    except (ParamsError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
