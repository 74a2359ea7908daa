"""Training input pipeline throughput on the real Tiny ImageNet subset, against torchvision.

    .venv/bin/python benchmarks/input_pipeline.py [--repeats 3] [--seconds 8] [--zip ../shared/data/tiny-imagenet-200-subset.zip]

Measured in one run, on the subset's 20,000 train images, batch 256, 2 DataLoader workers,
prefetch factor 4, for every pipeline:
  (a) ours:      prepared uint8 arrays (memmap) -> PreparedDataset + make_loader with the default
                 per-image albumentations augment (random_resized_crop + flip) -> to_model_input
                 in the main process
  (b) baseline:  torchvision ImageFolder over the extracted JPEGs + PIL + RandomResizedCrop(64,
                 scale=(0.35, 1)) + RandomHorizontalFlip + ToTensor + Normalize in the workers
  (c) device:    the device backend (`train.aug_backend: device`) on the CPU: the split held as one
                 tensor, each batch gathered and augmented as whole-batch tensor ops, normalized,
                 in the main process (no workers: it gets the workers' cores as torch threads)
  (d) ours, pad_crop, and (e) device, pad_crop: (a) and (c) with the CIFAR-style crop (reflect pad
                 4 + random 64x64 window + flip), the case the device backend is meant to win on a CPU
Each repeat measures every pipeline back to back, so background load hits all of them alike.

Steady state only. A DataLoader asks its workers for prefetch_factor x workers batches (8 here)
as soon as it is iterated and keeps that many in flight, and persistent workers go on working on
their last epoch's queued batches after the consumer has moved on. The old method timed 40
batches after 5 warm-up ones on persistent loaders: up to 8 of the 40 could be ready before the
clock started, 40 batches of (a) take about half a second here (so one burst of a neighbour's
work decided a repeat), and the previous pipeline's leftover batches ran on the 2 cores while the
next one was timed. On the full 100,000-image set a user saw (a)/(b) swing from 1.75x to 5.91x
between two repeats ((a) 12,223 and 41,147 images/s). Now each measurement:
  1. starts fresh workers over an endless stream of shuffled epochs (so a window is never cut by
     an epoch end: batches simply run on into the next epoch, each sample still seeded by its own
     (epoch, index));
  2. drains the start-up: consumes prefetch_factor x workers + --warmup batches untimed, so every
     batch that was requested before the first one arrived is gone before the clock starts;
  3. times a window of --seconds (and at least --min-batches batches): images consumed after the
     warm-up / time from the last warm-up batch to the last timed one. What is already queued at
     the start of the window is what the steady pipeline keeps queued (about as much is queued at
     its end), and is at most prefetch_factor x workers batches: 8 against the ~100-650 batches
     an 8 s window holds here, and never more than an eighth with the default --min-batches;
  4. shuts the workers down (non-persistent loaders, the same for every pipeline) and checks that
     no worker process is left, so nothing of one pipeline runs while the next one is timed.
Background load: on 2 shared cores a neighbour's burst is what moves a repeat (a neighbour using 0.9
of a core cut (a) and (b) by about half here), and the load average lags a minute and counts this
benchmark's own 2-3 busy processes. So each window also records the CPU that other processes used
during it (machine busy time from /proc/stat minus this process's and its workers', in cores), and
a repeat in which that exceeds --max-other-cores (0.1) in any window is measured again, whole, up
to --retries times; the re-measured repeats are printed and kept in --json, never averaged in.

Reported per pipeline: median images/s over repeats with min-max and the spread around the median
(rows outside +-10% are flagged; --tolerance), each repeat's figure, its number of timed batches
and the other processes' CPU during its window; then the ratios with each repeat's value. Target:
(a)/(b) >= 3x in every repeat, and (e)/(d) >= 1 (the device backend at least as fast as the
workers for pad_crop). Then the augmentation alone on one core, per batch: albumentations image by
image vs DeviceAugment on the whole batch.

To add a pipeline, append one Pipeline(...) in build_pipelines(); ratios and printing follow the list.
The main process uses one torch thread, so that it does not fight the two workers for two cores.
Scratch data (prepared arrays, extracted JPEGs) goes to a temp dir outside the repo, removed after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py; benchmarks/ is on sys.path)
from torch.utils.data import DataLoader, Sampler  # noqa: E402

from tinyclf.augment.device import DeviceAugment
from tinyclf.augment.per_image import PerImageAugment, SampleSeeder, build_augment
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.device_data import DeviceSplit, DeviceTrainBatches
from tinyclf.loading.loader import LoaderSpeed, make_loader
from tinyclf.loading.normalize import to_model_input
from tinyclf.loading.samplers import EpochOrder, EpochSampler
from tinyclf.params import TrainParams  # noqa: E402

DEFAULT_ZIP = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
IMAGE_SIZE = 64
OURS, BASELINE, DEVICE = "ours", "torchvision", "device"  # the targets: ours/torchvision, device_pad/ours_pad
TARGET_RATIO = 3.0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="Tiny ImageNet(-format) zip (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for every pipeline (default: 2)")
    ap.add_argument("--prefetch-factor", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=5,
                    help="untimed batches per measurement on top of the prefetch_factor x workers that are "
                         "drained first (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed window per measurement (default: %(default)s)")
    ap.add_argument("--min-batches", type=int, default=64,
                    help="a window lasts at least this many batches, however long that takes (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-other-cores", type=float, default=0.1,
                    help="a repeat in which other processes used more CPU than this (in cores) during any "
                         "window is measured again; inf: never (default: %(default)s)")
    ap.add_argument("--retries", type=int, default=2, help="at most this many re-measured repeats per repeat "
                                                           "(default: %(default)s)")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="flag rows whose repeats stray further than this from their median (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.workers < 1:
        ap.error("--workers must be >= 1: the method drains the workers' prefetch")
    return args


def prepare_arrays(archive: Path, out: Path) -> None:
    """The preprocess stage's own code: zip -> data/prepared-style arrays."""
    from tinyclf.data.formats.contract import PrepareOptions
    from tinyclf.data.preprocess import prepare

    prepare(archive, out, "tiny-imagenet", PrepareOptions(workers=2, progress=False))


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


class EpochStream(Sampler):
    """Shuffled epochs back to back, without end; each new iterator starts at the next unused epoch.

    `epoch_order(epoch)` gives one epoch's sample keys. Drop-last batching then runs straight
    across epoch boundaries, so a timed window never includes an epoch's end or start.
    """

    def __init__(self, epoch_order: Callable[[int], Iterable]):
        self.epoch_order = epoch_order
        self.next_epoch = 0

    def __iter__(self) -> Iterator:
        for epoch in itertools.count(self.next_epoch):
            self.next_epoch = epoch + 1
            yield from self.epoch_order(epoch)


def epochs_of(sampler: EpochSampler) -> Callable[[int], Iterable]:
    """EpochSampler's (index, epoch) keys for any epoch, for PreparedDataset's per-sample seeding."""
    def order(epoch: int) -> Iterable:
        sampler.set_epoch(epoch)
        return iter(sampler)
    return order


def shuffled(n: int, seed: int = 0) -> Callable[[int], Iterable]:
    """A plain shuffle per epoch (what DataLoader(shuffle=True) does), reproducible per epoch."""
    return lambda epoch: torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


@dataclass
class Pipeline:
    """One row of the benchmark: a loader over an EpochStream and what the main process does per batch."""

    key: str                                          # JSON key and short name
    label: str                                        # printed row label
    loader: Iterable                                  # non-persistent DataLoader workers over an EpochStream,
    consume: Callable[[torch.Tensor, torch.Tensor], object]  # or the device backend's endless epochs
    threads: int = 1                                  # torch threads of the main process while measured


class DeviceEpochs:
    """The device backend's batches, epoch after epoch (as EpochStream does for the DataLoaders)."""

    def __init__(self, batches: DeviceTrainBatches):
        self.batches = batches

    def __iter__(self) -> Iterator:
        for epoch in itertools.count():
            yield from self.batches.epoch(epoch)


@dataclass
class Window:
    images_per_s: float
    batches: int
    seconds: float
    other_cores: float | None  # CPU used by processes other than this benchmark's, in cores (None: no /proc)


class OtherLoad:
    """Cores' worth of CPU that processes outside this benchmark used over an interval (Linux /proc).

    Busy jiffies of the whole machine minus those of this process and its live children (the
    loader workers). The load average lags by a minute; this says which window a neighbour hit.
    """

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._sample()

    @staticmethod
    def _busy() -> int:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        return user + nice + system + irq + softirq + steal

    @staticmethod
    def _ours() -> int:
        total = 0
        for pid in [os.getpid()] + [c.pid for c in multiprocessing.active_children()]:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total

    def _sample(self) -> tuple[float, int, int] | None:
        try:
            return time.perf_counter(), self._busy(), self._ours()
        except (OSError, ValueError):
            return None

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        return max(0.0, ((end[1] - self.start[1]) - (end[2] - self.start[2])) / self.tick / wall)


def measure(p: Pipeline, drain: int, seconds: float, min_batches: int) -> Window:
    """Steady-state images/s of one pipeline: fresh workers, `drain` untimed batches, a timed window.

    The clock starts when the last untimed batch has been consumed and stops when the first batch
    past `seconds` (and past `min_batches`) has been consumed; the images of the timed batches
    over that interval.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(p.threads)
    it = iter(p.loader)  # forks the workers, which start on prefetch_factor x workers batches
    try:
        for _ in range(drain):
            p.consume(*next(it))
        images = batches = 0
        others = OtherLoad()
        start = now = time.perf_counter()
        while now - start < seconds or batches < min_batches:
            x, y = next(it)
            p.consume(x, y)
            images += x.shape[0]
            batches += 1
            now = time.perf_counter()
        window = Window(images / (now - start), batches, now - start, others.cores())
    finally:
        del it  # non-persistent workers: the iterator's finalizer stops and joins them
        torch.set_num_threads(threads)
    left = multiprocessing.active_children()
    if left:
        raise RuntimeError(f"{p.key}: {len(left)} worker process(es) still alive after the measurement")
    return window


def summarize(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread_pct": [100 * (min(values) / med - 1), 100 * (max(values) / med - 1)], "runs": values}


def kernel_ms_per_batch(prepared: Path, batch_size: int, crop: str, repeats: int) -> dict:
    """One core, one batch: albumentations image by image vs DeviceAugment on the batch (uint8 out of
    albumentations, normalized float out of DeviceAugment)."""
    images = np.load(prepared / "train" / "images.npy", mmap_mode="r")[:batch_size].copy()
    tp = TrainParams(crop=crop)
    aug = build_augment(tp, IMAGE_SIZE)
    seeder = SampleSeeder(aug)
    device_aug = DeviceAugment(tp, IMAGE_SIZE, [0.5] * 3, [0.25] * 3, seed=0, channels_last=False)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2)
    indices = torch.arange(batch_size)

    def per_image():
        for i, img in enumerate(images):
            seeder(0, 0, i)
            aug(image=img)

    results = {}
    for name, fn in (("albumentations_per_image", per_image), ("device", lambda: device_aug(nchw, indices, 1))):
        fn()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - start) * 1e3)
        results[name] = summarize(runs)
    return results


def run_repeats(pipelines: list[Pipeline], args: argparse.Namespace, drain: int,
                pairs: list[tuple[str, str]]) -> tuple[dict[str, list[Window]], list[dict[str, Window]]]:
    """`args.repeats` repeats, each every pipeline back to back; a repeat in which other processes
    used more than --max-other-cores during any window is measured again (at most --retries times,
    then kept as it is). Returns the kept windows per pipeline and the discarded repeats."""
    kept: dict[str, list[Window]] = {p.key: [] for p in pipelines}
    discarded: list[dict[str, Window]] = []
    for r in range(args.repeats):
        for attempt in range(args.retries + 1):
            rep = {p.key: measure(p, drain, args.seconds, args.min_batches) for p in pipelines}
            rate = {k: w.images_per_s for k, w in rep.items()}
            disturbed = any(w.other_cores is not None and w.other_cores > args.max_other_cores for w in rep.values())
            verdict = ""
            if disturbed:
                verdict = (f" -> disturbed (> {args.max_other_cores:g} cores), measured again" if attempt < args.retries
                           else f" -> disturbed (> {args.max_other_cores:g} cores), kept: no retries left")
            print(f"repeat {r + 1}/{args.repeats}" + (f" (try {attempt + 1})" if attempt else "") + ": "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in rate.items())
                  + " img/s; " + ", ".join(f"{a}/{b} {rate[a] / rate[b]:.2f}x" for a, b in pairs)
                  + "; other processes used " + ", ".join(_cores(w.other_cores) for w in rep.values())
                  + f" cores; load avg {os.getloadavg()[0]:.1f}{verdict}", file=sys.stderr)
            if disturbed and attempt < args.retries:
                discarded.append(rep)
                continue
            for k, w in rep.items():
                kept[k].append(w)
            break
    return kept, discarded


def _cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def ratio_pairs(keys: list[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) pairs: ours vs the baseline, and each device row vs ours with the same crop."""
    pairs = [(OURS, BASELINE)]
    pairs += [(k, OURS + k[len(DEVICE):]) for k in keys if k.startswith(DEVICE) and OURS + k[len(DEVICE):] in keys]
    return pairs


@dataclass
class ScratchData:
    """What every pipeline reads, made once in the scratch dir."""

    prepared: Path             # the preprocess stage's arrays
    jpeg_root: Path            # the extracted train JPEGs, for ImageFolder
    mean: list[float]          # the prepared set's normalization
    std: list[float]


@dataclass
class Measured:
    """The repeats of every pipeline and what the report says about how they were taken."""

    windows: dict[str, list[Window]]      # kept windows per pipeline key
    discarded: list[dict[str, Window]]    # repeats measured again, never averaged in
    labels: dict[str, str]                # pipeline key -> printed row label, in pipeline order
    pairs: list[tuple[str, str]]          # the ratios reported
    images: int                           # train images each pipeline streams
    drain: int                            # untimed batches per measurement
    load: tuple[float, float]             # load average over the last minute, before and after the repeats


def set_up_data(archive: Path, scratch: Path) -> ScratchData:
    """Prepared arrays and extracted JPEGs from the same archive, timed (to stderr)."""
    t0 = time.perf_counter()
    prepared = scratch / "prepared"
    prepare_arrays(archive, prepared)
    jpeg_root = extract_train_jpegs(archive, scratch / "jpeg")
    stats = json.loads((prepared / "stats.json").read_text())
    print(f"setup (prepare arrays + extract JPEGs): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return ScratchData(prepared, jpeg_root, stats["mean"], stats["std"])


def build_pipelines(data: ScratchData, args: argparse.Namespace) -> tuple[list[Pipeline], int]:
    """Every pipeline of the benchmark, in report order, and the number of train images each streams."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    prepared, mean, std = data.prepared, data.mean, data.std
    tp = TrainParams()  # defaults: random_resized_crop scale (0.35, 1) + hflip 0.5
    assert tp.crop == "random_resized_crop" and list(tp.rrc_scale) == [0.35, 1.0] and tp.hflip == 0.5
    # The same for every pipeline. Non-persistent workers: each measurement starts its own and
    # stops them (persistence only matters at an epoch start, which the stream never has).
    speed = LoaderSpeed(workers=args.workers, prefetch_factor=args.prefetch_factor, pin_memory=False,
                        persistent_workers=False)

    ours_set = PreparedDataset(prepared, "train", PerImageAugment(build_augment(tp, IMAGE_SIZE), seed=0))
    tv_set = ImageFolder(str(data.jpeg_root), transform=T.Compose([
        T.RandomResizedCrop(IMAGE_SIZE, scale=(0.35, 1.0)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ]))
    assert len(tv_set) == len(ours_set), (len(tv_set), len(ours_set))
    pad = TrainParams(crop="pad_crop")
    ours_pad_set = PreparedDataset(prepared, "train", PerImageAugment(build_augment(pad, IMAGE_SIZE), seed=0))
    split = DeviceSplit(prepared, "train", torch.device("cpu"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def device_epochs(params: TrainParams) -> DeviceEpochs:
        augment = DeviceAugment(params, IMAGE_SIZE, mean, std, seed=0, channels_last=False)
        return DeviceEpochs(DeviceTrainBatches(split, augment, EpochOrder(seed=0), per_rank=args.batch_size,
                                               micro_per_epoch=len(split) // args.batch_size))

    pipelines = [
        Pipeline(OURS, "(a) ours: arrays + albumentations",
                 make_loader(ours_set, EpochStream(epochs_of(EpochSampler(len(ours_set), seed=0))),
                             args.batch_size, speed, drop_last=True),
                 lambda x, _y: to_model_input(x, mean, std, channels_last=False)),
        Pipeline(BASELINE, "(b) torchvision ImageFolder + PIL",
                 DataLoader(tv_set, batch_size=args.batch_size, sampler=EpochStream(shuffled(len(tv_set))),
                            num_workers=args.workers, prefetch_factor=args.prefetch_factor,
                            persistent_workers=False, drop_last=True),
                 lambda x, _y: None),  # already float and normalized by the workers
        Pipeline(DEVICE, "(c) device backend (CPU)", device_epochs(tp), lambda x, _y: None, threads=cores),
        Pipeline(OURS + "_pad", "(d) ours, pad_crop",
                 make_loader(ours_pad_set, EpochStream(epochs_of(EpochSampler(len(ours_pad_set), seed=0))),
                             args.batch_size, speed, drop_last=True),
                 lambda x, _y: to_model_input(x, mean, std, channels_last=False)),
        Pipeline(DEVICE + "_pad", "(e) device backend (CPU), pad_crop", device_epochs(pad), lambda x, _y: None,
                 threads=cores),
    ]
    return pipelines, len(ours_set)


def measure_pipelines(pipelines: list[Pipeline], images: int, args: argparse.Namespace) -> Measured:
    """Every repeat of every pipeline (run_repeats), with the load average around them."""
    keys = [p.key for p in pipelines]
    assert OURS in keys and BASELINE in keys
    pairs = ratio_pairs(keys)
    drain = args.prefetch_factor * args.workers + args.warmup

    load_before = os.getloadavg()
    windows, discarded = run_repeats(pipelines, args, drain, pairs)
    load_after = os.getloadavg()
    return Measured(windows, discarded, {p.key: p.label for p in pipelines}, pairs, images, drain,
                    (load_before[0], load_after[0]))


def result_record(measured: Measured, kernels: dict, args: argparse.Namespace) -> dict:
    """The figures as --json writes them and the report prints them."""
    windows = measured.windows
    figures = {k: [w.images_per_s for w in ws] for k, ws in windows.items()}
    ratios = {f"{a}/{b}": summarize([x / y for x, y in zip(figures[a], figures[b])]) for a, b in measured.pairs}
    target_runs = ratios[f"{OURS}/{BASELINE}"]["runs"]
    return {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_1min_before_after": list(measured.load),
                    "torch": torch.__version__, "python": platform.python_version()},
        "setup": {"images": measured.images, "batch_size": args.batch_size, "workers": args.workers,
                  "prefetch_factor": args.prefetch_factor, "untimed_batches": measured.drain, "window_s": args.seconds,
                  "min_batches": args.min_batches, "repeats": args.repeats,
                  "max_other_cores": args.max_other_cores, "retries": args.retries},
        "images_per_s": {k: summarize(v) for k, v in figures.items()},
        "timed_batches": {k: [w.batches for w in ws] for k, ws in windows.items()},
        "other_processes_cores": {k: [w.other_cores for w in ws] for k, ws in windows.items()},
        "discarded_repeats": [{k: {"images_per_s": w.images_per_s, "other_processes_cores": w.other_cores}
                               for k, w in rep.items()} for rep in measured.discarded],
        "ratios": ratios,
        "target": {"ratio": f"{OURS}/{BASELINE}", "min": TARGET_RATIO,
                   "met_in_every_repeat": all(x >= TARGET_RATIO for x in target_runs)},
        "device_target": {"ratio": f"{DEVICE}_pad/{OURS}_pad", "min": 1.0,
                          "met_in_every_repeat": all(x >= 1.0 for x in ratios[f"{DEVICE}_pad/{OURS}_pad"]["runs"])},
        "augment_ms_per_batch_one_core": kernels,
    }


def print_report(result: dict, measured: Measured, args: argparse.Namespace) -> None:
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
          f"load avg {m['loadavg_1min_before_after'][0]:.1f} -> {m['loadavg_1min_before_after'][1]:.1f}")
    print(f"{measured.images:,} train images, batch {args.batch_size}, {args.workers} workers, prefetch "
          f"{args.prefetch_factor}; per measurement {measured.drain} untimed batches, then a {args.seconds:g} s window "
          f"(>= {args.min_batches} batches); {args.repeats} repeats: median [min-max] (spread around the median)")
    tol = 100 * args.tolerance
    width = max(len(v) for v in measured.labels.values())
    for key, label in measured.labels.items():
        s = result["images_per_s"][key]
        lo, hi = s["spread_pct"]
        flag = "" if max(-lo, hi) <= tol else f"  (outside +-{tol:g}%)"
        print(f"  {label:<{width}} {s['median']:>8,.0f} img/s  [{s['min']:,.0f}-{s['max']:,.0f}] "
              f"({lo:+.1f}%/{hi:+.1f}%)  repeats: {', '.join(f'{v:,.0f}' for v in s['runs'])}; timed batches: "
              f"{', '.join(str(b) for b in result['timed_batches'][key])}; other processes: "
              f"{', '.join(_cores(c) for c in result['other_processes_cores'][key])} cores{flag}")
    for name, s in result["ratios"].items():
        print(f"  ratio {name}: {s['median']:.2f}x  [{s['min']:.2f}-{s['max']:.2f}]  repeats: "
              + ", ".join(f"{v:.2f}x" for v in s["runs"]))
    if measured.discarded:
        print(f"  measured again: {len(measured.discarded)} repeat(s) in which other processes used more than "
              f"{args.max_other_cores:g} cores (figures above are from the kept repeats; all in the log and --json)")
    met = result["target"]["met_in_every_repeat"]
    target_runs = result["ratios"][f"{OURS}/{BASELINE}"]["runs"]
    print(f"target {OURS}/{BASELINE} >= {TARGET_RATIO:g}x: " + ("met in every repeat" if met else
          f"NOT met in {sum(x < TARGET_RATIO for x in target_runs)} of {len(target_runs)} repeats"))
    dmet = result["device_target"]["met_in_every_repeat"]
    print(f"target {DEVICE}_pad/{OURS}_pad >= 1x (device backend at least as fast as the workers, pad_crop): "
          + ("met in every repeat" if dmet else "NOT met in every repeat"))
    print("augmentation alone, one core, ms per batch of", args.batch_size)
    for crop, k in result["augment_ms_per_batch_one_core"].items():
        a, b = k["albumentations_per_image"], k["device"]
        print(f"  {crop:<20} albumentations per image {a['median']:6.1f} ms  DeviceAugment {b['median']:6.1f} ms  "
              f"({a['median'] / b['median']:.2f}x)")


def main() -> int:
    args = parse_args()
    if not args.zip.is_file():
        print(f"error: {args.zip}: no such archive (pass --zip)", file=sys.stderr)
        return 1
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    scratch = Path(tempfile.mkdtemp(prefix="tinyclf-bench-"))
    try:
        data = set_up_data(args.zip, scratch)
        # The pipelines (their datasets, loaders and the device split) are dropped before the kernels run.
        measured = measure_pipelines(*build_pipelines(data, args), args)
        kernels = {crop: kernel_ms_per_batch(data.prepared, args.batch_size, crop, max(args.repeats, 5))
                   for crop in ("random_resized_crop", "pad_crop")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    result = result_record(measured, kernels, args)
    print_report(result, measured, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
