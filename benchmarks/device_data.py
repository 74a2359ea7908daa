"""The device backend's host path against its device path, measured in one run.

    python benchmarks/device_data.py                          # the real subset, tiny_resnet50, batch 64
    python benchmarks/device_data.py --synthetic 20000        # synthetic arrays instead (said so in the output)
    python benchmarks/device_data.py --batch 512 --steps 20   # on a GPU

- device path (`train.device_data: device`): the prepared splits held on the training device,
  each batch gathered there (`loading.device_data.DeviceSplit`);
- host path (`train.device_data: host`): the splits left in host memory (the memory map), each
  batch gathered on the host into one of two staging buffers (pinned on CUDA) and copied to the
  device without blocking (`HostSplit`); on a CPU the copy is a no-op.

Printed per path: the gather (+ copy) of one batch alone (images, labels and augmentation keys,
timed over --gathers batches of an epoch's order, the device synchronized at the end), and the
training step time of the train stage's own loop (`train.setup.stage_loop`: what a run builds,
`engine.train_one_epoch` with params.yaml's train section and the benchmark's overrides), in
rounds that alternate (device, host, device, host, …) after one
warm-up round each, so load from other processes hits both alike; then the ratios host / device
(medians, with the range of the per-round ratios). Runs on CUDA when there is one, else the CPU.
Random weights: timings only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))  # support.synthetic_prepared, for --synthetic
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
PATHS = ("device", "host")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="train.device_data: host vs device, same run.")
    parser.add_argument("--model", default="tiny_resnet50")
    parser.add_argument("--batch", type=int, default=64, help="global batch (one process: the per-rank batch)")
    parser.add_argument("--crop", default="random_resized_crop", choices=["pad_crop", "random_resized_crop"])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of each path")
    parser.add_argument("--gathers", type=int, default=64, help="batches timed per round of the gather (+ copy) alone")
    parser.add_argument("--gather-rounds", type=int, default=10, help="alternating rounds of the gather alone")
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the real Tiny ImageNet subset")
    parser.add_argument("--synthetic", type=int, default=0,
                        help="train images of a synthetic 64x64, 200-class set instead of the real subset")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step (CUDA; off by default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default; 1 where other jobs share the cores)")
    return parser.parse_args()


def prepare(args, out: Path) -> str:
    """The data under `out`: the real subset through the preprocess stage's own `prepare`, or
    synthetic arrays; returns what it is, for the output."""
    if args.synthetic:
        from support.synthetic_prepared import write_prepared

        write_prepared(out, num_classes=200, train_per_class=max(1, args.synthetic // 200), val_per_class=5, size=64)
        return f"SYNTHETIC arrays ({args.synthetic // 200 * 200} train images, 64x64, 200 classes)"
    from tinyclf.data.formats.contract import PrepareOptions
    from tinyclf.data.preprocess import prepare as preprocess

    preprocess(args.zip, out, "tiny-imagenet", PrepareOptions(workers=2, progress=False))
    return "the real Tiny ImageNet subset (20,000 train images, 64x64, 200 classes)"


def train_params(args, device_data: str):
    """params.yaml's train section with the benchmark's overrides."""
    import yaml

    from tinyclf.params import params_from_dict

    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["train"].update(batch_size=args.batch, crop=args.crop, model=args.model, aug_backend="device",
                         device_data=device_data, compile=args.compile)
    return params_from_dict(tree).train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gather_seconds(split, order: torch.Tensor, batch: int, count: int) -> Callable[[int], float]:
    """Seconds per batch to gather `count` batches of `order` from `split` onto its device (images,
    labels and the augmentation keys, as an epoch does), the device synchronized at the end."""
    order = order.to(split.index_device)
    windows = [order[i * batch:(i + 1) * batch] for i in range(min(count, len(order) // batch))]

    def one_round(_r: int) -> float:
        sync(split.device)
        start = time.perf_counter()
        for window in windows:
            split.batch(window, window)
        sync(split.device)
        return (time.perf_counter() - start) / len(windows)
    return one_round


def step_seconds(params, prepared: Path, steps: int, device: torch.device) -> Callable[[int], float]:
    """The train stage's loop on `device` with `params` (train section): seconds per optimizer step."""
    from tinyclf.train.distributed import DistInfo
    from tinyclf.train.setup import stage_loop

    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=device)
    loop = stage_loop(prepared, params, info)  # seeded: the same initial weights for both paths
    print(f"  {params.device_data}: {loop.data.placement.describe()}", file=sys.stderr)

    def one_round(r: int) -> float:
        return loop.steps(loop.data.train_batches.epoch(r), steps)["seconds"] / steps
    return one_round


def alternate(loops: dict[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each loop per round, rounds alternating, after one warm-up round each."""
    for loop in loops.values():
        loop(0)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(rounds):
        for name, loop in loops.items():
            times[name].append(loop(r + 1))
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    """Median per path, and host / device with the range of the per-round ratios."""
    device, host = statistics.median(times["device"]), statistics.median(times["host"])
    per_round = [h / d for d, h in zip(times["device"], times["host"])]
    print(f"{title}: device {device * 1e3:.3f} ms, host {host * 1e3:.3f} ms, host / device {host / device:.3f} "
          f"(rounds {min(per_round):.3f}-{max(per_round):.3f})")


def measure(args, prepared: Path, device: torch.device) -> None:
    from tinyclf.loading.device_data import DeviceSplit, HostSplit
    from tinyclf.loading.samplers import EpochOrder

    splits = {"device": DeviceSplit(prepared, "train", device), "host": HostSplit(prepared, "train", device)}
    order = EpochOrder(seed=0).indices(len(splits["device"]), epoch=0)
    gathers = alternate({path: gather_seconds(splits[path], order, args.batch, args.gathers) for path in PATHS},
                        args.gather_rounds)
    report(f"gather (+ copy) of one batch of {args.batch} ({args.gather_rounds} rounds of {args.gathers})", gathers)
    del splits
    steps = alternate({path: step_seconds(train_params(args, path), prepared, args.steps, device) for path in PATHS},
                      args.rounds)
    report(f"training step ({args.steps} steps per round, {args.rounds} rounds)", steps)


def main() -> int:
    args = parse_args()
    from machine import cpu_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU only ({cpu_model()})"
    if not args.synthetic and not args.zip.is_file():
        print(f"the real Tiny ImageNet subset {args.zip} is missing: pass --synthetic N for synthetic data")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        what = prepare(args, Path(tmp) / "prepared")
        print(f"{what}; {args.model}, batch {args.batch}, {args.crop}; {where}, {torch.get_num_threads()} torch "
              f"threads; torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}", flush=True)
        measure(args, Path(tmp) / "prepared", device)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
