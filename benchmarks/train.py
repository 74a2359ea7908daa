"""Training-loop overhead: the train stage's loop against a bare forward/backward/step loop.

    python benchmarks/train.py                       # tiny_resnet50, 32x32, batch 64, fp32, CPU
    python benchmarks/train.py --image-size 64 --rounds 3 --steps 4

Both loops train the same model (same init), batch size and precision in the same process:
- stage: `engine.train_one_epoch` fed by the real input path (PreparedDataset on memory-mapped
  synthetic uint8 arrays, per-image albumentations augmentation, `make_loader` with --workers,
  `to_model_input`) and the default recipe of params.yaml (timm SGD, per-step cosine scheduler,
  Mixup/CutMix with soft-target CE, label smoothing, EMA);
- bare: `loss = CE(model(x), y); loss.backward(); opt.step(); opt.zero_grad()` on batches
  normalized ahead of time.
Rounds alternate (bare, stage, bare, stage, …) so load from other processes hits both alike;
the median seconds per step of each is compared. Prints images/s of each and the ratio
stage / bare (target >= 0.95 on a 2-core CPU). Synthetic data: timings only, no accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def write_arrays(root: Path, n: int, size: int, num_classes: int) -> None:
    import json

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", 8)):
        (root / split).mkdir(parents=True)
        np.save(root / split / "images.npy", rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8))
        np.save(root / split / "labels.npy", rng.integers(0, num_classes, size=count).astype(np.int64))
    classes = [{"index": i, "id": f"g{i:07d}", "name": f"class {i}"} for i in range(num_classes)]
    (root / "classes.json").write_text(json.dumps({"dataset": "tiny-imagenet", "generated": True, "classes": classes}))


def main() -> int:
    parser = argparse.ArgumentParser(description="Train stage loop images/s vs a bare training loop (same run).")
    parser.add_argument("--model", default="tiny_resnet50")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the stage loop")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of each loop")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    from timm.utils import ModelEmaV3

    from tinyclf.augment.per_image import PerImageAugment, build_augment
    from tinyclf.loading.dataset import PreparedDataset
    from tinyclf.loading.loader import LoaderSpeed, make_loader
    from tinyclf.loading.normalize import to_model_input
    from tinyclf.loading.samplers import EpochSampler
    from tinyclf.model.architectures import create_model
    from tinyclf.params import params_from_dict
    from tinyclf.train.distributed import DistInfo
    from tinyclf.train.engine import Progress, StepControl, StepRecipe, train_one_epoch
    from tinyclf.train.recipe import build_loss_and_mixup, build_optimizer, build_scheduler

    if args.threads:
        torch.set_num_threads(args.threads)
    import yaml

    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["train"].update(batch_size=args.batch, crop="pad_crop", model=args.model)
    tp = params_from_dict(tree).train
    mean, std = [0.48, 0.45, 0.40], [0.27, 0.26, 0.28]
    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))
    n_images = args.batch * args.steps * 2

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_arrays(root, n_images, args.image_size, args.classes)
        dataset = PreparedDataset(root, "train", PerImageAugment(build_augment(tp, args.image_size), seed=tp.seed))
        sampler = EpochSampler(len(dataset), seed=tp.seed)
        speed = LoaderSpeed(workers=args.workers, prefetch_factor=tp.prefetch_factor, pin_memory=False)
        loader = make_loader(dataset, sampler, args.batch, speed, drop_last=True)

        torch.manual_seed(0)
        stage_model = create_model(args.model, args.classes).to(memory_format=torch.channels_last)
        bare_model = create_model(args.model, args.classes).to(memory_format=torch.channels_last)
        bare_model.load_state_dict(stage_model.state_dict())

        opt = build_optimizer(stage_model, tp)
        sched, _ = build_scheduler(opt, tp, updates_per_epoch=args.steps)
        loss_fn, mixup = build_loss_and_mixup(tp, args.classes)
        ema = ModelEmaV3(stage_model, decay=tp.ema_decay, use_warmup=True, warmup_power=3 / 4) if tp.ema else None

        def prepare(images, labels):
            x = to_model_input(images, mean, std, channels_last=True)
            if mixup is not None:
                x, soft = mixup(x, labels)
                return x, soft, soft.argmax(1)
            return x, labels, labels

        recipe = StepRecipe(optimizer=opt, loss_fn=loss_fn, scheduler=sched, ema=ema, prepare=prepare,
                            params=list(stage_model.parameters()))

        bare_opt = torch.optim.SGD(bare_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        rng = np.random.default_rng(1)
        batches = [(to_model_input(torch.from_numpy(rng.integers(0, 256, (args.batch, 3, args.image_size,
                                                                           args.image_size), dtype=np.uint8)),
                                   mean, std, channels_last=True),
                    torch.from_numpy(rng.integers(0, args.classes, args.batch)))
                   for _ in range(args.steps)]

        def bare_round() -> float:
            bare_model.train()
            start = time.perf_counter()
            for x, y in batches:
                loss = torch.nn.functional.cross_entropy(bare_model(x), y)
                loss.backward()
                bare_opt.step()
                bare_opt.zero_grad(set_to_none=True)
            return (time.perf_counter() - start) / args.steps

        def stage_round(r: int) -> float:
            sampler.set_epoch(r)
            progress = Progress()
            out = train_one_epoch(stage_model, loader, recipe, progress, micro_batches=args.steps, info=info,
                                  control=StepControl(sync_every=tp.sync_every))
            return out["seconds"] / args.steps

        # Warm-up: first steps allocate and pick kernels; the loader's workers start.
        bare_round()
        stage_round(0)
        bare_t, stage_t = [], []
        for r in range(args.rounds):
            bare_t.append(bare_round())
            stage_t.append(stage_round(r + 1))
            print(f"round {r + 1}: bare {args.batch / bare_t[-1]:.1f} img/s, stage {args.batch / stage_t[-1]:.1f} img/s",
                  file=sys.stderr)

    bare, stage = statistics.median(bare_t), statistics.median(stage_t)
    print(f"model {args.model} {args.image_size}x{args.image_size}, batch {args.batch}, fp32 CPU, "
          f"{torch.get_num_threads()} threads, stage workers {args.workers}, {args.rounds} rounds x {args.steps} steps")
    print(f"bare loop : {args.batch / bare:8.1f} images/s")
    print(f"stage loop: {args.batch / stage:8.1f} images/s (data path, mixup/cutmix, EMA, scheduler included)")
    print(f"ratio stage/bare: {bare / stage:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
