"""Benchmark the preprocess stage on the real Tiny ImageNet subset, against baselines run here and now.

    .venv/bin/python benchmarks/preprocess.py [--archive ../shared/data/tiny-imagenet-200-subset.zip] [--repeats 3]

1. Decoding: `tinyclf.data.preprocess.prepare` (members read from the zip, OpenCV, all cores,
   straight into memory-mapped arrays) against the obvious baseline: extract the zip to a temp
   dir, then in one process open each image with PIL, convert("RGB"), and np.stack the list.
2. DVC: wall time of `dvc add` and `dvc status` on the prepared directory (6 files) against the
   same on the extracted folder (~30k small files), each in its own fresh git + DVC repository.

Prints images/s and seconds for each, and the ratios. Timings are medians over --repeats runs; each
repeat runs ours and the baseline back to back so that background load hits both alike.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine import cpu_model  # benchmarks/machine.py (scripts run with benchmarks/ on sys.path)
from PIL import Image

from tinyclf.data.decode_pool import available_cores
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.preprocess import prepare

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"



def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the decode workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result). CPU time is the fairer figure on a shared machine."""
    start, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return time.perf_counter() - start, cpu_seconds() - cpu, result


def baseline_decode(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The straightforward way: walk the extracted folders, PIL-decode each file in one process, stack."""
    root = root / "tiny-imagenet-200"
    wnids = (root / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    train_images, train_labels = [], []
    for wnid in wnids:
        for path in sorted((root / "train" / wnid / "images").iterdir()):
            with Image.open(path) as img:
                train_images.append(np.asarray(img.convert("RGB")))
            train_labels.append(index[wnid])
    val_images, val_labels = [], []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        with Image.open(root / "val" / "images" / name) as img:
            val_images.append(np.asarray(img.convert("RGB")))
        val_labels.append(index[wnid])
    return np.stack(train_images), np.array(train_labels), np.stack(val_images), np.array(val_labels)


def dvc_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@tinyclf.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@tinyclf.invalid")
    return env


def sh(cmd: list[str], cwd: Path) -> float:
    """Run a command, fail loudly, return its wall time."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def dvc_repo_add(data: Path) -> float:
    """Make data's parent a fresh git + DVC repo, `dvc add` data; return the add's wall time."""
    repo = data.parent
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    sh(["dvc", "config", "core.analytics", "false"], repo)
    sh(["dvc", "config", "core.check_update", "false"], repo)
    return sh(["dvc", "add", "-q", data.name], repo)


@dataclass
class DecodeTimes:
    """Per repeat: ours (wall, CPU), the baseline's extract (wall) and decode (wall, CPU); and the counts."""

    ours_s: list[float] = field(default_factory=list)
    ours_cpu: list[float] = field(default_factory=list)
    extract_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    decode_cpu: list[float] = field(default_factory=list)
    images: int = 0
    train: int = 0
    val: int = 0


def time_decoding(archive: Path, tmp: Path, repeats: int) -> DecodeTimes:
    """Ours and the baseline, `repeats` times; leaves tmp/ours/prepared and tmp/extracted<r> behind."""
    times = DecodeTimes()
    # Each repeat runs ours, then the baseline, back to back, so background load hits both alike.
    for r in range(repeats):
        seconds, cpu, summary = timed(lambda: prepare(archive, tmp / "ours" / "prepared", "tiny-imagenet",
                                                      PrepareOptions(workers=0, progress=False)))
        times.ours_s.append(seconds)
        times.ours_cpu.append(cpu)
        target = tmp / f"extracted{r}"
        seconds, _, _ = timed(lambda: zipfile.ZipFile(archive).extractall(target))
        times.extract_s.append(seconds)
        seconds, cpu, (tx, ty, vx, vy) = timed(lambda: baseline_decode(target))
        times.decode_s.append(seconds)
        times.decode_cpu.append(cpu)
        n = summary.images
        if len(tx) + len(vx) != n:
            raise SystemExit(f"baseline decoded {len(tx) + len(vx)} images, ours {n}")
        print(f"  repeat {r + 1}: ours {times.ours_s[-1]:.2f} s, baseline extract {times.extract_s[-1]:.2f} s + "
              f"decode {times.decode_s[-1]:.2f} s; ratio "
              f"{(times.extract_s[-1] + times.decode_s[-1]) / times.ours_s[-1]:.2f}x", flush=True)
        times.images, times.train, times.val = n, len(tx), len(vx)
    return times


def print_decoding(t: DecodeTimes, repeats: int) -> None:
    med = statistics.median

    def spread(values: list[float]) -> str:
        return f"[{min(values):.2f}-{max(values):.2f}]"

    n = t.images
    ours, extract, decode = med(t.ours_s), med(t.extract_s), med(t.decode_s)
    full_ratio = [(e + d) / o for o, e, d in zip(t.ours_s, t.extract_s, t.decode_s)]
    decode_ratio = [d / o for o, d in zip(t.ours_s, t.decode_s)]
    print(f"images: {n} (train {t.train}, val {t.val}), repeats {repeats}, medians (wall, CPU):")
    print(f"  ours (zip -> OpenCV, {available_cores()} processes -> .npy):  {ours:6.2f} s  {n / ours:8,.0f} images/s"
          f"  CPU {med(t.ours_cpu):6.2f} s")
    print(f"  baseline extract (zipfile.extractall):              {extract:6.2f} s")
    print(f"  baseline decode (PIL, 1 process, np.stack):         {decode:6.2f} s  {n / decode:8,.0f} images/s"
          f"  CPU {med(t.decode_cpu):6.2f} s")
    print(f"  baseline extract + decode:                          {extract + decode:6.2f} s  "
          f"{n / (extract + decode):8,.0f} images/s")
    print(f"  speed-up (wall, median of per-repeat ratios): {med(full_ratio):.2f}x {spread(full_ratio)} vs extract "
          f"+ decode, {med(decode_ratio):.2f}x {spread(decode_ratio)} vs decode alone;"
          f" CPU: {med(t.decode_cpu) / med(t.ours_cpu):.2f}x less than the PIL decode alone")


def compare_dvc(tmp: Path, repeats: int) -> None:
    """`dvc add` and `dvc status` on what time_decoding left in tmp: our prepared dir, one extracted folder."""
    # Each data directory alone in a fresh repo, so the two do not share a cache or state db.
    for r in range(1, repeats):
        (tmp / f"extracted{r}").rename(tmp / f"spare{r}")  # keep just one extracted copy in play
    (tmp / "repo_prepared").mkdir()
    (tmp / "ours" / "prepared").rename(tmp / "repo_prepared" / "prepared")
    (tmp / "repo_extracted").mkdir()
    (tmp / "extracted0").rename(tmp / "repo_extracted" / "tiny-imagenet-200")
    files = sum(1 for p in (tmp / "repo_extracted" / "tiny-imagenet-200").rglob("*") if p.is_file())
    add_p = dvc_repo_add(tmp / "repo_prepared" / "prepared")
    add_e = dvc_repo_add(tmp / "repo_extracted" / "tiny-imagenet-200")
    status_p, status_e = [], []
    for _ in range(repeats):  # alternate, so background load hits both alike
        status_p.append(sh(["dvc", "status", "-q"], tmp / "repo_prepared"))
        status_e.append(sh(["dvc", "status", "-q"], tmp / "repo_extracted"))
    status_p, status_e = statistics.median(status_p), statistics.median(status_e)
    print("dvc (fresh repo each, dvc status median):")
    print(f"  prepared dir (6 files):          dvc add {add_p:6.2f} s   dvc status {status_p:5.2f} s")
    print(f"  extracted folder ({files} files): dvc add {add_e:6.2f} s   dvc status {status_e:5.2f} s")
    print(f"  ratio: dvc add {add_e / add_p:.1f}x, dvc status {status_e / status_p:.1f}x faster on the prepared dir")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="the real Tiny ImageNet subset zip")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; medians are reported")
    args = parser.parse_args()
    if not args.archive.is_file():
        raise SystemExit(f"{args.archive}: not found (the real subset lives in ../shared/data/)")

    print(f"machine: {cpu_model()}, {available_cores()} cores; load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="tinyclf-bench-") as tmp:
        tmp = Path(tmp)
        print_decoding(time_decoding(args.archive, tmp, args.repeats), args.repeats)
        compare_dvc(tmp, args.repeats)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
