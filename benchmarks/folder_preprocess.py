"""Your own images: the download + preprocess stages on a large generated photo folder, against
torchvision's ImageFolder + PIL decoding the same folder into the same arrays.

    .venv/bin/python benchmarks/folder_preprocess.py [--images 100000] [--classes 100] [--size 64]
        [--workers 0] [--folder /tmp/big_folder]

The folder (`benchmarks/own_images_data.py`: synthetic JPEGs of 100-400 px per side, about
15 KB each, ImageFolder layout, one val image in ten) is generated once and reused. Each case runs
in a child process while this one samples the memory of the child and all its workers every 20 ms
(peak process-tree RSS: an upper bound, shared pages count once per process):
- **tinyclf**: `pack_directory` (the download stage: one deterministic tar) then
  `prepare(dataset="folder")` (decode pool reading members straight from the tar, OpenCV,
  center_crop to --size, rows written into the memory-mapped images.npy), --workers processes;
- **torchvision**: `ImageFolder` with PIL (`Resize(size)` + `CenterCrop(size)`, the same
  center_crop) through a DataLoader with the same number of workers, every batch copied into a
  preallocated uint8 array, as a hand-written "decode once" step would.
Images/s counts decoded images over the whole case (packing included for tinyclf); CPU ms/image
(the child and its workers, user + system) is the figure a busy shared machine does not move.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import cpu_model  # noqa: E402
from own_images_data import generate_large_folder  # noqa: E402

TINYCLF = """
import sys, time
from tinyclf.data.pack import pack_directory
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.preprocess import prepare
folder, out, size, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
pack_directory(folder, out + "/raw/images.tar", progress=False)
packed = time.perf_counter() - start
summary = prepare(out + "/raw/images.tar", out + "/prepared", "folder",
                  PrepareOptions(image_size=size, workers=workers, progress=False, val_fraction=0.1))
print(f"PACK {packed:.2f} IMAGES {summary.images}")
"""

TORCHVISION = """
import sys
import numpy as np, torch
from torchvision import datasets, transforms
folder, size, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
total = 0
for split in ("train", "val"):
    ds = datasets.ImageFolder(f"{folder}/{split}", transform=tf)
    out = np.empty((len(ds), size, size, 3), dtype=np.uint8)
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=workers)
    row = 0
    for x, _ in loader:
        out[row:row + len(x)] = x.permute(0, 2, 3, 1).numpy()
        row += len(x)
    total += row
print(f"PACK 0 IMAGES {total}")
"""


def run_case(code: str, args: list[str]) -> dict:
    """Run `code` in a child; its wall time, peak process-tree RSS, and what it printed."""
    cpu_before = _children_cpu()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    parent, peak, start = psutil.Process(proc.pid), 0, time.perf_counter()
    while proc.poll() is None:
        rss = 0
        try:
            for p in [parent, *parent.children(recursive=True)]:
                rss += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # a process ended between listing and reading
        peak = max(peak, rss)
        time.sleep(0.02)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"case failed ({proc.returncode}):\n{err[-3000:]}")
    fields = out.split()
    images = int(fields[fields.index("IMAGES") + 1])
    cpu = _children_cpu() - cpu_before
    return {"seconds": round(seconds, 2), "pack_seconds": float(fields[fields.index("PACK") + 1]),
            "images": images, "images_per_s": round(images / seconds, 1), "cpu_seconds": round(cpu, 1),
            "cpu_ms_per_image": round(cpu / images * 1e3, 3), "peak_tree_rss_mb": round(peak / 2**20)}


def _children_cpu() -> float:
    """User + system CPU seconds of reaped children and their reaped children: what a case cost,
    whatever the neighbours on a shared machine were doing (its wall time depends on them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="decode processes (0: every core)")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "tinyclf_big_folder")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    marker = args.folder / f".generated-{args.images}-{args.classes}"
    if not marker.exists():
        made = generate_large_folder(args.folder, args.images, args.classes, seed=0)
        marker.write_text(json.dumps(made))
    generated = json.loads(marker.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_case(TINYCLF, [str(args.folder), tmp, str(args.size), str(workers)])
    theirs = run_case(TORCHVISION, [str(args.folder), str(args.size), str(workers)])
    result = {"machine": cpu_model(), "cores": len(os.sched_getaffinity(0)), "workers": workers,
              "folder": {"images": generated["images"], "bytes": generated["bytes"]}, "size": args.size,
              "tinyclf": ours, "torchvision_imagefolder_pil": theirs,
              "speedup": round(ours["images_per_s"] / theirs["images_per_s"], 2),
              "cpu_ratio": round(theirs["cpu_ms_per_image"] / ours["cpu_ms_per_image"], 2),
              "memory_ratio": round(ours["peak_tree_rss_mb"] / theirs["peak_tree_rss_mb"], 2)}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
