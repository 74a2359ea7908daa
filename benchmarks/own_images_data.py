"""A large synthetic photo folder for benchmarking the `folder` dataset: ~0.4 ms of CPU per JPEG.

    .venv/bin/python benchmarks/own_images_data.py DEST [--images 100000] [--classes 200] [--workers 0]
                                                        [--seed 0] [--flat]

Writes DEST/train/class_000/img_0000000.jpg … and DEST/val/class_000/… (every 10th image of each
class goes to val), or with --flat DEST/class_000/…, and prints images/s and the size on disk.

Real photos cannot be shipped and the real subset has 64x64 images only, so the benchmark needs
generated ones that cost what photos cost: varied sizes (size_range, default 100-400 px a side,
non-square), and content that JPEG cannot squeeze to nothing. Each image is a window of one of
TILES "scenes" (a smooth colour field, a random 4x4 image upscaled, plus grain), at a random
offset, size and JPEG quality (75-95): about 5-40 KB each, like small phone photos. Cheap to make:
the scenes are made once per worker, so an image costs a crop (a view) and the JPEG encoder, the
one cost that photos really have. Deterministic: image i depends only on (seed, i), not on the
worker count or the order the pool runs chunks in.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
from pathlib import Path

import cv2
import numpy as np

VAL_EVERY = 10  # the 10th, 20th, … image of each class goes to val/ (90/10 split)
CHUNK = 250  # images per pool task: large enough that task overhead is noise, small enough to balance
GRAIN = 28  # noise amplitude (0..GRAIN added): sets how hard the JPEG encoder works, hence file sizes
TILES = 16  # scenes per worker; with 256x256 offsets, about a million distinct windows
SHIFT = 256  # room for the random offset of a window in its scene

_scenes: list[np.ndarray] = []  # per worker, made by _start_worker


def make_scenes(seed: int, largest: int) -> list[np.ndarray]:
    """TILES scenes of (largest + SHIFT) pixels a side, the same for every worker given the seed.
    Making them per image would cost more than encoding it (upscaling 4x4 to 250x250 takes 0.2 ms)."""
    rng = np.random.default_rng([seed, 1 << 30])  # a stream no image index uses
    side = largest + SHIFT
    scenes = []
    for _ in range(TILES):
        field = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
        scenes.append(cv2.add(field, rng.integers(0, GRAIN + 1, (side, side, 3), dtype=np.uint8)))
    return scenes


def _start_worker(seed: int, largest: int) -> None:
    """One OpenCV thread per worker (the pool is the parallelism) and the worker's scenes."""
    global _scenes
    cv2.setNumThreads(1)
    _scenes = make_scenes(seed, largest)


def image_path(index: int, classes: int, flat: bool) -> str:
    """Relative path of image `index`: classes take turns, so every class gets n/classes images."""
    cls, within = index % classes, index // classes
    split = "" if flat else ("val/" if within % VAL_EVERY == VAL_EVERY - 1 else "train/")
    return f"{split}class_{cls:03d}/img_{index:07d}.jpg"


def synthetic_jpeg(index: int, seed: int, size_range: tuple[int, int]) -> bytes:
    """JPEG bytes of image `index`: a window of a scene, random size, place and quality (the
    worker's scenes must be made: _start_worker, or make_scenes assigned to _scenes)."""
    rng = np.random.default_rng([seed, index])
    width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    scene, dy, dx = (int(v) for v in rng.integers(0, [TILES, SHIFT, SHIFT]))
    image = _scenes[scene][dy:dy + height, dx:dx + width]
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])
    assert ok, "OpenCV failed to encode a JPEG"
    return encoded.tobytes()


def _write_chunk(job: tuple[str, int, int, int, int, tuple[int, int], bool]) -> int:
    root, start, stop, classes, seed, size_range, flat = job
    written = 0
    for index in range(start, stop):
        data = synthetic_jpeg(index, seed, size_range)
        # os.open/os.write: a third of the syscalls of open(), and file creation is most of the system time
        fd = os.open(os.path.join(root, image_path(index, classes, flat)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        written += len(data)
    return written


def generate_large_folder(root, n_images: int, classes: int, size_range: tuple[int, int] = (100, 400),
                          seed: int = 0, *, flat: bool = False, workers: int = 0) -> dict:
    """Write n_images synthetic JPEGs into class folders under `root` (see the module docstring for
    the layout); workers 0 means one per available core. Returns {"images", "bytes", "seconds", "cpu_seconds"}
    (cpu_seconds: the workers' user + system time)."""
    root = Path(root)
    for cls in range(classes):  # made up front so that workers never race to create a directory
        for split in ([""] if flat else ["train/", "val/"]):
            (root / f"{split}class_{cls:03d}").mkdir(parents=True, exist_ok=True)
    workers = workers or len(os.sched_getaffinity(0))
    jobs = [(str(root), start, min(start + CHUNK, n_images), classes, seed, size_range, flat)
            for start in range(0, n_images, CHUNK)]
    began, cpu_before = time.perf_counter(), _children_cpu()
    with multiprocessing.Pool(workers, _start_worker, (seed, size_range[1])) as pool:
        total = sum(pool.imap_unordered(_write_chunk, jobs))
        pool.close()
        pool.join()  # reaped, so their CPU time is in RUSAGE_CHILDREN
    seconds = time.perf_counter() - began
    return {"images": n_images, "bytes": total, "seconds": seconds, "cpu_seconds": _children_cpu() - cpu_before}


def _children_cpu() -> float:
    """User + system CPU seconds of reaped children (the pool's workers, once it is closed): on a
    shared machine the wall time says how busy the neighbours were, the CPU time what we cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flat", action="store_true", help="DEST/<class>/… instead of train/ and val/")
    args = parser.parse_args()
    result = generate_large_folder(args.dest, args.images, args.classes, seed=args.seed, flat=args.flat,
                                   workers=args.workers)
    images, seconds, cpu = result["images"], result["seconds"], result["cpu_seconds"]
    print(f"{images:,} images, {result['bytes'] / 1e6:,.0f} MB ({result['bytes'] / images / 1e3:.1f} KB each) "
          f"in {seconds:.1f} s: {images / seconds:,.0f} images/s; CPU {cpu / images * 1e3:.2f} ms/image "
          f"(workers' user + sys), {images / cpu:,.0f} images/s per core the neighbours leave free")


if __name__ == "__main__":
    main()
