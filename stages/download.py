"""download stage: put the dataset archive in --out, exactly one file named as the official archive.

    python stages/download.py --out data/raw [--params params.yaml]

The source is `download.source` in params.yaml: official (published URL + md5), generated (a
small synthetic dataset in the official format), an http(s) mirror, or a local archive path; for
data.dataset folder, a directory of class folders (packed into one deterministic images.tar) or a
.zip / .tar / .tar.gz of one (a .tar.gz is unpacked to images.tar). dvc.yaml runs it in
stages/sources/ (see the comment there), passing --params and --out relative to that folder.
"""

from __future__ import annotations

import sys

from tinyclf.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Fetch (resumable, md5-verified) or generate the dataset archive named by params.yaml "
                          "(data.dataset, download.*) into OUT, leaving exactly one file there.")
    parser.add_argument("--out", required=True, help="output directory, e.g. data/raw (emptied of anything else)")
    args = parser.parse_args(argv)

    def download(params) -> None:
        from tinyclf.data.download import run_download

        run_download(params, args.out, progress=not args.no_progress)

    return run_stage("download", args, download)


if __name__ == "__main__":
    sys.exit(main())
