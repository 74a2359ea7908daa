"""Peak memory of the preprocess stage on the real Tiny ImageNet subset, clean and with a decompression bomb.

    .venv/bin/python benchmarks/preprocess_memory.py [--archive ../shared/data/tiny-imagenet-200-subset.zip]
        [--workers 2] [--src OTHER/src]

Each case runs `tinyclf.data.preprocess.prepare` (all the subset's 30,000 JPEGs, `--workers`
decode processes) in a child process and samples the memory of that process and its decode
workers every 20 ms:
- **tree RSS**: the sum of the resident set sizes of all of them (an upper bound: shared
  libraries and the memory-mapped output pages count once per process that touches them);
- **tree PSS**: the same with shared pages divided among the processes that share them;
- **largest process RSS**.
Cases: (a) the subset as published; (b) the subset with its first train member replaced by a
20000x20000 PNG of 389 KB (`tests/support/bombs.py`), with `on_corrupt: skip` so the whole archive is
processed. `--src` runs another checkout's library (e.g. the code before a change) in the child.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the bomb builder the tests use
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)
from support.bombs import png_bomb  # noqa: E402

DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
CHILD = """
import sys
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.preprocess import prepare
summary = prepare(sys.argv[1], sys.argv[2], "tiny-imagenet",
                  PrepareOptions(workers=int(sys.argv[3]), on_corrupt=sys.argv[4], progress=False))
print(summary.describe())
"""


def with_bomb(archive: Path, out: Path) -> str:
    """A copy of `archive` whose first train member (wnids.txt order, natural order) is a PNG bomb."""
    with zipfile.ZipFile(archive) as src:
        names = src.namelist()
        wnids = src.read(next(n for n in names if n.endswith("wnids.txt"))).decode().split()
        first = sorted((n for n in names if f"/train/{wnids[0]}/images/" in n),
                       key=lambda n: int(n.rsplit("_", 1)[1].split(".")[0]))[0]
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info, png_bomb(20000, 20000) if info.filename == first else src.read(info))
    return first


def measure(archive: Path, workers: int, on_corrupt: str, src: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(src)}
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(archive), str(Path(tmp) / "prepared"),
                                 str(workers), on_corrupt], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        parent = psutil.Process(proc.pid)
        peak = {"tree_rss": 0, "tree_pss": 0, "max_rss": 0}
        start = time.perf_counter()
        while proc.poll() is None:
            rss = pss = largest = 0
            try:
                for p in [parent, *parent.children(recursive=True)]:
                    info = p.memory_full_info()
                    rss, pss, largest = rss + info.rss, pss + info.pss, max(largest, info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass  # a process ended between listing and reading
            peak = {"tree_rss": max(peak["tree_rss"], rss), "tree_pss": max(peak["tree_pss"], pss),
                    "max_rss": max(peak["max_rss"], largest)}
            time.sleep(0.02)
        out, err = proc.communicate()
        return {**peak, "seconds": time.perf_counter() - start, "rc": proc.returncode,
                "said": (out.strip() or (err.strip().splitlines() or [""])[-1])[:160]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--workers", type=int, default=2, help="decode processes (preprocess.workers)")
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the library to run (default: this checkout)")
    args = parser.parse_args()
    if not args.archive.is_file():
        print(f"preprocess_memory: {args.archive}: no such file (the real subset lives in ../shared/data)",
              file=sys.stderr)
        return 1
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; library: {args.src}; {args.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "with-bomb.zip"
        member = with_bomb(args.archive, bomb)
        print(f"bomb: {member} replaced by a 20000x20000 PNG of {len(png_bomb()):,} bytes")
        for label, archive, on_corrupt in [("subset as published", args.archive, "fail"),
                                           ("subset + bomb, on_corrupt skip", bomb, "skip")]:
            m = measure(archive, args.workers, on_corrupt, args.src)
            print(f"{label:32s} peak tree RSS {m['tree_rss'] / 1e6:7.0f} MB, tree PSS {m['tree_pss'] / 1e6:6.0f} MB, "
                  f"largest process {m['max_rss'] / 1e6:6.0f} MB; {m['seconds']:.1f} s, exit {m['rc']}: {m['said']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
