"""Training input pipeline throughput on the real Tiny ImageNet subset, against torchvision.

    .venv/bin/python benchmarks/input_pipeline.py [--zip ../shared/data/tiny-imagenet-200-subset.zip]

Measured in one run, on the subset's 20,000 train images, batch 256, 2 DataLoader workers:
  (a) ours:      prepared uint8 arrays (memmap) -> PreparedDataset + EpochSampler + make_loader with
                 the default per-image albumentations augment (random_resized_crop + flip) ->
                 to_model_input in the main process
  (b) baseline:  torchvision ImageFolder over the extracted JPEGs + PIL + RandomResizedCrop(64,
                 scale=(0.35, 1)) + RandomHorizontalFlip + ToTensor + Normalize in the workers
  (c) batched:   the same loader without per-image augment -> BatchedAugment (CPU) + to_model_input
                 in the main process
Each repeat runs (a), (b), (c) back to back (so background load hits all three alike): warm-up
batches first, then a fixed number of timed batches. Reported: median images/s with min-max over
repeats, and the ratios. Then the augmentation alone on one core, per batch: albumentations image
by image vs BatchedAugment on the whole batch.

The main process uses one torch thread, so that it does not fight the two workers for two cores.
Scratch data (prepared arrays, extracted JPEGs) goes to a temp dir outside the repo, removed after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py; benchmarks/ is on sys.path)
from tinyclf.params import TrainParams  # noqa: E402
from tinyclf.transforms import (  # noqa: E402
    BatchedAugment,
    EpochSampler,
    PreparedDataset,
    SampleSeeder,
    build_augment,
    make_loader,
    to_model_input,
)

DEFAULT_ZIP = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
IMAGE_SIZE = 64


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="Tiny ImageNet(-format) zip (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for every pipeline (default: 2)")
    ap.add_argument("--prefetch-factor", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches per repeat (default: 5)")
    ap.add_argument("--batches", type=int, default=40, help="timed batches per repeat (default: 40)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    return ap.parse_args()


def prepare_arrays(archive: Path, out: Path) -> None:
    """The preprocess stage's own code: zip -> data/prepared-style arrays."""
    from tinyclf.preprocessing import prepare

    prepare(archive, out, dataset="tiny-imagenet", image_size=0, workers=2, progress=False)


def extract_train_jpegs(archive: Path, out: Path) -> Path:
    """train/<wnid>/images/*.JPEG for ImageFolder (member names checked: nothing escapes `out`)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            if "/train/" not in name or not name.endswith(".JPEG"):
                continue
            target = (out / name).resolve()
            if out.resolve() not in target.parents:
                raise SystemExit(f"{archive}: member {name!r} points outside the extraction dir")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
    (root,) = list(out.glob("*/train"))
    return root


def time_loader(loader, consume, warmup: int, batches: int, epoch_setter=None, epoch: int = 0) -> float:
    """Images/s over `batches` batches after `warmup` untimed ones of a fresh epoch."""
    if epoch_setter is not None:
        epoch_setter(epoch)
    it = iter(loader)
    for _ in range(warmup):
        consume(*next(it))
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        x, _y = next(it)
        consume(x, _y)
        images += x.shape[0]
    return images / (time.perf_counter() - start)


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}



def kernel_ms_per_batch(prepared: Path, batch_size: int, crop: str, repeats: int) -> dict:
    """One core, one batch: albumentations image by image vs BatchedAugment on the batch."""
    images = np.load(prepared / "train" / "images.npy", mmap_mode="r")[:batch_size].copy()
    tp = TrainParams(crop=crop)
    aug = build_augment(tp, IMAGE_SIZE)
    seeder = SampleSeeder(aug)
    batched = BatchedAugment(tp, IMAGE_SIZE, seed=0)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def per_image():
        for i, img in enumerate(images):
            seeder(0, 0, i)
            aug(image=img)

    results = {}
    for name, fn in (("albumentations_per_image", per_image), ("batched", lambda: batched(nchw, 1))):
        fn()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - start) * 1e3)
        results[name] = summarize(runs)
    return results


def main() -> int:
    args = parse_args()
    if not args.zip.is_file():
        print(f"error: {args.zip}: no such archive (pass --zip)", file=sys.stderr)
        return 1
    import cv2
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    scratch = Path(tempfile.mkdtemp(prefix="tinyclf-bench-"))
    try:
        t0 = time.perf_counter()
        prepared = scratch / "prepared"
        prepare_arrays(args.zip, prepared)
        jpeg_root = extract_train_jpegs(args.zip, scratch / "jpeg")
        stats = json.loads((prepared / "stats.json").read_text())
        mean, std = stats["mean"], stats["std"]
        print(f"setup (prepare arrays + extract JPEGs): {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        tp = TrainParams()  # defaults: random_resized_crop scale (0.35, 1) + hflip 0.5
        assert tp.crop == "random_resized_crop" and list(tp.rrc_scale) == [0.35, 1.0] and tp.hflip == 0.5
        loader_kw = dict(workers=args.workers, prefetch_factor=args.prefetch_factor, pin_memory=False, drop_last=True)

        ours_set = PreparedDataset(prepared, "train", build_augment(tp, IMAGE_SIZE), seed=0)
        ours_sampler = EpochSampler(len(ours_set), seed=0)
        ours = make_loader(ours_set, ours_sampler, args.batch_size, **loader_kw)

        plain_set = PreparedDataset(prepared, "train")
        plain_sampler = EpochSampler(len(plain_set), seed=0)
        plain = make_loader(plain_set, plain_sampler, args.batch_size, **loader_kw)
        batched = BatchedAugment(tp, IMAGE_SIZE, seed=0)

        tv_set = ImageFolder(str(jpeg_root), transform=T.Compose([
            T.RandomResizedCrop(IMAGE_SIZE, scale=(0.35, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]))
        assert len(tv_set) == len(ours_set), (len(tv_set), len(ours_set))
        tv = torch.utils.data.DataLoader(tv_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         prefetch_factor=args.prefetch_factor, persistent_workers=True, drop_last=True)

        step = [0]

        def consume_ours(x, _y):
            to_model_input(x, mean, std, channels_last=False)

        def consume_batched(x, _y):
            step[0] += 1
            to_model_input(batched(x, step[0]), mean, std, channels_last=False)

        def consume_tv(x, _y):
            pass  # already float and normalized by the workers

        load_before = os.getloadavg()
        figures = {"ours": [], "torchvision": [], "batched_cpu": []}
        for r in range(args.repeats):
            figures["ours"].append(time_loader(ours, consume_ours, args.warmup, args.batches, ours_sampler.set_epoch, r))
            figures["torchvision"].append(time_loader(tv, consume_tv, args.warmup, args.batches))
            figures["batched_cpu"].append(
                time_loader(plain, consume_batched, args.warmup, args.batches, plain_sampler.set_epoch, r))
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in figures.items()),
                  file=sys.stderr)
        load_after = os.getloadavg()
        del ours, plain, tv

        kernels = {crop: kernel_ms_per_batch(prepared, args.batch_size, crop, max(args.repeats, 5))
                   for crop in ("random_resized_crop", "pad_crop")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_1min_before_after": [load_before[0], load_after[0]],
                    "torch": torch.__version__, "python": platform.python_version()},
        "setup": {"images": len(ours_set), "batch_size": args.batch_size, "workers": args.workers,
                  "prefetch_factor": args.prefetch_factor, "warmup_batches": args.warmup,
                  "timed_batches": args.batches, "repeats": args.repeats},
        "images_per_s": {k: summarize(v) for k, v in figures.items()},
        "ratio_ours_vs_torchvision": summarize([a / b for a, b in zip(figures["ours"], figures["torchvision"])]),
        "ratio_batched_vs_torchvision": summarize([a / b for a, b in zip(figures["batched_cpu"], figures["torchvision"])]),
        "ratio_batched_vs_ours": summarize([a / b for a, b in zip(figures["batched_cpu"], figures["ours"])]),
        "augment_ms_per_batch_one_core": kernels,
    }
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
          f"load avg {m['loadavg_1min_before_after'][0]:.1f} -> {m['loadavg_1min_before_after'][1]:.1f}")
    print(f"{len(ours_set):,} train images, batch {args.batch_size}, {args.workers} workers, "
          f"{args.batches} timed batches x {args.repeats} repeats (median [min-max])")
    names = {"ours": "(a) ours: arrays + albumentations", "torchvision": "(b) torchvision ImageFolder + PIL",
             "batched_cpu": "(c) arrays + BatchedAugment (CPU)"}
    for key, label in names.items():
        s = result["images_per_s"][key]
        print(f"  {label:<38} {s['median']:>8,.0f} img/s  [{s['min']:,.0f}-{s['max']:,.0f}]")
    for key, label in (("ratio_ours_vs_torchvision", "(a)/(b)"), ("ratio_batched_vs_torchvision", "(c)/(b)"),
                       ("ratio_batched_vs_ours", "(c)/(a)")):
        s = result[key]
        print(f"  ratio {label}: {s['median']:.2f}x  [{s['min']:.2f}-{s['max']:.2f}]")
    print("augmentation alone, one core, ms per batch of", args.batch_size)
    for crop, k in kernels.items():
        a, b = k["albumentations_per_image"], k["batched"]
        print(f"  {crop:<20} albumentations per image {a['median']:6.1f} ms  BatchedAugment {b['median']:6.1f} ms  "
              f"({a['median'] / b['median']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
