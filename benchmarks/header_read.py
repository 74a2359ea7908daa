"""What reading an image's header costs before it is decoded: tinyclf's own parser against Pillow's
lazy `Image.open`, both against the OpenCV decode that follows, on the real Tiny ImageNet subset.

    .venv/bin/python benchmarks/header_read.py [--archive ../shared/data/tiny-imagenet-200-subset.zip] \
        [--images 3000] [--repeats 7]

Per image, as `tinyclf.data.images.decode_photo` needs it before decoding (size for the bomb check,
pixel layout, EXIF orientation):
- hand parser: `check_header` + `exif_orientation` (the code today);
- Pillow: `Image.open` (reads the header only) + `.size` + `.mode` + `getexif()` orientation, and
  the same without `getexif()` (the least Pillow can cost);
- decode: `cv2.imdecode(IMREAD_UNCHANGED)`, one OpenCV thread as in the decode workers; and the
  whole `decode_image` (header check, decode, RGB conversion) for scale.

The subset is all 64x64 JPEGs. For context two more sets are measured: photo-sized JPEGs (mosaics of
subset images, where a decode costs far more than any header), and the subset images re-encoded as
PNG (OpenCV, no EXIF), because Pillow's PNG `getexif()` decodes the whole image when no eXIf chunk
precedes the pixels.
Every repeat runs all methods over the same images back to back, in a rotating order, so background
load hits each alike; printed are medians over repeats of µs per image and of the per-repeat ratios.
The decision it informs (issue 17): Pillow's header read replaces the parser only if it stays under
5% of a decode.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_model  # benchmarks/machine.py (scripts run with benchmarks/ on sys.path)
from PIL import Image

from tinyclf.data.images import check_header, decode_image, exif_orientation

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
ORIENTATION = 0x0112


def hand_parser(data: bytes) -> tuple:
    return check_header(data), exif_orientation(data)


def pillow_header(data: bytes) -> tuple:
    with Image.open(io.BytesIO(data)) as img:
        return img.size, img.mode, img.getexif().get(ORIENTATION, 1)


def pillow_open_only(data: bytes) -> tuple:
    with Image.open(io.BytesIO(data)) as img:
        return img.size, img.mode


def opencv_decode(data: bytes):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def whole_decode_image(data: bytes):
    return decode_image(data, 64)


METHODS = {"hand parser": hand_parser, "Pillow header": pillow_header, "Pillow, no EXIF": pillow_open_only,
           "OpenCV decode": opencv_decode, "decode_image": whole_decode_image}


def read_images(archive: Path, count: int) -> list[bytes]:
    """`count` JPEGs spread evenly over the subset (sorted names, every k-th), bytes in memory."""
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".JPEG"))
        step = max(1, len(names) // count)
        return [zf.read(n) for n in names[::step][:count]]


def photos(jpegs: list[bytes], count: int, width: int = 1600, height: int = 1200) -> list[bytes]:
    """`count` photo-sized JPEGs (quality 90), each a mosaic of real subset images upscaled to 200 px."""
    tiles = [cv2.resize(cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), (200, 200),
                        interpolation=cv2.INTER_CUBIC) for d in jpegs[: (width // 200) * (height // 200) + count]]
    cols, rows = width // 200, height // 200
    out = []
    for i in range(count):
        mosaic = np.vstack([np.hstack(tiles[i + r * cols : i + (r + 1) * cols]) for r in range(rows)])
        out.append(cv2.imencode(".jpg", mosaic, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def per_image_us(fn, images: list[bytes]) -> float:
    start = time.perf_counter()
    for data in images:
        fn(data)
    return (time.perf_counter() - start) / len(images) * 1e6


def measure(images: list[bytes], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    names = list(METHODS)
    for name in names:  # warm-up: plugin imports, OpenCV's first decode
        per_image_us(METHODS[name], images[:50])
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(per_image_us(METHODS[name], images))
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    decode = times["OpenCV decode"]
    for name, values in times.items():
        ratio = statistics.median(v / d for v, d in zip(values, decode))
        print(f"  {name:14s} {statistics.median(values):8.1f} µs/image  "
              f"(min {min(values):7.1f})  {100 * ratio:6.1f}% of an OpenCV decode")
    pillow_vs_hand = statistics.median(p / h for p, h in zip(times["Pillow header"], times["hand parser"]))
    print(f"  Pillow header / hand parser: {pillow_vs_hand:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # as in the decode workers
    jpegs = read_images(args.archive, args.images)
    pngs = [cv2.imencode(".png", cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED))[1].tobytes()
            for d in jpegs[: max(1, len(jpegs) // 4)]]
    print(f"{cpu_model()}, Pillow {Image.__version__}, OpenCV {cv2.__version__}; {args.repeats} repeats, "
          f"methods interleaved")
    report(f"{len(jpegs)} real Tiny ImageNet JPEGs (64x64, {np.mean([len(d) for d in jpegs]):.0f} bytes on average)",
           measure(jpegs, args.repeats))
    big = photos(jpegs, 10)
    report(f"{len(big)} photo-sized JPEGs (1600x1200 mosaics of them; context: decode_photo's users' photos)",
           measure(big, args.repeats))
    report(f"{len(pngs)} of them as PNG (no EXIF: Pillow's getexif() decodes the image to look for it)",
           measure(pngs, args.repeats))


if __name__ == "__main__":
    main()
