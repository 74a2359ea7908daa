"""Training-loop and evaluation overhead: the stages' loops against bare loops, measured in one run.

    python benchmarks/train.py                          # rows synthetic, real, eval: a few minutes on 2 cores
    python benchmarks/train.py --rows synthetic --image-size 64 --rounds 3 --steps 4
    python benchmarks/train.py --rows formats           # evaluation memory format: contiguous vs channels_last

Rows (each prints images/s of every loop and the ratios against its baseline):
- synthetic: `engine.train_one_epoch` fed by the workers backend (PreparedDataset on memory-mapped
  synthetic uint8 arrays at --image-size, per-image albumentations augmentation, `make_loader` with
  --workers, `to_model_input`) and the default recipe of params.yaml (timm SGD, per-step cosine
  scheduler, Mixup/CutMix with soft-target CE, label smoothing, EMA), against the bare loop
  `loss = CE(model(x), y); loss.backward(); opt.step(); opt.zero_grad()` on batches normalized ahead
  of time. Target stage / bare >= 0.95.
- real: the prepared arrays of the real Tiny ImageNet subset (--zip, prepared into a temp dir by the
  preprocess stage's own `prepare`: 64x64, 200 classes). The train stage's own data path and recipe
  (`train.setup.stage_loop`, params.yaml's train section) with the backend `train.aug_backend: auto`
  picks on this device (`recipe.resolve_aug_backend`),
  and the same with `workers` (train.workers processes) for comparison, each against the bare loop
  on the first images of the same split. Target auto / bare >= 0.95. Skipped, with a line saying
  why, when the subset is missing.
- eval: the evaluate stage's prediction path (`evaluate.run.predict` over the stage's DataLoader
  `evaluate.run.in_order`, evaluate params of params.yaml, in the memory format
  `evaluate.run.runs_channels_last` picks) over the first --eval-images val images of the same
  prepared subset, against a bare `torch.no_grad()` forward of the same model on the same images
  normalized ahead of time, in that memory format and in the other. Target stage / bare >= 0.9.
- formats (only when asked): a bare `no_grad` forward, fp32, --format-batch images, contiguous
  against channels_last, of timm resnet18 at 32x32 (10 classes) and tiny_resnet50 at 64x64 (200
  classes): what `runs_channels_last` rests on.

Each row runs in a process of its own (as each stage does), all its loops in that process with the
same model init, batch size and precision; rounds alternate (bare, stage, ..., bare, stage, ...)
after one warm-up round each, so load from other processes hits every loop alike; medians are
compared (with the range of the per-round ratios). Random weights: timings only, no accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
CPU = torch.device("cpu")
MEAN, STD = [0.48, 0.45, 0.40], [0.27, 0.26, 0.28]  # the synthetic rows' (timing does not depend on them)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Stage loops vs bare loops (train and evaluate), same run.")
    parser.add_argument("--rows", nargs="+", default=["synthetic", "real", "eval"],
                        choices=["synthetic", "real", "eval", "formats"])
    parser.add_argument("--model", default="tiny_resnet50", help="every row's model but formats'")
    parser.add_argument("--image-size", type=int, default=32, help="synthetic rows (the real subset is 64x64)")
    parser.add_argument("--batch", type=int, default=64, help="train batch of the synthetic and real rows")
    parser.add_argument("--crop", default="pad_crop", choices=["pad_crop", "random_resized_crop"])
    parser.add_argument("--classes", type=int, default=200, help="synthetic rows")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the synthetic stage loop")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per round, synthetic rows")
    parser.add_argument("--real-steps", type=int, default=2,
                        help="optimizer steps per round, real rows (a step of tiny_resnet50 at 64 px takes seconds here)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of each loop, every row")
    parser.add_argument("--eval-images", type=int, default=256, help="val images per round of the eval row")
    parser.add_argument("--format-batch", type=int, default=256)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the real Tiny ImageNet subset")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--prepared", type=Path, help="the subset prepared already (set for each row's process)")
    return parser.parse_args()


def load_params(args, **train_overrides):
    """params.yaml with the benchmark's train overrides (batch, crop, model, …)."""
    import yaml

    from tinyclf.params import params_from_dict

    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["train"].update(batch_size=args.batch, crop=args.crop, model=args.model, **train_overrides)
    return params_from_dict(tree)


def alternate(loops: dict[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each loop in each of `rounds` alternating rounds, after one warm-up round each
    (first steps allocate and pick kernels; loader workers start)."""
    for loop in loops.values():
        loop(0)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(rounds):
        for name, loop in loops.items():
            times[name].append(loop(r + 1))
        print(f"  round {r + 1}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), file=sys.stderr)
    return times


def bare_train_loop(model: torch.nn.Module, batches: list) -> Callable[[int], float]:
    """The bare training loop over `batches` (normalized ahead of time): seconds per step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def one_round(_r: int) -> float:
        model.train()
        start = time.perf_counter()
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / len(batches)
    return one_round


def normalized_batches(images: np.ndarray, labels: np.ndarray, batch: int, mean, std, *, channels_last: bool):
    """(model input, labels) batches of uint8 N×H×W×3 `images`, normalized as the stages normalize."""
    from tinyclf.loading.normalize import to_model_input

    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.array(images[start:start + batch], order="C")).permute(0, 3, 1, 2)  # a copy: writable
        out.append((to_model_input(x, mean, std, channels_last=channels_last),
                    torch.from_numpy(np.asarray(labels[start:start + batch], dtype=np.int64))))
    return out


def report(title: str, times: dict[str, list[float]], images: int, target: tuple[str, str, float]) -> None:
    """Images/s of every loop (`times`: its seconds for `images` images, per round; the median counts)
    and each one's ratio to the target's baseline, with the range of the per-round ratios; `target`
    is (loop, baseline, the ratio it should reach)."""
    loop, baseline, goal = target
    seconds = {name: statistics.median(t) for name, t in times.items()}
    print(title)
    for name, t in seconds.items():
        per_round = [b / x for b, x in zip(times[baseline], times[name])]
        ratio = "" if name == baseline else (f"   {name} / {baseline}: {seconds[baseline] / t:.3f} "
                                             f"(rounds {min(per_round):.3f}-{max(per_round):.3f})")
        print(f"  {name:<26} {images / t:9.1f} images/s{ratio}")
    achieved = seconds[baseline] / seconds[loop]
    print(f"  target {loop} / {baseline} >= {goal}: {achieved:.3f}, {'met' if achieved >= goal else 'NOT met'}")


# --------------------------------------------------------------------------------------- synthetic
def write_arrays(root: Path, n: int, size: int, num_classes: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", 8)):
        (root / split).mkdir(parents=True)
        np.save(root / split / "images.npy", rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8))
        np.save(root / split / "labels.npy", rng.integers(0, num_classes, size=count).astype(np.int64))
    classes = [{"index": i, "id": f"g{i:07d}", "name": f"class {i}"} for i in range(num_classes)]
    (root / "classes.json").write_text(json.dumps({"dataset": "tiny-imagenet", "generated": True, "classes": classes}))


def synthetic_stage_loop(args, tp, root: Path, model: torch.nn.Module) -> Callable[[int], float]:
    """The workers backend and the default recipe around `model`: seconds per step."""
    from timm.utils import ModelEmaV3

    from tinyclf.augment.per_image import PerImageAugment, build_augment
    from tinyclf.loading.dataset import PreparedDataset
    from tinyclf.loading.loader import LoaderSpeed, make_loader
    from tinyclf.loading.normalize import to_model_input
    from tinyclf.loading.samplers import EpochSampler
    from tinyclf.train.distributed import DistInfo
    from tinyclf.train.engine import Progress, StepControl, StepRecipe, train_one_epoch
    from tinyclf.train.recipe import build_loss_and_mixup, build_optimizer, build_scheduler

    dataset = PreparedDataset(root, "train", PerImageAugment(build_augment(tp, args.image_size), seed=tp.seed))
    sampler = EpochSampler(len(dataset), seed=tp.seed)
    speed = LoaderSpeed(workers=args.workers, prefetch_factor=tp.prefetch_factor, pin_memory=False)
    loader = make_loader(dataset, sampler, args.batch, speed, drop_last=True)
    opt = build_optimizer(model, tp)
    sched, _ = build_scheduler(opt, tp, updates_per_epoch=args.steps)
    loss_fn, mixup = build_loss_and_mixup(tp, args.classes)
    ema = ModelEmaV3(model, decay=tp.ema_decay, use_warmup=True, warmup_power=3 / 4) if tp.ema else None

    def prepare(images, labels):
        x = to_model_input(images, MEAN, STD, channels_last=True)
        if mixup is not None:
            x, soft = mixup(x, labels)
            return x, soft, soft.argmax(1)
        return x, labels, labels

    recipe = StepRecipe(optimizer=opt, loss_fn=loss_fn, scheduler=sched, ema=ema, prepare=prepare,
                        params=list(model.parameters()))
    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU)

    def one_round(r: int) -> float:
        sampler.set_epoch(r)
        out = train_one_epoch(model, loader, recipe, Progress(), micro_batches=args.steps, info=info,
                              control=StepControl(sync_every=tp.sync_every))
        return out["seconds"] / args.steps
    return one_round


def synthetic_rows(args) -> None:
    from tinyclf.model.architectures import create_model

    tp = load_params(args).train
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_arrays(root, args.batch * args.steps * 2, args.image_size, args.classes)
        torch.manual_seed(0)
        stage_model = create_model(args.model, args.classes).to(memory_format=torch.channels_last)
        bare_model = copy.deepcopy(stage_model)
        rng = np.random.default_rng(1)
        batches = normalized_batches(rng.integers(0, 256, (args.batch * args.steps, args.image_size, args.image_size, 3),
                                                  dtype=np.uint8),
                                     rng.integers(0, args.classes, args.batch * args.steps), args.batch, MEAN, STD,
                                     channels_last=True)
        loops = {"bare": bare_train_loop(bare_model, batches),
                 "stage (workers)": synthetic_stage_loop(args, tp, root, stage_model)}
        times = alternate(loops, args.rounds)
    report(f"synthetic: {args.model} {args.image_size}x{args.image_size}, batch {args.batch}, {args.crop}, fp32 CPU, "
           f"{torch.get_num_threads()} threads, stage workers {args.workers}, {args.rounds} rounds x {args.steps} steps",
           times, args.batch, ("stage (workers)", "bare", 0.95))


# --------------------------------------------------------------------------------------- real data
def prepare_subset(archive: Path, out: Path) -> None:
    """The preprocess stage's own code: the real subset's zip -> prepared arrays (64x64, 200 classes)."""
    from tinyclf.data.formats.contract import PrepareOptions
    from tinyclf.data.preprocess import prepare

    prepare(archive, out, "tiny-imagenet", PrepareOptions(workers=2, progress=False))


def stage_train_loop(params, prepared: Path, steps: int) -> tuple[str, Callable[[int], float]]:
    """The train stage's data path, model and recipe as `train.run` builds them on this CPU: (the
    backend it resolved, a round of `steps` optimizer steps -> seconds per step)."""
    from tinyclf.train.distributed import DistInfo
    from tinyclf.train.setup import stage_loop

    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU)
    loop = stage_loop(prepared, params.train, info)  # seeded: the same initial weights for every loop

    def one_round(r: int) -> float:
        return loop.steps(loop.data.train_batches.epoch(r), steps)["seconds"] / steps
    return loop.data.backend, one_round


def real_rows(args, prepared: Path) -> None:
    from tinyclf.data import arrays
    from tinyclf.model.architectures import create_model
    from tinyclf.train.recipe import resolve_aug_backend, seed_everything

    params = load_params(args)
    stats, classes = arrays.load_stats(prepared), arrays.load_classes(prepared)
    images, labels = arrays.load_split(prepared, "train")
    n = args.batch * args.real_steps
    seed_everything(params.train.seed)  # build_trainables' seeding: the bare model starts from the same weights
    bare_model = create_model(args.model, len(classes["classes"])).to(memory_format=torch.channels_last)
    batches = normalized_batches(images[:n], labels[:n], args.batch, stats["mean"], stats["std"], channels_last=True)
    auto = resolve_aug_backend(params.train, CPU)
    loops = {"bare": bare_train_loop(bare_model, batches)}
    for backend in dict.fromkeys([auto, "workers"]):
        resolved, loops[f"stage ({backend})"] = stage_train_loop(load_params(args, aug_backend=backend), prepared,
                                                                 args.real_steps)
        assert resolved == backend, (resolved, backend)
    times = alternate(loops, args.rounds)
    size = stats["image_size"][0]
    report(f"real: Tiny ImageNet subset ({len(labels)} train images, {size}x{size}, {len(classes['classes'])} classes), "
           f"{args.model}, batch {args.batch}, {args.crop}, fp32 CPU, {torch.get_num_threads()} threads, "
           f"train.aug_backend auto -> {auto} here, workers backend with {params.train.workers} workers, "
           f"{args.rounds} rounds x {args.real_steps} steps", times, args.batch, (f"stage ({auto})", "bare", 0.95))


def eval_rows(args, prepared: Path) -> None:
    from torch.utils.data import Subset

    from tinyclf.data import arrays
    from tinyclf.evaluate.run import in_order, predict, runs_channels_last
    from tinyclf.loading.dataset import PreparedDataset
    from tinyclf.loading.normalize import ModelInput
    from tinyclf.model.architectures import create_model

    params = load_params(args)
    ep, stats, classes = params.evaluate, arrays.load_stats(prepared), arrays.load_classes(prepared)
    images, labels = arrays.load_split(prepared, "val")
    n = min(args.eval_images, len(labels))
    channels_last = runs_channels_last({"params": params.to_dict()})  # the stage reads model.pt's meta
    torch.manual_seed(0)
    stage_model = create_model(args.model, len(classes["classes"])).eval()
    dataset = Subset(PreparedDataset(prepared, "val"), range(n))
    to_input = ModelInput(stats["mean"], stats["std"], channels_last=channels_last)
    predicted = {}

    def stage(_r: int) -> float:
        start = time.perf_counter()
        predicted["log_probs"] = predict(stage_model, in_order(dataset, ep, CPU), to_input, tta_flip=ep.tta_flip,
                                         device=CPU, progress=False).log_probs
        return time.perf_counter() - start

    loops, batches = {}, {}
    for fmt in (channels_last, not channels_last):  # the stage's format first: the baseline
        name = f"bare {'channels_last' if fmt else 'contiguous'}"
        model = copy.deepcopy(stage_model).to(memory_format=torch.channels_last if fmt else torch.contiguous_format)
        batches[name] = normalized_batches(images[:n], labels[:n], ep.batch_size, stats["mean"], stats["std"],
                                           channels_last=fmt)
        loops[name] = bare_forward(model, batches[name])
    baseline = next(iter(loops))
    loops["stage"] = stage
    times = alternate(loops, args.rounds)
    with torch.no_grad():  # the stage predicted what the bare forward computes
        bare_top1 = torch.cat([stage_model(x) for x, _ in batches[baseline]]).argmax(1)
    agree = float((torch.from_numpy(predicted["log_probs"]).argmax(1) == bare_top1).float().mean())
    report(f"eval: the evaluate stage's predict ({n} val images of the subset, batch {ep.batch_size}, "
           f"evaluate.workers {ep.workers}, channels_last {channels_last}) vs a bare no_grad forward, {args.model}, "
           f"fp32 CPU, {torch.get_num_threads()} threads, {args.rounds} rounds; stage/bare top-1 agreement {agree:.3f}",
           times, n, ("stage", baseline, 0.9))


def bare_forward(model: torch.nn.Module, batches: list) -> Callable[[int], float]:
    """A bare `no_grad` forward over `batches`: seconds per pass."""
    model.eval()

    def one_round(_r: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for x, _ in batches:
                model(x)
        return time.perf_counter() - start
    return one_round


# --------------------------------------------------------------------------------------- memory format
def format_rows(args) -> None:
    """Bare no_grad forward, contiguous vs channels_last, of the two model families the issue names."""
    from tinyclf.model.architectures import create_model

    for name, num_classes, size in (("resnet18", 10, 32), ("tiny_resnet50", 200, 64)):
        torch.manual_seed(0)
        contiguous = create_model(name, num_classes).eval()
        channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
        x = torch.randn(args.format_batch, 3, size, size)
        loops = {"contiguous": timed_forward(contiguous, x),
                 "channels_last": timed_forward(channels_last, x.contiguous(memory_format=torch.channels_last))}
        times = alternate(loops, args.rounds)
        report(f"formats: {name} {size}x{size}, batch {args.format_batch}, fp32 CPU no_grad forward, "
               f"{torch.get_num_threads()} threads, {args.rounds} rounds (seconds per image)",
               {k: [t / args.format_batch for t in v] for k, v in times.items()}, 1, ("channels_last", "contiguous", 1.0))


def timed_forward(model: torch.nn.Module, x: torch.Tensor, min_seconds: float = 1.0) -> Callable[[int], float]:
    """Forwards of `x` until `min_seconds` passed (at least one): seconds per forward."""
    def one_round(_r: int) -> float:
        count, start = 0, time.perf_counter()
        with torch.no_grad():
            while count == 0 or time.perf_counter() - start < min_seconds:
                model(x)
                count += 1
        return (time.perf_counter() - start) / count
    return one_round


def run_row(args, row: str) -> None:
    """One row, in this process; the real data is prepared here unless --prepared names it."""
    if row in ("formats", "synthetic"):
        (format_rows if row == "formats" else synthetic_rows)(args)
        return
    measure = real_rows if row == "real" else eval_rows
    if args.prepared is not None:
        measure(args, args.prepared)
    elif not args.zip.is_file():
        print(f"{row} rows skipped: the real Tiny ImageNet subset {args.zip} is missing")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            prepare_subset(args.zip, Path(tmp) / "prepared")
            measure(args, Path(tmp) / "prepared")


def run_rows_apart(args) -> None:
    """Each row in a fresh process, as each stage runs in its own: what one row left allocated cannot
    slow the next (a DataLoader forks its workers from this process; pages the parent then writes
    are copied on write: in one process the evaluate row measured 0.86 where it measures 0.98 alone)."""
    options = [str(part) for key, value in vars(args).items() if key not in ("rows", "prepared")
               for part in (f"--{key.replace('_', '-')}", value)]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = None
        if {"real", "eval"} & set(args.rows) and args.zip.is_file():
            prepared = Path(tmp) / "prepared"
            prepare_subset(args.zip, prepared)
        for row in args.rows:
            if row in ("real", "eval") and prepared is None:
                print(f"{row} rows skipped: the real Tiny ImageNet subset {args.zip} is missing")
                continue
            extra = ["--prepared", str(prepared)] if row in ("real", "eval") else []
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rows", row, *options, *extra], check=True)


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.rows) == 1:
        run_row(args, args.rows[0])
        return 0
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; torch {torch.__version__}, "
          f"{os.cpu_count()} cores", flush=True)
    run_rows_apart(args)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
